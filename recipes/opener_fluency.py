"""Where does unguided DGLM's perplexity cost on neutral openers come from, and how much of a right plan does
the decoder follow? (issue 15, items 4 and the unguided fidelity gain)

On the benchmark's neutral openers ("The house", "In 1923 the"), or its topical 32-token prefixes
(``--prompt-set topical``), decodes each prompt six ways with the same decoder, sampling settings and seeds,
and scores every continuation with the benchmark's evaluator LM:

- ``plain``: the decoder alone (the reference of the +10% criterion);
- ``dglm``: unguided DGLM, the plan sampled by the diffusion model (the shipped behaviour, with the
  checkpoint's ``max_nll`` redraws of continuations the decoder's base LM finds unlikely);
- ``dglm without redraws``: the same with ``max_nll=None``;
- ``oracle plan``: DGLM decoding with the *human* continuation's embedding as the plan (no diffusion): what
  the decoder does with a plan that is right for this opener;
- ``null plan``: DGLM decoding with soft tokens of pure noise (sigma^2 = 1, no plan information): what the
  soft tokens' presence alone costs;
- ``human``: the prompt's own continuation in its test document (first ``--new-tokens`` decoder tokens).

Fidelity to the human continuation (cosine of encoder embeddings) separates the decoder from the planner:
``oracle plan`` over ``plain`` is how much of a right plan the decoder puts into its text; ``dglm``'s fidelity
to its own plan over plain decoding's fidelity to that plan is the benchmark's unguided fidelity gain.

Each system's perplexity is compared with plain decoding's **per opener and seed** (the geometric mean of the
ratios, with a standard error over openers), which is far more precise than comparing two means of a
heavy-tailed perplexity. Reading: ``null plan`` over ``plain`` is the soft tokens' own cost; ``oracle plan``
over ``null plan`` what a right plan changes; ``dglm`` over ``oracle plan`` what the diffusion's plans cost
against the right one; ``human`` how perplexing the corpus's own text is to the evaluator (specific content
costs perplexity). Perplexities are the evaluator LM's (Gemma-3-270M): a **proxy** for fluency.

    PYTHONPATH=. python recipes/opener_fluency.py --checkpoint mini --corpus cache/corpus --num-neutral 100 \\
        --samples 2 --out results/plan-conditioning/opener-fluency.json
"""

from __future__ import annotations

import time

import numpy as np
import torch
from recipe_runner import recipe_parser, run_recipe

from dglm.bench.config import BenchConfig
from dglm.bench.evaluators import EvaluatorLM, train_topic_classifier
from dglm.bench.metrics import paired_ratio, perplexity, plan_fidelity, summarize
from dglm.bench.report import machine_info
from dglm.bench.setup import load_pipeline, prompt_sets
from dglm.data.corpus import load_split
from dglm.outputs import Plan

SYSTEMS = ("plain", "dglm", "dglm without redraws", "oracle plan", "null plan", "human")


def human_continuations(docs, openers: list[str], tokenizer, new_tokens: int) -> list[str]:
    """Each opener's continuation in the first test document that holds it: the next ``new_tokens`` decoder
    tokens of the text after it ("" where no document holds it).

    Example (a stand-in document and the synthetic tokenizer):
        >>> from types import SimpleNamespace
        >>> from dglm.presets import synthetic_tokenizer
        >>> docs = [SimpleNamespace(text="the game was won by the team")]  # (a word-level tokenizer: no spaces kept)
        >>> human_continuations(docs, ["the game"], synthetic_tokenizer(100), 3)
        ['was won by']
    """
    out = []
    for opener in openers:
        text = next((d.text[i + len(opener):] for d in docs if (i := d.text.find(opener)) >= 0), "")
        ids = tokenizer(text, add_special_tokens=False).input_ids[:new_tokens]
        out.append(tokenizer.decode(ids))
    return out


def run(args) -> dict:
    config = BenchConfig(checkpoint=args.checkpoint, corpus=args.corpus, prompt_sets=[args.prompt_set],
                         num_neutral=args.num_neutral, new_tokens=args.new_tokens, seeds=[args.seed])
    torch.set_num_threads(args.threads)
    pipe, _ = load_pipeline(config)
    tok = pipe.decoder.tokenizer
    topic = train_topic_classifier(config.corpus)
    prompts = prompt_sets(config, pipe, "sports", topic)[args.prompt_set]  # the benchmark's own set
    openers = prompts.prompts
    if args.prompt_set == "topical":  # each window's next new_tokens tokens
        humans = prompts.references[1][:len(openers)]
    else:
        humans = human_continuations(load_split(config.corpus, "test"), openers, tok, args.new_tokens)
    kw = dict(do_sample=True, top_p=config.top_p, repetition_penalty=config.repetition_penalty,
              max_new_tokens=args.new_tokens)
    n, rows = args.samples, [o for o in openers for _ in range(args.samples)]
    cfg = {} if args.cfg_scale is None else {"cfg_scale": args.cfg_scale}
    human_raw = pipe.encoder.encode(humans).float()  # (B, d)
    oracle = pipe.encoder.standardize(human_raw).repeat_interleave(n, dim=0)  # (B * n, d)
    texts: dict[str, list[str]] = {}
    seconds: dict[str, float] = {}
    for name in SYSTEMS[:-1]:
        t0 = time.perf_counter()
        if name == "plain":
            texts[name] = pipe.decoder.generate(rows, None, seed=args.seed, **kw)
        elif name.startswith("dglm"):
            redraws = {"max_nll": None} if name == "dglm without redraws" else {}
            out = pipe.generate(openers, n, seed=args.seed, **cfg, **redraws, **kw)
            texts[name] = [c for cs in out.continuations for c in cs]
            dglm_plans = out.plans.reshape(len(rows), -1)  # (the same plans in both: one seed)
        else:
            sigma2 = 1.0 if name == "null plan" else pipe.generation_config().sigma2
            g = torch.Generator(pipe.device).manual_seed(args.seed)
            soft = pipe.prompt_generator.prompt(oracle.to(pipe.device), sigma2, g)
            plan = Plan(openers, n, human_raw.repeat_interleave(n, dim=0), soft)
            out = pipe.decode(plan, seed=args.seed, **kw)
            texts[name] = [c for cs in out.continuations for c in cs]
        seconds[name] = time.perf_counter() - t0
    texts["human"] = [h for h in humans for _ in range(n)]
    lm = EvaluatorLM.from_pretrained(config.evaluator_lm, device=config.device)
    result = {"machine": machine_info(config.device), "checkpoint": args.checkpoint,
              "prompt_set": args.prompt_set, "cfg_scale": pipe.generation_config(**cfg).cfg_scale,
              "plan_temperature": pipe.generation_config().plan_temperature,
              "openers": len(openers), "samples": n, "new_tokens": args.new_tokens, "seed": args.seed,
              "human_found": sum(bool(h.strip()) for h in humans), "systems": {}}
    log_ppl = {}
    for name in SYSTEMS:
        nll, count, _ = lm.score(rows, texts[name])
        ppl = perplexity(nll.numpy(), count.numpy())
        log_ppl[name] = np.log(ppl).reshape(len(openers), n)
        emb = pipe.encoder.encode(texts[name]).float()
        row = {"perplexity": summarize(ppl), "fidelity_to_human": summarize(plan_fidelity(emb, human_raw.repeat_interleave(
            n, dim=0)).numpy()), "seconds": seconds.get(name), "examples": texts[name][:3]}
        row["fidelity_to_dglm_plan"] = summarize(plan_fidelity(emb, dglm_plans.cpu()).numpy())
        result["systems"][name] = row
    for name in SYSTEMS[1:]:
        result["systems"][name]["vs_plain"] = paired_ratio(log_ppl[name], log_ppl["plain"])
    for a, b in (("oracle plan", "null plan"), ("dglm", "oracle plan"), ("dglm", "null plan")):
        result[f"{a} vs {b}"] = paired_ratio(log_ppl[a], log_ppl[b])
    return result


def markdown(r: dict) -> str:
    lines = [f"# Where unguided DGLM's perplexity cost comes from, and how much of a plan the decoder follows "
             f"({r['prompt_set']} prompts)", "",
             f"- command: `{r['command']}`", f"- checkpoint: `{r['checkpoint']}`; machine: {r['machine']['cpu']}, {r['machine']['cpu_cores']} cores, "
             f"torch threads {r['machine']['torch_threads']}, torch {r['machine']['torch']}",
             f"- {r['openers']} {r['prompt_set']} prompts (the benchmark's set) x {r['samples']} samples, {r['new_tokens']} new "
             f"tokens, seed {r['seed']}; human continuations found for {r['human_found']}; dglm's diffusion CFG "
             f"scale {r['cfg_scale']:g}, plan temperature {r.get('plan_temperature', 1):g}",
             "- perplexity: the evaluator LM's (Gemma-3-270M), a **proxy** for fluency; fidelity: cosine between "
             "the continuation's encoder embedding and the human continuation's (or the plan's)", "",
             "| system | ppl mean / median | ppl ratio to plain, per prompt (geometric mean [95% CI]) | fidelity to "
             "the human continuation | fidelity to dglm's plan |", "|---|---|---|---|---|"]
    for name, s in r["systems"].items():
        p, f, d = s["perplexity"], s["fidelity_to_human"], s["fidelity_to_dglm_plan"]
        v = s.get("vs_plain")
        ratio = f"{v['ratio']:.3f} [{v['ratio_low']:.3f}, {v['ratio_high']:.3f}]" if v else "1 (reference)"
        lines.append(f"| {name} | {p['mean']:.1f} / {p['median']:.1f} | {ratio} | {f['mean']:.3f} +- {f['sem']:.3f} "
                     f"| {d['mean']:.3f} +- {d['sem']:.3f} |")
    lines += ["", "Paired ratios between the DGLM variants (the causes):", ""]
    for key in ("oracle plan vs null plan", "dglm vs oracle plan", "dglm vs null plan"):
        v = r[key]
        lines.append(f"- {key}: {v['ratio']:.3f} [{v['ratio_low']:.3f}, {v['ratio_high']:.3f}]")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = recipe_parser(__doc__, "results/plan-conditioning/opener-fluency.json", samples=2)
    p.add_argument("--prompt-set", choices=["neutral", "topical"], default="neutral")
    p.add_argument("--num-neutral", type=int, default=100)
    p.add_argument("--cfg-scale", type=float, default=None,
                   help="the diffusion's classifier-free guidance scale for dglm's plans (default: the checkpoint's)")
    return run_recipe(p, "recipes/opener_fluency.py", run, markdown, argv)


if __name__ == "__main__":
    main()
