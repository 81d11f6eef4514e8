"""The constraint a probe makes of one of its labels: ``probe("sports")`` is a :class:`ProbeTarget`, a leaf of
the constraint algebra whose loss is the probe's cross-entropy toward (or, negated, away from) that label.

Example:
    >>> import torch
    >>> from dglm.constraints.probes import Probe
    >>> sentiment = Probe(torch.ones(1, 2), torch.zeros(1), ("negative", "positive"), "toy:2")
    >>> sentiment("positive").label
    'positive'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from dglm.constraints.algebra import Leaf
from dglm.constraints.probes import Probe


@dataclass(frozen=True, eq=False, repr=False)
class ProbeTarget(Leaf):
    """The constraint "aim ``probe`` at class ``label``": loss ``-log p(label | x)`` (cross-entropy).

    Negated, it aims at "not ``label``": loss ``-log(1 - p(label | x))``, bounded like the positive one.
    For a binary probe that is exactly the other label, so ``-probe("toxic") == probe("non-toxic")``; for a
    multi-class probe it pushes away from this class toward whichever others are closest.

    Example:
        >>> import torch
        >>> topics = Probe(torch.eye(3, 4), torch.zeros(3), ("sports", "food", "world"), "toy:4", name="topic")
        >>> x = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
        >>> topics("sports").loss(x) < (-topics("sports")).loss(x)
        tensor([True])
    """

    probe: Probe
    label: str
    display: str | None = field(default=None, compare=False)

    def __post_init__(self):
        if not isinstance(self.probe, Probe):
            raise TypeError(f"probe={self.probe!r} must be a Probe")
        self.probe.label_index(self.label)

    def key(self):
        """The probe (compared by name, labels, encoder and weights) and the label.

        Example (two copies of a probe make the same target):
            >>> sentiment = Probe(torch.ones(1, 2), torch.zeros(1), ("negative", "positive"), "toy:2")
            >>> copy = Probe(torch.ones(1, 2), torch.zeros(1), ("negative", "positive"), "toy:2")
            >>> sentiment("positive").key() == copy("positive").key(), sentiment("positive").key()[2]
            (True, 'positive')
        """
        return ("probe", self.probe, self.label)

    def canonical(self):
        """For a binary probe aimed at ``labels[0]``: the twin aimed at ``labels[1]`` with sign -1.

        Example:
            >>> sentiment = Probe(torch.ones(1, 2), torch.zeros(1), ("negative", "positive"), "toy:2")
            >>> sentiment("negative").canonical(), sentiment("positive").canonical()
            ((probe['positive'], -1.0), (probe['positive'], 1.0))
        """
        if self.probe.binary and self.label == self.probe.labels[0]:
            return ProbeTarget(self.probe, self.probe.labels[1]), -1.0
        return self, 1.0

    def toward(self, raw: torch.Tensor) -> torch.Tensor:
        """``-log p(label | x)`` per embedding: raw (..., d) -> (...,).

        Example:
            >>> topics = Probe(torch.eye(3, 4), torch.zeros(3), ("sports", "food", "world"), "toy:4",
            ...                name="topic")
            >>> topics("sports").toward(torch.tensor([[1.0, 0, 0, 0], [0.0, 1, 0, 0]])).round(decimals=3)
            tensor([0.5510, 1.5510])
        """
        return -self.probe.log_probs(raw)[..., self.probe.label_index(self.label)]

    def away(self, raw: torch.Tensor) -> torch.Tensor:
        """``-log(1 - p(label | x))`` per embedding: raw (..., d) -> (...,), computed stably.

        Example (finite even where ``p(label | x)`` rounds to 1 in float32):
            >>> topics = Probe(torch.eye(3, 4), torch.zeros(3), ("sports", "food", "world"), "toy:4",
            ...                name="topic")
            >>> x = torch.tensor([[1.0, 0, 0, 0], [200.0, 0, 0, 0]])
            >>> topics("sports").away(x).round(decimals=3)
            tensor([  0.8580, 199.3070])
        """
        index = self.probe.label_index(self.label)
        if self.probe.binary:
            return -self.probe.log_probs(raw)[..., 1 - index]
        logits = self.probe.logits(raw)  # (..., K)
        others = logits.index_fill(-1, torch.tensor([index], device=logits.device), -math.inf)
        return logits.logsumexp(-1) - others.logsumexp(-1)  # -log(1 - p(label)), stable

    def _resolve(self, encoder, registry):
        self.probe.check_encoder(encoder)
        return self

    def __repr__(self) -> str:
        return self.display or f"{self.probe.name}[{self.label!r}]"
