"""The bag-of-words objective of ``vocab_mixture`` prompt generators: the mean of the soft tokens' word
distributions should match the continuation's token histogram. Cheap (no decoder pass), so it can run as a
pretraining phase or beside the NLL.

Example:
    >>> from dglm.config import PromptConfig
    >>> generator = PromptGenerator(PromptConfig(dim=8, out_dim=16, num_soft_tokens=2, width=16, depth=2, heads=2,
    ...                                          head="vocab_mixture", vocab_size=50))
    >>> bag_of_words_loss(generator, torch.randn(2, 8), torch.full((2,), 0.9), [[4, 5], [7]]).item() > 0
    True
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch
from tqdm.auto import tqdm

from dglm.prompt import PromptGenerator
from dglm.schedule import add_noise, augmentation_alpha2
from dglm.training.data import flat_pairs
from dglm.training.loop import lr_at, param_groups


def bag_of_words_loss(generator: PromptGenerator, z: torch.Tensor, alpha2: torch.Tensor,
                      conts: list[list[int]]) -> torch.Tensor:
    """Cross-entropy between each continuation's token histogram (over the generator's vocabulary rows) and
    the mean of its soft tokens' word distributions.

    Example:
        >>> from dglm.config import PromptConfig
        >>> generator = PromptGenerator(PromptConfig(dim=8, out_dim=16, num_soft_tokens=2, width=16, depth=2,
        ...                                          heads=2, head="vocab_mixture", vocab_size=50))
        >>> loss = bag_of_words_loss(generator, torch.randn(2, 8), torch.full((2,), 0.9), [[4, 5, 6], [7, 7]])
        >>> loss.shape, loss.item() > 0
        (torch.Size([]), True)
    """
    index = torch.full((int(generator.vocab_ids.max()) + 1,), -1, dtype=torch.long, device=z.device)
    index[generator.vocab_ids] = torch.arange(len(generator.vocab_ids), device=z.device)
    target = torch.zeros(len(conts), len(generator.vocab_ids), device=z.device)
    for i, ids in enumerate(conts):
        ids = torch.as_tensor(ids, device=z.device)
        pos = index[ids[ids < len(index)]]
        target[i].index_add_(0, pos[pos >= 0], torch.ones(int((pos >= 0).sum()), device=z.device))
    target = target / target.sum(-1, keepdim=True).clamp_min(1)
    log_mix = generator.word_logits(z, alpha2).float().log_softmax(-1).logsumexp(1) - math.log(
        generator.config.num_soft_tokens)  # (B, V): log of the mean over soft tokens
    return -(target * log_mix).sum(-1).mean()


def pretrain_bag_of_words(generator, train, mean, std, config, show_progress_bar, log) -> None:
    """Teach the vocab-mixture head which words each embedding's continuation holds (no decoder pass). Every
    process runs the same seeded steps (they are cheap); DDP then starts from the main process's weights.

    Example (30 steps on 4 windows; the log holds a record every 50 steps and at the last one):
        >>> import io
        >>> from dglm.config import PromptConfig
        >>> from dglm.training.data import WindowSet
        >>> from dglm.training.train_prompt import PromptTrainingConfig
        >>> _ = torch.manual_seed(0)
        >>> generator = PromptGenerator(PromptConfig(dim=8, out_dim=16, num_soft_tokens=2, width=16, depth=2,
        ...                                          heads=2, head="vocab_mixture", vocab_size=50))
        >>> train = WindowSet(np.arange(40).reshape(4, 10), np.array([[3], [5], [2], [6]]),
        ...                   cont_emb=torch.randn(4, 1, 8))
        >>> config = PromptTrainingConfig(bow_pretrain_steps=30, bow_batch_size=8, lr=1e-2)
        >>> log = io.StringIO()
        >>> pretrain_bag_of_words(generator, train, torch.zeros(8), torch.ones(8), config, False, log)
        >>> records = [json.loads(line) for line in log.getvalue().splitlines()]
        >>> [r["step"] for r in records], records[-1]["bow_loss"] < records[0]["bow_loss"]
        ([0, 29], True)
    """
    device = mean.device
    rng, g = np.random.default_rng(config.seed), torch.Generator(device).manual_seed(config.seed)
    optimizer = torch.optim.AdamW(param_groups(generator, config.weight_decay), lr=config.lr, betas=(0.9, 0.99))
    total_pairs = len(train) * train.splits.shape[1]
    for step in tqdm(range(config.bow_pretrain_steps), disable=not show_progress_bar, desc="bag of words"):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config.lr, min(100, config.bow_pretrain_steps // 10), config.bow_pretrain_steps)
        _, conts, emb = flat_pairs(train, rng.integers(0, total_pairs, config.bow_batch_size))
        x = (emb.to(device) - mean) / std
        alpha2 = augmentation_alpha2(torch.rand(len(x), generator=g, device=device))
        z = add_noise(x, alpha2, torch.randn(x.shape, generator=g, device=device))
        loss = bag_of_words_loss(generator, z, alpha2, conts)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(generator.parameters(), config.grad_clip)
        optimizer.step()
        if log is not None and (step % 50 == 0 or step == config.bow_pretrain_steps - 1):
            log.write(json.dumps({"step": step, "bow_loss": loss.item()}) + "\n")
