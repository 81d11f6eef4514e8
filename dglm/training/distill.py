"""The distillation term of prompt training: write like the decoder itself.

The plan should move *what* the decoder writes, not *how*. On the continuation tokens, the KL from the frozen
decoder's own next-token distribution (no soft tokens, its adapter switched off: plain decoding) to the
soft-prompted one, ``KL(p_plain || p_soft)`` per token, is added to the plan's NLL with a weight
(:attr:`~dglm.training.train_prompt.PromptTrainingConfig.distill_weight`). The NLL pulls the soft-prompted
distribution toward the true continuation (the plan's content); the KL pulls it back toward the decoder's
own style everywhere else. The plain pass runs without gradients, so only the soft tokens (the prompt
generator) and the adapter learn from it.

Example (a random tiny decoder: with no soft tokens and no adapter both passes are the same model, KL 0):
    >>> from dglm.presets import TINY, random_decoder
    >>> decoder = random_decoder(TINY.decoder)
    >>> nll, kl = nll_and_plain_kl(decoder, [[5, 6]], [[7, 8, 9]], soft=None)
    >>> nll.shape, round(kl.item(), 6)
    (torch.Size([1]), 0.0)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dglm.decoder import Decoder


def continuation_logits(decoder: Decoder, prefixes: Sequence[Sequence[int]], conts: Sequence[Sequence[int]],
                        soft: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoder's logits predicting each continuation token given ``[prefix][soft][earlier tokens]``,
    (B, C, V) in float32, and the mask of real tokens (B, C). Without soft tokens the adapter is off (the base
    LM) and an empty prefix becomes the decoder's start token, as plain decoding of an empty prompt does, so
    every continuation token has a prediction. With soft tokens the adapter (if any) is on.

    Example:
        >>> from dglm.presets import TINY, random_decoder
        >>> decoder = random_decoder(TINY.decoder)
        >>> logits, mask = continuation_logits(decoder, [[5, 6], []], [[7, 8, 9], [4]],
        ...                                    torch.zeros(2, 2, decoder.hidden_size))
        >>> logits.shape, mask.tolist()
        (torch.Size([2, 3, 512]), [[True, True, True], [True, False, False]])
    """
    if soft is None:
        prefixes = [p if len(p) else [decoder.start_token_id] for p in prefixes]
    inputs_embeds, mask, _ = decoder.embed(prefixes, soft, conts)  # [left pad][prefix][soft][cont][right pad]
    width = max((len(c) for c in conts), default=0)
    before = inputs_embeds.shape[1] - width  # prefix + soft columns, the same for every row
    if before < 1:
        raise ValueError("continuation_logits needs a prefix or soft tokens before the continuation")
    position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
    with decoder.adapter_off(soft is None):
        logits = decoder.model(inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=position_ids).logits
    logits = logits[:, before - 1:before - 1 + width].float()  # (B, C, V): column t predicts token t + 1
    return logits, mask[:, before:].bool()


def nll_and_plain_kl(decoder: Decoder, prefixes: Sequence[Sequence[int]], conts: Sequence[Sequence[int]],
                     soft: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row mean NLL of the continuation given ``[prefix][soft]`` (B,), differentiable in ``soft`` and the
    adapter, and per-row mean ``KL(p_plain || p_soft)`` over the continuation tokens (B,), where ``p_plain`` is
    the decoder alone (adapter off, no soft tokens; no gradient) and ``p_soft`` the soft-prompted decoder.

    Example (soft tokens change the distribution, so the KL is positive and reaches them):
        >>> from dglm.presets import TINY, random_decoder
        >>> decoder = random_decoder(TINY.decoder)
        >>> soft = torch.randn(1, 2, decoder.hidden_size, requires_grad=True)
        >>> nll, kl = nll_and_plain_kl(decoder, [[5, 6]], [[7, 8, 9]], soft)
        >>> kl.item() > 0
        True
        >>> kl.sum().backward()
        >>> bool(soft.grad.abs().sum() > 0)
        True
    """
    with torch.no_grad():
        plain, _ = continuation_logits(decoder, prefixes, conts, None)
    student, mask = continuation_logits(decoder, prefixes, conts, soft)
    labels = torch.nn.utils.rnn.pad_sequence([torch.as_tensor(list(c), dtype=torch.long) for c in conts],
                                             batch_first=True).to(student.device)  # (B, C), 0 where padded
    log_q = student.log_softmax(-1)
    nll = -log_q.gather(-1, labels.unsqueeze(-1)).squeeze(-1)  # (B, C)
    log_p = plain.log_softmax(-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)  # (B, C)
    count = mask.sum(1).clamp_min(1)
    return (nll * mask).sum(1) / count, (kl * mask).sum(1) / count
