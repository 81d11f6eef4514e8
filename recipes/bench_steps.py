"""Plan quality against the number of diffusion steps and the sampler (issue 19: fewer steps only where quality
holds), on a trained checkpoint and held-out text.

For each sampler and step count, on the same held-out 32-token prefixes of the corpus' test split:

- **fidelity**: cosine between an unguided plan and the embedding of the prefix's true continuation (the
  next 32 tokens), mean +- standard error; the plan's job is to predict that embedding;
- **spread**: mean cosine between two unguided plans of the same prefix (different seeds); a sampler that
  collapses to the mean plan scores high here and loses diversity;
- **guided success**: the share of plans guided by ``--control`` at ``--strength`` that the control's own
  probe classifies as its target (a proxy: the probe guided the sampling), with a 95% Wilson interval;
- **guided fidelity**: cosine between a guided plan and the true continuation (what of the prefix's
  content the guided plan keeps);
- **CPU seconds** per prefix of the guided plan (process time, one thread).

Writes JSON and a markdown table.

    PYTHONPATH=. python recipes/bench_steps.py --corpus cache/corpus --out results/speed-steps   # ~10 min
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

from dglm import DGLM, Controller
from dglm.bench.metrics import plan_fidelity, summarize
from dglm.bench.prompts import held_out_windows
from dglm.bench.report import write_report
from dglm.bench.scoring import wilson
from dglm.data.corpus import load_split


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="mini")
    p.add_argument("--corpus", default="cache/corpus", help="corpus folder with test.jsonl")
    p.add_argument("--prompts", type=int, default=128, help="held-out prefixes")
    p.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50, 100])
    p.add_argument("--samplers", nargs="+", default=["ddpm", "ddim"])
    p.add_argument("--control", default="topic('sports')")
    p.add_argument("--strength", type=float, default=100.0)
    p.add_argument("--out", default="results/speed-steps", help="file stem: writes .json and .md")
    return p.parse_args(argv)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(1)
    pipe = DGLM.from_pretrained(args.checkpoint)
    docs = load_split(args.corpus, "test")
    prefixes, continuations = held_out_windows(docs, pipe.decoder.tokenizer, args.prompts, 32, 32, seed=0)
    truth = pipe.encoder.encode(continuations).float()  # (N, d) raw
    controller = Controller(args.control, pipe, strength=args.strength)
    leaf = next(controller.constraint.resolve(pipe.encoder, pipe.probes).leaves())
    probe, target = leaf.probe, leaf.probe.label_index(leaf.label)
    rows = []
    for sampler in args.samplers:
        for steps in args.steps:
            plans = [pipe.plan(prefixes, steps=steps, sampler=sampler, seed=seed).embeddings.float()
                     for seed in (0, 1)]  # (N, d) each
            t0 = time.process_time()
            guided = controller.plan(prefixes, steps=steps, sampler=sampler, seed=0).embeddings.float()
            cpu_s = (time.process_time() - t0) / len(prefixes)
            hits = int((probe.predict(guided) == target).sum())
            low, high = wilson(hits, len(prefixes))
            row = {"sampler": sampler, "steps": steps,
                   "fidelity": summarize(plan_fidelity(truth, plans[0]).numpy()),
                   "spread": summarize(plan_fidelity(plans[0], plans[1]).numpy()),
                   "guided_success": hits / len(prefixes), "guided_success_ci": [low, high],
                   "guided_fidelity": summarize(plan_fidelity(truth, guided).numpy()),
                   "guided_cpu_s_per_prefix": cpu_s}
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = {"checkpoint": args.checkpoint, "prompts": len(prefixes), "control": args.control,
            "strength": args.strength, "machine": f"{platform.processor() or platform.machine()}, "
            f"{torch.get_num_threads()} torch thread", "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d")}
    write_report({"meta": meta, "rows": rows}, render(meta, rows, argv), Path(args.out).with_suffix(".json"))
    print(render(meta, rows, argv))


def render(meta: dict, rows: list[dict], argv) -> str:
    def pm(s):
        return f"{s['mean']:.3f} +- {s['sem']:.3f}" if not math.isnan(s["sem"]) else f"{s['mean']:.3f}"

    lines = ["# Plan quality against diffusion steps and sampler", "",
             f"- checkpoint `{meta['checkpoint']}`; {meta['prompts']} held-out 32-token prefixes of the corpus' "
             f"test split; control `{meta['control']}` at strength {meta['strength']}",
             f"- machine: {meta['machine']}; torch {meta['torch']}; {meta['date']}",
             "- command: `python recipes/bench_steps.py " + " ".join(argv or []) + "`", "",
             "fidelity = cosine(unguided plan, true continuation's embedding); spread = cosine between two "
             "unguided plans of one prefix (higher = less diverse); guided success = share of guided plans the "
             "control's own probe classifies as the target (a proxy), 95% Wilson interval.", "",
             "| sampler | steps | fidelity | spread | guided success | guided fidelity | guided CPU s / prefix |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["guided_success_ci"]
        lines.append(f"| {r['sampler']} | {r['steps']} | {pm(r['fidelity'])} | {pm(r['spread'])} | "
                     f"{r['guided_success']:.2f} [{lo:.2f}, {hi:.2f}] | {pm(r['guided_fidelity'])} | "
                     f"{r['guided_cpu_s_per_prefix']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
