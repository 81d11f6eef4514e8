"""DGLM: the pipeline encoder -> semantic diffusion -> prompt generator -> decoder.

Example:
    >>> from dglm import DGLM
    >>> dglm = DGLM.from_pretrained("mini")                                    # doctest: +SKIP
    >>> out = dglm.generate(["The match last night"], num_samples=2, max_new_tokens=32, seed=0)  # doctest: +SKIP
    >>> out.continuations[0]                                                   # doctest: +SKIP
    [' was ...', ' ended ...']

Serving untrusted requests: every argument is checked and a bad one raises an error naming it, its value
and what is accepted. Rows (``len(prefixes) * num_samples``) are planned and decoded ``batch_size`` at a
time, so working memory is bounded for any ``num_samples`` (the output itself, one string and one plan
per row, is not). A pipeline may be shared between threads: planning and decoding hold ``DGLM.lock``, so
concurrent calls run one after the other and give exactly what sequential calls give.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

from dglm.config import (
    MAX_CFG_SCALE,
    MAX_PLAN_SCALE,
    MAX_STEPS,
    DGLMConfig,
    EncoderConfig,
    SamplingConfig,
    check_decoding_kwargs,
    preset_config,
)
from dglm.decoder import Decoder, check_prefixes
from dglm.diffusion import SemanticDiffuser
from dglm.encoder import SemanticEncoder
from dglm.hub import (
    ADAPTER_FOLDER,
    MODEL_CARD,
    PACKAGED,  # noqa: F401  (the checkpoint file names live in dglm.hub; kept importable here)
    PIPELINE_FILE,
    DecoderWeights,
    check_recorded_id,
    model_card,
    push_folder,
    resolve_checkpoint,
)
from dglm.io import atomic_directory, read_config, write_json
from dglm.outputs import GenerationOutput, Plan, merge_outputs, merge_plans, row_chunks
from dglm.prompt import PromptGenerator, check_sigma2
from dglm.sampling import Denoise, get_sampler

logger = logging.getLogger(__name__)

# Generation defaults of the reference (nucleus sampling with a repetition penalty).
DEFAULT_GENERATE_KWARGS = {"do_sample": True, "top_p": 0.9, "repetition_penalty": 1.2, "max_new_tokens": 32}
# Rows planned and decoded at once by default: bounds memory for any number of prefixes x samples.
DEFAULT_BATCH_SIZE = 256


def library_version() -> str:
    """The installed dglm version, as recorded in checkpoints' ``dglm.json``.

    Example:
        >>> import dglm
        >>> library_version() == dglm.__version__
        True
    """
    from dglm import __version__

    return __version__


class _PipelineFile(BaseModel):
    """What ``dglm.json`` holds; unknown or wrongly typed fields are refused by name."""

    model_config = ConfigDict(extra="forbid")

    library_version: str = Field(description="Version of dglm that wrote the checkpoint.")
    encoder: str = Field(description=(
        "Hub id of the encoder the checkpoint was trained with (never a path outside the folder)."))
    decoder: str = Field(description=(
        "Hub id of the decoder the checkpoint was trained with (never a path outside the folder)."))
    decoder_weights: DecoderWeights | None = Field(default=None, description=(
        "Which decoder weights it was trained with: their source and a fingerprint (absent in older "
        "checkpoints)."))
    decoder_hidden_size: int = Field(description=(
        "The decoder's hidden size, for a clear error when another decoder is passed."))
    sampling: SamplingConfig = Field(default=SamplingConfig(), description=(
        "Sampling defaults the checkpoint was evaluated with."))


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
                 decoder: Decoder, sampling: SamplingConfig | None = None, probes=None):
        super().__init__()
        if diffuser.dim != encoder.dim or prompt_generator.config.dim != encoder.dim:
            raise ValueError(f"encoder dimension {encoder.dim} does not match the diffuser's {diffuser.dim} / the "
                             f"prompt generator's {prompt_generator.config.dim}; pass the encoder they were trained with")
        if prompt_generator.config.out_dim != decoder.hidden_size:
            raise ValueError(f"decoder hidden size {decoder.hidden_size} does not match the prompt generator's "
                             f"out_dim {prompt_generator.config.out_dim}; pass the decoder it was trained with")
        self.encoder, self.diffuser, self.prompt_generator, self.decoder = encoder, diffuser, prompt_generator, decoder
        prompt_generator.bind(decoder.embeddings.weight)
        self.sampling = sampling or SamplingConfig()
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
        """The full config of the pipeline's parts and its sampling defaults (built fresh on each access)."""
        return DGLMConfig(encoder=self.encoder.config, diffusion=self.diffuser.config,
                          prompt=self.prompt_generator.config, decoder=self.decoder.config, sampling=self.sampling)

    @property
    def device(self) -> torch.device:
        """The device of the diffusion network, where plans are sampled."""
        return next(self.diffuser.parameters()).device

    # ----------------------------------------------------------------------------------------------- building

    @classmethod
    def from_config(cls, config: DGLMConfig | str, encoder: SemanticEncoder | None = None,
                    decoder: Decoder | None = None) -> DGLM:
        """Untrained diffusion and prompt networks (their training initialisation) of a config or a preset
        name in :data:`dglm.config.PRESETS`, around the given (or loaded-by-id) encoder and decoder; a
        ``random:`` id, as the ``tiny`` preset's, loads a random stand-in (:func:`dglm.presets.load_encoder`).

        Example:
            >>> pipe = DGLM.from_config("tiny")
            >>> pipe.config.encoder == preset_config("tiny").encoder, pipe.encoder.fitted
            (True, True)
        """
        # Imported here: dglm.presets builds pipelines, so it imports this module.
        from dglm.presets import load_decoder, load_encoder

        config = preset_config(config)
        encoder = encoder or load_encoder(config.encoder)
        decoder = decoder or load_decoder(config.decoder)
        return cls(encoder, SemanticDiffuser(config.diffusion), PromptGenerator(config.prompt), decoder,
                   config.sampling)

    def save_pretrained(self, folder: str | os.PathLike, *, license: str | None = None,
                        card_text: str | None = None, name: str | None = None) -> None:
        """Write the checkpoint atomically: ``dglm.json`` + ``encoder/``, ``diffusion/``, ``prompt/``,
        ``probes/`` subfolders (JSON configs + safetensors), ``decoder_adapter/`` when the decoder carries
        a LoRA adapter trained with the prompt generator (:meth:`Decoder.load_adapter`; the adapter only),
        and a model card ``README.md`` (:func:`dglm.hub.model_card`: YAML metadata with ``license``, default
        ``"unknown"``, the parts, then ``card_text``; ``name``, default the folder's name, is what its example
        loads). The decoder and encoder weights are referenced by their ids, which ``dglm.json`` records with
        the library version and the decoder weights' source and fingerprint (:class:`dglm.hub.DecoderWeights`).
        """
        card = model_card(self, name or Path(folder).name, license, card_text)
        with atomic_directory(folder) as tmp:
            self.encoder.save_pretrained(tmp / "encoder")
            self.diffuser.save_pretrained(tmp / "diffusion")
            self.prompt_generator.save_pretrained(tmp / "prompt")
            if self.probes is not None and len(self.probes):
                self.probes.save(tmp / "probes")
            if self.decoder.has_adapter:
                self.decoder.save_adapter(tmp / ADAPTER_FOLDER)
            write_json(tmp / PIPELINE_FILE, {"library_version": library_version(),
                                             "encoder": self.encoder.config.name_or_path,
                                             "decoder": self.decoder.config.name_or_path,
                                             "decoder_weights": DecoderWeights.of(self.decoder).model_dump(),
                                             "decoder_hidden_size": self.decoder.hidden_size,
                                             "sampling": self.sampling.model_dump(mode="json")})
            (tmp / MODEL_CARD).write_text(card, encoding="utf-8")

    def push_to_hub(self, repo_id: str, *, revision: str | None = None, private: bool | None = None,
                    token: str | bool | None = None, commit_message: str = "Upload dglm checkpoint", api=None,
                    license: str | None = None, card_text: str | None = None):
        """Save the checkpoint (:meth:`save_pretrained`, its card naming ``repo_id``) into a temporary folder
        and upload it to the hub repo ``repo_id`` (created if missing) with ``HfApi.upload_folder``; ``api``
        is an ``HfApi`` (default: one made with ``token``). Returns the upload's ``CommitInfo``."""
        return push_folder(lambda folder: self.save_pretrained(folder, license=license, card_text=card_text,
                                                               name=repo_id),
                           repo_id, api=api, token=token, private=private, revision=revision,
                           commit_message=commit_message)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, encoder: SemanticEncoder | None = None,
                        decoder: Decoder | None = None, device: str | torch.device | None = None, *,
                        revision: str | None = None, cache_dir: str | os.PathLike | None = None,
                        token: str | bool | None = None) -> DGLM:
        """Load a checkpoint folder, a packaged one by name (``"mini"``), or a hub repo id (``"org/name"``,
        at ``revision``; ``cache_dir`` and ``token`` go to ``huggingface_hub.snapshot_download``; with
        ``HF_HUB_OFFLINE=1`` from the local hub cache only), see :func:`dglm.hub.resolve_checkpoint`. The
        encoder and decoder are loaded by the ids the checkpoint records unless given; a decoder whose weights
        differ from the recorded fingerprint of the training weights is logged as a warning. The
        checkpoint's decoder adapter, if it has one, is loaded into the decoder (given or not) unless that
        decoder already carries one."""
        folder = resolve_checkpoint(name_or_path, revision=revision, cache_dir=cache_dir, token=token)
        meta = read_config(folder / PIPELINE_FILE, _PipelineFile)
        sampling = meta.sampling
        if encoder is None:
            saved = read_config(folder / "encoder" / "config.json", EncoderConfig)
            check_recorded_id(saved.name_or_path, "encoder", folder / "encoder" / "config.json")
            encoder = SemanticEncoder.from_pretrained_stats(folder / "encoder", device=device)
        else:
            saved = read_config(folder / "encoder" / "config.json", type(encoder.config))
            if saved.dim != encoder.dim:
                raise ValueError(f"encoder dimension {encoder.dim} does not match the checkpoint's {saved.dim}; "
                                 f"pass the encoder {saved.name_or_path!r} it was trained with")
            if not encoder.fitted:
                encoder = SemanticEncoder.from_pretrained_stats(folder / "encoder", model=encoder.model)
        if decoder is None:
            check_recorded_id(meta.decoder, "decoder", folder / PIPELINE_FILE)
            pinned = meta.decoder_weights.revision if meta.decoder_weights is not None else None
            decoder = Decoder.from_pretrained(meta.decoder, device=device, **({"revision": pinned} if pinned else {}))
        if meta.decoder_weights is not None:
            meta.decoder_weights.check(decoder, decoder.config.name_or_path, f"the checkpoint {str(name_or_path)!r}")
        if (folder / ADAPTER_FOLDER).is_dir() and not decoder.has_adapter:
            decoder.load_adapter(folder / ADAPTER_FOLDER)
        probes = None
        if (folder / "probes").is_dir():
            from dglm.constraints import ProbeRegistry

            probes = ProbeRegistry.load(folder / "probes")
        pipe = cls(encoder, SemanticDiffuser.from_pretrained(folder / "diffusion"),
                   PromptGenerator.from_pretrained(folder / "prompt"), decoder, sampling, probes)
        return pipe.to(device) if device is not None else pipe

    # ------------------------------------------------------------------------------------------- inference

    @torch.no_grad()
    def plan(self, prefixes: Sequence[str], num_samples: int = 1, *, steps: int | None = None,
             sampler: str | None = None, cfg_scale: float | None = None, sigma2: float | None = None,
             seed: int | None = None, guidance: Callable[[Denoise], Denoise] | None = None,
             show_progress_bar: bool = False, batch_size: int = DEFAULT_BATCH_SIZE) -> Plan:
        """Sample ``num_samples`` continuation embeddings per prefix and turn them into soft prompts.

        ``guidance(denoise) -> denoise`` wraps the denoiser at every step (constraint guidance, see
        :class:`dglm.Controller`). Every setting defaults to ``self.sampling``. Rows are sampled
        ``batch_size`` at a time (see :func:`row_chunks`; ``guidance`` then sees each chunk's rows).
        """
        prefixes = check_prefixes(prefixes)
        num_samples = check_positive_int("num_samples", num_samples)
        batch_size = check_positive_int("batch_size", batch_size)
        s = self.sampling
        steps = s.steps if steps is None else check_positive_int("steps", steps, MAX_STEPS)
        sampler = s.sampler if sampler is None else sampler
        get_sampler(sampler)
        cfg_scale = s.cfg_scale if cfg_scale is None else check_finite("cfg_scale", cfg_scale, MAX_CFG_SCALE)
        sigma2 = check_sigma2(s.sigma2 if sigma2 is None else sigma2)
        check_seed(seed)
        plans = []
        for start, stop, n, chunk_seed in row_chunks(len(prefixes), num_samples, batch_size, seed):
            with self.lock:
                plans.append(self._plan(prefixes[start:stop], n, steps, sampler, cfg_scale, sigma2, chunk_seed,
                                        guidance, show_progress_bar))
        return merge_plans(prefixes, num_samples, plans)

    def _plan(self, prefixes: list[str], num_samples: int, steps: int, sampler: str, cfg_scale: float,
              sigma2: float, seed: int | None, guidance, show_progress_bar: bool) -> Plan:
        generator = torch.Generator(self.device)
        generator.manual_seed(seed if seed is not None else int(torch.randint(2**62, ()).item()))
        timings = {}
        t0 = time.perf_counter()
        prefix = self.encoder.standardize(self.encoder.encode(prefixes).to(self.device))
        check_finite_rows(prefix, "the encoder's embeddings", "run the encoder in float32")
        prefix = prefix.repeat_interleave(num_samples, dim=0).to(next(self.diffuser.parameters()).dtype)  # (B*n, d)
        timings["encode"] = (t1 := time.perf_counter()) - t0
        plans = self.diffuser.sample(prefix, steps=steps, sampler=sampler, cfg_scale=cfg_scale, generator=generator,
                                     wrap=guidance, show_progress_bar=show_progress_bar,
                                     compile=self.sampling.compile)
        timings["diffusion"] = (t2 := time.perf_counter()) - t1
        soft = self.prompt_generator.prompt(plans, sigma2, generator)
        timings["prompt"] = time.perf_counter() - t2
        return Plan(prefixes, num_samples, self.encoder.to_raw(plans.float()), soft, timings)

    @torch.no_grad()
    def generate(self, prefixes: Sequence[str], num_samples: int = 1, *, steps: int | None = None,
                 sampler: str | None = None, cfg_scale: float | None = None, sigma2: float | None = None,
                 seed: int | None = None, guidance: Callable[[Denoise], Denoise] | None = None,
                 show_progress_bar: bool = False, batch_size: int = DEFAULT_BATCH_SIZE,
                 plan_scale: float | None = None, **generate_kwargs) -> GenerationOutput:
        """Generate ``num_samples`` continuations per prefix. ``generate_kwargs`` go to the decoder's HF
        ``generate`` (defaults: what the decoder's ``generation_config`` sets, else top-p 0.9, repetition
        penalty 1.2, 32 new tokens).

        An empty or whitespace-only prefix means no context. A prefix longer than the decoder's context keeps
        its last tokens (with a logged warning) so that the soft tokens and ``max_new_tokens`` fit; a
        ``max_new_tokens`` that cannot fit is refused. At most ``batch_size`` rows are planned and decoded
        at once; with more, chunk ``c > 0`` uses a seed derived from ``seed`` and ``c`` (see :func:`row_chunks`),
        so outputs depend on ``batch_size`` but are reproducible for a fixed one. ``plan_scale`` (default
        ``self.sampling.plan_scale``) is the decoder-side plan guidance of :meth:`decode`.
        """
        prefixes = check_prefixes(prefixes)
        num_samples = check_positive_int("num_samples", num_samples)
        batch_size = check_positive_int("batch_size", batch_size)
        kwargs = self.generate_kwargs(generate_kwargs)
        check_seed(seed)
        outputs = []
        for start, stop, n, chunk_seed in row_chunks(len(prefixes), num_samples, batch_size, seed):
            with self.lock:
                plan = self.plan(prefixes[start:stop], n, steps=steps, sampler=sampler, cfg_scale=cfg_scale,
                                 sigma2=sigma2, seed=chunk_seed, guidance=guidance,
                                 show_progress_bar=show_progress_bar, batch_size=batch_size)
                outputs.append((start, self.decode(plan, seed=chunk_seed, plan_scale=plan_scale, **kwargs)))
        return merge_outputs(prefixes, outputs)

    def generate_kwargs(self, generate_kwargs: dict, num_soft_tokens: int | None = None) -> dict:
        """The HF ``generate`` keywords a decode uses, checked: ``generate_kwargs``, then what the decoder's own
        ``generation_config`` sets, then dglm's defaults (:data:`DEFAULT_GENERATE_KWARGS`)."""
        kwargs = {**self.decoder.generation_defaults(DEFAULT_GENERATE_KWARGS), **generate_kwargs}
        if "num_return_sequences" in kwargs and kwargs["num_return_sequences"] != 1:
            raise ValueError(f"num_return_sequences={kwargs['num_return_sequences']!r} is not supported with plans; "
                             f"use num_samples (one plan each)")
        check_positive_int("max_new_tokens", kwargs["max_new_tokens"])
        if kwargs.get("return_dict_in_generate"):
            raise ValueError("return_dict_in_generate=True is not supported: generate returns a GenerationOutput; "
                             "for HF's output, call pipe.decoder.model.generate on Controller.prompt_embeds(...)")
        check_decoding_kwargs(kwargs)
        k = self.prompt_generator.config.num_soft_tokens if num_soft_tokens is None else num_soft_tokens
        self.decoder.prefix_budget(k, kwargs["max_new_tokens"])  # refuses what cannot fit the context
        return kwargs

    def decode(self, plan: Plan, seed: int | None = None, plan_scale: float | None = None,
               contrast: Plan | None = None, **generate_kwargs) -> GenerationOutput:
        """Decode the text of a :class:`Plan` (one continuation per planned row). ``plan_scale`` > 1 adds
        plan guidance (:class:`~dglm.plan_guidance.PlanGuidance`) against :meth:`null_prompts`, or against
        ``contrast``, a plan of the same rows (e.g. the unguided plan of a guided one, as
        :meth:`Controller.generate`'s ``control_scale`` does)."""
        kwargs = self.generate_kwargs(generate_kwargs, plan.soft_prompts.shape[1])
        check_seed(seed)
        scale = self.sampling.plan_scale if plan_scale is None else check_plan_scale(plan_scale)
        t0 = time.perf_counter()
        rows = [p for p in plan.prefixes for _ in range(plan.num_samples)]
        check_finite_rows(plan.soft_prompts, "the plan's soft prompts", "sample the diffusion and prompt networks "
                          "in float32 or bfloat16")
        if contrast is not None and (contrast.prefixes != plan.prefixes or contrast.num_samples != plan.num_samples
                                     or contrast.soft_prompts.shape != plan.soft_prompts.shape):
            raise ValueError(f"contrast must be a plan of the same rows as plan ({len(plan.prefixes)} prefixes x "
                             f"{plan.num_samples} samples, soft prompts {tuple(plan.soft_prompts.shape)}), got "
                             f"{len(contrast.prefixes)} x {contrast.num_samples}, "
                             f"{tuple(contrast.soft_prompts.shape)}")
        with self.lock:
            if scale == 1.0:
                null = None
            else:
                null = self.null_prompts(len(rows), seed) if contrast is None else contrast.soft_prompts
            texts = self.decoder.generate(rows, plan.soft_prompts, seed=seed, null_soft=null, plan_scale=scale,
                                          **kwargs)
        n = plan.num_samples
        timings = {**plan.timings, "decode": time.perf_counter() - t0}
        return GenerationOutput(plan.prefixes, [texts[i * n:(i + 1) * n] for i in range(len(plan.prefixes))],
                                plan.embeddings.reshape(len(plan.prefixes), n, -1), timings)

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


def check_plan_scale(value, name: str = "plan_scale") -> float:
    """Validate a decoder-side guidance weight (``plan_scale``, ``control_scale``): a finite number in
    [1, 10] (1 = off).

    Example:
        >>> check_plan_scale(2)
        2.0
        >>> check_plan_scale(0.5, "control_scale")
        Traceback (most recent call last):
            ...
        ValueError: control_scale=0.5 must be a finite number in [1, 10] (1 = off)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (1 <= value <= MAX_PLAN_SCALE):
        raise ValueError(f"{name}={value!r:.100} must be a finite number in [1, {MAX_PLAN_SCALE:g}] (1 = off)")
    return float(value)


def check_positive_int(name: str, value, maximum: int | None = None) -> int:
    """Validate a positive integer argument (at most ``maximum``, if given).

    Example:
        >>> check_positive_int("steps", 20)
        20
        >>> check_positive_int("steps", 0)
        Traceback (most recent call last):
            ...
        ValueError: steps=0 must be an integer >= 1
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r:.100} must be an integer >= 1")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name}={value} is more than the limit of {maximum}")
    return value


def check_finite(name: str, value, maximum: float = math.inf) -> float:
    """Validate a finite number in [0, maximum].

    Example:
        >>> check_finite("cfg_scale", 2)
        2.0
        >>> check_finite("cfg_scale", float("nan"), MAX_CFG_SCALE)
        Traceback (most recent call last):
            ...
        ValueError: cfg_scale=nan must be a finite number in [0, 100]
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= maximum \
            or not math.isfinite(value):
        bound = f"in [0, {maximum:g}]" if math.isfinite(maximum) else ">= 0"
        raise ValueError(f"{name}={value!r:.100} must be a finite number {bound}")
    return float(value)


def check_seed(seed) -> int | None:
    """Validate a seed: None (random) or an integer in [0, 2**63).

    Example:
        >>> check_seed(0), check_seed(None)
        (0, None)
        >>> check_seed(-1)
        Traceback (most recent call last):
            ...
        ValueError: seed=-1 must be None or an integer in [0, 2**63)
    """
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise ValueError(f"seed={seed!r:.100} must be None or an integer in [0, 2**63)")
    return seed


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
