"""SemanticEncoder: a frozen sentence-transformers model plus per-dimension standardisation statistics.

Two spaces meet here. Probes and users see the *raw* space: the encoder's unit-norm embeddings. The
diffusion runs in the *standardised* space: ``(raw - mean) / std`` per dimension, with statistics fitted
on a corpus (raw dimensions have std ~0.02-0.05, far from the unit scale the noise schedule assumes).

Example:
    >>> enc = SemanticEncoder.from_pretrained("sentence-transformers/all-MiniLM-L6-v2")  # doctest: +SKIP
    >>> enc.fit_standardization(["A first text.", "Another one.", "And a third."])       # doctest: +SKIP
    >>> x = enc.encode(["The match last night"])           # (1, 384), unit norm            # doctest: +SKIP
    >>> enc.to_raw(enc.standardize(x)).allclose(x, atol=1e-5)                               # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from torch import nn

from dglm.config import EncoderConfig
from dglm.io import CheckpointError, ModelLoadError, load_component, save_component


class SemanticEncoder(nn.Module):
    """Frozen sentence encoder with standardisation statistics (buffers ``mean`` and ``std``, each (d,)).

    Example (a random-weight stand-in; a real one comes from from_pretrained):
        >>> from dglm.presets import preset_config, random_encoder
        >>> enc = random_encoder(preset_config("tiny").encoder)
        >>> x = enc.encode(["the game was", "a new song"])
        >>> x.shape, x.norm(dim=-1).allclose(torch.ones(2))
        (torch.Size([2, 32]), True)
        >>> enc.fit_standardization(["the king", "a river", "old music", "new film"])
        >>> enc.to_raw(enc.standardize(x)).allclose(x, atol=1e-5)
        True
    """

    def __init__(self, model: SentenceTransformer, name_or_path: str | None = None):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        dim = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") \
            else model.get_sentence_embedding_dimension()
        if not dim:
            raise ValueError("the sentence-transformers model does not report its embedding dimension")
        # The id names the encoder for probes; an in-memory model without one is called "custom".
        self.config = EncoderConfig(name_or_path=name_or_path or "custom", dim=dim)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.fitted = False
        self._adds_special_tokens: bool | None = None  # whether every text gets at least one token

    @classmethod
    def from_pretrained(cls, name_or_path: str, device: str | torch.device | None = None, *,
                        name: str | None = None, show_progress: bool = False, **kwargs) -> SemanticEncoder:
        """Load a sentence-transformers model from exactly the hub id or folder given; ``name`` (default
        ``name_or_path``) is the id the encoder is known by (``config.name_or_path``, what probes and
        checkpoints record). Packaged default models are looked up by the loading boundary,
        :func:`dglm.assets.load_encoder`, never here. A hub id that is not cached while the hub is offline or
        unreachable raises one :class:`~dglm.io.ModelLoadError`. Progress bars are shown only with
        ``show_progress=True`` (:func:`dglm.progress.progress_bars`).

        Example (a local sentence-transformers folder; the encoder's identity is the name it was loaded by):
            >>> import tempfile
            >>> from dglm.presets import TINY, random_encoder
            >>> saved = random_encoder(TINY.encoder)
            >>> with tempfile.TemporaryDirectory() as d:
            ...     saved.model.save(d)
            ...     enc = SemanticEncoder.from_pretrained(d)
            ...     same = torch.allclose(enc.encode(["the game"]), saved.encode(["the game"]), atol=1e-6)
            ...     identity_is_folder = enc.identity == f"{d}:32"
            >>> enc.dim, same, identity_is_folder
            (32, True, True)
        """
        from dglm.progress import progress_bars

        path = name_or_path
        try:
            with progress_bars(show_progress):
                model = SentenceTransformer(path, device=str(device) if device else None, **kwargs)
        except (OSError, ValueError) as e:
            if Path(os.fspath(path)).is_dir():
                raise
            raise ModelLoadError.for_hub("encoder", name or name_or_path, e) from None
        return cls(model, name or os.fspath(name_or_path))

    @property
    def dim(self) -> int:
        """Embedding dimension d.

        Example:
            >>> from dglm.presets import TINY, random_encoder
            >>> enc = random_encoder(TINY.encoder)
            >>> enc.dim, enc.encode(["the game was"]).shape[1]
            (32, 32)
        """
        return self.config.dim

    @property
    def identity(self) -> str:
        """What probes record to check they were trained on this encoder: ``"<name_or_path>:<dim>"``.

        Example:
            >>> from dglm.presets import TINY, random_encoder
            >>> enc = random_encoder(TINY.encoder)
            >>> enc.identity
            'random:tiny-bert:32'
        """
        return f"{self.config.name_or_path}:{self.dim}"

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress_bar: bool = False) -> torch.Tensor:
        """Raw unit-norm embeddings of ``texts``: (len(texts), d), float32, on the buffers' device.

        A text with no tokens at all (an empty or blank text, with a tokenizer that adds no special tokens)
        embeds to the zero vector, which is what mean pooling over no tokens gives inside a batch.

        Example:
            >>> from dglm.presets import TINY, random_encoder
            >>> enc = random_encoder(TINY.encoder)
            >>> x = enc.encode(["the game was", "a new song", ""])
            >>> x.shape, x.norm(dim=-1).round(decimals=4).tolist()
            (torch.Size([3, 32]), [1.0, 1.0, 0.0])
        """
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a sequence of str")
        texts = list(texts)
        keep = self._has_tokens(texts)  # (N,) bool
        out = torch.zeros(len(texts), self.dim, device=self.mean.device)
        if keep.any():
            kept = [t for t, k in zip(texts, keep.tolist(), strict=True) if k]
            emb = self.model.encode(kept, batch_size=batch_size, show_progress_bar=show_progress_bar,
                                    convert_to_tensor=True, normalize_embeddings=True)
            out[keep.to(out.device)] = emb.to(device=self.mean.device, dtype=torch.float32).reshape(len(kept), self.dim)
        return out

    def _has_tokens(self, texts: list[str]) -> torch.Tensor:
        """Which texts the tokenizer turns into at least one token (a transformer cannot run on none)."""
        tokenize = getattr(self.model, "preprocess", None) or self.model.tokenize  # renamed in sentence-transformers 5
        if self._adds_special_tokens is None:
            self._adds_special_tokens = bool(tokenize([""])["attention_mask"].sum())
        if self._adds_special_tokens or not texts:
            return torch.ones(len(texts), dtype=torch.bool)
        return tokenize(texts)["attention_mask"].sum(1).cpu() > 0

    @torch.no_grad()
    def fit_standardization(self, texts_or_embeddings: Sequence[str] | torch.Tensor, **encode_kwargs) -> None:
        """Fit the per-dimension mean and std on corpus texts or their raw embeddings (N, d).

        Example:
            >>> from dglm.presets import TINY, random_encoder, random_texts
            >>> enc = random_encoder(TINY.encoder)
            >>> enc.fitted
            False
            >>> enc.fit_standardization(random_texts(8, 5))
            >>> enc.fitted, enc.mean.shape, bool((enc.std > 0).all())
            (True, torch.Size([32]), True)
            >>> enc.fit_standardization(torch.zeros(1, 32))
            Traceback (most recent call last):
                ...
            ValueError: need at least 2 embeddings of shape (N, 32), got (1, 32)
        """
        x = texts_or_embeddings
        if not isinstance(x, torch.Tensor):
            x = self.encode(x, **encode_kwargs)
        if x.dim() != 2 or x.shape[1] != self.dim or x.shape[0] < 2:
            raise ValueError(f"need at least 2 embeddings of shape (N, {self.dim}), got {tuple(x.shape)}")
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp_min(1e-4))  # constant dimensions stay finite
        self.fitted = True

    def standardize(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw (.., d) -> standardised (.., d).

        Example (after fitting, the fitted embeddings have mean 0 and std 1 in every dimension):
            >>> from dglm.presets import TINY, random_encoder, random_texts
            >>> enc = random_encoder(TINY.encoder)
            >>> raw = enc.encode(random_texts(16, 6))
            >>> enc.fit_standardization(raw)
            >>> z = enc.standardize(raw)
            >>> z.shape, z.mean(0).abs().max().item() < 1e-5, z.std(0).sub(1).abs().max().item() < 1e-4
            (torch.Size([16, 32]), True, True)
        """
        return (raw - self.mean) / self.std

    def to_raw(self, standardized: torch.Tensor) -> torch.Tensor:
        """Standardised (.., d) -> raw: un-standardise, then L2-normalise (differentiable).

        Example (any standardised vector, e.g. a diffusion sample, maps onto the unit sphere):
            >>> from dglm.presets import TINY, fit_random, random_encoder
            >>> enc = fit_random(random_encoder(TINY.encoder))
            >>> raw = enc.to_raw(torch.randn(3, enc.dim))
            >>> raw.shape, raw.norm(dim=-1).allclose(torch.ones(3))
            (torch.Size([3, 32]), True)
        """
        return F.normalize(standardized * self.std.to(standardized.dtype) + self.mean.to(standardized.dtype), dim=-1)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Save the config and statistics (the encoder's weights are referenced by ``name_or_path``).

        Example (:meth:`from_pretrained_stats` reads them back):
            >>> import tempfile
            >>> from dglm.presets import TINY, fit_random, random_encoder
            >>> enc = fit_random(random_encoder(TINY.encoder))
            >>> with tempfile.TemporaryDirectory() as d:
            ...     enc.save_pretrained(d)
            ...     files = sorted(os.listdir(d))
            ...     loaded = SemanticEncoder.from_pretrained_stats(d, model=enc.model)
            >>> files, torch.equal(loaded.std, enc.std), loaded.fitted
            (['config.json', 'model.safetensors'], True, True)
        """
        save_component(folder, self.config, {"mean": self.mean, "std": self.std})

    @classmethod
    def from_pretrained_stats(cls, folder: str | os.PathLike, model: SentenceTransformer) -> SemanticEncoder:
        """The encoder ``model`` with the standardisation statistics saved in ``folder``
        (:meth:`save_pretrained`); its identity is the id the folder records. Loading the model by that id is
        the loading boundary's job (:func:`dglm.assets.load_encoder`).

        Example (a model of another dimension is refused):
            >>> import tempfile
            >>> from dglm.config import EncoderConfig
            >>> from dglm.presets import TINY, fit_random, random_encoder
            >>> enc = fit_random(random_encoder(TINY.encoder))
            >>> other = random_encoder(EncoderConfig(name_or_path="tiny-bert", dim=16))
            >>> with tempfile.TemporaryDirectory() as d:
            ...     enc.save_pretrained(d)
            ...     loaded = SemanticEncoder.from_pretrained_stats(d, model=enc.model)
            ...     SemanticEncoder.from_pretrained_stats(d, model=other.model)  # doctest: +ELLIPSIS
            Traceback (most recent call last):
                ...
            ValueError: encoder dimension 16 does not match the checkpoint's 32 (.../config.json); pass the \
encoder it was trained with
            >>> loaded.identity, torch.equal(loaded.mean, enc.mean)
            ('random:tiny-bert:32', True)
        """
        config, state = load_component(folder, EncoderConfig)
        if set(state) == {"mean", "std"} and not (torch.isfinite(state["mean"]).all() and (state["std"] > 0).all()
                                                  and torch.isfinite(state["std"]).all()):
            raise CheckpointError(f"{folder}: the standardisation statistics must be finite, with std > 0 (found "
                                  f"std min {state['std'].min().item():.3g}); the checkpoint is corrupted")
        encoder = cls(model, config.name_or_path)
        if encoder.dim != config.dim:
            raise ValueError(f"encoder dimension {encoder.dim} does not match the checkpoint's {config.dim} "
                             f"({Path(folder) / 'config.json'}); pass the encoder it was trained with")
        if set(state) != {"mean", "std"} or any(v.shape != (config.dim,) for v in state.values()):
            raise CheckpointError(f"{folder}: expected tensors mean and std of shape ({config.dim},)")
        encoder.mean.copy_(state["mean"])
        encoder.std.copy_(state["std"])
        encoder.fitted = True
        return encoder
