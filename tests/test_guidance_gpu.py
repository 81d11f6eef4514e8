"""Constraint guidance on a CUDA device: devices, dtypes, per-row batching and the cost of a guided step.

Marked ``gpu`` (deselected by default); run with ``pytest tests/test_guidance_gpu.py -m gpu -s``.
"""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from dglm.config import DiffusionConfig
from dglm.constraints import ConstraintGuidance, FunctionConstraint, Probe
from dglm.diffusion import SemanticDiffuser
from dglm.sampling import sample_ddim
from dglm.schedule import sampling_alpha2s

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _probe(dim: int, axis: int, name: str) -> Probe:
    return Probe(8 * torch.eye(dim)[axis:axis + 1], torch.zeros(1), ("no", "yes"), f"toy:{dim}", name=name)


def _diffuser(dim: int, **shape) -> SemanticDiffuser:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = SemanticDiffuser(DiffusionConfig(dim=dim, **shape))
    for p in model.out.parameters():  # the zero-initialised output would make every prediction v = 0
        torch.nn.init.normal_(p, std=0.02, generator=torch.Generator().manual_seed(1))
    return model.cuda().eval().requires_grad_(False)


@pytest.mark.parametrize("autocast", [False, True])
def test_per_row_guidance_on_cuda(autocast):
    dim = 16
    model = _diffuser(dim, num_tokens=4, token_features=8, width=64, depth=2, heads=2)
    u, v = _probe(dim, 0, "u")("yes"), _probe(dim, 1, "v")("yes")
    constraints = [u, v, u - 3 * v, None, u]
    strengths = torch.tensor([10.0, 1e4, 1e4, 10.0, 0.0], device="cuda")
    prefix = torch.zeros(len(constraints), dim, device="cuda")
    noise = torch.randn(len(constraints), dim, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    alpha2s = sampling_alpha2s(20, "cuda")

    def run(rows):
        guidance = ConstraintGuidance([constraints[i] for i in rows], strengths[rows], F.normalize, num_samples=32,
                                      generator=torch.Generator("cuda").manual_seed(1))
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            return sample_ddim(guidance(model.denoiser(prefix[rows], cfg_scale=1.5)), noise[rows], alpha2s)

    together = run(list(range(len(constraints))))
    assert together.is_cuda and torch.isfinite(together).all()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        plain = sample_ddim(model.denoiser(prefix, cfg_scale=1.5), noise, alpha2s)
    assert torch.equal(together[3], plain[3]) and torch.equal(together[4], plain[4])  # unguided: bit-identical
    tol = 5e-2 if autocast else 1e-4
    for i in range(len(constraints)):
        assert torch.allclose(together[i:i + 1], run([i]), atol=tol), i


def test_true_bfloat16_tensors_on_cuda_stay_finite():
    steep = FunctionConstraint(lambda x: 1e6 * x[..., 0] - 1e6 * x[..., 1].pow(3), name="steep")
    weight = torch.randn(16, 16, device="cuda", dtype=torch.bfloat16) * 0.1

    def denoise(z, alpha2):
        from dglm.sampling import Prediction
        a, s = alpha2.to(z.dtype).sqrt()[:, None], (1 - alpha2).to(z.dtype).sqrt()[:, None]
        x0 = torch.tanh(z @ weight)
        return Prediction(x0=x0, eps=(z - a * x0) / s)

    z = torch.randn(64, 16, device="cuda", dtype=torch.bfloat16)
    x = sample_ddim(ConstraintGuidance(steep, 1e4, F.normalize)(denoise), z, sampling_alpha2s(50, "cuda"))
    assert x.dtype == torch.bfloat16 and torch.isfinite(x).all()


def test_cost_of_guided_sampling_paper_shape():
    """Timing only (printed): 50 DDPM steps, batch 25, CFG 1.5 batched, 32 MC samples, paper-shaped denoiser."""
    dim, batch, steps = 768, 25, 50
    model = _diffuser(dim, num_tokens=32, width=768, depth=12, heads=12)
    probe = _probe(dim, 0, "u")
    prefix = torch.randn(batch, dim, device="cuda")
    for autocast in (False, True):
        timings = {}
        for name, wrap in (("unguided", None), ("guided", ConstraintGuidance(probe("yes"), 20.0, F.normalize))):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                model.sample(prefix, sampler="ddpm", steps=5, cfg_scale=1.5, wrap=wrap)  # warm-up
                torch.cuda.synchronize()
                start = time.perf_counter()
                x = model.sample(prefix, sampler="ddpm", steps=steps, cfg_scale=1.5, wrap=wrap)
                torch.cuda.synchronize()
            timings[name] = time.perf_counter() - start
            assert torch.isfinite(x).all()
        print(f"\n[{torch.cuda.get_device_name()}] {'bf16 autocast' if autocast else 'fp32'}: 50 steps, batch 25, "
              f"CFG batched: unguided {timings['unguided']:.2f} s, guided (32 MC samples) {timings['guided']:.2f} s")
