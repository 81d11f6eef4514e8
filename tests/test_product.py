"""The shipped product path: the packaged ``mini`` checkpoint with its packaged models, offline, through the
public API, as a user runs it after README.md's install command. Marked ``assets`` (CI installs the models
and runs these; see docs/testing.md)."""

from __future__ import annotations

import re

import pytest

from dglm import DGLM, Controller

pytestmark = pytest.mark.assets

# Openers that lead nowhere in particular: unguided, the decoder rarely turns them to sport.
OPENERS = ["The weather this morning", "She opened the letter and", "In the old house on the hill",
           "The report published yesterday", "My grandmother always said", "After dinner we"]
# The evaluator: whether a continuation uses a sports word. A keyword rate, independent of the topic probe
# that steers (a linear probe on sentence embeddings), and readable in one line.
SPORTS_WORDS = re.compile(
    r"\b(sports?|games?|match(es)?|teams?|players?|coach(es)?|season|league|scor(e|es|ed|ing)|goals?|wins?|won|"
    r"champions?(hip)?|tournaments?|football|soccer|basketball|baseball|tennis|cricket|rugby|hockey|golf|"
    r"olympics?|athletes?|stadium|fans?|cup|victory|defeat|ball|races?|racing|medals?|club|fixtures?)\b",
    re.IGNORECASE)


# The behavioural check's settings: the checkpoint's default strength and decoding, few diffusion steps and
# tokens to fit CI's budget. At seed 0 the rates were 0/18 unguided and 7/18 guided (torch 2.13, CPU).
NUM_SAMPLES, STEPS, NEW_TOKENS = 3, 10, 16
MARGIN = 0.2  # at least 4 of the 18 continuations more


@pytest.fixture(scope="module")
def mini():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")  # no model hub: everything comes from installed packages
        yield DGLM.from_pretrained("mini")


def sports_share(texts: list[str]) -> float:
    return sum(bool(SPORTS_WORDS.search(t)) for t in texts) / len(texts)


def test_packaged_checkpoint_loads_with_its_decoder_adapter(mini):
    """The shipped `mini` checkpoint: encoder, decoder + LoRA adapter, probes; it plans and writes text."""
    assert mini.decoder.has_adapter and set(mini.probes.names) >= {"topic", "sentiment", "toxicity"}
    assert mini.encoder.fitted and mini.encoder.dim == 384 and mini.decoder.hidden_size == 576
    out = Controller("topic('sports')", mini).generate(["The match last night"], 2, seed=0, steps=5,
                                                      max_new_tokens=6, plan_scale=2.0)
    assert len(out.continuations[0]) == 2 and all(t.strip() for t in out.continuations[0])
    assert out.plans.shape == (1, 2, 384)


def test_topic_guidance_raises_the_share_of_sports_text(mini):
    """`topic('sports')` through Controller, at a fixed seed, on neutral openers: more continuations use sports
    words than unguided continuations of the same openers and noise do, by a margin."""
    kwargs = dict(num_samples=NUM_SAMPLES, seed=0, steps=STEPS, max_new_tokens=NEW_TOKENS)
    plain = Controller(None, mini).generate(OPENERS, **kwargs)
    guided = Controller("topic('sports')", mini).generate(OPENERS, **kwargs)
    flat = [[t for row in out.continuations for t in row] for out in (plain, guided)]
    rate_plain, rate_guided = map(sports_share, flat)
    assert rate_guided >= rate_plain + MARGIN, (rate_plain, rate_guided, flat)
