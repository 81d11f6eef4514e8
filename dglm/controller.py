"""Controller: constraints bound to a DGLM pipeline, for generation or for soft prompts to use elsewhere.

Example:
    >>> from dglm import Controller, toxicity, topic
    >>> ctl = Controller(toxicity.low() + topic("sports"), strength=20)      # loads the "mini" checkpoint  # doctest: +SKIP
    >>> ctl.generate(["The match last night"], num_samples=2, seed=0).continuations  # doctest: +SKIP
    >>> embeds, mask = ctl.prompt_embeds(["The match last night"], seed=0)   # doctest: +SKIP
    >>> my_model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=32)  # doctest: +SKIP
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch

from dglm.constraints import Constraint, ConstraintGuidance, parse_constraint
from dglm.decoder import check_prefixes
from dglm.outputs import GenerationOutput, Plan, merge_outputs, merge_plans, row_chunks, sum_timings
from dglm.pipeline import DEFAULT_BATCH_SIZE, DGLM, check_plan_scale, check_positive_int, check_seed

ConstraintLike = Constraint | str | None
_FLOAT32_MAX = torch.finfo(torch.float32).max


class Controller:
    """A constraint (``toxicity.low() + topic('sports')``, a string in the same syntax, or None for unguided
    generation) with a guidance strength, bound to a :class:`DGLM` pipeline (default: ``DGLM.from_pretrained
    ("mini")``, loaded on first use).

    Every call may override the constraint and strength for each prefix (``constraints=[...]``,
    ``strength=[...]``), so one batch can serve requests with different controls. Calls are checked,
    chunked and thread-safe like :meth:`DGLM.generate` (each chunk holds the pipeline's ``lock``).

    Example (a random-weight pipeline and a zero-shot constraint, which needs no shipped probes):
        >>> from dglm.constraints import near
        >>> from dglm.presets import random_pipeline
        >>> ctl = Controller(near("the game was won"), random_pipeline("tiny"), strength=5)
        >>> ctl
        Controller(near('the game was won'), strength=5.0)
        >>> out = ctl.generate(["the game was", "a new song"], num_samples=2, steps=4, seed=0,
        ...                    constraints=[None, 'near("old music")'], strength=[0, 10], max_new_tokens=3)
        >>> [len(texts) for texts in out.continuations]
        [2, 2]
        >>> embeds, mask = ctl.prompt_embeds(["the game was"], num_samples=2, steps=4, seed=0)
        >>> embeds.shape, mask.shape  # 3 prefix tokens + 4 soft tokens per row
        (torch.Size([2, 7, 32]), torch.Size([2, 7]))
    """

    def __init__(self, constraint: ConstraintLike = None, pipeline: DGLM | None = None, *,
                 strength: float | None = None, guidance_samples: int | None = None, max_x0_shift: float = 1.0):
        self._constraint = _as_constraint(constraint, "constraint")
        self._pipeline = pipeline
        self.strength = None if strength is None else _check_strength(strength, "strength")
        self.guidance_samples = guidance_samples
        self.max_x0_shift = max_x0_shift
        self._load_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Controller({self._constraint!r}, strength={self.strength})"

    @property
    def pipeline(self) -> DGLM:
        """The bound :class:`DGLM` (the packaged ``"mini"`` checkpoint, loaded on first access, if none was given)."""
        with self._load_lock:  # two threads must not both load it
            if self._pipeline is None:
                self._pipeline = DGLM.from_pretrained("mini")
        return self._pipeline

    @property
    def constraint(self) -> Constraint | None:
        """The default constraint (a parsed :class:`~dglm.constraints.Constraint`), or None for unguided."""
        return self._constraint

    def guidance(self, prefixes: Sequence[str], num_samples: int = 1,
                 constraints: Sequence[ConstraintLike] | None = None,
                 strength: float | Sequence[float] | None = None, seed: int | None = None) -> ConstraintGuidance | None:
        """The denoiser hook for a batch of ``len(prefixes) * num_samples`` rows (None if nothing is guided)."""
        per_prefix, strengths = self._controls(prefixes, constraints, strength)
        return self._guidance(per_prefix, strengths, num_samples, seed)

    def _controls(self, prefixes: Sequence[str], constraints: Sequence[ConstraintLike] | None,
                  strength: float | Sequence[float] | None) -> tuple[list[Constraint | None], list[float]]:
        """Checked per-prefix resolved constraints and strengths."""
        pipe = self.pipeline
        if constraints is None:
            per_prefix = [self._constraint] * len(prefixes)
        else:
            if not isinstance(constraints, Sequence) or isinstance(constraints, str) \
                    or len(constraints) != len(prefixes):
                raise ValueError(f"constraints must be a list with one constraint (or None) per prefix "
                                 f"({len(prefixes)}), got {constraints!r:.200}")
            per_prefix = [_as_constraint(c, f"constraints[{i}]") for i, c in enumerate(constraints)]
        default = self.strength if self.strength is not None else pipe.sampling.strength
        if strength is None:
            strengths = [default] * len(prefixes)
        elif isinstance(strength, (int, float)):
            strengths = [_check_strength(strength, "strength")] * len(prefixes)
        else:
            if not isinstance(strength, Sequence) or isinstance(strength, str) or len(strength) != len(prefixes):
                raise ValueError(f"strength must be a number or a list with one number per prefix "
                                 f"({len(prefixes)}), got {strength!r:.200}")
            strengths = [_check_strength(s, f"strength[{i}]") for i, s in enumerate(strength)]
        with pipe.lock:  # resolving may run the encoder (and its tokenizer), shared with other threads
            resolved = {c: c.resolve(pipe.encoder, pipe.probes) for c in set(per_prefix) if c is not None}
        return [resolved[c] if c is not None else None for c in per_prefix], strengths

    def _guidance(self, per_prefix: list[Constraint | None], strengths: list[float], num_samples: int,
                  seed: int | None) -> ConstraintGuidance | None:
        if all(c is None for c in per_prefix):
            return None
        pipe = self.pipeline
        rows = [c for c in per_prefix for _ in range(num_samples)]
        row_strength = torch.tensor([s for s in strengths for _ in range(num_samples)], dtype=torch.float32)
        generator = torch.Generator(pipe.device).manual_seed(seed if seed is not None else 0)
        return ConstraintGuidance(rows, row_strength, pipe.encoder.to_raw,
                                  num_samples=self.guidance_samples or pipe.sampling.guidance_samples,
                                  generator=generator, max_x0_shift=self.max_x0_shift)

    def plan(self, prefixes: Sequence[str], num_samples: int = 1, *,
             constraints: Sequence[ConstraintLike] | None = None, strength: float | Sequence[float] | None = None,
             seed: int | None = None, **plan_kwargs) -> Plan:
        """Guided plans and soft prompts (see :meth:`DGLM.plan` for ``plan_kwargs``)."""
        prefixes = check_prefixes(prefixes)
        num_samples = check_positive_int("num_samples", num_samples)
        batch_size = check_positive_int("batch_size", plan_kwargs.pop("batch_size", DEFAULT_BATCH_SIZE))
        check_seed(seed)
        per_prefix, strengths = self._controls(prefixes, constraints, strength)
        pipe, plans = self.pipeline, []
        for start, stop, n, chunk_seed in row_chunks(len(prefixes), num_samples, batch_size, seed):
            with pipe.lock:
                guidance = self._guidance(per_prefix[start:stop], strengths[start:stop], n, chunk_seed)
                plans.append(pipe.plan(prefixes[start:stop], n, seed=chunk_seed, guidance=guidance,
                                       batch_size=batch_size, **plan_kwargs))
        return merge_plans(prefixes, num_samples, plans)

    def generate(self, prefixes: Sequence[str], num_samples: int = 1, *,
                 constraints: Sequence[ConstraintLike] | None = None, strength: float | Sequence[float] | None = None,
                 seed: int | None = None, steps: int | None = None, sampler: str | None = None,
                 cfg_scale: float | None = None, sigma2: float | None = None, show_progress_bar: bool = False,
                 batch_size: int = DEFAULT_BATCH_SIZE, plan_scale: float | None = None,
                 control_scale: float | None = None, **generate_kwargs) -> GenerationOutput:
        """Controlled continuations: ``output.continuations[i][j]`` is sample j of prefix i. Prefixes,
        long prefixes, ``batch_size`` and ``plan_scale`` are handled as in :meth:`DGLM.generate`.

        ``control_scale`` > 1 (default ``pipeline.sampling.control_scale``) is control contrast: each guided
        plan is decoded against the unguided plan of the same noise (:meth:`DGLM.decode`'s ``contrast``), so
        the decoder weights by ``control_scale`` what the constraint changed in the plan (stronger control,
        at some fluency; a second diffusion run and decoder pass). Chunks without guided rows skip it; an
        unguided row in a guided chunk is its own contrast, so its text is unchanged (the repetition penalty
        applies to both branches alike). It excludes ``plan_scale`` > 1.
        """
        prefixes = check_prefixes(prefixes)
        num_samples = check_positive_int("num_samples", num_samples)
        batch_size = check_positive_int("batch_size", batch_size)
        check_seed(seed)
        pipe = self.pipeline
        kwargs = pipe.generate_kwargs(generate_kwargs)
        plan_scale = pipe.sampling.plan_scale if plan_scale is None else check_plan_scale(plan_scale)
        control_scale = pipe.sampling.control_scale if control_scale is None \
            else check_plan_scale(control_scale, "control_scale")
        if control_scale != 1.0 and plan_scale != 1.0:
            raise ValueError(f"control_scale={control_scale:g} and plan_scale={plan_scale:g}: use one decoder-side "
                             f"contrast at a time (the other must be 1)")
        per_prefix, strengths = self._controls(prefixes, constraints, strength)
        plan_kwargs = dict(steps=steps, sampler=sampler, cfg_scale=cfg_scale, sigma2=sigma2,
                           show_progress_bar=show_progress_bar, batch_size=batch_size)
        outputs = []
        for start, stop, n, chunk_seed in row_chunks(len(prefixes), num_samples, batch_size, seed):
            with pipe.lock:
                guidance = self._guidance(per_prefix[start:stop], strengths[start:stop], n, chunk_seed)
                plan = pipe.plan(prefixes[start:stop], n, seed=chunk_seed, guidance=guidance, **plan_kwargs)
                contrast, scale = None, plan_scale
                if control_scale != 1.0 and guidance is not None:  # the same noise, unguided
                    contrast, scale = pipe.plan(prefixes[start:stop], n, seed=chunk_seed, **plan_kwargs), control_scale
                    plan.timings = sum_timings([plan, contrast])
                outputs.append((start, pipe.decode(plan, seed=chunk_seed, plan_scale=scale, contrast=contrast,
                                                   **kwargs)))
        return merge_outputs(prefixes, outputs)

    def prompt_embeds(self, prefixes: Sequence[str], num_samples: int = 1, *, dtype: torch.dtype | None = None,
                      device: str | torch.device | None = None, max_new_tokens: int = 0,
                      **plan_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs_embeds, attention_mask)`` for ``len(prefixes) * num_samples`` rows (row-major):
        ``[left padding][prefix token embeddings][soft tokens]``, ready for any HF ``model.generate(
        inputs_embeds=..., attention_mask=...)`` call of the same decoder. Under the same seed
        (``torch.manual_seed(seed)`` before your call), that call writes exactly what :meth:`generate` writes.
        Prefixes too long for the decoder's context keep their last tokens, leaving room for the soft tokens
        and the ``max_new_tokens`` you will generate (pass the same number to both for identical inputs).
        """
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens={max_new_tokens!r:.100} must be an integer >= 0")
        plan = self.plan(prefixes, num_samples, **plan_kwargs)
        rows = [p for p in plan.prefixes for _ in range(plan.num_samples)]
        decoder = self.pipeline.decoder
        budget = decoder.prefix_budget(plan.soft_prompts.shape[1], max_new_tokens)
        with torch.no_grad(), self.pipeline.lock:
            embeds, mask, _ = decoder.embed(decoder.tokenize(rows, budget), plan.soft_prompts)
        return embeds.to(device=device, dtype=dtype), mask.to(device=device)


def _as_constraint(value: ConstraintLike, name: str) -> Constraint | None:
    if value is None or isinstance(value, Constraint):
        return value
    if isinstance(value, str):
        return parse_constraint(value)
    raise TypeError(f"{name}={value!r:.100} must be a Constraint, a constraint expression string or None")


def _check_strength(value, name: str) -> float:
    # Strengths become float32 tensors: beyond float32's range they would turn into inf.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value <= _FLOAT32_MAX):
        raise ValueError(f"{name}={value!r:.100} must be a finite number >= 0 (at most {_FLOAT32_MAX:.3g})")
    return float(value)
