"""One home per knob: every GenerationConfig field is declared once and validated exactly once, at the door
that receives it (DGLM.plan / DGLM.generate, Controller, the ``dglm generate`` command line), never again by
the components below. The count is of field checks (``dglm.config._field_adapter``, the one validator of a
single knob), per field name."""

from __future__ import annotations

import collections

import pytest

import dglm.config as config
from dglm import Controller
from dglm.cli import main
from dglm.config import GenerationConfig
from dglm.constraints import Control, near
from dglm.presets import random_pipeline

# A valid value of every knob, different from the tiny preset's default where it can be.
VALUES = {"sampler": "ddim", "steps": 3, "cfg_scale": 1.5, "plan_temperature": 0.9, "sigma2": 0.1, "compile": False,
          "strength": 5.0, "guidance_samples": 4, "plan_scale": 1.0, "control_scale": 1.5, "max_new_tokens": 2,
          "do_sample": True, "top_p": 0.8, "temperature": 0.9, "repetition_penalty": 1.1, "num_samples": 2,
          "batch_size": 8, "seed": 3, "show_progress_bar": False, "max_nll": 30.0}
FLAGS = {"num_samples": "-n"}


@pytest.fixture(scope="module")
def pipe():
    return random_pipeline("tiny")


@pytest.fixture
def checks(monkeypatch) -> collections.Counter:
    """How often each GenerationConfig field was checked since the test began."""
    counts = collections.Counter()
    real = config._field_adapter

    def counted(model, field):
        if model is GenerationConfig:
            counts[field] += 1
        return real(model, field)

    monkeypatch.setattr(config, "_field_adapter", counted)
    return counts


def test_the_table_covers_every_knob():
    assert set(VALUES) == set(GenerationConfig.model_fields)


@pytest.mark.parametrize("knob", sorted(VALUES))
def test_generate_checks_each_knob_it_is_given_once(pipe, checks, knob):
    pipe.generate(["the game was"], control=Control(near("old music")), **{knob: VALUES[knob]})
    assert checks == {knob: 1}


@pytest.mark.parametrize("knob", sorted(set(VALUES) - set(config.DECODING_FIELDS)))
def test_plan_checks_each_knob_it_is_given_once(pipe, checks, knob):
    pipe.plan(["the game was"], control=Control(near("old music")), **{knob: VALUES[knob]})
    assert checks == {knob: 1}


def test_per_prefix_strength_is_checked_once_per_prefix(pipe, checks):
    pipe.generate(["the game was", "a song"], control=Control(near("old music")), strength=[5, 0], steps=2)
    assert checks == {"strength": 2, "steps": 1}


@pytest.mark.parametrize("knob", sorted(VALUES))
def test_controller_checks_its_settings_when_made_and_never_again(pipe, checks, knob):
    ctl = Controller(near("old music"), pipe, **{knob: VALUES[knob]})
    assert checks == {knob: 1}
    ctl.generate(["the game was"])
    ctl.prompt_embeds(["the game was"])
    assert checks == {knob: 1}
    ctl.generate(["the game was"], steps=2)  # a call's own knob: checked once, at the call
    assert checks == {knob: 1 + (knob == "steps"), "steps": 1 + (knob == "steps")}


@pytest.mark.parametrize("knob", sorted(set(VALUES) - {"show_progress_bar"}))
def test_the_command_line_checks_each_option_once(checkpoint, checks, capsys, knob):
    value = VALUES[knob]
    flag = FLAGS.get(knob, "--" + knob.replace("_", "-"))
    option = [f"--{'' if value else 'no-'}{knob.replace('_', '-')}"] if isinstance(value, bool) else [flag, str(value)]
    assert main(["generate", "--checkpoint", checkpoint, "--control", "topic('sports')", "--no-progress",
                 *option, "the game was"]) == 0
    assert checks == {knob: 1, "show_progress_bar": 1}  # --progress / --no-progress


def test_one_meaning_of_strength_at_every_door(pipe):
    """A call's strength wins over the control's own, which wins over the pipeline's default; the same at
    DGLM.generate and Controller.generate."""
    kw = dict(steps=3, seed=0, max_new_tokens=2)
    control = Control(near("old music"), strength=200)
    ctl = Controller(near("old music"), pipe, strength=200)
    for call in (5.0, [5.0]):
        direct = pipe.plan(["a"], control=control, strength=call, **kw).embeddings
        assert direct.equal(pipe.plan(["a"], control=Control(near("old music")), strength=5.0, **kw).embeddings)
        assert direct.equal(ctl.plan(["a"], strength=call, **kw).embeddings)
    own = pipe.plan(["a"], control=control, **kw).embeddings
    assert own.equal(ctl.plan(["a"], **kw).embeddings) and not own.equal(direct)
