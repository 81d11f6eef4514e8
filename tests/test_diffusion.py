"""The semantic diffuser learns a conditional distribution, CFG tightens it, samplers are deterministic."""

import json
import shutil

import pytest
import torch

from dglm.config import DiffusionConfig
from dglm.diffusion import SemanticDiffuser
from dglm.training.train_diffusion import DiffusionTrainingConfig, train_diffuser

D = 8


def synthetic_pairs(n: int, seed: int):
    """Continuation = a fixed linear map of the prefix + small noise, in a standardised-like space."""
    g = torch.Generator().manual_seed(seed)
    w = torch.linalg.qr(torch.randn(D, D, generator=torch.Generator().manual_seed(123)))[0]
    prefix = torch.randn(n, D, generator=g)
    return prefix, prefix @ w + 0.1 * torch.randn(n, D, generator=g)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    model = SemanticDiffuser(DiffusionConfig(dim=D, num_tokens=4, token_features=16, width=64, depth=2, heads=4,
                                             cond_dropout=0.1, ema_decay=0.99))
    prefix, cont = synthetic_pairs(4096, 0)
    cfg = DiffusionTrainingConfig(steps=400, batch_size=128, lr=2e-3, warmup=20, save_every=200)
    out = tmp_path_factory.mktemp("diffusion")
    return train_diffuser(model, prefix, cont, cfg, out_dir=out, show_progress_bar=False), out


def test_samples_land_near_their_own_target(trained):
    model, _ = trained
    prefix, cont = synthetic_pairs(64, 1)
    x = model.sample(prefix, sampler="ddpm", steps=25, generator=torch.Generator().manual_seed(0))
    dist = torch.cdist(x, cont)  # (64, 64): sample i vs every target j
    assert near_own_target(model) > 0.9
    assert dist.diagonal().mean() < 0.5 * dist.mean()


def test_cfg_tightens_samples(trained):
    model, _ = trained
    prefix, cont = synthetic_pairs(64, 2)
    err = {w: (model.sample(prefix, sampler="ddpm", steps=25, cfg_scale=w, generator=torch.Generator().manual_seed(0)) - cont)
           .norm(dim=1).mean().item() for w in (0.0, 1.0, 3.0)}
    assert err[0.0] > err[1.0] > err[3.0] * 0.9  # unconditional is far worse; guidance does not hurt
    spread = {w: model.sample(prefix[:1].expand(64, D), sampler="ddpm", steps=25, cfg_scale=w,
                              generator=torch.Generator().manual_seed(1)).std(0).mean().item() for w in (1.0, 3.0)}
    assert spread[3.0] < spread[1.0]


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_plan_temperature_narrows_samples_toward_the_target(trained, sampler):
    model, _ = trained
    prefix, cont = synthetic_pairs(64, 2)
    one = prefix[:1].expand(256, D)

    def draw(temperature, rows=prefix):
        return model.sample(rows, steps=25, sampler=sampler, temperature=temperature,
                            generator=torch.Generator().manual_seed(0))

    default = model.sample(prefix, steps=25, sampler=sampler, generator=torch.Generator().manual_seed(0))
    assert torch.equal(draw(1.0), default)  # 1 is the sampler as it always was
    spread = {t: draw(t, one).std(0).mean().item() for t in (1.0, 0.5)}
    err = {t: (draw(t) - cont).norm(dim=1).mean().item() for t in (1.0, 0.5)}
    assert spread[0.5] < 0.8 * spread[1.0]
    assert err[0.5] < err[1.0]


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_same_seed_same_samples(trained, sampler):
    model, _ = trained
    prefix = synthetic_pairs(5, 3)[0]
    a, b = (model.sample(prefix, steps=10, sampler=sampler, generator=torch.Generator().manual_seed(4)) for _ in "ab")
    assert torch.equal(a, b)


def near_own_target(model: SemanticDiffuser) -> float:
    """The share of samples closer to their own target than to any other prefix's target (64 held-out pairs)."""
    prefix, cont = synthetic_pairs(64, 1)
    dist = torch.cdist(model.sample(prefix, sampler="ddpm", steps=25, generator=torch.Generator().manual_seed(0)), cont)  # (64, 64)
    others = dist.masked_fill(torch.eye(64, dtype=torch.bool), float("inf")).min(1).values
    return (dist.diagonal() < others).float().mean().item()


def test_resume_continues_from_saved_state(trained, tmp_path):
    """A run resumed from the trained run's last save does only the missing steps, starting from the saved
    weights and EMA: 10 more steps keep the trained model's quality, which 10 steps from scratch are far from."""
    model, out = trained
    shutil.copytree(out / "state", tmp_path / "state")  # the module's run folder stays as it is
    prefix, cont = synthetic_pairs(256, 5)
    cfg = DiffusionTrainingConfig(steps=410, batch_size=32, lr=2e-3, warmup=1, save_every=5)
    torch.manual_seed(1)  # a fresh model with other weights than the trained one
    resumed = train_diffuser(SemanticDiffuser(model.config), prefix, cont, cfg, out_dir=tmp_path,
                             show_progress_bar=False)
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == [405, 410]
    assert json.loads((tmp_path / "state" / "state.json").read_text())["step"] == 410
    assert near_own_target(resumed) > 0.9

    torch.manual_seed(1)  # the same 10 steps without the saved state: the check above can tell the difference
    scratch = train_diffuser(SemanticDiffuser(model.config), prefix, cont, cfg.model_copy(update={"steps": 10}),
                             show_progress_bar=False)
    assert near_own_target(scratch) < 0.5


def test_save_load_round_trip(trained, tmp_path):
    model, _ = trained
    model.save_pretrained(tmp_path / "d")
    loaded = SemanticDiffuser.from_pretrained(tmp_path / "d")
    prefix = synthetic_pairs(3, 6)[0]
    assert torch.equal(model.sample(prefix, sampler="ddpm", steps=5, generator=torch.Generator().manual_seed(0)),
                       loaded.sample(prefix, sampler="ddpm", steps=5, generator=torch.Generator().manual_seed(0)))


def test_bad_arguments(trained):
    model, _ = trained
    with pytest.raises(ValueError, match="sampler"):
        model.sample(torch.zeros(1, D), 5, "euler")
    with pytest.raises(ValueError, match="steps"):
        model.sample(torch.zeros(1, D), sampler="ddpm", steps=0)
    with pytest.raises(ValueError, match=r"\(batch, 8\)"):
        model.sample(torch.zeros(1, 7), 5, "ddpm")


def test_rank_deficient_denoiser_is_refused_for_training_and_logged_on_load(caplog):
    """A latent squeezed through fewer features than the embedding has dimensions keeps pure noise in the
    other directions of every sample (the first mini diffusion had 8 x 32 = 256 < 384): training refuses such a
    config, naming the fields and a fix; building one (an old checkpoint, such as the shipped mini's) says so in
    the log."""
    config = DiffusionConfig(dim=D, num_tokens=2, token_features=2, width=16, depth=1, heads=2)
    assert config.rank_deficit == D - 4
    with caplog.at_level("INFO", logger="dglm.diffusion"):
        model = SemanticDiffuser(config)
    assert "cannot remove the noise in 4 directions" in caplog.text
    prefix, cont = synthetic_pairs(16, 0)
    with pytest.raises(ValueError, match=r"num_tokens \* token_features = 2 \* 2 = 4 is less than dim = 8.*"
                                         r"token_features=4"):
        train_diffuser(model, prefix, cont, DiffusionTrainingConfig(steps=1, batch_size=4, warmup=1),
                       show_progress_bar=False)
