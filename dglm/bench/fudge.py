"""FUDGE as published (Yang and Klein, NAACL 2021): a discriminator of the attribute from *partial* text
rescores the decoder's top candidates at every step.

- :class:`PrefixDiscriminator`: predicts the class of a finished text from its first tokens. It is trained
  on prefixes (random cut points) of the labelled passages a dglm probe was trained on, and sees the
  continuation only, never the prompt (a discriminator that reads ``prompt + continuation`` mostly sees the
  prompt). It is linear in the mean of per-token features (the decoder's own input embeddings, or one-hot
  tokens), so the logits of ``continuation + candidate`` for every candidate are one table lookup:
  ``bias + (sum_t T[x_t] + T[c]) / (n + 1)`` with ``T`` (V, C). That is what makes rescoring k >= 50
  candidates per step as cheap as the decoder step itself.
- :class:`FudgeProcessor`: a Hugging Face ``LogitsProcessor``; per step it keeps the decoder's top ``top_k``
  tokens and adds ``strength * log P(target | continuation + candidate)`` (``strength = 1`` is FUDGE's Bayes
  rule); top-p sampling then runs on the rescored distribution. It rides on any ``generate`` call (KV
  cache, batching), e.g. :meth:`dglm.Decoder.generate`'s ``logits_processor``.

Example (a toy discriminator that likes token 7; FUDGE moves the next-token choice to it):
    >>> disc = PrefixDiscriminator(torch.zeros(10, 2), torch.zeros(2), ("other", "seven"))
    >>> disc.table[7] = torch.tensor([-5.0, 5.0])
    >>> fudge = FudgeProcessor([(disc, "seven", 1.0)], strength=1.0, top_k=10)
    >>> scores = torch.zeros(1, 10)                             # the decoder is indifferent
    >>> int(fudge(torch.zeros(1, 0, dtype=torch.long), scores).argmax())
    7
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import LogitsProcessor


@dataclass
class PrefixDiscriminator:
    """A linear classifier of partial texts: ``logits = bias + mean over tokens of table[token]``.

    ``table`` (V, C) and ``bias`` (C,) over decoder token ids; ``labels`` names the C classes; ``info`` says
    how it was trained and how well it does on held-out prefixes.

    Example (usually made by :meth:`fit`):
        >>> table = torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 0.0]])  # (V=3 tokens, C=2 classes)
        >>> d = PrefixDiscriminator(table, torch.zeros(2), ("a", "b"))
        >>> d.index("b"), d.logits([[1, 2]]).tolist()
        (1, [[0.0, 1.0]])
    """

    table: torch.Tensor
    bias: torch.Tensor
    labels: tuple[str, ...]
    info: dict | None = None

    def index(self, label: str) -> int:
        """The column of class ``label``; an unknown label raises a ValueError listing the known.

        Example:
            >>> d = PrefixDiscriminator(torch.zeros(4, 2), torch.zeros(2), ("arts", "sports"))
            >>> d.index("sports")
            1
            >>> d.index("music")
            Traceback (most recent call last):
                ...
            ValueError: label='music' is not a class of this discriminator; known: ['arts', 'sports']
        """
        if label not in self.labels:
            raise ValueError(f"label={label!r} is not a class of this discriminator; known: {list(self.labels)}")
        return self.labels.index(label)

    def logits(self, ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """Class logits (N, C) of token-id sequences (an empty one gets the bias alone).

        Example:
            >>> d = PrefixDiscriminator(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.zeros(2), ("a", "b"))
            >>> d.logits([[0, 0, 1], []]).double().round(decimals=3).tolist()
            [[0.667, 0.333], [0.0, 0.0]]
        """
        rows = [self.table[list(r)].mean(0) if len(r) else torch.zeros(len(self.labels)) for r in ids]
        return torch.stack(rows) + self.bias

    @classmethod
    def fit(cls, tokenizer, texts: Sequence[str], labels: Sequence[str], embeddings: torch.Tensor | None = None,
            cuts_per_text: int = 4, max_tokens: int = 32, C: float = 1.0, seed: int = 0,
            held_out: tuple[Sequence[str], Sequence[str]] | None = None, vocab_size: int | None = None,
            ) -> PrefixDiscriminator:
        """Fit on ``cuts_per_text`` random prefixes (1 to ``max_tokens`` tokens) of each labelled text.

        Features: the mean of ``embeddings`` (V, d) rows of the prefix's tokens (the decoder's input
        embeddings), or, with ``embeddings=None``, of one-hot tokens (a bag of words). Multinomial logistic
        regression, ``class_weight='balanced'``. ``held_out`` (texts, labels): prefixes of these measure
        accuracy by prefix length (``info['held_out']``). ``vocab_size``: rows of the table (default: the
        larger of the tokenizer's length and the embedding rows; pass the decoder's output size when larger).

        Example:
            >>> from dglm.presets import TINY, random_decoder
            >>> tok = random_decoder(TINY.decoder).tokenizer
            >>> texts = ["the team won the match", "goal game ball team", "a song and a film", "art book film"] * 4
            >>> d = PrefixDiscriminator.fit(tok, texts, ["sports", "sports", "arts", "arts"] * 4)
            >>> d.labels, d.table.shape[1]
            (('arts', 'sports'), 2)
        """
        from sklearn.linear_model import LogisticRegression

        rng = np.random.default_rng(seed)
        vocab = len(tokenizer) if embeddings is None else embeddings.shape[0]
        x, y = _prefix_features(tokenizer, texts, labels, vocab, embeddings, cuts_per_text, max_tokens, rng)
        clf = LogisticRegression(C=C, max_iter=3000, class_weight="balanced").fit(x, y)
        w = torch.tensor(clf.coef_, dtype=torch.float32)  # (C, d), or (1, d) for two classes
        b = torch.tensor(clf.intercept_, dtype=torch.float32)
        if w.shape[0] == 1:  # binary: sklearn keeps the second class's logit only
            w, b = torch.cat([torch.zeros_like(w), w]), torch.cat([torch.zeros_like(b), b])
        table = w.T.contiguous() if embeddings is None else embeddings.float() @ w.T  # (V, C)
        pad = max(0, (vocab_size or 0) - table.shape[0], len(tokenizer) - table.shape[0])
        table = torch.cat([table, torch.zeros(pad, table.shape[1])])
        info = {"features": "one-hot tokens" if embeddings is None else "mean decoder input embedding",
                "train_prefixes": len(y), "cuts_per_text": cuts_per_text, "max_tokens": max_tokens, "C": C}
        d = cls(table, b, tuple(str(c) for c in clf.classes_), info)
        if held_out is not None and len(held_out[0]):
            d.info["held_out"] = d.accuracy(tokenizer, *held_out, seed=seed)
        return d

    def accuracy(self, tokenizer, texts: Sequence[str], labels: Sequence[str], lengths=(2, 4, 8, 16, 32),
                 seed: int = 0) -> dict:
        """Balanced accuracy on the first n tokens of each text, for each n in ``lengths``.

        Example (a discriminator that reads "the" as sports and "a" as arts, judged on the first token):
            >>> from dglm.presets import synthetic_tokenizer
            >>> tok = synthetic_tokenizer(100)
            >>> d = PrefixDiscriminator(torch.zeros(100, 2), torch.zeros(2), ("arts", "sports"))
            >>> d.table[tok.convert_tokens_to_ids("the")] = torch.tensor([0.0, 1.0])
            >>> d.table[tok.convert_tokens_to_ids("a")] = torch.tensor([1.0, 0.0])
            >>> texts = ["the team won", "a song played", "the film ran"]
            >>> d.accuracy(tok, texts, ["sports", "arts", "arts"], lengths=(1,))
            {'first_1_tokens': 0.75}
        """
        from sklearn.metrics import balanced_accuracy_score

        ids = tokenizer(list(texts), add_special_tokens=False).input_ids
        out = {}
        for n in lengths:
            pred = self.logits([row[:n] for row in ids]).argmax(1).numpy()
            out[f"first_{n}_tokens"] = round(float(balanced_accuracy_score(
                list(labels), [self.labels[i] for i in pred])), 4)
        return out


def _prefix_features(tokenizer, texts, labels, vocab, embeddings, cuts, max_tokens, rng):
    from scipy.sparse import csr_matrix

    ids = tokenizer(list(texts), add_special_tokens=False).input_ids
    rows, cols, vals, y = [], [], [], []
    for row, label in zip(ids, labels, strict=True):
        if not row:
            continue
        for n in rng.integers(1, min(len(row), max_tokens) + 1, size=cuts):
            toks, counts = np.unique(row[:n], return_counts=True)
            rows += [len(y)] * len(toks)
            cols += toks.tolist()
            vals += (counts / n).tolist()
            y.append(label)
    x = csr_matrix((vals, (rows, cols)), shape=(len(y), vocab), dtype=np.float32)  # (N, V) token frequencies
    if embeddings is not None:
        x = np.asarray(x @ embeddings.float().numpy())  # (N, d): mean embedding of the prefix
    return x, np.asarray(y)


class FudgeProcessor(LogitsProcessor):
    """FUDGE's rescoring as a ``LogitsProcessor``: keep the top ``top_k`` tokens, add ``strength`` times the
    summed ``weight * log P(label | continuation so far + candidate)`` of each ``(discriminator, label,
    weight)`` term, and leave the other tokens at -inf (so a later top-p warper samples among the rescored).

    ``input_ids`` must hold the generated tokens only (as ``generate`` passes them with ``inputs_embeds``;
    pass ``prompt_length`` when the prompt's ids come first). Pad tokens after a row's end are scored too,
    harmlessly: that row is finished.

    Example (only the top 3 tokens survive; the discriminator lifts token 2 above the decoder's favourite):
        >>> disc = PrefixDiscriminator(torch.zeros(5, 2), torch.zeros(2), ("other", "target"))
        >>> disc.table[2] = torch.tensor([-4.0, 4.0])
        >>> fudge = FudgeProcessor([(disc, "target", 1.0)], strength=2.0, top_k=3)
        >>> scores = torch.tensor([[3.0, 2.5, 2.0, 0.0, -1.0]])
        >>> out = fudge(torch.zeros(1, 0, dtype=torch.long), scores)
        >>> int(out.argmax()), torch.isinf(out).tolist()
        (2, [[False, False, False, True, True]])
    """

    def __init__(self, terms: Sequence[tuple[PrefixDiscriminator, str, float]], strength: float = 1.0,
                 top_k: int = 50, prompt_length: int = 0):
        if top_k < 1:
            raise ValueError(f"top_k={top_k} must be >= 1")
        if not terms:
            raise ValueError("terms must hold at least one (discriminator, label, weight)")
        self.terms = [(d, d.index(label), float(w)) for d, label, w in terms]
        self.strength, self.top_k, self.prompt_length = float(strength), int(top_k), int(prompt_length)

    @torch.no_grad()
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_length:].cpu()  # (B, n)
        logp, cand = scores.float().log_softmax(-1).topk(min(self.top_k, scores.shape[-1]), dim=-1)  # (B, k)
        bonus = torch.zeros_like(logp, device="cpu")
        n = generated.shape[1]
        for d, j, w in self.terms:
            table = d.table
            so_far = table[generated].sum(1) if n else torch.zeros(len(generated), table.shape[1])  # (B, C)
            logits = d.bias + (so_far[:, None, :] + table[cand.cpu()]) / (n + 1)  # (B, k, C)
            bonus += w * logits.log_softmax(-1)[..., j]
        out = torch.full_like(scores, -torch.inf)
        return out.scatter(1, cand, (logp + self.strength * bonus.to(logp.device)).to(scores.dtype))
