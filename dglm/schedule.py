"""Noise schedules in terms of alpha^2 (signal power), log-SNR helpers and noise augmentation.

A noisy latent is ``z = alpha * x + sigma * eps`` with ``alpha^2 + sigma^2 = 1`` (variance preserving).

Example:
    >>> import torch
    >>> cosine_alpha2(torch.tensor([0.0, 0.5, 1.0])).round(decimals=3)
    tensor([1.0000, 0.5000, 0.0000])
"""

from __future__ import annotations

import math

import torch

# Log-SNR range of the reference: alpha^2 = sigmoid(gamma), gamma in [-15, 15].
LOGSNR_MIN, LOGSNR_MAX = -15.0, 15.0
ALPHA2_MIN, ALPHA2_MAX = 1 / (1 + math.exp(-LOGSNR_MIN)), 1 / (1 + math.exp(-LOGSNR_MAX))


def cosine_alpha2(t: torch.Tensor) -> torch.Tensor:
    """alpha^2(t) = cos^2(pi t / 2), clamped to the reference's log-SNR range; t in [0, 1].

    Example:
        >>> cosine_alpha2(torch.tensor([0.0, 1.0])) == torch.tensor([ALPHA2_MAX, ALPHA2_MIN])
        tensor([True, True])
    """
    return torch.cos(t * math.pi / 2).pow(2).clamp(ALPHA2_MIN, ALPHA2_MAX)


def logsnr(alpha2: torch.Tensor) -> torch.Tensor:
    """gamma = log(alpha^2 / sigma^2).

    Example:
        >>> logsnr(torch.tensor([0.5, 0.9])).round(decimals=4)
        tensor([0.0000, 2.1972])
    """
    return torch.log(alpha2) - torch.log1p(-alpha2)


def sampling_alpha2s(steps: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The alpha^2 grid a sampler walks: ``steps + 1`` values from t = 1 (noise) to t = 0 (data).

    Example:
        >>> sampling_alpha2s(2).round(decimals=3)
        tensor([0.0000, 0.5000, 1.0000])
    """
    if steps < 1:
        raise ValueError(f"steps={steps} must be a positive integer")
    return cosine_alpha2(torch.linspace(1.0, 0.0, steps + 1, device=device, dtype=torch.float64)).float()


def augmentation_alpha2(t: torch.Tensor, shift: float = 2 * math.log(3)) -> torch.Tensor:
    """Noise-augmentation level for the prompt generator: sigmoid(logit(cos^2(pi t / 2)) + shift).

    The shift of 2 ln 3 makes the median sigma^2 about 0.10, as in the reference.

    Example (t = 0.5 is the median level):
        >>> sigma2 = 1 - augmentation_alpha2(torch.tensor([0.5]))
        >>> sigma2.round(decimals=2)
        tensor([0.1000])
    """
    return torch.sigmoid(logsnr(cosine_alpha2(t)) + shift)


def add_noise(x: torch.Tensor, alpha2: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """z = sqrt(alpha^2) x + sqrt(1 - alpha^2) eps, with one alpha^2 per row. x, noise: (B, d); alpha2: (B,).

    Example:
        >>> x, eps = torch.ones(2, 3), torch.zeros(2, 3)
        >>> add_noise(x, torch.tensor([1.0, 0.25]), eps)
        tensor([[1.0000, 1.0000, 1.0000],
                [0.5000, 0.5000, 0.5000]])
    """
    a2 = alpha2.reshape(-1, *([1] * (x.dim() - 1)))
    return a2.sqrt() * x + (1 - a2).sqrt() * noise
