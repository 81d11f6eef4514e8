"""Plan guidance: classifier-free guidance on the decoder's side, toward the plan.

At every decoding step the next-token log-probabilities given the plan's soft tokens are contrasted with
those given a *null plan*, the soft tokens of pure noise (sigma^2 = 1, where the prompt generator's input
holds no plan):

    log p(token) = log p_null + w * (log p_plan - log p_null)

``w = 1`` is plain DGLM decoding; ``w > 1`` weights what the plan adds over "some plan" by ``w``: the two
branches share the prefix, the soft-token slots and any decoder adapter, so their difference is the plan's
content, not the soft tokens' presence (contrasting with plain decoding instead amplifies the soft tokens'
own disturbance).

Two implementations of the same contrast:

- :class:`PairedPlanGuidance` (what :meth:`dglm.DGLM.generate` passes to :meth:`dglm.Decoder.generate` as a
  ``logits_processor``): the null branch runs in the same forward as the guided one. While attached to the
  LM it doubles every forward of the guided batch, the guided rows first and the null rows after them, so
  the two KV caches sit side by side in one cache and one forward per token serves both; the guided half
  of the logits goes on to ``generate`` (which samples the guided rows exactly as without guidance), the
  null half to this processor.
- :class:`PlanGuidance`: a plain ``LogitsProcessor`` that runs the null branch as a second forward with its
  own KV cache, for user code that calls ``generate`` on a model it does not want hooked.

The null branch may be any other soft prompts laid out like the plan's: *control contrast*
(``Controller.generate(..., control_scale=w)``) uses the unguided plan of the same noise, so that only what
the constraint changed in the plan is weighted by ``w``. The repetition penalty, which Hugging Face applies
to the guided branch's scores before this processor runs, must be applied to the null branch too (the
``repetition_penalty`` argument): then both branches are penalised alike and ``w`` weights the plans'
difference only, not the penalty.

It is a Hugging Face ``LogitsProcessor``, so user code decoding :meth:`dglm.Controller.prompt_embeds` can
pass it to its own ``generate`` call; ``DGLM.generate(..., plan_scale=w)`` does it for you.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
from transformers import LogitsProcessor, RepetitionPenaltyLogitsProcessor

from dglm.decoder import cache_keyword


class PlanGuidance(LogitsProcessor):
    """Contrast the plan's next-token log-probabilities with a null plan's, with weight ``scale``.

    ``inputs_embeds`` / ``attention_mask`` are the null branch's inputs, laid out exactly like the guided
    call's (same prefixes and padding, the null plan's soft tokens in place of the plan's), e.g. from
    ``decoder.embed(ids, null_soft)``. One instance serves one ``generate`` call (it holds that call's
    KV cache). ``repetition_penalty``: the guided call's, applied to the null branch alike (1 = none).

    Example (a random tiny decoder; the guided call and the null branch differ only in their soft tokens):
        >>> from dglm.presets import TINY, random_decoder
        >>> dec = random_decoder(TINY.decoder)
        >>> ids = dec.tokenize(["the game was"])
        >>> soft, null = torch.randn(1, 2, dec.hidden_size), torch.randn(1, 2, dec.hidden_size)
        >>> embeds, mask, _ = dec.embed(ids, soft)
        >>> penalty = RepetitionPenaltyLogitsProcessor(1.2)  # the guided branch's, as dglm's decoder applies it
        >>> guide = PlanGuidance(dec.model, *dec.embed(ids, null)[:2], scale=2.0, repetition_penalty=1.2)
        >>> out = dec.model.generate(inputs_embeds=embeds, attention_mask=mask, logits_processor=[penalty, guide],
        ...                          max_new_tokens=3, min_new_tokens=3, do_sample=False,
        ...                          pad_token_id=dec.pad_token_id)
        >>> out.shape
        torch.Size([1, 3])
    """

    def __init__(self, model, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, scale: float,
                 repetition_penalty: float = 1.0):
        self.model, self.scale = model, float(scale)
        self.penalty = RepetitionPenaltyLogitsProcessor(repetition_penalty) if repetition_penalty != 1.0 else None
        self.inputs_embeds, self.attention_mask = inputs_embeds, attention_mask
        self.cache_name = cache_keyword(model)
        self.cache = None

    @torch.no_grad()
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.cache is None:  # first step: the null branch's whole prompt
            if scores.shape[0] != self.inputs_embeds.shape[0]:  # num_return_sequences expanded the batch
                repeats = scores.shape[0] // self.inputs_embeds.shape[0]
                self.inputs_embeds = self.inputs_embeds.repeat_interleave(repeats, dim=0)
                self.attention_mask = self.attention_mask.repeat_interleave(repeats, dim=0)
            position = (self.attention_mask.cumsum(-1) - 1).clamp_min(0)  # left padding, as HF generate does
            out = self.model(inputs_embeds=self.inputs_embeds, attention_mask=self.attention_mask,
                             position_ids=position, use_cache=True)
        else:  # later steps: the token the guided call just chose, on the null branch's cache
            self.attention_mask = torch.cat([self.attention_mask, self.attention_mask.new_ones(len(scores), 1)], 1)
            position = self.attention_mask.sum(-1, keepdim=True) - 1  # (B, 1)
            out = self.model(input_ids=input_ids[:, -1:], attention_mask=self.attention_mask, position_ids=position,
                             use_cache=True, **{self.cache_name: self.cache})
        self.cache = out[self.cache_name]
        return contrast(input_ids, scores, out.logits[:, -1], self.scale, self.penalty)


def contrast(input_ids: torch.Tensor, scores: torch.Tensor, null_logits: torch.Tensor, scale: float,
             penalty: RepetitionPenaltyLogitsProcessor | None) -> torch.Tensor:
    """``log p_null + scale * (log p_guided - log p_null)`` (B, V), the null branch's logits (B, V) penalised
    like the guided branch's scores were, computed in float32 and returned in the scores' dtype.

    Example (scale 1 gives the guided distribution back; scale 2 sharpens what the plan changed):
        >>> guided, null = torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 0.0]])
        >>> ids = torch.zeros(1, 1, dtype=torch.long)
        >>> contrast(ids, guided, null, 1.0, None).softmax(-1).round(decimals=3)
        tensor([[0.7870, 0.1070, 0.1070]])
        >>> contrast(ids, guided, null, 2.0, None).softmax(-1).round(decimals=3)
        tensor([[0.9650, 0.0180, 0.0180]])
    """
    null = null_logits.float()
    if penalty is not None:
        null = penalty(input_ids, null)
    null = null.log_softmax(-1)
    guided = scores.float().log_softmax(-1)
    return (null + scale * (guided - null)).to(scores.dtype)


# Forward keywords whose first dimension is the batch; the paired forward doubles them.
_BATCHED_INPUTS = ("input_ids", "attention_mask", "position_ids", "token_type_ids")


class PairedPlanGuidance(LogitsProcessor):
    """Plan guidance with the null branch batched into the guided call's own forward (one forward per token).

    ``null_soft`` (B, k, h): the null branch's soft tokens (a null plan's, or another plan's of the same rows).
    Inside ``with guide.attached(model):`` every forward of ``model`` on the guided batch (B rows, or B x
    ``num_return_sequences``) runs ``[guided rows; null rows]``: for the prompt, the null rows are the guided
    rows' ``inputs_embeds`` with their last k positions (dglm's layout puts the soft tokens there) replaced by
    ``null_soft``, and the positions before them, the same in both halves, run once for the B guided rows and
    enter the KV cache as both halves' (``shared_positions``; where the cache cannot select rows, the whole
    prompt runs doubled); then each new token the guided rows chose for both halves, with the same mask and
    positions (the two halves share their layout). ``generate`` sees the guided half only; this processor
    reads the null half. Hooks act only in the attaching thread and are removed on exit; one instance serves
    one ``generate`` call (:meth:`dglm.Decoder.generate` attaches it for the call). Its output equals :class:`PlanGuidance`'s within float tolerance.

    Example (the same call as :class:`PlanGuidance`'s example, with half the forwards):
        >>> from dglm.presets import TINY, random_decoder
        >>> dec = random_decoder(TINY.decoder)
        >>> ids = dec.tokenize(["the game was"])
        >>> soft, null = torch.randn(1, 2, dec.hidden_size), torch.randn(1, 2, dec.hidden_size)
        >>> embeds, mask, _ = dec.embed(ids, soft)
        >>> guide = PairedPlanGuidance(null, scale=2.0)
        >>> with guide.attached(dec.model):
        ...     out = dec.model.generate(inputs_embeds=embeds, attention_mask=mask, logits_processor=[guide],
        ...                              max_new_tokens=3, min_new_tokens=3, do_sample=False,
        ...                              pad_token_id=dec.pad_token_id)
        >>> out.shape, guide.forwards
        (torch.Size([1, 3]), 3)
    """

    def __init__(self, null_soft: torch.Tensor, scale: float, repetition_penalty: float = 1.0):
        if null_soft.dim() != 3:
            raise ValueError(f"null_soft must have shape (batch, k, hidden), got {tuple(null_soft.shape)}")
        self.null_soft, self.scale = null_soft, float(scale)
        self.penalty = RepetitionPenaltyLogitsProcessor(repetition_penalty) if repetition_penalty != 1.0 else None
        self.null_logits: torch.Tensor | None = None  # (B, V), the null rows' last logits of the latest forward
        self.forwards = 0  # paired forwards run so far
        self._thread: int | None = None
        self._pending: int | None = None  # guided rows of the forward in flight, set by the pre-hook
        self.shared_positions = 0  # prompt positions run once for both halves (the prefix before the soft tokens)
        self._inner = False  # True while the shared prefix runs (its forward is neither doubled nor split)
        self._cache_name = "cache"

    @contextlib.contextmanager
    def attached(self, model) -> Iterator[PairedPlanGuidance]:
        """Pair the branches in every forward of ``model`` (a peft wrapper is looked through) inside the block."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._thread, self._cache_name = threading.get_ident(), cache_keyword(base)
        handles = [base.register_forward_pre_hook(self._double, with_kwargs=True),
                   base.register_forward_hook(self._split, with_kwargs=True)]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()
            self._thread = None

    def _rows(self, kwargs) -> int | None:
        x = kwargs.get("inputs_embeds")
        x = kwargs.get("input_ids") if x is None else x
        return None if x is None else x.shape[0]

    def _double(self, module, args, kwargs):
        rows = self._rows(kwargs)
        if self._inner or args or threading.get_ident() != self._thread or rows is None \
                or rows % self.null_soft.shape[0]:
            return None  # not the guided call's forward (the shared prefix's, another thread's, positional inputs)
        if rows != self.null_soft.shape[0]:  # num_return_sequences expanded the guided batch
            self.null_soft = self.null_soft.repeat_interleave(rows // self.null_soft.shape[0], dim=0)
        kwargs = dict(kwargs)
        embeds = kwargs.get("inputs_embeds")  # (B, T, h)
        shared = 0
        if embeds is not None:  # the prompt: the null rows get the null plan's soft tokens, in the last k places
            k = min(self.null_soft.shape[1], embeds.shape[1])
            soft = self.null_soft[:, self.null_soft.shape[1] - k:].to(embeds)  # (B, k, h)
            shared = self._prefill_shared_prefix(module, kwargs, embeds.shape[1] - k)
            tail = embeds[:, shared:]  # (B, T - shared, h)
            null = torch.cat([tail[:, :tail.shape[1] - k], soft], dim=1)
            kwargs["inputs_embeds"] = torch.cat([tail, null])  # (2B, T - shared, h)
        for name in _BATCHED_INPUTS:  # the same tokens, mask and positions for both halves
            value = kwargs.get(name)
            if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == rows:
                kwargs[name] = torch.cat([value, value])
        if shared:  # positions (and cache positions) of the uncached tail only; the mask stays whole
            for name in ("position_ids", "cache_position"):
                if isinstance(kwargs.get(name), torch.Tensor):
                    kwargs[name] = kwargs[name][..., shared:]
        self._pending = rows
        return args, kwargs

    def _prefill_shared_prefix(self, module, kwargs, length: int) -> int:
        """Run the prompt's first ``length`` positions (the prefix, identical in both halves) once, for the B
        guided rows, into the call's KV cache, then give the cache's rows to both halves ([rows; rows]).
        Returns the number of positions now cached (0 where the cache cannot be shared: no cache object that
        selects rows, nothing before the soft tokens, no position ids to slice, or the ``cache_position``
        argument of older transformers versions, which this does not rewrite)."""
        cache = kwargs.get(self._cache_name)
        positions = kwargs.get("position_ids")
        if length <= 0 or not hasattr(cache, "batch_select_indices") or cache.get_seq_length() \
                or not isinstance(positions, torch.Tensor) or "cache_position" in kwargs:
            return 0
        mask = kwargs.get("attention_mask")
        self._inner = True
        try:
            module(inputs_embeds=kwargs["inputs_embeds"][:, :length], position_ids=positions[:, :length],
                   attention_mask=None if mask is None else mask[:, :length], use_cache=True,
                   **{self._cache_name: cache}, **({"logits_to_keep": 1} if "logits_to_keep" in kwargs else {}))
        finally:
            self._inner = False
        rows = kwargs["inputs_embeds"].shape[0]
        cache.batch_select_indices(torch.arange(rows, device=positions.device).repeat(2))  # (2B, ...) per layer
        self.shared_positions = length
        return length

    def _split(self, module, args, kwargs, output):
        rows, self._pending = self._pending, None
        if rows is None:
            return None
        logits = output.logits  # (2B, T, V): guided rows, then null rows
        self.null_logits = logits[rows:, -1]
        output.logits = logits[:rows]
        self.forwards += 1
        return output

    @torch.no_grad()
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.null_logits is None or self.null_logits.shape[0] != scores.shape[0]:
            raise RuntimeError("PairedPlanGuidance saw no paired forward for this step: call generate inside "
                               "`with guide.attached(model):` with the guided batch's rows")
        null, self.null_logits = self.null_logits, None
        return contrast(input_ids, scores, null, self.scale, self.penalty)
