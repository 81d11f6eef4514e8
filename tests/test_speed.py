"""The speed switches: a compiled denoiser gives eager's plans; compile failures fall back to eager."""

import logging

import pytest
import torch

from dglm import Controller, FunctionConstraint
from dglm.config import GenerationConfig
from dglm.presets import random_pipeline

PREFIXES = ["the game was", "a river of water in the city today"]


def _broken(graph, example_inputs):
    raise RuntimeError("no compiler here")


def _plans(pipe, guided: bool) -> torch.Tensor:
    ctl = Controller(FunctionConstraint(lambda x: x[..., 0], name="first_dim_low") if guided else None, pipe,
                     strength=30.0)
    return ctl.plan(PREFIXES, num_samples=3, steps=5, seed=4, cfg_scale=2.0).embeddings


def test_a_compiled_denoiser_plans_what_the_eager_one_plans():
    """Guided (the compiled network's forward and backward), with CFG batched into the same call."""
    guided = True
    eager = random_pipeline("tiny")
    compiled = random_pipeline("tiny")
    compiled.sampling = GenerationConfig(**{**compiled.sampling.model_dump(), "compile": True})
    net = compiled.diffuser.compiled(backend="aot_eager")  # traced forward and backward, no code generation
    assert torch.allclose(_plans(compiled, guided), _plans(eager, guided), atol=1e-5)
    assert not net.failed and compiled.diffuser.compiled() is net  # built once, then reused
    assert "_compiled" not in str(compiled.diffuser.state_dict().keys())


def test_a_failing_compiler_falls_back_to_eager_with_one_warning(caplog):
    eager = random_pipeline("tiny")
    broken = random_pipeline("tiny")
    broken.sampling = GenerationConfig(**{**broken.sampling.model_dump(), "compile": True})
    net = broken.diffuser.compiled(backend=_broken)
    with caplog.at_level(logging.WARNING, logger="dglm.diffusion"):
        assert torch.equal(_plans(broken, True), _plans(eager, True))
    assert net.failed and sum("torch.compile" in r.message for r in caplog.records) == 1


@pytest.mark.slow
def test_inductor_compiles_the_guided_plan_on_this_machine():
    """The default backend (C++ code on a CPU: needs a compiler; tens of seconds)."""
    eager = random_pipeline("tiny")
    compiled = random_pipeline("tiny")
    compiled.sampling = GenerationConfig(**{**compiled.sampling.model_dump(), "compile": True})
    assert torch.allclose(_plans(compiled, True), _plans(eager, True), atol=1e-4)
    assert not compiled.diffuser.compiled().failed
