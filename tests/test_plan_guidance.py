"""Plan guidance: the decoder-side contrast of a plan's soft tokens with a null plan's."""

import pytest
import torch
from transformers import RepetitionPenaltyLogitsProcessor

from dglm.plan_guidance import PairedPlanGuidance, PlanGuidance
from dglm.presets import random_pipeline

PREFIXES = ["the game was", "a river of water in the city today"]  # different lengths: left padding
FAST = dict(steps=4, max_new_tokens=6, min_new_tokens=6)


@pytest.fixture(scope="module")
def pipe():
    return random_pipeline("tiny")


class Recording(PlanGuidance):
    """Keeps each step's null-branch log-probs (solved from the output) and the tokens so far, to check them
    against full forwards."""

    def __call__(self, input_ids, scores):
        out = super().__call__(input_ids, scores)
        null = (out.float() - self.scale * scores.float().log_softmax(-1)) / (1 - self.scale)
        self.steps.append((input_ids.clone(), null))
        return out


def test_null_branch_matches_a_full_forward_at_every_step(pipe):
    dec = pipe.decoder
    ids = dec.tokenize(PREFIXES)
    soft, null = torch.randn(2, 4, dec.hidden_size), torch.randn(2, 4, dec.hidden_size)
    embeds, mask, _ = dec.embed(ids, soft)
    guide = Recording(dec.model, *dec.embed(ids, null)[:2], scale=3.0)
    guide.steps = []
    dec.model.generate(inputs_embeds=embeds, attention_mask=mask, logits_processor=[guide], max_new_tokens=5,
                       min_new_tokens=5, do_sample=False, pad_token_id=dec.pad_token_id)
    assert len(guide.steps) == 5
    for generated, null_logp in guide.steps:  # the cached null branch == the null prompt + tokens, from scratch
        full, full_mask, _ = dec.embed(ids, null, generated.tolist())
        position = (full_mask.cumsum(-1) - 1).clamp_min(0)
        with torch.no_grad():
            logits = dec.model(inputs_embeds=full, attention_mask=full_mask, position_ids=position).logits
        finite = torch.isfinite(null_logp)  # tokens the guided call masked (EOS before min_new_tokens) are -inf
        assert finite.float().mean() > 0.99
        assert torch.allclose(logits[:, -1].float().log_softmax(-1)[finite], null_logp[finite], atol=1e-4)


def test_a_null_plan_equal_to_the_plan_changes_nothing(pipe):
    """Passed to the decoder as a logits processor (attached to the LM for the call by Decoder.generate)."""
    dec = pipe.decoder
    soft = torch.randn(2, 4, dec.hidden_size)
    kw = dict(max_new_tokens=6, min_new_tokens=6, do_sample=True, top_p=0.9, repetition_penalty=1.3)
    plain = dec.generate(PREFIXES, soft, seed=3, **kw)

    def guided(null):
        guide = PairedPlanGuidance(null, 4.0, repetition_penalty=1.3)
        texts = dec.generate(PREFIXES, soft, seed=3, logits_processor=[guide], **kw)
        assert guide.forwards == 6  # paired: one forward per token
        return texts

    assert guided(soft.clone()) == plain
    assert guided(torch.randn_like(soft)) != plain


def test_the_repetition_penalty_applies_to_both_branches_alike(pipe):
    dec = pipe.decoder
    ids = dec.tokenize(PREFIXES)
    embeds, mask, _ = dec.embed(ids, torch.randn(2, 4, dec.hidden_size))
    kw = dict(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=12, min_new_tokens=12, do_sample=False,
              pad_token_id=dec.pad_token_id)

    def greedy(**guide):  # the plan contrasted with itself: identity only if both branches get the penalty
        processors = [RepetitionPenaltyLogitsProcessor(1.2)]
        processors += [PlanGuidance(dec.model, embeds, mask, scale=4.0, **guide)] if guide else []
        return dec.model.generate(**kw, logits_processor=processors).tolist()

    plain = greedy()
    assert greedy(repetition_penalty=1.2) == plain
    assert greedy(repetition_penalty=1.0) != plain  # the null branch unpenalised: w weights the penalty


def test_pipeline_plan_scale_is_seeded_and_changes_the_text(pipe):
    a = pipe.generate(PREFIXES, num_samples=2, seed=1, plan_scale=3.0, **FAST)
    b = pipe.generate(PREFIXES, num_samples=2, seed=1, plan_scale=3.0, **FAST)
    c = pipe.generate(PREFIXES, num_samples=2, seed=1, **FAST)  # the default, 1 = off
    assert a.continuations == b.continuations and torch.equal(a.plans, c.plans)
    assert a.continuations != c.continuations
    assert pipe.null_prompts(4, seed=0).shape == (4, 4, pipe.decoder.hidden_size)


@pytest.mark.parametrize("bad", [0.5, float("nan"), 11.0, True, "2"])
def test_bad_plan_scale_is_refused_by_name(pipe, bad):
    with pytest.raises(ValueError, match="plan_scale="):
        pipe.generate(PREFIXES, seed=0, plan_scale=bad, **FAST)


def test_paired_guidance_refuses_null_prompts_of_another_shape():
    with pytest.raises(ValueError, match=r"null_soft must have shape \(batch, k, hidden\), got \(4, 32\)"):
        PairedPlanGuidance(torch.zeros(4, 32), 2.0)


# ----------------------------------------------------------------------------------------------- control contrast


def test_control_contrast_changes_guided_rows_only_and_is_seeded(pipe):
    from dglm import Controller
    from dglm.constraints import near

    ctl = Controller(near("old music on the radio"), pipe, strength=50)
    kw = dict(num_samples=2, seed=1, constraints=[None, "near('old music on the radio')"], repetition_penalty=1.2,
              **FAST)
    off = ctl.generate(PREFIXES, **kw)
    a = ctl.generate(PREFIXES, control_scale=4.0, **kw)
    b = ctl.generate(PREFIXES, control_scale=4.0, **kw)
    assert a.continuations == b.continuations and torch.equal(a.plans, off.plans)  # the guided plans are kept
    assert a.continuations[0] == off.continuations[0]  # unguided row: its contrast plan is itself
    assert a.continuations[1] != off.continuations[1]
    unguided = dict(kw, constraints=[None, None])  # no guided row: no contrast at all
    assert ctl.generate(PREFIXES, control_scale=4.0, **unguided).continuations == \
        ctl.generate(PREFIXES, **unguided).continuations


def test_decode_contrasts_against_a_given_plan(pipe):
    plan = pipe.plan(PREFIXES, 2, steps=4, seed=0)
    kw = dict(seed=3, max_new_tokens=6, min_new_tokens=6, repetition_penalty=1.2)
    same = pipe.decode(plan, control_scale=4.0, contrast=plan, **kw)
    assert same.continuations == pipe.decode(plan, **kw).continuations
    other = pipe.plan(PREFIXES, 2, steps=4, seed=1)
    assert pipe.decode(plan, control_scale=4.0, contrast=other, **kw).continuations != same.continuations
    with pytest.raises(ValueError, match="contrast must be a plan of the same rows"):
        pipe.decode(plan, control_scale=2.0, contrast=pipe.plan(PREFIXES, 1, steps=4, seed=0), **kw)


def test_control_scale_is_checked_by_name_and_excludes_plan_scale(pipe):
    from dglm import Controller

    ctl = Controller("near('a song')", pipe)
    with pytest.raises(ValueError, match="control_scale=0.5: Input should be greater than or equal to 1"):
        ctl.generate(PREFIXES, control_scale=0.5, **FAST)
    with pytest.raises(ValueError, match="control_scale=2 and plan_scale=3: use one decoder-side contrast"):
        ctl.generate(PREFIXES, control_scale=2, plan_scale=3, **FAST)


def _both(dec, guide_kind, scale=2.5, penalty=1.3, **kw):
    """Generate (greedy unless ``kw`` says otherwise) with the two-forward reference or the paired processor;
    (sequences, scores)."""
    ids = dec.tokenize(PREFIXES)
    soft, null = torch.randn(2, 4, dec.hidden_size), torch.randn(2, 4, dec.hidden_size)
    embeds, mask, _ = dec.embed(ids, soft)
    null_embeds, null_mask, _ = dec.embed(ids, null)
    first = RepetitionPenaltyLogitsProcessor(penalty)
    args = dict(dict(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=6, min_new_tokens=6, do_sample=False,
                     pad_token_id=dec.pad_token_id, output_scores=True, return_dict_in_generate=True), **kw)
    if guide_kind == "reference":
        guide = PlanGuidance(dec.model, null_embeds, null_mask, scale=scale, repetition_penalty=penalty)
        out = dec.model.generate(logits_processor=[first, guide], **args)
    else:
        guide = PairedPlanGuidance(null, scale=scale, repetition_penalty=penalty)
        with guide.attached(dec.model):
            out = dec.model.generate(logits_processor=[first, guide], **args)
        assert guide.forwards == 6  # one (doubled) forward per new token: the prompt, then 5 tokens
        assert guide.shared_positions == embeds.shape[1] - 4  # the prefix ran once, for both halves
    return out.sequences, torch.stack(out.scores)


@pytest.mark.parametrize("extra", [{}, {"num_return_sequences": 2, "do_sample": True, "top_k": 5}])
def test_paired_branches_give_the_two_forward_scores(pipe, extra):
    torch.manual_seed(0)
    ref_seq, ref_scores = _both(pipe.decoder, "reference", **extra)
    torch.manual_seed(0)
    seq, scores = _both(pipe.decoder, "paired", **extra)
    assert torch.equal(seq, ref_seq)
    finite = torch.isfinite(ref_scores)
    assert torch.equal(finite, torch.isfinite(scores))
    assert torch.allclose(scores[finite], ref_scores[finite], atol=1e-4)


def test_paired_guidance_leaves_the_model_as_it_was(pipe):
    dec = pipe.decoder
    guide = PairedPlanGuidance(torch.zeros(1, 3, dec.hidden_size), scale=2.0)
    with guide.attached(dec.model):
        pass
    base = dec.model.get_base_model() if hasattr(dec.model, "get_base_model") else dec.model
    assert not base._forward_hooks and not base._forward_pre_hooks
    with pytest.raises(RuntimeError, match="saw no paired forward"):
        guide(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 5))
