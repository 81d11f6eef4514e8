"""Loss-guided diffusion: steer the semantic diffusion with constraint gradients, as a denoiser wrapper.

At every sampling step, with the noisy latent z_t (standardised space) requiring grad:

1. predict x0_hat and eps_hat with the wrapped denoiser (CFG, if on, is already batched inside it);
2. draw n Monte-Carlo samples ``x~ = x0_hat + (sigma_t / alpha_t) * N(0, I)`` per row, (B, n, d);
3. map them to the encoder's raw space with ``to_raw`` (un-standardise, L2-normalise);
4. per-sample loss ``l`` from the row's constraint; per row ``L = -log mean_n exp(-l)`` (the Monte-Carlo
   estimate of ``-log p(constraint | z_t)`` of loss-guided diffusion, Song et al. 2023); sum over rows;
5. ``g = dL / dz_t``; ``eps_hat <- eps_hat + lambda * sigma_t * g``;
   ``x0_hat <- (z_t - sigma_t * eps_hat) / alpha_t``, which is ``x0_hat - lambda * sigma_t^2 / alpha_t * g``.

Samplers never know about any of this: ``diffuser.sample(prefix, wrap=ConstraintGuidance(...))``.

Numerical safety. Near t = 1, alpha_t -> 0 and the x0 change ``lambda sigma^2 / alpha * g`` explodes, and a
large lambda does the same at any t. The guided change of x0 is therefore clipped per row to an RMS of
``max_x0_shift`` per dimension (standardised data have unit variance per dimension), with eps_hat changed
by the same factor so ``z = alpha x0 + sigma eps`` still holds; everything the samplers compute stays
bounded for any lambda, in float32 and bfloat16. ``max_grad_norm`` optionally clips ``g`` itself first.
The update is computed in float32 whatever the model's dtype.

The Monte-Carlo noise (n, d) is drawn once per step and shared by all rows (common random numbers): a
row's guidance then does not depend on which other rows share its batch.

Example:
    >>> import torch
    >>> from dglm.config import DiffusionConfig
    >>> from dglm.diffusion import SemanticDiffuser
    >>> from dglm.constraints import Probe
    >>> diffuser = SemanticDiffuser(DiffusionConfig(dim=8, num_tokens=4, token_features=8, width=32, depth=2,
    ...                                             heads=2))
    >>> probe = Probe(torch.eye(1, 8), torch.zeros(1), ("no", "yes"), "toy:8", name="first_axis")
    >>> wrap = ConstraintGuidance(probe("yes"), strength=20.0, to_raw=torch.nn.functional.normalize,
    ...                           num_samples=8, generator=torch.Generator().manual_seed(0))
    >>> diffuser.sample(torch.zeros(3, 8), sampler="ddpm", steps=5, wrap=wrap).shape
    torch.Size([3, 8])
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from dglm.config import MAX_STRENGTH, GenerationConfig, check_field
from dglm.constraints.algebra import Constraint
from dglm.constraints.parse import parse_constraint
from dglm.sampling import Denoise, Prediction

logger = logging.getLogger(__name__)


class ConstraintGuidance:
    """A ``wrap(denoise) -> denoise`` hook that adds constraint gradients to every prediction.

    constraints: one resolved :class:`Constraint` for every row, or a sequence with one Constraint or None
    per row of the sampling batch (rows are grouped by distinct constraint; no loop over rows).
    strength: lambda, a float or a (B,) tensor (>= 0). to_raw: standardised (..., d) -> raw (..., d),
    differentiable (``SemanticEncoder.to_raw``). num_samples: Monte-Carlo samples per row. generator:
    for the Monte-Carlo noise (its device is used to draw it). max_x0_shift: per-row bound on the RMS
    change of x0_hat per dimension (see the module docstring). max_grad_norm: optional per-row bound on
    ``||g||`` before scaling.

    Rows whose constraint is None, normalises to nothing (``c - c``, ``0 * c``), or whose strength is 0
    come out bit-identical to the unwrapped denoiser (a batch mixing guided and unguided rows pays one
    extra gradient-free forward to guarantee that). Needs gradients: call the sampler under
    ``torch.no_grad()`` (as the samplers do), not ``torch.inference_mode()``.

    Example:
        >>> import torch
        >>> from dglm.constraints import FunctionConstraint
        >>> from dglm.sampling import Prediction
        >>> def denoise(z, alpha2):  # a toy denoiser that predicts x0 = z
        ...     return Prediction(x0=z, eps=torch.zeros_like(z))
        >>> low_first = FunctionConstraint(lambda x: x[..., 0], name="low_first")
        >>> guided = ConstraintGuidance([low_first, None], strength=torch.tensor([5.0, 5.0]),
        ...                             to_raw=lambda x: x, num_samples=4)(denoise)
        >>> out = guided(torch.ones(2, 3), torch.full((2,), 0.5))
        >>> (out.x0[0, 0] < 1).item(), out.x0[1].tolist()
        (True, [1.0, 1.0, 1.0])
    """

    def __init__(self, constraints: Constraint | Sequence[Constraint | None] | None,
                 strength: float | torch.Tensor, to_raw: Callable[[torch.Tensor], torch.Tensor],
                 num_samples: int = 32, generator: torch.Generator | None = None, max_x0_shift: float = 1.0,
                 max_grad_norm: float | None = None):
        if constraints is None or isinstance(constraints, Constraint):
            self.per_row = None
            self.constraint = constraints
            _check_resolved(constraints, "constraints")
        else:
            self.per_row = list(constraints)
            self.constraint = None
            rows: dict[Constraint, list[int]] = {}
            for i, c in enumerate(self.per_row):
                if c is not None and not isinstance(c, Constraint):
                    raise TypeError(f"constraints[{i}]={c!r} must be a Constraint or None")
                _check_resolved(c, f"constraints[{i}]")
                if c is not None:
                    rows.setdefault(c, []).append(i)  # equal constraints (by value) share one group
            # Constraints that normalise to nothing (c - c, 0 * c) guide nothing.
            self._row_groups = [(c, torch.tensor(idx)) for c, idx in rows.items() if c.terms()]
        # strength, num_samples and max_x0_shift arrive checked (GenerationConfig.check, Control): the knobs
        # are validated once, at the door that receives them.
        if isinstance(strength, torch.Tensor):
            if strength.dim() != 1:
                raise ValueError(f"strength must be a float or a (batch,) tensor, got shape {tuple(strength.shape)}")
            self.strength = strength.detach().float().cpu()
        else:
            self.strength = float(strength)
        if not callable(to_raw):
            raise TypeError(f"to_raw={to_raw!r} must be callable: standardised (..., d) -> raw (..., d)")
        if max_grad_norm is not None:
            _check_bound(max_grad_norm, "max_grad_norm")
        self.to_raw, self.num_samples, self.generator = to_raw, num_samples, generator
        self.max_x0_shift, self.max_grad_norm = float(max_x0_shift), max_grad_norm

    def __repr__(self) -> str:
        what = self.constraint if self.per_row is None else f"<{len(self.per_row)} per-row constraints>"
        return f"ConstraintGuidance({what!r}, strength={self.strength!r}, num_samples={self.num_samples})"

    # -- which rows are guided, by what ----------------------------------------------------------------
    def _groups(self, batch: int) -> list[tuple[Constraint, torch.Tensor]]:
        """[(constraint, row indices on the CPU)] for the rows that are actually guided (strength > 0).
        Worked out on the CPU from the constructor's arguments, so it never waits for the device."""
        if isinstance(self.strength, torch.Tensor) and self.strength.shape[0] != batch:
            raise ValueError(f"strength has {self.strength.shape[0]} entries but the sampling batch has {batch} rows")
        if self.per_row is None:
            if self.constraint is None or not self.constraint.terms():
                return []
            groups = [(self.constraint, torch.arange(batch))]
        else:
            if len(self.per_row) != batch:
                raise ValueError(f"got {len(self.per_row)} per-row constraints but the sampling batch has {batch} "
                                 f"rows (classifier-free guidance does not change this count)")
            groups = self._row_groups
        if isinstance(self.strength, float):
            return groups if self.strength > 0 else []
        groups = [(c, idx[self.strength[idx] > 0]) for c, idx in groups]
        return [(c, idx) for c, idx in groups if idx.numel()]

    # -- the hook --------------------------------------------------------------------------------------
    def __call__(self, denoise: Denoise) -> Denoise:
        def guided(z: torch.Tensor, alpha2: torch.Tensor) -> Prediction:
            batch = z.shape[0]
            groups = self._groups(batch)
            if not groups:
                return denoise(z, alpha2)
            if torch.is_inference_mode_enabled():
                raise RuntimeError("constraint guidance needs gradients: run the sampler under torch.no_grad(), "
                                   "not torch.inference_mode()")
            groups = [(c, idx.to(z.device, non_blocking=True)) for c, idx in groups]
            strengths = self.strength if isinstance(self.strength, torch.Tensor) else torch.tensor([self.strength])
            strengths = strengths.to(z.device, non_blocking=True).expand(batch)  # (B,)
            with torch.enable_grad():
                z_in = z.detach().requires_grad_(True)
                pred = denoise(z_in, alpha2)
                grad = self._gradient(z_in, pred, alpha2, groups)  # (B, d) float32
            guided_rows = sum(int(idx.numel()) for _, idx in groups)  # groups are disjoint
            active = torch.zeros(batch, dtype=torch.bool, device=z.device)
            for _, idx in groups:
                active[idx] = True
            x0, eps = self._update(pred.x0.detach(), pred.eps.detach(), alpha2, strengths, grad, active)
            if guided_rows < batch:  # unguided rows: exactly what the unwrapped denoiser gives
                plain = denoise(z, alpha2)
                x0 = torch.where(active[:, None], x0, plain.x0)
                eps = torch.where(active[:, None], eps, plain.eps)
            return Prediction(x0=x0, eps=eps)

        return guided

    def _gradient(self, z_in, pred, alpha2, groups) -> torch.Tensor:
        """d(sum over guided rows of -log mean_n exp(-loss)) / dz, (B, d) in float32."""
        dim = z_in.shape[1]
        device = self.generator.device if self.generator is not None else z_in.device
        noise = torch.randn((self.num_samples, dim), generator=self.generator, device=device)
        noise = noise.to(device=z_in.device, dtype=pred.x0.dtype)  # (n, d), shared by all rows
        alpha, sigma = _alpha_sigma(alpha2)
        spread = (sigma / alpha).to(pred.x0.dtype)  # (B,)
        total = z_in.new_zeros((), dtype=torch.float32)
        for constraint, idx in groups:
            x_mc = pred.x0[idx, None, :] + spread[idx, None, None] * noise  # (r, n, d)
            losses = constraint.loss(self.to_raw(x_mc)).float()  # (r, n)
            if losses.shape != x_mc.shape[:2]:
                raise ValueError(f"constraint {constraint!r} returned a loss of shape {tuple(losses.shape)} for "
                                 f"embeddings {tuple(x_mc.shape)}; expected {tuple(x_mc.shape[:2])}")
            row_loss = -(torch.logsumexp(-losses, dim=1) - math.log(self.num_samples))  # (r,)
            total = total + row_loss.sum()
        (grad,) = torch.autograd.grad(total, z_in)
        return grad.float()

    def _update(self, x0, eps, alpha2, strengths, grad, active) -> tuple[torch.Tensor, torch.Tensor]:
        """eps + lambda sigma g and the matching x0, with the x0 change clipped; computed in float32."""
        finite = torch.isfinite(grad).all(dim=1)  # (B,)
        if not bool(finite[active].all()):
            logger.warning("constraint guidance: non-finite gradient in %d row(s); those rows are not guided "
                           "at this step", int((~finite & active).sum()))
            grad = torch.where(finite[:, None], grad, torch.zeros_like(grad))
        if self.max_grad_norm is not None:
            norm = grad.norm(dim=1, keepdim=True)  # (B, 1)
            grad = grad * (self.max_grad_norm / norm.clamp_min(1e-30)).clamp(max=1.0)
        alpha, sigma = (v[:, None] for v in _alpha_sigma(alpha2))  # (B, 1)
        # delta_x0 = -(lambda sigma^2 / alpha) g, written as direction * magnitude so that neither a huge
        # lambda nor a tiny alpha can overflow before the clip.
        peak = grad.abs().amax(dim=1, keepdim=True).clamp_min(1e-30)  # (B, 1)
        direction = torch.nn.functional.normalize(grad / peak, dim=1)  # (B, d), unit or zero
        grad_norm = peak * (grad / peak).norm(dim=1, keepdim=True)  # (B, 1)
        coef = strengths[:, None] * sigma.pow(2) / alpha  # (B, 1)
        limit = self.max_x0_shift * math.sqrt(grad.shape[1])
        magnitude = torch.where(coef > 0, (coef * grad_norm).clamp(max=limit), torch.zeros_like(coef))
        delta_x0 = -direction * magnitude  # (B, d)
        delta_eps = -(alpha / sigma) * delta_x0  # keeps z = alpha x0 + sigma eps
        x0 = (x0.float() + delta_x0).to(x0.dtype)
        eps = (eps.float() + delta_eps).to(eps.dtype)
        return x0, eps


def _alpha_sigma(alpha2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha, sigma (B,) in float32, kept away from 0 so that grids reaching alpha^2 = 0 or 1 stay finite."""
    a2 = alpha2.float()
    return a2.sqrt().clamp_min(1e-12), (1 - a2).sqrt().clamp_min(1e-12)


def _check_bound(value, name: str) -> None:
    """A clip bound of the guided update (``max_x0_shift``, ``max_grad_norm``): a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{name}={value!r:.60} must be a finite number > 0")


def _check_resolved(constraint: Constraint | None, name: str) -> None:
    if constraint is not None and not constraint.is_resolved:
        pending = [repr(leaf) for leaf in constraint.leaves() if not leaf.is_resolved]
        raise ValueError(f"{name}={constraint!r} is not resolved ({', '.join(pending)} still name probes or "
                         f"texts): call constraint.resolve(encoder, registry) first")


ConstraintLike = Constraint | str | None


@dataclass(frozen=True)
class Control:
    """What steers the plans of one call: a constraint and a strength for every prefix (or one for all), and
    the Monte-Carlo samples of its guidance. :meth:`dglm.DGLM.plan` and :meth:`dglm.DGLM.generate` take one
    and lay it out over their row chunks (one :class:`ConstraintGuidance` per chunk); :class:`dglm.Controller`
    is the friendly front that builds it.

    ``constraints``: a :class:`Constraint`, a constraint expression string, None (unguided), or a sequence
    with one of those per prefix. ``strength``: lambda, one number or one per prefix, and
    ``guidance_samples``: the control's own (a call's ``strength`` / ``guidance_samples``, where it gives
    them, win; None: the pipeline's defaults). ``max_x0_shift``: see :class:`ConstraintGuidance`. Checked
    once, when made; the copies it derives (:meth:`for_prefixes`, :meth:`resolve`) are not checked again.

    Example:
        >>> from dglm.constraints import near
        >>> control = Control([near("the game"), None, "near('old music')"], strength=[30, 0, 10])
        >>> control.constraints
        (near('the game'), None, near('old music'))
        >>> Control("topic('sports')").for_prefixes(2, strength=20.0, guidance_samples=32).strength
        (20.0, 20.0)
        >>> Control([None], strength=-1)
        Traceback (most recent call last):
            ...
        ValueError: strength=-1: Input should be greater than or equal to 0
    """

    constraints: ConstraintLike | Sequence[ConstraintLike] = None
    strength: float | Sequence[float] | None = None
    guidance_samples: int | None = None
    max_x0_shift: float = 1.0

    def __post_init__(self):
        c = self.constraints
        if isinstance(c, Sequence) and not isinstance(c, str):
            c = tuple(_as_constraint(x, f"constraints[{i}]") for i, x in enumerate(c))
        else:
            c = _as_constraint(c, "constraints")
        s = self.strength
        if isinstance(s, Sequence) and not isinstance(s, str):
            s = tuple(check_field(GenerationConfig, "strength", x, f"strength[{i}]") for i, x in enumerate(s))
        elif s is not None:
            s = check_field(GenerationConfig, "strength", s)
        samples = self.guidance_samples
        if samples is not None:
            samples = check_field(GenerationConfig, "guidance_samples", samples, "guidance_samples")
        _check_bound(self.max_x0_shift, "max_x0_shift")
        object.__setattr__(self, "constraints", c)
        object.__setattr__(self, "strength", s)
        object.__setattr__(self, "guidance_samples", samples)

    def for_prefixes(self, num_prefixes: int, strength: float | tuple[float, ...],
                     guidance_samples: int) -> Control:
        """This control laid out over ``num_prefixes`` prefixes at ``strength`` (one checked number, or one
        per prefix) with ``guidance_samples``, as the pipeline settled them (the call's, else this control's,
        else the defaults): one constraint and one strength each.

        Example:
            >>> from dglm.constraints import near
            >>> laid = Control(near("the game")).for_prefixes(3, strength=20.0, guidance_samples=8)
            >>> laid.constraints, laid.strength, laid.guidance_samples
            ((near('the game'), near('the game'), near('the game')), (20.0, 20.0, 20.0), 8)
            >>> Control([None, None], strength=5).for_prefixes(3, strength=20.0, guidance_samples=8)
            Traceback (most recent call last):
                ...
            ValueError: constraints must have one constraint (or None) per prefix (3), got 2: (None, None)
        """
        def per_prefix(value, name: str, what: str) -> tuple:
            if not isinstance(value, tuple):
                return (value,) * num_prefixes
            if len(value) != num_prefixes:
                raise ValueError(f"{name} must have {what} per prefix ({num_prefixes}), got {len(value)}: "
                                 f"{value!r:.200}")
            return value

        laid_out = self._derived(constraints=per_prefix(self.constraints, "constraints", "one constraint (or None)"),
                                 strength=per_prefix(strength, "strength", "one number"),
                                 guidance_samples=guidance_samples)
        for c, s in set(zip(laid_out.constraints, laid_out.strength, strict=True)):
            # Weights times the strength beyond float32 overflow the guidance (or merge to inf, which drops the
            # term), so guidance would silently stop: bound their sum (the unmerged terms bound every merged one).
            worst = sum(abs(w) for _, w in c._raw_terms()) * s if c is not None else 0.0
            if not math.isfinite(worst) or worst > MAX_STRENGTH:
                raise ValueError(f"constraint {c!r:.80} at strength {s:g}: its weights x strength add up to "
                                 f"{worst:.3g}; the limit is {MAX_STRENGTH:.3g} (float32), beyond it guidance "
                                 f"would overflow")
        return laid_out

    def resolve(self, encoder, registry=None) -> Control:
        """This control with its constraints resolved (:meth:`Constraint.resolve`; each distinct one once).

        Example:
            >>> from dglm.presets import TINY, random_encoder
            >>> encoder = random_encoder(TINY.encoder)
            >>> control = Control(["near('a song')", None, "near('a song')"]).resolve(encoder)
            >>> [c is not None and c.is_resolved for c in control.constraints]
            [True, False, True]
        """
        if not isinstance(self.constraints, tuple):
            return self._derived(constraints=None if self.constraints is None
                                 else self.constraints.resolve(encoder, registry))
        resolved = {c: c.resolve(encoder, registry) for c in set(self.constraints) if c is not None}
        return self._derived(constraints=tuple(None if c is None else resolved[c] for c in self.constraints))

    def _derived(self, **changes) -> Control:
        """A copy with ``changes``, values this control or the pipeline already checked: not checked again."""
        new = copy.copy(self)
        for name, value in changes.items():
            object.__setattr__(new, name, value)
        return new

    def guidance(self, start: int, stop: int, num_samples: int, to_raw: Callable[[torch.Tensor], torch.Tensor],
                 generator: torch.Generator | None = None) -> ConstraintGuidance | None:
        """The denoiser wrapper of prefixes ``[start, stop)`` with ``num_samples`` rows each (row-major), or
        None if none of them has a constraint; needs a control laid out by :meth:`for_prefixes` and resolved.

        Example (prefix 0 unguided, prefix 1 guided, 2 samples each):
            >>> from dglm.presets import TINY, fit_random, random_encoder
            >>> encoder = fit_random(random_encoder(TINY.encoder))
            >>> control = Control([None, "near('a song')"], strength=[0, 30]).for_prefixes(2, 20.0, 4)
            >>> control = control.resolve(encoder)
            >>> unguided = control.guidance(0, 1, 2, encoder.to_raw)  # prefix 0 only
            >>> unguided is None, type(control.guidance(0, 2, 2, encoder.to_raw))
            (True, <class 'dglm.constraints.guidance.ConstraintGuidance'>)
        """
        constraints = self.constraints[start:stop]
        if all(c is None for c in constraints):
            return None
        rows = [c for c in constraints for _ in range(num_samples)]  # row-major: prefix i's samples together
        strength = torch.tensor([s for s in self.strength[start:stop] for _ in range(num_samples)],
                                dtype=torch.float32)  # (rows,)
        return ConstraintGuidance(rows, strength, to_raw, num_samples=self.guidance_samples, generator=generator,
                                  max_x0_shift=self.max_x0_shift)


def _as_constraint(value: ConstraintLike, name: str) -> Constraint | None:
    if value is None or isinstance(value, Constraint):
        return value
    if isinstance(value, str):
        return parse_constraint(value)
    raise TypeError(f"{name}={value!r:.100} must be a Constraint, a constraint expression string or None")
