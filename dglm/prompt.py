"""PromptGenerator: turns a (noisy) continuation embedding into k soft tokens for the decoder.

(z, alpha^2) -> Linear d -> k x width -> adaptive-norm transformer conditioned on alpha^2 -> Linear to the
decoder's hidden size. Trained with Gaussian-noise augmentation (``z = sqrt(a2) x + sqrt(1 - a2) eps``), so
at inference the noise level is the user's knob: sigma^2 = 0.05 (default) follows the plan closely,
sigma^2 = 1 carries no information about it and behaves like plain decoding.

Example:
    >>> import torch
    >>> from dglm.config import GenerationConfig, PromptConfig, check_field
    >>> gen = PromptGenerator(PromptConfig(dim=8, out_dim=16, num_soft_tokens=4, width=32, depth=2, heads=2))
    >>> gen.prompt(torch.randn(3, 8), sigma2=0.05, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 4, 16])
"""

from __future__ import annotations

import math
import os

import torch
from einops import rearrange
from torch import nn

from dglm.config import PromptConfig
from dglm.io import load_component, load_state, save_component
from dglm.nn import AdaTransformer
from dglm.schedule import add_noise


class PromptGenerator(nn.Module):
    """Embedding (B, d) in the standardised space and noise level (B,) -> soft tokens (B, k, out_dim).

    Example (a vocab_mixture head mixes rows of the decoder's embedding matrix, bound at run time):
        >>> config = PromptConfig(dim=8, out_dim=16, num_soft_tokens=3, width=16, depth=2, heads=2,
        ...                       head="vocab_mixture", vocab_size=10)
        >>> gen = PromptGenerator(config).bind(torch.randn(12, 16))
        >>> gen(torch.randn(2, 8), torch.full((2,), 0.95)).shape
        torch.Size([2, 3, 16])
    """

    def __init__(self, config: PromptConfig):
        super().__init__()
        self.config = c = config
        self.inp = nn.Linear(c.dim, c.num_soft_tokens * c.width)
        self.position = nn.Parameter(torch.randn(c.num_soft_tokens, c.width) * 0.02)
        self.transformer = AdaTransformer(c.width, c.depth, c.heads, c.mlp_ratio)
        if c.head == "linear":
            self.out = nn.Linear(c.width, c.out_dim)
            # Start near the scale of typical LM token embeddings (std ~0.02-0.05), not at unit scale.
            nn.init.normal_(self.out.weight, std=0.02 / math.sqrt(c.width) * 4)
            nn.init.zeros_(self.out.bias)
        else:
            if c.vocab_size < 1:
                raise ValueError(f"head='vocab_mixture' needs vocab_size >= 1, got {c.vocab_size}")
            self.out = nn.Linear(c.width, c.vocab_size)
            # Which decoder vocabulary rows the mixture uses (saved); the embedding matrix itself is bound at
            # run time from the decoder (see bind), never copied into the checkpoint.
            self.register_buffer("vocab_ids", torch.arange(c.vocab_size))
        self._embeddings: torch.Tensor | None = None

    def bind(self, embeddings: torch.Tensor) -> PromptGenerator:
        """Use the decoder's input-embedding matrix (V_total, out_dim) for a ``vocab_mixture`` head.

        Example (the matrix is used, never copied into the generator's parameters or checkpoint):
            >>> config = PromptConfig(dim=8, out_dim=16, num_soft_tokens=3, width=16, depth=2, heads=2,
            ...                       head="vocab_mixture", vocab_size=10)
            >>> gen = PromptGenerator(config).bind(torch.randn(12, 16))
            >>> "_embeddings" in dict(gen.named_parameters()) or "_embeddings" in gen.state_dict()
            False
            >>> gen.bind(torch.randn(8, 16))
            Traceback (most recent call last):
                ...
            ValueError: the generator mixes token id 9 but the decoder's vocabulary has 8 rows; pass the \
decoder it was trained with
        """
        if embeddings.dim() != 2 or embeddings.shape[1] != self.config.out_dim:
            raise ValueError(f"embeddings must be (vocab, {self.config.out_dim}), got {tuple(embeddings.shape)}")
        if self.config.head == "vocab_mixture" and int(self.vocab_ids.max()) >= embeddings.shape[0]:
            raise ValueError(f"the generator mixes token id {int(self.vocab_ids.max())} but the decoder's vocabulary "
                             f"has {embeddings.shape[0]} rows; pass the decoder it was trained with")
        # Bypass nn.Module.__setattr__: the decoder's weight must not become a parameter of the generator.
        object.__setattr__(self, "_embeddings", embeddings)
        return self

    def word_logits(self, z: torch.Tensor, alpha2: torch.Tensor) -> torch.Tensor:
        """Per soft token, logits over the mixed vocabulary rows: (B, k, vocab_size) (``vocab_mixture`` only).

        Example (each soft token is the softmax of these logits times the bound embedding rows):
            >>> config = PromptConfig(dim=8, out_dim=16, num_soft_tokens=3, width=16, depth=2, heads=2,
            ...                       head="vocab_mixture", vocab_size=10)
            >>> table = torch.randn(12, 16)
            >>> gen = PromptGenerator(config).bind(table)
            >>> z, alpha2 = torch.randn(2, 8), torch.full((2,), 0.9)
            >>> logits = gen.word_logits(z, alpha2)
            >>> mixed = logits.softmax(-1) @ table[gen.vocab_ids]
            >>> logits.shape, torch.allclose(gen(z, alpha2), mixed, atol=1e-5)
            (torch.Size([2, 3, 10]), True)
        """
        h = rearrange(self.inp(z), "b (k w) -> b k w", k=self.config.num_soft_tokens) + self.position
        return self.out(self.transformer(h, alpha2))

    def forward(self, z: torch.Tensor, alpha2: torch.Tensor) -> torch.Tensor:
        """Soft tokens (B, k, out_dim) for noisy standardised embeddings z (B, d) at noise levels alpha2 (B,).

        Example:
            >>> config = PromptConfig(dim=8, out_dim=16, num_soft_tokens=3, width=16, depth=2, heads=2)
            >>> PromptGenerator(config)(torch.randn(2, 8), torch.full((2,), 0.95)).shape
            torch.Size([2, 3, 16])
        """
        if self.config.head == "linear":
            h = rearrange(self.inp(z), "b (k w) -> b k w", k=self.config.num_soft_tokens) + self.position
            return self.out(self.transformer(h, alpha2))  # (B, k, out_dim)
        if self._embeddings is None:
            raise RuntimeError("a vocab_mixture prompt generator needs the decoder's embeddings: call "
                               "generator.bind(decoder.embeddings.weight) (DGLM does this)")
        table = self._embeddings.detach()[self.vocab_ids]  # (vocab_size, out_dim)
        mix = self.word_logits(z, alpha2).float().softmax(-1)  # (B, k, vocab_size)
        return (mix @ table.float()).to(table.dtype)  # (B, k, out_dim)

    def prompt(self, x: torch.Tensor, sigma2: float, generator: torch.Generator | None = None) -> torch.Tensor:
        """Re-noise a clean standardised embedding x (B, d) to ``sigma2`` and map it to soft tokens.

        Example (k = 2 soft tokens of the decoder's width 16 per plan; the noise is seeded):
            >>> config = PromptConfig(dim=8, out_dim=16, num_soft_tokens=2, width=16, depth=2, heads=2)
            >>> gen, x = PromptGenerator(config), torch.randn(3, 8)
            >>> soft = gen.prompt(x, sigma2=0.1, generator=torch.Generator().manual_seed(0))
            >>> soft.shape, torch.equal(soft, gen.prompt(x, 0.1, torch.Generator().manual_seed(0)))
            (torch.Size([3, 2, 16]), True)
        """
        alpha2 = torch.full((x.shape[0],), 1 - sigma2, device=x.device)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        param = next(self.parameters())
        return self(add_noise(x, alpha2, noise).to(param.dtype), alpha2)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write ``config.json`` and the weights to ``folder`` (the bound decoder embeddings are not saved).

        Example (a vocab_mixture head saves which vocabulary rows it mixes, not the rows themselves):
            >>> import tempfile
            >>> from dglm.io import load_tensors
            >>> config = PromptConfig(dim=8, out_dim=16, num_soft_tokens=2, width=16, depth=1, heads=2,
            ...                       head="vocab_mixture", vocab_size=10)
            >>> gen = PromptGenerator(config).bind(torch.randn(12, 16))
            >>> with tempfile.TemporaryDirectory() as d:
            ...     gen.save_pretrained(d)
            ...     saved = load_tensors(f"{d}/model.safetensors")
            >>> "vocab_ids" in saved, any("embeddings" in name for name in saved)
            (True, False)
        """
        save_component(folder, self.config, self.state_dict())

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> PromptGenerator:
        """Load a generator saved by :meth:`save_pretrained`, in eval mode.

        Example:
            >>> import tempfile
            >>> gen = PromptGenerator(PromptConfig(dim=8, out_dim=16, num_soft_tokens=2, width=16, depth=2, heads=2))
            >>> with tempfile.TemporaryDirectory() as folder:
            ...     gen.save_pretrained(folder)
            ...     loaded = PromptGenerator.from_pretrained(folder)
            >>> loaded.config == gen.config, torch.equal(loaded.position, gen.position)
            (True, True)
        """
        config, state = load_component(folder, PromptConfig, build=cls)
        model = cls(config)
        load_state(model, state, folder)
        return model.eval()
