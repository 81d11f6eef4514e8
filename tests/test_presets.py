"""The preset registry (dglm.config.PRESETS) and the random-weight pipelines built from it (dglm.presets)."""

from __future__ import annotations

import pytest
import torch

from dglm import DGLM, Controller
from dglm.config import PRESETS, DGLMConfig, preset_config
from dglm.constraints import near
from dglm.presets import TINY, fit_random, random_decoder, random_encoder, random_pipeline
from dglm.training.stages import DiffusionStageConfig

PREFIXES = ["the game was", "a new song"]
# Few steps and tokens keep each call fast; sampling (not greedy) so a changed distribution changes the text.
FAST = dict(num_samples=3, steps=4, seed=0)
TEXT = dict(max_new_tokens=8, min_new_tokens=8)


@pytest.fixture(scope="module")
def pipe():
    return random_pipeline("tiny")


def test_every_preset_name_is_accepted_by_every_lookup():
    for name in PRESETS:
        assert preset_config(name) is PRESETS[name]
        assert DiffusionStageConfig(preset=name).preset == name  # the training stages' --preset
    with pytest.raises(ValueError, match=r"preset='small' is not known; accepted: 'paper', 'mini', 'tiny'"):
        preset_config("small")
    with pytest.raises(ValueError, match="preset"):
        DiffusionStageConfig(preset="small")


def test_from_config_builds_the_tiny_preset_with_its_training_initialisation(pipe):
    fresh = DGLM.from_config("tiny", fit_random(random_encoder(TINY.encoder)), random_decoder(TINY.decoder))
    assert fresh.config == PRESETS["tiny"]  # the random stand-ins keep the preset's ids
    with pytest.raises(ValueError, match="'random:tiny-bert' is a random stand-in"):
        DGLM.from_config("tiny")  # the loading boundary never builds test stand-ins
    out = fresh.generate(PREFIXES, **FAST, **TEXT)
    assert [len(texts) for texts in out.continuations] == [3, 3]
    # Untrained, the diffuser predicts v = 0 (training starts there on purpose) ...
    z, alpha2 = torch.randn(4, 32), torch.full((4,), 0.5)
    assert fresh.diffuser(z, alpha2, torch.randn(4, 32)).abs().max() == 0
    # ... which random_pipeline re-draws, so its prediction depends on the prefix.
    drawn = pipe.diffuser
    assert not torch.allclose(drawn(z, alpha2, torch.randn(4, 32)), drawn(z, alpha2, torch.randn(4, 32)))


def test_random_pipeline_of_a_config_equals_that_of_its_name():
    a, b = random_pipeline("tiny"), random_pipeline(DGLMConfig.model_validate(PRESETS["tiny"].model_dump()))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.parametrize("knob, low, high", [("cfg_scale", 1.0, 3.0), ("sigma2", 0.05, 0.5)])
def test_plan_knobs_change_the_plan(pipe, knob, low, high):
    a, b = pipe.plan(PREFIXES, **FAST, **{knob: low}), pipe.plan(PREFIXES, **FAST, **{knob: high})
    assert torch.equal(a.soft_prompts, pipe.plan(PREFIXES, **FAST, **{knob: low}).soft_prompts)  # seeded
    assert not torch.allclose(a.soft_prompts, b.soft_prompts, atol=1e-3)
    if knob == "cfg_scale":  # the sampled embedding itself, not only its soft tokens
        assert not torch.allclose(a.embeddings, b.embeddings, atol=1e-3)


def test_plan_scale_changes_the_text(pipe):
    plain = pipe.generate(PREFIXES, **FAST, **TEXT)
    assert plain.continuations == pipe.generate(PREFIXES, **FAST, **TEXT).continuations  # seeded
    assert pipe.generate(PREFIXES, **FAST, plan_scale=4.0, **TEXT).continuations != plain.continuations


def test_strength_and_control_scale_change_the_output(pipe):
    ctl = Controller(near("the game was won"), pipe)
    off = ctl.generate(PREFIXES, **FAST, strength=0, **TEXT)
    on = ctl.generate(PREFIXES, **FAST, strength=50, **TEXT)
    assert not torch.allclose(off.plans, on.plans, atol=1e-3)
    contrasted = ctl.generate(PREFIXES, **FAST, strength=50, control_scale=4.0, **TEXT)
    assert torch.equal(contrasted.plans, on.plans) and contrasted.continuations != on.continuations
