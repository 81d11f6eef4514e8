"""Train the default ``mini`` checkpoint (MiniLM-L6 encoder, SmolLM2-135M decoder) on the packaged corpus.

Stages, run in order (each resumable); the exact commands that built the shipped checkpoint are in
docs/results/mini.md:

    python recipes/build_corpus.py --out cache/corpus
    python recipes/train_mini.py prepare     # windows, word-boundary splits, cached encoder embeddings, stats
    python recipes/train_mini.py diffusion --steps 6000 --batch-size 128
    python recipes/train_mini.py prompt --run NAME ...   # the prompt generator (see --help for the designs)
    python recipes/train_mini.py evaluate --run NAME     # held-out plan use (true vs shuffled NLL) -> JSON
    python recipes/train_mini.py export --run NAME ...   # generator of a run stopped early, from its state
    python recipes/train_mini.py assemble --run NAME     # -> dglm/checkpoints/mini (fp16 safetensors + JSON)
    python recipes/train_mini.py card                    # re-save it with the current model card and record

The training loops use ``accelerate``, so the same code runs on this CPU or a GPU (``--device cuda``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from dglm.config import DGLMConfig, EncoderConfig
from dglm.decoder import Decoder
from dglm.diffusion import SemanticDiffuser
from dglm.encoder import SemanticEncoder
from dglm.io import load_component, load_state, load_tensors, read_json
from dglm.pipeline import DGLM
from dglm.prompt import PromptGenerator
from dglm.training.corpus import load_split
from dglm.training.data import WindowSet, build_windows
from dglm.training.train_diffusion import DiffusionTrainingConfig, train_diffuser
from dglm.training.train_prompt import (
    PromptTrainingConfig,
    evaluate_plan_use,
    noise_knob_curve,
    train_prompt_generator,
)

CONFIG = DGLMConfig.preset("mini")
# The model card's results section: docs/results/mini.md, copied into the checkpoint's README.md.
CARD_RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "mini.md"
# Both base models are Apache-2.0 (SmolLM2-135M-Instruct; all-MiniLM-L6-v2 upstream), as is dglm.
LICENSE = "apache-2.0"


def prepare(args) -> None:
    encoder = SemanticEncoder.from_pretrained(CONFIG.encoder.name_or_path)
    tokenizer = Decoder.from_pretrained(CONFIG.decoder.name_or_path).tokenizer
    data = Path(args.work) / "data"
    for split, kwargs in (("validation", {"fixed_split": 32}), ("train", {"per_window": 2, "max_prefix": 48})):
        if (data / split / "windows.safetensors").is_file():
            continue
        texts = [d.text for d in load_split(args.corpus, split)]
        windows = build_windows(texts, tokenizer, window=64, seed=args.seed, **kwargs)
        logging.info("%s: %d documents -> %d windows; embedding", split, len(texts), len(windows))
        windows.embed(encoder, tokenizer, show_progress_bar=True).save(data / split)
    train = WindowSet.load(data / "train")
    encoder.fit_standardization(train.cont_emb.reshape(-1, encoder.dim).float())
    encoder.save_pretrained(Path(args.work) / "encoder")


def _load(args):
    """Standardisation statistics (training needs no encoder model) and the cached windows."""
    work = Path(args.work)
    _, stats = load_component(work / "encoder", EncoderConfig)
    return stats["mean"], stats["std"], WindowSet.load(work / "data" / "train"), \
        WindowSet.load(work / "data" / "validation")


def diffusion(args) -> None:
    mean, std, train, val = _load(args)
    standard = lambda e: ((e.float() - mean) / std).reshape(-1, mean.shape[0])  # noqa: E731  (N * S, d)
    cfg = DiffusionTrainingConfig(steps=args.steps, batch_size=args.batch_size or 256, lr=args.lr or 1e-3,
                                  warmup=min(500, args.steps // 10), save_every=500, seed=args.seed)
    model = SemanticDiffuser(CONFIG.diffusion)
    ema = train_diffuser(model, standard(train.prefix_emb), standard(train.cont_emb), cfg,
                         out_dir=Path(args.work) / "runs" / "diffusion",
                         heldout=(standard(val.prefix_emb), standard(val.cont_emb)))
    ema.save_pretrained(Path(args.work) / "diffusion")


def prompt(args) -> None:
    mean, std, train, val = _load(args)
    decoder = Decoder.from_pretrained(args.decoder or CONFIG.decoder.name_or_path, device=args.device)
    cfg = PromptTrainingConfig(time_budget_s=args.time_budget * 60, steps=args.steps, batch_size=args.batch_size or 8, lr=args.lr or 1e-3,
                               warmup=min(100, args.steps // 10), contrastive=args.contrastive,
                               prefix_dropout=args.prefix_dropout, prefix_free_steps=args.prefix_free_steps,
                               bow_weight=args.bow_weight, bow_pretrain_steps=args.bow_pretrain_steps,
                               bow_batch_size=args.bow_batch_size,
                               lora_rank=args.lora_rank, lora_lr=args.lora_lr, eval_every=args.eval_every, eval_limit=args.eval_limit, seed=args.seed,
                               mixed_precision=args.mixed_precision)
    prompt_config = CONFIG.prompt.model_copy(update={"head": args.head, "vocab_size": args.vocab_size})
    generator = PromptGenerator(prompt_config)
    if args.init_from:  # start from another run's trained generator (fresh optimizer and schedule)
        generator = PromptGenerator.from_pretrained(Path(args.work) / "runs" / args.init_from / "prompt").float()
    elif args.head == "vocab_mixture":  # frequent content tokens of the training windows
        counts = np.bincount(train.ids.ravel(), minlength=len(decoder.tokenizer))
        ranked = np.argsort(-counts, kind="stable")[args.vocab_skip:args.vocab_skip + args.vocab_size]
        generator.vocab_ids.copy_(torch.from_numpy(ranked.copy()))
    run = Path(args.work) / "runs" / args.run
    result = train_prompt_generator(generator, decoder, train, val, mean, std, cfg, run)
    generator.save_pretrained(run / "prompt")
    if cfg.lora_rank:
        decoder.save_adapter(run / "lora")
    (run / "result.json").write_text(json.dumps({"config": cfg.model_dump(), "eval": result}, indent=2))
    print(json.dumps(result, indent=2))


def evaluate(args) -> None:
    """Held-out plan use of a prompt run (NLL plain / true / shuffled, with and without the prefix) -> JSON."""
    mean, std, _, val = _load(args)
    decoder = Decoder.from_pretrained(args.decoder or CONFIG.decoder.name_or_path, device=args.device)
    run = Path(args.work) / "runs" / args.run
    generator = PromptGenerator.from_pretrained(run / "prompt").float()
    if (run / "lora").is_dir():
        decoder.load_adapter(run / "lora")
    generator.bind(decoder.embeddings.weight)
    result = evaluate_plan_use(generator, decoder, val, mean, std, sigma2=args.sigma2[0], limit=args.eval_limit)
    if len(args.sigma2) > 1:
        result["noise_knob"] = noise_knob_curve(generator, decoder, val, mean, std, sorted(args.sigma2),
                                                limit=args.eval_limit)
    result["command"] = "python recipes/train_mini.py " + " ".join(sys.argv[1:])
    Path(args.out_json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def export(args) -> None:
    """Write the generator (and the decoder adapter, if the run trains one) of a prompt run's latest resumable
    state to WORK/runs/RUN/prompt (and lora/), for a run stopped before its end; the generator's config
    comes from the same flags as the prompt stage."""
    run = Path(args.work) / "runs" / args.run
    tensors, meta = load_tensors(run / "state" / "state.safetensors"), read_json(run / "state" / "state.json")
    config = CONFIG.prompt.model_copy(update={"head": args.head, "vocab_size": args.vocab_size})
    generator = PromptGenerator(config)
    load_state(generator, {k[len("generator."):]: v for k, v in tensors.items()
                           if k.startswith("generator.") and k != "generator._embeddings"}, run / "state")
    generator.save_pretrained(run / "prompt")
    lora = [tensors[f"lora.{i}"] for i in range(sum(k.startswith("lora.") for k in tensors))]
    if lora:  # the adapter's parameters, in the order Decoder.add_adapter returned them
        rank = meta["config"]["lora_rank"]
        decoder = Decoder.from_pretrained(args.decoder or CONFIG.decoder.name_or_path)
        with torch.no_grad():
            for param, value in zip(decoder.add_adapter(rank), lora, strict=True):
                param.copy_(value)
        decoder.save_adapter(run / "lora")
    print(f"exported the generator{' and the decoder adapter' if lora else ''} at step {meta['step']} to {run}")


def assemble(args) -> None:
    """Copy the trained parts into a DGLM checkpoint (fp16 weights), with the shipped probes and the run's
    decoder adapter if present."""
    work = Path(args.work)
    encoder = SemanticEncoder.from_pretrained_stats(work / "encoder")
    decoder = Decoder.from_pretrained(CONFIG.decoder.name_or_path)
    if (work / "runs" / args.run / "lora").is_dir():  # shipped as the checkpoint's decoder_adapter/
        decoder.load_adapter(work / "runs" / args.run / "lora")
    diffuser = SemanticDiffuser.from_pretrained(work / "diffusion").half()
    generator = PromptGenerator.from_pretrained(work / "runs" / args.run / "prompt").half()
    probes = None
    if (work / "probes").is_dir():
        from dglm.constraints import ProbeRegistry

        probes = ProbeRegistry.load(work / "probes")
    save_mini(DGLM(encoder, diffuser, generator, decoder, CONFIG.sampling, probes), args.out)


def save_mini(pipe: DGLM, out) -> None:
    """Write the ``mini`` checkpoint: fp16 diffusion and prompt networks, and a model card made of the parts
    (with the record of the decoder weights it was trained with, see dglm/hub.py) and docs/results/mini.md."""
    pipe.diffuser.half()
    pipe.prompt_generator.half()
    results = CARD_RESULTS.read_text(encoding="utf-8").split("\n", 1)[1]  # without its own title
    card = ("## Results (docs/results/mini.md of the dglm repository; its links are relative to that folder)\n"
            + results.replace("\n## ", "\n### "))
    pipe.save_pretrained(out, license=LICENSE, card_text=card, name="mini")
    print(f"wrote {out}")


def card(args) -> None:
    """Re-save an assembled checkpoint through save_mini (same tensors; refreshed dglm.json and README.md)."""
    save_mini(DGLM.from_pretrained(args.out), args.out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["prepare", "diffusion", "prompt", "evaluate", "export", "assemble", "card"])
    p.add_argument("--out-json", default="plan_use.json", help="where evaluate writes its JSON")
    p.add_argument("--sigma2", type=float, nargs="+", default=[0.05],
                   help="evaluate: re-noising level(s); the first for the plan-use numbers, and with several, "
                        "the noise-knob curve over all of them, in increasing order")
    p.add_argument("--work", default="cache/mini", help="working folder for data, runs and parts")
    p.add_argument("--corpus", default="cache/corpus", help="output of recipes/build_corpus.py")
    p.add_argument("--out", default="dglm/checkpoints/mini", help="where assemble writes the checkpoint")
    p.add_argument("--run", default="prompt", help="name of the prompt-generator run under WORK/runs")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=0, help="0 = the stage's default")
    p.add_argument("--lr", type=float, default=0.0, help="0 = the stage's default")
    p.add_argument("--contrastive", type=float, default=0.0)
    p.add_argument("--lora-rank", type=int, default=0)
    p.add_argument("--lora-lr", type=float, default=2e-4, help="learning rate of the LoRA adapters")
    p.add_argument("--init-from", default=None,
                   help="start the generator from WORK/runs/INIT_FROM/prompt (a new run; its own optimizer)")
    p.add_argument("--head", default="linear", choices=["linear", "vocab_mixture"], help="prompt generator head")
    p.add_argument("--vocab-size", type=int, default=0, help="vocabulary rows a vocab_mixture head mixes")
    p.add_argument("--vocab-skip", type=int, default=0,
                   help="leave out this many most frequent tokens (function words, punctuation) from the mixture")
    p.add_argument("--bow-weight", type=float, default=0.0, help="bag-of-words loss weight (vocab_mixture)")
    p.add_argument("--bow-pretrain-steps", type=int, default=0, help="bag-of-words-only steps first")
    p.add_argument("--bow-batch-size", type=int, default=256, help="batch size of the bag-of-words pretraining")
    p.add_argument("--prefix-dropout", type=float, default=0.0, help="probability of training without the prefix")
    p.add_argument("--prefix-free-steps", type=int, default=0, help="curriculum: first steps without any prefix")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-limit", type=int, default=200, help="held-out pairs per evaluation")
    p.add_argument("--mixed-precision", default="bf16", choices=["no", "bf16", "fp16"])
    p.add_argument("--device", default=None)
    p.add_argument("--decoder", default=None, help="decoder folder or id (default: the mini preset's)")
    p.add_argument("--time-budget", type=float, default=0.0, help="minutes of training at most (0 = no limit)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    {"prepare": prepare, "diffusion": diffusion, "prompt": prompt, "evaluate": evaluate, "export": export,
     "assemble": assemble, "card": card}[args.stage](args)


if __name__ == "__main__":
    main()
