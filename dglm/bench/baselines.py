"""The peers dglm is measured against, on the same decoder (base weights, adapter off) and prompts.

- :func:`best_of_n`: sample N continuations per request with plain decoding, keep the one whose encoder
  embedding the (resolved) constraint scores best (lowest loss).
- :func:`fudge_generate`: FUDGE as published (:mod:`dglm.bench.fudge`): a prefix discriminator of the
  continuation alone rescores the decoder's top-k tokens at every step.
- :func:`steered_generate`: activation steering (:mod:`dglm.bench.steering`) around plain decoding.
- :func:`prompted_prefixes`: prompting: a topic header or a chat instruction before each prefix (the
  evaluators then score the continuation after the original prefix, never the instruction).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from dglm.bench.fudge import FudgeProcessor, PrefixDiscriminator
from dglm.bench.steering import SteeringVector
from dglm.constraints import Constraint
from dglm.constraints.builtin import Target
from dglm.decoder import Decoder, check_prefixes
from dglm.encoder import SemanticEncoder
from dglm.pipeline import DEFAULT_GENERATE_KWARGS


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


def fudge_terms(constraint: Constraint, discriminators: dict[str, PrefixDiscriminator],
                ) -> list[tuple[PrefixDiscriminator, str, float]]:
    """``(discriminator, label, weight)`` for each built-in target of a constraint (unresolved), as
    :class:`~dglm.bench.fudge.FudgeProcessor` takes them.

    Example:
        >>> from dglm.constraints import parse_constraint
        >>> d = PrefixDiscriminator(torch.zeros(4, 2), torch.zeros(2), ("negative", "positive"))
        >>> [(label, w) for _, label, w in fudge_terms(parse_constraint("-sentiment.negative()"), {"sentiment": d})]
        [('positive', 1.0)]
    """
    terms = []
    for leaf, weight in constraint.terms():
        if not isinstance(leaf, Target) or leaf.probe not in discriminators:
            raise ValueError(f"{leaf!r}: FUDGE needs a prefix discriminator of a built-in probe; have "
                             f"{sorted(discriminators)}")
        terms.append((discriminators[leaf.probe], leaf.label, weight))
    return terms


def fudge_generate(decoder: Decoder, terms: list[tuple[PrefixDiscriminator, str, float]], prefixes: Sequence[str],
                   strength: float = 1.0, top_k: int = 50, seed: int | None = None, **generate_kwargs) -> list[str]:
    """FUDGE: plain decoding (base LM) whose top ``top_k`` tokens per step are rescored by
    ``strength * sum(weight * log P(label | continuation + candidate))`` (``terms``, see :func:`fudge_terms`);
    top-p then samples among them. One continuation per prefix; ``generate_kwargs`` as for
    :meth:`Decoder.generate` (its repetition penalty runs before the rescoring).

    Example:
        >>> from dglm.presets import TINY, random_decoder
        >>> dec = random_decoder(TINY.decoder)
        >>> d = PrefixDiscriminator(torch.zeros(len(dec.tokenizer), 2), torch.zeros(2), ("a", "b"))
        >>> texts = fudge_generate(dec, [(d, "b", 1.0)], ["the game was"], max_new_tokens=3, min_new_tokens=3, seed=0)
        >>> len(texts), len(texts[0].split())
        (1, 3)
    """
    kwargs = {**DEFAULT_GENERATE_KWARGS, **generate_kwargs}
    processors = [*kwargs.pop("logits_processor", []), FudgeProcessor(terms, strength, top_k)]
    # top_k=0: the processor already cut to its top_k; HF's default top-k warper (50) must not cut further.
    return decoder.generate(prefixes, None, seed=seed, logits_processor=processors, top_k=0, **kwargs)


def steered_generate(decoder: Decoder, vector: SteeringVector, prefixes: Sequence[str], scale: float,
                     seed: int | None = None, **generate_kwargs) -> list[str]:
    """Plain decoding (base LM) with ``scale * vector`` added to the residual stream (hooks removed after).

    Example:
        >>> from dglm.presets import TINY, random_decoder
        >>> dec = random_decoder(TINY.decoder)
        >>> vec = SteeringVector({0: torch.ones(dec.hidden_size)})
        >>> len(steered_generate(dec, vec, ["the game"], 4.0, seed=0, max_new_tokens=2))
        1
    """
    kwargs = {**DEFAULT_GENERATE_KWARGS, **generate_kwargs}
    with vector.apply(decoder.model, scale):  # plain decoding: generate switches any adapter off itself
        return decoder.generate(prefixes, None, seed=seed, **kwargs)


PROMPT_STYLES = ("header", "instruction", "insistent", "few-shot")


def prompt_requests(subject: str, negated: bool = False) -> dict[str, str]:
    """What each prompting style asks for ``subject`` (a topic in words): a header, an instruction, an
    insistent instruction; ``negated``: the same asking to avoid it ("Do not write about sports.", the
    instruction :func:`dglm.instructions.instruction_for` writes for ``-topic('sports')``).

    Example:
        >>> prompt_requests("sports")["instruction"], prompt_requests("sports", negated=True)["instruction"]
        ('Write a short text about sports.', 'Do not write about sports.')
    """
    if negated:
        return {"header": f"Topic: anything but {subject}.", "instruction": f"Do not write about {subject}.",
                "insistent": f"Continue the text, but do not write about {subject}. No sentence may mention "
                             f"{subject}."}
    return {"header": f"Topic: {subject}.", "instruction": f"Write a short text about {subject}.",
            "insistent": f"Write a short text about {subject}. Every sentence must be about {subject}."}


def requested_prefixes(tokenizer, prefixes: Sequence[str], style: str, request: str) -> list[str]:
    r"""Each prefix with ``request`` before it: ``header`` puts ``request`` and a blank line first; every
    other style (instruction, insistent, few-shot) asks it in a user turn of the tokenizer's chat template
    and starts the assistant's answer with the prefix (:func:`dglm.instructions.chat_prefixes`).

    Example:
        >>> requested_prefixes(None, ["The house"], "header", "Topic: sports.")
        ['Topic: sports.\n\nThe house']
    """
    from dglm.instructions import chat_prefixes

    if style not in PROMPT_STYLES:
        raise ValueError(f"style={style!r}; accepted: {list(PROMPT_STYLES)}")
    if style == "header":
        return [f"{request}\n\n{p}" for p in prefixes]
    return chat_prefixes(tokenizer, prefixes, request)


def prompted_prefixes(tokenizer, prefixes: Sequence[str], subject: str, style: str) -> list[str]:
    r"""Each prefix with a request for ``subject`` before it (:func:`prompt_requests`,
    :func:`requested_prefixes`): ``header`` puts ``"Topic: <subject>.\n\n"`` first; ``instruction`` and
    ``insistent`` (which adds "every sentence") ask for it in a user turn of the tokenizer's chat template
    and start the assistant's answer with the prefix (a tokenizer without a chat template gets the request
    as plain text).

    Example:
        >>> from dglm.presets import TINY, random_decoder
        >>> prompted_prefixes(random_decoder(TINY.decoder).tokenizer, ["The house"], "sports", "header")
        ['Topic: sports.\n\nThe house']
    """
    requests = prompt_requests(subject)
    if style not in requests:
        raise ValueError(f"style={style!r}; accepted: {list(requests)}")
    return requested_prefixes(tokenizer, prefixes, style, requests[style])
