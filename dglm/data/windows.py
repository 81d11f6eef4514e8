"""Token windows: consecutive fixed-length windows cut from texts, and the tokens that begin a word.

Shared by training (:mod:`dglm.training.data` splits the windows into prefix/continuation pairs) and the
benchmark (:mod:`dglm.bench.prompts` cuts its topical prefixes from them).

Example:
    >>> from dglm.presets import synthetic_tokenizer
    >>> cut_windows(["one two three four"], synthetic_tokenizer(100), window=2).shape
    (2, 2)
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def cut_windows(texts: Iterable[str], tokenizer, window: int = 64, min_tokens: int | None = None) -> np.ndarray:
    """Token windows (N, window) from each text, consecutive and non-overlapping, dropping the remainder.

    A text shorter than ``window`` but at least ``min_tokens`` long (default: the whole window) is dropped too;
    windows never cross documents.

    Example:
        >>> from dglm.presets import synthetic_tokenizer
        >>> tok = synthetic_tokenizer(100)
        >>> windows = cut_windows(["the game was won by the team", "a song"], tok, window=3)  # 7 and 2 tokens
        >>> windows.shape, [tok.decode(row) for row in windows]
        ((2, 3), ['the game was', 'won by the'])
    """
    if window < 2:
        raise ValueError(f"window={window} must be >= 2 tokens")
    rows = []
    for ids in tokenizer(list(texts), add_special_tokens=False).input_ids:
        for start in range(0, len(ids) - window + 1, window):
            rows.append(ids[start:start + window])
    return np.asarray(rows, dtype=np.int64).reshape(-1, window)


def word_starts(tokenizer) -> np.ndarray:
    """Boolean mask over the vocabulary: tokens that begin a new word (a leading space / 'Ġ' / '▁').

    Example (a stand-in tokenizer with a four-token vocabulary):
        >>> class Tokenizer:
        ...     vocab = ["Ġthe", "game", "▁was", "Ċ"]
        ...     def __len__(self):
        ...         return len(self.vocab)
        ...     def convert_ids_to_tokens(self, ids):
        ...         return [self.vocab[i] for i in ids]
        >>> word_starts(Tokenizer()).tolist()
        [True, False, True, True]
    """
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return np.array([bool(t) and (t[0] in "Ġ▁ " or t.startswith("Ċ")) for t in tokens])
