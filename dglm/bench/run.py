"""``dglm bench``: DGLM against plain decoding and the methods users would pick instead, each at its best.

One call runs every system on the same prompt sets (neutral openers and topical 32-token prefixes of the
corpus' test split), with the same decoder, sampling settings and seeds, scores them with evaluators
independent of the steering probe, times them, and writes ``<name>.json``, ``<name>.md`` and
``<name>_*.png`` into ``--out`` (checked before any work; default a fresh ``./dglm-bench/<UTC time>``, or a
fresh temporary folder with ``--quick``; :mod:`dglm.bench.output`), task by task (``--tasks``,
:mod:`dglm.bench.tasks`):

- plain decoding; DGLM unguided, guided over a strength sweep, with plan guidance and control contrast;
- activation steering (:mod:`dglm.bench.steering`) over multipliers, at the layer a small sweep picks;
- FUDGE (:mod:`dglm.bench.fudge`) over strengths; prompting (a header or an instruction); best-of-N with N
  matched to each DGLM variant's wall time and a fixed ceiling;
- compositions of two controls, DGLM vs activation steering; a runtime table.

The jobs live in their own modules: :mod:`~dglm.bench.config` (options), :mod:`~dglm.bench.setup`,
:mod:`~dglm.bench.systems`, :mod:`~dglm.bench.scoring`, :mod:`~dglm.bench.report`, :mod:`~dglm.bench.plots`.

    dglm bench --quick                                   # tiny random models, a smoke test
    dglm bench --checkpoint mini --targets recipes/bench_targets.json
    dglm bench --checkpoint PATH --device cuda

Example:
    >>> result = run_benchmark(BenchConfig.for_quick())          # doctest: +SKIP
    >>> sorted(result["prompt_sets"])                            # doctest: +SKIP
    ['neutral', 'topical']
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path  # noqa: F401  (the doctest names it)

from dglm.bench.config import BenchConfig, add_arguments, config_from_args
from dglm.bench.output import prepare_out_dir
from dglm.bench.plots import write_plots
from dglm.bench.report import _clean, machine_info, write_markdown
from dglm.bench.scoring import (
    check_targets,
    frontier,
    reference_perplexity,
    score_compositions,
    score_runs,
    success_and_ppl,
    topic_switch_reference,
)
from dglm.bench.setup import build_setup
from dglm.bench.systems import pick_steering_layer, run_compositions, run_systems, runtime_table
from dglm.bench.tasks import avoidance_task, composition_systems, graded, style_task, task_summary
from dglm.pipeline import DGLM

__all__ = ["BenchConfig", "add_arguments", "main", "run_benchmark"]

logger = logging.getLogger(__name__)


def run_benchmark(config: BenchConfig, pipeline: DGLM | None = None) -> dict:
    """Run everything and write ``<out>/<name>.json``, ``<name>.md`` and the plots; return the JSON dict.

    ``pipeline``: benchmark this in-memory pipeline (its probes must resolve ``config.control``) instead of
    loading ``config.checkpoint``.

    Example (a trimmed ``--quick`` run; it takes several seconds, so it is not run as a doctest):
        >>> config = BenchConfig.for_quick(out="bench-out", prompt_sets=["neutral"], num_neutral=2,
        ...                                steering_scales=[], fudge_strengths=[], compositions=[])
        >>> config.checkpoint, config.out, config.name
        ('random:tiny', 'bench-out', 'bench-quick')
        >>> result = run_benchmark(config)                               # doctest: +SKIP
        >>> sorted(result["prompt_sets"]), Path(result["out"], "bench-quick.md").is_file()  # doctest: +SKIP
        (['neutral'], True)
    """
    start = time.perf_counter()
    out = prepare_out_dir(config.out, config.quick)  # checked and created before any work
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    machine = machine_info(config.device)
    setup = build_setup(config, pipeline)
    tasks = set(config.tasks)
    main_sets = {name: p for name, p in setup.prompt_sets.items() if name in config.prompt_sets and (
        (name == "neutral" and tasks & {"neutral", "graded"}) or (name == "topical" and "continuation" in tasks))}
    layer, layer_table = None, []
    if main_sets or "composition" in tasks:
        layer, layer_table = pick_steering_layer(setup, lambda prompts, run: success_and_ppl(setup, prompts, run))
    switch = topic_switch_reference(setup) if "topical" in main_sets else None
    sets, bon_n = {}, None
    for name, prompts in main_sets.items():
        runs = run_systems(setup, prompts, layer)
        systems = score_runs(setup, prompts, runs)
        ref, ref_text = reference_perplexity(name, systems, switch)
        sets[name] = {"prompts": len(prompts.prompts), "samples": prompts.samples * len(config.seeds),
                      "description": prompts.description, "reference": ref_text, "systems": systems,
                      "frontier": frontier(systems, ref, config.ppl_limit, config.time_limit)}
        bon_n = bon_n or next((r.params["n"] for r in runs if r.family == "best-of-n" and r.params["primary"]), None)
    compositions = score_compositions(setup, run_compositions(setup, layer))
    task_results = summarize_tasks(setup, sets, compositions)
    runtime = runtime_table(setup, layer, bon_n) if config.runtime_batch_sizes and config.runtime_new_tokens \
        and main_sets else None
    result = {"config": config.model_dump(mode="json"), "date": date, "machine": machine,
              "evaluators": setup.evaluator_info, "targets_of_control": setup.targets,
              "sampling": setup.pipeline.sampling.model_dump(include={"sampler", "steps", "cfg_scale", "plan_temperature",
                                                                      "sigma2", "strength"}),
              "steering": {"layer": layer, "table": layer_table}, "peers": setup.peers.info,
              "prompt_sets": sets, "tasks": task_results, "compositions": compositions, "runtime": runtime,
              "topic_switch": switch,
              "targets": check_targets(config.targets, sets, runtime), "notes": setup.notes}
    result["out"] = str(out)
    try:
        result["plots"] = write_plots(result, out, config.name)
    except ImportError as e:
        result["plots"] = []
        result["notes"].append(f"plots skipped: {e} (pip install matplotlib)")
    result["total_s"] = time.perf_counter() - start
    with open(out / f"{config.name}.json", "w", encoding="utf-8") as f:
        json.dump(_clean(result), f, indent=1, ensure_ascii=False, allow_nan=False)
    write_markdown(result, out / f"{config.name}.md")
    logger.info("wrote %s/%s.{json,md} and %d plots in %.0f s", out, config.name, len(result["plots"]),
                result["total_s"])
    return result


def summarize_tasks(setup, sets: dict[str, dict], compositions: list[dict]) -> dict[str, dict]:
    """Run the avoidance and style tasks, and summarise every chosen task (:mod:`dglm.bench.tasks`): per task
    its systems, reference perplexity, the frontier within ``strict_ppl_limit`` and ``ppl_limit``, CPU times.

    Example (quick mode, the neutral and graded tasks only, no peers):
        >>> config = BenchConfig.for_example(tasks=["neutral", "graded"], prompt_sets=["neutral"],
        ...                                  prompt_styles=[], guided_prompt_styles=[], bon_extra_n=[])
        >>> from dglm.bench.setup import build_setup
        >>> from dglm.bench.scoring import score_runs
        >>> setup = build_setup(config)
        >>> neutral = setup.prompt_sets["neutral"]
        >>> systems = score_runs(setup, neutral, run_systems(setup, neutral, None))
        >>> out = summarize_tasks(setup, {"neutral": {"systems": systems, "reference": "plain decoding"}}, [])
        >>> sorted(out), sorted(out["graded"]["within"])
        (['graded', 'neutral'], ['1.1', '1.25'])
    """
    c = setup.config
    limits = (c.strict_ppl_limit, c.ppl_limit, c.time_limit)
    out: dict[str, dict] = {}
    for task, set_name in (("neutral", "neutral"), ("continuation", "topical")):
        if task in c.tasks and set_name in sets:
            s = sets[set_name]
            ref = s.get("frontier", {}).get("reference_perplexity") or \
                s["systems"]["plain"].get("perplexity", {}).get("mean")
            out[task] = {"task": task, "prompt_set": set_name, **task_summary(s["systems"], ref, s["reference"], *limits)}
    if "avoidance" in c.tasks:
        out["avoidance"] = avoidance_task(setup)
    if "style" in c.tasks:
        if setup.style_data is None:
            setup.notes.append("style task not run: no style data (see the note above)")
        else:
            out["style"] = style_task(setup)
    if "graded" in c.tasks and "neutral" in sets:
        systems = sets["neutral"]["systems"]
        curve = graded(systems)
        names = {p["system"] for k in ("dglm", "steering") for p in curve.get(k, [])}
        chosen = {n: m for n, m in systems.items() if n in names}
        ref = systems["plain"].get("perplexity", {}).get("mean")
        out["graded"] = {"task": "graded", "curves": curve, "systems": chosen,
                         **task_summary(chosen, ref, "plain decoding of the same prompts", *limits)}
    for comp in compositions:
        systems = composition_systems(comp)
        ref = systems["plain"]["perplexity"]["mean"]
        out[f"composition: {comp['control']}"] = {
            "task": "composition", "control": comp["control"], "targets": comp["targets"], "systems": systems,
            **task_summary(systems, ref, "plain decoding of the same prompts", *limits)}
    return out


def main(args: argparse.Namespace | Sequence[str] | None = None) -> int:
    """Entry point of ``dglm bench`` (``args`` parsed by :func:`add_arguments`) and of ``python -m dglm.bench``
    (``args`` a list of strings, default ``sys.argv[1:]``).

    Example (the command line becomes the config that :func:`run_benchmark` runs; the run is not a doctest):
        >>> args = add_arguments(argparse.ArgumentParser()).parse_args(["--quick", "--num-neutral", "2"])
        >>> config = config_from_args(args, "dglm bench --quick --num-neutral 2")
        >>> config.checkpoint, config.num_neutral, config.command
        ('random:tiny', 2, 'dglm bench --quick --num-neutral 2')
        >>> main(["--quick", "--num-neutral", "2"])                    # doctest: +SKIP
        0
    """
    if not isinstance(args, argparse.Namespace):
        argv = list(sys.argv[1:] if args is None else args)
        parser = add_arguments(argparse.ArgumentParser(prog="dglm bench", description=__doc__.split("\n\n")[0]))
        args = parser.parse_args(argv)
        command = shlex.join(["dglm", "bench", *argv])
    else:
        command = shlex.join(["dglm", *sys.argv[1:]])
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        config = config_from_args(args, command)
        out = prepare_out_dir(config.out, config.quick)  # a bad --out is refused before any model is loaded
        config = config.model_copy(update={"out": str(out)})
    except ValueError as e:
        print(f"dglm bench: error: {e}", file=sys.stderr)
        return 2
    result = run_benchmark(config)
    print(f"wrote {result['out']}/{config.name}.md ({result['total_s']:.0f} s)")
    return 0
