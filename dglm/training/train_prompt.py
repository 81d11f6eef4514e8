"""Train the PromptGenerator against a frozen decoder (optionally with LoRA adapters on the decoder).

Each step takes (window, split) pairs, builds soft tokens from the *noise-augmented* standardised embedding
of the true continuation, and minimises the decoder's NLL of that continuation given
``[prefix][soft tokens]``. The known failure is collapse to one fixed, embedding-independent prompt, so the
held-out evaluation (:func:`~dglm.training.plan_use.evaluate_plan_use`) always reports the continuation NLL three ways (plain, true
embedding, shuffled embedding); ``shuffled - true`` is the information from the plan the decoder uses.

Example:
    >>> cfg = PromptTrainingConfig(steps=2000, batch_size=64)
    >>> cfg.lr
    0.001
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm.auto import tqdm

from dglm.decoder import Decoder
from dglm.diffusion import SemanticDiffuser
from dglm.prompt import PromptGenerator
from dglm.schedule import add_noise, augmentation_alpha2
from dglm.training.bag_of_words import bag_of_words_loss, pretrain_bag_of_words
from dglm.training.data import (
    DiffusedPlans,
    SentenceOpeners,
    TopicSwitches,
    WindowSet,
    sentence_ends,
    word_starts,
)
from dglm.training.data import flat_pairs as _pairs
from dglm.training.distill import nll_and_plain_kl
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
from dglm.training.plan_use import evaluate_plan_use

logger = logging.getLogger(__name__)


class PromptTrainingConfig(BaseModel):
    """Settings of :func:`train_prompt_generator`.

    Example:
        >>> config = PromptTrainingConfig(steps=500, prefix_dropout=0.5, mixed_precision="no")
        >>> config.batch_size, config.eval_sigma2
        (8, 0.05)
    """

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(default=2000, gt=0, description=(
        "Optimizer steps in total (a resumed run continues up to this number)."))
    batch_size: int = Field(default=8, gt=0, description=(
        "(window, split) pairs per optimizer step, over all processes and accumulation micro-steps (the "
        "global batch); must be divisible by processes x gradient_accumulation_steps."))
    lr: float = Field(default=1e-3, gt=0, description=(
        "Peak AdamW learning rate of the generator."))
    warmup: int = Field(default=100, ge=0, description=(
        "Linear warmup steps before the cosine decay."))
    weight_decay: float = Field(default=0.01, ge=0, description=(
        "AdamW weight decay on matrices."))
    grad_clip: float = Field(default=1.0, gt=0, description=(
        "Gradient-norm clip."))
    prefix_dropout: float = Field(default=0.0, ge=0, le=1, description=(
        "Probability of training an example without its prefix (`[soft tokens][continuation]` only), so the "
        "soft tokens must carry the continuation's content."))
    switch_fraction: float = Field(default=0.0, ge=0, le=1, description=(
        "Fraction of each batch made of topic switches (:class:`~dglm.training.data.TopicSwitches`): a "
        "prefix cut after a sentence end, the continuation of another document and *its* embedding as the "
        "plan, so the decoder learns to follow a plan that disagrees with the prefix (natural pairs never "
        "ask for that)."))
    opener_fraction: float = Field(default=0.0, ge=0, le=1, description=(
        "Fraction of each batch made of sentence openers (:class:`~dglm.training.data.SentenceOpeners`): a "
        "natural pair whose prefix is cut back to the few words after its last sentence end, the short "
        "prompts users type; switch_fraction + opener_fraction must not exceed 1."))
    diffused_fraction: float = Field(default=0.0, ge=0, le=1, description=(
        "Fraction of each batch made of diffused plans (:class:`~dglm.training.data.DiffusedPlans`): a "
        "natural pair whose plan is its continuation's embedding re-noised to t <= diffused_max_t and denoised "
        "by the work folder's diffusion model, the form the diffusion's own plans take at inference; needs "
        "prefix embeddings. The three fractions must not sum to more than 1."))
    diffused_max_t: float = Field(default=0.6, gt=0, le=1, description=(
        "Highest noise level t (0-1) a diffused plan is re-noised to (each draws t uniformly below it)."))
    opener_words: int = Field(default=5, ge=1, description=(
        "Longest sentence opener, in words, that opener examples keep as the prefix."))
    max_continuation: int = Field(default=0, ge=0, description=(
        "Continuation tokens scored per example at most (0 = all): shorter sequences make a step cheaper; "
        "the plan is still the embedding of the whole continuation."))
    prefix_free_steps: int = Field(default=0, ge=0, description=(
        "Curriculum: the first this many steps drop every prefix (then ``prefix_dropout`` applies)."))
    bow_weight: float = Field(default=0.0, ge=0, description=(
        "Weight of the bag-of-words loss (vocab_mixture heads): the mean of the soft tokens' word "
        "distributions should match the continuation's token histogram. Cheap: it needs no decoder pass."))
    bow_pretrain_steps: int = Field(default=0, ge=0, description=(
        "Steps of bag-of-words-only training (no decoder pass) before the NLL phase."))
    bow_batch_size: int = Field(default=256, gt=0, description=(
        "Batch size of the bag-of-words pretraining."))
    distill_weight: float = Field(default=0.0, ge=0, le=100, description=(
        "Weight of the distillation term (dglm.training.distill): on the continuation tokens, the mean KL from "
        "the frozen decoder's own next-token distribution (adapter off, no soft tokens) to the soft-prompted "
        "one, added to the plan's NLL, so the plan moves what is written rather than how; 0 = off (it adds a "
        "gradient-free decoder pass per step). Logged as `kl` per step and `plain_kl` per evaluation."))
    contrastive: float = Field(default=0.0, ge=0, description=(
        "Weight of the contrastive term relu(margin - (NLL_shuffled - NLL_true)); 0 = off (it doubles the "
        "cost)."))
    margin: float = Field(default=0.3, ge=0, description=(
        "Margin in nats per token for the contrastive term."))
    lora_rank: int = Field(default=0, ge=0, description=(
        "Rank of LoRA adapters on the decoder's attention projections (0 = decoder fully frozen)."))
    lora_lr: float = Field(default=2e-4, gt=0, description=(
        "Learning rate of the LoRA adapters."))
    eval_sigma2: float = Field(default=0.05, ge=0, le=1, description=(
        "Noise level sigma^2 used for the held-out evaluation (the inference default)."))
    eval_limit: int = Field(default=200, gt=1, description=(
        "Held-out (window, split) pairs used by each evaluation."))
    eval_every: int = Field(default=500, gt=0, description=(
        "Evaluate every this many steps (and at the end)."))
    save_every: int = Field(default=250, gt=0, description=(
        "Save a resumable state every this many steps (and at the end)."))
    seed: int = Field(default=0, description=(
        "Seed of the data order and the noise."))
    mixed_precision: Literal["no", "bf16", "fp16"] | None = Field(default="bf16", description=(
        "'no', 'bf16' or 'fp16': autocast through accelerate; None takes it from the accelerate config "
        "(accelerate launch --mixed_precision)."))
    time_budget_s: float = Field(default=0.0, ge=0, description=(
        "Wall-clock budget in seconds for the whole run (0 = none), counted across resumes (the state "
        "records the time trained so far): the learning-rate schedule follows whichever of steps and time "
        "is further along, and training stops when the budget is spent. To train longer, resume with a "
        "larger budget."))

    @model_validator(mode="after")
    def _fractions(self) -> PromptTrainingConfig:
        if self.switch_fraction + self.opener_fraction + self.diffused_fraction > 1:
            raise ValueError(f"switch_fraction={self.switch_fraction} + opener_fraction={self.opener_fraction} + "
                             f"diffused_fraction={self.diffused_fraction} must not exceed 1 (the rest of each "
                             "batch is natural pairs)")
        return self


class PromptObjective(torch.nn.Module):
    """The prompt generator and the decoder as one module whose forward is the training loss, so the module
    accelerate prepares (DDP) is the one called and the gradients of the generator and of any adapter
    synchronise across processes (the decoder's frozen base weights are not DDP's concern).

    Example (a random tiny decoder; the loss and the per-row NLL):
        >>> from dglm.config import PromptConfig
        >>> from dglm.presets import TINY, random_decoder
        >>> decoder = random_decoder(TINY.decoder)
        >>> generator = PromptGenerator(PromptConfig(dim=8, out_dim=32, num_soft_tokens=2, width=16, depth=2,
        ...                                          heads=2))
        >>> objective = PromptObjective(generator, decoder, PromptTrainingConfig())
        >>> loss, nll, kl = objective([[5, 6], []], [[7, 8], [9]], torch.randn(2, 8), torch.full((2,), 0.9),
        ...                           torch.randn(2, 8))
        >>> loss.shape, nll.shape, kl.tolist()  # (the KL is computed only with distill_weight > 0)
        (torch.Size([]), torch.Size([2]), [0.0, 0.0])
    """

    def __init__(self, generator: PromptGenerator, decoder: Decoder, config: PromptTrainingConfig):
        super().__init__()
        self.generator, self.decoder, self.config = generator, decoder, config
        self.bow = generator.config.head == "vocab_mixture" and config.bow_weight > 0

    def forward(self, prefixes: list[list[int]], conts: list[list[int]], x: torch.Tensor, alpha2: torch.Tensor,
                noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss, per-row NLL (B,) of continuations given ``[prefix][soft tokens of x noised by alpha2]`` and
        per-row KL from plain decoding (B,; zeros unless ``distill_weight``)."""
        c = self.config
        z = add_noise(x, alpha2, noise)
        soft = self.generator(z, alpha2)
        if c.distill_weight:
            nll, kl = nll_and_plain_kl(self.decoder, prefixes, conts, soft)
        else:
            nll = self.decoder.continuation_nll(prefixes, conts, soft)
            kl = torch.zeros_like(nll)
        loss = nll.mean() + c.distill_weight * kl.mean()
        if self.bow:
            loss = loss + c.bow_weight * bag_of_words_loss(self.generator, z, alpha2, conts)
        if c.contrastive:
            soft_other = self.generator(add_noise(x.roll(1, 0), alpha2, noise), alpha2)
            nll_other = self.decoder.continuation_nll(prefixes, conts, soft_other)
            loss = loss + c.contrastive * torch.relu(c.margin - (nll_other - nll)).mean()
        return loss, nll, kl


def _shard_batch(train, extras, shard, step, config, device, mean, std):
    """A shard's prefixes, continuations, standardised plans, noise levels and noise, and its switch count.

    ``extras`` maps each example kind drawn from its own source (``"switch"``: topic switches, ``"opener"``:
    sentence openers, ``"diffused"``: diffused plans) to ``(source, fraction)``; the rest of the shard is natural pairs, whose prefix is
    dropped with probability ``prefix_dropout``."""
    rng, g = shard.rng(), shard.generator(device)
    b = len(shard.index)
    kinds = list(extras)
    fractions = [extras[k][1] for k in kinds]
    counts = rng.multinomial(b, fractions + [max(0.0, 1 - sum(fractions))])  # per kind, then natural pairs
    prefixes, conts, emb = _pairs(train, shard.index[:counts[-1]])
    p_drop = 1.0 if step < config.prefix_free_steps else config.prefix_dropout
    prefixes = [[] if rng.random() < p_drop else p for p in prefixes]
    for kind, n in zip(kinds, counts[:-1], strict=True):  # their prefixes are always kept
        if n:
            more = extras[kind][0].sample(int(n), rng)
            prefixes, conts, emb = prefixes + more[0], conts + more[1], torch.cat([emb, more[2]])
    if config.max_continuation:
        conts = [c[:config.max_continuation] for c in conts]
    x = (emb.to(device) - mean) / std
    alpha2 = augmentation_alpha2(torch.rand(len(x), generator=g, device=device))
    n_switch = int(counts[kinds.index("switch")]) if "switch" in extras else 0
    return prefixes, conts, x, alpha2, torch.randn(x.shape, generator=g, device=device), n_switch


def train_prompt_generator(generator: PromptGenerator, decoder: Decoder, train: WindowSet, evaluation: WindowSet,
                           mean: torch.Tensor, std: torch.Tensor, config: PromptTrainingConfig,
                           out_dir: str | os.PathLike, show_progress_bar: bool = True,
                           diffuser: SemanticDiffuser | None = None) -> dict:
    """Train ``generator`` in place; resumable from ``out_dir/state``. Logs to ``out_dir/log.jsonl`` and
    returns the final held-out evaluation. The decoder's base weights are never updated. ``diffuser``: the
    diffusion model whose plans ``config.diffused_fraction`` of each batch imitate.

    Data parallel under ``accelerate launch`` / ``torchrun``: every process trains on its own shard of each
    global batch (:class:`~dglm.training.loop.ShardedStream`), DDP averages the gradients, and only the main
    process logs, evaluates and saves (the other processes return ``{}``; ``out_dir`` must be shared).

    Example (two steps on toy windows with a random tiny decoder):
        >>> import tempfile
        >>> import numpy as np
        >>> from dglm.config import PromptConfig
        >>> from dglm.presets import TINY, random_decoder
        >>> decoder = random_decoder(TINY.decoder)
        >>> generator = PromptGenerator(PromptConfig(dim=8, out_dim=32, num_soft_tokens=2, width=16, depth=2,
        ...                                          heads=2))
        >>> rng = np.random.default_rng(0)
        >>> data = WindowSet(rng.integers(4, 100, (6, 8)), np.full((6, 1), 4), cont_emb=torch.randn(6, 1, 8))
        >>> config = PromptTrainingConfig(steps=2, batch_size=2, warmup=1, eval_limit=4, mixed_precision="no")
        >>> with tempfile.TemporaryDirectory() as d:
        ...     result = train_prompt_generator(generator, decoder, data, data, torch.zeros(8), torch.ones(8),
        ...                                     config, d, show_progress_bar=False)
        ...     sorted(os.listdir(d))
        ['log.jsonl', 'state']
        >>> result["n"]
        4
    """
    out_dir = Path(out_dir)
    accelerator = make_accelerator(config.mixed_precision)
    device, main = accelerator.device, accelerator.is_main_process
    total_pairs = len(train) * train.splits.shape[1]
    stream = ShardedStream(total_pairs, config.batch_size, config.seed, accelerator.num_processes,
                           accelerator.process_index, accelerator.gradient_accumulation_steps)
    layout = process_layout(accelerator)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    mean, std = mean.to(device), std.to(device)
    decoder.model.requires_grad_(False)
    groups = param_groups(generator, config.weight_decay)
    modules: dict[str, torch.nn.Module] = {"generator": generator}
    if config.lora_rank or decoder.has_adapter:  # a new adapter, or the one the decoder already carries
        lora = decoder.add_adapter(config.lora_rank) if not decoder.has_adapter else \
            [p.requires_grad_(True) for n, p in decoder.model.named_parameters() if "lora_" in n]
        groups.append({"params": lora, "weight_decay": 0.0, "lora": True})
        modules["lora"] = torch.nn.ParameterList(lora)  # adapters only, not the base weights
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.99))
    objective = PromptObjective(generator, decoder, config).to(device)
    generator.bind(decoder.embeddings.weight)
    resuming = (out_dir / "state" / "state.json").is_file()
    log = open(out_dir / "log.jsonl", "a") if main else None
    if generator.config.head == "vocab_mixture" and config.bow_pretrain_steps and not resuming:
        with open(out_dir / "bow.jsonl", "a") if main else contextlib.nullcontext() as bow_log:
            pretrain_bag_of_words(generator, train, mean, std, config, show_progress_bar and main, bow_log)
    objective, optimizer = accelerator.prepare(objective, optimizer)
    step, trained_s = 0, 0.0
    if resuming:
        meta = load_state(out_dir / "state", modules, optimizer)
        step, trained_s = meta["step"], meta.get("trained_s", 0.0)
        logger.info("resumed from step %d after %.0f s of training", step, trained_s)
    ends = sentence_ends(decoder.tokenizer)
    starts, extras = word_starts(decoder.tokenizer), {}
    if config.switch_fraction:
        extras["switch"] = (TopicSwitches(train, ends), config.switch_fraction)
    if config.opener_fraction:
        extras["opener"] = (SentenceOpeners(train, ends, starts, config.opener_words),
                            config.opener_fraction)
    if config.diffused_fraction:
        if diffuser is None:
            raise ValueError(f"diffused_fraction={config.diffused_fraction} needs the diffusion model (diffuser=...)")
        extras["diffused"] = (DiffusedPlans(train, diffuser, mean.cpu(), std.cpu(), config.diffused_max_t),
                              config.diffused_fraction)
    bar = tqdm(total=config.steps, initial=step, disable=not (show_progress_bar and main), desc="prompt generator")
    t0, result = time.perf_counter() - trained_s, {}
    params = [p for grp in optimizer.param_groups for p in grp["params"]]

    def elapsed() -> float:  # the main process's clock, so every process stops and schedules alike
        return _broadcast(time.perf_counter() - t0, accelerator) if config.time_budget_s else time.perf_counter() - t0

    generator.train()
    while step < config.steps:
        spent = elapsed()
        if config.time_budget_s and spent >= config.time_budget_s:
            # The bar counts steps; a run the time budget ends early would stop part way: close it at the step
            # reached, saying why.
            bar.total = step
            bar.set_description(f"prompt generator (time budget of {config.time_budget_s:g} s reached)")
            bar.refresh()
            break
        at = max(step, int(spent / config.time_budget_s * config.steps)) if config.time_budget_s else step
        for group in optimizer.param_groups:
            group["lr"] = lr_at(at, config.lora_lr if group.get("lora") else config.lr, config.warmup, config.steps)
        totals = torch.zeros(4, device=device)  # loss, nll, switches, kl summed over this process's shards
        for shard in stream.shards(step):  # one per accumulation micro-step
            *batch, n_switch = _shard_batch(train, extras, shard, step, config, device, mean, std)
            with accelerator.accumulate(objective):
                with accelerator.autocast():
                    loss, nll, kl = objective(*batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, config.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            totals += torch.stack([loss.detach().float(), nll.detach().float().mean(),
                                   torch.tensor(n_switch, device=device), kl.detach().float().mean()])
        totals = accelerator.reduce(totals, "sum")
        shards = accelerator.num_processes * accelerator.gradient_accumulation_steps
        step += 1
        bar.update(1)
        spent = elapsed()
        last = step == config.steps or (config.time_budget_s and spent >= config.time_budget_s)
        record = {"step": step, "loss": totals[0].item() / shards, "nll": totals[1].item() / shards, "s": spent,
                  "switches": int(totals[2].item()), **layout}
        if config.distill_weight:
            record["kl"] = totals[3].item() / shards
        check_finite_loss(record["loss"], step, out_dir / "state")  # summed over processes: they all stop
        if main and (step % config.eval_every == 0 or last):
            result = evaluate_plan_use(generator, decoder, evaluation, mean.cpu(), std.cpu(), config.eval_sigma2,
                                       limit=config.eval_limit, ends=ends, starts=starts,
                                       opener_words=config.opener_words)
            record["eval"] = result
            logger.info("step %d eval %s", step, result)
            bar.set_postfix(gap=f"{result['gap']:.4f}", switch_gap=f"{result.get('switch_gap', float('nan')):.3f}")
        if main:
            log.write(json.dumps(record) + "\n")
            log.flush()
        if main and (step % config.save_every == 0 or last):
            save_state(out_dir / "state", modules, optimizer, step,
                       {"config": config.model_dump(), "trained_s": time.perf_counter() - t0})
        if step % config.eval_every == 0 or step % config.save_every == 0 or last:
            accelerator.wait_for_everyone()
    bar.close()
    if log is not None:
        log.close()
    return result


def _broadcast(value: float, accelerator) -> float:
    """``value`` as the main process has it (a no-op in a single process)."""
    if accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast

    return broadcast(torch.tensor([value], dtype=torch.float64, device=accelerator.device)).item()
