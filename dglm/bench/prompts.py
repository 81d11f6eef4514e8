"""The benchmark's two prompt sets, both from the corpus' held-out test split.

- :func:`neutral_openers`: the first 2 to 5 words of test documents and of their sentences ("The house",
  "In 1923 the", "She said that"), deduplicated, none naming the target topic: where control is measured
  (the reference measured it on neutral prompts).
- :func:`held_out_windows`: 32-token prefixes of test documents with their true continuations: *topical*
  prompts (a prefix already has a topic), whose perplexity limit is relative to the human topic-switch
  reference, and MAUVE's references.

Example:
    >>> from dglm.data.corpus import Document
    >>> docs = [Document("w:1", "wikipedia", "A", "The house stood on a hill. In 1923 the roof fell in.")]
    >>> neutral_openers(docs, 2, seed=0, min_words=3, max_words=3)
    ['The house stood', 'In 1923 the']
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

# A sentence starts after . ! or ? (and any closing quote or bracket) and whitespace, at a capital or digit.
_SENTENCE_START = re.compile(r"(?:^|(?<=[.!?])[\"')\]]*\s+)(?=[A-Z0-9])")
# An opener's words: letters, digits and inner apostrophes, hyphens or commas only (no quotes, brackets,
# colons or sentence ends, which would make the opener a fragment or a finished sentence).
_WORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9'’-]*,?$")


def opener_ok(words: Sequence[str], banned: Sequence[str] = ()) -> bool:
    """Whether words make a neutral opener: clean words (see ``_WORD``), no comma on the last one, none
    containing a ``banned`` stem (case-insensitive).

    Example:
        >>> opener_ok(["In", "1923,", "the"]), opener_ok(["The", "end."]), opener_ok(["Sports", "are"], ["sport"])
        (True, False, False)
    """
    if not words or words[-1].endswith(",") or not all(_WORD.match(w) for w in words):
        return False
    text = " ".join(words).lower()
    return not any(b.lower() in text for b in banned)


def neutral_openers(docs, n: int, seed: int = 0, min_words: int = 2, max_words: int = 5,
                    per_document: int = 2, exclude_doc: Callable | None = None, banned: Sequence[str] = (),
                    exclude_text: Callable[[list[str]], Sequence[bool]] | None = None) -> list[str]:
    """``n`` openers: the first ``min_words`` to ``max_words`` words (a seeded choice per opener) of each
    document and of each of its sentences, in a seeded order of documents, at most ``per_document`` from one
    document, deduplicated case-insensitively.

    Left out: documents ``exclude_doc(doc)`` flags (those of the target topic), openers with unclean words or a
    ``banned`` stem (:func:`opener_ok`; e.g. ``"sport"``), and openers ``exclude_text(openers)`` flags (e.g.
    those the topic classifier already puts in the target topic). Raises a ValueError when fewer than ``n``
    remain.

    Example:
        >>> from dglm.data.corpus import Document
        >>> docs = [Document("w:1", "wikipedia", "A", "The house stood on a hill. Sports fans came by."),
        ...         Document("w:2", "wikipedia", "B", "She said that the river rose. It rained.")]
        >>> sorted(neutral_openers(docs, 2, min_words=2, max_words=2, banned=["sport"]))  # not "It rained."
        ['She said', 'The house']
        >>> neutral_openers(docs, 4, min_words=2, max_words=2)
        Traceback (most recent call last):
            ...
        ValueError: n=4 neutral openers asked for, but only 3 documents' sentences qualify; lower n or raise \
per_document=2
    """
    if not 1 <= min_words <= max_words:
        raise ValueError(f"min_words={min_words} and max_words={max_words}: need 1 <= min_words <= max_words")
    rng = np.random.default_rng(seed)
    candidates: list[tuple[int, str]] = []  # (document index, opener)
    seen: set[str] = set()
    for i in rng.permutation(len(docs)):
        doc = docs[int(i)]
        if exclude_doc is not None and exclude_doc(doc):
            continue
        starts = [m.start() for m in _SENTENCE_START.finditer(doc.text)]
        order = rng.permutation(len(starts))
        taken = 0
        for j in order:
            words = doc.text[starts[j]:].split()[:int(rng.integers(min_words, max_words + 1))]
            text = " ".join(words)
            if len(words) < min_words or not opener_ok(words, banned) or text.lower() in seen:
                continue
            seen.add(text.lower())
            candidates.append((int(i), text))
            taken += 1
            if taken == per_document:
                break
    texts = [t for _, t in candidates]
    if exclude_text is not None and texts:
        flags = list(exclude_text(texts))
        texts = [t for t, bad in zip(texts, flags, strict=True) if not bad]
    if len(texts) < n:
        raise ValueError(f"n={n} neutral openers asked for, but only {len(texts)} documents' sentences qualify; "
                         f"lower n or raise per_document={per_document}")
    return texts[:n]


def held_out_windows(docs, tokenizer, num: int, prefix_tokens: int, new_tokens: int, seed: int = 0,
                     ) -> tuple[list[str], list[str]]:
    """``(prefixes, continuations)`` of ``num`` held-out windows: the first prefix_tokens + new_tokens decoder
    tokens of each document (seeded choice of documents), split at the last word start at or before
    prefix_tokens (so no system has to finish a cut word, which a soft prompt between the two halves would
    hinder); the continuation is the next new_tokens tokens. Fewer when fewer documents are long enough.

    Example:
        >>> from dglm.presets import synthetic_tokenizer
        >>> from dglm.data.corpus import Document
        >>> tok = synthetic_tokenizer(100)
        >>> docs = [Document("w:1", "wikipedia", "A", "the team won the game in the last match"),
        ...         Document("w:2", "wikipedia", "B", "a song")]
        >>> held_out_windows(docs, tok, num=2, prefix_tokens=4, new_tokens=3)  # the short one is left out
        (['the team won the'], ['game in the'])
    """
    from dglm.data.windows import cut_windows, word_starts

    window = prefix_tokens + new_tokens
    starts = word_starts(tokenizer)
    order = np.random.default_rng(seed).permutation(len(docs))
    prefixes, continuations = [], []
    for i in order:
        ids = cut_windows([docs[i].text], tokenizer, window)
        if not len(ids):
            continue
        row = ids[0].tolist()
        split = max([j for j in range(1, prefix_tokens + 1) if starts[row[j]]], default=prefix_tokens)
        prefixes.append(tokenizer.decode(row[:split]))
        continuations.append(tokenizer.decode(row[split:split + new_tokens]))
        if len(prefixes) == num:
            break
    return prefixes, continuations
