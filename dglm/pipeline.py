"""DGLM: the pipeline encoder -> semantic diffusion -> prompt generator -> decoder.

Example:
    >>> from dglm import DGLM
    >>> dglm = DGLM.from_pretrained("mini")                                    # doctest: +SKIP
    >>> out = dglm.generate(["The match last night"], num_samples=2, max_new_tokens=32, seed=0)  # doctest: +SKIP
    >>> out.continuations[0]                                                   # doctest: +SKIP
    [' was ...', ' ended ...']

Every per-call setting is a :class:`~dglm.config.GenerationConfig` field: a call's keywords are merged into
the pipeline's defaults and validated once, so a bad one raises an error naming it, its value and what is
accepted. What steers the plans is a :class:`~dglm.constraints.Control` (per-prefix constraints and
strengths), which the pipeline lays out over its chunks of rows; the decoder-side contrasts
(:mod:`dglm.plan_guidance`) are built here and passed to the decoder as logits processors. Rows
(``len(prefixes) * num_samples``) are planned and decoded ``batch_size`` at a time, so working memory is
bounded for any ``num_samples`` (the output itself, one string and one plan per row, is not). A pipeline may be shared between threads: planning and decoding hold ``DGLM.lock``, so
concurrent calls run one after the other and give exactly what sequential calls give.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import torch

from dglm.checkpoint import load_parts, parts_from_config, push_checkpoint, save_checkpoint
from dglm.config import DECODING_FIELDS, MAX_NLL_REDRAWS, DGLMConfig, GenerationConfig, check_field
from dglm.constraints.guidance import ConstraintGuidance, Control
from dglm.decoder import Decoder, check_prefixes
from dglm.diffusion import SemanticDiffuser
from dglm.encoder import SemanticEncoder
from dglm.outputs import (GenerationOutput, Plan, derived_seed, merge_outputs, merge_plans, row_chunks,
                          sum_timings)
from dglm.plan_guidance import PairedPlanGuidance
from dglm.prompt import PromptGenerator
from dglm.sampling import Denoise

logger = logging.getLogger(__name__)

# The HF generate keywords of GenerationConfig's defaults (the reference's nucleus sampling with a repetition
# penalty), and its rows per chunk: derived from the config, where each default is declared.
DEFAULT_GENERATE_KWARGS = GenerationConfig().decoding_kwargs()
DEFAULT_BATCH_SIZE = GenerationConfig().batch_size


@functools.cache
def generate_keywords(model_class: type) -> frozenset[str]:
    """The keywords a Hugging Face model class's ``generate`` takes besides dglm's own: its parameters and
    transformers' ``GenerationConfig`` attributes (worked out once per class).

    Example:
        >>> from transformers import GPT2LMHeadModel
        >>> {"top_k", "min_new_tokens", "streamer"} <= generate_keywords(GPT2LMHeadModel)
        True
    """
    import inspect

    from transformers import GenerationConfig as HFGenerationConfig

    params = inspect.signature(model_class.generate).parameters
    return frozenset({k for k, p in params.items() if p.kind is not p.VAR_KEYWORD and k != "self"}
                     | set(HFGenerationConfig().to_dict()))


class DGLM(torch.nn.Module):
    """Diffusion Guided Language Model: plans a continuation embedding, then decodes text that follows it.

    Build it from trained parts, from a checkpoint (:meth:`from_pretrained`), or with random weights from a
    preset for shape and speed checks (:meth:`from_config`). ``probes`` are the named probes shipped with the
    checkpoint (a :class:`dglm.constraints.ProbeRegistry`), which built-in constraints resolve to.

    Thread safety: ``lock`` (a re-entrant lock) is held while planning and decoding, which use the global
    RNG (``torch.random.fork_rng``) and a shared HF model; calls from several threads are serialised.

    Example (random weights, so the text is noise; generate is plan, then decode):
        >>> from dglm.presets import random_pipeline
        >>> pipe = random_pipeline("tiny")
        >>> plan = pipe.plan(["the game was", "a new song"], num_samples=3, steps=4, seed=0)
        >>> plan.embeddings.shape, plan.soft_prompts.shape
        (torch.Size([6, 32]), torch.Size([6, 4, 32]))
        >>> out = pipe.decode(plan, seed=0, max_new_tokens=3, min_new_tokens=3)
        >>> [len(texts) for texts in out.continuations], out.plans.shape
        ([3, 3], torch.Size([2, 3, 32]))
        >>> pipe.device, pipe.config.sampling.steps
        (device(type='cpu'), 10)
    """

    def __init__(self, encoder: SemanticEncoder, diffuser: SemanticDiffuser, prompt_generator: PromptGenerator,
                 decoder: Decoder, sampling: GenerationConfig | None = None, probes=None):
        super().__init__()
        if diffuser.dim != encoder.dim or prompt_generator.config.dim != encoder.dim:
            raise ValueError(f"encoder dimension {encoder.dim} does not match the diffuser's {diffuser.dim} / the "
                             f"prompt generator's {prompt_generator.config.dim}; pass the encoder they were trained with")
        if prompt_generator.config.out_dim != decoder.hidden_size:
            raise ValueError(f"decoder hidden size {decoder.hidden_size} does not match the prompt generator's "
                             f"out_dim {prompt_generator.config.out_dim}; pass the decoder it was trained with")
        self.encoder, self.diffuser, self.prompt_generator, self.decoder = encoder, diffuser, prompt_generator, decoder
        prompt_generator.bind(decoder.embeddings.weight)
        self.sampling = sampling or GenerationConfig()
        self.probes = probes
        self.lock = threading.RLock()

    def __getstate__(self):
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state.pop("lock", None)  # a lock cannot be copied or pickled; each copy gets its own
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self.lock = threading.RLock()

    @property
    def config(self) -> DGLMConfig:
        """The full config of the pipeline's parts and its sampling defaults (built fresh on each access).

        Example:
            >>> from dglm.config import preset_config
            >>> from dglm.presets import random_pipeline
            >>> pipe = random_pipeline("tiny")
            >>> config = pipe.config
            >>> config.diffusion.dim, config.decoder.name_or_path, config == preset_config("tiny")
            (32, 'random:tiny-gpt2', True)
        """
        return DGLMConfig(encoder=self.encoder.config, diffusion=self.diffuser.config,
                          prompt=self.prompt_generator.config, decoder=self.decoder.config, sampling=self.sampling)

    @property
    def device(self) -> torch.device:
        """The device of the diffusion network, where plans are sampled.

        Example:
            >>> from dglm.presets import random_pipeline
            >>> pipe = random_pipeline("tiny")
            >>> pipe.device, pipe.plan(["the game was"], steps=2, seed=0).embeddings.device
            (device(type='cpu'), device(type='cpu'))
        """
        return next(self.diffuser.parameters()).device

    # ----------------------------------------------------------------------------------------------- building

    @classmethod
    def from_config(cls, config: DGLMConfig | str, encoder: SemanticEncoder | None = None,
                    decoder: Decoder | None = None) -> DGLM:
        """The untrained diffusion and prompt networks (their training initialisation) of a config or a
        preset name in :data:`dglm.config.PRESETS`, around the given encoder and decoder, or the ones loaded by
        the config's ids (:func:`dglm.checkpoint.parts_from_config`). The ``tiny`` preset's ``random:`` ids
        name random stand-ins, which only :mod:`dglm.presets` builds: pass them in (or use
        :func:`dglm.presets.random_pipeline`).

        Example:
            >>> from dglm import DGLM
            >>> from dglm.config import preset_config
            >>> from dglm.presets import TINY, random_decoder, random_encoder
            >>> pipe = DGLM.from_config("tiny", random_encoder(TINY.encoder), random_decoder(TINY.decoder))
            >>> pipe.config.diffusion == preset_config("tiny").diffusion
            True
        """
        return cls(**vars(parts_from_config(config, encoder, decoder)))

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, encoder: SemanticEncoder | None = None,
                        decoder: Decoder | None = None, device: str | torch.device | None = None, *,
                        revision: str | None = None, cache_dir: str | os.PathLike | None = None,
                        token: str | bool | None = None, show_progress: bool = False) -> DGLM:
        """Load a checkpoint folder, a packaged one by name (``"mini"``), or a hub repo id (``"org/name"``,
        at ``revision``; ``cache_dir`` and ``token`` go to ``huggingface_hub.snapshot_download``; with
        ``HF_HUB_OFFLINE=1`` from the local hub cache only), see :func:`dglm.hub.resolve_checkpoint`. The
        encoder and decoder are loaded by the ids the checkpoint records unless given; a decoder whose weights
        differ from the recorded fingerprint of the training weights is logged as a warning. The
        checkpoint's decoder adapter, if it has one, is loaded into the decoder (given or not) unless that
        decoder already carries one. Nothing is printed while loading: progress bars (weights, downloads)
        are shown only with ``show_progress=True``.

        Example (a saved folder, its sampling defaults included; ``DGLM.from_pretrained("mini")`` loads the
        packaged checkpoint the same way, its encoder and decoder fetched by id):
            >>> import tempfile
            >>> from dglm import DGLM
            >>> from dglm.presets import random_pipeline
            >>> pipe = random_pipeline("tiny")
            >>> pipe.sampling = pipe.sampling.model_copy(update={"steps": 7, "strength": 30.0})
            >>> with tempfile.TemporaryDirectory() as d:
            ...     pipe.save_pretrained(d)
            ...     loaded = DGLM.from_pretrained(d, encoder=pipe.encoder, decoder=pipe.decoder)
            >>> loaded.sampling.steps, loaded.sampling.strength, loaded.decoder is pipe.decoder
            (7, 30.0, True)
        """
        pipe = cls(**vars(load_parts(name_or_path, encoder, decoder, device, revision=revision,
                                     cache_dir=cache_dir, token=token, show_progress=show_progress)))
        return pipe.to(device) if device is not None else pipe

    def save_pretrained(self, folder: str | os.PathLike, *, license: str | None = None,
                        card_text: str | None = None, name: str | None = None, overwrite: bool = False) -> None:
        """Write the checkpoint atomically: ``dglm.json`` + ``encoder/``, ``diffusion/``, ``prompt/``,
        ``probes/`` subfolders (JSON configs + safetensors), ``decoder_adapter/`` when the decoder carries
        a LoRA adapter trained with the prompt generator (:meth:`Decoder.load_adapter`; the adapter only),
        and a model card ``README.md`` (:func:`dglm.hub.model_card`: YAML metadata with ``license``, default
        ``"unknown"``, the parts, then ``card_text``; ``name``, default the folder's name, is what its example
        loads). The decoder and encoder weights are referenced by their ids, which ``dglm.json`` records with
        the library version and the decoder weights' source and fingerprint (:class:`dglm.hub.DecoderWeights`).

        An existing ``folder`` is replaced only when it holds a checkpoint dglm wrote (a rerun; a ``.dglm``
        marker or a ``dglm.json``) and nothing else; a folder with other files, or a file, is refused with an
        error naming them (:class:`dglm.io.OutputError`), before anything is written. ``overwrite=True``
        replaces such a folder (its other files are deleted); a file is never replaced by a folder.

        Example (a round trip; the random stand-ins' weights are passed back in, as they have no files):
            >>> import tempfile
            >>> from dglm import DGLM
            >>> from dglm.presets import random_pipeline
            >>> pipe = random_pipeline("tiny")
            >>> with tempfile.TemporaryDirectory() as d:
            ...     pipe.save_pretrained(f"{d}/ckpt", license="mit")
            ...     files = sorted(os.listdir(f"{d}/ckpt"))
            ...     loaded = DGLM.from_pretrained(f"{d}/ckpt", encoder=pipe.encoder, decoder=pipe.decoder)
            >>> files
            ['.dglm', 'README.md', 'dglm.json', 'diffusion', 'encoder', 'prompt']
            >>> loaded.config == pipe.config, torch.equal(loaded.encoder.mean, pipe.encoder.mean)
            (True, True)
        """
        save_checkpoint(self, folder, license=license, card_text=card_text, name=name, overwrite=overwrite)

    def push_to_hub(self, repo_id: str, *, revision: str | None = None, private: bool | None = None,
                    token: str | bool | None = None, commit_message: str = "Upload dglm checkpoint", api=None,
                    license: str | None = None, card_text: str | None = None):
        """Save the checkpoint (:meth:`save_pretrained`, its card naming ``repo_id``) into a temporary folder
        and upload it to the hub repo ``repo_id`` (created if missing) with ``HfApi.upload_folder``; ``api``
        is an ``HfApi`` (default: one made with ``token``). Returns the upload's ``CommitInfo``.

        Example (``pipe.push_to_hub("my-org/my-dglm", private=True)`` uploads; a repo id is checked before
        anything is saved or sent):
            >>> from dglm.presets import random_pipeline
            >>> pipe = random_pipeline("tiny")
            >>> pipe.push_to_hub("my-dglm")
            Traceback (most recent call last):
                ...
            ValueError: repo_id='my-dglm' must be a hub repo id 'org/name'
        """
        return push_checkpoint(self, repo_id, revision=revision, private=private, token=token,
                               commit_message=commit_message, api=api, license=license, card_text=card_text)

    # ------------------------------------------------------------------------------------------- inference

    def generation_config(self, generation_config: GenerationConfig | None = None, **overrides) -> GenerationConfig:
        """The settings of a call: ``self.sampling`` (the checkpoint's defaults), with the decoding settings
        that the decoder's own ``generation_config`` sets where ``self.sampling`` does not set them, then the
        fields ``generation_config`` sets (a :class:`~dglm.config.GenerationConfig`, validated when it was
        made), then ``overrides`` (its fields, each checked here once, :meth:`GenerationConfig.check`).

        Example:
            >>> from dglm.config import GenerationConfig
            >>> from dglm.presets import random_pipeline
            >>> pipe = random_pipeline("tiny")
            >>> pipe.generation_config(top_p=0.5).top_p, pipe.generation_config().steps
            (0.5, 10)
            >>> pipe.generation_config(GenerationConfig(steps=3), top_p=0.5).steps
            3
        """
        unset = {k: getattr(self.sampling, k) for k in DECODING_FIELDS
                 if k not in self.sampling.model_fields_set and getattr(self.sampling, k) is not None}
        own = {k: v for k, v in self.decoder.generation_defaults(unset).items() if v != unset[k]}
        base = self.sampling.merge(**own)  # the decoder's own values, which no door has checked
        if generation_config is not None:
            if not isinstance(generation_config, GenerationConfig):
                raise TypeError(f"generation_config={generation_config!r:.100} must be a "
                                f"dglm.config.GenerationConfig or None")
            base = base.apply(generation_config.overrides())
        return base.merge(**overrides)

    def generate_kwargs(self, overrides: dict, num_soft_tokens: int | None = None) -> dict:
        """The Hugging Face ``generate`` keywords a decode with ``overrides`` uses, checked: the decoding
        settings of :meth:`generation_config`, then the keywords that are not ``GenerationConfig`` fields
        (``min_new_tokens``, ``no_repeat_ngram_size``, ..., passed through).

        Example:
            >>> from dglm.presets import random_pipeline
            >>> pipe = random_pipeline("tiny")
            >>> kwargs = pipe.generate_kwargs({"top_p": 0.5, "max_new_tokens": 8, "no_repeat_ngram_size": 2})
            >>> kwargs["top_p"], kwargs["max_new_tokens"], kwargs["no_repeat_ngram_size"]
            (0.5, 8, 2)
            >>> pipe.generate_kwargs({"max_new_tokens": 300})
            Traceback (most recent call last):
                ...
            ValueError: max_new_tokens=300 with 4 soft tokens does not fit the decoder's context of 256 \
positions; accepted: max_new_tokens <= 251
        """
        settings, extras, _ = self._settings(overrides, num_soft_tokens)
        return {**settings.decoding_kwargs(), **extras}

    def _settings(self, overrides: dict, num_soft_tokens: int | None = None,
                  generation_config: GenerationConfig | None = None) -> tuple[GenerationConfig, dict, tuple]:
        """(the call's settings, the other HF ``generate`` keywords, the call's own ``(strength,
        guidance_samples)`` or None for each it does not give), each knob checked once. A ``strength`` of one
        number per prefix is checked here, element by element."""
        extras = {k: v for k, v in overrides.items() if k not in GenerationConfig.model_fields}
        call = {k: v for k, v in overrides.items() if k not in extras}
        per_prefix = call.get("strength")
        if isinstance(per_prefix, Sequence) and not isinstance(per_prefix, str):
            per_prefix = tuple(check_field(GenerationConfig, "strength", x, f"strength[{i}]")
                               for i, x in enumerate(call.pop("strength")))
        settings = self.generation_config(generation_config, **call)
        unknown = sorted(set(extras) - generate_keywords(type(self.decoder.model))) if extras else []
        if unknown:  # refused before any plan is made, not after (a typo such as top_pp)
            raise ValueError("; ".join(f"{k}={extras[k]!r:.60}: not a GenerationConfig field nor a keyword of the "
                                       f"decoder's generate" for k in unknown))
        if extras.get("num_return_sequences", 1) != 1:
            raise ValueError(f"num_return_sequences={extras['num_return_sequences']!r} is not supported with "
                             f"plans; use num_samples (one plan each)")
        if extras.get("return_dict_in_generate"):
            raise ValueError("return_dict_in_generate=True is not supported: generate returns a GenerationOutput; "
                             "for HF's output, call pipe.decoder.model.generate on Controller.prompt_embeds(...)")
        k = self.prompt_generator.config.num_soft_tokens if num_soft_tokens is None else num_soft_tokens
        self.decoder.prefix_budget(k, settings.max_new_tokens)  # refuses what cannot fit the context
        given = set(call) | (set() if generation_config is None else generation_config.model_fields_set)
        steer = (per_prefix if isinstance(per_prefix, tuple) else settings.strength if "strength" in given else None,
                 settings.guidance_samples if "guidance_samples" in given else None)
        return settings, extras, steer

    def _chunks(self, prefixes: list[str], settings: GenerationConfig, control: Control | None,
                steer: tuple) -> list[tuple[int, int, int, int, ConstraintGuidance | None]]:
        """``(start, stop, samples, seed, guidance)`` of each :func:`row_chunks` chunk: the control laid out
        and resolved once (checked before any chunk runs), its denoiser wrapper per chunk (None where no row
        is guided). A call without a seed draws one per chunk. Strength and guidance samples: the call's
        (``steer``, from :meth:`_settings`), else the control's, else the defaults'."""
        strength, samples = steer
        if control is not None:
            if not isinstance(control, Control):
                raise TypeError(f"control={control!r:.100} must be a dglm.constraints.Control or None")
            control = control.for_prefixes(
                len(prefixes), next(s for s in (strength, control.strength, settings.strength) if s is not None),
                next(n for n in (samples, control.guidance_samples, settings.guidance_samples) if n is not None))
            with self.lock:  # resolving may run the encoder (and its tokenizer), shared with other threads
                control = control.resolve(self.encoder, self.probes)
        chunks = []
        for start, stop, n, seed in row_chunks(len(prefixes), settings.num_samples, settings.batch_size,
                                               settings.seed):
            seed = int(torch.randint(2**62, ()).item()) if seed is None else seed
            guidance = None if control is None else control.guidance(
                start, stop, n, self.encoder.to_raw, torch.Generator(self.device).manual_seed(seed))
            chunks.append((start, stop, n, seed, guidance))
        return chunks

    @torch.no_grad()
    def plan(self, prefixes: Sequence[str], num_samples: int | None = None, *, control: Control | None = None,
             generation_config: GenerationConfig | None = None, **settings) -> Plan:
        """Sample ``num_samples`` continuation embeddings per prefix, steered by ``control`` (a
        :class:`~dglm.constraints.Control`: constraints and strengths per prefix; None: unguided), and turn
        them into soft prompts.

        ``settings`` are :class:`~dglm.config.GenerationConfig` fields (``steps``, ``sampler``, ``cfg_scale``,
        ``sigma2``, ``seed``, ``batch_size``, ...), each defaulting to :meth:`generation_config`'s. Rows are
        sampled ``batch_size`` at a time (see :func:`row_chunks`).

        Example (a seeded plan repeats; a strong control moves the plans toward its target):
            >>> from dglm.constraints import Control, near
            >>> from dglm.presets import random_pipeline
            >>> pipe = random_pipeline("tiny")
            >>> plain = pipe.plan(["the game was"], num_samples=4, steps=4, seed=0)
            >>> again = pipe.plan(["the game was"], num_samples=4, steps=4, seed=0)
            >>> torch.equal(plain.embeddings, again.embeddings)
            True
            >>> control = Control(near("old music"), strength=200)
            >>> guided = pipe.plan(["the game was"], 4, control=control, steps=4, seed=0)
            >>> target = pipe.encoder.encode(["old music"])[0]
            >>> bool((guided.embeddings @ target).mean() > (plain.embeddings @ target).mean())
            True
        """
        prefixes = check_prefixes(prefixes)
        s, extras, steer = self._settings({**settings, "num_samples": num_samples},
                                          generation_config=generation_config)
        if extras:  # decoding keywords that are not GenerationConfig fields mean nothing to a plan
            raise ValueError("; ".join(f"{k}={v!r:.60}: Extra inputs are not permitted" for k, v in extras.items()))
        plans = []
        for start, stop, n, seed, guidance in self._chunks(prefixes, s, control, steer):
            with self.lock:
                plans.append(self._plan(prefixes[start:stop], n, s, seed, guidance))
        return merge_plans(prefixes, s.num_samples, plans)

    def _encode(self, prefixes: list[str], num_samples: int) -> torch.Tensor:
        """Standardised prefix embeddings, each repeated for its samples: (B*n, d) in the diffuser's dtype."""
        prefix = self.encoder.standardize(self.encoder.encode(prefixes).to(self.device))
        check_finite_rows(prefix, "the encoder's embeddings", "run the encoder in float32")
        return prefix.repeat_interleave(num_samples, dim=0).to(next(self.diffuser.parameters()).dtype)  # (B*n, d)

    def _plan(self, prefixes: list[str], num_samples: int, s: GenerationConfig, seed: int,
              guidance: Callable[[Denoise], Denoise] | None, prefix: torch.Tensor | None = None) -> Plan:
        """One chunk's plan; ``prefix``: the chunk's prefixes already encoded by :meth:`_encode` (control
        contrast plans the same rows twice)."""
        generator = torch.Generator(self.device)
        generator.manual_seed(seed)
        timings = {}
        t0 = time.perf_counter()
        prefix = self._encode(prefixes, num_samples) if prefix is None else prefix
        timings["encode"] = (t1 := time.perf_counter()) - t0
        plans = self.diffuser.sample(prefix, steps=s.steps, sampler=s.sampler, cfg_scale=s.cfg_scale,
                                     generator=generator, wrap=guidance, show_progress_bar=s.show_progress_bar,
                                     compile=s.compile, temperature=s.plan_temperature)
        timings["diffusion"] = (t2 := time.perf_counter()) - t1
        soft = self.prompt_generator.prompt(plans, s.sigma2, generator)
        timings["prompt"] = time.perf_counter() - t2
        return Plan(prefixes, num_samples, self.encoder.to_raw(plans.float()), soft, timings)

    def generate(self, prefixes: Sequence[str], num_samples: int | None = None, *, control: Control | None = None,
                 generation_config: GenerationConfig | None = None, **settings) -> GenerationOutput:
        """Generate ``num_samples`` continuations per prefix, their plans steered by ``control`` (see
        :meth:`plan`). ``settings`` are :class:`~dglm.config.GenerationConfig` fields (planning, guidance,
        decoding: ``max_new_tokens``, ``top_p``, ``plan_scale``, ``control_scale``, ...); other keywords go
        to the decoder's HF ``generate`` untouched (``min_new_tokens``, ``logits_processor``, ...).

        An empty or whitespace-only prefix means no context. A prefix longer than the decoder's context keeps
        its last tokens (with a logged warning) so that the soft tokens and ``max_new_tokens`` fit; a
        ``max_new_tokens`` that cannot fit is refused. At most ``batch_size`` rows are planned and decoded
        at once; with more, chunk ``c > 0`` uses a seed derived from ``seed`` and ``c`` (see :func:`row_chunks`),
        so outputs depend on ``batch_size`` but are reproducible for a fixed one.

        ``plan_scale`` > 1 is plan guidance in the decoder (:meth:`decode`). ``control_scale`` > 1 is control
        contrast: each guided plan is decoded against the unguided plan of the same noise, so the decoder
        weights by ``control_scale`` what the constraint changed in the plan (stronger control, at some
        fluency; a second diffusion run and decoder pass). Chunks without guided rows skip it; an unguided row
        in a guided chunk is its own contrast, so its text is unchanged.

        Example (seeded outputs repeat for a fixed ``batch_size``; 2 prefixes x 3 samples, chunks of 4 rows):
            >>> from dglm.presets import random_pipeline
            >>> pipe = random_pipeline("tiny")
            >>> kwargs = dict(steps=4, seed=0, max_new_tokens=3, min_new_tokens=3, batch_size=4)
            >>> out = pipe.generate(["the game was", "a new song"], num_samples=3, **kwargs)
            >>> [len(texts) for texts in out.continuations], out.plans.shape, sorted(out.timings)
            ([3, 3], torch.Size([2, 3, 32]), ['decode', 'diffusion', 'encode', 'prompt'])
            >>> out.continuations == pipe.generate(["the game was", "a new song"], 3, **kwargs).continuations
            True
        """
        prefixes, s, extras, chunks = self._prepare(prefixes, num_samples, control, generation_config, settings)
        return merge_outputs(prefixes, list(self._generated(prefixes, s, extras, chunks)))

    def generate_chunks(self, prefixes: Sequence[str], num_samples: int | None = None, *, control: Control | None = None,
                        generation_config: GenerationConfig | None = None,
                        **settings) -> Iterator[tuple[int, GenerationOutput]]:
        """:meth:`generate`, one chunk of rows at a time, as each is done: ``(start, output)``, where
        ``output`` holds prefixes ``start, start + 1, ...`` with some of their samples (all of them while
        ``num_samples <= batch_size``); :func:`~dglm.outputs.merge_outputs` of all of them is what
        :meth:`generate` returns. Everything is checked before the first chunk runs.

        Example:
            >>> from dglm.presets import random_pipeline
            >>> chunks = random_pipeline("tiny").generate_chunks(["a", "b", "c"], 2, batch_size=4, steps=2,
            ...                                                  max_new_tokens=2, seed=0)
            >>> [(start, len(out.prefixes)) for start, out in chunks]
            [(0, 2), (2, 1)]
        """
        return self._generated(*self._prepare(prefixes, num_samples, control, generation_config, settings))

    def _prepare(self, prefixes, num_samples, control, generation_config,
                 settings) -> tuple[list[str], GenerationConfig, dict, list]:
        """Everything a generate call checks, once: (prefixes, settings, HF extras, :meth:`_chunks`)."""
        prefixes = check_prefixes(prefixes)
        s, extras, steer = self._settings({**settings, "num_samples": num_samples},
                                          generation_config=generation_config)
        return prefixes, s, extras, self._chunks(prefixes, s, control, steer)

    def _generated(self, prefixes, s, extras, chunks) -> Iterator[tuple[int, GenerationOutput]]:
        for start, stop, n, seed, guidance in chunks:
            with torch.no_grad(), self.lock:
                chunk = prefixes[start:stop]
                contrasted = s.control_scale != 1.0 and guidance is not None
                t0 = time.perf_counter()
                encoded = self._encode(chunk, n) if contrasted else None  # shared by both plans
                encode_s = time.perf_counter() - t0
                plan = self._plan(chunk, n, s, seed, guidance, encoded)
                contrast, scale = None, s.plan_scale
                if contrasted:  # the same noise and prefixes, unguided
                    contrast, scale = self._plan(chunk, n, s, seed, None, encoded), s.control_scale
                    plan.timings = sum_timings([plan, contrast])
                    plan.timings["encode"] += encode_s
                output = self._decode(plan, s, extras, seed, scale, contrast)
            yield start, output

    def decode(self, plan: Plan, contrast: Plan | None = None, *, generation_config: GenerationConfig | None = None,
               **settings) -> GenerationOutput:
        """Decode the text of a :class:`Plan` (one continuation per planned row); ``settings`` as for
        :meth:`generate`. ``plan_scale`` > 1 adds plan guidance (:class:`~dglm.plan_guidance.PairedPlanGuidance`)
        against :meth:`null_prompts`; with ``contrast``, a plan of the same rows (e.g. the unguided plan of a
        guided one), the decoder contrasts with it instead, weighted by ``control_scale``.

        Example (a plan decoded plainly and with plan guidance; a guided plan against its unguided contrast):
            >>> from dglm.constraints import Control, near
            >>> from dglm.presets import random_pipeline
            >>> pipe = random_pipeline("tiny")
            >>> plan = pipe.plan(["the game was", "a new song"], num_samples=2, steps=4, seed=0)
            >>> out = pipe.decode(plan, seed=0, max_new_tokens=3, min_new_tokens=3)
            >>> guided = pipe.decode(plan, seed=0, max_new_tokens=3, min_new_tokens=3, plan_scale=3.0)
            >>> [len(texts) for texts in out.continuations], [len(texts) for texts in guided.continuations]
            ([2, 2], [2, 2])
            >>> control = Control(near("old music"), strength=50)
            >>> steered = pipe.plan(["the game was", "a new song"], 2, control=control, steps=4, seed=0)
            >>> contrasted = pipe.decode(steered, contrast=plan, control_scale=2.0, seed=0, max_new_tokens=3)
            >>> contrasted.plans.shape
            torch.Size([2, 2, 32])
        """
        s, extras, _ = self._settings(settings, plan.soft_prompts.shape[1], generation_config)
        if contrast is not None and (contrast.prefixes != plan.prefixes or contrast.num_samples != plan.num_samples
                                     or contrast.soft_prompts.shape != plan.soft_prompts.shape):
            raise ValueError(f"contrast must be a plan of the same rows as plan ({len(plan.prefixes)} prefixes x "
                             f"{plan.num_samples} samples, soft prompts {tuple(plan.soft_prompts.shape)}), got "
                             f"{len(contrast.prefixes)} x {contrast.num_samples}, "
                             f"{tuple(contrast.soft_prompts.shape)}")
        scale = s.plan_scale if contrast is None else s.control_scale
        return self._decode(plan, s, extras, s.seed, scale, contrast)

    def _decode(self, plan: Plan, s: GenerationConfig, extras: dict, seed: int | None, scale: float,
                contrast: Plan | None) -> GenerationOutput:
        t0 = time.perf_counter()
        rows = [p for p in plan.prefixes for _ in range(plan.num_samples)]
        check_finite_rows(plan.soft_prompts, "the plan's soft prompts", "sample the diffusion and prompt networks "
                          "in float32 or bfloat16")
        kwargs = {**s.decoding_kwargs(), **extras}
        given = list(kwargs.pop("logits_processor", None) or [])

        def draw(idx: torch.Tensor, draw_seed: int | None) -> list[str]:  # rows idx (R,) decoded once
            processors = list(given)
            if null is not None:  # last, after the repetition penalty, which it applies to the null branch alike
                processors.append(PairedPlanGuidance(null[idx], scale, repetition_penalty=s.repetition_penalty))
            return self.decoder.generate([rows[i] for i in idx.tolist()], plan.soft_prompts[idx], seed=draw_seed,
                                         logits_processor=processors, **kwargs)

        with self.lock:
            null = None  # the contrast branch's soft prompts, if any
            if scale != 1.0:
                null = self.null_prompts(len(rows), seed) if contrast is None else contrast.soft_prompts
            texts = draw(torch.arange(len(rows)), seed)
            if s.max_nll is not None and s.do_sample:
                texts = self._redraw_unlikely(rows, texts, s.max_nll, draw, seed)
        n = plan.num_samples
        timings = {**plan.timings, "decode": time.perf_counter() - t0}
        return GenerationOutput(plan.prefixes, [texts[i * n:(i + 1) * n] for i in range(len(plan.prefixes))],
                                plan.embeddings.reshape(len(plan.prefixes), n, -1), timings)

    def _redraw_unlikely(self, rows: list[str], texts: list[str], max_nll: float,
                         draw: Callable[[torch.Tensor, int | None], list[str]], seed: int | None) -> list[str]:
        """``texts`` with each continuation above ``max_nll`` (the base LM's mean NLL per token, given its
        prefix) drawn again from the same plan, at most ``MAX_NLL_REDRAWS`` times, keeping the likeliest draw.
        Redraw ``r`` uses a seed derived from ``seed`` and ``r`` (None stays None)."""
        texts = list(texts)
        nll = self.decoder.text_nll(rows, texts)
        for r in range(1, MAX_NLL_REDRAWS + 1):
            idx = (nll > max_nll).nonzero().flatten()  # (R,) rows still above the bound
            if not len(idx):
                break
            again = draw(idx, None if seed is None else derived_seed(seed, "redraw", r))
            again_nll = self.decoder.text_nll([rows[i] for i in idx.tolist()], again)
            for j, i in enumerate(idx.tolist()):
                if again_nll[j] < nll[i]:
                    texts[i], nll[i] = again[j], again_nll[j]
            logger.info("max_nll=%g: redraw %d of %d continuation(s); %d still above", max_nll, r, len(idx),
                        int((nll > max_nll).sum()))
        return texts

    @torch.no_grad()
    def null_prompts(self, rows: int, seed: int | None = None) -> torch.Tensor:
        """Soft prompts of ``rows`` null plans (rows, k, h): the prompt generator at sigma^2 = 1, where its
        input is pure noise and holds no plan. Plan guidance contrasts a plan's soft prompts with these.

        Example:
            >>> from dglm.presets import random_pipeline
            >>> random_pipeline("tiny").null_prompts(3, seed=0).shape
            torch.Size([3, 4, 32])
        """
        generator = torch.Generator(self.device)
        generator.manual_seed(seed if seed is not None else int(torch.randint(2**62, ()).item()))
        param = next(self.prompt_generator.parameters())
        return self.prompt_generator.prompt(torch.zeros(rows, self.encoder.dim, device=param.device,
                                                        dtype=param.dtype), 1.0, generator)


class NonFiniteError(ValueError, FloatingPointError):
    """Embeddings or soft prompts came out NaN or infinite (caught before they reach the decoder).

    Example (a ValueError too, so one except clause catches every bad-input error):
        >>> issubclass(NonFiniteError, ValueError), issubclass(NonFiniteError, FloatingPointError)
        (True, True)
    """


def check_finite_rows(x: torch.Tensor, what: str, fix: str) -> None:
    """Raise a clear error (instead of NaN text or a crash in sampling) if rows of ``x`` (B, ...) are not finite.

    Example:
        >>> check_finite_rows(torch.zeros(2, 3), "the plans", "use float32")  # fine: returns None
        >>> check_finite_rows(torch.tensor([[0.0], [float("inf")]]), "the plans", "use float32")
        Traceback (most recent call last):
            ...
        dglm.pipeline.NonFiniteError: the plans are not finite in row(s) [1] of 2 (torch.float32); use float32
    """
    finite = torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)  # (B,)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten().tolist()
        raise NonFiniteError(f"{what} are not finite in row(s) {bad[:10]} of {x.shape[0]} ({x.dtype}); {fix}")
