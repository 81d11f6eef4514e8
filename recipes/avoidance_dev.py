"""DGLM settings for the avoidance task, compared on development prefixes before the benchmark's test run.

The benchmark's avoidance prompts are prefixes of the corpus test split's sports documents; the validation
split holds too few sports documents (3) for a development set, so this recipe takes prefixes of the *train*
split's sports documents (101 documents; seen in training by the diffusion and prompt networks, which is why
they serve settings, never claims). It runs plain decoding, unguided DGLM at the checkpoint's defaults and
each ``--settings`` variant of guided DGLM (JSON objects of ``strength`` and any other keyword of
:meth:`dglm.bench.systems.Factory.guided`, such as ``max_nll``),
with the benchmark's evaluators (:func:`dglm.bench.setup.build_setup`: the topic classifier and
Gemma-3-270M perplexity, both **proxies**). Per system: control success (not sports) with its Wilson interval,
mean and median perplexity against plain decoding's, and the decoder's own NLL of the worst continuation.

Example:
    python recipes/avoidance_dev.py --num 48 --out results/avoidance-dev.json --settings \
        '{"strength": 300, "max_nll": null}' '{"strength": 300, "max_nll": 4.0}'
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="mini")
    parser.add_argument("--corpus", default="cache/corpus")
    parser.add_argument("--num", type=int, default=48, help="development prefixes (one sample each)")
    parser.add_argument("--settings", nargs="*", default=[], help="guided DGLM variants, one JSON object each")
    parser.add_argument("--out", help="write the table as JSON here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = parser.parse_args(argv)
    variants = [json.loads(spec) for spec in args.settings]  # a typo fails here, before any model loads

    from dglm.bench.baselines import prompt_requests
    from dglm.bench.config import BenchConfig
    from dglm.bench.metrics import perplexity
    from dglm.bench.scoring import control_scores, wilson
    from dglm.bench.setup import PromptSet, _topic_prefixes, build_setup
    from dglm.bench.systems import Factory, run_system
    from dglm.bench.tasks import derived_setup
    from dglm.data.corpus import load_split
    from dglm.io import check_output_file, write_output

    if args.out:
        check_output_file(args.out, overwrite=args.overwrite, what="--out")
    config = BenchConfig(tasks=["avoidance"], checkpoint=args.checkpoint, corpus=args.corpus, new_tokens=32,
                         samples=1, steering_scales=[], fudge_strengths=[], prompt_styles=[], bon_extra_n=[],
                         runtime_batch_sizes=[], mauve_seeds=[], num_avoidance=4, num_neutral=4, num_prompts=4)
    task = derived_setup(build_setup(config), "-topic('sports')", prompt_requests("sports", negated=True), [])
    pipe = task.pipeline
    prefixes = _topic_prefixes(load_split(config.corpus, "train"), pipe.decoder.tokenizer, "sports", 10 * args.num,
                               config, 0)
    random.Random(0).shuffle(prefixes)
    dev = PromptSet("avoidance", prefixes[:args.num], 1, f"{args.num} prefixes of the train split's sports documents")

    make = Factory(task)
    systems = [("plain", {}, make.plain()), ("dglm (defaults)", {}, make.dglm(pipe.sampling.sigma2))]
    systems += [("guided " + json.dumps(v), v, make.guided(**v)) for v in variants]
    rows = []
    for name, params, fn in systems:
        run = run_system(task, dev, name, "dglm", params, fn)
        texts = [t for group in run.continuations for t in group]
        nll, n_tokens, _ = task.evaluator_lm.score(dev.prompts, texts)
        ppl = np.asarray(perplexity(nll.numpy(), n_tokens.numpy()))
        _, joint = control_scores(task, texts, task.targets)
        rows.append({"system": name, "success": float(joint.mean()), "success_ci95": list(wilson(joint.sum(), len(joint))),
                     "ppl_mean": float(ppl.mean()), "ppl_median": float(np.median(ppl)),
                     "worst_decoder_nll": float(pipe.decoder.text_nll(dev.prompts, texts).max()),
                     "cpu_s": run.cpu_s})
    plain = rows[0]
    print(f"{dev.description}; {args.checkpoint}; control -topic('sports')")
    print("| system | not sports [95% CI] | ppl mean (x plain) | ppl median (x plain) | worst decoder NLL | CPU s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        low, high = r["success_ci95"]
        print(f"| {r['system']} | {r['success']:.3f} [{low:.2f}, {high:.2f}] | {r['ppl_mean']:.1f} "
              f"({r['ppl_mean'] / plain['ppl_mean']:.2f}x) | {r['ppl_median']:.1f} "
              f"({r['ppl_median'] / plain['ppl_median']:.2f}x) | {r['worst_decoder_nll']:.2f} | {r['cpu_s']:.0f} |")
    if args.out:
        write_output(Path(args.out), json.dumps({"command": " ".join(sys.argv), "prompts": dev.description,
                                                 "rows": rows}, indent=1) + "\n",
                     overwrite=args.overwrite, what="--out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
