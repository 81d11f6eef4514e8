"""Baselines that steer the same decoder with the same probe, without planning.

- :func:`best_of_n`: sample N continuations per request with plain decoding, keep the one whose encoder
  embedding the constraint scores best (lowest loss).
- :func:`fudge_generate`: token-level plug-and-play control in the style of FUDGE (Yang & Klein, 2021): at
  every step the top-k next tokens are rescored by the constraint applied to the encoder embedding of
  prefix + continuation so far + candidate, ``log p(token) - strength * loss``, then top-p sampling over
  the k rescored candidates.

Both take a *resolved* constraint (``constraint.resolve(encoder, registry)``), whose ``loss`` on raw
embeddings is ``-log p(target)`` for probe targets, so ``strength = 1`` is FUDGE's Bayes-rule weighting.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import RepetitionPenaltyLogitsProcessor

from dglm.constraints import Constraint
from dglm.decoder import Decoder, check_prefixes
from dglm.encoder import SemanticEncoder
from dglm.pipeline import DEFAULT_GENERATE_KWARGS
from dglm.plan_guidance import cache_keyword


@dataclass
class BestOfNOutput:
    """``continuations[i][j]``: the kept sample j of prefix i; ``losses``: (B, num_samples, n) constraint
    loss of every candidate; ``timings``: seconds for ``decode`` and ``score`` (encode + probe).

    Example:
        >>> out = BestOfNOutput([["a good day"]], torch.zeros(1, 1, 4))
        >>> out.continuations[0][0], out.losses.shape, out.timings
        ('a good day', torch.Size([1, 1, 4]), {})
    """

    continuations: list[list[str]]
    losses: torch.Tensor
    timings: dict[str, float] = field(default_factory=dict)


def best_of_n(decoder: Decoder, encoder: SemanticEncoder, constraint: Constraint, prefixes: Sequence[str],
              num_samples: int = 1, n: int = 4, seed: int | None = None, **generate_kwargs) -> BestOfNOutput:
    """Best-of-N reranking: ``num_samples * n`` plain samples per prefix in one decoder batch; for each of
    the ``num_samples`` outputs keep the best of its ``n`` candidates by ``constraint.loss`` on the encoder
    embedding of the candidate continuation (the space the probe was trained in: continuation embeddings).

    Example:
        >>> from dglm.presets import random_pipeline
        >>> from dglm.constraints import FunctionConstraint
        >>> pipe = random_pipeline("tiny")
        >>> first = FunctionConstraint(lambda x: -x[:, 0], name="first_axis")
        >>> out = best_of_n(pipe.decoder, pipe.encoder, first, ["the game was"], num_samples=2, n=3, seed=0,
        ...                 max_new_tokens=4, min_new_tokens=4)
        >>> len(out.continuations[0]), out.losses.shape
        (2, torch.Size([1, 2, 3]))
    """
    prefixes = check_prefixes(prefixes)
    if n < 1 or num_samples < 1:
        raise ValueError(f"n={n} and num_samples={num_samples} must be >= 1")
    kwargs = {**DEFAULT_GENERATE_KWARGS, **generate_kwargs}
    t0 = time.perf_counter()
    rows = [p for p in prefixes for _ in range(num_samples * n)]  # row-major: prefix, sample, candidate
    texts = decoder.generate(rows, None, seed=seed, **kwargs)
    t1 = time.perf_counter()
    with torch.no_grad():
        losses = constraint.loss(encoder.encode(texts)).float().cpu().reshape(len(prefixes), num_samples, n)
    best = losses.argmin(-1)  # (B, num_samples)
    out = [[texts[(i * num_samples + j) * n + int(best[i, j])] for j in range(num_samples)]
           for i in range(len(prefixes))]
    return BestOfNOutput(out, losses, {"decode": t1 - t0, "score": time.perf_counter() - t1})


@torch.no_grad()
def fudge_generate(decoder: Decoder, encoder: SemanticEncoder, constraint: Constraint, prefixes: Sequence[str],
                   strength: float = 1.0, top_k: int = 8, max_new_tokens: int = 32, top_p: float = 0.9,
                   repetition_penalty: float = 1.2, min_new_tokens: int = 0, seed: int | None = None,
                   timings: dict | None = None) -> list[str]:
    """FUDGE-style controlled sampling, one continuation per prefix (repeat prefixes for more samples).

    Per step, for all rows at once: the decoder's next-token logits (KV cache) get HF's repetition
    penalty over the tokens generated so far (as in ``Decoder.generate``); the top ``top_k`` tokens are
    kept; each candidate is scored by ``constraint.loss`` on the encoder embedding of
    ``prefix + continuation so far + candidate`` (B * top_k texts, one encoder batch);
    the scores ``log p(token) - strength * loss`` are renormalised over the k candidates, cut to top-p and
    sampled. Rows stop at the decoder's eos token (not before ``min_new_tokens``). ``timings``, if given,
    receives seconds spent in ``decode`` (the decoder) and ``score`` (encoder + constraint).

    Example:
        >>> from dglm.presets import random_pipeline
        >>> from dglm.constraints import FunctionConstraint
        >>> pipe = random_pipeline("tiny")
        >>> first = FunctionConstraint(lambda x: -x[:, 0], name="first_axis")
        >>> texts = fudge_generate(pipe.decoder, pipe.encoder, first, ["the game was"], top_k=4,
        ...                        max_new_tokens=4, min_new_tokens=4, seed=0)
        >>> len(texts), len(texts[0].split())
        (1, 4)
    """
    prefixes = check_prefixes(prefixes)
    if top_k < 1 or max_new_tokens < 1:
        raise ValueError(f"top_k={top_k} and max_new_tokens={max_new_tokens} must be >= 1")
    model, tok, dev = decoder.model, decoder.tokenizer, decoder.device
    eos = model.generation_config.eos_token_id if model.generation_config is not None else None
    eos_ids = torch.tensor(sorted({eos} if isinstance(eos, int) else set(eos or [])), dtype=torch.long)
    generator = torch.Generator().manual_seed(seed if seed is not None else int(torch.randint(2**62, ()).item()))
    timings = timings if timings is not None else {}
    timings.setdefault("decode", 0.0)
    timings.setdefault("score", 0.0)
    penalty = RepetitionPenaltyLogitsProcessor(repetition_penalty)

    with decoder.adapter_off():  # plain decoding is the base LM's, entered once for the whole loop
        B = len(prefixes)
        t0 = time.perf_counter()
        embeds, mask, _ = decoder.embed(decoder.tokenize(prefixes))  # (B, L, h), (B, L), left padded
        position = (mask.cumsum(-1) - 1).clamp_min(0)
        cache_name = cache_keyword(model)
        out = model(inputs_embeds=embeds, attention_mask=mask, position_ids=position, use_cache=True)
        past, logits = out[cache_name], out.logits[:, -1].float()  # (B, V)
        next_position = position[:, -1] + 1  # (B,)
        generated = torch.empty(B, 0, dtype=torch.long, device=dev)
        done = torch.zeros(B, dtype=torch.bool)
        timings["decode"] += time.perf_counter() - t0
        for step in range(max_new_tokens):
            t0 = time.perf_counter()
            if generated.shape[1] and repetition_penalty != 1.0:
                logits = penalty(generated, logits)
            if step < min_new_tokens and eos_ids.numel():
                logits[:, eos_ids.to(dev)] = -torch.inf
            logp, cand = logits.log_softmax(-1).topk(min(top_k, logits.shape[-1]), dim=-1)  # (B, k)
            logp, cand = logp.cpu(), cand.cpu()
            k = cand.shape[1]
            t1 = time.perf_counter()
            active = (~done).nonzero().squeeze(1).tolist()  # finished rows need no scores
            texts = [prefixes[i] + tok.decode(generated[i].tolist() + [int(c)], skip_special_tokens=True)
                     for i in active for c in cand[i]]
            loss = torch.zeros(B, k)
            loss[active] = constraint.loss(encoder.encode(texts)).float().cpu().reshape(len(active), k)
            t2 = time.perf_counter()
            score = (logp - strength * loss).log_softmax(-1)
            probs = score.exp()
            # top-p over the rescored candidates: keep the smallest prefix of the sorted list reaching top_p.
            sorted_p, order = probs.sort(-1, descending=True)
            drop = (sorted_p.cumsum(-1) - sorted_p) >= top_p
            sorted_p = sorted_p.masked_fill(drop, 0.0)
            pick = order.gather(1, torch.multinomial(sorted_p, 1, generator=generator))  # (B, 1)
            token = cand.gather(1, pick).squeeze(1)  # (B,)
            token = torch.where(done, torch.full_like(token, decoder.pad_token_id), token)
            done |= torch.isin(token, eos_ids)
            generated = torch.cat([generated, token[:, None].to(dev)], dim=1)
            if bool(done.all()):
                timings["decode"] += t1 - t0
                timings["score"] += t2 - t1
                break
            mask = torch.cat([mask, torch.ones(B, 1, dtype=mask.dtype, device=dev)], dim=1)
            out = model(input_ids=token[:, None].to(dev), attention_mask=mask, position_ids=next_position[:, None],
                        use_cache=True, **{cache_name: past})
            past, logits = out[cache_name], out.logits[:, -1].float()
            next_position = next_position + 1
            timings["decode"] += (t1 - t0) + (time.perf_counter() - t2)
            timings["score"] += t2 - t1
    # Tokens after a row's eos are padding; decode up to (excluding) the first eos.
    texts, stops = [], set(eos_ids.tolist())
    for row in generated.cpu().tolist():
        cut = next((j for j, t in enumerate(row) if t in stops), len(row))
        texts.append(tok.decode(row[:cut], skip_special_tokens=True))
    return texts
