"""Speed of DGLM against plain decoding on this machine, measured side by side (issue 19's CPU acceptance).

Systems, each writing exactly ``--new-tokens`` tokens per row (eos suppressed; top-p 0.9, repetition
penalty 1.2, dglm's defaults) for the same ``--batch`` prefixes of about 32 tokens:

- ``plain``: the decoder alone (``pipe.decoder.generate`` without soft tokens);
- ``soft decode``: the decoder with the plan's soft tokens and the checkpoint's adapter, decode only (the
  plan is made once, untimed): the "adapter tax" (the adapter merged for the call);
- ``soft decode (LoRA unmerged)`` / ``soft decode (no adapter)`` (only when named in ``--systems``): the same
  inputs through the LM's own ``generate`` with the LoRA layers unmerged (dglm's behaviour before the
  merge) or switched off, to separate the adapter's cost from the soft tokens' extra prompt positions;
- ``dglm``: plan (encode, diffusion, prompt) + decode, unguided;
- ``dglm-guided``: the same with constraint guidance (``topic("sports")`` at strength 20);
- ``plan guidance``: ``dglm`` with ``plan_scale=2``;
- ``control contrast``: ``dglm-guided`` with ``control_scale=2``.

Every repeat runs every system once, in a rotated order (the machine is shared: the systems see the same
load); a system's ratio is its time over plain decoding's in the same repeat, reported as the median over
repeats, with the medians of the seconds and of the plan's stage timings. Process CPU time is measured
too (one thread: the work done, not the waiting): on a machine shared with other jobs the wall-time
ratios carry the load's swings, the CPU-time ratios much less. One torch thread by default: on
a machine shared with other jobs, two OpenMP threads per process spin-wait on each other (10x slower
here). Writes JSON (``--out``) and
prints a markdown table.

    PYTHONPATH=. python recipes/bench_speed.py --repeats 5 --out results/speed.json  # ~1 h on 2 shared cores
    PYTHONPATH=. python recipes/bench_speed.py --checkpoint random:tiny --repeats 2 --new-tokens 8 --batch 4
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

PREFIXES = [
    "The committee met on Tuesday to discuss the new budget for the city's schools, and after several hours "
    "of debate the members agreed that",
    "When the first settlers arrived in the valley, they found a river that flooded every spring and a forest "
    "so dense that",
    "The recipe calls for two cups of flour, a pinch of salt and a little sugar, but the secret of the bread "
    "is",
    "In the second half of the match the home team changed its formation, moved the captain into midfield and",
    "Scientists studying the coral reefs off the northern coast have noticed that the water temperature in "
    "summer",
    "The old library on the corner of the square had been closed for years when a group of students decided "
    "to",
    "Her first novel, written during a long winter in a small apartment, tells the story of a family that",
    "The company reported higher profits for the third quarter, driven mostly by strong sales of its new "
    "phone and",
    "After the storm had passed, the farmers walked through their fields to count the damage and found that",
    "The museum's new exhibition brings together paintings from three centuries, including several works "
    "that",
    "Doctors recommend at least thirty minutes of exercise a day, but a recent study of office workers "
    "suggests that",
    "The band recorded its latest album in a converted barn, where the sound of the wooden walls gave the "
    "songs",
    "On the morning of the election, long lines formed outside the polling stations in the capital as "
    "voters",
    "The engineers tested the bridge with heavy trucks for a week before the city opened it to traffic, "
    "because",
    "Every summer the village holds a festival in honour of its patron saint, with music, food and a "
    "procession that",
    "The coach said after the game that his players had shown great character, even though they had lost "
    "three",
]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="mini", help="a checkpoint, or random:<preset> for random weights")
    p.add_argument("--batch", type=int, default=16, help="prefixes per call, one sample each")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=None, help="diffusion steps (default: the checkpoint's)")
    p.add_argument("--systems", default="plain,soft decode,dglm,dglm-guided,plan guidance,control contrast")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1: on a shared, oversubscribed machine more threads wait on each other)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    return p.parse_args(argv)


def load(checkpoint: str):
    from dglm import DGLM
    from dglm.presets import random_pipeline

    if checkpoint.startswith("random:"):
        return random_pipeline(checkpoint.split(":", 1)[1])
    return DGLM.from_pretrained(checkpoint)


def systems(pipe, prefixes: list[str], kw: dict, steps: int | None) -> dict:
    """name -> a function running the system once and returning its plan stage timings (may be empty)."""
    from dglm import Controller, FunctionConstraint, topic

    # A topic probe when the checkpoint ships one; a random-weight pipeline gets a zero-shot stand-in.
    constraint = topic("sports") if pipe.probes is not None and "topic" in pipe.probes.names \
        else FunctionConstraint(lambda x: x[..., 0], name="first_dim_low")
    ctl = Controller(constraint, pipe, strength=20.0)
    soft = pipe.plan(prefixes, steps=steps, seed=0).soft_prompts

    def plain():
        pipe.decoder.generate(prefixes, None, seed=0, **kw)
        return {}

    def soft_decode():
        pipe.decoder.generate(prefixes, soft, seed=0, **kw)
        return {}

    def soft_direct(adapter: bool):
        """Soft tokens decoded by calling the LM's generate directly: the adapter's LoRA layers unmerged (the
        behaviour before ``Decoder.adapter_merged``) or switched off (the base LM)."""
        from transformers import RepetitionPenaltyLogitsProcessor

        dec = pipe.decoder
        embeds, mask, _ = dec.embed(dec.tokenize(prefixes), soft)
        args = {k: v for k, v in kw.items() if k != "repetition_penalty"}

        def call():
            with torch.no_grad(), dec.adapter_off(not adapter), torch.random.fork_rng():
                torch.manual_seed(0)
                dec.model.generate(inputs_embeds=embeds, attention_mask=mask, pad_token_id=dec.pad_token_id,
                                   logits_processor=[RepetitionPenaltyLogitsProcessor(kw["repetition_penalty"])],
                                   **args)
            return {}
        return call

    def run(fn, **extra):
        return lambda: fn(prefixes, seed=0, steps=steps, **extra, **kw).timings

    return {"plain": plain, "soft decode": soft_decode, "soft decode (LoRA unmerged)": soft_direct(True),
            "soft decode (no adapter)": soft_direct(False), "dglm": run(pipe.generate),
            "dglm-guided": run(ctl.generate), "plan guidance": run(pipe.generate, plan_scale=2.0),
            "control contrast": run(ctl.generate, control_scale=2.0)}


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = load(args.checkpoint)
    prefixes = (PREFIXES * (args.batch // len(PREFIXES) + 1))[:args.batch]
    kw = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=True, top_p=0.9,
              repetition_penalty=1.2)
    funcs = systems(pipe, prefixes, kw, args.steps)
    names = [n.strip() for n in args.systems.split(",")]
    unknown = sorted(set(names) - set(funcs))
    if unknown or "plain" not in names:
        raise SystemExit(f"--systems={args.systems!r}: unknown {unknown}; accepted: {sorted(funcs)} (plain needed)")
    warm = dict(kw, max_new_tokens=2, min_new_tokens=2)
    for name in names:  # one untimed warm-up call each (first-call allocations, lazy imports)
        systems(pipe, prefixes[:2], warm, 2)[name]()
    seconds: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    stages: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    for r in range(args.repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            t0, c0 = time.perf_counter(), time.process_time()
            timings = funcs[name]()
            seconds[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            for key, value in timings.items():
                stages[name].setdefault(key, []).append(value)
        print(f"repeat {r + 1}/{args.repeats}: " + ", ".join(f"{n} {seconds[n][-1]:.2f} s (CPU {cpu[n][-1]:.2f} s)"
                                                         for n in names), flush=True)
    result = {
        "command": "PYTHONPATH=. python recipes/bench_speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
                   f"torch {torch.__version__}",
        "checkpoint": args.checkpoint, "batch": args.batch, "new_tokens": args.new_tokens,
        "repeats": args.repeats, "steps": args.steps or pipe.sampling.steps,
        "systems": {n: {"seconds_median": statistics.median(seconds[n]),
                        "ratio_median": statistics.median(s / p for s, p in zip(seconds[n], seconds["plain"], strict=True)),
                        "ratios": [s / p for s, p in zip(seconds[n], seconds["plain"], strict=True)],
                        "seconds": seconds[n],
                        "cpu_seconds_median": statistics.median(cpu[n]),
                        "cpu_ratio_median": statistics.median(s / p for s, p in zip(cpu[n], cpu["plain"], strict=True)),
                        "cpu_seconds": cpu[n],
                        "stages_median": {k: statistics.median(v) for k, v in stages[n].items()}}
                    for n in names},
    }
    print(table(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def table(result: dict) -> str:
    """A markdown table of the medians."""
    lines = ["| system | wall s | wall / plain | CPU s | CPU / plain | stages (median wall s) |",
             "|---|---|---|---|---|---|"]
    for name, s in result["systems"].items():
        stages = ", ".join(f"{k} {v:.3f}" for k, v in s["stages_median"].items()) or "-"
        lines.append(f"| {name} | {s['seconds_median']:.2f} | {s['ratio_median']:.3f}x | {s['cpu_seconds_median']:.2f} "
                     f"| {s['cpu_ratio_median']:.3f}x | {stages} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
