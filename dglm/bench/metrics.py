"""Benchmark metrics: pure functions on texts, token NLLs and embeddings, and the control-evaluator interface.

Definitions follow the reference ("How the paper evaluates"):

- Dist-3 (:func:`dist_n`): per prompt, distinct 3-grams over all its samples / total words of those
  samples; :func:`dist3` averages it over prompts.
- Div (:func:`div`): product over n = 2, 3, 4 of distinct n-grams / total n-grams, pooled over every
  generation.
- Perplexity (:func:`perplexity`): per sample ``exp((NLL(prefix + cont) - NLL(prefix)) / n_cont)``,
  i.e. the continuation's mean token NLL given the prefix, under an evaluator LM; averaged over samples.
- Plan fidelity (:func:`plan_fidelity`): cosine between the generated continuation's encoder embedding
  and the plan (the proposal the decoder was asked to follow); its gain over plain decoding of the same
  prompts (:func:`fidelity_gain`).
- MAUVE (:func:`mauve_score`): ``mauve-text`` on given features, averaged over k-means seeds.

Words are whitespace-separated tokens (:func:`words`).

Example:
    >>> dist_n(["a b c d", "a b c e"], 3)     # 3-grams: abc, bcd, abc, bce -> 3 distinct over 8 words
    0.375
    >>> round(div(["a b a b"]), 4)            # 2-grams 2/3, 3-grams 2/2, 4-grams 1/1
    0.6667
    >>> perplexity([2.0, 0.0], [2, 0]).tolist()
    [2.718281828459045, nan]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


def words(text: str) -> list[str]:
    """Whitespace tokens of ``text`` (case and punctuation kept, as n-gram diversity metrics usually do).

    Example:
        >>> words("The cat,  the hat.")
        ['The', 'cat,', 'the', 'hat.']
    """
    return text.split()


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """The n-grams of a token list, in order.

    Example:
        >>> ngrams(["a", "b", "c"], 2)
        [('a', 'b'), ('b', 'c')]
    """
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def dist_n(samples: Sequence[str], n: int = 3) -> float:
    """Distinct n-grams over the samples of one prompt / total words of those samples (NaN with no words).

    Example:
        >>> dist_n(["the cat sat", "the cat sat"], 3), dist_n(["the cat sat", "a dog ran"], 3)
        (0.16666666666666666, 0.3333333333333333)
    """
    distinct, total = set(), 0
    for s in samples:
        toks = words(s)
        total += len(toks)
        distinct.update(ngrams(toks, n))
    return len(distinct) / total if total else math.nan


def dist3(groups: Sequence[Sequence[str]]) -> float:
    """Dist-3 averaged over prompts: ``groups[i]`` are the samples of prompt i (prompts with no words skipped).

    Example:
        >>> dist3([["a b c", "a b c"], ["a b c d", "e f g h"]])   # (1/6 + 4/8) / 2
        0.3333333333333333
    """
    values = [v for v in (dist_n(g, 3) for g in groups) if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def div(texts: Sequence[str], ns: Sequence[int] = (2, 3, 4)) -> float:
    """Product over ``ns`` of distinct n-grams / total n-grams, pooled over ``texts`` (NaN if some n has none).

    Example:
        >>> div(["a b c d e"]), div(["a a a a a"])
        (1.0, 0.041666666666666664)
    """
    out = 1.0
    for n in ns:
        grams = [g for t in texts for g in ngrams(words(t), n)]
        if not grams:
            return math.nan
        out *= len(set(grams)) / len(grams)
    return out


def perplexity(nll_sum, n_tokens) -> np.ndarray:
    """Per-sample perplexity ``exp(nll_sum / n_tokens)``; NaN where ``n_tokens`` is 0.

    ``nll_sum`` is ``NLL(prefix + cont) - NLL(prefix)``: the continuation's summed token NLL given the
    prefix, which is what :meth:`dglm.bench.evaluators.EvaluatorLM.score` returns.

    Example:
        >>> perplexity([2.0, 1.0], [2, 0])
        array([2.71828183,        nan])
    """
    nll = np.asarray(nll_sum, dtype=np.float64)
    n = np.asarray(n_tokens, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, np.exp(nll / np.maximum(n, 1)), np.nan)


def summarize(values) -> dict[str, float]:
    """Mean, standard error, median and count of the finite values (NaN fields when there are none).

    Example:
        >>> summarize([1.0, 3.0, float("nan")])
        {'mean': 2.0, 'sem': 1.0, 'median': 2.0, 'n': 2}
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"mean": math.nan, "sem": math.nan, "median": math.nan, "n": 0}
    sem = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan
    return {"mean": float(v.mean()), "sem": sem, "median": float(np.median(v)), "n": int(v.size)}


def plan_fidelity(embeddings: torch.Tensor, plans: torch.Tensor) -> torch.Tensor:
    """Cosine between each continuation's embedding and its plan: (N, d), (N, d) -> (N,).

    Example:
        >>> plan_fidelity(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[1.0, 1.0], [0.0, 1.0]]))
        tensor([0.7071, 1.0000])
    """
    if embeddings.shape != plans.shape:
        raise ValueError(f"embeddings {tuple(embeddings.shape)} and plans {tuple(plans.shape)} must match")
    return torch.nn.functional.cosine_similarity(embeddings.float(), plans.float(), dim=-1)


def fidelity_gain(texts: torch.Tensor, plain: torch.Tensor, plans: torch.Tensor) -> torch.Tensor:
    """How much closer DGLM's continuations are to their plans than plain decoding's continuations of the same
    prompts: ``cos(text, plan) - cos(plain text, plan)`` per row, embeddings (N, d) each -> (N,).

    Example:
        >>> plans = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> fidelity_gain(plans, torch.tensor([[0.0, 1.0], [1.0, 1.0]]), plans)
        tensor([1.0000, 0.2929])
    """
    return plan_fidelity(texts, plans) - plan_fidelity(plain, plans)


def within_prompt_cosine(x: torch.Tensor, samples: int) -> float:
    """Mean cosine between two different rows of the same prompt (a diversity measure: 1 = all alike); rows
    (prompts x samples, d), prompt-major.

    Example:
        >>> within_prompt_cosine(torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), 2)
        0.5
    """
    r = torch.nn.functional.normalize(x.float(), dim=-1).reshape(-1, samples, x.shape[-1])  # (B, n, d)
    pairs = r @ r.transpose(1, 2)  # (B, n, n)
    return float(((pairs.sum((1, 2)) - samples) / (samples * (samples - 1))).mean())


def paired_ratio(log_ppl: np.ndarray, log_ref: np.ndarray) -> dict[str, float]:
    """One system's perplexity against a reference's on the same prompts and seeds: the geometric mean of the
    per-prompt ratios, with a 95% interval from the standard error over prompts; rows (prompts, samples) of
    log-perplexities, each prompt's samples averaged first. Far tighter than comparing two means of a
    heavy-tailed perplexity.

    Example:
        >>> r = paired_ratio(np.log([[2.0, 2.0], [4.0, 4.0]]), np.log([[1.0, 1.0], [2.0, 2.0]]))
        >>> round(r["ratio"], 3), r["n_openers"]
        (2.0, 2)
    """
    diff = (log_ppl - log_ref).mean(axis=1)  # per prompt, averaged over its samples
    diff = diff[np.isfinite(diff)]
    se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else math.nan
    return {"ratio": float(np.exp(diff.mean())), "ratio_low": float(np.exp(diff.mean() - 1.96 * se)),
            "ratio_high": float(np.exp(diff.mean() + 1.96 * se)), "log_ratio_se": se, "n_openers": int(len(diff))}


def mauve_score(p_features, q_features, seeds: Sequence[int] = (0, 1, 2, 3, 4)) -> dict:
    """MAUVE between generations (``p_features`` (N, h)) and references (``q_features`` (M, h)), over
    k-means seeds: ``{"mean", "std", "values", "num_buckets"}``; ``{"error": ...}`` when ``mauve-text`` is
    missing. Buckets: ``max(2, min(N, M) // 10)`` (mauve's own default rule).

    Example:
        >>> x = np.random.default_rng(0).normal(size=(40, 4))
        >>> r = mauve_score(x, x, seeds=(0,))
        >>> r.get("num_buckets", 4), round(r.get("mean", 1.0), 2)  # the same features: MAUVE 1
        (4, 1.0)
    """
    try:
        import mauve
    except ImportError as e:
        return {"error": f"mauve-text is not installed ({e}); pip install mauve-text"}
    p = np.asarray(p_features, dtype=np.float32)
    q = np.asarray(q_features, dtype=np.float32)
    buckets = max(2, min(len(p), len(q)) // 10)
    values = [float(mauve.compute_mauve(p_features=p, q_features=q, num_buckets=buckets, seed=s,
                                        verbose=False).mauve) for s in seeds]
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": values,
            "num_buckets": buckets}


# ----------------------------------------------------------------------------------------------- control


@dataclass
class Scores:
    """What a control evaluator says about N texts: a score per text (``value_name`` says which, e.g.
    ``P(offensive)``) and whether each text meets the target.

    Example:
        >>> s = Scores(np.array([0.9, 0.2]), np.array([True, False]), "P(positive)")
        >>> float(s.success.mean()), s.value_name
        (0.5, 'P(positive)')
    """

    values: np.ndarray
    success: np.ndarray
    value_name: str


class ControlEvaluator:
    """An attribute classifier independent of the steering probe. ``name`` matches the probe it checks
    (``"toxicity"``, ``"sentiment"``, ``"topic"``); ``proxy`` is True when it stands in for the reference's
    evaluator; ``description`` says what it is; ``labels`` are the targets ``score`` accepts, and
    ``default_label`` the one it reports when none is asked for.

    Example:
        >>> class Long(ControlEvaluator):
        ...     name, proxy, description, labels, default_label = "length", True, "proxy: > 3 words", ("long",), "long"
        ...     def score(self, texts, label=None):
        ...         n = np.array([len(t.split()) for t in texts], dtype=float)
        ...         return Scores(n, n > 3, "words")
        >>> Long().score(["a b c d", "a"]).success.tolist()
        [True, False]
    """

    name: str = "evaluator"
    proxy: bool = True
    description: str = ""
    labels: tuple[str, ...] = ()
    default_label: str | None = None
    # Words that, found in a probe's provenance, mean the probe was trained on this evaluator's labels.
    label_source_keywords: tuple[str, ...] = ()

    def score(self, texts: Sequence[str], label: str | None = None) -> Scores:
        """Score ``texts`` against target ``label`` (``default_label`` when None); subclasses implement it."""
        raise NotImplementedError

    def target(self, label: str | None) -> str:
        """``label``, or ``default_label`` when None; an unknown label raises a ValueError listing the known."""
        label = label or self.default_label
        if label not in self.labels:
            raise ValueError(f"label={label!r} is not a label of the {self.name} evaluator; known: {list(self.labels)}")
        return label
