"""Train the SemanticDiffuser on (prefix embedding, continuation embedding) pairs.

AdamW with warmup + cosine decay, gradient clipping, weight decay on matrices only, an EMA of the weights
(what sampling uses and what is saved), mixed precision through accelerate, resumable state. Data parallel
under ``accelerate launch`` / ``torchrun``: each process trains on its own shard of every global batch
(:class:`~dglm.training.loop.ShardedStream`), gradients are averaged by DDP, and only the main process logs,
evaluates and writes.

Example:
    >>> DiffusionTrainingConfig(steps=100).batch_size
    256
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from dglm.diffusion import SemanticDiffuser
from dglm.training.loop import (
    ShardedStream,
    check_finite_loss,
    load_state,
    lr_at,
    make_accelerator,
    param_groups,
    process_layout,
    save_state,
)

logger = logging.getLogger(__name__)


class DiffusionTrainingConfig(BaseModel):
    """Settings of :func:`train_diffuser` (reference: AdamW 1e-3, batch 256, warmup 1000, clip 1.0).

    Example (unknown fields are refused, so a typo cannot pass silently):
        >>> DiffusionTrainingConfig(steps=2000, lr=5e-4).warmup
        500
        >>> DiffusionTrainingConfig(stepz=2000)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        pydantic_core._pydantic_core.ValidationError: 1 validation error for DiffusionTrainingConfig
        ...
    """

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(default=10_000, gt=0,
                       description="Optimizer steps in total (a resumed run continues up to this number).")
    batch_size: int = Field(default=256, gt=0, description=(
        "Pairs per optimizer step, over all processes and accumulation micro-steps (the global batch); must be "
        "divisible by processes x gradient_accumulation_steps."))
    lr: float = Field(default=1e-3, gt=0, description="Peak AdamW learning rate.")
    warmup: int = Field(default=500, ge=0, description="Linear warmup steps before the cosine decay.")
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW weight decay on matrices.")
    grad_clip: float = Field(default=1.0, gt=0, description="Gradient-norm clip.")
    save_every: int = Field(default=1000, gt=0, description=(
        "Save a resumable state (and log the held-out loss) every this many steps."))
    seed: int = Field(default=0, description="Seed of the data order and the noise.")
    mixed_precision: Literal["no", "bf16", "fp16"] | None = Field(default="no", description=(
        "Autocast through accelerate: 'no', 'bf16' or 'fp16'; None takes it from the accelerate config "
        "(accelerate launch --mixed_precision)."))


class DiffusionObjective(torch.nn.Module):
    """The diffusion loss as a module's forward, so the module accelerate prepares (wraps in DDP) is the one
    called and gradients synchronise across processes.

    Example:
        >>> from dglm.config import DiffusionConfig
        >>> model = SemanticDiffuser(DiffusionConfig(dim=8, num_tokens=2, token_features=4, width=16, depth=2,
        ...                                          heads=2))
        >>> DiffusionObjective(model)(torch.randn(4, 8), torch.randn(4, 8), torch.Generator()).shape
        torch.Size([])
    """

    def __init__(self, model: SemanticDiffuser):
        super().__init__()
        self.model = model

    def forward(self, cont: torch.Tensor, prefix: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """v-prediction loss of standardised pairs (B, d), noise drawn from ``generator``."""
        return self.model.loss(cont, prefix, generator=generator)


@torch.no_grad()
def heldout_loss(model: SemanticDiffuser, prefix: torch.Tensor, cont: torch.Tensor, seed: int = 0) -> float:
    """The v-prediction loss on held-out standardised pairs, with fixed noise.

    Example (the same seed draws the same noise, so the number is comparable across evaluations):
        >>> from dglm.config import DiffusionConfig
        >>> model = SemanticDiffuser(DiffusionConfig(dim=8, num_tokens=2, token_features=4, width=16, depth=2,
        ...                                          heads=2))
        >>> prefix, cont = torch.randn(16, 8), torch.randn(16, 8)
        >>> heldout_loss(model, prefix, cont) == heldout_loss(model, prefix, cont)
        True
    """
    g = torch.Generator(prefix.device).manual_seed(seed)
    return model.loss(cont, prefix, generator=g).item()


def train_diffuser(model: SemanticDiffuser, prefix: torch.Tensor, cont: torch.Tensor, config: DiffusionTrainingConfig,
                   out_dir: str | os.PathLike | None = None, heldout: tuple[torch.Tensor, torch.Tensor] | None = None,
                   show_progress_bar: bool = True) -> SemanticDiffuser:
    """Train on standardised pairs ``prefix``, ``cont`` (N, d); returns the EMA model (eval mode).

    With ``out_dir`` the run is resumable (``out_dir/state``) and logs to ``out_dir/log.jsonl`` (both written
    by the main process only; every process reads the state when resuming, so ``out_dir`` must be shared).

    Example (a few steps of a toy model on random pairs):
        >>> import tempfile
        >>> from dglm.config import DiffusionConfig
        >>> model = SemanticDiffuser(DiffusionConfig(dim=8, num_tokens=2, token_features=4, width=16, depth=2,
        ...                                          heads=2))
        >>> prefix, cont = torch.randn(16, 8), torch.randn(16, 8)
        >>> config = DiffusionTrainingConfig(steps=4, batch_size=4, warmup=1, save_every=2)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     ema = train_diffuser(model, prefix, cont, config, out_dir=d, heldout=(prefix, cont),
        ...                          show_progress_bar=False)
        ...     log = [json.loads(line) for line in open(f"{d}/log.jsonl")]
        ...     sorted(os.listdir(d))
        ['log.jsonl', 'state']
        >>> [r["step"] for r in log], "heldout_loss_ema" in log[-1], ema.training
        ([2, 4], True, False)
    """
    if prefix.shape != cont.shape or prefix.dim() != 2 or prefix.shape[1] != model.dim:
        raise ValueError(f"prefix and cont must both be (N, {model.dim}), got {tuple(prefix.shape)} and "
                         f"{tuple(cont.shape)}")
    if model.config.rank_deficit:
        c = model.config
        raise ValueError(f"num_tokens * token_features = {c.num_tokens} * {c.token_features} = "
                         f"{c.num_tokens * c.token_features} is less than dim = {c.dim}: the denoiser could never "
                         f"remove the noise in {c.rank_deficit} directions, and its samples would keep pure noise "
                         f"there; choose num_tokens * token_features >= {c.dim} (e.g. token_features="
                         f"{-(-c.dim // c.num_tokens)})")
    accelerator = make_accelerator(config.mixed_precision)
    device, main = accelerator.device, accelerator.is_main_process
    stream = ShardedStream(len(prefix), config.batch_size, config.seed, accelerator.num_processes,
                           accelerator.process_index, accelerator.gradient_accumulation_steps)
    layout = process_layout(accelerator)
    ema = model.ema_copy()
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr, betas=(0.9, 0.99))
    objective, optimizer = accelerator.prepare(DiffusionObjective(model), optimizer)
    ema.to(device)
    step, log = 0, None
    if out_dir is not None:
        out_dir = Path(out_dir)
        if (out_dir / "state" / "state.json").is_file():
            step = load_state(out_dir / "state", {"model": model, "ema": ema}, optimizer)["step"]
            logger.info("resumed from step %d", step)
        if main:
            out_dir.mkdir(parents=True, exist_ok=True)
            log = open(out_dir / "log.jsonl", "a")
    prefix, cont = prefix.to(device), cont.to(device)
    bar = tqdm(total=config.steps, initial=step, disable=not (show_progress_bar and main), desc="diffusion")
    t0 = time.perf_counter()
    model.train()
    while step < config.steps:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config.lr, config.warmup, config.steps)
        losses = []
        for shard in stream.shards(step):  # one per accumulation micro-step
            idx = torch.from_numpy(shard.index).to(device)
            with accelerator.accumulate(objective):
                with accelerator.autocast():
                    loss = objective(cont[idx], prefix[idx], shard.generator(device))
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach().float())
        # A short EMA horizon early on, so short runs still get a useful average.
        model.update_ema(ema, min(model.config.ema_decay, (1 + step) / (10 + step)))
        step += 1
        bar.update(1)
        if out_dir is not None and (step % config.save_every == 0 or step == config.steps):
            mean_loss = accelerator.reduce(torch.stack(losses).mean(), "mean").item()  # every process calls it
            check_finite_loss(mean_loss, step, out_dir / "state")  # every process: they all stop
            if main:
                record = {"step": step, "loss": mean_loss, "s": time.perf_counter() - t0, **layout}
                if heldout is not None:
                    record["heldout_loss_ema"] = heldout_loss(ema, heldout[0].to(device), heldout[1].to(device))
                bar.set_postfix(loss=f"{mean_loss:.4f}")
                log.write(json.dumps(record) + "\n")
                log.flush()
                save_state(out_dir / "state", {"model": model, "ema": ema}, optimizer, step,
                           {"config": config.model_dump()})
            accelerator.wait_for_everyone()
    bar.close()
    if log is not None:
        log.close()
    return ema.eval()
