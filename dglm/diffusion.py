"""SemanticDiffuser: a transformer that denoises sentence embeddings, conditioned on the prefix's.

Works in the encoder's standardised space. The noisy latent z (B, d) and the prefix embedding (B, d) are
each mapped by a Linear to N x c features, reshaped into N tokens and projected to width / 2; the two
halves are concatenated per token (no cross-attention). The network predicts v (v-prediction):
``x0_hat = alpha z - sigma v``, ``eps_hat = sigma z + alpha v``. Classifier-free guidance uses a learned
null embedding that replaces the prefix embedding ``cond_dropout`` of the time in training.

Example:
    >>> import torch
    >>> from dglm.config import DiffusionConfig
    >>> diffuser = SemanticDiffuser(DiffusionConfig(dim=8, num_tokens=4, token_features=8, width=32, depth=2,
    ...                                             heads=2))
    >>> x0, prefix = torch.randn(5, 8), torch.randn(5, 8)
    >>> diffuser.loss(x0, prefix).shape
    torch.Size([])
    >>> diffuser.sample(prefix, sampler="ddpm", steps=4, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([5, 8])
"""

from __future__ import annotations

import copy
import logging
import math
import os

import torch
from einops import rearrange
from torch import nn

from dglm.config import DiffusionConfig
from dglm.io import load_component, load_state, save_component
from dglm.nn import AdaTransformer
from dglm.sampling import Denoise, Prediction, get_sampler
from dglm.schedule import add_noise, cosine_alpha2, sampling_alpha2s

logger = logging.getLogger(__name__)


class SemanticDiffuser(nn.Module):
    """Denoiser over standardised embeddings, with its loss, CFG and samplers. See the module docstring.

    Example:
        >>> config = DiffusionConfig(dim=8, num_tokens=2, token_features=4, width=16, depth=2, heads=2)
        >>> diffuser = SemanticDiffuser(config)
        >>> z, prefix = torch.randn(3, 8), torch.randn(3, 8)
        >>> diffuser(z, torch.full((3,), 0.5), prefix).shape  # v prediction, zero at initialisation
        torch.Size([3, 8])
        >>> diffuser.denoiser(prefix, cfg_scale=2.0)(z, torch.full((3,), 0.5)).x0.shape
        torch.Size([3, 8])
    """

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        self.config = c = config
        if c.width % 2:
            raise ValueError(f"width={c.width} must be even (latent and prefix each take half)")
        if c.rank_deficit:  # training refuses such a config; older checkpoints (the shipped mini's) load
            logger.info("num_tokens * token_features = %d < dim = %d: this denoiser cannot remove the noise in %d "
                        "directions, so its samples keep pure noise there (train a new one with num_tokens * "
                        "token_features >= dim)", c.num_tokens * c.token_features, c.dim, c.rank_deficit)
        self.latent_in = nn.Sequential(nn.Linear(c.dim, c.num_tokens * c.token_features),
                                       _Tokens(c.num_tokens), nn.Linear(c.token_features, c.width // 2))
        self.prefix_in = nn.Sequential(nn.Linear(c.dim, c.num_tokens * c.token_features),
                                       _Tokens(c.num_tokens), nn.Linear(c.token_features, c.width // 2))
        self.null_prefix = nn.Parameter(torch.zeros(c.dim))
        self.position = nn.Parameter(torch.randn(c.num_tokens, c.width) * 0.02)
        self.transformer = AdaTransformer(c.width, c.depth, c.heads, c.mlp_ratio)
        self.out_token = nn.Linear(c.width, c.token_features)
        self.out = nn.Linear(c.num_tokens * c.token_features, c.dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @property
    def dim(self) -> int:
        """Embedding dimension d the diffuser denoises.

        Example:
            >>> config = DiffusionConfig(dim=8, num_tokens=2, token_features=4, width=16, depth=2, heads=2)
            >>> SemanticDiffuser(config).dim
            8
        """
        return self.config.dim

    def forward(self, z: torch.Tensor, alpha2: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """Predict v. z, prefix: (B, d) standardised; alpha2: (B,) -> (B, d).

        Example (training starts the output layer at zero, so v = 0 until trained):
            >>> config = DiffusionConfig(dim=8, num_tokens=2, token_features=4, width=16, depth=2, heads=2)
            >>> diffuser = SemanticDiffuser(config)
            >>> v = diffuser(torch.randn(3, 8), torch.full((3,), 0.5), torch.randn(3, 8))
            >>> v.shape, v.abs().max().item()
            (torch.Size([3, 8]), 0.0)
        """
        h = torch.cat([self.latent_in(z), self.prefix_in(prefix)], dim=-1) + self.position  # (B, N, W)
        h = self.out_token(self.transformer(h, alpha2))  # (B, N, c)
        return self.out(rearrange(h, "b n c -> b (n c)"))

    def loss(self, x0: torch.Tensor, prefix: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean squared error on v at a uniform t under the cosine schedule, with prefix dropout for CFG.

        Example (a few optimizer steps on one fixed pair lower it):
            >>> config = DiffusionConfig(dim=8, num_tokens=2, token_features=4, width=16, depth=2, heads=2)
            >>> diffuser = SemanticDiffuser(config)
            >>> x0, prefix = torch.randn(16, 8), torch.randn(16, 8)
            >>> optimizer = torch.optim.AdamW(diffuser.parameters(), lr=1e-2)
            >>> losses = []
            >>> for step in range(20):
            ...     loss = diffuser.loss(x0, prefix, generator=torch.Generator().manual_seed(step % 2))
            ...     optimizer.zero_grad()
            ...     loss.backward()
            ...     optimizer.step()
            ...     losses.append(loss.item())
            >>> losses[-1] < losses[0]
            True
        """
        b = x0.shape[0]
        t = torch.rand(b, generator=generator, device=x0.device)
        alpha2 = cosine_alpha2(t)
        eps = torch.randn(x0.shape, generator=generator, device=x0.device)
        drop = torch.rand(b, generator=generator, device=x0.device) < self.config.cond_dropout
        prefix = torch.where(drop[:, None], self.null_prefix.to(prefix.dtype).expand_as(prefix), prefix)
        z = add_noise(x0, alpha2, eps)
        a, s = alpha2.sqrt()[:, None], (1 - alpha2).sqrt()[:, None]
        v_target = a * eps - s * x0
        return (self(z, alpha2, prefix) - v_target).float().pow(2).mean()

    def denoiser(self, prefix: torch.Tensor, cfg_scale: float = 1.0, compile: bool = False) -> Denoise:
        """A ``denoise(z, alpha2) -> Prediction`` for the samplers, with CFG batched into one forward.

        ``v = w v_cond + (1 - w) v_uncond``; w = 1 runs the conditional branch only. The returned callable
        is differentiable in z (constraint guidance wraps it and takes gradients). ``compile``: run the
        network through :meth:`compiled` (``torch.compile``, built once per diffuser; eager where it fails).

        Example (at alpha2 = 1 the latent is clean, so the prediction of x0 is z itself):
            >>> from dglm.presets import randomize
            >>> config = DiffusionConfig(dim=8, num_tokens=2, token_features=4, width=16, depth=2, heads=2)
            >>> diffuser = randomize(SemanticDiffuser(config))
            >>> z, prefix = torch.randn(3, 8), torch.randn(3, 8)
            >>> pred = diffuser.denoiser(prefix, cfg_scale=2.0)(z, torch.ones(3))
            >>> pred.x0.shape, torch.allclose(pred.x0, z)
            (torch.Size([3, 8]), True)
        """
        net = self.compiled() if compile else self

        def denoise(z: torch.Tensor, alpha2: torch.Tensor) -> Prediction:
            if cfg_scale == 1.0:
                v = net(z, alpha2, prefix)
            else:
                null = self.null_prefix.to(prefix.dtype).expand_as(prefix)
                v_cond, v_uncond = net(torch.cat([z, z]), torch.cat([alpha2, alpha2]),
                                       torch.cat([prefix, null])).chunk(2)  # (2B, d) -> 2 x (B, d)
                v = cfg_scale * v_cond + (1 - cfg_scale) * v_uncond
            v = v.to(z.dtype)
            a, s = alpha2.to(z.dtype).sqrt()[:, None], (1 - alpha2).to(z.dtype).sqrt()[:, None]
            return Prediction(x0=a * z - s * v, eps=s * z + a * v)

        return denoise

    def sample(self, prefix: torch.Tensor, steps: int, sampler: str, cfg_scale: float = 1.0,
               generator: torch.Generator | None = None, wrap=None, show_progress_bar: bool = False,
               compile: bool = False, temperature: float = 1.0) -> torch.Tensor:
        """Sample continuation embeddings (standardised) for standardised prefix embeddings (B, d) -> (B, d).

        ``temperature`` scales every Gaussian draw of the sampler (the starting noise and DDPM's per-step noise;
        ``GenerationConfig.plan_temperature``).

        ``wrap(denoise) -> denoise`` changes the prediction at every step (the constraint-guidance hook).
        ``compile``: see :meth:`denoiser`.

        Example (a seeded sample repeats; ``wrap`` sees every one of the ``steps`` predictions):
            >>> from dglm.presets import TINY, randomize
            >>> diffuser = randomize(SemanticDiffuser(TINY.diffusion))
            >>> prefix = torch.randn(2, diffuser.dim)
            >>> calls = []
            >>> def wrap(denoise):
            ...     def counted(*args, **kwargs):
            ...         calls.append(1)
            ...         return denoise(*args, **kwargs)
            ...     return counted
            >>> x = diffuser.sample(prefix, 5, "ddim", generator=torch.Generator().manual_seed(0), wrap=wrap)
            >>> x.shape, len(calls)
            (torch.Size([2, 32]), 5)
            >>> again = diffuser.sample(prefix, 5, "ddim", generator=torch.Generator().manual_seed(0))
            >>> torch.equal(x, again)
            True
        """
        if prefix.dim() != 2 or prefix.shape[1] != self.dim:
            raise ValueError(f"prefix must have shape (batch, {self.dim}), got {tuple(prefix.shape)}")
        denoise = self.denoiser(prefix, cfg_scale, compile)
        if wrap is not None:
            denoise = wrap(denoise)
        param = next(self.parameters())
        noise = temperature * torch.randn(prefix.shape, generator=generator, device=prefix.device, dtype=param.dtype)
        return get_sampler(sampler)(denoise, noise, sampling_alpha2s(steps, prefix.device), generator=generator,
                                    disable=not show_progress_bar, temperature=temperature)

    @torch.no_grad()
    def resample(self, x: torch.Tensor, prefix: torch.Tensor, t: float, steps: int, sampler: str,
                 cfg_scale: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """SDEdit: re-noise standardised embeddings x (B, d) to noise level ``t`` (0-1, on the ``steps`` grid,
        at least one step) and denoise them again given the prefixes (B, d) -> (B, d). The result keeps more
        of x the lower t is, in the form the diffusion's own samples take.

        Example (a low t keeps a sample near what it was given; t = 1 is a fresh sample):
            >>> from dglm.presets import TINY, randomize
            >>> diffuser = randomize(SemanticDiffuser(TINY.diffusion))
            >>> x, prefix = torch.randn(64, diffuser.dim), torch.randn(64, diffuser.dim)
            >>> g = torch.Generator().manual_seed(0)
            >>> near, far = ((diffuser.resample(x, prefix, t, 50, "ddpm", generator=g) - x).norm(dim=-1).mean() for t in (0.1, 1.0))
            >>> bool(near < far)
            True
        """
        if not 0 < t <= 1:
            raise ValueError(f"t={t} must be in (0, 1]")
        start = steps - max(1, math.ceil(t * steps - 1e-9))  # level t's grid index (the grid runs from t = 1 to 0)
        grid = sampling_alpha2s(steps, x.device)[start:]
        noisy = add_noise(x, grid[:1].expand(len(x)).to(x.dtype),
                          torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype))
        return get_sampler(sampler)(self.denoiser(prefix, cfg_scale), noisy, grid, generator=generator)

    def compiled(self, backend: str | object | None = None, mode: str | None = None) -> CompiledNetwork:
        """This network under ``torch.compile`` (forward and, for guidance, backward), built on first use
        and kept (an expensive thing built once; shapes that change recompile, up to torch's limit).
        ``backend``: a ``torch.compile`` backend; None keeps the one built before (``"inductor"`` if none).
        ``mode``: a ``torch.compile`` mode; None keeps the one built before, or builds with ``"reduce-overhead"``
        (CUDA graphs) when the network is on a GPU and the default mode elsewhere: on a GPU this small network
        is launch-bound, and CUDA graphs made the guided plan 1.9x faster than the default mode
        (results/gpu_check.md). Where
        compilation fails (no C++ compiler for the CPU backend, an unsupported device) it logs one warning
        and runs eagerly from then on, with the same results.

        Example (``aot_eager`` traces without generating code, so it runs anywhere):
            >>> diffuser = SemanticDiffuser(DiffusionConfig(dim=8, num_tokens=2, token_features=4, width=16,
            ...                                             depth=2, heads=2))
            >>> z, a2, prefix = torch.randn(3, 8), torch.full((3,), 0.5), torch.randn(3, 8)
            >>> net = diffuser.compiled(backend="aot_eager")
            >>> torch.allclose(net(z, a2, prefix), diffuser(z, a2, prefix), atol=1e-6), net.failed
            (True, False)
        """
        cached = self.__dict__.get("_compiled")
        if (cached is None or backend is not None and cached.backend != backend
                or mode is not None and cached.mode != mode):
            on_gpu = next(self.parameters()).is_cuda
            cached = CompiledNetwork(self, backend or (cached.backend if cached else "inductor"),
                                     mode or (cached.mode if cached else "reduce-overhead" if on_gpu else None))
            self.__dict__["_compiled"] = cached  # not a submodule: it stays out of state_dict and saves
        return cached

    def ema_copy(self) -> SemanticDiffuser:
        """A frozen copy of this model to hold the exponential moving average of its weights.

        Example:
            >>> config = DiffusionConfig(dim=8, num_tokens=2, token_features=4, width=16, depth=2, heads=2)
            >>> diffuser = SemanticDiffuser(config)
            >>> ema = diffuser.ema_copy()
            >>> any(p.requires_grad for p in ema.parameters()), torch.equal(ema.position, diffuser.position)
            (False, True)
        """
        ema = copy.deepcopy(self).eval()
        ema.__dict__.pop("_compiled", None)
        ema.requires_grad_(False)
        return ema

    @torch.no_grad()
    def update_ema(self, ema: SemanticDiffuser, decay: float | None = None) -> None:
        """ema <- decay * ema + (1 - decay) * self, parameter by parameter.

        Example:
            >>> config = DiffusionConfig(dim=8, num_tokens=2, token_features=4, width=16, depth=2, heads=2)
            >>> diffuser = SemanticDiffuser(config)
            >>> ema = diffuser.ema_copy()
            >>> with torch.no_grad():
            ...     _ = diffuser.null_prefix.fill_(1.0)
            >>> diffuser.update_ema(ema, decay=0.9)
            >>> ema.null_prefix[:3]
            tensor([0.1000, 0.1000, 0.1000])
        """
        decay = self.config.ema_decay if decay is None else decay
        torch._foreach_lerp_(list(ema.parameters()), list(self.parameters()), 1 - decay)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write ``config.json`` and the weights to ``folder`` (atomically; see
        :func:`dglm.io.save_component`).

        Example:
            >>> import tempfile
            >>> config = DiffusionConfig(dim=8, num_tokens=2, token_features=4, width=16, depth=2, heads=2)
            >>> with tempfile.TemporaryDirectory() as d:
            ...     SemanticDiffuser(config).save_pretrained(d)
            ...     sorted(os.listdir(d))
            ['config.json', 'model.safetensors']
        """
        save_component(folder, self.config, self.state_dict())

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> SemanticDiffuser:
        """Load a diffuser saved by :meth:`save_pretrained`, in eval mode.

        Example:
            >>> import tempfile
            >>> diffuser = SemanticDiffuser(DiffusionConfig(dim=8, num_tokens=2, token_features=4, width=16,
            ...                                             depth=2, heads=2))
            >>> with tempfile.TemporaryDirectory() as folder:
            ...     diffuser.save_pretrained(folder)
            ...     loaded = SemanticDiffuser.from_pretrained(folder)
            >>> torch.equal(loaded.position, diffuser.position), loaded.training
            (True, False)
        """
        config, state = load_component(folder, DiffusionConfig, build=cls)
        model = cls(config)
        load_state(model, state, folder)
        return model.eval()


class CompiledNetwork:
    """A network called through ``torch.compile(network, backend=backend, mode=mode)``, falling back to the eager network
    (once, with a warning; ``failed`` is then True) when compiling raises. A plain object, not a module, so
    holding it adds nothing to a ``state_dict``. Made by :meth:`SemanticDiffuser.compiled`.

    Example (a backend that cannot compile anything: the call still answers, eagerly):
        >>> def broken(graph, example_inputs):
        ...     raise RuntimeError("no compiler here")
        >>> net = CompiledNetwork(nn.Linear(2, 2), backend=broken)
        >>> net(torch.ones(1, 2)).shape, net.failed
        (torch.Size([1, 2]), True)
    """

    def __init__(self, network: nn.Module, backend: str | object = "inductor", mode: str | None = None):
        self.network, self.backend, self.mode, self.failed = network, backend, mode, False
        self._compiled = torch.compile(network, backend=backend, mode=mode)

    def __call__(self, *args, **kwargs):
        if not self.failed:
            try:
                return self._compiled(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - any compiler failure; a real input error re-raises below
                self.failed = True
                logger.warning("torch.compile of the %s failed (%s: %s); running it eagerly from now on",
                               type(self.network).__name__, type(e).__name__, str(e).splitlines()[0][:200])
        return self.network(*args, **kwargs)


class _Tokens(nn.Module):
    """(B, N * c) -> (B, N, c)."""

    def __init__(self, num_tokens: int):
        super().__init__()
        self.num_tokens = num_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(x, "b (n c) -> b n c", n=self.num_tokens)
