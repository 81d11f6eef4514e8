"""Load check: peak memory and time of large batches and of 8 concurrent callers, on a random pipeline.

Every configuration runs in a fresh Python process, because the peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) only ever grows within a process. The default preset is
``tiny`` (two-layer models of width 32, random weights): the numbers show how memory scales with the
number of rows and with ``batch_size``, not what a real model needs.

Usage:
    OMP_NUM_THREADS=1 python recipes/robustness_load.py                 # the table of docs/results/robustness.md
    OMP_NUM_THREADS=1 python recipes/robustness_load.py --one --prefixes 256 --batch-size 64   # one run, JSON
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

# (prefixes, num_samples, batch_size, threads) of the table.
RUNS = [(1, 1, 256, 1), (256, 1, 256, 1), (256, 1, 64, 1), (256, 1, 16, 1), (256, 8, 256, 1), (256, 8, 64, 1),
        (1, 2048, 64, 1), (32, 1, 256, 8)]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def one(args) -> dict:
    import torch

    from dglm import Controller, FunctionConstraint
    from dglm.presets import random_pipeline

    torch.set_num_threads(1)
    pipe = random_pipeline(args.preset)
    ctl = Controller(FunctionConstraint(lambda x: x[..., 0], name="first_dim_low"), pipe, strength=10.0)
    prefixes = [f"the game {i} was played in the city and the team" if i % 4 else "" for i in range(args.prefixes)]
    kwargs = dict(num_samples=args.num_samples, batch_size=args.batch_size, steps=args.steps,
                  max_new_tokens=args.max_new_tokens, min_new_tokens=args.max_new_tokens)
    ctl.generate(prefixes[:1], seed=0, steps=1, max_new_tokens=1)  # warm-up: lazy imports, first-call caches
    before = peak_rss_mib()
    start = time.perf_counter()
    if args.threads == 1:
        outputs = [ctl.generate(prefixes, seed=0, **kwargs)]
    else:
        outputs = [None] * args.threads
        threads = [threading.Thread(target=lambda i=i: outputs.__setitem__(i, ctl.generate(prefixes, seed=i, **kwargs)))
                   for i in range(args.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    seconds = time.perf_counter() - start
    rows = sum(len(c) for out in outputs for c in out.continuations)
    assert rows == args.threads * args.prefixes * args.num_samples
    return {"preset": args.preset, "prefixes": args.prefixes, "num_samples": args.num_samples,
            "batch_size": args.batch_size, "threads": args.threads, "steps": args.steps,
            "max_new_tokens": args.max_new_tokens, "rows": rows, "seconds": round(seconds, 2),
            "peak_rss_before_mib": round(before, 1), "peak_rss_mib": round(peak_rss_mib(), 1)}


def table(args) -> None:
    print("| prefixes | samples | batch_size | threads | rows | seconds | peak RSS before (MiB) | peak RSS after (MiB) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for prefixes, samples, batch_size, threads in RUNS:
        cmd = [sys.executable, __file__, "--one", "--preset", args.preset, "--prefixes", str(prefixes),
               "--num-samples", str(samples), "--batch-size", str(batch_size), "--threads", str(threads),
               "--steps", str(args.steps), "--max-new-tokens", str(args.max_new_tokens)]
        r = json.loads(subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout.splitlines()[-1])
        print(f"| {prefixes} | {samples} | {batch_size} | {threads} | {r['rows']} | {r['seconds']} | "
              f"{r['peak_rss_before_mib']} | {r['peak_rss_mib']} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--one", action="store_true", help="run one configuration and print JSON")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--prefixes", type=int, default=256)
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args)))
    else:
        table(args)


if __name__ == "__main__":
    main()
