"""Shared network blocks: RMSNorm, the noise-level embedding and the adaptive-norm transformer.

Both the semantic denoiser and the prompt generator are stacks of :class:`AdaBlock`: pre-norm
bidirectional attention and a GLU-SiLU MLP, each preceded by an RMSNorm whose scale and shift (and a
residual gate) come from the noise-level embedding, zero-initialised so every block starts as identity.

Example:
    >>> import torch
    >>> net = AdaTransformer(width=32, depth=2, heads=4, mlp_ratio=2.0)
    >>> net(torch.randn(3, 5, 32), torch.rand(3)).shape
    torch.Size([3, 5, 32])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square normalisation over the last axis, with an optional learned gain.

    Example:
        >>> RMSNorm(4, affine=False)(torch.tensor([[1.0, -1.0, 1.0, -1.0], [2.0, 2.0, 2.0, 2.0]]))
        tensor([[ 1.0000, -1.0000,  1.0000, -1.0000],
                [ 1.0000,  1.0000,  1.0000,  1.0000]])
    """

    def __init__(self, dim: int, affine: bool = True, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise x (.., dim) to unit root mean square over the last axis, then apply the gain."""
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return x * self.weight if self.weight is not None else x


class NoiseLevelEmbedding(nn.Module):
    """alpha^2 * 1000 -> sinusoidal features -> MLP. alpha2: (B,) -> (B, width).

    Example:
        >>> NoiseLevelEmbedding(width=16)(torch.tensor([0.1, 0.9])).shape
        torch.Size([2, 16])
    """

    def __init__(self, width: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, alpha2: torch.Tensor) -> torch.Tensor:
        """Embed the noise levels alpha2 (B,) as (B, width)."""
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=alpha2.device) / half)
        angles = (alpha2.float() * 1000)[:, None] * freqs[None]  # (B, half)
        features = torch.cat([angles.sin(), angles.cos()], dim=-1)  # (B, freq_dim)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class AdaBlock(nn.Module):
    """One transformer block with noise-level-adaptive pre-norms. x: (B, T, W), cond: (B, W).

    Example (zero-initialised, a fresh block is the identity):
        >>> block = AdaBlock(width=8, heads=2, mlp_ratio=2.0)
        >>> x = torch.randn(2, 3, 8)
        >>> torch.equal(block(x, torch.randn(2, 8)), x)
        True
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        if width % heads:
            raise ValueError(f"width={width} must be divisible by heads={heads}")
        self.heads = heads
        self.norm_attn, self.norm_mlp = RMSNorm(width, affine=False), RMSNorm(width, affine=False)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.q_norm, self.k_norm = RMSNorm(width // heads), RMSNorm(width // heads)
        self.attn_out = nn.Linear(width, width, bias=False)
        hidden = int(width * mlp_ratio)
        self.mlp_in = nn.Linear(width, 2 * hidden, bias=False)
        self.mlp_out = nn.Linear(hidden, width, bias=False)
        # scale, shift, gate for attention and for the MLP; zero-init: the block starts as identity.
        self.ada = nn.Linear(width, 6 * width)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Attention then MLP, each modulated by cond (B, W); x (B, T, W) -> (B, T, W)."""
        scale_a, shift_a, gate_a, scale_m, shift_m, gate_m = self.ada(F.silu(cond))[:, None].chunk(6, dim=-1)
        h = self.norm_attn(x) * (1 + scale_a) + shift_a
        q, k, v = rearrange(self.qkv(h), "b t (three h d) -> three b h t d", three=3, h=self.heads)
        attn = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)  # (B, H, T, D)
        x = x + gate_a * self.attn_out(rearrange(attn, "b h t d -> b t (h d)"))
        h = self.norm_mlp(x) * (1 + scale_m) + shift_m
        a, b = self.mlp_in(h).chunk(2, dim=-1)
        return x + gate_m * self.mlp_out(F.silu(a) * b)


class AdaTransformer(nn.Module):
    """A stack of :class:`AdaBlock` with long skips from the first half into the second half.

    x: (B, T, width), alpha2: (B,) -> (B, T, width).

    Example:
        >>> net = AdaTransformer(width=16, depth=4, heads=2, mlp_ratio=2.0)
        >>> len(net.blocks), len(net.skip_proj)
        (4, 2)
        >>> net(torch.randn(2, 3, 16), torch.tensor([0.2, 0.8])).shape
        torch.Size([2, 3, 16])
    """

    def __init__(self, width: int, depth: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.noise_embedding = NoiseLevelEmbedding(width)
        self.blocks = nn.ModuleList(AdaBlock(width, heads, mlp_ratio) for _ in range(depth))
        # The second half of the blocks each merge one skip from the first half (U-ViT style).
        self.skip_proj = nn.ModuleList(nn.Linear(2 * width, width) for _ in range(depth // 2))
        self.norm_out = RMSNorm(width)

    def forward(self, x: torch.Tensor, alpha2: torch.Tensor) -> torch.Tensor:
        """Denoise-network body: x (B, T, width) at noise levels alpha2 (B,) -> (B, T, width)."""
        cond = self.noise_embedding(alpha2)
        half = len(self.blocks) // 2
        skips = []
        for i, block in enumerate(self.blocks):
            if i >= len(self.blocks) - half:
                x = self.skip_proj[i - (len(self.blocks) - half)](torch.cat([x, skips.pop()], dim=-1))
            x = block(x, cond)
            if i < half:
                skips.append(x)
        return self.norm_out(x)
