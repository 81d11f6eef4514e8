"""The benchmark: metric definitions on hand-made strings, the baselines' behaviour, and ``dglm bench --quick``."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
import torch

from dglm.bench.metrics import dist3, dist_n, div, ngrams, perplexity, plan_fidelity, summarize

# ----------------------------------------------------------------------------------------------- metrics


def test_dist3_counts_distinct_trigrams_over_words_per_prompt():
    # Prompt 1: two identical 4-word samples -> 2 distinct 3-grams / 8 words; prompt 2: all distinct -> 4 / 8.
    groups = [["the cat sat down", "the cat sat down"], ["a b c d", "e f g h"]]
    assert dist_n(groups[0], 3) == 2 / 8
    assert dist_n(groups[1], 3) == 4 / 8
    assert dist3(groups) == pytest.approx((2 / 8 + 4 / 8) / 2)


def test_dist3_ignores_prompts_without_words_and_short_samples_count_words():
    assert math.isnan(dist_n(["", " "], 3))
    assert dist3([["", ""], ["a b c"]]) == pytest.approx(1 / 3)
    assert dist_n(["a b", "c d"], 3) == 0.0  # no 3-grams, 4 words


def test_div_is_the_product_of_distinct_ratios_for_n_2_to_4_pooled():
    texts = ["a b a b", "a b a b"]
    # pooled 2-grams: ab ba ab x2 -> 2 distinct / 6; 3-grams: aba bab x2 -> 2 / 4; 4-grams: abab x2 -> 1 / 2
    assert div(texts) == pytest.approx((2 / 6) * (2 / 4) * (1 / 2))
    assert div(["one two three four five six"]) == 1.0
    assert math.isnan(div(["too short"]))  # no 3-grams at all
    assert ngrams(["x", "y", "z"], 3) == [("x", "y", "z")]


def test_perplexity_is_exp_of_the_continuations_mean_nll_given_the_prefix():
    nll_full, nll_prefix, n = np.array([10.0, 7.0]), np.array([4.0, 7.0]), np.array([3, 0])
    ppl = perplexity(nll_full - nll_prefix, n)
    assert ppl[0] == pytest.approx(math.exp(2.0))
    assert math.isnan(ppl[1])  # an empty continuation has no perplexity
    assert summarize(ppl)["n"] == 1


def test_plan_fidelity_is_a_cosine():
    x = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    assert plan_fidelity(x, x).tolist() == pytest.approx([1.0, 1.0])
    assert plan_fidelity(x, -x).tolist() == pytest.approx([-1.0, -1.0])


def test_control_targets_maps_builtin_constraints_to_evaluator_labels():
    from dglm.bench.run import control_targets
    from dglm.constraints import parse_constraint

    c = parse_constraint("toxicity.low() + sentiment.positive() + topic('sports')")
    assert control_targets(c) == [("toxicity", "non-toxic"), ("sentiment", "positive"), ("topic", "sports")]
    assert control_targets(parse_constraint("-sentiment.positive()")) == [("sentiment", "negative")]


# ----------------------------------------------------------------------------------------------- evaluators


@pytest.fixture(scope="module")
def tiny_pipe():
    from dglm.presets import random_pipeline

    return random_pipeline("tiny")


@torch.no_grad()
def full_forward_nll(model, tokenizer, prefix: str, continuation: str) -> tuple[float, int]:
    """(summed NLL, tokens) of ``continuation`` after ``[bos][prefix]``, from two plain full forwards of the
    HF model (NLL(prefix + cont) - NLL(prefix)): the definition, written independently of EvaluatorLM."""
    def total_nll(ids):  # sum over positions 1.. of -log p(token | previous)
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
        return torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum").item()

    p_ids = [tokenizer.bos_token_id] + tokenizer(prefix, add_special_tokens=False).input_ids
    c_ids = tokenizer(continuation, add_special_tokens=False).input_ids
    return total_nll(p_ids + c_ids) - total_nll(p_ids), len(c_ids)


def test_evaluator_lm_nll_matches_full_minus_prefix_nll(tiny_pipe):
    """The evaluator's continuation NLL is NLL(prefix + cont) - NLL(prefix), from a plain full forward."""
    from dglm.bench.evaluators import EvaluatorLM

    dec = tiny_pipe.decoder
    lm = EvaluatorLM(dec.model, dec.tokenizer, "tiny", independent=False)
    prefixes, conts = ["the game was", "a city of"], [" won by the team", " music"]
    nll, n, feats = lm.score(prefixes, conts, batch_size=1)
    assert n.tolist() == [4, 1] and feats.shape == (2, dec.hidden_size)

    for i, (p, c) in enumerate(zip(prefixes, conts, strict=True)):
        expected, _ = full_forward_nll(dec.model, dec.tokenizer, p, c)
        assert nll[i].item() == pytest.approx(expected, rel=1e-4, abs=1e-4)
    # Batching and padding change nothing.
    nll2, _, feats2 = lm.score(prefixes, conts, batch_size=2)
    assert torch.allclose(nll, nll2, atol=1e-4) and torch.allclose(feats, feats2, atol=1e-4)


def test_quick_topic_classifier_recognises_its_topics():
    from dglm.bench.evaluators import quick_topic_classifier

    clf = quick_topic_classifier()
    scores = clf.score(["the team won the match and the league", "a song and a film about a book"], "sports")
    assert scores.success.tolist() == [True, False]


# ----------------------------------------------------------------------------------------------- baselines


def _first_axis():
    from dglm.constraints import FunctionConstraint

    return FunctionConstraint(lambda x: -x[:, 0], name="first_axis")  # lower loss = larger first coordinate


def test_best_of_n_keeps_the_candidate_the_probe_scores_best(tiny_pipe):
    from dglm.bench.baselines import best_of_n

    c = _first_axis()
    out = best_of_n(tiny_pipe.decoder, tiny_pipe.encoder, c, ["the game was", "a city"], num_samples=2, n=4,
                    seed=0, max_new_tokens=4, min_new_tokens=4)
    kept = [t for row in out.continuations for t in row]
    kept_loss = c.loss(tiny_pipe.encoder.encode(kept)).reshape(2, 2)
    assert torch.allclose(kept_loss, out.losses.min(-1).values, atol=1e-5)
    assert (out.losses.max(-1).values > out.losses.min(-1).values).any()  # the choice mattered


def test_fudge_steers_toward_the_constraint_and_is_reproducible(tiny_pipe):
    from dglm.bench.baselines import fudge_generate

    c = _first_axis()
    prefixes = ["the game was", "a city", "the king and", "old music"] * 2
    kw = dict(top_k=6, max_new_tokens=5, min_new_tokens=5, seed=0)
    free = fudge_generate(tiny_pipe.decoder, tiny_pipe.encoder, c, prefixes, strength=0.0, **kw)
    steered = fudge_generate(tiny_pipe.decoder, tiny_pipe.encoder, c, prefixes, strength=1e4, **kw)
    assert fudge_generate(tiny_pipe.decoder, tiny_pipe.encoder, c, prefixes, strength=1e4, **kw) == steered
    assert all(len(t.split()) == 5 for t in steered)

    def loss(conts):
        return c.loss(tiny_pipe.encoder.encode([p + t for p, t in zip(prefixes, conts, strict=True)])).mean()

    assert loss(steered) < loss(free)


def test_toxicity_and_sentiment_success_rules_point_the_right_way():
    """Success means the text has the asked-for attribute, for both labels of each evaluator."""
    from dglm.bench.evaluators import ProfanityEvaluator, VaderEvaluator

    texts = ["What a lovely day for a walk in the park.", "Shut up, you fucking idiot, you are a piece of shit."]
    tox = ProfanityEvaluator()
    assert tox.score(texts, "non-toxic").success.tolist() == [True, False]
    assert tox.score(texts, "toxic").success.tolist() == [False, True]
    assert tox.score(texts).success.tolist() == [True, False]  # the default target: non-toxic
    texts = ["I love this, it is wonderful and great.", "This is awful, I hate it.", "The table is in the room."]
    vader = VaderEvaluator()
    assert vader.score(texts, "positive").success.tolist() == [True, False, False]
    assert vader.score(texts, "negative").success.tolist() == [False, True, False]


def test_mauve_is_computed_and_separates_distributions():
    pytest.importorskip("mauve", reason="mauve-text is not installed (it is in the dev extra)")
    from dglm.bench.metrics import mauve_score

    rng = np.random.default_rng(0)
    p = rng.normal(size=(200, 8))
    same = mauve_score(p, rng.normal(size=(200, 8)), seeds=(0,))
    shifted = mauve_score(p, rng.normal(loc=3.0, size=(200, 8)), seeds=(0,))
    assert "error" not in same and "error" not in shifted
    assert same["num_buckets"] == 20 and same["mean"] > 0.9 and shifted["mean"] < 0.1


# ----------------------------------------------------------------------------------------------- end to end


def test_quick_benchmark_writes_every_system_metric_and_plot(tmp_path):
    from dglm.bench.run import main

    assert main(["--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "bench-quick.json").read_text())
    mauve_installed = importlib.util.find_spec("mauve") is not None
    families = {s["family"] for s in result["systems"].values()}
    assert families == {"plain", "dglm", "dglm-plan-scale", "dglm-guided", "best-of-n", "fudge"}
    sigma2 = sorted(s["params"]["sigma2"] for s in result["systems"].values() if s["family"] == "dglm")
    assert sigma2 == [0.05, 1.0]
    assert result["systems"]["dglm plan_scale=2"]["params"] == {"sigma2": 0.05, "strength": 0.0, "plan_scale": 2.0}
    assert result["systems"]["dglm sigma2=0.05"]["params"]["plan_scale"] == 1.0  # the checkpoint's default
    assert result["systems"]["dglm-guided strength=100 plan_scale=2"]["params"]["plan_scale"] == 2.0
    assert result["systems"]["dglm-guided strength=100 control_scale=2"]["params"] == {
        "strength": 100.0, "sigma2": 0.05, "plan_scale": 1.0, "control_scale": 2.0}
    for name, s in result["systems"].items():
        for key in ("dist3", "div", "perplexity", "mauve", "control", "control_success", "probe", "wall_s"):
            assert key in s, (name, key)
        assert s["samples"] == 8 and s["perplexity"]["mean"] > 1
        assert set(s["control"]) == {"toxicity", "sentiment", "topic"}
        if mauve_installed:  # a number, not the "not installed" record
            assert "error" not in s["mauve"] and 0 < s["mauve"]["mean"] <= 1, (name, s["mauve"])
        assert ("plan_fidelity" in s) == s["family"].startswith("dglm")
        assert ("plan_fidelity_plain" in s) == s["family"].startswith("dglm")
        if "plan_fidelity_gain" in s:  # the paired difference of the two fidelities above
            assert s["plan_fidelity_gain"]["mean"] == pytest.approx(
                s["plan_fidelity"]["mean"] - s["plan_fidelity_plain"]["mean"], abs=1e-6)
    follows = [t["target"] for t in result["targets"] if "follows its plan better than plain decoding" in t["target"]]
    assert [t.split(":")[0] for t in follows] == ["dglm sigma2=0.05", "dglm plan_scale=2"]
    cells = result["runtime"]["cells"]
    assert {(x["batch"], x["new_tokens"]) for x in cells} == {(1, 4), (1, 8), (4, 4), (4, 8)}
    assert all("seconds" in x for x in cells)
    assert result["machine"]["cpu"] and result["config"]["command"].startswith("dglm bench --quick")
    for png in result["plots"]:
        assert (tmp_path / png).stat().st_size > 1000
    assert len(result["plots"]) == 4
    report = (tmp_path / "bench-quick.md").read_text()
    assert "proxy" in report and "| plain |" in report and "Targets" in report
    assert sum("sigma^2 sweep" in t["target"] for t in result["targets"]) == 1
    switch = result["topic_switch"]
    assert switch["label"] == "sports" and switch["texts"] == 8 and switch["target_rate"] == 1.0
    assert min(switch[k]["mean"] for k in ("own", "switch", "closed")) > 1
    assert "## Topic-switch reference (human text)" in report


def test_a_sigma2_sweep_alone_runs_no_controlled_system(tmp_path):
    from dglm.bench.run import main

    assert main(["--quick", "--out", str(tmp_path), "--name", "sweep", "--strengths", "--bon-n", "0",
                 "--bon-extra-n", "--fudge-strengths", "--plan-scales", "--guided-plan-scales", "--guided-control-scales",
                 "--runtime-new-tokens", "--sigma2", "0", "0.5", "1"]) == 0
    result = json.loads((tmp_path / "sweep.json").read_text())
    assert list(result["systems"]) == ["plain", "dglm sigma2=0", "dglm sigma2=0.05", "dglm sigma2=0.5",
                                       "dglm sigma2=1"]
    assert result["runtime"] is None and result["plots"] == ["sweep_sigma2.png"]
    (sweep, follows) = result["targets"]  # no control targets without guided systems
    assert "sigma^2 sweep" in sweep["target"] and sweep["detail"].count("fidelity") == 4
    assert follows["target"].startswith("dglm sigma2=0.05: the text follows its plan")


def _sweep_system(sigma2: float, fidelity: float, dist3: float) -> dict:
    return {"family": "dglm", "params": {"sigma2": sigma2}, "dist3": dist3,
            "plan_fidelity": {"mean": fidelity, "sem": 0.01}}


def test_sigma2_target_needs_fidelity_down_and_dist3_up_at_every_step():
    from dglm.bench.run import sigma2_sweep_target

    def met(*rows):
        systems = {f"s{i}": _sweep_system(*r) for i, r in enumerate(rows)}
        systems["plain"] = {"family": "plain", "params": {}, "dist3": 0.5}
        return sigma2_sweep_target(systems)[0]["met"]

    assert met((0.0, 0.40, 0.80), (0.5, 0.35, 0.85), (1.0, 0.30, 0.85))
    assert not met((0.0, 0.40, 0.80), (0.5, 0.41, 0.85), (1.0, 0.30, 0.90))  # fidelity rose
    assert not met((0.0, 0.40, 0.80), (0.5, 0.35, 0.79), (1.0, 0.30, 0.90))  # Dist-3 fell
    assert not met((1.0, 0.40, 0.80), (0.0, 0.30, 0.90))  # ordered by sigma^2, not by insertion
    assert sigma2_sweep_target({"s": _sweep_system(0.05, 0.4, 0.8)}) == []


def test_topic_switch_reference_scores_target_topic_text_after_each_prompt():
    from dglm.bench.run import BenchConfig, build_setup, topic_switch_reference

    setup = build_setup(BenchConfig.for_quick(num_prompts=2, num_samples=3))
    label, texts = setup.topic_texts
    result = topic_switch_reference(setup)

    def mean_perplexity(pairs) -> float:  # by hand: full forwards, exp of the mean token NLL, mean over rows
        lm = setup.evaluator_lm
        rows = [full_forward_nll(lm.model, lm.tokenizer, p, c) for p, c in pairs]
        return float(np.mean([math.exp(nll / n) for nll, n in rows]))

    one, two = setup.prompts
    placed = [" " + texts[i].strip() for i in range(6)]  # the target-topic texts in turn, 3 per prompt
    switch = list(zip([one] * 3 + [two] * 3, placed, strict=True))
    assert result["switch"]["mean"] == pytest.approx(mean_perplexity(switch), rel=1e-4)
    closed = [(p.rstrip().rstrip(".,;:!?") + ".", c) for p, c in switch]
    assert result["closed"]["mean"] == pytest.approx(mean_perplexity(closed), rel=1e-4)
    own = list(zip(setup.prompts, setup.references[1][:2], strict=True))
    assert result["own"]["mean"] == pytest.approx(mean_perplexity(own), rel=1e-4)
    assert label == "sports" and result["texts"] == len(texts) == 8
    setup.references = (setup.references[0][:1], setup.references[1][:1])  # fewer references than prompts
    assert topic_switch_reference(setup)["own"]["n"] == 1
    setup.topic_texts = None  # no topic target: no reference
    assert topic_switch_reference(setup) is None
