"""The rows of one call, and what a call returns: :class:`Plan` (sampled plans and their soft prompts) and
:class:`GenerationOutput` (continuations), for B prefixes x n samples in row-major order; a long call runs in
chunks of rows (:func:`row_chunks`) whose results merge back into one of each.

Example:
    >>> [c[:3] for c in row_chunks(3, 2, 4)]   # 3 prefixes x 2 samples in chunks of at most 4 rows
    [(0, 2, 2), (2, 3, 2)]
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch


@dataclass
class Plan:
    """Sampled plans and the soft prompts made from them, for B prefixes x n samples (row-major).

    ``embeddings``: (B * n, d) raw unit-norm continuation embeddings; ``soft_prompts``: (B * n, k, h).

    Example (usually made by DGLM.plan):
        >>> plan = Plan(["a", "b"], 3, embeddings=torch.zeros(6, 8), soft_prompts=torch.zeros(6, 4, 16))
        >>> plan.embeddings.reshape(len(plan.prefixes), plan.num_samples, -1).shape, plan.timings
        (torch.Size([2, 3, 8]), {})
    """

    prefixes: list[str]
    num_samples: int
    embeddings: torch.Tensor
    soft_prompts: torch.Tensor
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class GenerationOutput:
    """What :meth:`DGLM.generate` returns: ``continuations[i][j]`` is sample j of prefix i; ``plans`` are the
    raw-space embeddings the decoder was asked to follow, (B, n, d); ``timings`` are seconds per stage.

    Example (usually made by DGLM.generate):
        >>> out = GenerationOutput(["The match"], [[" was won", " ended"]], torch.zeros(1, 2, 8), {"decode": 0.1})
        >>> out.continuations[0][1], out.plans[0].shape
        (' ended', torch.Size([2, 8]))
    """

    prefixes: list[str]
    continuations: list[list[str]]
    plans: torch.Tensor
    timings: dict[str, float]


def derived_seed(seed: int, purpose: str, index: int) -> int:
    """A seed in [0, 2**63) hashed from ``seed``, ``purpose`` and ``index``: independent streams from one
    user seed (a call's chunks, its redraws).

    Example:
        >>> derived_seed(0, "chunk", 1) == derived_seed(0, "chunk", 1) != derived_seed(0, "chunk", 2)
        True
    """
    digest = hashlib.blake2b(f"dglm-{purpose}:{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def row_chunks(num_prefixes: int, num_samples: int, batch_size: int,
               seed: int | None = None) -> Iterator[tuple[int, int, int, int | None]]:
    """Split ``num_prefixes * num_samples`` rows (row-major) into chunks of at most ``batch_size`` rows:
    ``(start, stop, samples, seed)`` for prefixes ``[start, stop)`` with ``samples`` each. Whole prefixes
    are grouped while ``num_samples <= batch_size``; otherwise each prefix's samples are split. Chunk 0 keeps
    ``seed`` (so an unchunked call is unchanged); chunk ``c > 0`` gets a seed hashed from ``(seed, c)``.

    Example:
        >>> [c[:3] for c in row_chunks(3, 2, 4)], [c[:3] for c in row_chunks(1, 5, 2)]
        ([(0, 2, 2), (2, 3, 2)], [(0, 1, 2), (0, 1, 2), (0, 1, 1)])
    """
    def chunk_seed(c: int) -> int | None:
        return seed if seed is None or c == 0 else derived_seed(seed, "chunk", c)

    c = 0
    if num_samples <= batch_size:
        per = batch_size // num_samples
        for start in range(0, num_prefixes, per):
            yield start, min(start + per, num_prefixes), num_samples, chunk_seed(c)
            c += 1
        return
    for i in range(num_prefixes):
        for done in range(0, num_samples, batch_size):
            yield i, i + 1, min(batch_size, num_samples - done), chunk_seed(c)
            c += 1


def sum_timings(parts) -> dict[str, float]:
    """Seconds per stage summed over ``parts`` (anything with a ``timings`` dict: plans, outputs).

    Example:
        >>> one = Plan(["a"], 1, torch.zeros(1, 8), torch.zeros(1, 2, 4), {"diffusion": 1.0})
        >>> two = Plan(["b"], 1, torch.zeros(1, 8), torch.zeros(1, 2, 4), {"prompt": 0.1, "diffusion": 0.5})
        >>> sum_timings([one, two])
        {'diffusion': 1.5, 'prompt': 0.1}
    """
    timings: dict[str, float] = {}
    for part in parts:
        for key, value in part.timings.items():
            timings[key] = timings.get(key, 0.0) + value
    return timings


def merge_plans(prefixes: list[str], num_samples: int, plans: list[Plan]) -> Plan:
    """One :class:`Plan` from the plans of consecutive :func:`row_chunks` (rows stay row-major).

    Example:
        >>> parts = [Plan(["a", "b"], 2, torch.zeros(4, 8), torch.zeros(4, 3, 16), {"diffusion": 1.0}),
        ...          Plan(["c"], 2, torch.ones(2, 8), torch.ones(2, 3, 16), {"diffusion": 0.5})]
        >>> plan = merge_plans(["a", "b", "c"], 2, parts)
        >>> plan.embeddings.shape, plan.timings
        (torch.Size([6, 8]), {'diffusion': 1.5})
    """
    if len(plans) == 1:
        return plans[0]
    return Plan(prefixes, num_samples, torch.cat([p.embeddings for p in plans]),
                torch.cat([p.soft_prompts for p in plans]), sum_timings(plans))


def merge_outputs(prefixes: list[str], outputs: list[tuple[int, GenerationOutput]]) -> GenerationOutput:
    """One :class:`GenerationOutput` from ``(start, output)`` of consecutive :func:`row_chunks`.

    Example (one prefix whose 3 samples were decoded in chunks of 2 and 1):
        >>> first = GenerationOutput(["a"], [["x", "y"]], torch.zeros(1, 2, 8), {"decode": 1.0})
        >>> second = GenerationOutput(["a"], [["z"]], torch.ones(1, 1, 8), {"decode": 0.5})
        >>> out = merge_outputs(["a"], [(0, first), (0, second)])
        >>> out.continuations, out.plans.shape, out.timings
        ([['x', 'y', 'z']], torch.Size([1, 3, 8]), {'decode': 1.5})
    """
    if len(outputs) == 1:
        return outputs[0][1]
    continuations: list[list[str]] = [[] for _ in prefixes]
    plans: list[list[torch.Tensor]] = [[] for _ in prefixes]
    for start, out in outputs:
        for j, (texts, plan) in enumerate(zip(out.continuations, out.plans, strict=True)):
            continuations[start + j].extend(texts)
            plans[start + j].append(plan)  # (n_chunk, d)
    return GenerationOutput(prefixes, continuations, torch.stack([torch.cat(p) for p in plans]),
                            sum_timings(out for _, out in outputs))

