"""DGLM: the pipeline encoder -> semantic diffusion -> prompt generator -> decoder.

Example:
    >>> from dglm import DGLM
    >>> dglm = DGLM.from_pretrained("mini")                                    # doctest: +SKIP
    >>> out = dglm.generate(["The match last night"], num_samples=2, max_new_tokens=32, seed=0)  # doctest: +SKIP
    >>> out.continuations[0]                                                   # doctest: +SKIP
    [' was ...', ' ended ...']
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dglm.config import DGLMConfig, SamplingConfig
from dglm.decoder import Decoder, check_prefixes
from dglm.diffusion import SemanticDiffuser
from dglm.encoder import SemanticEncoder
from dglm.io import CheckpointError, atomic_directory, read_config, read_json, write_json
from dglm.prompt import PromptGenerator, check_sigma2
from dglm.sampling import Denoise

logger = logging.getLogger(__name__)

PIPELINE_FILE = "dglm.json"
PACKAGED = Path(__file__).parent / "checkpoints"

# Generation defaults of the reference (nucleus sampling with a repetition penalty).
DEFAULT_GENERATE_KWARGS = {"do_sample": True, "top_p": 0.9, "repetition_penalty": 1.2, "max_new_tokens": 32}


def library_version() -> str:
    from dglm import __version__

    return __version__


@dataclass
class Plan:
    """Sampled plans and the soft prompts made from them, for B prefixes x n samples (row-major).

    ``embeddings``: (B * n, d) raw unit-norm continuation embeddings; ``soft_prompts``: (B * n, k, h).
    """

    prefixes: list[str]
    num_samples: int
    embeddings: torch.Tensor
    soft_prompts: torch.Tensor
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class GenerationOutput:
    """What :meth:`DGLM.generate` returns: ``continuations[i][j]`` is sample j of prefix i; ``plans`` are the
    raw-space embeddings the decoder was asked to follow, (B, n, d); ``timings`` are seconds per stage."""

    prefixes: list[str]
    continuations: list[list[str]]
    plans: torch.Tensor
    timings: dict[str, float]


class DGLM(torch.nn.Module):
    """Diffusion Guided Language Model: plans a continuation embedding, then decodes text that follows it.

    Build it from trained parts, from a checkpoint (:meth:`from_pretrained`), or with random weights from a
    preset for shape and speed checks (:meth:`from_config`). ``probes`` are the named probes shipped with the
    checkpoint (a :class:`dglm.constraints.ProbeRegistry`), which built-in constraints resolve to.
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

    @property
    def config(self) -> DGLMConfig:
        return DGLMConfig(encoder=self.encoder.config, diffusion=self.diffuser.config,
                          prompt=self.prompt_generator.config, decoder=self.decoder.config, sampling=self.sampling)

    @property
    def device(self) -> torch.device:
        return next(self.diffuser.parameters()).device

    # ----------------------------------------------------------------------------------------------- building

    @classmethod
    def from_config(cls, config: DGLMConfig | str, encoder: SemanticEncoder | None = None,
                    decoder: Decoder | None = None) -> DGLM:
        """Random-weight diffusion and prompt networks of a config or preset name, around the given (or
        loaded-by-id) encoder and decoder."""
        config = DGLMConfig.preset(config) if isinstance(config, str) else config
        encoder = encoder or SemanticEncoder.from_pretrained(config.encoder.name_or_path)
        decoder = decoder or Decoder.from_pretrained(config.decoder.name_or_path)
        return cls(encoder, SemanticDiffuser(config.diffusion), PromptGenerator(config.prompt), decoder,
                   config.sampling)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write the checkpoint atomically: ``dglm.json`` + ``encoder/``, ``diffusion/``, ``prompt/``,
        ``probes/`` subfolders (JSON configs + safetensors). The decoder and encoder weights are referenced
        by their ids, which ``dglm.json`` records with the library version."""
        with atomic_directory(folder) as tmp:
            self.encoder.save_pretrained(tmp / "encoder")
            self.diffuser.save_pretrained(tmp / "diffusion")
            self.prompt_generator.save_pretrained(tmp / "prompt")
            if self.probes is not None and len(self.probes):
                self.probes.save(tmp / "probes")
            write_json(tmp / PIPELINE_FILE, {"library_version": library_version(),
                                             "encoder": self.encoder.config.name_or_path,
                                             "decoder": self.decoder.config.name_or_path,
                                             "decoder_hidden_size": self.decoder.hidden_size,
                                             "sampling": self.sampling.model_dump(mode="json")})

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, encoder: SemanticEncoder | None = None,
                        decoder: Decoder | None = None, device: str | torch.device | None = None) -> DGLM:
        """Load a checkpoint folder, or a packaged one by name (``"mini"``). The encoder and decoder are
        loaded by the ids the checkpoint records unless given."""
        folder = Path(name_or_path)
        if not folder.is_dir() and (PACKAGED / str(name_or_path)).is_dir():
            folder = PACKAGED / str(name_or_path)
        if not (folder / PIPELINE_FILE).is_file():
            known = sorted(p.name for p in PACKAGED.iterdir() if (p / PIPELINE_FILE).is_file()) \
                if PACKAGED.is_dir() else []
            raise CheckpointError(f"name_or_path={str(name_or_path)!r} is neither a DGLM checkpoint folder (with "
                                  f"{PIPELINE_FILE}) nor a packaged checkpoint; packaged: {known}")
        meta = read_json(folder / PIPELINE_FILE)
        sampling = read_config_dict(meta.get("sampling", {}), SamplingConfig, folder / PIPELINE_FILE)
        if encoder is None:
            encoder = SemanticEncoder.from_pretrained_stats(folder / "encoder", device=device)
        else:
            saved = read_config(folder / "encoder" / "config.json", type(encoder.config))
            if saved.dim != encoder.dim:
                raise ValueError(f"encoder dimension {encoder.dim} does not match the checkpoint's {saved.dim}; "
                                 f"pass the encoder {saved.name_or_path!r} it was trained with")
            if not encoder.fitted:
                encoder = SemanticEncoder.from_pretrained_stats(folder / "encoder", model=encoder.model)
        decoder = decoder or Decoder.from_pretrained(meta.get("decoder", ""), device=device)
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
             show_progress_bar: bool = False) -> Plan:
        """Sample ``num_samples`` continuation embeddings per prefix and turn them into soft prompts.

        ``guidance(denoise) -> denoise`` wraps the denoiser at every step (constraint guidance, see
        :class:`dglm.Controller`). Every setting defaults to ``self.sampling``.
        """
        prefixes = check_prefixes(prefixes)
        num_samples = check_positive_int("num_samples", num_samples)
        s = self.sampling
        sigma2 = check_sigma2(s.sigma2 if sigma2 is None else sigma2)
        generator = torch.Generator(self.device)
        generator.manual_seed(seed if seed is not None else int(torch.randint(2**62, ()).item()))
        timings = {}
        t0 = time.perf_counter()
        prefix = self.encoder.standardize(self.encoder.encode(prefixes).to(self.device))
        prefix = prefix.repeat_interleave(num_samples, dim=0).to(next(self.diffuser.parameters()).dtype)  # (B*n, d)
        timings["encode"] = (t1 := time.perf_counter()) - t0
        plans = self.diffuser.sample(prefix, steps=steps or s.steps, sampler=sampler or s.sampler,
                                     cfg_scale=s.cfg_scale if cfg_scale is None else cfg_scale,
                                     generator=generator, wrap=guidance, show_progress_bar=show_progress_bar)
        timings["diffusion"] = (t2 := time.perf_counter()) - t1
        soft = self.prompt_generator.prompt(plans, sigma2, generator)
        timings["prompt"] = time.perf_counter() - t2
        return Plan(prefixes, num_samples, self.encoder.to_raw(plans.float()), soft, timings)

    @torch.no_grad()
    def generate(self, prefixes: Sequence[str], num_samples: int = 1, *, steps: int | None = None,
                 sampler: str | None = None, cfg_scale: float | None = None, sigma2: float | None = None,
                 seed: int | None = None, guidance: Callable[[Denoise], Denoise] | None = None,
                 show_progress_bar: bool = False, **generate_kwargs) -> GenerationOutput:
        """Generate ``num_samples`` continuations per prefix. ``generate_kwargs`` go to the decoder's HF
        ``generate`` (defaults: top-p 0.9, repetition penalty 1.2, 32 new tokens)."""
        plan = self.plan(prefixes, num_samples, steps=steps, sampler=sampler, cfg_scale=cfg_scale, sigma2=sigma2,
                         seed=seed, guidance=guidance, show_progress_bar=show_progress_bar)
        return self.decode(plan, seed=seed, **generate_kwargs)

    def decode(self, plan: Plan, seed: int | None = None, **generate_kwargs) -> GenerationOutput:
        """Decode the text of a :class:`Plan` (one continuation per planned row)."""
        kwargs = {**DEFAULT_GENERATE_KWARGS, **generate_kwargs}
        if "num_return_sequences" in kwargs and kwargs["num_return_sequences"] != 1:
            raise ValueError("num_return_sequences is not supported with plans; use num_samples (one plan each)")
        check_positive_int("max_new_tokens", kwargs["max_new_tokens"])
        t0 = time.perf_counter()
        rows = [p for p in plan.prefixes for _ in range(plan.num_samples)]
        texts = self.decoder.generate(rows, plan.soft_prompts, seed=seed, **kwargs)
        n = plan.num_samples
        timings = {**plan.timings, "decode": time.perf_counter() - t0}
        return GenerationOutput(plan.prefixes, [texts[i * n:(i + 1) * n] for i in range(len(plan.prefixes))],
                                plan.embeddings.reshape(len(plan.prefixes), n, -1), timings)


def check_positive_int(name: str, value) -> int:
    """Validate a positive integer argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be an integer >= 1")
    return value


def read_config_dict(data: dict, cls, where):
    from pydantic import ValidationError

    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise CheckpointError(f"{where} does not hold a valid {cls.__name__}: {e}") from e
