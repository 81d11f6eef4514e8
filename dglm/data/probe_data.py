"""Labelled passages for the shipped probes (topic, sentiment, toxicity) and where their labels come from.

The probes steer plans of 32-64-token continuations, so every example is a short passage (a few sentences,
:data:`SNIPPET_MIN_WORDS` to :data:`SNIPPET_MAX_WORDS` words) cut from a corpus document, never a whole
article. Train and held-out examples never share a document (the corpus splits) or, for templated
toxicity sentences, a fill word.

- ``topic`` (human labels): 11 of Wikipedia's 12 topic categories, snake-cased (``"physical_sciences"``), plus
  ``"sports"`` for articles :func:`~dglm.data.corpus.is_sports` finds by their description.
  ``"Uncategorized"`` is not a topic (a mix of every other category) and athlete biographies are both
  ``people`` and ``sports``: :func:`topic_of` leaves both out.
- ``sentiment`` (a proxy): VADER's compound score of each passage (``vaderSentiment``, a rule- and
  lexicon-based scorer); ``>= threshold`` is positive, ``<= -threshold`` negative, the rest dropped.
- ``toxicity`` (a proxy): the probability of offensive language from ``alt-profanity-check`` (a linear SVM
  trained on ~200k human-labelled comments), ``>= 0.5`` is toxic. The corpus holds almost no offensive
  text, so :func:`toxicity_examples` adds sentences from comment-style templates filled with words
  WordNet's lexicographers mark as obscene, slurs or insults, the same templates filled with ordinary
  nouns and with names of nationalities and religions (so neither the template nor talk of a people is
  the signal), and corpus passages with such a sentence appended. The labeller labels them all; a sentence
  filled with a slur or obscenity that has no other sense in WordNet is toxic too, because the
  bag-of-words labeller mostly misses slurs.

Example:
    >>> snippets("One two three. Four five six seven. Eight nine. Ten.", min_words=3, max_words=6)
    ['One two three.', 'Four five six seven. Eight nine.']
    >>> topic_name("Biology and health sciences")
    'biology_and_health_sciences'
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from dglm.data.corpus import Document, is_sports
from dglm.data.wordnet import PERSON_TEMPLATES, THING_TEMPLATES, templated

# Passage length in words (~1.3 MiniLM/SmolLM tokens per word: about 25-64 tokens).
SNIPPET_MIN_WORDS = 20
SNIPPET_MAX_WORDS = 48

SPORTS = "sports"
# Wikipedia categories that are no topic: "Uncategorized" mixes articles of every other category.
EXCLUDED_TOPICS = ("Uncategorized",)

VADER_INSTALL = "pip install vadersentiment==3.3.2"
PROFANITY_INSTALL = "pip install alt-profanity-check==1.9.1"

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


@dataclass(frozen=True)
class Example:
    """One labelled passage.

    Example:
        >>> Example("Tennis is a racket sport.", "sports", "wikipedia", "wikipedia:Tennis")
        Example(text='Tennis is a racket sport.', label='sports', source='wikipedia', group='wikipedia:Tennis')
    """

    # The passage.
    text: str
    # Its class name.
    label: str
    # Where the text came from: "wikipedia", "austen" (corpus passages), "template", "spliced".
    source: str
    # What train and held-out never share: the document id, or the fill word of a templated sentence (its
    # context passage, for a spliced one, comes from a document of the same side).
    group: str


def snippets(text: str, min_words: int = SNIPPET_MIN_WORDS, max_words: int = SNIPPET_MAX_WORDS) -> list[str]:
    """Cut ``text`` into consecutive passages of whole sentences, each ``min_words`` to ``max_words`` words.

    Sentences are added to a passage until the next one would pass ``max_words``; a passage shorter than
    ``min_words`` at that point takes the next sentence's first words instead (cut at ``max_words``). A
    short tail joins the previous passage when that stays within ``max_words``, and is dropped otherwise.

    Example:
        >>> snippets("A b c d e f g h.", min_words=2, max_words=4)
        ['A b c d']
    """
    if not 0 < min_words <= max_words:
        raise ValueError(f"need 0 < min_words <= max_words, got min_words={min_words}, max_words={max_words}")
    sentences = [s.split() for s in _SENTENCE_END.split(" ".join(text.split())) if s.strip()]
    out: list[list[str]] = []
    current: list[str] = []
    for words in sentences:
        while words:
            if len(current) + len(words) <= max_words:
                current, words = current + words, []
            elif len(current) >= min_words:
                out.append(current)
                current = []
            else:  # a long sentence: take its first words and drop the rest (no passage starts mid-sentence)
                out.append(current + words[:max_words - len(current)])
                current, words = [], []
    if len(current) >= min_words:
        out.append(current)
    elif current and out and len(out[-1]) + len(current) <= max_words:
        out[-1] = out[-1] + current
    return [" ".join(words) for words in out]


def held_out_word(word: str, fraction: float = 0.25, seed: int = 0) -> bool:
    """Whether a fill word belongs to the held-out side (a hash of the word, stable across runs).

    Example:
        >>> [held_out_word(w) for w in ("river", "lamp")]
        [False, True]
    """
    digest = hashlib.sha256(f"{seed}:{word}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _sample(items: Sequence, n: int | None, rng: random.Random) -> list:
    items = list(items)
    return items if n is None or len(items) <= n else rng.sample(items, n)


# ---------------------------------------------------------------------------------------------- topic


def topic_name(category: str) -> str:
    """A Wikipedia category as a probe class name: lower-case words joined by ``_``.

    Example:
        >>> topic_name("Philosophy and religion")
        'philosophy_and_religion'
    """
    return "_".join(re.findall(r"[a-z0-9]+", category.lower()))


def topic_of(doc: Document) -> str | None:
    """The topic class of a document: ``"sports"``, a snake-cased Wikipedia category, or None (not a
    Wikipedia article, ``"Uncategorized"``, or an athlete's biography, which is both people and sports).

    Example:
        >>> topic_of(Document("wikipedia:Tennis", "wikipedia", "Tennis", "Tennis is ...", "Everyday life",
        ...                   "Racket sport"))
        'sports'
    """
    if doc.source != "wikipedia" or not doc.topic or doc.topic in EXCLUDED_TOPICS:
        return None
    if is_sports(doc):
        return SPORTS
    if is_sports(doc, include_people=True):
        return None
    return topic_name(doc.topic)


def topic_examples(docs: Iterable[Document], per_class: int | None = None, seed: int = 0) -> list[Example]:
    """Passages of every topic-labelled document, at most ``per_class`` of each class (a random sample).

    Example:
        >>> doc = Document("wikipedia:Tennis", "wikipedia", "Tennis", "Tennis is a racket sport. " * 5,
        ...                "Everyday life", "Racket sport")
        >>> [(ex.label, ex.group) for ex in topic_examples([doc])]
        [('sports', 'wikipedia:Tennis')]
    """
    by_class: dict[str, list[Example]] = defaultdict(list)
    for doc in docs:
        label = topic_of(doc)
        if label is not None:
            by_class[label] += [Example(s, label, doc.source, doc.doc_id) for s in snippets(doc.text)]
    rng = random.Random(seed)
    return [ex for label in sorted(by_class) for ex in _sample(by_class[label], per_class, rng)]


# ---------------------------------------------------------------------------------------------- sentiment


def vader_compound(texts: Sequence[str]) -> list[float]:
    """VADER's compound sentiment score of each text, in [-1, 1].

    Example:
        >>> vader_compound(["I love this!", "This is awful."])
        [0.6696, -0.4588]
    """
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as e:
        raise ImportError(f"sentiment labels need VADER; install it with: {VADER_INSTALL}") from e
    analyzer = SentimentIntensityAnalyzer()
    return [analyzer.polarity_scores(t)["compound"] for t in texts]


def sentiment_examples(docs: Iterable[Document], per_class: int | None = None, threshold: float = 0.5,
                       seed: int = 0) -> tuple[list[Example], dict]:
    """Passages labelled by VADER: compound ``>= threshold`` positive, ``<= -threshold`` negative, the
    middle dropped. Each source contributes as many positive as negative passages (so the source, e.g.
    novel vs encyclopedia, does not predict the label), at most ``per_class`` of each class overall,
    shared between sources in proportion to what they have. Also returns the labelling yield per source.

    Example:
        >>> docs = [Document("n:1", "novel", "A", "What a great and wonderful day it was for everyone. " * 3),
        ...         Document("n:2", "novel", "B", "This is a terrible, horrible and awful disaster for us. " * 3)]
        >>> examples, stats = sentiment_examples(docs)
        >>> [ex.label for ex in examples], stats
        (['negative', 'positive'], {'novel': {'negative': 1, 'positive': 1}})
    """
    if not 0 < threshold < 1:
        raise ValueError(f"threshold={threshold} must lie in (0, 1)")
    passages = [(s, doc) for doc in docs for s in snippets(doc.text)]
    scores = vader_compound([s for s, _ in passages])
    pools: dict[str, dict[str, list[Example]]] = defaultdict(lambda: {"negative": [], "positive": []})
    yield_: dict[str, Counter] = defaultdict(Counter)
    for (text, doc), score in zip(passages, scores, strict=True):
        label = "positive" if score >= threshold else "negative" if score <= -threshold else None
        yield_[doc.source][label or "dropped"] += 1
        if label:
            pools[doc.source][label].append(Example(text, label, doc.source, doc.doc_id))
    per_source = {src: min(len(p["negative"]), len(p["positive"])) for src, p in sorted(pools.items())}
    total = sum(per_source.values())
    if per_class is not None and total > per_class:
        per_source = {src: round(n * per_class / total) for src, n in per_source.items()}
    rng = random.Random(seed)
    examples = [ex for src, n in per_source.items() for label in ("negative", "positive")
                for ex in rng.sample(pools[src][label], n)]
    stats = {src: dict(sorted(c.items())) for src, c in sorted(yield_.items())}
    return examples, stats


# ---------------------------------------------------------------------------------------------- toxicity


def profanity_probability(texts: Sequence[str]) -> list[float]:
    """``alt-profanity-check``'s probability that each text is offensive.

    Example:
        >>> [p < 0.5 for p in profanity_probability(["What a lovely day."])]
        [True]
    """
    try:
        from profanity_check import predict_prob
    except ImportError as e:
        raise ImportError(f"toxicity labels need alt-profanity-check; install it with: {PROFANITY_INSTALL}") from e
    return [float(p) for p in predict_prob(list(texts))]


def toxicity_examples(docs: Iterable[Document], lexicons: dict, held_out: bool, sizes: dict[str, int],
                      labeller: Callable[[Sequence[str]], Sequence[float]] = profanity_probability,
                      threshold: float = 0.5, word_fraction: float = 0.25, pool_factor: int = 4,
                      seed: int = 0) -> tuple[list[Example], dict]:
    """Passages for the toxicity probe and how each label was made.

    ``sizes`` (numbers of examples): ``"corpus"``: passages of ``docs``, as they come; ``"template"``:
    templated sentences; ``"spliced"``: corpus passages with a templated sentence appended. Templated
    candidates (``pool_factor`` times the size, half filled with offensive words, half with neutral ones,
    from ``lexicons`` (:func:`wordnet_lexicons`), on the held-out or the training side of
    :func:`held_out_word`) are labelled, then half the examples are drawn from the toxic ones and half from
    the rest (all toxic ones if there are fewer).

    A text is ``"toxic"`` when ``labeller`` gives it a probability ``>= threshold``, or when it was filled
    with an unambiguous offensive word (one whose every WordNet noun sense is marked offensive: slurs and
    insults that the profanity labeller, a bag-of-words model of profanity, mostly misses). The returned
    tally counts, per source and fill, the examples each rule made toxic ("labeller", "lexicon only")
    and the non-toxic ones.

    Example:
        >>> lex = {"offensive": {"person": ["idiot"], "thing": []}, "unambiguous": [],
        ...        "neutral": {"person": ["teacher"], "identity": [], "thing": ["chair"]}}
        >>> doc = Document("w:1", "wikipedia", "A", "Tennis is a racket sport played by two or four players. " * 3)
        >>> examples, tally = toxicity_examples([doc], lex, held_out=False, sizes={"corpus": 1, "template": 2},
        ...                                     labeller=lambda ts: [float("idiot" in t) for t in ts], word_fraction=0)
        >>> sorted(ex.label for ex in examples), tally["template/offensive"]
        (['non-toxic', 'non-toxic', 'toxic'], {'labeller': 1})
    """
    rng = random.Random(seed + held_out)
    passages = [(s, doc) for doc in docs for s in snippets(doc.text, max_words=SNIPPET_MAX_WORDS - 12)]
    if not passages:
        raise ValueError("no corpus passages to build toxicity examples from")
    unambiguous = set(lexicons["unambiguous"])
    # people and things in the offensive lexicon's proportion; half the neutral people are identities
    share = len(lexicons["offensive"]["person"]) / max(1, sum(map(len, lexicons["offensive"].values())))
    parts = {"offensive": {"person": share, "thing": 1 - share},
             "neutral": {"person": share / 2, "identity": share / 2, "thing": 1 - share}}
    templates = {"person": PERSON_TEMPLATES, "identity": PERSON_TEMPLATES, "thing": THING_TEMPLATES}
    # (text, source, group, fill, lexicon says toxic)
    items = [(s, doc.source, doc.doc_id, "corpus", False) for s, doc in _sample(passages, sizes.get("corpus", 0), rng)]
    for what in ("template", "spliced"):
        n_pool = pool_factor * sizes.get(what, 0) // 2
        for fill in ("offensive", "neutral"):
            words = {k: [w for w in ws if held_out_word(w, word_fraction, seed) == held_out]
                     for k, ws in lexicons[fill].items()}
            sentences = [pair for kind, weight in parts[fill].items()
                         for pair in templated(words[kind], templates[kind], round(n_pool * weight), rng)]
            for sentence, word in sentences:
                lexicon = fill == "offensive" and word in unambiguous
                if what == "spliced":
                    context, doc = rng.choice(passages)
                    items.append((f"{context} {sentence}", what, word, fill, lexicon))
                else:
                    items.append((sentence, what, word, fill, lexicon))
    probs = labeller([item[0] for item in items])
    labelled = [(*item, "labeller" if p >= threshold else "lexicon only" if item[4] else "non-toxic")
                for item, p in zip(items, probs, strict=True)]
    chosen = [x for x in labelled if x[3] == "corpus"]
    for what in ("template", "spliced"):
        toxic = [x for x in labelled if x[1] == what and x[5] != "non-toxic"]
        clean = [x for x in labelled if x[1] == what and x[5] == "non-toxic"]
        n = sizes.get(what, 0)
        toxic = _sample(toxic, n // 2, rng)
        chosen += toxic + _sample(clean, n - len(toxic), rng)
    examples, tally = [], defaultdict(Counter)
    for text, source, group, fill, _, why in chosen:
        examples.append(Example(text, "non-toxic" if why == "non-toxic" else "toxic", source, group))
        tally[source if fill == "corpus" else f"{source}/{fill}"][why] += 1
    return examples, {k: dict(sorted(v.items())) for k, v in sorted(tally.items())}


# ---------------------------------------------------------------------------------------------- evaluation


def held_out_metrics(probe, x, labels: Sequence[str]) -> dict:
    """How often ``probe`` agrees with ``labels`` on embeddings ``x`` (N, d): accuracy, balanced accuracy
    (mean per-class recall), the majority-class baseline, and per-class support, precision and recall.

    Example:
        >>> import torch
        >>> from dglm.constraints.probes import Probe
        >>> probe = Probe(torch.tensor([[1.0, 0.0]]), torch.zeros(1), ("neg", "pos"), "toy:2")
        >>> m = held_out_metrics(probe, torch.tensor([[1.0, 0], [-1.0, 0], [1.0, 0]]), ["pos", "neg", "neg"])
        >>> m["accuracy"], m["per_class"]["neg"]
        (0.6667, {'n': 2, 'precision': 1.0, 'recall': 0.5})
    """
    labels = list(labels)
    if len(labels) != len(x) or not labels:
        raise ValueError(f"need one label per embedding and at least one, got {len(labels)} labels for {len(x)}")
    predicted = [probe.labels[i] for i in probe.predict(x).tolist()]
    support = Counter(labels)
    per_class = {}
    for c in probe.labels:
        hits = sum(p == c and y == c for p, y in zip(predicted, labels, strict=True))
        called = sum(p == c for p in predicted)
        per_class[c] = {"n": support[c], "precision": round(hits / called, 4) if called else None,
                        "recall": round(hits / support[c], 4) if support[c] else None}
    recalls = [m["recall"] for m in per_class.values() if m["recall"] is not None]
    return {"n": len(labels),
            "accuracy": round(sum(p == y for p, y in zip(predicted, labels, strict=True)) / len(labels), 4),
            "balanced_accuracy": round(sum(recalls) / len(recalls), 4),
            "majority_baseline": round(max(support.values()) / len(labels), 4),
            "per_class": per_class}
