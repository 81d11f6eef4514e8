"""Scoring the benchmark's generations, and what the scores say: metrics per system with 95% intervals, the
topic-switch reference, the control-vs-perplexity frontier, the compositions, and targets read from a file.

Example:
    >>> [round(x, 4) for x in wilson(3, 10)]      # 95% Wilson interval of 3 successes in 10
    [0.1078, 0.6032]
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch

from dglm.bench.metrics import dist3, div, mauve_score, perplexity, plan_fidelity, summarize
from dglm.bench.setup import PromptSet, Setup
from dglm.bench.systems import SystemRun, cost

logger = logging.getLogger(__name__)

Z95 = 1.959964


def wilson(successes: float, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a binomial rate (``(nan, nan)`` for n = 0).

    Example:
        >>> [round(x, 3) for x in wilson(0, 20)], [round(x, 3) for x in wilson(20, 20)], wilson(0, 0)
        ([0.0, 0.161], [0.839, 1.0], (nan, nan))
    """
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + Z95 ** 2 / (2 * n)) / (1 + Z95 ** 2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / (1 + Z95 ** 2 / n)
    return centre - half, centre + half


def control_scores(setup: Setup, texts: list[str], targets: Sequence[tuple[str, str]]) -> tuple[dict, np.ndarray | None]:
    """Every evaluator's rate on ``texts`` (target labels where the control names one) and the joint success
    (every target met) per text, or None when no target has an evaluator.

    Example (the quick topic evaluator on two texts, the control ``topic('sports')``):
        >>> from dglm.bench.config import BenchConfig
        >>> from dglm.bench.setup import build_setup
        >>> config = BenchConfig.for_example()
        >>> setup = build_setup(config)
        >>> control, joint = control_scores(setup, ["the team won the match", "a song"], setup.targets)
        >>> control["topic"]["label"], control["topic"]["is_target"], joint.tolist()
        ('sports', True, [True, False])
    """
    from dglm.bench.setup import NOT

    target_labels = dict(targets)
    control, joint = {}, np.ones(len(texts), dtype=bool)
    for name, ev in setup.evaluators.items():
        label = target_labels.get(name) or ev.default_label
        scores = ev.score(texts, label.removeprefix(NOT))
        if label.startswith(NOT):  # a negated class: success is any other class
            scores = type(scores)(1.0 - np.asarray(scores.values), ~np.asarray(scores.success, dtype=bool),
                                  f"1 - {scores.value_name}")
        control[name] = {"label": label, "is_target": name in target_labels, "rate": float(np.mean(scores.success)),
                         "value_name": scores.value_name, "mean_value": float(np.mean(scores.values))}
        if name == "topic" and "sports" in ev.labels:
            control[name]["sports_rate"] = float(np.mean(ev.score(texts, "sports").success))
        if name in target_labels:
            joint &= np.asarray(scores.success, dtype=bool)
    scored = any(name in setup.evaluators for name, _ in targets)
    return control, joint if scored else None


def success_and_ppl(setup: Setup, prompts: PromptSet, run: SystemRun) -> tuple[float | None, float | None]:
    """Control success and mean evaluator perplexity of a run (for the steering layer sweep).

    Example:
        >>> from dglm.bench.systems import Factory, run_system
        >>> from dglm.bench.config import BenchConfig
        >>> from dglm.bench.setup import build_setup
        >>> config = BenchConfig.for_example()
        >>> setup = build_setup(config)
        >>> neutral = setup.prompt_sets["neutral"]
        >>> success, ppl = success_and_ppl(setup, neutral, run_system(setup, neutral, "plain", "plain", {},
        ...                                                           Factory(setup).plain()))
        >>> 0 <= success <= 1, ppl > 1
        (True, True)
    """
    flat = [t for g in run.continuations for t in g]
    _, joint = control_scores(setup, flat, setup.targets)
    ppl = None
    if setup.evaluator_lm is not None:
        # a run over the first prompts only (the layer sweep) pairs with those
        nll, n, _ = setup.evaluator_lm.score([p for p, g in zip(prompts.prompts, run.continuations, strict=False)
                                              for _ in g], flat)
        ppl = summarize(perplexity(nll.numpy(), n.numpy()))["mean"]
    return (float(joint.mean()) if joint is not None else None), ppl


def score_runs(setup: Setup, prompts: PromptSet, runs: Sequence[SystemRun]) -> dict[str, dict]:
    """Metrics of every system on one prompt set (see :mod:`dglm.bench.metrics`), with 95% intervals of
    control success (Wilson) and mean perplexity (1.96 standard errors; samples of a prompt counted apart).

    Example (plain decoding and unguided DGLM on the quick neutral openers):
        >>> from dglm.bench.systems import Factory, run_system
        >>> from dglm.bench.config import BenchConfig
        >>> from dglm.bench.setup import build_setup
        >>> config = BenchConfig.for_example()
        >>> setup = build_setup(config)
        >>> neutral, make = setup.prompt_sets["neutral"], Factory(setup)
        >>> runs = [run_system(setup, neutral, "plain", "plain", {}, make.plain()),
        ...         run_system(setup, neutral, "dglm", "dglm", {"sigma2": 1.0}, make.dglm(1.0))]
        >>> scores = score_runs(setup, neutral, runs)
        >>> plain, dglm = scores["plain"], scores["dglm"]
        >>> plain["samples"], plain["relative_wall_time"], dglm["plan_fidelity"]["n"]
        (4, 1.0, 4)
        >>> low, high = dglm["control_success_ci95"]
        >>> low <= dglm["control_success"] <= high, "plan_fidelity" in plain
        (True, False)
    """
    c, pipe = setup.config, setup.pipeline
    lm = setup.evaluator_lm
    ref_features = None
    if lm is not None and prompts.references is not None and c.mauve_seeds:
        _, _, ref_features = lm.score(*prompts.references)
    plain_emb = None  # (P * S, d): plain decoding's continuations, aligned with every run's plans row by row
    out = {}
    for run in runs:
        t0 = time.perf_counter()
        flat = [t for g in run.continuations for t in g]
        flat_prefixes = [p for p, g in zip(prompts.prompts, run.continuations, strict=True) for _ in g]
        m: dict = {"family": run.family, "params": run.params, "samples": len(flat),
                   "wall_s": run.wall_s, "relative_wall_time": run.wall_s / runs[0].wall_s,
                   "cpu_s": run.cpu_s, "relative_cpu_time": run.cpu_s / runs[0].cpu_s,
                   "relative_time": cost(run, c.device) / cost(runs[0], c.device),
                   "seconds_per_sample": run.wall_s / len(flat), "timings": run.timings,
                   "empty_continuations": sum(not t.strip() for t in flat),
                   "mean_words": float(np.mean([len(t.split()) for t in flat])),
                   "dist3": dist3(run.continuations), "div": div(flat)}
        if lm is not None:
            nll, n_tokens, feats = lm.score(flat_prefixes, flat)
            m["perplexity"] = summarize(perplexity(nll.numpy(), n_tokens.numpy()))
            p = m["perplexity"]
            p["ci95"] = [p["mean"] - Z95 * p["sem"], p["mean"] + Z95 * p["sem"]] if p["n"] > 1 else None
            if ref_features is not None:
                m["mauve"] = mauve_score(feats.numpy(), ref_features.numpy(), c.mauve_seeds)
        with torch.no_grad():
            emb = pipe.encoder.encode(flat).cpu()
            if run.family == "plain":
                plain_emb = emb
            loss = setup.resolved.loss(emb).float()
        m["probe"] = {"mean_loss": float(loss.mean()), "mean_p": float((-loss).exp().mean()),
                      "success": float((loss < math.log(2)).float().mean())}
        if run.plans is not None:
            plans = run.plans.reshape(len(flat), -1)
            m["plan_fidelity"] = summarize(plan_fidelity(emb, plans).numpy())
            if len(prompts.prompts) > 1:  # another prompt's plan: what the cosine is without following the plan
                m["plan_fidelity_shuffled"] = summarize(plan_fidelity(emb, plans.roll(len(flat) // len(
                    prompts.prompts), 0)).numpy())
            if plain_emb is not None and len(plain_emb) == len(plans):
                plain_fid = plan_fidelity(plain_emb, plans)
                m["plan_fidelity_plain"] = summarize(plain_fid.numpy())
                m["plan_fidelity_gain"] = summarize((plan_fidelity(emb, plans) - plain_fid).numpy())
        m["control"], joint = control_scores(setup, flat, setup.targets)
        m["control_success"] = float(joint.mean()) if joint is not None else None
        m["control_success_ci95"] = list(wilson(float(joint.sum()), len(joint))) if joint is not None else None
        m["examples"] = [{"prefix": prompts.prompts[i], "continuations": run.continuations[i]}
                         for i in range(min(3, len(prompts.prompts)))]
        out[run.name] = m
        logger.info("scored %-40s in %.1f s: success %s", run.name, time.perf_counter() - t0, m["control_success"])
    return out


def topic_switch_reference(setup: Setup) -> dict | None:
    """What switching topic costs in perplexity when a human writes the text: the evaluator LM's perplexity
    of the topical prompts' own held-out continuations, and of human text of the target topic placed after the
    same prefixes (the set's samples per prompt, texts in turn), once as is (the prefix's sentence cut off)
    and once after a full stop that closes it. None without a topic target or a topical set.

    Example (quick mode: 8 synthetic sports texts after 2 topical prefixes, 2 samples each):
        >>> from dglm.bench.config import BenchConfig
        >>> from dglm.bench.setup import build_setup
        >>> config = BenchConfig.for_example()
        >>> setup = build_setup(config)
        >>> ref = topic_switch_reference(setup)
        >>> ref["label"], ref["texts"], ref["own"]["n"], ref["switch"]["n"], ref["closed"]["mean"] > 1
        ('sports', 8, 2, 4, True)
    """
    prompts = setup.prompt_sets.get("topical")
    if setup.topic_texts is None or prompts is None or setup.evaluator_lm is None:
        return None
    label, texts = setup.topic_texts
    prefixes = [p for p in prompts.prompts for _ in range(prompts.samples)]
    placed = [" " + texts[i % len(texts)].strip() for i in range(len(prefixes))]
    closed = [p.rstrip().rstrip(".,;:!?") + "." for p in prefixes]
    own = prompts.references[1][:len(prompts.prompts)]  # the prompts' own continuations (fewer if num_references is)

    def ppl(prefixes: list[str], continuations: list[str]) -> dict:
        nll, n_tokens, _ = setup.evaluator_lm.score(prefixes, continuations)
        return summarize(perplexity(nll.numpy(), n_tokens.numpy()))

    return {"label": label, "texts": len(texts), "own": ppl(prompts.prompts[:len(own)], own),
            "switch": ppl(prefixes, placed), "closed": ppl(closed, placed),
            "target_rate": float(np.mean(setup.evaluators["topic"].score(texts, label).success))}


def reference_perplexity(name: str, systems: dict[str, dict], switch: dict | None) -> tuple[float | None, str]:
    """The perplexity a set's limit is relative to: plain decoding's for neutral openers; for topical prefixes
    the human topic-switch text after a closed sentence (plain decoding's when there is none).

    Example:
        >>> systems = {"plain": {"perplexity": {"mean": 20.0}}}
        >>> reference_perplexity("neutral", systems, {"closed": {"mean": 35.0}})
        (20.0, 'plain decoding of the same prompts')
        >>> reference_perplexity("topical", systems, {"closed": {"mean": 35.0}})[0]
        35.0
    """
    plain = systems["plain"].get("perplexity", {}).get("mean")
    if name == "topical" and switch is not None:
        return switch["closed"]["mean"], "human topic-switch text after the prefix (closed sentence)"
    return plain, "plain decoding of the same prompts"


def frontier(systems: dict[str, dict], ref_ppl: float | None, ppl_limit: float, time_limit: float) -> dict:
    """Who owns the control-vs-perplexity frontier: per family, the best control success among its systems
    within ``ppl_limit * ref_ppl`` perplexity (and, second, also within ``time_limit`` x plain decoding's
    time, ``relative_time``: CPU time on a CPU, wall time on an accelerator); the owner is the family with the highest; and the Pareto-optimal systems (no other system
    has both higher success and lower perplexity).

    Example:
        >>> s = {"plain": {"family": "plain", "control_success": 0.1, "perplexity": {"mean": 10}, "relative_time": 1},
        ...      "a": {"family": "x", "control_success": 0.5, "perplexity": {"mean": 12}, "relative_time": 3},
        ...      "b": {"family": "y", "control_success": 0.4, "perplexity": {"mean": 11}, "relative_time": 1}}
        >>> f = frontier(s, 10, 1.25, 1.5)
        >>> f["within_ppl"]["owner"], f["within_ppl_and_time"]["owner"], f["pareto"]
        ('x', 'y', ['plain', 'b', 'a'])
        >>> s["c"] = {"family": "z", "control_success": 0.5, "perplexity": {"mean": 11.5}, "relative_time": 1}
        >>> frontier(s, 10, 1.25, 1.5)["within_ppl"]["owner"]  # a tie in success: the lower perplexity owns it
        'z'
    """
    def ppl(m):
        return m.get("perplexity", {}).get("mean")

    def best(limit_time: bool) -> dict:
        per_family: dict[str, dict] = {}
        for name, m in systems.items():
            if m.get("control_success") is None or ppl(m) is None or ref_ppl is None:
                continue
            if ppl(m) > ppl_limit * ref_ppl or (limit_time and m["relative_time"] > time_limit):
                continue
            cur = per_family.get(m["family"])
            if cur is None or (m["control_success"], -ppl(m)) > (cur["control_success"], -cur["perplexity"]):
                per_family[m["family"]] = {"system": name, "control_success": m["control_success"],
                                           "ci95": m.get("control_success_ci95"), "perplexity": ppl(m),
                                           "relative_time": m["relative_time"]}
        # the highest success; at equal success the lower perplexity (it dominates), as within a family
        owner = max(per_family, key=lambda f: (per_family[f]["control_success"], -per_family[f]["perplexity"]),
                    default=None)
        return {"owner": owner, "best": dict(sorted(per_family.items(), key=lambda kv: -kv[1]["control_success"]))}

    pts = [(n, m["control_success"], ppl(m)) for n, m in systems.items()
           if m.get("control_success") is not None and ppl(m) is not None]
    pareto = [n for n, s, p in sorted(pts, key=lambda t: t[2])
              if not any(s2 >= s and p2 <= p and (s2, p2) != (s, p) for _, s2, p2 in pts)]
    return {"reference_perplexity": ref_ppl, "ppl_limit": ppl_limit, "time_limit": time_limit,
            "within_ppl": best(False), "within_ppl_and_time": best(True), "pareto": pareto}


def score_compositions(setup: Setup, compositions: list[dict]) -> list[dict]:
    """Each composed control: per system, each target attribute's success rate and the joint rate, with
    perplexity and 95% intervals.

    Example:
        >>> from dglm.bench.systems import run_compositions
        >>> from dglm.bench.config import BenchConfig
        >>> from dglm.bench.setup import build_setup
        >>> config = BenchConfig.for_example(compositions=["topic('sports') + sentiment.positive()"])
        >>> setup = build_setup(config)
        >>> [comp] = score_compositions(setup, run_compositions(setup, layer=None))
        >>> comp["targets"], list(comp["systems"])  # doctest: +NORMALIZE_WHITESPACE
        ([('topic', 'sports'), ('sentiment', 'positive')], ['plain', 'dglm-guided strength=100',
          'prompting instruction', 'dglm-guided strength=100 + prompting instruction'])
        >>> list(comp["systems"]["plain"]["attributes"]), 0 <= comp["systems"]["plain"]["joint"] <= 1
        (['topic=sports', 'sentiment=positive'], True)
    """
    prompts = setup.prompt_sets.get("neutral")
    out = []
    for comp in compositions:
        rows = {}
        for run in comp["runs"]:
            flat = [t for g in run.continuations for t in g]
            control, joint = control_scores(setup, flat, comp["targets"])
            row = {"family": run.family, "params": run.params, "seconds_per_sample": run.wall_s / len(flat),
                   "cpu_s": run.cpu_s,
                   "relative_time": cost(run, setup.config.device) / cost(comp["runs"][0], setup.config.device),
                   "attributes": {f"{n}={label}": control[n]["rate"] for n, label in comp["targets"]
                                  if n in control},
                   "joint": float(joint.mean()) if joint is not None else None,
                   "joint_ci95": list(wilson(float(joint.sum()), len(joint))) if joint is not None else None}
            if setup.evaluator_lm is not None:
                nll, n, _ = setup.evaluator_lm.score([p for p, g in zip(prompts.prompts, run.continuations,
                                                                        strict=True) for _ in g], flat)
                row["perplexity"] = summarize(perplexity(nll.numpy(), n.numpy()))["mean"]
            row["example"] = {"prefix": prompts.prompts[0], "continuation": run.continuations[0][0]}
            rows[run.name] = row
        out.append({"control": comp["control"], "targets": comp["targets"], "systems": rows})
    return out


def sigma2_sweep(systems: dict[str, dict]) -> list[tuple[float, dict]]:
    """The unguided sigma^2 sweep: ``(sigma2, system)`` of every ``dglm`` system, by sigma^2.

    Example:
        >>> systems = {"plain": {"family": "plain", "params": {}},
        ...            "dglm sigma2=1": {"family": "dglm", "params": {"sigma2": 1.0}},
        ...            "dglm sigma2=0.5": {"family": "dglm", "params": {"sigma2": 0.5}}}
        >>> [s2 for s2, _ in sigma2_sweep(systems)]
        [0.5, 1.0]
    """
    return sorted(((m["params"]["sigma2"], m) for m in systems.values() if m["family"] == "dglm"),
                  key=lambda pair: pair[0])


def sigma2_sweep_target(systems: dict[str, dict]) -> list[dict]:
    """The noise knob (the reference's Table 2): over the unguided sigma^2 sweep, plan fidelity must not rise
    and Dist-3 must not fall from one sigma^2 to the next. Empty when the sweep has fewer than two levels.

    Example:
        >>> def system(sigma2, fidelity, dist3):
        ...     return {"family": "dglm", "params": {"sigma2": sigma2}, "dist3": dist3,
        ...             "plan_fidelity": {"mean": fidelity, "sem": 0.01}}
        >>> [t["met"] for t in sigma2_sweep_target({"a": system(0.1, 0.8, 0.5), "b": system(1.0, 0.6, 0.7)})]
        [True]
        >>> sigma2_sweep_target({"a": system(0.1, 0.8, 0.5)})
        []
    """
    sweep = sigma2_sweep(systems)
    if len(sweep) < 2:
        return []
    met = all(b["plan_fidelity"]["mean"] <= a["plan_fidelity"]["mean"] and b["dist3"] >= a["dist3"]
              for (_, a), (_, b) in pairwise(sweep))
    detail = "; ".join(f"sigma2 {s2:g}: fidelity {m['plan_fidelity']['mean']:.3f} +- {m['plan_fidelity']['sem']:.3f}, "
                       f"Dist-3 {m['dist3']:.3f}" for s2, m in sweep)
    return [{"target": "sigma^2 sweep: plan fidelity falls and Dist-3 rises monotonically with sigma^2",
             "met": bool(met), "detail": detail}]


def check_targets(path: str | None, sets: dict[str, dict], runtime: dict | None) -> list[dict]:
    """Targets from a JSON file (reported, never asserted): a list of ``{"target": text, "kind": ...}``.

    - ``"best_within"``: ``prompt_set``, ``families`` (list), ``min_success``, optional ``params`` (values the
      systems' params must have): the best control success of those systems within ``ppl_limit`` (default
      the run's) x the set's reference perplexity reaches ``min_success``;
    - ``"frontier_owner"``: ``prompt_set``, ``limit`` (``"within_ppl"`` or ``"within_ppl_and_time"``),
      ``families``: the frontier's owner under that limit is one of them;
    - ``"runtime"``: ``system_prefix``, ``batch``, ``new_tokens``, ``max_relative``: that runtime cell.

    Without a file, the built-in checks only (the sigma^2 sweep when it ran).

    Example:
        >>> import tempfile
        >>> sets = {"neutral": {"systems": {}, "frontier": {"reference_perplexity": 20.0, "ppl_limit": 1.25,
        ...                                                 "within_ppl": {"owner": "dglm-guided"}}}}
        >>> targets = [{"target": "DGLM owns the frontier", "kind": "frontier_owner", "prompt_set": "neutral",
        ...             "limit": "within_ppl", "families": ["dglm-guided"]}]
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = Path(d, "targets.json").write_text(json.dumps(targets))
        ...     check_targets(str(Path(d, "targets.json")), sets, runtime=None)
        [{'target': 'DGLM owns the frontier', 'met': True, 'detail': 'owner: dglm-guided'}]
    """
    out = []
    for name, s in sets.items():
        out += [{**t, "target": f"{name}: {t['target']}"} for t in sigma2_sweep_target(s["systems"])]
    if not path:
        return out
    for t in json.loads(Path(path).read_text(encoding="utf-8")):
        if t["kind"] == "best_within":
            s = sets.get(t["prompt_set"])
            if s is None:
                out.append({"target": t["target"], "met": False, "detail": "prompt set not run"})
                continue
            ref, limit = s["frontier"]["reference_perplexity"], t.get("ppl_limit", s["frontier"]["ppl_limit"])
            want = t.get("params", {})
            ok = [(m["control_success"], n) for n, m in s["systems"].items() if m["family"] in t["families"]
                  and all(m["params"].get(k) == v for k, v in want.items())
                  and m.get("control_success") is not None and ref is not None
                  and m.get("perplexity", {}).get("mean", math.inf) <= limit * ref]
            best = max(ok, default=None)
            out.append({"target": t["target"], "met": bool(best and best[0] >= t["min_success"]),
                        "detail": f"{best[1]}: {best[0]:.3f}" if best else "no system within the perplexity limit"})
        elif t["kind"] == "frontier_owner":
            s = sets.get(t["prompt_set"])
            owner = s["frontier"][t["limit"]]["owner"] if s else None
            out.append({"target": t["target"], "met": owner in t["families"],
                        "detail": f"owner: {owner}" if s else "prompt set not run"})
        elif t["kind"] == "runtime":
            cells = [x for x in (runtime or {}).get("cells", []) if x["batch"] == t["batch"] and
                     x["new_tokens"] == t["new_tokens"] and x["system"].startswith(t["system_prefix"]) and "relative" in x]
            out.append({"target": t["target"], "met": bool(cells and cells[0]["relative"] <= t["max_relative"]),
                        "detail": f"{cells[0]['relative']:.2f}x" if cells else "cell not measured"})
        else:
            raise ValueError(f"target kind={t['kind']!r} in {path}; accepted: best_within, frontier_owner, runtime")
    return out
