"""``dglm bench``: DGLM against plain decoding and the methods users would pick instead, each at its best.

One call runs every system on the same prompt sets (neutral openers and topical 32-token prefixes of the
corpus' test split), with the same decoder, sampling settings and seeds, scores them with evaluators
independent of the steering probe, times them, and writes ``<name>.json``, ``<name>.md`` and
``<name>_*.png`` into ``--out`` (default ``results``; ``--quick`` writes to a scratch folder):

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

from dglm.bench.config import BenchConfig, add_arguments, config_from_args
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
        >>> config.checkpoint, config.out_dir, config.name
        ('random:tiny', PosixPath('bench-out'), 'bench-quick')
        >>> result = run_benchmark(config)                               # doctest: +SKIP
        >>> sorted(result["prompt_sets"]), (config.out_dir / "bench-quick.md").is_file()  # doctest: +SKIP
        (['neutral'], True)
    """
    start = time.perf_counter()
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    machine = machine_info(config.device)
    setup = build_setup(config, pipeline)
    layer, layer_table = pick_steering_layer(setup, lambda prompts, run: success_and_ppl(setup, prompts, run))
    switch = topic_switch_reference(setup)
    sets, bon_n = {}, None
    for name, prompts in setup.prompt_sets.items():
        runs = run_systems(setup, prompts, layer)
        systems = score_runs(setup, prompts, runs)
        ref, ref_text = reference_perplexity(name, systems, switch)
        sets[name] = {"prompts": len(prompts.prompts), "samples": prompts.samples * len(config.seeds),
                      "description": prompts.description, "reference": ref_text, "systems": systems,
                      "frontier": frontier(systems, ref, config.ppl_limit, config.time_limit)}
        bon_n = bon_n or next((r.params["n"] for r in runs if r.family == "best-of-n" and r.params["primary"]), None)
    compositions = score_compositions(setup, run_compositions(setup, layer))
    runtime = runtime_table(setup, layer, bon_n) if config.runtime_batch_sizes and config.runtime_new_tokens else None
    result = {"config": config.model_dump(mode="json"), "date": date, "machine": machine,
              "evaluators": setup.evaluator_info, "targets_of_control": setup.targets,
              "sampling": setup.pipeline.sampling.model_dump(include={"sampler", "steps", "cfg_scale", "plan_temperature",
                                                                      "sigma2", "strength"}),
              "steering": {"layer": layer, "table": layer_table}, "peers": setup.peers.info,
              "prompt_sets": sets, "compositions": compositions, "runtime": runtime, "topic_switch": switch,
              "targets": check_targets(config.targets, sets, runtime), "notes": setup.notes}
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
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
    config = config_from_args(args, command)
    result = run_benchmark(config)
    print(f"wrote {config.out_dir / config.name}.md ({result['total_s']:.0f} s)")
    return 0
