"""Does the decoder use the plan? Held-out continuation NLL with the true plan's soft tokens, a shuffled
plan's and none, on natural pairs, topic switches and sentence openers, and the same over noise levels.

The gap ``shuffled - true`` (nats per token) is the information from the plan that the decoder actually
uses: the deciding number of every prompt-generator design (results/mini/README.md). A generator that collapsed
to one fixed prompt scores a gap near 0 however low its true-plan NLL.

Example (a random tiny decoder and generator, six toy windows split 4 / 4):
    >>> import numpy as np, torch
    >>> from dglm.config import PromptConfig
    >>> from dglm.presets import TINY, random_decoder
    >>> from dglm.prompt import PromptGenerator
    >>> from dglm.training.data import WindowSet
    >>> decoder = random_decoder(TINY.decoder)
    >>> generator = PromptGenerator(PromptConfig(dim=8, out_dim=32, num_soft_tokens=2, width=16, depth=2, heads=2))
    >>> data = WindowSet(np.random.default_rng(0).integers(4, 100, (6, 8)), np.full((6, 1), 4),
    ...                  cont_emb=torch.randn(6, 1, 8))
    >>> result = evaluate_plan_use(generator, decoder, data, torch.zeros(8), torch.ones(8), limit=6)
    >>> result["n"], round(result["gap"], 1) == round(result["shuffled"] - result["true"], 1)
    (6, True)
"""

from __future__ import annotations

import numpy as np
import torch

from dglm.decoder import Decoder
from dglm.prompt import PromptGenerator
from dglm.schedule import add_noise
from dglm.training.data import SentenceOpeners, WindowSet, sentence_cut
from dglm.training.data import flat_pairs as _pairs
from dglm.training.distill import nll_and_plain_kl


def _held_out_batches(data: WindowSet, n: int, batch_size: int, seed: int):
    """Batches of the first ``n`` pairs: prefix ids, continuation ids, their raw continuation embeddings,
    another pair's embeddings (never the same pair's) and one seeded noise draw of the embeddings' shape."""
    g = torch.Generator().manual_seed(seed)
    index = np.arange(n)
    for start in range(0, n, batch_size):
        idx = index[start:start + batch_size]
        prefixes, conts, emb = _pairs(data, idx)
        other = _pairs(data, (idx + n // 2) % n)[2]
        yield prefixes, conts, emb, other, torch.randn(emb.shape, generator=g)


def _switch_batches(data: WindowSet, ends: np.ndarray, n: int, batch_size: int, seed: int):
    """Held-out topic switches: batches of (prefix of pair i cut after its last sentence end, the continuation
    of pair ``i + n // 2``, that continuation's embedding, a third pair's embedding as the shuffled plan, one
    seeded noise draw). Pairs whose prefix holds no sentence end are skipped."""
    s = data.splits.shape[1]
    g = torch.Generator().manual_seed(seed + 1)
    usable = []
    for k in range(n):
        prefix = data.pair(k // s, k % s)[0]
        if cut := sentence_cut(prefix, ends):
            usable.append((k, prefix[:cut]))
    for start in range(0, len(usable), batch_size):
        rows = usable[start:start + batch_size]
        prefixes = [p for _, p in rows]
        other = np.array([(k + n // 2) % n for k, _ in rows])
        _, conts, emb = _pairs(data, other)
        shuffled = _pairs(data, (other + n // 3) % n)[2]
        yield prefixes, conts, emb, shuffled, torch.randn(emb.shape, generator=g)


def _soft_prompts(generator: PromptGenerator, emb: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                  sigma2: float, noise: torch.Tensor) -> torch.Tensor:
    """The generator's soft prompts of raw embeddings, standardised and re-noised to ``sigma2`` with ``noise``."""
    device = next(generator.parameters()).device
    alpha2 = torch.full((len(emb),), 1 - sigma2)
    return generator(add_noise((emb - mean) / std, alpha2, noise).to(device), alpha2.to(device))


@torch.no_grad()
def evaluate_plan_use(generator: PromptGenerator, decoder: Decoder, data: WindowSet, mean: torch.Tensor,
                      std: torch.Tensor, sigma2: float = 0.05, batch_size: int = 16, limit: int = 200,
                      seed: int = 0, ends: np.ndarray | None = None,
                      starts: np.ndarray | None = None, opener_words: int = 5) -> dict[str, float]:
    """Held-out continuation NLL per token: plain (no soft tokens), soft tokens from the true continuation
    embedding, from a shuffled one (another window's), and the same two with the prefix removed.

    Returns means, the gaps ``shuffled - true`` with their standard errors, and the mean pairwise cosine of the
    soft prompts of different embeddings (near 1 = collapsed to one prompt). With ``ends`` (a sentence-end mask
    over the vocabulary, :func:`~dglm.training.data.sentence_ends`) it also measures **topic switches**: each
    prefix cut after its last sentence end, followed by another window's held-out continuation (mostly another
    document's), NLL plain / with that continuation's plan / with a shuffled plan; ``switch_gap = shuffled -
    true`` is how much a plan that disagrees with the prefix is followed.

    Example (a random tiny decoder and generator, six toy windows split 4 / 4):
        >>> from dglm.config import PromptConfig
        >>> from dglm.presets import TINY, random_decoder
        >>> decoder = random_decoder(TINY.decoder)
        >>> generator = PromptGenerator(PromptConfig(dim=8, out_dim=32, num_soft_tokens=2, width=16, depth=2,
        ...                                          heads=2))
        >>> rng = np.random.default_rng(0)
        >>> data = WindowSet(rng.integers(4, 100, (6, 8)), np.full((6, 1), 4), cont_emb=torch.randn(6, 1, 8))
        >>> result = evaluate_plan_use(generator, decoder, data, torch.zeros(8), torch.ones(8), limit=6)
        >>> result["n"], sorted(k for k in result if "gap" in k)
        (6, ['gap', 'gap_se', 'no_prefix_gap', 'no_prefix_gap_se'])
    """
    was_training = generator.training
    generator.eval()
    n = min(limit, len(data) * data.splits.shape[1])
    rows: dict[str, list[torch.Tensor]] = {k: [] for k in ("plain", "true", "shuffled", "np_true", "np_shuffled",
                                                           "kl")}
    prompts = []
    for prefixes, conts, emb, shuffled, noise in _held_out_batches(data, n, batch_size, seed):
        soft_true = _soft_prompts(generator, emb, mean, std, sigma2, noise)
        soft_shuf = _soft_prompts(generator, shuffled, mean, std, sigma2, noise)
        empty = [[] for _ in prefixes]
        rows["plain"].append(decoder.continuation_nll(prefixes, conts).cpu())  # the base LM (adapter off)
        true, kl = nll_and_plain_kl(decoder, prefixes, conts, soft_true)  # KL(plain || true plan) per token
        rows["true"].append(true.cpu())
        rows["kl"].append(kl.cpu())
        rows["shuffled"].append(decoder.continuation_nll(prefixes, conts, soft_shuf).cpu())
        rows["np_true"].append(decoder.continuation_nll(empty, conts, soft_true).cpu())
        rows["np_shuffled"].append(decoder.continuation_nll(empty, conts, soft_shuf).cpu())
        prompts.append(soft_true.flatten(1).float().cpu())
    r = {k: torch.cat(v) for k, v in rows.items()}
    p = torch.nn.functional.normalize(torch.cat(prompts), dim=-1)
    cos = (p @ p.T)[~torch.eye(len(p), dtype=torch.bool)].mean()
    gap, np_gap = r["shuffled"] - r["true"], r["np_shuffled"] - r["np_true"]
    switch = {} if ends is None else {"switch_n": 0}
    if ends is not None:  # (no held-out prefix holding a sentence end: switch_n = 0 and no switch numbers)
        sw: dict[str, list[torch.Tensor]] = {"plain": [], "true": [], "shuffled": []}
        for prefixes, conts, emb, shuffled, noise in _switch_batches(data, ends, n, batch_size, seed):
            sw["plain"].append(decoder.continuation_nll(prefixes, conts).cpu())
            for name, x in (("true", emb), ("shuffled", shuffled)):
                sw[name].append(decoder.continuation_nll(prefixes, conts,
                                                         _soft_prompts(generator, x, mean, std, sigma2, noise)).cpu())
    if ends is not None and sw["plain"]:
        t = {k: torch.cat(v) for k, v in sw.items()}
        switch_gap = t["shuffled"] - t["true"]
        switch = {"switch_plain": t["plain"].mean().item(), "switch_true": t["true"].mean().item(),
                  "switch_shuffled": t["shuffled"].mean().item(), "switch_gap": switch_gap.mean().item(),
                  "switch_gap_se": (switch_gap.std() / len(switch_gap) ** 0.5).item(), "switch_n": len(switch_gap)}
    if ends is not None and starts is not None:
        switch |= _opener_use(generator, decoder, data, mean, std, sigma2, ends, starts, opener_words,
                              batch_size, n, seed)
    generator.train(was_training)
    return switch | {"plain": r["plain"].mean().item(), "true": r["true"].mean().item(),
            "shuffled": r["shuffled"].mean().item(), "gap": gap.mean().item(),
            "gap_se": (gap.std() / len(gap) ** 0.5).item(), "no_prefix_true": r["np_true"].mean().item(),
            "no_prefix_shuffled": r["np_shuffled"].mean().item(), "no_prefix_gap": np_gap.mean().item(),
            "no_prefix_gap_se": (np_gap.std() / len(np_gap) ** 0.5).item(),
            "plain_kl": r["kl"].mean().item(), "prompt_pairwise_cosine": cos.item(), "soft_token_norm": torch.cat(prompts).norm(dim=-1).mean().item()
            / generator.config.num_soft_tokens ** 0.5, "n": n}


def _opener_use(generator, decoder, data, mean, std, sigma2, ends, starts, words, batch_size, n, seed) -> dict:
    """``evaluate_plan_use``'s sentence-opener numbers (``{"opener_n": 0}`` when no held-out pair has one)."""
    try:
        openers = SentenceOpeners(data, ends, starts, words)
    except ValueError:
        return {"opener_n": 0}
    index = openers.index[:n]
    other = np.roll(index, len(index) // 2)  # another opener pair's plan as the shuffled one
    g = torch.Generator().manual_seed(seed + 2)
    rows: dict[str, list[torch.Tensor]] = {"plain": [], "true": [], "shuffled": [], "kl": []}
    for start in range(0, len(index), batch_size):
        prefixes, conts, emb = openers.take(index[start:start + batch_size])
        shuffled = openers.take(other[start:start + batch_size])[2]
        noise = torch.randn(emb.shape, generator=g)
        rows["plain"].append(decoder.continuation_nll(prefixes, conts).cpu())
        true, kl = nll_and_plain_kl(decoder, prefixes, conts, _soft_prompts(generator, emb, mean, std, sigma2, noise))
        rows["true"].append(true.cpu())
        rows["kl"].append(kl.cpu())
        soft = _soft_prompts(generator, shuffled, mean, std, sigma2, noise)
        rows["shuffled"].append(decoder.continuation_nll(prefixes, conts, soft).cpu())
    t = {k: torch.cat(v) for k, v in rows.items()}
    gap = t["shuffled"] - t["true"]
    return {"opener_plain": t["plain"].mean().item(), "opener_true": t["true"].mean().item(),
            "opener_plain_kl": t["kl"].mean().item(),
            "opener_shuffled": t["shuffled"].mean().item(), "opener_gap": gap.mean().item(),
            "opener_gap_se": (gap.std() / len(gap) ** 0.5).item(), "opener_n": len(gap)}


@torch.no_grad()
def noise_knob_curve(generator: PromptGenerator, decoder: Decoder, data: WindowSet, mean: torch.Tensor,
                     std: torch.Tensor, sigma2s: list[float], batch_size: int = 16, limit: int = 200,
                     seed: int = 0) -> list[dict[str, float]]:
    """The noise knob measured on held-out pairs: for each re-noising level sigma^2, the continuation NLL per
    token with the true and a shuffled embedding's soft tokens (prefix present, one noise draw shared by all
    levels, so consecutive levels are compared pair by pair).

    Per level: ``true``, ``gap = shuffled - true`` (what the plan still tells the decoder; 0 at sigma^2 = 1,
    where both see only noise) with ``gap_se``, and ``rise``, the mean increase of the true NLL over the
    previous level, with its paired standard error ``rise_se``. A working knob has ``gap`` falling and
    ``rise`` positive at every step.

    Example (a random tiny decoder and generator, six toy windows split 4 / 4):
        >>> from dglm.config import PromptConfig
        >>> from dglm.presets import TINY, random_decoder
        >>> decoder = random_decoder(TINY.decoder)
        >>> generator = PromptGenerator(PromptConfig(dim=8, out_dim=32, num_soft_tokens=2, width=16, depth=2,
        ...                                          heads=2))
        >>> rng = np.random.default_rng(0)
        >>> data = WindowSet(rng.integers(4, 100, (6, 8)), np.full((6, 1), 4), cont_emb=torch.randn(6, 1, 8))
        >>> curve = noise_knob_curve(generator, decoder, data, torch.zeros(8), torch.ones(8), [0.0, 1.0], limit=6)
        >>> [row["sigma2"] for row in curve], abs(curve[-1]["gap"]) < 1e-4
        ([0.0, 1.0], True)
    """
    was_training = generator.training
    generator.eval()
    n = min(limit, len(data) * data.splits.shape[1])
    true: dict[float, list[torch.Tensor]] = {s: [] for s in sigma2s}
    shuffled: dict[float, list[torch.Tensor]] = {s: [] for s in sigma2s}
    for prefixes, conts, emb, other, noise in _held_out_batches(data, n, batch_size, seed):
        for sigma2 in sigma2s:
            for x, rows in ((emb, true), (other, shuffled)):
                soft = _soft_prompts(generator, x, mean, std, sigma2, noise)
                rows[sigma2].append(decoder.continuation_nll(prefixes, conts, soft).cpu())
    generator.train(was_training)
    curve, previous = [], None
    for sigma2 in sigma2s:
        t, gap = torch.cat(true[sigma2]), torch.cat(shuffled[sigma2]) - torch.cat(true[sigma2])
        row = {"sigma2": sigma2, "true": t.mean().item(), "gap": gap.mean().item(),
               "gap_se": (gap.std() / n ** 0.5).item()}
        if previous is not None:
            rise = t - previous
            row |= {"rise": rise.mean().item(), "rise_se": (rise.std() / n ** 0.5).item()}
        curve.append(row)
        previous = t
    return curve
