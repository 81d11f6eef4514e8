"""Activation steering (ActAdd / contrastive activation addition): the peer method dglm is measured against.

A steering vector is a direction in a causal LM's residual stream: the mean hidden state, at one decoder
layer (or a few), of texts of a target class minus that of the other texts (CAA, Rimsky et al. 2024; the
method behind ``repeng`` and ``steering-vectors``). During generation it is added, times a multiplier, to
the output of those layers at every position, through forward hooks that :meth:`SteeringVector.apply`
registers on entry and removes on exit, so the user's model is never left modified.

Vectors are plain values: ``a + b`` adds two vectors layer by layer (composition), ``2.0 * a`` scales one,
``-a`` steers away. :func:`constraint_vector` builds one from a dglm constraint (``topic('sports')``,
``toxicity.low() + topic('sports')``) and the labelled texts each probe was trained on, so the same
constraint names steer both methods with the same supervision.

Example (a random tiny decoder; the vector changes the logits inside the block only):
    >>> from dglm.presets import TINY, random_decoder
    >>> dec = random_decoder(TINY.decoder)
    >>> texts = ["the team won the match", "a goal in the game", "a song and a film", "the book of art"]
    >>> vec = SteeringVector.fit(dec, texts, ["sports", "sports", "arts", "arts"], "sports", layers=[0])
    >>> vec.layers, tuple(vec.directions[0].shape)
    ([0], (32,))
    >>> ids = torch.tensor([[5, 6, 7]])
    >>> before = dec.model(input_ids=ids).logits
    >>> with vec.apply(dec.model, scale=8.0):
    ...     steered = dec.model(input_ids=ids).logits
    >>> bool((steered - before).abs().max() > 0), bool(torch.equal(dec.model(input_ids=ids).logits, before))
    (True, True)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["LabelledActivations", "SteeringVector", "constraint_vector", "decoder_layers", "mean_activations",
           "residual_norms"]


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a causal LM, in order (looked up through wrappers such as peft's): the
    first ``nn.ModuleList`` with ``config.num_hidden_layers`` modules (``model.layers`` in Llama-style
    models, ``transformer.h`` in GPT-2). A dglm :class:`~dglm.decoder.Decoder` is looked through too.

    Example:
        >>> from dglm.presets import TINY, random_decoder
        >>> len(decoder_layers(random_decoder(TINY.decoder).model))
        2
    """
    model = getattr(model, "model", model) if not hasattr(model, "config") else model
    config = getattr(model, "config", None)
    n = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) and (n is None or len(module) == n):
            return module
    raise ValueError(f"model={type(model).__name__}: no list of its {n} transformer blocks found")


def _check_layers(layers: Sequence[int], num_layers: int) -> list[int]:
    out = sorted({int(i) for i in layers})
    if not out or out[0] < 0 or out[-1] >= num_layers:
        raise ValueError(f"layers={list(layers)!r}: give one or more block indices in [0, {num_layers - 1}]")
    return out


@torch.no_grad()
def mean_activations(decoder, texts: Sequence[str], layers: Sequence[int], batch_size: int = 16,
                     max_tokens: int = 64) -> torch.Tensor:
    """Each text's residual stream after each block in ``layers`` (sorted), averaged over its tokens:
    (N, len(layers), h).

    ``decoder`` is a :class:`dglm.Decoder` (its base LM is used, adapter off) or any object with ``model``
    and ``tokenizer``. Texts are cut to their first ``max_tokens`` tokens (the length steering acts over).

    Example:
        >>> from dglm.presets import TINY, random_decoder
        >>> mean_activations(random_decoder(TINY.decoder), ["a b", "c d e"], layers=[0, 1]).shape
        torch.Size([2, 2, 32])
    """
    model, tok = decoder.model, decoder.tokenizer
    layers = _check_layers(layers, len(decoder_layers(model)))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    device = next(model.parameters()).device
    off = decoder.adapter_off() if hasattr(decoder, "adapter_off") else contextlib.nullcontext()
    out = []
    with off:
        for start in range(0, len(texts), batch_size):
            ids = [row[:max_tokens] or [pad] for row in tok(list(texts[start:start + batch_size]),
                                                              add_special_tokens=False).input_ids]
            width = max(map(len, ids))
            batch = torch.tensor([row + [pad] * (width - len(row)) for row in ids], device=device)  # (B, T)
            mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids], device=device)
            hidden = model(input_ids=batch, attention_mask=mask, output_hidden_states=True).hidden_states
            # hidden[0] is the embeddings, hidden[i + 1] the output of block i.
            stacked = torch.stack([hidden[i + 1] for i in layers], dim=1).float()  # (B, L, T, h)
            weights = (mask / mask.sum(1, keepdim=True))[:, None, :, None].float()  # (B, 1, T, 1)
            out.append((stacked * weights).sum(2).cpu())  # (B, L, h)
    return torch.cat(out)


@torch.no_grad()
def residual_norms(decoder, texts: Sequence[str], layers: Sequence[int], batch_size: int = 16,
                   max_tokens: int = 64) -> dict[int, float]:
    """The mean L2 norm of the residual stream after each block in ``layers``, over every token of ``texts``
    but each text's first (whose norm, the attention sink's, is often orders of magnitude larger): the scale
    a steering vector's strength is a fraction of (:meth:`SteeringVector.normalized`).

    Example:
        >>> from dglm.presets import TINY, random_decoder
        >>> norms = residual_norms(random_decoder(TINY.decoder), ["a b c", "c d e f"], layers=[0, 1])
        >>> sorted(norms), all(v > 0 for v in norms.values())
        ([0, 1], True)
    """
    model, tok = decoder.model, decoder.tokenizer
    layers = _check_layers(layers, len(decoder_layers(model)))
    device = next(model.parameters()).device
    off = decoder.adapter_off() if hasattr(decoder, "adapter_off") else contextlib.nullcontext()
    total, count = torch.zeros(len(layers), dtype=torch.float64), 0
    with off:
        for text in texts:
            ids = tok(text, add_special_tokens=False).input_ids[:max_tokens]
            if len(ids) < 2:
                continue
            hidden = model(input_ids=torch.tensor([ids], device=device), output_hidden_states=True).hidden_states
            stacked = torch.stack([hidden[i + 1][0, 1:] for i in layers]).double()  # (L, T - 1, h)
            total += stacked.norm(dim=-1).sum(-1).cpu()
            count += len(ids) - 1
    if count == 0:
        raise ValueError("texts: none has two or more tokens; cannot measure the residual norm")
    return {layer: float(total[i] / count) for i, layer in enumerate(layers)}


@dataclass
class SteeringVector:
    """Directions to add to the residual stream after some decoder blocks: ``directions[layer]`` is (h,).

    ``name`` says what it steers toward; ``provenance`` records how it was made (texts per class, layers).
    Vectors add (layer by layer), scale by a number and negate.

    Example:
        >>> a = SteeringVector({0: torch.tensor([1.0, 0.0])}, "sports")
        >>> b = SteeringVector({0: torch.tensor([0.0, 2.0]), 2: torch.ones(2)}, "arts")
        >>> mix = a + -0.5 * b
        >>> mix.name, mix.layers, mix.directions[0]
        ('sports + -0.5*arts', [0, 2], tensor([ 1., -1.]))
    """

    directions: dict[int, torch.Tensor]
    name: str = "steering"
    provenance: dict = field(default_factory=dict)

    @property
    def layers(self) -> list[int]:
        """The blocks it acts after, in order.

        Example:
            >>> SteeringVector({3: torch.ones(2), 1: torch.ones(2)}).layers
            [1, 3]
        """
        return sorted(self.directions)

    @classmethod
    def fit(cls, decoder, texts: Sequence[str], labels: Sequence[str], target: str, layers: Sequence[int],
            batch_size: int = 16, max_tokens: int = 64) -> SteeringVector:
        """The mean-difference vector of class ``target`` against every other text (CAA), at ``layers``.

        Example:
            >>> from dglm.presets import TINY, random_decoder
            >>> dec = random_decoder(TINY.decoder)
            >>> texts = ["the team won the match", "a goal in the game", "a song and a film", "the book"]
            >>> labels = ["sports", "sports", "arts", "arts"]
            >>> vec = SteeringVector.fit(dec, texts, labels, "arts", layers=[0, 1])
            >>> vec.name, vec.layers, vec.provenance["target_texts"], tuple(vec.directions[1].shape)
            ('arts', [0, 1], 2, (32,))
        """
        return cls.from_activations(mean_activations(decoder, texts, layers, batch_size, max_tokens), labels,
                                    target, _check_layers(layers, len(decoder_layers(decoder.model))))

    @classmethod
    def from_activations(cls, activations: torch.Tensor, labels: Sequence[str], target: str,
                         layers: Sequence[int]) -> SteeringVector:
        """From :func:`mean_activations` output (N, L, h) of labelled texts: mean over ``target`` texts
        minus mean over the others, for each of the L ``layers``.

        Example:
            >>> acts = torch.tensor([[[1.0, 0.0]], [[3.0, 0.0]], [[0.0, 1.0]]])  # (N=3, L=1, h=2)
            >>> SteeringVector.from_activations(acts, ["a", "a", "b"], "a", [4]).directions[4]
            tensor([ 2., -1.])
        """
        labels = list(labels)
        if len(labels) != activations.shape[0] or activations.shape[1] != len(layers):
            raise ValueError(f"activations {tuple(activations.shape)} must be (len(labels)={len(labels)}, "
                             f"len(layers)={len(layers)}, h)")
        hit = torch.tensor([label == target for label in labels])
        if hit.all() or not hit.any():
            raise ValueError(f"target={target!r} must label some texts but not all; labels: {sorted(set(labels))}")
        diff = activations[hit].mean(0) - activations[~hit].mean(0)  # (L, h)
        return cls({layer: diff[i] for i, layer in enumerate(layers)}, name=target,
                   provenance={"method": "mean difference (CAA)", "target_texts": int(hit.sum()),
                               "other_texts": int((~hit).sum()), "layers": list(layers)})

    def normalized(self, norms: Mapping[int, float]) -> SteeringVector:
        """The same directions with length ``norms[layer]`` (the layer's mean residual norm,
        :func:`residual_norms`), so that a scale r adds a vector of r times the typical residual norm.

        Example:
            >>> SteeringVector({3: torch.tensor([3.0, 4.0])}).normalized({3: 10.0}).directions[3]
            tensor([6., 8.])
        """
        return SteeringVector({i: v / v.norm().clamp_min(1e-12) * float(norms[i]) for i, v in self.directions.items()},
                              self.name, {**self.provenance, "normalized_to_residual_norm": True})

    def at(self, layers: Sequence[int]) -> SteeringVector:
        """The same vector restricted to some of its layers.

        Example:
            >>> SteeringVector({1: torch.ones(2), 3: torch.ones(2)}).at([3]).layers
            [3]
        """
        if set(layers) - set(self.directions):
            raise ValueError(f"layers={list(layers)!r}: this vector has only {self.layers}")
        return SteeringVector({i: self.directions[i] for i in layers}, self.name, self.provenance)

    def __add__(self, other: SteeringVector) -> SteeringVector:
        if not isinstance(other, SteeringVector):
            return NotImplemented
        directions = dict(self.directions)
        for layer, v in other.directions.items():
            directions[layer] = directions[layer] + v if layer in directions else v
        return SteeringVector(directions, f"{self.name} + {other.name}")

    def __mul__(self, weight: float) -> SteeringVector:
        if not isinstance(weight, (int, float)) or isinstance(weight, bool):
            return NotImplemented
        return SteeringVector({i: weight * v for i, v in self.directions.items()}, f"{weight:g}*{self.name}",
                              self.provenance)

    __rmul__ = __mul__

    def __neg__(self) -> SteeringVector:
        return -1.0 * self

    @contextlib.contextmanager
    def apply(self, model: nn.Module, scale: float = 1.0) -> Iterator[nn.Module]:
        """Inside the block, ``model``'s blocks in :attr:`layers` add ``scale * direction`` to their output at
        every position (prompt and generated tokens); the hooks are removed on exit, even on error.
        ``model``: a causal LM, or a dglm :class:`~dglm.decoder.Decoder`.

        Example:
            >>> from dglm.presets import TINY, random_decoder
            >>> dec = random_decoder(TINY.decoder)
            >>> ids = torch.tensor([[5, 6, 7]])
            >>> before = dec.model(input_ids=ids).logits
            >>> vec = SteeringVector({0: torch.ones(dec.hidden_size)})
            >>> with vec.apply(dec, scale=4.0) as model:
            ...     steered = model.model(input_ids=ids).logits
            >>> after = dec.model(input_ids=ids).logits  # the hooks are gone
            >>> bool((steered - before).abs().max() > 0), bool(torch.equal(after, before))
            (True, True)
        """
        blocks = decoder_layers(model)
        _check_layers(self.layers, len(blocks))
        handles = []
        try:
            for layer, v in self.directions.items():
                handles.append(blocks[layer].register_forward_hook(_adder(scale * v)))
            yield model
        finally:
            for h in handles:
                h.remove()


def _adder(delta: torch.Tensor):
    def hook(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden + delta.to(device=hidden.device, dtype=hidden.dtype)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
    return hook


@dataclass
class LabelledActivations:
    """Mean activations (N, L, h) of one probe's labelled texts, at ``layers``: the source of that probe's
    steering vectors (:meth:`vector`).

    Example:
        >>> bank = LabelledActivations(torch.tensor([[[1.0]], [[0.0]]]), ["pos", "neg"], [2])
        >>> bank.vector("pos").directions
        {2: tensor([1.])}
    """

    activations: torch.Tensor
    labels: list[str]
    layers: list[int]
    norms: dict[int, float] | None = None  # mean residual norm per layer: vectors are scaled to it

    def vector(self, label: str) -> SteeringVector:
        """Class ``label`` against the rest (with ``norms``: of length the layer's mean residual norm).

        Example:
            >>> acts = torch.tensor([[[2.0, 0.0]], [[0.0, 1.0]], [[0.0, 3.0]]])  # (N=3, L=1, h=2)
            >>> bank = LabelledActivations(acts, ["sports", "arts", "world"], [4])
            >>> vec = bank.vector("sports")
            >>> vec.name, vec.directions[4]
            ('sports', tensor([ 2., -2.]))
        """
        vec = SteeringVector.from_activations(self.activations, self.labels, label, self.layers)
        return vec.normalized(self.norms) if self.norms else vec


def constraint_vector(constraint, banks: Mapping[str, LabelledActivations], layers: Sequence[int] | None = None,
                      ) -> SteeringVector:
    """The steering vector of a constraint made of built-in targets: the sum over its terms of
    ``weight * vector(label)`` from the bank of the term's probe (``-sentiment.negative()`` steers away from
    negative). ``layers`` restricts it to some of the banks' layers.

    Example:
        >>> from dglm.constraints import parse_constraint
        >>> banks = {"topic": LabelledActivations(torch.tensor([[[2.0]], [[0.0]]]), ["sports", "arts"], [1])}
        >>> constraint_vector(parse_constraint("2 * topic('sports')"), banks).directions
        {1: tensor([4.])}
    """
    from dglm.constraints.builtin import Target

    total = None
    for leaf, weight in constraint.terms():
        if not isinstance(leaf, Target):
            raise ValueError(f"{leaf!r}: activation steering needs a built-in probe target (labelled texts)")
        if leaf.probe not in banks:
            raise ValueError(f"{leaf!r}: no labelled texts for probe {leaf.probe!r}; have {sorted(banks)}")
        vec = weight * banks[leaf.probe].vector(leaf.label)
        total = vec if total is None else total + vec
    if total is None:
        raise ValueError(f"constraint {constraint!r} has no terms")
    total.name = repr(constraint)
    return total.at(layers) if layers is not None else total
