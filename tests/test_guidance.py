"""Loss-guided diffusion through the denoiser hook: it steers, composes, is per-row, and stays finite."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dglm.config import DiffusionConfig
from dglm.constraints import ConstraintGuidance, Control, FunctionConstraint, Probe, toxicity
from dglm.diffusion import SemanticDiffuser
from dglm.sampling import Prediction, sample_ddim, sample_ddpm
from dglm.schedule import sampling_alpha2s

D = 8
RATE_U, RATE_V = 0.3, 0.4  # how often the training data sit on the positive side of each probe's axis
BATCH, STEPS, SAMPLES = 128, 20, 16


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models run fastest single-threaded, and the CPUs are shared.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _clusters(n: int, generator: torch.Generator) -> torch.Tensor:
    """Standardised latents in four clusters: sign of coordinate 0 positive 30% of the time, of coordinate 1
    positive 40% of the time, independently."""
    x = 0.5 * torch.randn(n, D, generator=generator)
    x[:, 0] += 1.5 * torch.where(torch.rand(n, generator=generator) < RATE_U, 1.0, -1.0)
    x[:, 1] += 1.5 * torch.where(torch.rand(n, generator=generator) < RATE_V, 1.0, -1.0)
    return x


@pytest.fixture(scope="module")
def diffuser() -> SemanticDiffuser:
    """A tiny SemanticDiffuser trained for a few seconds on the four clusters (prefix: zeros)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = SemanticDiffuser(DiffusionConfig(dim=D, num_tokens=4, token_features=8, width=32, depth=2, heads=2,
                                                 cond_dropout=0.1))
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(200):
        x = _clusters(256, generator)
        loss = model.loss(x, torch.zeros_like(x), generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.set_num_threads(threads)
    return model.eval().requires_grad_(False)


def _axis_probe(axis: int, name: str) -> Probe:
    return Probe(8 * torch.eye(D)[axis:axis + 1], torch.zeros(1), ("no", "yes"), f"toy:{D}", name=name)


PU, PV = _axis_probe(0, "u"), _axis_probe(1, "v")
U, V = PU("yes"), PV("yes")


def _sample(diffuser, constraints, strength, batch=BATCH, cfg_scale=1.0, seed=2, **kwargs) -> torch.Tensor:
    wrap = None
    if constraints is not ...:
        wrap = ConstraintGuidance(constraints, strength, F.normalize, num_samples=SAMPLES,
                                  generator=torch.Generator().manual_seed(1), **kwargs)
    return diffuser.sample(torch.zeros(batch, D), sampler="ddpm", steps=STEPS, cfg_scale=cfg_scale,
                           generator=torch.Generator().manual_seed(seed), wrap=wrap)


def _accepts(probe: Probe, x: torch.Tensor) -> torch.Tensor:
    return probe.predict(F.normalize(x, dim=-1)) == 1


def test_acceptance_rises_with_strength(diffuser):
    rates = [_accepts(PU, _sample(diffuser, U, lam)).float().mean().item() for lam in (0.0, 1.0, 3.0, 10.0, 100.0)]
    assert abs(rates[0] - RATE_U) < 0.12, rates  # the unguided model reproduces the base rate
    assert all(b >= a for a, b in zip(rates, rates[1:], strict=False)), rates
    assert rates[-1] >= 0.9, rates


def test_composed_constraints_are_both_satisfied_more_often(diffuser):
    def both(constraint):
        x = _sample(diffuser, constraint, 30.0)
        return (_accepts(PU, x) & _accepts(PV, x)).float().mean().item()

    alone_u, alone_v, together = both(U), both(V), both(U + V)
    assert together > max(alone_u, alone_v) + 0.2, (alone_u, alone_v, together)
    assert together >= 0.8


def test_cfg_and_guidance_share_one_forward_per_step(diffuser):
    calls = []
    base = diffuser.denoiser(torch.zeros(BATCH, D), cfg_scale=2.0)

    def counting(z, alpha2):
        calls.append(z.shape[0])
        return base(z, alpha2)

    guided = ConstraintGuidance(U, 30.0, F.normalize, num_samples=SAMPLES)(counting)
    x = sample_ddpm(guided, torch.randn(BATCH, D, generator=torch.Generator().manual_seed(0)),
                    sampling_alpha2s(STEPS), generator=torch.Generator().manual_seed(1))
    assert calls == [BATCH] * STEPS  # one (CFG-batched) forward per step, nothing per row
    assert _accepts(PU, x).float().mean() >= 0.9


def test_algebra_identities_hold_for_samples(diffuser):
    plain = _sample(diffuser, ..., 0.0)
    for nothing, strength in ((U - U, 50.0), (0 * U, 50.0), (U, 0.0), ([None] * BATCH, 50.0),
                              (U, torch.zeros(BATCH)), (PU("no") + PU("yes"), 50.0)):
        assert torch.equal(_sample(diffuser, nothing, strength), plain)
    assert torch.equal(_sample(diffuser, 2 * U, 10.0), _sample(diffuser, U.weight(2), 10.0))
    assert torch.equal(_sample(diffuser, -(-U), 10.0), _sample(diffuser, U, 10.0))  # noqa: B002
    assert torch.allclose(_sample(diffuser, U + 0.5 * V, 10.0), _sample(diffuser, 0.5 * V + U, 10.0), atol=1e-5)
    assert not torch.allclose(_sample(diffuser, U, 10.0), plain)


def test_per_row_constraints_equal_running_each_row_alone(diffuser):
    constraints = [U, V, U + V, None, -U, U]
    strengths = torch.tensor([10.0, 30.0, 5.0, 10.0, 20.0, 0.0])
    prefix = torch.zeros(len(constraints), D)
    noise = torch.randn(len(constraints), D, generator=torch.Generator().manual_seed(3))
    alpha2s = sampling_alpha2s(STEPS)

    def run(rows):
        guidance = ConstraintGuidance([constraints[i] for i in rows], strengths[rows], F.normalize,
                                      num_samples=SAMPLES, generator=torch.Generator().manual_seed(4))
        return sample_ddim(guidance(diffuser.denoiser(prefix[rows])), noise[rows], alpha2s)

    together = run(list(range(len(constraints))))
    for i in range(len(constraints)):
        assert torch.allclose(together[i:i + 1], run([i]), atol=1e-5), i
    unguided = sample_ddim(diffuser.denoiser(prefix), noise, alpha2s)
    assert torch.equal(together[3], unguided[3]) and torch.equal(together[5], unguided[5])  # bit-identical
    assert _accepts(PU, together[0:1]).all() and not _accepts(PU, together[4:5]).any()


def test_unguided_rows_are_bit_identical_in_a_mixed_ddpm_batch(diffuser):
    plain = _sample(diffuser, ..., 0.0)
    mixed = _sample(diffuser, [U if i % 3 == 0 else None for i in range(BATCH)],
                    torch.tensor([0.0 if i % 3 == 1 else 30.0 for i in range(BATCH)]))
    guided = torch.arange(BATCH) % 3 == 0
    assert torch.equal(mixed[~guided], plain[~guided])
    assert _accepts(PU, mixed[guided]).float().mean() > _accepts(PU, plain[guided]).float().mean() + 0.3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_huge_strength_stays_finite(diffuser, dtype):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        x = _sample(diffuser, U - 3 * V, 1e4)
    assert torch.isfinite(x).all() and x.abs().max() < 50
    assert _accepts(PU, x).all() and not _accepts(PV, x).any()


def _toy_denoiser(dtype, scale=0.9):
    """x0_hat = scale * z (a linear "model" whose Jacobian we know), in ``dtype``."""
    def denoise(z, alpha2):
        a, s = alpha2.to(z.dtype).sqrt()[:, None], (1 - alpha2).to(z.dtype).sqrt()[:, None]
        x0 = scale * z
        return Prediction(x0=x0, eps=(z - a * x0) / s)

    return denoise


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_updates_are_clipped_at_any_strength_and_noise_level(dtype):
    steep = FunctionConstraint(lambda x: 1e6 * x[..., 0], name="steep")
    wild = FunctionConstraint(lambda x: 1e6 * x[..., 0] - 1e6 * x[..., 1].pow(3), name="wild")
    z = torch.randn(5, D, generator=torch.Generator().manual_seed(0)).to(dtype)
    alpha2 = torch.tensor([2e-7, 1e-3, 0.5, 0.999, 1 - 2e-7])  # the sampling grid's extremes included
    plain = _toy_denoiser(dtype)(z, alpha2)
    for constraint in (steep, wild):
        for max_x0_shift in (1.0, 0.1):
            guided = ConstraintGuidance(constraint, 1e4, lambda x: x, num_samples=4, max_x0_shift=max_x0_shift)
            out = guided(_toy_denoiser(dtype))(z, alpha2)
            assert out.x0.dtype == dtype and torch.isfinite(out.x0).all() and torch.isfinite(out.eps).all()
            shift = (out.x0 - plain.x0).float()
            assert (shift.norm(dim=1) <= max_x0_shift * math.sqrt(D) * 1.02 + 0.05).all(), shift
            if constraint is steep:  # the whole (clipped) step goes down coordinate 0
                assert torch.allclose(shift[:, 0], torch.full((5,), -max_x0_shift * math.sqrt(D)), rtol=0.02)
        x = sample_ddpm(ConstraintGuidance(constraint, 1e4, lambda x: x, num_samples=4)(_toy_denoiser(dtype)),
                        torch.randn(16, D).to(dtype), sampling_alpha2s(STEPS))
        assert x.dtype == dtype and torch.isfinite(x).all()


def test_update_is_the_reference_formula_when_unclipped():
    w = torch.randn(D, generator=torch.Generator().manual_seed(0))
    linear = FunctionConstraint(lambda x: x @ w, name="linear")  # loss linear in x: gradient known exactly
    z = torch.randn(3, D, generator=torch.Generator().manual_seed(1))
    alpha2 = torch.tensor([0.2, 0.5, 0.9])
    strength = torch.tensor([0.5, 1.0, 2.0])
    out = ConstraintGuidance(linear, strength, lambda x: x, num_samples=8, max_x0_shift=1e6)(_toy_denoiser(
        torch.float32))(z, alpha2)
    plain = _toy_denoiser(torch.float32)(z, alpha2)
    alpha, sigma = alpha2.sqrt()[:, None], (1 - alpha2).sqrt()[:, None]
    g = 0.9 * w  # d/dz of -log mean exp(-(w . (0.9 z + noise)))
    eps = plain.eps + strength[:, None] * sigma * g
    assert torch.allclose(out.eps, eps, atol=1e-5)
    assert torch.allclose(out.x0, (z - sigma * eps) / alpha, atol=1e-5)
    clipped = ConstraintGuidance(linear, strength, lambda x: x, num_samples=8, max_grad_norm=0.01)(_toy_denoiser(
        torch.float32))(z, alpha2)
    assert torch.allclose(clipped.eps, plain.eps + strength[:, None] * sigma * 0.01 * g / g.norm(), atol=1e-5)


def test_guidance_refuses_what_it_cannot_do(diffuser):
    denoise = diffuser.denoiser(torch.zeros(2, D))
    z, alpha2 = torch.randn(2, D), torch.full((2,), 0.5)
    with pytest.raises(ValueError, match=r"toxicity.low\(\).*resolve\(encoder, registry\)"):
        ConstraintGuidance(toxicity.low(), 1.0, F.normalize)
    with pytest.raises(ValueError, match="strength=-1.0: Input should be greater than or equal to 0"):
        Control(U, strength=-1.0)  # knobs are checked at the door, the guidance takes checked values
    with pytest.raises(ValueError, match="got 3 per-row constraints but the sampling batch has 2 rows"):
        ConstraintGuidance([U, V, None], 1.0, F.normalize)(denoise)(z, alpha2)
    with pytest.raises(ValueError, match="strength has 3 entries but the sampling batch has 2 rows"):
        ConstraintGuidance(U, torch.ones(3), F.normalize)(denoise)(z, alpha2)
    with pytest.raises(ValueError, match="reads 8-d embeddings"):
        ConstraintGuidance(U, 1.0, lambda x: x[..., :4])(denoise)(z, alpha2)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="not torch.inference_mode"):
        ConstraintGuidance(U, 1.0, F.normalize)(denoise)(z, alpha2)
