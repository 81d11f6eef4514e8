"""Plan guidance: classifier-free guidance on the decoder's side, toward the plan.

At every decoding step the next-token log-probabilities given the plan's soft tokens are contrasted with
those given a *null plan*, the soft tokens of pure noise (sigma^2 = 1, where the prompt generator's input
holds no plan):

    log p(token) = log p_null + w * (log p_plan - log p_null)

``w = 1`` is plain DGLM decoding; ``w > 1`` weights what the plan adds over "some plan" by ``w``: the two
branches share the prefix, the soft-token slots and any decoder adapter, so their difference is the plan's
content, not the soft tokens' presence (contrasting with plain decoding instead amplifies the soft tokens'
own disturbance). It costs a second decoder pass per new token (the null branch keeps its own KV cache).

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

import inspect

import torch
from transformers import LogitsProcessor, RepetitionPenaltyLogitsProcessor


def cache_keyword(model) -> str:
    """The name of a causal LM's KV-cache argument and output: transformers >= 5.2x says ``cache``, older
    versions ``past_key_values`` (a peft wrapper is looked through).

    Example:
        >>> from dglm.presets import TINY, random_decoder
        >>> cache_keyword(random_decoder(TINY.decoder).model) in ("cache", "past_key_values")
        True
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


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
        null = out.logits[:, -1].float()  # (B, V)
        if self.penalty is not None:
            null = self.penalty(input_ids, null)
        null = null.log_softmax(-1)
        guided = scores.float().log_softmax(-1)
        return (null + self.scale * (guided - null)).to(scores.dtype)
