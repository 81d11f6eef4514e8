"""A decoder's own generation_config supplies the decoding defaults a call does not override."""

from dglm.pipeline import DEFAULT_GENERATE_KWARGS
from dglm.presets import random_pipeline

PREFIXES = ["the game was", "a river of water"]


def test_generation_config_supplies_the_defaults_a_call_does_not_override():
    pipe = random_pipeline("tiny")
    assert pipe.generate_kwargs({}) == DEFAULT_GENERATE_KWARGS  # nothing set: dglm's defaults
    reference = pipe.generate(PREFIXES, seed=0, steps=3, max_new_tokens=5, min_new_tokens=5, top_p=0.5)
    config = pipe.decoder.model.generation_config
    config.max_new_tokens, config.min_new_tokens, config.top_p = 5, 5, 0.5
    assert pipe.generate_kwargs({})["max_new_tokens"] == 5 and pipe.generate_kwargs({})["top_p"] == 0.5
    assert pipe.generate_kwargs({"max_new_tokens": 3})["max_new_tokens"] == 3  # the call wins
    out = pipe.generate(PREFIXES, seed=0, steps=3)
    assert out.continuations == reference.continuations
    longer = pipe.generate(PREFIXES, seed=0, steps=3, max_new_tokens=8, min_new_tokens=8)  # the call wins
    assert all(len(a[0]) < len(b[0]) for a, b in zip(out.continuations, longer.continuations, strict=True))
