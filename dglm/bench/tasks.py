"""The benchmark's six tasks (``--tasks``): where a prompt is weak and where DGLM must deliver.

- ``neutral``: the control on neutral openers (the ``neutral`` prompt set's systems);
- ``continuation``: the control on topical prefixes, against the human topic-switch reference (``topical``);
- ``avoidance``: ``--avoidance-control`` (``-topic('sports')``) on prefixes of that topic's test documents;
  success = the topic evaluator says any topic but that one; prompting says "Do not write about sports.";
  steering uses the negated vector, FUDGE the negated discriminator;
- ``style``: an attribute words cannot name (:mod:`dglm.bench.style`: fortunes quips), on neutral openers,
  with a probe fitted in one line and an independent proxy evaluator; prompting gets the best description
  of the style we found and a few-shot prompt;
- ``graded``: success against DGLM's strength and steering's r on the neutral openers (from the neutral
  runs): a curve from plain decoding's rate upwards, with intervals;
- ``composition``: two attributes at once (``--compositions``), joint and per attribute.

Every task reports the best system per family within ``strict_ppl_limit`` (1.10) and ``ppl_limit`` (1.25)
times its reference perplexity (plain decoding of the same prompts; for ``continuation`` the human
topic-switch text), with Wilson intervals, the frontier's owner and each system's CPU time.

Example:
    >>> summary = task_summary({"plain": {"family": "plain", "control_success": 0.1, "perplexity": {"mean": 10.0},
    ...                                   "relative_time": 1.0, "cpu_s": 2.0}}, 10.0, "plain decoding", 1.1, 1.25, 1.5)
    >>> sorted(summary["within"]), summary["cpu_s"]
    (['1.1', '1.25'], {'plain': 2.0})
"""

from __future__ import annotations

import dataclasses
import logging
import re

from dglm.bench.baselines import prompt_requests
from dglm.bench.scoring import frontier, score_runs, success_and_ppl
from dglm.bench.setup import NOT, Setup, control_targets
from dglm.bench.systems import pick_steering_layer, run_systems
from dglm.constraints import parse_constraint

logger = logging.getLogger(__name__)


def task_summary(systems: dict[str, dict], ref_ppl: float | None, reference: str, strict: float, limit: float,
                 time_limit: float) -> dict:
    """Per perplexity limit (``strict`` and ``limit``): the frontier (best per family, owner; see
    :func:`dglm.bench.scoring.frontier`); plus each system's CPU seconds."""
    return {"reference_perplexity": ref_ppl, "reference": reference,
            "within": {f"{lim:g}": frontier(systems, ref_ppl, lim, time_limit) for lim in (strict, limit)},
            "cpu_s": {name: m.get("cpu_s") for name, m in systems.items()}}


def derived_setup(setup: Setup, control: str, requests: dict[str, str], styles: list[str]) -> Setup:
    """``setup`` with another control and prompting requests, and only the systems a task compares: plain,
    DGLM (unguided at the checkpoint's sigma^2, guided over the strengths, and guided on the instruction-wrapped
    prompts), steering, FUDGE and prompting in ``styles``; no sigma^2, plan-scale, control-scale or
    best-of-N sweeps.

    Example:
        >>> from dglm.bench.config import BenchConfig
        >>> from dglm.bench.setup import build_setup
        >>> setup = build_setup(BenchConfig.for_example(tasks=["avoidance"]))
        >>> task = derived_setup(setup, "-topic('sports')", {"instruction": "Do not write about sports."},
        ...                      ["instruction"])
        >>> task.targets, task.config.prompt_styles, task.config.bon_extra_n
        ([('topic', 'not sports')], ['instruction'], [])
    """
    pipe = setup.pipeline
    constraint = parse_constraint(control)
    config = setup.config.model_copy(update=dict(
        control=control, sigma2=[], plan_scales=[], guided_plan_scales=[], guided_control_scales=[], bon_n=0,
        bon_extra_n=[], prompt_styles=list(styles)))
    return dataclasses.replace(setup, config=config, constraint=constraint,
                               resolved=constraint.resolve(pipe.encoder, pipe.probes),
                               targets=control_targets(constraint), requests=dict(requests))


def run_task(setup: Setup, name: str, control: str, set_name: str, requests: dict[str, str],
             styles: list[str]) -> dict:
    """One task on its own control and prompt set: steering's layer picked on the development set of the same
    kind, every system run and scored, its reference (plain decoding) and summary.

    Example (the quick avoidance task, no steering or FUDGE):
        >>> from dglm.bench.config import BenchConfig
        >>> from dglm.bench.setup import build_setup
        >>> setup = build_setup(BenchConfig.for_example(tasks=["avoidance"]))
        >>> out = run_task(setup, "avoidance", "-topic('sports')", "avoidance",
        ...                prompt_requests("sports", negated=True), ["instruction"])
        >>> list(out["systems"])  # doctest: +NORMALIZE_WHITESPACE
        ['plain', 'dglm sigma2=0.05', 'dglm-guided strength=100', 'prompting instruction',
         'dglm-guided strength=100 + prompting instruction']
    """
    task = derived_setup(setup, control, requests, styles)
    c = task.config
    prompts = task.prompt_sets[set_name]
    dev = task.dev_sets.get(set_name)
    layer, table = pick_steering_layer(task, lambda p, run: success_and_ppl(task, p, run), dev) \
        if dev is not None else (None, [])
    systems = score_runs(task, prompts, run_systems(task, prompts, layer))
    ref = systems["plain"].get("perplexity", {}).get("mean")
    return {"task": name, "control": control, "targets": task.targets, "prompts": len(prompts.prompts),
            "samples": prompts.samples * len(c.seeds), "description": prompts.description,
            "requests": {s: task.requests.get(s) for s in styles}, "steering": {"layer": layer, "table": table},
            "systems": systems,
            **task_summary(systems, ref, "plain decoding of the same prompts", c.strict_ppl_limit, c.ppl_limit,
                           c.time_limit)}


def avoidance_task(setup: Setup) -> dict:
    """The avoidance task (module docstring)."""
    c = setup.config
    label = dict(control_targets(parse_constraint(c.avoidance_control))).get("topic", "").removeprefix(NOT)
    requests = prompt_requests(label.replace("_", " "), negated=True)
    return run_task(setup, "avoidance", c.avoidance_control, "avoidance", requests, list(c.prompt_styles))


def style_task(setup: Setup) -> dict:
    """The style task (module docstring); prompting: the style's best description and a few-shot prompt."""
    from dglm.bench.style import CONTROL, REQUESTS, few_shot_request

    requests = {**REQUESTS, "few-shot": few_shot_request(setup.style_data["fewshot"][0])}
    return run_task(setup, "style", CONTROL, "neutral", requests, [*setup.config.prompt_styles, "few-shot"])


_BASE_GUIDED = re.compile(r"^dglm-guided strength=[^ ]+$")


def graded(systems: dict[str, dict], plain_name: str = "plain") -> dict:
    """Success against strength: DGLM (plain decoding as strength 0, unguided DGLM at the checkpoint's sigma^2,
    then guided at each strength) and steering (plain decoding as r = 0, then each r), each point with its
    Wilson interval and perplexity; ``monotone``: whether no point falls below the previous one's interval.

    Example:
        >>> def m(family, success, params):
        ...     return {"family": family, "params": params, "control_success": success,
        ...             "control_success_ci95": [success - 0.1, success + 0.1], "perplexity": {"mean": 10.0}}
        >>> g = graded({"plain": m("plain", 0.0, {}), "dglm-guided strength=20": m("dglm-guided", 0.3, {"strength": 20}),
        ...             "dglm-guided strength=100": m("dglm-guided", 0.6, {"strength": 100})})
        >>> [p["strength"] for p in g["dglm"]], g["monotone"]["dglm"]
        ([0.0, 20.0, 100.0], True)
    """
    def point(name, m, x):
        return {"system": name, "strength": float(x), "control_success": m.get("control_success"),
                "ci95": m.get("control_success_ci95"), "perplexity": m.get("perplexity", {}).get("mean")}

    plain = systems[plain_name]
    dglm = [point(plain_name, plain, 0.0)]
    dglm += sorted((point(n, m, m["params"]["strength"]) for n, m in systems.items()
                    if m["family"] == "dglm-guided" and _BASE_GUIDED.match(n)), key=lambda p: p["strength"])
    steer = [point(plain_name, plain, 0.0)] + sorted(
        (point(n, m, m["params"]["scale"]) for n, m in systems.items() if m["family"] == "steering"),
        key=lambda p: p["strength"])

    def monotone(curve):
        return all(b["control_success"] is not None and a["ci95"] is not None
                   and b["control_success"] >= a["ci95"][0] for a, b in zip(curve, curve[1:], strict=False))

    curves = {"dglm": dglm, "steering": steer if len(steer) > 1 else []}
    return {**curves, "monotone": {k: monotone(v) for k, v in curves.items() if v}}


def composition_systems(comp: dict) -> dict[str, dict]:
    """A scored composition's rows as systems (control success = the joint rate) for the frontier.

    Example:
        >>> comp = {"systems": {"plain": {"family": "plain", "params": {}, "joint": 0.1, "joint_ci95": [0, 0.3],
        ...                               "perplexity": 10.0, "relative_time": 1.0, "cpu_s": 1.0,
        ...                               "attributes": {"topic=sports": 0.2, "sentiment=positive": 0.5}}}}
        >>> composition_systems(comp)["plain"]["control_success"]
        0.1
    """
    return {n: {"family": r["family"], "params": r["params"], "control_success": r["joint"],
                "control_success_ci95": r["joint_ci95"], "perplexity": {"mean": r.get("perplexity")},
                "relative_time": r.get("relative_time", 1.0), "cpu_s": r.get("cpu_s"), "attributes": r["attributes"]}
            for n, r in comp["systems"].items()}
