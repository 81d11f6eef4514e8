"""Tune the diffusion's plan temperature on the corpus's *validation* split (issue 15).

``GenerationConfig.plan_temperature`` scales the Gaussian noise the diffusion sampler draws. At 1 the plans
are samples of the model's distribution; a small model trained on little text spreads that distribution
beyond real text, and its plans are then harder to write. Lower temperatures keep the plans nearer the
prefix's likely continuations, at a cost in diversity. This recipe sweeps it on prompts the benchmark never
uses (the validation split; the benchmark reads the test split), so the chosen default is not tuned on the
prompts it is reported on.

For each temperature, with the same decoder, sampling settings and seeds as plain decoding:

- **neutral openers** (the first 2-5 words of validation documents and sentences, as the benchmark builds
  them): unguided DGLM's evaluator perplexity against plain decoding's, per opener (geometric mean of the
  ratios, 95% interval), and the unguided fidelity gain;
- **32-token prefixes** (the first window of validation documents): the unguided fidelity gain,
  ``cos(text, plan) - cos(plain decoding's text, plan)``, with its standard error, and the plan's cosine to
  the human continuation;
- the plans' diversity: the mean cosine between two plans of one prompt.

Perplexity is the evaluator LM's (Gemma-3-270M) and fidelity the encoder's cosine: both **proxies**.

    PYTHONPATH=. python recipes/plan_temperature.py --checkpoint mini \\
        --out results/plan-conditioning/plan-temperature-sw1.json
"""

from __future__ import annotations

import time

import numpy as np
import torch
from recipe_runner import recipe_parser, run_recipe

from dglm.bench.config import BenchConfig
from dglm.bench.evaluators import EvaluatorLM
from dglm.bench.metrics import (
    fidelity_gain,
    paired_ratio,
    perplexity,
    plan_fidelity,
    summarize,
    within_prompt_cosine,
)
from dglm.bench.prompts import held_out_windows, neutral_openers
from dglm.bench.report import machine_info
from dglm.bench.setup import load_pipeline
from dglm.data.corpus import load_split


@torch.no_grad()
def run(args) -> dict:
    config = BenchConfig(checkpoint=args.checkpoint, corpus=args.corpus, new_tokens=args.new_tokens,
                         seeds=[args.seed])
    torch.set_num_threads(args.threads)
    pipe, _ = load_pipeline(config)
    enc, n = pipe.encoder, args.samples
    docs = load_split(config.corpus, "validation")
    prefixes, humans = held_out_windows(docs, pipe.decoder.tokenizer, args.num_prefixes, config.prefix_tokens,
                                        args.new_tokens, seed=args.seed)
    sets = {"neutral": neutral_openers(docs, args.num_openers, seed=args.seed), "topical": prefixes}
    kw = dict(do_sample=True, top_p=config.top_p, repetition_penalty=config.repetition_penalty,
              max_new_tokens=args.new_tokens)
    lm = EvaluatorLM.from_pretrained(config.evaluator_lm, device=config.device)
    human = enc.encode(humans).float().repeat_interleave(n, 0)  # (B * n, d)

    rows = {name: [p for p in prompts for _ in range(n)] for name, prompts in sets.items()}  # prompt-major

    def scored(name: str, texts: list[str]) -> tuple[np.ndarray, torch.Tensor]:
        nll, count, _ = lm.score(rows[name], texts)
        log_ppl = np.log(perplexity(nll.numpy(), count.numpy())).reshape(len(sets[name]), n)
        return log_ppl, enc.encode(texts).float()

    plain = {name: scored(name, pipe.decoder.generate(rows[name], None, seed=args.seed, **kw)) for name in sets}
    result = {"machine": machine_info(config.device), "checkpoint": args.checkpoint,
              "split": "validation", "openers": len(sets["neutral"]), "prefixes": len(prefixes), "samples": n,
              "new_tokens": args.new_tokens, "seed": args.seed,
              "sampling": pipe.generation_config().model_dump(include={"steps", "sampler", "cfg_scale", "sigma2"}),
              "temperatures": {}}
    for temperature in args.temperatures:
        t0 = time.perf_counter()
        row = {}
        for name, prompts in sets.items():
            out = pipe.generate(prompts, n, seed=args.seed, plan_temperature=temperature, **kw)
            plans = out.plans.reshape(len(prompts) * n, -1).float().cpu()  # (B * n, d)
            log_ppl, text = scored(name, [c for cs in out.continuations for c in cs])
            row[name] = {"gain": summarize(fidelity_gain(text, plain[name][1], plans).numpy()),
                         "plan_diversity": within_prompt_cosine(plans, n),
                         "ppl_vs_plain": paired_ratio(log_ppl, plain[name][0])}
            if name == "topical":
                row[name]["plan_cos_to_human"] = float(plan_fidelity(plans, human).mean())
        row["seconds"] = time.perf_counter() - t0
        result["temperatures"][f"{temperature:g}"] = row
        print(f"plan_temperature {temperature:g}: {row}", flush=True)
    return result


def markdown(r: dict) -> str:
    lines = [f"# Plan temperature sweep on the validation split: `{r['checkpoint']}`", "",
             f"- command: `{r['command']}`",
             f"- machine: {r['machine']['cpu']}, torch threads {r['machine']['torch_threads']}",
             f"- {r['openers']} neutral openers and {r['prefixes']} 32-token prefixes of the corpus's **validation** "
             f"split x {r['samples']} samples, {r['new_tokens']} new tokens, seed {r['seed']}; sampling "
             f"{r['sampling']}",
             "- perplexity ratio: the evaluator LM's (Gemma-3-270M) perplexity of unguided DGLM over plain decoding's, "
             "per prompt (geometric mean [95% CI]); gain: cos(text, plan) - cos(plain text, plan); both **proxies**",
             "", "| plan temperature | openers: ppl ratio to plain | openers: gain | prefixes: gain | prefixes: ppl "
             "ratio | plan's cosine to the human continuation | plan diversity (openers / prefixes) |",
             "|---|---|---|---|---|---|---|"]
    for t, row in r["temperatures"].items():
        o, p = row["neutral"], row["topical"]

        def ratio(v):
            return f"{v['ratio']:.3f} [{v['ratio_low']:.3f}, {v['ratio_high']:.3f}]"

        lines.append(f"| {t} | {ratio(o['ppl_vs_plain'])} | {o['gain']['mean']:+.3f} +- {o['gain']['sem']:.3f} | "
                     f"**{p['gain']['mean']:+.3f} +- {p['gain']['sem']:.3f}** | {ratio(p['ppl_vs_plain'])} | "
                     f"{p['plan_cos_to_human']:.3f} | {o['plan_diversity']:.3f} / {p['plan_diversity']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = recipe_parser(__doc__, "results/plan-conditioning/plan-temperature.json", samples=2, seed=1)
    p.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.9, 0.8, 0.7, 0.6])
    p.add_argument("--num-openers", type=int, default=100)
    p.add_argument("--num-prefixes", type=int, default=48)
    return run_recipe(p, "recipes/plan_temperature.py", run, markdown, argv)


if __name__ == "__main__":
    main()
