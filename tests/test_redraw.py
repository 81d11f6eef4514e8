"""``max_nll``: continuations the decoder's own base LM finds unlikely are drawn again from the same plan."""

from __future__ import annotations

import pytest

from dglm.presets import random_pipeline

PREFIXES = ["the game was", "a new song", "in the old house"]
KW = dict(steps=2, seed=0, max_new_tokens=4, min_new_tokens=4)


@pytest.fixture(scope="module")
def pipe():
    return random_pipeline("tiny")


def nll(pipe, texts):
    rows = [p for p, group in zip(PREFIXES, texts, strict=True) for _ in group]
    return pipe.decoder.text_nll(rows, [t for group in texts for t in group])


def test_a_bound_no_continuation_exceeds_changes_nothing(pipe):
    first = pipe.generate(PREFIXES, 2, **KW).continuations
    assert pipe.generate(PREFIXES, 2, max_nll=50.0, **KW).continuations == first


def test_continuations_above_the_bound_are_redrawn_and_the_likeliest_kept(pipe):
    first = pipe.generate(PREFIXES, 2, **KW).continuations
    # a random decoder over 512 tokens gives about log(512) = 6.2 nats a token: every row is above 1
    redrawn = pipe.generate(PREFIXES, 2, max_nll=1.0, **KW).continuations
    assert redrawn != first
    before, after = nll(pipe, first), nll(pipe, redrawn)
    assert (after <= before + 1e-5).all() and (after < before).any()
    assert pipe.generate(PREFIXES, 2, max_nll=1.0, **KW).continuations == redrawn  # seeded redraws repeat


def test_redraws_work_with_plan_guidance_on_a_subset_of_rows(pipe):
    out = pipe.generate(PREFIXES, 2, max_nll=1.0, plan_scale=2.0, **KW)
    assert [len(group) for group in out.continuations] == [2, 2, 2]


def test_greedy_decoding_is_not_redrawn(pipe):
    greedy = dict(KW, do_sample=False)
    assert pipe.generate(PREFIXES, max_nll=1.0, **greedy).continuations == \
        pipe.generate(PREFIXES, **greedy).continuations


def test_a_bad_bound_is_refused_by_name(pipe):
    with pytest.raises(ValueError, match=r"max_nll=0: Input should be greater than 0"):
        pipe.generate(PREFIXES, max_nll=0, **KW)


def test_text_nll_needs_pairs(pipe):
    with pytest.raises(ValueError, match="must pair up"):
        pipe.decoder.text_nll(["a"], ["b", "c"])
