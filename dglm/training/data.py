"""Training data: token windows cut from documents, prefix/continuation splits, cached embeddings.

Texts are tokenised with the decoder's tokenizer and cut into fixed windows (the reference: 128-token
blocks truncated to 88). A window is split into prefix and continuation at a random word boundary for
training (prefix length from 0, as in the reference) and at a fixed point for evaluation (32 / 32).
Encoder embeddings of every prefix and continuation are computed once and cached on disk as
safetensors (``WindowSet.save`` / ``WindowSet.load``), so training never runs the encoder.

Example:
    >>> import numpy as np
    >>> ws = WindowSet(ids=np.arange(12).reshape(2, 6), splits=np.array([[0, 3], [2, 4]]))
    >>> ws.pair(1, 0)
    ([6, 7], [8, 9, 10, 11])
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dglm.data.windows import cut_windows, word_starts
from dglm.io import CheckpointError, atomic_directory, load_tensors, save_tensors

logger = logging.getLogger(__name__)


def random_splits(ids: np.ndarray, starts: np.ndarray, per_window: int, max_prefix: int,
                  rng: np.random.Generator) -> np.ndarray:
    """``per_window`` split points per window (N, per_window), uniform over word boundaries in [0, max_prefix].

    Position 0 (empty prefix) is always a candidate, as in the reference where the prefix length starts at 0.

    Example (tokens 2 and 4 start words, so a prefix of at most 3 tokens ends at 0, 1 or 3):
        >>> ids = np.array([[1, 2, 3, 4, 0]])
        >>> starts = np.array([False, False, True, False, True])  # over a vocabulary of 5
        >>> splits = random_splits(ids, starts, per_window=8, max_prefix=3, rng=np.random.default_rng(0))
        >>> splits.shape, sorted(set(splits.ravel().tolist()))
        ((1, 8), [0, 1, 3])
    """
    out = np.zeros((len(ids), per_window), dtype=np.int64)
    for i, row in enumerate(ids):
        candidates = np.flatnonzero(starts[row[: max_prefix + 1]])
        candidates = np.union1d(candidates[candidates <= max_prefix], [0])
        out[i] = rng.choice(candidates, size=per_window)
    return out


@dataclass
class WindowSet:
    """Windows of token ids (N, T), split points (N, S), and optionally cached raw encoder embeddings of every
    split's prefix and continuation text, each (N, S, d).

    Example:
        >>> import tempfile
        >>> ws = WindowSet(ids=np.arange(8).reshape(2, 4), splits=np.array([[1], [3]]),
        ...                prefix_emb=torch.zeros(2, 1, 5), cont_emb=torch.ones(2, 1, 5))
        >>> len(ws), ws.pair(0, 0), ws.pair(1, 0)
        (2, ([0], [1, 2, 3]), ([4, 5, 6], [7]))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     ws.save(d + "/train")
        ...     loaded = WindowSet.load(d + "/train")
        >>> loaded.ids.tolist() == ws.ids.tolist(), loaded.cont_emb.shape
        (True, torch.Size([2, 1, 5]))
    """

    ids: np.ndarray
    splits: np.ndarray
    prefix_emb: torch.Tensor | None = None
    cont_emb: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def pair(self, i: int, j: int) -> tuple[list[int], list[int]]:
        """Prefix and continuation token ids of window i at its split j."""
        s = int(self.splits[i, j])
        return self.ids[i, :s].tolist(), self.ids[i, s:].tolist()

    def texts(self, tokenizer) -> tuple[list[str], list[str]]:
        """Prefix and continuation texts of every (window, split), row-major (N * S each)."""
        prefixes, conts = [], []
        for i in range(len(self)):
            for j in range(self.splits.shape[1]):
                p, c = self.pair(i, j)
                prefixes.append(tokenizer.decode(p))
                conts.append(tokenizer.decode(c))
        return prefixes, conts

    def embed(self, encoder, tokenizer, batch_size: int = 128, show_progress_bar: bool = True,
              prefixes: bool = True) -> WindowSet:
        """Fill ``cont_emb`` (and ``prefix_emb``, which only diffusion training reads, unless ``prefixes`` is
        False) with the encoder's raw embeddings (stored as float16)."""
        prefix_texts, conts = self.texts(tokenizer)
        shape = (*self.splits.shape, encoder.dim)
        self.cont_emb = encoder.encode(conts, batch_size, show_progress_bar).half().reshape(shape)
        if prefixes:
            self.prefix_emb = encoder.encode(prefix_texts, batch_size, show_progress_bar).half().reshape(shape)
        return self

    def save(self, folder: str | os.PathLike, record: dict | None = None, *, overwrite: bool = False) -> None:
        """Write ``windows.safetensors`` (ids, splits and any cached embeddings) into ``folder``, atomically,
        with ``record`` (what the windows were made from: the cache's key) in its marker
        (:func:`dglm.io.output_record`); a folder holding anything else is refused unless ``overwrite``."""
        with atomic_directory(folder, "windows", overwrite=overwrite, record=record) as tmp:
            tensors = {"ids": torch.from_numpy(self.ids).int(), "splits": torch.from_numpy(self.splits).int()}
            tensors |= {k: v for k, v in (("prefix_emb", self.prefix_emb), ("cont_emb", self.cont_emb)) if v is not None}
            save_tensors(tmp / "windows.safetensors", tensors)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> WindowSet:
        """Read what :meth:`save` wrote (ids and splits as int64 arrays, embeddings as saved)."""
        t = load_tensors(os.path.join(folder, "windows.safetensors"))
        if "ids" not in t or "splits" not in t:
            raise CheckpointError(f"{folder}/windows.safetensors lacks ids / splits")
        return cls(t["ids"].long().numpy(), t["splits"].long().numpy(), t.get("prefix_emb"), t.get("cont_emb"))


def build_windows(texts: Sequence[str], tokenizer, window: int = 64, per_window: int = 2,
                  max_prefix: int = 48, fixed_split: int | None = None, seed: int = 0) -> WindowSet:
    """Cut ``texts`` into windows and split them: ``per_window`` random word-boundary splits in
    [0, max_prefix] for training, or one ``fixed_split`` for evaluation (e.g. 32 of 64).

    Example:
        >>> from dglm.presets import synthetic_tokenizer
        >>> tok = synthetic_tokenizer(100)
        >>> ws = build_windows(["the game was won by the team"], tok, window=3, fixed_split=1)
        >>> ws.splits.tolist(), ws.texts(tok)
        ([[1], [1]], (['the', 'won'], ['game was', 'by the']))
    """
    ids = cut_windows(texts, tokenizer, window)
    if fixed_split is not None:
        if not 0 <= fixed_split < window:
            raise ValueError(f"fixed_split={fixed_split} must be in [0, {window})")
        return WindowSet(ids, np.full((len(ids), 1), fixed_split, dtype=np.int64))
    if not 0 <= max_prefix < window:
        raise ValueError(f"max_prefix={max_prefix} must be in [0, {window})")
    splits = random_splits(ids, word_starts(tokenizer), per_window, max_prefix, np.random.default_rng(seed))
    logger.info("%d windows of %d tokens, %d splits each", len(ids), window, per_window)
    return WindowSet(ids, splits)


def sentence_ends(tokenizer) -> np.ndarray:
    """Boolean mask over the vocabulary: tokens that end a sentence (their text, stripped of trailing spaces,
    ends in '.', '!' or '?', or holds a line break).

    Example (a stand-in tokenizer with a four-token vocabulary):
        >>> class Tokenizer:
        ...     vocab = ["Ġthe", ".", "Ġhome!", "Ċ"]
        ...     def __len__(self):
        ...         return len(self.vocab)
        ...     def convert_ids_to_tokens(self, ids):
        ...         return [self.vocab[i] for i in ids]
        >>> sentence_ends(Tokenizer()).tolist()
        [False, True, True, True]
    """
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return np.array([bool(t) and (t.rstrip("Ġ▁ ").endswith((".", "!", "?")) or "Ċ" in t or "\n" in t)
                     for t in tokens])


def sentence_cut(ids, ends: np.ndarray) -> int:
    """Length of ``ids`` up to and including its last sentence-end token (0 when it holds none).

    Example (token 1 ends sentences):
        >>> ends = np.array([False, True, False])
        >>> sentence_cut([2, 1, 2, 1, 2], ends), sentence_cut([2, 2], ends), sentence_cut([], ends)
        (4, 0, 0)
    """
    last = np.flatnonzero(ends[np.asarray(ids, dtype=np.int64)])
    return int(last[-1]) + 1 if len(last) else 0


class TopicSwitches:
    """Training pairs whose plan disagrees with their prefix: the prefix of one (window, split) cut after its
    last sentence end, and the continuation of another pair that starts a sentence, with that continuation's
    embedding as the plan. Windows are drawn at random among tens of thousands, so the two sides come from
    different documents (and mostly different subjects): the decoder must take the new subject from the plan.

    Example (token 1 ends sentences: both prefixes can be cut after it, only window 1's continuation starts a
    sentence):
        >>> ids = np.array([[5, 1, 6, 7], [8, 1, 9, 4]])
        >>> data = WindowSet(ids, np.array([[3], [2]]), cont_emb=torch.arange(4.0).reshape(2, 1, 2))
        >>> switches = TopicSwitches(data, np.array([False, True] + [False] * 8))
        >>> switches.sample(2, np.random.default_rng(0))
        ([[8, 1], [8, 1]], [[9, 4], [9, 4]], tensor([[2., 3.],
                [2., 3.]]))
    """

    def __init__(self, data: WindowSet, ends: np.ndarray):
        s = data.splits.shape[1]
        self.data, self._s = data, s
        cut = np.zeros(data.splits.shape, dtype=np.int64)  # prefix kept up to its last sentence end (0 = none)
        starts = np.zeros(data.splits.shape, dtype=bool)  # continuation starts right after a sentence end
        for j in range(s):
            split = data.splits[:, j]
            for i in np.flatnonzero(split > 0):
                cut[i, j] = sentence_cut(data.ids[i, :split[i]], ends)
                starts[i, j] = ends[data.ids[i, split[i] - 1]]
        self._prefixes = np.flatnonzero(cut.ravel() > 0)  # flat (window * S + split) indices
        self._cut = cut.ravel()
        self._continuations = np.flatnonzero(starts.ravel())
        if not len(self._prefixes) or not len(self._continuations):
            raise ValueError("no topic-switch pairs: no prefix holds a sentence end, or no continuation starts "
                             "a sentence (check the sentence-end mask against the tokenizer)")
        logger.info("topic switches: %d prefixes that end a sentence, %d continuations that start one",
                    len(self._prefixes), len(self._continuations))

    def sample(self, n: int, rng: np.random.Generator) -> tuple[list[list[int]], list[list[int]], torch.Tensor]:
        """``n`` switch pairs: prefix ids, continuation ids and the continuations' raw embeddings (n, d)."""
        a = rng.choice(self._prefixes, n)
        b = rng.choice(self._continuations, n)
        prefixes = [self.data.ids[k // self._s, :self._cut[k]].tolist() for k in a]
        conts = [self.data.pair(int(k) // self._s, int(k) % self._s)[1] for k in b]
        return prefixes, conts, self.data.cont_emb.reshape(-1, self.data.cont_emb.shape[-1])[b].float()


class SentenceOpeners:
    """Natural pairs whose prefix is cut back to the first words of a sentence: the prefix of a (window, split)
    kept only from its last sentence end on, when that leaves 1 to ``max_words`` words (e.g. "The house",
    "In 1923 the"); the continuation and its embedding (the plan) are the pair's own. These are the short
    prompts users type, where soft tokens right after two words must not cost fluency, and which random
    mid-window splits rarely produce.

    Example (token 1 ends sentences, tokens 6-9 start words; only window 0's split leaves a short opener):
        >>> ids = np.array([[5, 1, 6, 7, 2], [6, 7, 8, 9, 2]])
        >>> data = WindowSet(ids, np.array([[4], [4]]), cont_emb=torch.arange(4.0).reshape(2, 1, 2))
        >>> starts = np.isin(np.arange(10), [6, 7, 8, 9])
        >>> openers = SentenceOpeners(data, np.arange(10) == 1, starts, max_words=2)
        >>> openers.sample(1, np.random.default_rng(0))
        ([[6, 7]], [[2]], tensor([[0., 1.]]))
    """

    def __init__(self, data: WindowSet, ends: np.ndarray, starts: np.ndarray, max_words: int = 5):
        if max_words < 1:
            raise ValueError(f"max_words={max_words} must be >= 1")
        s = data.splits.shape[1]
        self.data, self._s = data, s
        begin = np.zeros(data.splits.shape, dtype=np.int64)  # where the opener starts in its window
        usable = np.zeros(data.splits.shape, dtype=bool)
        for j in range(s):
            for i in np.flatnonzero(data.splits[:, j] > 0):
                prefix = data.ids[i, :data.splits[i, j]]
                cut = sentence_cut(prefix, ends)
                begin[i, j] = cut
                usable[i, j] = 0 < cut < len(prefix) and starts[prefix[cut:]].sum() <= max_words
        self._begin = begin.ravel()
        self.index = np.flatnonzero(usable.ravel())  # flat (window * S + split) indices of the usable pairs
        if not len(self.index):
            raise ValueError(f"no sentence openers of at most {max_words} words among the training splits (check "
                             "the sentence-end and word-start masks against the tokenizer)")
        logger.info("sentence openers: %d pairs with a prefix of at most %d words after a sentence end",
                    len(self.index), max_words)

    def take(self, index: np.ndarray) -> tuple[list[list[int]], list[list[int]], torch.Tensor]:
        """The opener pairs of flat indices from :attr:`index`: prefix ids, continuation ids and the
        continuations' raw embeddings (n, d)."""
        prefixes, conts, emb = flat_pairs(self.data, index)
        return [p[b:] for p, b in zip(prefixes, self._begin[index], strict=True)], conts, emb

    def sample(self, n: int, rng: np.random.Generator) -> tuple[list[list[int]], list[list[int]], torch.Tensor]:
        """``n`` opener pairs drawn at random (with replacement), as :meth:`take` returns them."""
        return self.take(rng.choice(self.index, n))


class DiffusedPlans:
    """Natural pairs whose plan is the continuation's embedding *passed through the diffusion model*: re-noised
    to a noise level t drawn uniformly from (0, ``max_t``] and denoised again (SDEdit), given the prefix's
    embedding, with the inference sampler. The plan still carries the continuation's content (less of it the
    higher t), in the form the diffusion's own samples take at inference, which lie off the manifold of real
    texts' embeddings (results/mini/README.md, "How text-like are the diffusion's plans?"): training on them
    teaches the prompt generator to read such plans.

    Needs the prefixes' embeddings (``dglm train prepare`` without ``--no-prefix-embeddings``). Returned plans
    are raw-space vectors (``standardised * std + mean``, not re-normalised), so the trainer's standardisation
    recovers the diffusion's output exactly.

    Example (a random tiny diffuser; a lower ``max_t`` keeps plans nearer the true continuations):
        >>> from dglm.diffusion import SemanticDiffuser
        >>> from dglm.presets import TINY, randomize
        >>> diffuser = randomize(SemanticDiffuser(TINY.diffusion))
        >>> g = torch.Generator().manual_seed(0)
        >>> data = WindowSet(np.ones((64, 4), dtype=np.int64), np.full((64, 1), 2),
        ...                  prefix_emb=torch.randn(64, 1, 32, generator=g), cont_emb=torch.randn(64, 1, 32, generator=g))
        >>> mean, std = torch.zeros(32), torch.ones(32)
        >>> def distance(max_t):
        ...     plans = DiffusedPlans(data, diffuser, mean, std, max_t=max_t)
        ...     prefixes, conts, emb = plans.take(np.arange(64), np.random.default_rng(0))
        ...     return (emb - data.cont_emb[:, 0]).norm(dim=-1).mean().item()
        >>> distance(0.1) < distance(0.9)
        True
    """

    def __init__(self, data: WindowSet, diffuser, mean: torch.Tensor, std: torch.Tensor, max_t: float = 0.6,
                 steps: int = 50, sampler: str = "ddpm"):
        if data.prefix_emb is None:
            raise ValueError("diffused plans need the prefixes' embeddings; prepare the data without "
                             "--no-prefix-embeddings")
        if not 0 < max_t <= 1:
            raise ValueError(f"max_t={max_t} must be in (0, 1]")
        self.data, self.diffuser, self.mean, self.std = data, diffuser, mean.float(), std.float()
        self.max_t, self.steps, self.sampler = max_t, steps, sampler

    def take(self, index: np.ndarray, rng: np.random.Generator) -> tuple[list[list[int]], list[list[int]],
                                                                       torch.Tensor]:
        """The pairs of flat (window * S + split) indices, each plan passed through the diffusion from its own
        noise level (:meth:`~dglm.diffusion.SemanticDiffuser.resample`): prefix ids, continuation ids and the
        plans in raw space (n, d)."""
        prefixes, conts, emb = flat_pairs(self.data, index)
        s = self.data.splits.shape[1]
        prefix = self.data.prefix_emb[index // s, index % s].float()  # (n, d)
        dtype = next(self.diffuser.parameters()).dtype
        x = ((emb.float() - self.mean) / self.std).to(dtype)  # (n, d) standardised
        cond = ((prefix - self.mean) / self.std).to(dtype)
        g = torch.Generator().manual_seed(int(rng.integers(2**31)))
        levels = np.ceil(rng.uniform(0, self.max_t, len(index)) * self.steps).clip(1) / self.steps  # on the grid
        out = x.clone()
        for t in np.unique(levels)[::-1]:  # rows re-noised to the same level run as one batch, noisiest first
            rows = torch.from_numpy(np.flatnonzero(levels == t))
            out[rows] = self.diffuser.resample(x[rows], cond[rows], float(t), self.steps, self.sampler, generator=g)
        return prefixes, conts, out.float() * self.std + self.mean

    def sample(self, n: int, rng: np.random.Generator) -> tuple[list[list[int]], list[list[int]], torch.Tensor]:
        """``n`` pairs drawn at random (with replacement), as :meth:`take` returns them."""
        return self.take(rng.integers(0, self.data.splits.size, n), rng)


def flat_pairs(data: WindowSet, index: np.ndarray) -> tuple[list[list[int]], list[list[int]], torch.Tensor]:
    """Prefix ids, continuation ids and raw continuation embeddings (n, d) of flat (window * S + split) indices.

    Example:
        >>> ws = WindowSet(np.arange(8).reshape(2, 4), np.array([[1], [3]]), cont_emb=torch.eye(2)[:, None])
        >>> flat_pairs(ws, np.array([1, 0]))
        ([[4, 5, 6], [0]], [[7], [1, 2, 3]], tensor([[0., 1.],
                [1., 0.]]))
        >>> flat_pairs(ws, np.array([], dtype=np.int64))  # a batch made only of topic switches has no natural pair
        ([], [], tensor([], size=(0, 2)))
    """
    s = data.splits.shape[1]
    pairs = [data.pair(int(k) // s, int(k) % s) for k in index]
    return [p for p, _ in pairs], [c for _, c in pairs], data.cont_emb.reshape(-1, data.cont_emb.shape[-1])[index].float()
