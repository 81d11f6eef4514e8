"""Run ``dglm bench`` task by task into one folder (resumable), then write one summary of every task.

Each group of tasks is its own ``python -m dglm.bench --tasks ... --name bench-<group>`` process, so a
finished group survives a later crash or a deadline; a group whose ``bench-<group>.json`` exists is
skipped. Options after ``--`` go to every run (sizes, sweeps). The summary (``<out>/summary.md``) gathers
the tasks' tables (:func:`dglm.bench.report.task_lines`) and the plots of every run.

Example:
    python recipes/bench_tasks.py --out results/bench-tasks --groups avoidance style "neutral graded" \
        -- --checkpoint mini --num-neutral 24
    python recipes/bench_tasks.py --out results/bench-tasks --summary-only
    python recipes/bench_tasks.py --out results/bench-tasks --rescore   # frontiers again, from the stored runs
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from dglm.bench.output import prepare_out_dir

GROUPS = ["avoidance", "style", "neutral graded", "continuation", "composition"]


def group_name(group: str) -> str:
    """``"neutral graded"`` -> ``"neutral-graded"``."""
    return "-".join(group.split())


def summary(out: Path, groups: list[str]) -> str:
    """The markdown summary of every finished group's tasks."""
    from dglm.bench.report import task_lines

    lines = ["# DGLM benchmark: the six tasks (issue 30)", "",
             f"Produced by `python recipes/bench_tasks.py` into `{out}`; one `dglm bench` run per group of tasks, "
             "each with its own JSON, markdown report and plots (linked below). Commands:", ""]
    merged: dict = {"tasks": {}, "prompt_sets": {}}
    config = None
    for group in groups:
        path = out / f"bench-{group_name(group)}.json"
        if not path.is_file():
            lines.append(f"- {group}: **not run** (no {path.name})")
            continue
        result = json.loads(path.read_text(encoding="utf-8"))
        config = config or result["config"]
        merged["tasks"].update(result.get("tasks") or {})
        merged["prompt_sets"].update(result.get("prompt_sets") or {})
        lines.append(f"- {group}: `{result['config']['command']}` ({result['total_s'] / 60:.0f} min; "
                     f"[report](bench-{group_name(group)}.md); plots: "
                     + ", ".join(f"[{p}]({p})" for p in result.get("plots", [])) + ")")
    lines.append("")
    if config is not None:
        merged["config"] = config
        lines += task_lines(merged)
    return "\n".join(lines) + "\n"


def rescore(path: Path) -> None:
    """Recompute every frontier of a finished group's result from its stored systems, with the current
    :func:`dglm.bench.scoring.frontier` (nothing is generated or scored again), and rewrite its JSON and report."""
    from dglm.bench.report import write_markdown
    from dglm.bench.scoring import frontier
    from dglm.bench.tasks import task_summary
    from dglm.io import write_output

    result = json.loads(path.read_text(encoding="utf-8"))
    c = result["config"]
    for t in (result.get("tasks") or {}).values():
        if "within" not in t:
            continue
        systems = t.get("systems") or result["prompt_sets"][t["prompt_set"]]["systems"]  # neutral: its set's
        t.update(task_summary(systems, t["reference_perplexity"], t["reference"], c["strict_ppl_limit"],
                              c["ppl_limit"], c["time_limit"]))
    for ps in (result.get("prompt_sets") or {}).values():
        if ps.get("frontier"):
            f = ps["frontier"]
            ps["frontier"] = frontier(ps["systems"], f["reference_perplexity"], f["ppl_limit"], f["time_limit"])
    write_output(path, json.dumps(result, indent=2) + "\n", overwrite=True)
    write_markdown(result, path.with_suffix(".md"))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the folder of every run and the summary")
    parser.add_argument("--groups", nargs="+", default=GROUPS, help="groups of tasks, one run each, in order")
    parser.add_argument("--summary-only", action="store_true", help="only (re)write the summary")
    parser.add_argument("--rescore", action="store_true",
                        help="recompute the finished groups' frontiers from their stored runs, then the summary")
    args = parser.parse_args(argv)
    out = prepare_out_dir(args.out)  # refused here, before any run, if it is not the benchmark's to write
    for group in args.groups if args.rescore else []:
        if (out / f"bench-{group_name(group)}.json").is_file():
            rescore(out / f"bench-{group_name(group)}.json")
    for group in [] if args.summary_only or args.rescore else args.groups:
        name = group_name(group)
        if (out / f"bench-{name}.json").is_file():
            print(f"{group}: done already ({out / f'bench-{name}.json'})")
            continue
        command = [sys.executable, "-m", "dglm.bench", "--tasks", *group.split(), "--name", f"bench-{name}",
                   "--out", str(out), *extra]
        print("running:", shlex.join(command), flush=True)
        status = subprocess.call(command)
        if status != 0:
            print(f"{group}: failed with status {status}; continuing with the next group", flush=True)
    (out / "summary.md").write_text(summary(out, args.groups), encoding="utf-8")
    print(f"wrote {out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
