"""Samplers for the semantic diffusion: short pure functions with one shared signature.

``sampler(denoise, x, alpha2s, generator=None, callback=None, disable=True, temperature=1.0) -> x0``

``denoise(z, alpha2) -> Prediction`` is any callable that predicts the clean latent and the noise for a
batch of noisy latents z (B, d) at noise levels alpha2 (B,). Guidance (CFG, constraints) is done by
wrapping ``denoise`` (see :meth:`dglm.diffusion.SemanticDiffuser.denoiser` and
:mod:`dglm.constraints.guidance`), so samplers never know about it.

Example:
    >>> import torch
    >>> from dglm.schedule import sampling_alpha2s
    >>> target = torch.ones(2, 4)
    >>> def denoise(z, alpha2):  # an oracle that always knows the data is `target`
    ...     a, s = alpha2.sqrt()[:, None], (1 - alpha2).sqrt()[:, None]
    ...     return Prediction(x0=target, eps=(z - a * target) / s)
    >>> x = sample_ddim(denoise, torch.randn(2, 4), sampling_alpha2s(10))
    >>> torch.allclose(x, target)
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm


@dataclass
class Prediction:
    """A denoiser's output: the predicted clean latent x0_hat and noise eps_hat, both (B, d).

    Example:
        >>> pred = Prediction(x0=torch.zeros(2, 4), eps=torch.ones(2, 4))
        >>> pred.x0.shape, pred.eps.sum().item()
        (torch.Size([2, 4]), 8.0)
    """

    x0: torch.Tensor
    eps: torch.Tensor


Denoise = Callable[[torch.Tensor, torch.Tensor], Prediction]
Callback = Callable[[int, torch.Tensor, Prediction], None]


def _rows(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return value.to(like).expand(like.shape[0])


@torch.no_grad()
def sample_ddpm(denoise: Denoise, x: torch.Tensor, alpha2s: torch.Tensor, generator: torch.Generator | None = None,
                callback: Callback | None = None, disable: bool = True, temperature: float = 1.0) -> torch.Tensor:
    """Ancestral sampling (Ho et al. 2020, DDPM) from the posterior q(z_s | z_t, x0_hat); the last step
    returns x0_hat. x: (B, d) pure noise; alpha2s: decreasing noise grid from t = 1 to t = 0; ``temperature``
    scales each step's fresh noise (1: the posterior's own).

    Example (an oracle denoiser that always predicts zeros; the callback sees every step):
        >>> from dglm.schedule import sampling_alpha2s
        >>> def denoise(z, alpha2):
        ...     return Prediction(x0=torch.zeros_like(z), eps=z / (1 - alpha2).sqrt()[:, None])
        >>> seen = []
        >>> x = sample_ddpm(denoise, torch.randn(3, 4), sampling_alpha2s(5),
        ...                 generator=torch.Generator().manual_seed(0), callback=lambda i, z, pred: seen.append(i))
        >>> x.abs().max().item(), seen
        (0.0, [0, 1, 2, 3, 4])
    """
    for i in tqdm(range(len(alpha2s) - 1), disable=disable, desc="diffusion"):
        a2_t, a2_s = _rows(alpha2s[i], x), _rows(alpha2s[i + 1], x)
        pred = denoise(x, a2_t)
        if callback is not None:
            callback(i, x, pred)
        if i == len(alpha2s) - 2:
            return pred.x0
        # alpha_{t|s}^2 = alpha_t^2 / alpha_s^2; sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2.
        a2_ts = (a2_t / a2_s)[:, None]
        s2_t, s2_s = (1 - a2_t)[:, None], (1 - a2_s)[:, None]
        s2_ts = s2_t - a2_ts * s2_s
        mean = a2_ts.sqrt() * s2_s / s2_t * x + a2_s[:, None].sqrt() * s2_ts / s2_t * pred.x0
        std = (s2_ts * s2_s / s2_t).clamp_min(0).sqrt()
        x = mean + temperature * std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x


@torch.no_grad()
def sample_ddim(denoise: Denoise, x: torch.Tensor, alpha2s: torch.Tensor, generator: torch.Generator | None = None,
                callback: Callback | None = None, disable: bool = True, temperature: float = 1.0) -> torch.Tensor:
    """Deterministic DDIM sampling (Song et al. 2021, eta = 0); the last step returns x0_hat. It draws no
    noise, so ``temperature`` (the shared signature's) changes nothing here: scale the starting noise x.

    Example (the same noise gives the same sample):
        >>> from dglm.schedule import sampling_alpha2s
        >>> def denoise(z, alpha2):  # shrinks towards zero
        ...     return Prediction(x0=0.5 * z, eps=z)
        >>> noise, grid = torch.randn(2, 4), sampling_alpha2s(4)
        >>> torch.equal(sample_ddim(denoise, noise, grid), sample_ddim(denoise, noise, grid))
        True
    """
    for i in tqdm(range(len(alpha2s) - 1), disable=disable, desc="diffusion"):
        a2_t, a2_s = _rows(alpha2s[i], x), _rows(alpha2s[i + 1], x)
        pred = denoise(x, a2_t)
        if callback is not None:
            callback(i, x, pred)
        if i == len(alpha2s) - 2:
            return pred.x0
        x = a2_s[:, None].sqrt() * pred.x0 + (1 - a2_s)[:, None].sqrt() * pred.eps
    return x


SAMPLERS = {"ddpm": sample_ddpm, "ddim": sample_ddim}


def get_sampler(name: str):
    """The sampler function called ``name`` (``"ddpm"`` or ``"ddim"``).

    Example:
        >>> get_sampler("ddim") is sample_ddim
        True
    """
    if name not in SAMPLERS:
        raise ValueError(f"sampler={name!r} is not known; accepted: {sorted(SAMPLERS)}")
    return SAMPLERS[name]
