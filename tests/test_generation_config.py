"""One GenerationConfig for every per-call knob, and one Control for what steers a call's plans."""

import pytest
import torch

from dglm import DGLM, Controller, FunctionConstraint
from dglm.cli import build_parser
from dglm.config import DECODING_FIELDS, GenerationConfig
from dglm.constraints import Control, near
from dglm.outputs import merge_outputs
from dglm.presets import random_pipeline

PREFIXES = ["the game was", "", "a river of water"]
FAST = dict(steps=3, max_new_tokens=4, min_new_tokens=4)


@pytest.fixture(scope="module")
def pipe():
    return random_pipeline("tiny")


def first_dim_low():
    return FunctionConstraint(lambda x: x[..., 0] * 10, name="first_dim_low")


def test_every_knob_has_a_description_and_a_generated_cli_option():
    generate = build_parser()._subparsers._group_actions[0].choices["generate"]
    options = {a.dest: a for a in generate._actions}
    for name, field in GenerationConfig.model_fields.items():
        assert field.description, name
        if name != "show_progress_bar":  # the CLI's --progress sets it
            assert options[name].help.startswith(field.description), name
    assert "-n" in options["num_samples"].option_strings
    args = generate.parse_args(["x", "--top-p", "0.5"])
    assert args.top_p == 0.5 and not hasattr(args, "steps")  # unset: the checkpoint's value applies


def test_one_default_per_knob_and_one_error_per_bad_value(pipe):
    call = pipe.generation_config()
    assert call.batch_size == GenerationConfig().batch_size == 256 and call.steps == pipe.sampling.steps
    assert pipe.generation_config(steps=None).steps == pipe.sampling.steps  # None keeps the default
    with pytest.raises(ValueError, match=r"^cfg_scale=101: Input should be less than or equal to 100$"):
        pipe.generate(["a"], cfg_scale=101, **FAST)
    with pytest.raises(ValueError, match=r"strength=1e\+39: Input should be less than or equal to 3402823"):
        Controller(first_dim_low(), pipe, strength=1e39)
    with pytest.raises(ValueError, match="min_new_tokens=2: Extra inputs are not permitted"):
        pipe.plan(["a"], min_new_tokens=2)  # a decoding keyword means nothing to a plan


def test_checkpoints_keep_the_old_keys_and_the_decoders_own_defaults(pipe, tmp_path):
    old = {"cfg_scale": 1.0, "compile": False, "control_scale": 1.0, "guidance_samples": 32, "plan_scale": 1.0,
           "sampler": "ddpm", "sigma2": 0.05, "steps": 50, "strength": 100.0}  # a dglm.json of before
    assert GenerationConfig.model_validate(old).saved() == {**GenerationConfig().saved(), **old}
    saved = DGLM(pipe.encoder, pipe.diffuser, pipe.prompt_generator, pipe.decoder,
                 GenerationConfig(steps=7, repetition_penalty=1.5))
    saved.save_pretrained(tmp_path / "ckpt")
    pipe.decoder.model.generation_config.top_p = 0.5
    try:
        loaded = DGLM.from_pretrained(tmp_path / "ckpt", encoder=pipe.encoder, decoder=pipe.decoder)
        call = loaded.generation_config()
        assert (call.steps, call.repetition_penalty, call.top_p) == (7, 1.5, 0.5)  # unset top_p: the decoder's
        assert loaded.generation_config(top_p=0.8).top_p == 0.8  # the call wins
    finally:
        pipe.decoder.model.generation_config.top_p = None


def test_a_control_steers_the_pipeline_as_the_controller_does(pipe):
    control = Control([first_dim_low(), None, "near('old music')"], strength=[40.0, 0.0, 10.0])
    direct = pipe.generate(PREFIXES, 2, control=control, seed=3, batch_size=3, **FAST)
    ctl = Controller(first_dim_low(), pipe)
    front = ctl.generate(PREFIXES, 2, constraints=list(control.constraints), strength=[40.0, 0.0, 10.0], seed=3,
                         batch_size=3, **FAST)
    unguided = pipe.generate(PREFIXES, 2, seed=3, batch_size=3, **FAST)
    assert direct.continuations == front.continuations and torch.equal(direct.plans, front.plans)
    assert (direct.plans[0, :, 0] < unguided.plans[0, :, 0]).all()  # the first prefix's plans are steered
    assert torch.equal(direct.plans[1], unguided.plans[1])  # the unguided one is bit-identical
    with pytest.raises(ValueError, match=r"constraints must have one constraint \(or None\) per prefix \(3\)"):
        pipe.plan(PREFIXES, control=Control([None, None]))
    with pytest.raises(TypeError, match="control=.* must be a dglm.constraints.Control"):
        pipe.plan(PREFIXES, control=first_dim_low())


def test_weights_times_strength_beyond_float32_are_refused(pipe):
    with pytest.raises(ValueError, match="weights x strength add up to 6e\\+39; the limit is 3.4e\\+38"):
        pipe.plan(["a"], control=Control(3e38 * near("the game"), strength=20.0))


def test_generate_chunks_stream_what_generate_returns(pipe):
    kw = dict(num_samples=3, seed=5, batch_size=2, control=Control(first_dim_low(), 30.0), **FAST)
    chunks = list(pipe.generate_chunks(PREFIXES, **kw))
    assert [(start, len(out.prefixes), len(out.continuations[0])) for start, out in chunks] == \
        [(0, 1, 2), (0, 1, 1), (1, 1, 2), (1, 1, 1), (2, 1, 2), (2, 1, 1)]
    whole = pipe.generate(PREFIXES, **kw)
    merged = merge_outputs(PREFIXES, chunks)
    assert merged.continuations == whole.continuations and torch.equal(merged.plans, whole.plans)


def test_decoding_settings_reach_hf_generate(pipe):
    kwargs = pipe.generate_kwargs({"top_p": 0.7, "temperature": 0.5, "min_new_tokens": 2})
    assert {k: kwargs[k] for k in DECODING_FIELDS} == {"max_new_tokens": 32, "do_sample": True, "top_p": 0.7,
                                                       "temperature": 0.5, "repetition_penalty": 1.2}
    assert kwargs["min_new_tokens"] == 2  # not a GenerationConfig field: passed through


def test_a_misspelled_decoding_keyword_is_refused_before_any_plan(pipe, monkeypatch):
    planned = []
    monkeypatch.setattr(pipe, "_plan", lambda *a, **k: planned.append(1))
    with pytest.raises(ValueError, match=r"^top_pp=0.5: not a GenerationConfig field nor a keyword of the decoder"):
        pipe.generate(["a"], steps=2, top_pp=0.5)
    assert not planned
    monkeypatch.undo()
    assert pipe.generate(["a"], steps=2, max_new_tokens=2, no_repeat_ngram_size=2).continuations  # HF's own: fine
