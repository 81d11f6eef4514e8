"""The style task's data and its independent evaluator: an attribute words cannot name.

The style is that of the quips in Debian's ``fortunes`` package (``apt-get install fortunes``:
``/usr/share/games/fortunes/``), texts the checkpoint was never trained on; the other class is plain
Wikipedia prose from the corpus. ``recipes/build_style_data.py`` writes them as JSON lines
``{"text", "label", "split", "source"}`` with labels :data:`STYLE` / :data:`PLAIN` and four disjoint
splits:

- ``probe``: what the steering probe is fitted on in one line (``Probe.fit``), and the peers' supervision
  (activation steering's vector, FUDGE's discriminator): the same texts for every method;
- ``evaluator``: what the independent evaluator is fitted on (other quips, other Wikipedia text);
- ``check``: held out from both, to measure the evaluator;
- ``fewshot``: examples for the few-shot prompting peer.

The evaluator (:class:`StyleEvaluator`) is a **proxy**: TF-IDF over character 2-5-grams + logistic
regression, different features (characters, not sentence embeddings) and a different model from the probe,
fitted on different texts. It measures "reads like the fortune file rather than like Wikipedia", which is
not the same as "is witty".

Example:
    >>> data = quick_style_data()
    >>> sorted(data), sorted(set(data["probe"][1]))
    (['check', 'evaluator', 'fewshot', 'probe'], ['fortune', 'plain'])
    >>> clf = fit_style_evaluator(*data["evaluator"], validation=data["check"])
    >>> clf.score(["Never trust a wise fool with your money."]).values.shape
    (1,)
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dglm.bench.metrics import ControlEvaluator, Scores

STYLE, PLAIN = "fortune", "plain"
SPLITS = ("probe", "evaluator", "check", "fewshot")
PROBE_NAME = "style"  # the registry name of the fitted probe: the control is target('style', 'fortune')
CONTROL = f"target({PROBE_NAME!r}, {STYLE!r})"
# What the prompting peer asks for: the best words for the style we found, and a few-shot prompt.
REQUESTS = {
    "header": "Style: a witty one-line quip, like a fortune cookie's.",
    "instruction": "Write a short, witty quip in the style of a fortune cookie or the Unix fortune program: "
                   "an aphorism or a joke.",
    "insistent": "Write a short, witty quip in the style of a fortune cookie or the Unix fortune program: an "
                 "aphorism or a joke. Every sentence must be witty and aphoristic, never encyclopedic.",
}


def read_style_data(path: str | os.PathLike) -> dict[str, tuple[list[str], list[str]]]:
    """``{split: (texts, labels)}`` from the JSON lines ``recipes/build_style_data.py`` wrote.

    Example:
        >>> read_style_data("missing.jsonl")
        Traceback (most recent call last):
            ...
        FileNotFoundError: style data 'missing.jsonl' not found; build it with: python recipes/build_style_data.py \
--out missing.jsonl (needs apt-get install fortunes and the corpus)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"style data {str(path)!r} not found; build it with: python "
                                f"recipes/build_style_data.py --out {path} (needs apt-get install fortunes and the "
                                f"corpus)")
    out: dict[str, tuple[list[str], list[str]]] = {s: ([], []) for s in SPLITS}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            out[row["split"]][0].append(row["text"])
            out[row["split"]][1].append(row["label"])
    return out


_QUICK_STYLE = "never always wise fool money love time life luck friend trouble tomorrow"
_QUICK_PLAIN = "city river king war people world school house century region province built"


def quick_style_data(per_class: int = 24, seed: int = 0) -> dict[str, tuple[list[str], list[str]]]:
    """Synthetic two-class word sequences in every split (quick mode: a smoke test, meaningless).

    Example:
        >>> texts, labels = quick_style_data(4)["probe"]
        >>> len(texts), labels[:2]
        (8, ['fortune', 'fortune'])
    """
    rng = random.Random(seed)
    out = {}
    for split in SPLITS:
        texts, labels = [], []
        for label, words in ((STYLE, _QUICK_STYLE), (PLAIN, _QUICK_PLAIN)):
            for _ in range(per_class):
                texts.append(" ".join(rng.choices(words.split(), k=8)))
                labels.append(label)
        out[split] = (texts, labels)
    return out


class StyleEvaluator(ControlEvaluator):
    """Proxy style classifier: TF-IDF over character 2-5-grams (within word boundaries) + logistic regression,
    fitted on the ``evaluator`` split; success when P(``fortune``) >= 0.5. Independent of the style probe in
    features, model and texts.

    Example:
        >>> data = quick_style_data()
        >>> clf = fit_style_evaluator(*data["evaluator"])
        >>> clf.labels, clf.score(["wise fool money love never"]).success.tolist()
        (('fortune', 'plain'), [True])
    """

    name = "style"
    proxy = True
    labels = (STYLE, PLAIN)
    default_label = STYLE

    def __init__(self, pipeline, description: str, validation: dict | None = None):
        self.pipeline = pipeline
        self.description = description
        self.validation = validation or {}

    def score(self, texts: Sequence[str], label: str | None = None) -> Scores:
        """P(``label``) per text; success when it is at least 0.5."""
        label = self.target(label)
        p = self.pipeline.predict_proba(list(texts))[:, list(self.pipeline.classes_).index(label)]
        return Scores(values=p, success=p >= 0.5, value_name=f"P({label})")


def fit_style_evaluator(texts: Sequence[str], labels: Sequence[str],
                        validation: tuple[Sequence[str], Sequence[str]] | None = None) -> StyleEvaluator:
    """Fit :class:`StyleEvaluator` on (texts, labels); with ``validation``, record held-out accuracy and the
    style class's precision and recall.

    Example:
        >>> data = quick_style_data()
        >>> fit_style_evaluator(*data["evaluator"], validation=data["check"]).validation["heldout_accuracy"]
        1.0
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    clf = make_pipeline(TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True,
                                        max_features=200_000),
                        LogisticRegression(C=10.0, max_iter=2000, class_weight="balanced"))
    clf.fit(list(texts), list(labels))
    report = {"train_texts": len(texts), "classes": {c: list(labels).count(c) for c in sorted(set(labels))}}
    if validation is not None and len(validation[0]):
        pred = clf.predict(list(validation[0]))
        y = np.asarray(validation[1])
        tp = float(((pred == STYLE) & (y == STYLE)).sum())
        report.update(heldout_texts=len(y), heldout_accuracy=float((pred == y).mean()),
                      heldout_style_precision=tp / max(1.0, float((pred == STYLE).sum())),
                      heldout_style_recall=tp / max(1.0, float((y == STYLE).sum())))
    return StyleEvaluator(clf, "proxy: TF-IDF character 2-5-grams + logistic regression, fortunes quips vs "
                               "Wikipedia prose, fitted on texts disjoint from the style probe's; it measures "
                               "'reads like the fortune file', not wit", report)


def few_shot_request(examples: Sequence[str], k: int = 3) -> str:
    """The few-shot prompting peer's request: ``k`` examples of the style, then the instruction.

    Example:
        >>> print(few_shot_request(["A fool and his money are soon parted.", "Never trust a cat."], k=2))
        Here are examples of a style of writing:
        - A fool and his money are soon parted.
        - Never trust a cat.
        Write a new text in exactly this style.
    """
    lines = ["Here are examples of a style of writing:", *(f"- {t}" for t in list(examples)[:k]),
             "Write a new text in exactly this style."]
    return "\n".join(lines)
