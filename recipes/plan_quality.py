"""Are the diffusion's plans like real continuations, and which plans does the decoder follow? (issue 15)

The unguided fidelity gain (how much closer DGLM's text is to its own plan than plain decoding's text of the
same prompt) depends on the planner as well as on the decoder. On the benchmark's topical 32-token prefixes
this recipe measures both sides with the checkpoint's own sampling settings:

**Plans** (``--samples`` per prefix): their standardised norm; their cosine to the human continuation and to
the diffusion's posterior mean (its prediction from pure noise); how close each lies to *any* real text, the
cosine to its nearest neighbour among the prepared training continuations (``--bank``; the held-out human
continuations give the reference for real text); the mean cosine between two plans of the same prefix
(diversity); and, where the denoiser is rank-deficient (``DiffusionConfig.rank_deficit``), the share of a
plan's squared norm in the directions it can never denoise, against real continuations' share.

**Decoding** (the same prompts, decoder, sampling settings and seeds): the fidelity gain, ``cos(text, plan) -
cos(plain decoding's text, plan)``, for five plans: the diffusion's own; the human continuation (**oracle**);
the human continuation re-noised to t = ``--through`` and denoised by the diffusion model (**oracle through the
diffusion**, SDEdit: a right plan carrying the diffusion's own artefacts); another prefix's human continuation
(**switch**: a right plan that disagrees with the prefix); the training continuation nearest to the diffusion's
plan (**nearest real**: the own plan moved onto real text). Fidelity is the encoder's cosine, a **proxy**.

    PYTHONPATH=. python recipes/plan_quality.py --checkpoint mini --bank cache/mini/data/train \\
        --out results/plan-conditioning/plan-quality-mini.json
"""

from __future__ import annotations

import math
import time

import torch
from recipe_runner import recipe_parser, run_recipe

from dglm.bench.config import BenchConfig
from dglm.bench.evaluators import train_topic_classifier
from dglm.bench.metrics import fidelity_gain, plan_fidelity, summarize, within_prompt_cosine
from dglm.bench.report import machine_info
from dglm.bench.setup import load_pipeline, prompt_sets
from dglm.outputs import Plan
from dglm.training.data import WindowSet

PLANS = ("own", "oracle", "oracle through the diffusion", "switch", "nearest real")


def nearest_cosine(x: torch.Tensor, bank: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's highest cosine to a row of ``bank`` and that row's index: (N, d), (M, d) -> (N,), (N,).

    Example:
        >>> cos, idx = nearest_cosine(torch.tensor([[1.0, 0.1]]), torch.tensor([[0.0, 1.0], [2.0, 0.0]]))
        >>> round(cos.item(), 3), idx.item()
        (0.995, 1)
    """
    x, bank = torch.nn.functional.normalize(x.float(), dim=-1), torch.nn.functional.normalize(bank.float(), dim=-1)
    best = torch.full((len(x),), -2.0)
    index = torch.zeros(len(x), dtype=torch.long)
    for start in range(0, len(bank), chunk):
        cos, i = (x @ bank[start:start + chunk].T).max(-1)
        better = cos > best
        best, index = torch.where(better, cos, best), torch.where(better, i + start, index)
    return best, index


def unreachable_share(diffuser, standardized: torch.Tensor) -> float | None:
    """Share of the squared norm of standardised embeddings (N, d) in the directions the denoiser's output layer
    cannot write (None for a full-rank denoiser).

    Example (a rank-deficient toy denoiser):
        >>> from dglm.config import DiffusionConfig
        >>> from dglm.diffusion import SemanticDiffuser
        >>> toy = SemanticDiffuser(DiffusionConfig(dim=8, num_tokens=2, token_features=2, width=16, depth=1, heads=2))
        >>> _ = torch.nn.init.normal_(toy.out.weight)
        >>> round(unreachable_share(toy, torch.randn(4000, 8, generator=torch.Generator().manual_seed(0))), 1)
        0.5
    """
    if not diffuser.config.rank_deficit:
        return None
    q, _ = torch.linalg.qr(diffuser.out.weight.detach().float())  # (d, N c): the writable directions
    x = standardized.float()
    outside = x - (x @ q) @ q.T
    return float(outside.pow(2).sum() / x.pow(2).sum())


@torch.no_grad()
def run(args) -> dict:
    config = BenchConfig(checkpoint=args.checkpoint, corpus=args.corpus, prompt_sets=["topical"],
                         new_tokens=args.new_tokens, seeds=[args.seed])
    torch.set_num_threads(args.threads)
    pipe, _ = load_pipeline(config)
    enc, n = pipe.encoder, args.samples
    prompts = prompt_sets(config, pipe, "sports", train_topic_classifier(config.corpus))["topical"]
    openers = prompts.prompts
    human = enc.encode(prompts.references[1][:len(openers)]).float()  # (B, d)
    bank = WindowSet.load(args.bank).cont_emb.float().reshape(-1, enc.dim)  # (windows * splits, d)
    rows = [o for o in openers for _ in range(n)]
    kw = dict(do_sample=True, top_p=config.top_p, repetition_penalty=config.repetition_penalty,
              max_new_tokens=args.new_tokens)
    t0 = time.perf_counter()
    own = pipe.plan(openers, n, seed=args.seed)
    plans = own.embeddings.reshape(len(rows), -1).float()  # (B * n, d), raw
    standardized = enc.standardize(plans)
    prefix = enc.standardize(enc.encode(openers).float()).to(next(pipe.diffuser.parameters()).dtype)
    zero = torch.zeros_like(prefix)
    posterior_mean = enc.to_raw(pipe.diffuser.denoiser(prefix)(zero, zero[:, 0]).x0.float())  # (B, d)
    human_n, mean_n = human.repeat_interleave(n, 0), posterior_mean.repeat_interleave(n, 0)
    near, index = nearest_cosine(plans, bank)
    result = {"machine": machine_info(config.device), "checkpoint": args.checkpoint,
              "prompts": len(openers), "samples": n, "through": args.through, "new_tokens": args.new_tokens, "seed": args.seed,
              "bank": {"path": args.bank, "rows": len(bank)},
              "sampling": pipe.generation_config().model_dump(
                  include={"steps", "sampler", "cfg_scale", "plan_temperature", "sigma2"}),
              "plans": {
                  "standardized_norm": summarize(standardized.norm(dim=-1).numpy()),
                  "human_standardized_norm": summarize(enc.standardize(human).norm(dim=-1).numpy()),
                  "cos_to_human": summarize(plan_fidelity(plans, human_n).numpy()),
                  "cos_to_posterior_mean": summarize(plan_fidelity(plans, mean_n).numpy()),
                  "human_cos_to_posterior_mean": summarize(plan_fidelity(human, posterior_mean).numpy()),
                  "nearest_real_cos": summarize(near.numpy()),
                  "human_nearest_real_cos": summarize(nearest_cosine(human, bank)[0].numpy()),
                  "within_prefix_cos": within_prompt_cosine(plans, n),
                  "unreachable_share": unreachable_share(pipe.diffuser, standardized),
                  "human_unreachable_share": unreachable_share(pipe.diffuser, enc.standardize(human)),
              }}
    plain = enc.encode(pipe.decoder.generate(rows, None, seed=args.seed, **kw)).float()
    settings = pipe.generation_config()
    g = torch.Generator(pipe.device).manual_seed(args.seed)
    through = pipe.diffuser.resample(enc.standardize(human_n).to(prefix.dtype), prefix.repeat_interleave(n, 0),
                                     args.through, settings.steps, settings.sampler, settings.cfg_scale, g)
    sources = {"oracle": human_n, "oracle through the diffusion": enc.to_raw(through.float()),
               "switch": human.roll(1, 0).repeat_interleave(n, 0),
               "nearest real": torch.nn.functional.normalize(bank[index], dim=-1)}
    result["decoding"] = {}
    for name in PLANS:
        if name == "own":
            out = pipe.decode(own, seed=args.seed, **kw)
            target = plans
        else:
            target = sources[name]
            g = torch.Generator(pipe.device).manual_seed(args.seed)
            soft = pipe.prompt_generator.prompt(enc.standardize(target).to(pipe.device), settings.sigma2, g)
            out = pipe.decode(Plan(openers, n, target, soft), seed=args.seed, **kw)
        text = enc.encode([c for cs in out.continuations for c in cs]).float()
        fid, fid_plain = plan_fidelity(text, target), plan_fidelity(plain, target)
        gain = fidelity_gain(text, plain, target).numpy()
        result["decoding"][name] = {"fidelity": float(fid.mean()), "plain_fidelity": float(fid_plain.mean()),
                                    "gain": float(gain.mean()), "gain_sem": float(gain.std(ddof=1) / math.sqrt(len(gain))),
                                    "text_within_prefix_cos": within_prompt_cosine(text, n),
                                    "plan_cos_to_human": float(plan_fidelity(target, human_n).mean())}
    result["decoding"]["plain"] = {"text_within_prefix_cos": within_prompt_cosine(plain, n)}
    result["seconds"] = time.perf_counter() - t0
    return result


def markdown(r: dict) -> str:
    p = r["plans"]

    def m(key):
        return f"{p[key]['mean']:.3f}"

    lines = [f"# Plan quality and plan following: `{r['checkpoint']}`", "",
             f"- command: `{r['command']}`",
             f"- machine: {r['machine']['cpu']}, torch threads {r['machine']['torch_threads']}; {r['seconds']:.0f} s",
             f"- {r['prompts']} topical 32-token prefixes (the benchmark's set) x {r['samples']} samples, "
             f"{r['new_tokens']} new tokens, seed {r['seed']}; sampling {r['sampling']}; nearest-neighbour bank: "
             f"{r['bank']['rows']} training continuations",
             "- cosines are the encoder's (MiniLM): **proxies** for content", "",
             "| plans | diffusion samples | human continuations |", "|---|---|---|",
             f"| standardised norm | {p['standardized_norm']['mean']:.2f} | {p['human_standardized_norm']['mean']:.2f} |",
             f"| cosine to the nearest training continuation (how text-like) | {m('nearest_real_cos')} | "
             f"{m('human_nearest_real_cos')} |",
             f"| cosine to the diffusion's posterior mean | {m('cos_to_posterior_mean')} | "
             f"{m('human_cos_to_posterior_mean')} |",
             f"| cosine to the human continuation | {m('cos_to_human')} | 1 |",
             f"| cosine between two plans of one prefix | {p['within_prefix_cos']:.3f} | |"]
    if p["unreachable_share"] is not None:
        lines.append(f"| share of the squared norm in directions the denoiser cannot write | "
                     f"{p['unreachable_share']:.3f} | {p['human_unreachable_share']:.3f} |")
    lines += ["", f"| plan decoded (oracle through the diffusion: from t = {r['through']:g}) | the plan's cosine to the "
              "human continuation | fidelity of DGLM's text to the plan | plain decoding's | **gain** | cosine "
              "between two texts of one prefix |", "|---|---|---|---|---|---|"]
    for name in PLANS:
        d = r["decoding"][name]
        lines.append(f"| {name} | {d['plan_cos_to_human']:.3f} | {d['fidelity']:.3f} | {d['plain_fidelity']:.3f} | **{d['gain']:+.3f} +- "
                     f"{d['gain_sem']:.3f}** | {d['text_within_prefix_cos']:.3f} |")
    lines.append(f"| (plain decoding) | | | | | {r['decoding']['plain']['text_within_prefix_cos']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = recipe_parser(__doc__, "results/plan-conditioning/plan-quality.json", samples=3)
    p.add_argument("--bank", default="cache/mini/data/train",
                   help="a prepared split folder (dglm train prepare) whose continuation embeddings are the real texts")
    p.add_argument("--through", type=float, default=0.5,
                   help="noise level t (0-1) the oracle is re-noised to before the diffusion denoises it")
    return run_recipe(p, "recipes/plan_quality.py", run, markdown, argv)


if __name__ == "__main__":
    main()
