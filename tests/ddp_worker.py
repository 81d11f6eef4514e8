"""One process of the data-parallel test (tests/test_distributed.py): trains a tiny diffusion model and a tiny
prompt generator (with a LoRA adapter on a tiny GPT-2) for a few steps and records, per process, which
training examples it consumed and its final weights.

Run as ``torchrun --nproc_per_node 2 tests/ddp_worker.py OUT`` (or in one process: ``python ... OUT``); writes
``OUT/diffusion`` and ``OUT/prompt`` (the trainers' run folders, main process only) and
``OUT/rank{R}.json`` + ``OUT/rank{R}.safetensors`` (every process).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # conftest's tiny models

N, DIM = 48, 8  # training examples, embedding size


def diffusion_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(N, DIM, generator=g), torch.randn(N, DIM, generator=g)  # distinct rows identify examples


def prompt_data(vocab: int):
    from dglm.training.data import WindowSet

    rng = np.random.default_rng(0)
    prefixes = rng.choice(np.arange(5, vocab // 2), size=(N, 4))  # unique rows identify windows
    conts = rng.integers(vocab // 2, vocab, size=(N, 4))
    cont_emb = torch.from_numpy(rng.standard_normal((N, 1, DIM))).half()
    return WindowSet(np.concatenate([prefixes, conts], 1), np.full((N, 1), 4), cont_emb=cont_emb)


def run(out: str | os.PathLike) -> None:
    from accelerate import PartialState
    from conftest import make_gpt2, make_tokenizer

    from dglm.config import DiffusionConfig, PromptConfig
    from dglm.decoder import Decoder
    from dglm.diffusion import SemanticDiffuser
    from dglm.io import save_tensors
    from dglm.prompt import PromptGenerator
    from dglm.training.train_diffusion import DiffusionTrainingConfig, train_diffuser
    from dglm.training.train_prompt import PromptTrainingConfig, train_prompt_generator

    out = Path(out)
    seen: dict[str, list[list[int]]] = {"diffusion": [], "prompt": []}

    prefix, cont = diffusion_data()
    torch.manual_seed(0)
    diffuser = SemanticDiffuser(DiffusionConfig(dim=DIM, num_tokens=2, token_features=4, width=16, depth=2, heads=2))
    rows = {tuple(r.tolist()): i for i, r in enumerate(prefix)}
    diffuser.prefix_in.register_forward_pre_hook(  # the standardised prefixes each training forward receives
        lambda m, args: seen["diffusion"].append([rows.get(tuple(r.tolist()), -1) for r in args[0]])
        if torch.is_grad_enabled() else None)
    ema = train_diffuser(diffuser, prefix, cont, DiffusionTrainingConfig(steps=3, batch_size=8, warmup=1, save_every=3),
                         out / "diffusion", show_progress_bar=False)

    tok = make_tokenizer()
    decoder = Decoder(make_gpt2(len(tok)), tok, "tiny-gpt2")
    data = prompt_data(len(tok))
    windows = {tuple(r[:4].tolist()): i for i, r in enumerate(data.ids)}
    decoder.embeddings.register_forward_pre_hook(  # prefix ids (left-padded) of each training forward
        lambda m, args: seen["prompt"].append(found) if torch.is_grad_enabled() and (found := [
            windows[t] for r in args[0].tolist() if (t := tuple(r[-4:])) in windows]) else None)
    torch.manual_seed(0)
    generator = PromptGenerator(PromptConfig(dim=DIM, out_dim=decoder.hidden_size, num_soft_tokens=2, width=16,
                                             depth=1, heads=2))
    config = PromptTrainingConfig(steps=3, batch_size=4, warmup=1, lora_rank=2, eval_limit=4, save_every=3,
                                  mixed_precision="no")
    train_prompt_generator(generator, decoder, data, data, torch.zeros(DIM), torch.ones(DIM), config,
                           out / "prompt", show_progress_bar=False)

    rank = PartialState().process_index  # (asked after training: the trainers' accelerator joins the group)
    weights = {f"diffusion.{k}": v for k, v in diffuser.state_dict().items()}
    weights |= {f"ema.{k}": v for k, v in ema.state_dict().items()}
    weights |= {f"generator.{k}": v for k, v in generator.state_dict().items()}
    weights |= {f"decoder.{n}": p.detach() for n, p in decoder.model.named_parameters() if "lora_" in n}
    save_tensors(out / f"rank{rank}.safetensors", weights)
    (out / f"rank{rank}.json").write_text(json.dumps(seen))


if __name__ == "__main__":
    run(sys.argv[1])
