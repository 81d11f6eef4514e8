"""The instruction option: a control's own words as a request in the decoder's chat template."""

from __future__ import annotations

import pytest

from dglm.instructions import chat_prefixes, instruction_for


@pytest.fixture()
def tiny_pipe():
    from dglm.presets import random_pipeline

    return random_pipeline("tiny")


def test_instruction_for_puts_a_constraint_in_words():
    assert instruction_for("topic('sports')") == "Write about sports."
    assert instruction_for("-topic('sports')") == "Do not write about sports."
    assert instruction_for("toxicity.low() + topic('arts')") == "Write about arts. Do not write offensively."
    assert instruction_for("target('formality', 'formal')") == "Write so that its formality is formal."
    with pytest.raises(ValueError, match="write the instruction yourself"):
        instruction_for("near('a song')")


def test_controller_instruction_wraps_the_prefix_and_keeps_the_plan_guided(tiny_pipe, monkeypatch):
    from dglm import Controller
    from dglm.constraints import Probe, ProbeRegistry

    pipe = tiny_pipe
    seen = []
    real = type(pipe).generate

    def spy(self, prefixes, num_samples=1, **kw):
        seen.append((list(prefixes), kw.get("control"), kw.get("generation_config")))
        return real(self, prefixes, num_samples, **kw)

    monkeypatch.setattr(type(pipe), "generate", spy)
    probe = Probe.fit(["the team won the match", "a goal in the game", "a song and a film", "the book of art"],
                      ["sports", "sports", "arts", "arts"], encoder=pipe.encoder, name="topic")
    registry = ProbeRegistry(pipe.encoder, {"topic": probe})
    monkeypatch.setattr(pipe, "probes", registry)
    ctl = Controller("topic('sports')", pipe, strength=20)
    out = ctl.generate(["The house"], 1, instruction=True, steps=3, seed=0, max_new_tokens=3, min_new_tokens=3)
    prefixes, control, settings = seen[-1]
    assert prefixes == chat_prefixes(pipe.decoder.tokenizer, ["The house"], "Write about sports.")
    assert repr(control.constraints) == "topic('sports')" and settings.strength == 20.0  # still guided
    assert "Write about sports" not in out.continuations[0][0]
    ctl.generate(["The house"], 1, instruction="Be brief.", steps=3, seed=0, max_new_tokens=2)
    assert seen[-1][0] == chat_prefixes(pipe.decoder.tokenizer, ["The house"], "Be brief.")
    with pytest.raises(ValueError, match="instruction=True"):
        Controller(None, pipe).generate(["x"], instruction=True)
