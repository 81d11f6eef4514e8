"""The benchmark: metric definitions on hand-made strings, the baselines' behaviour, and ``dglm bench --quick``."""

from __future__ import annotations

import importlib.util
import json
import math
import tempfile
import time
from pathlib import Path

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
    from dglm.bench.setup import control_targets
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


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory):
    from dglm.bench.run import main

    out = tmp_path_factory.mktemp("bench")
    assert main(["--quick", "--out", str(out), "--plan-temperature", "0.8"]) == 0
    return out, json.loads((out / "bench-quick.json").read_text())


def test_quick_benchmark_runs_every_system_on_both_prompt_sets(quick_result):
    out, result = quick_result
    assert set(result["prompt_sets"]) == {"neutral", "topical"}
    for name, s in result["prompt_sets"].items():
        families = {m["family"] for m in s["systems"].values()}
        assert families == {"plain", "dglm", "dglm-plan-scale", "dglm-guided", "steering", "fudge", "prompting",
                            "best-of-n", "dglm-guided+prompting"}, name
        samples = 8  # 4 prompts x 2 samples in both sets
        for sys_name, m in s["systems"].items():
            assert m["samples"] == samples and m["perplexity"]["mean"] > 1, sys_name
            lo, hi = m["control_success_ci95"]
            assert lo <= m["control_success"] <= hi, sys_name
            assert ("plan_fidelity" in m) == m["family"].startswith("dglm")
        assert ("mauve" in s["systems"]["plain"]) == (name == "topical")  # MAUVE needs reference continuations
        if name == "topical" and importlib.util.find_spec("mauve") is not None:  # a number, not an error record
            for sys_name, m in s["systems"].items():
                assert "error" not in m["mauve"] and 0 < m["mauve"]["mean"] <= 1, (sys_name, m["mauve"])
        bon = [m for m in s["systems"].values() if m["family"] == "best-of-n"]
        matched = [m for m in bon if m["params"]["primary"]]
        assert matched and all(m["params"]["matched_to"] for m in matched)  # N matched to DGLM-guided variants
        assert any(m["params"]["n"] == 3 for m in bon)  # the fixed ceiling (matched too if a variant costs 3x)
        assert s["frontier"]["within_ppl"]["owner"] in families
    assert result["prompt_sets"]["topical"]["reference"].startswith("human topic-switch")
    assert result["steering"]["layer"] in (0, 1) and len(result["steering"]["table"]) == 2  # 2 layers x 1 r
    assert result["peers"]["topic"]["fudge"]["chosen"]["features"] in ("one-hot tokens", "mean decoder input embedding")


def test_quick_benchmark_reports_compositions_runtime_and_plots(quick_result):
    out, result = quick_result
    comps = result["compositions"]
    assert [c["control"] for c in comps] == ["topic('sports') + sentiment.positive()", "toxicity.low() + topic('sports')"]
    for comp in comps:
        assert {r["family"] for r in comp["systems"].values()} == {"plain", "dglm-guided", "steering", "prompting",
                                                                   "dglm-guided+prompting"}
        for row in comp["systems"].values():
            assert len(row["attributes"]) == 2
            assert row["joint"] <= min(row["attributes"].values()) + 1e-9  # both at once is rarer than either
    cells = result["runtime"]["cells"]
    assert {x["system"].split()[0] for x in cells} >= {"plain", "dglm", "dglm-guided", "fudge", "steering", "prompting"}
    assert sorted(result["plots"])[:3] == ["bench-quick_pareto_neutral.png", "bench-quick_pareto_topical.png",
                                           "bench-quick_runtime.png"]
    assert {"bench-quick_task_avoidance.png", "bench-quick_task_style.png", "bench-quick_task_graded.png"} <= \
        set(result["plots"])
    for png in result["plots"]:
        assert (out / png).stat().st_size > 1000
    report = (out / "bench-quick.md").read_text()
    for heading in ("## Who owns the frontier", "### neutral prompts", "### topical prompts", "## Composition:",
                    "## Systems: neutral prompts", "## Runtime", "## Topic-switch reference", "Activation steering"):
        assert heading in report, heading
    assert result["config"]["command"].startswith("dglm bench --quick")
    assert result["sampling"]["plan_temperature"] == 0.8 and "'plan_temperature': 0.8" in report  # for every DGLM system


def test_quick_benchmark_runs_the_six_tasks_with_both_limits_cpu_time_and_owner(quick_result):
    out, result = quick_result
    tasks = result["tasks"]
    assert set(tasks) == {"neutral", "continuation", "avoidance", "style", "graded",
                          "composition: topic('sports') + sentiment.positive()",
                          "composition: toxicity.low() + topic('sports')"}
    for name, t in tasks.items():
        assert set(t["within"]) == {"1.1", "1.25"}, name
        assert t["reference_perplexity"] > 1 and all(v > 0 for v in t["cpu_s"].values()), name
        assert t["within"]["1.25"]["within_ppl"]["owner"] is not None, name
    assert tasks["continuation"]["reference"].startswith("human topic-switch")
    avoid = tasks["avoidance"]
    assert avoid["targets"] == [["topic", "not sports"]] and avoid["requests"]["instruction"] == "Do not write about sports."
    assert {m["family"] for m in avoid["systems"].values()} == {"plain", "dglm", "dglm-guided", "steering", "fudge",
                                                                "prompting", "dglm-guided+prompting"}
    assert avoid["steering"]["table"] and avoid["prompts"] == 4  # layer picked on development prefixes
    style = tasks["style"]
    assert style["control"] == "target('style', 'fortune')" and "prompting few-shot" in style["systems"]
    assert result["evaluators"]["style"]["heldout_accuracy"] > 0.5
    curve = tasks["graded"]["curves"]["dglm"]
    assert [p["strength"] for p in curve] == [0.0, 100.0] and curve[0]["system"] == "plain"
    report = (out / "bench-quick.md").read_text()
    assert "## Tasks: best success within 1.1x and 1.25x" in report and "### Task: avoidance" in report
    assert "Graded control, dglm" in report


def test_quick_benchmark_without_out_writes_a_fresh_temporary_folder(monkeypatch, tmp_path):
    from dglm.bench.output import default_out_dir

    monkeypatch.chdir(tmp_path)
    a, b = default_out_dir(quick=True), default_out_dir(quick=True)
    assert a != b and a.is_dir() and b.is_dir() and not list(a.iterdir())
    assert "results" not in a.parts and Path(tempfile.gettempdir()) in a.parents
    full = default_out_dir(quick=False)  # a full run: a per-run folder under the current directory
    assert full.parent == tmp_path / "dglm-bench" and not full.exists()


def test_bench_out_is_checked_before_any_work(tmp_path, capsys):
    from dglm.bench.output import prepare_out_dir
    from dglm.bench.run import main
    from dglm.io import MARKER

    (tmp_path / "a-file").write_text("x")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    cases = {str(tmp_path / "a-file"): "not a folder", "/dev/full": "not a folder",
             "/proc/dglm-bench-out": "cannot", str(mine): "did not write"}
    for out, why in cases.items():
        t0 = time.perf_counter()
        assert main(["--quick", "--out", out]) == 2
        err = capsys.readouterr().err
        assert "--out" in err and why in err, (out, err)
        assert time.perf_counter() - t0 < 5  # refused before a model is loaded
    assert (mine / "notes.txt").read_text() == "keep" and not (mine / MARKER).exists()
    assert (prepare_out_dir(tmp_path / "new") / MARKER).is_file()
    assert prepare_out_dir(tmp_path / "new") == tmp_path / "new"  # the benchmark's own folder: reused


def test_quick_never_writes_into_published_results(tmp_path, capsys):
    from dglm.bench.output import check_out_dir
    from dglm.bench.run import main

    (tmp_path / "pyproject.toml").write_text("")
    for out in (tmp_path / "docs" / "results", tmp_path / "results" / "bench"):
        with pytest.raises(ValueError, match="--quick .* never writes into"):
            check_out_dir(out, quick=True)
        assert check_out_dir(out, quick=False) == out  # a full run may publish there when told to
    assert main(["--quick", "--out", str(tmp_path / "docs" / "results")]) == 2
    assert "published results" in capsys.readouterr().err


def test_seeds_without_values_is_a_clear_error(capsys):
    from dglm.bench.run import main

    assert main(["--quick", "--seeds"]) == 2
    err = capsys.readouterr().err
    assert "--seeds: got [], needs at least 1 value" in err
    assert main(["--quick", "--tasks"]) == 2
    assert "--tasks" in capsys.readouterr().err


def test_avoidance_success_is_any_topic_but_the_avoided_one():
    from dglm.bench.config import BenchConfig
    from dglm.bench.scoring import control_scores
    from dglm.bench.setup import build_setup

    setup = build_setup(BenchConfig.for_example(tasks=["neutral"], steering_scales=[]))
    texts = ["the team won the match goal", "a song and a film about art"]
    control, joint = control_scores(setup, texts, [("topic", "not sports")])
    assert joint.tolist() == [False, True] and control["topic"]["label"] == "not sports"
    plain, _ = control_scores(setup, texts, [("topic", "sports")])
    assert control["topic"]["rate"] == pytest.approx(1 - plain["topic"]["rate"])


def test_frontier_names_the_owner_within_each_limit():
    from dglm.bench.scoring import frontier

    def system(family, success, ppl, rel):
        return {"family": family, "control_success": success, "perplexity": {"mean": ppl}, "relative_time": rel}

    systems = {"plain": system("plain", 0.05, 20, 1.0), "g1": system("dglm-guided", 0.3, 24, 1.2),
               "g2": system("dglm-guided", 0.7, 40, 1.2), "st": system("steering", 0.5, 22, 1.0),
               "bon": system("best-of-n", 0.6, 21, 8.0)}
    f = frontier(systems, 20.0, 1.25, 1.5)
    assert f["within_ppl"]["owner"] == "best-of-n"  # 0.6 at 21 <= 25, time unlimited
    assert f["within_ppl_and_time"]["owner"] == "steering"  # best-of-8 costs 8x
    assert f["within_ppl_and_time"]["best"]["dglm-guided"]["system"] == "g1"  # g2 is over the perplexity limit
    assert f["pareto"] == ["plain", "bon", "g2"]


def test_targets_file_is_read_and_evaluated(tmp_path):
    from dglm.bench.scoring import check_targets

    path = tmp_path / "targets.json"
    path.write_text(json.dumps([
        {"target": "sports >= 60%", "kind": "best_within", "prompt_set": "neutral", "families": ["dglm-guided"],
         "min_success": 0.6},
        {"target": "default only", "kind": "best_within", "prompt_set": "neutral", "families": ["dglm-guided"],
         "params": {"control_scale": 1.0}, "min_success": 0.6},
        {"target": "owner", "kind": "frontier_owner", "prompt_set": "neutral", "limit": "within_ppl",
         "families": ["dglm-guided"]},
        {"target": "fast", "kind": "runtime", "system_prefix": "dglm-guided", "batch": 16, "new_tokens": 64,
         "max_relative": 1.5}]))
    systems = {"plain": {"family": "plain", "params": {}, "control_success": 0.0, "perplexity": {"mean": 20}},
               "g": {"family": "dglm-guided", "params": {"control_scale": 2.0}, "control_success": 0.65,
                     "perplexity": {"mean": 24}},
               "g2": {"family": "dglm-guided", "params": {"control_scale": 1.0}, "control_success": 0.9,
                      "perplexity": {"mean": 30}}}
    sets = {"neutral": {"systems": systems, "frontier": {"reference_perplexity": 20.0, "ppl_limit": 1.25,
                                                         "within_ppl": {"owner": "steering"}}}}
    runtime = {"cells": [{"system": "dglm-guided strength=20", "batch": 16, "new_tokens": 64, "relative": 1.7}]}
    (sports, default, owner, fast) = check_targets(str(path), sets, runtime)
    assert sports["met"] and sports["detail"] == "g: 0.650"
    assert not default["met"] and default["detail"] == "no system within the perplexity limit"  # g2: ppl 30 > 25
    assert not owner["met"] and owner["detail"] == "owner: steering"
    assert not fast["met"] and fast["detail"] == "1.70x"
    assert check_targets(None, sets, None) == []


def test_bench_options_come_from_the_config_fields():
    import argparse

    from dglm.bench.config import BenchConfig, add_arguments, config_from_args

    parser = add_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--checkpoint", "/ckpt", "--prompts", "3", "--steering-scales", "1", "2",
                              "--prompt-styles", "header", "--fudge-top-k", "64"])
    c = config_from_args(args, "cmd")
    assert (c.checkpoint, c.num_prompts, c.steering_scales, c.prompt_styles, c.fudge_top_k, c.command) == \
        ("/ckpt", 3, [1.0, 2.0], ["header"], 64, "cmd")
    assert c.num_neutral == BenchConfig().num_neutral  # untouched fields keep their defaults
    with pytest.raises(SystemExit):
        parser.parse_args(["--prompt-styles", "poem"])  # choices come from the Literal


def _sweep_system(sigma2: float, fidelity: float, dist3: float) -> dict:
    return {"family": "dglm", "params": {"sigma2": sigma2}, "dist3": dist3,
            "plan_fidelity": {"mean": fidelity, "sem": 0.01}}


def test_sigma2_target_needs_fidelity_down_and_dist3_up_at_every_step():
    from dglm.bench.scoring import sigma2_sweep_target

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
    from dglm.bench.config import BenchConfig
    from dglm.bench.scoring import topic_switch_reference
    from dglm.bench.setup import build_setup

    setup = build_setup(BenchConfig.for_quick(num_prompts=2, num_samples=3, prompt_sets=["topical"],
                                              steering_scales=[], fudge_strengths=[]))
    label, texts = setup.topic_texts
    topical = setup.prompt_sets["topical"]
    result = topic_switch_reference(setup)

    def mean_perplexity(pairs) -> float:  # by hand: full forwards, exp of the mean token NLL, mean over rows
        lm = setup.evaluator_lm
        rows = [full_forward_nll(lm.model, lm.tokenizer, p, c) for p, c in pairs]
        return float(np.mean([math.exp(nll / n) for nll, n in rows]))

    one, two = topical.prompts
    placed = [" " + texts[i].strip() for i in range(6)]  # the target-topic texts in turn, 3 per prompt
    switch = list(zip([one] * 3 + [two] * 3, placed, strict=True))
    assert result["switch"]["mean"] == pytest.approx(mean_perplexity(switch), rel=1e-4)
    closed = [(p.rstrip().rstrip(".,;:!?") + ".", c) for p, c in switch]
    assert result["closed"]["mean"] == pytest.approx(mean_perplexity(closed), rel=1e-4)
    own = list(zip(topical.prompts, topical.references[1][:2], strict=True))
    assert result["own"]["mean"] == pytest.approx(mean_perplexity(own), rel=1e-4)
    assert label == "sports" and result["texts"] == len(texts) == 8
    setup.topic_texts = None  # no topic target: no reference
    assert topic_switch_reference(setup) is None


def _wordnet_installed() -> bool:
    from dglm.data.wordnet import find_wordnet

    try:
        return find_wordnet().is_dir()
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not _wordnet_installed() or importlib.util.find_spec("profanity_check") is None,
                    reason="needs WordNet (Debian wordnet-base) and alt-profanity-check")
def test_toxicity_passages_come_from_a_real_corpus_and_wordnet(tmp_path):
    """The full benchmark's path (not quick mode) for the toxicity probe's passages: corpus, WordNet lexicons,
    labels."""
    from dglm.bench.config import BenchConfig
    from dglm.bench.setup import labelled_passages
    from dglm.data.corpus import Document, build_corpus

    text = "The team won the match in the last minute. The crowd cheered for the players. " * 4
    docs = [Document(f"w:{i}", "wikipedia", f"Title {i}", text, topic="Everyday life", description="Team sport")
            for i in range(12)]
    build_corpus(tmp_path / "c", documents=docs, val_fraction=0.0, test_fraction=0.0)
    config = BenchConfig(corpus=str(tmp_path / "c"), peer_texts_per_class=4)
    texts, labels = labelled_passages(config, "toxicity")
    assert len(texts) == len(labels) > 0 and set(labels) <= {"toxic", "non-toxic"}
