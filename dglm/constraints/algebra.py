"""The constraint algebra: differentiable losses on raw embeddings that add, scale and negate.

A :class:`Constraint` maps a batch of embeddings in the encoder's *raw* unit-norm space, ``(..., d)``, to
one loss per embedding, ``(...,)``; lower is better satisfied. Leaves aim one probe at one target (or wrap
any torch callable); :class:`Sum` and :class:`Scaled` combine them. Every object is an immutable frozen
dataclass whose ``repr`` reads like the expression that built it.

Normal form. ``c.terms()`` flattens an expression into ``((leaf, weight), ...)`` with like terms merged.
Each leaf is put in its canonical orientation first, so aiming *at* a target and aiming *away* from it
are the same leaf with opposite signs (``toxicity.low()`` is ``-1 x toxicity.high()``). Weights on one
leaf add up: opposite aims cancel, ``c - c`` and ``0 * c`` normalise to nothing (and sample exactly what
no constraint samples). Equality and hashing compare this normal form, so ``a + b == b + a`` and
``2 * c == c.weight(2)``. The loss is evaluated from the normal form: a term ``(leaf, w)`` costs
``w * leaf.toward(x)`` for ``w > 0`` and ``|w| * leaf.away(x)`` for ``w < 0``. For probe leaves ``away`` is
the cross-entropy toward "not this class", which stays bounded like the ``toward`` loss.

Example:
    >>> import torch
    >>> shorter = FunctionConstraint(lambda x: x[..., 0], name="first_coordinate")
    >>> c = 0.5 * shorter + shorter - shorter.weight(0.5)
    >>> c
    0.5*first_coordinate + first_coordinate - 0.5*first_coordinate
    >>> c.terms() == ((shorter, 1.0),)
    True
    >>> c.loss(torch.tensor([[0.25, 1.0]]))
    tensor([0.2500])
    >>> (shorter - shorter).terms()
    ()
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field

import torch

# Merged weights smaller than this fraction of the weights that were added up count as exactly zero, so
# float round-off (0.1*c + 0.2*c - 0.3*c) does not leave a term that switches guidance on.
_CANCEL_TOLERANCE = 1e-9


class UnresolvedConstraintError(RuntimeError):
    """A loss was asked of a constraint that still names probes or texts instead of holding them.

    Example:
        >>> from dglm.constraints import near
        >>> near("What a day!").loss(torch.zeros(1, 4))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        dglm.constraints.algebra.UnresolvedConstraintError: near('What a day!') is not resolved yet: call ...
    """


def check_weight(value, name: str = "weight") -> float:
    """``value`` as a finite float, or a TypeError / ValueError naming ``name`` and what is accepted.

    Example:
        >>> check_weight(2)
        2.0
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}={value!r} must be a real number (int or float); per-row strengths go to "
                        f"ConstraintGuidance(strength=...)")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}={value!r} must be finite")
    return value


def format_weight(weight: float) -> str:
    """The shortest text that parses back to ``weight``: ``2.0 -> '2'``, ``0.5 -> '0.5'``.

    Example:
        >>> format_weight(2.0), format_weight(1e-20)
        ('2', '1e-20')
    """
    return str(int(weight)) if weight.is_integer() and abs(weight) < 1e15 else repr(weight)


class Constraint:
    """Base of every constraint: a differentiable per-row loss on raw embeddings, with an algebra.

    ``loss(raw)``: raw (..., d) -> (...,). Operators: ``a + b``, ``a - b``, ``-a``, ``w * a``, ``a * w``,
    ``a / w``, ``a.weight(w)``; ``sum([a, b])`` works too.

    Example:
        >>> a = FunctionConstraint(lambda x: x.sum(-1), name="a")
        >>> b = FunctionConstraint(lambda x: x.pow(2).sum(-1), name="b")
        >>> 2 * a - b
        2*a - b
        >>> (a + b) == (b + a), -(-a) == a, 2 * a == a.weight(2)
        (True, True, True)
    """

    # -- what subclasses provide ---------------------------------------------------------------------
    def _raw_terms(self) -> Iterator[tuple[Leaf, float]]:
        raise NotImplementedError

    def _map_leaves(self, fn: Callable[[Leaf], Constraint]) -> Constraint:
        raise NotImplementedError

    def leaves(self) -> Iterator[Leaf]:
        """The leaves of the expression tree, left to right (before any merging).

        Example:
            >>> from dglm.constraints import parse_constraint
            >>> list(parse_constraint("topic('sports') - 2 * topic('sports') + near('a song')").leaves())
            [topic('sports'), topic('sports'), near('a song')]
        """
        raise NotImplementedError

    # -- normal form, loss, resolution ----------------------------------------------------------------
    def terms(self) -> tuple[tuple[Leaf, float], ...]:
        """The normal form: ``((leaf, weight), ...)``, leaves canonical and merged, zero weights dropped,
        in order of first appearance. Weights whose product or sum leaves the float range raise a ValueError
        (an infinite weight would otherwise drop the term, silently unguiding the run).

        Example:
            >>> from dglm.constraints import near
            >>> (1e308 * near("a") + 1e308 * near("a")).terms()  # doctest: +ELLIPSIS
            Traceback (most recent call last):
                ...
            ValueError: the weights of near('a') ... overflow the float range ...
        """
        merged: dict[Hashable, list] = {}
        for leaf, weight in self._raw_terms():
            leaf, sign = leaf.canonical()
            entry = merged.setdefault(leaf.key(), [leaf, 0.0, 0.0])
            entry[1] += sign * weight
            entry[2] += abs(weight)
            if not (math.isfinite(entry[1]) and math.isfinite(entry[2])):
                raise ValueError(f"the weights of {entry[0]!r} in {self!r} overflow the float range (their "
                                 f"product or sum is not finite); accepted: weights whose products and sums "
                                 f"stay below {sys.float_info.max:.3g}")
        return tuple((leaf, w) for leaf, w, scale in merged.values() if abs(w) > _CANCEL_TOLERANCE * scale)

    def loss(self, raw: torch.Tensor) -> torch.Tensor:
        """Per-embedding loss: raw (..., d) unit-norm embeddings -> (...,). Lower is better satisfied.

        Example:
            >>> from dglm.constraints import Probe
            >>> sentiment = Probe(torch.tensor([[4.0, 0.0]]), torch.zeros(1), ("negative", "positive"),
            ...                   "toy:2", name="sentiment")
            >>> c = 2 * sentiment("positive")  # 2 * -log p(positive | x)
            >>> c.loss(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])).round(decimals=3)
            tensor([0.0360, 8.0360])
        """
        pending = [repr(leaf) for leaf in self.leaves() if not leaf.is_resolved]
        if pending:
            raise UnresolvedConstraintError(
                f"{', '.join(pending)} {'is' if len(pending) == 1 else 'are'} not resolved yet: call "
                f"constraint.resolve(encoder, registry) with the pipeline's encoder and probe registry first "
                f"(the Controller does this for you)")
        terms = self.terms()
        if not terms:
            return raw.new_zeros(raw.shape[:-1])
        total = None
        for leaf, weight in terms:
            part = weight * leaf.toward(raw) if weight > 0 else -weight * leaf.away(raw)
            total = part if total is None else total + part
        return total

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        return self.loss(raw)

    @property
    def is_resolved(self) -> bool:
        """True when every leaf can compute its loss (no probe or text left to look up).

        Example:
            >>> from dglm.constraints import Probe, parse_constraint
            >>> sentiment = Probe(torch.ones(1, 2), torch.zeros(1), ("negative", "positive"), "toy:2")
            >>> parse_constraint("topic('sports')").is_resolved, sentiment("positive").is_resolved
            (False, True)
        """
        return all(leaf.is_resolved for leaf in self.leaves())

    def resolve(self, encoder, registry=None) -> Constraint:
        """The same expression with every leaf made concrete for ``encoder`` (a
        :class:`~dglm.encoder.SemanticEncoder`): named probes are looked up in ``registry`` (a
        :class:`~dglm.constraints.registry.ProbeRegistry`), texts are embedded, and probe-backed leaves are
        checked against the encoder's identity and dimension.

        Example (a text is embedded by the encoder; the expression keeps its shape):
            >>> from dglm.constraints import near
            >>> from dglm.presets import TINY, random_encoder
            >>> encoder = random_encoder(TINY.encoder)
            >>> c = 2 * near("a song")
            >>> resolved = c.resolve(encoder)
            >>> at_target = resolved.loss(encoder.encode(["a song"])).abs().item() < 1e-5
            >>> c.is_resolved, resolved.is_resolved, at_target
            (False, True, True)
        """
        return self._map_leaves(lambda leaf: leaf._resolve(encoder, registry))

    # -- algebra ---------------------------------------------------------------------------------------
    def weight(self, w: float) -> Constraint:
        """This constraint with its loss scaled by ``w`` (same as ``w * self``).

        Example:
            >>> from dglm.constraints import parse_constraint
            >>> topic = parse_constraint("topic('sports')")
            >>> topic.weight(3), topic.weight(3) == 3 * topic
            (3*topic('sports'), True)
        """
        return scale(self, check_weight(w))

    def __add__(self, other) -> Constraint:
        if not isinstance(other, Constraint):
            return NotImplemented
        parts = (self.parts if isinstance(self, Sum) else (self,)) + \
                (other.parts if isinstance(other, Sum) else (other,))
        return Sum(parts)

    def __radd__(self, other) -> Constraint:
        if isinstance(other, numbers.Number) and not isinstance(other, bool) and other == 0:
            return self  # lets sum([a, b]) start from 0
        return NotImplemented

    def __neg__(self) -> Constraint:
        return scale(self, -1.0)

    def __pos__(self) -> Constraint:
        return self

    def __sub__(self, other) -> Constraint:
        if not isinstance(other, Constraint):
            return NotImplemented
        return self + (-other)

    def __mul__(self, other) -> Constraint:
        if isinstance(other, Constraint):
            raise TypeError(f"cannot multiply two constraints ({self!r}) * ({other!r}); add them, or scale "
                            f"one by a number")
        if isinstance(other, bool) or not isinstance(other, numbers.Real):
            return NotImplemented
        return self.weight(other)

    __rmul__ = __mul__

    def __truediv__(self, other) -> Constraint:
        if isinstance(other, bool) or not isinstance(other, numbers.Real):
            return NotImplemented
        other = check_weight(other, "divisor")
        if other == 0:
            raise ZeroDivisionError(f"cannot divide {self!r} by 0")
        return scale(self, 1.0 / other)

    # -- value semantics -------------------------------------------------------------------------------
    def _normal_key(self) -> frozenset:
        return frozenset((leaf.key(), w) for leaf, w in self.terms())

    def __eq__(self, other) -> bool:
        if not isinstance(other, Constraint):
            return NotImplemented
        return self._normal_key() == other._normal_key()

    def __hash__(self) -> int:
        return hash(self._normal_key())


def scale(constraint: Constraint, weight: float) -> Constraint:
    """``weight * constraint`` with nested scales folded: ``2 * (3 * c)`` is ``6*c``, ``-(-c)`` is ``c``.

    Example:
        >>> c = FunctionConstraint(lambda x: x.sum(-1), name="c")
        >>> scale(scale(c, 2.0), 3.0)
        6*c
    """
    if isinstance(constraint, Scaled):
        weight, constraint = weight * constraint.factor, constraint.inner
    return constraint if weight == 1.0 else Scaled(weight, constraint)


@dataclass(frozen=True, eq=False, repr=False)
class Sum(Constraint):
    """The sum of the parts' losses (how attributes compose). Build it with ``a + b``.

    Example:
        >>> a, b = (FunctionConstraint(lambda x: x.sum(-1), name=n) for n in "ab")
        >>> Sum((a, -b))
        a - b
    """

    parts: tuple[Constraint, ...]

    def __post_init__(self):
        if not isinstance(self.parts, tuple) or not all(isinstance(p, Constraint) for p in self.parts):
            raise TypeError(f"Sum parts must be a tuple of Constraint, got {self.parts!r}")

    def _raw_terms(self):
        for part in self.parts:
            yield from part._raw_terms()

    def _map_leaves(self, fn):
        return Sum(tuple(p._map_leaves(fn) for p in self.parts))

    def leaves(self):
        """The leaves of every part, left to right."""
        for part in self.parts:
            yield from part.leaves()

    def __repr__(self) -> str:
        if not self.parts:
            return "Sum(())"
        out = repr(self.parts[0])
        for part in self.parts[1:]:
            if isinstance(part, Scaled) and part.factor < 0:
                positive = scale(part.inner, -part.factor)
                out += f" - ({positive!r})" if isinstance(positive, Sum) else f" - {positive!r}"
            else:
                out += " + " + repr(part)
        return out


@dataclass(frozen=True, eq=False, repr=False)
class Scaled(Constraint):
    """``factor`` times the inner constraint's loss; a negative factor aims the inner one the other way.

    Example:
        >>> c = FunctionConstraint(lambda x: x.sum(-1), name="c")
        >>> Scaled(0.5, c), Scaled(-1.0, c)
        (0.5*c, -c)
    """

    factor: float
    inner: Constraint

    def __post_init__(self):
        object.__setattr__(self, "factor", check_weight(self.factor, "factor"))
        if not isinstance(self.inner, Constraint):
            raise TypeError(f"Scaled inner must be a Constraint, got {self.inner!r}")

    def _raw_terms(self):
        for leaf, w in self.inner._raw_terms():
            yield leaf, self.factor * w

    def _map_leaves(self, fn):
        return Scaled(self.factor, self.inner._map_leaves(fn))

    def leaves(self):
        """The inner constraint's leaves (the factor is not applied)."""
        yield from self.inner.leaves()

    def __repr__(self) -> str:
        inner = repr(self.inner)
        if isinstance(self.inner, Sum) or (isinstance(self.inner, Scaled)):
            inner = f"({inner})"
        if self.factor == -1.0:
            return "-" + inner
        return f"{format_weight(self.factor)}*{inner}"


class Leaf(Constraint):
    """One loss aimed one way. Subclasses define ``key`` (value identity), ``toward`` and, when the
    opposite aim is not simply the negated loss, ``away``; ``canonical`` turns an "away" leaf into its
    "toward" twin with sign -1 so the two merge.

    Example:
        >>> c = FunctionConstraint(lambda x: x.sum(-1), name="c")
        >>> c.canonical() == (c, 1.0)
        True
    """

    is_resolved = True

    def key(self) -> Hashable:
        """A hashable value identity: leaves with equal keys merge in :meth:`terms` and compare equal."""
        raise NotImplementedError

    def canonical(self) -> tuple[Leaf, float]:
        """``(toward-leaf, sign)``: this leaf in its canonical orientation (default: itself, +1)."""
        return self, 1.0

    def toward(self, raw: torch.Tensor) -> torch.Tensor:
        """Loss for aiming at this leaf's target: raw (..., d) -> (...,)."""
        raise NotImplementedError

    def away(self, raw: torch.Tensor) -> torch.Tensor:
        """Loss for aiming away from this leaf's target (used for negative weights)."""
        return -self.toward(raw)

    def _resolve(self, encoder, registry) -> Constraint:
        return self

    def _raw_terms(self):
        yield self, 1.0

    def _map_leaves(self, fn):
        return fn(self)

    def leaves(self):
        """Just this leaf."""
        yield self


@dataclass(frozen=True, eq=False, repr=False)
class FunctionConstraint(Leaf):
    """Any torch callable ``embeddings (N, d) -> per-row loss (N,)`` as a constraint (an MLP probe, a
    reward model, a distance...). Inputs of shape (..., d) are flattened to (N, d) and the loss reshaped
    back. Negating it negates the loss (the library cannot know its opposite target), so prefer a loss that
    is bounded below when you negate it. ``encoder``, when given, is the identity (``"<name>:<dim>"``) of
    the encoder whose space the function expects; ``resolve`` then refuses another encoder. Two
    FunctionConstraints are equal when they wrap the same callable object under the same name.

    Example:
        >>> import torch
        >>> mlp = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        >>> c = FunctionConstraint(lambda x: mlp(x).squeeze(-1), name="mlp")
        >>> c.loss(torch.randn(3, 5, 4)).shape
        torch.Size([3, 5])
    """

    fn: Callable[[torch.Tensor], torch.Tensor]
    name: str = "custom"
    encoder: str | None = field(default=None)

    def __post_init__(self):
        if not callable(self.fn):
            raise TypeError(f"fn={self.fn!r} must be callable: embeddings (N, d) -> per-row loss (N,)")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name={self.name!r} must be a non-empty str")

    def key(self):
        """The wrapped callable's identity (it may be unhashable), the name and the encoder identity."""
        return ("function", id(self.fn), self.name, self.encoder)  # the callable's identity: it may be unhashable

    def toward(self, raw: torch.Tensor) -> torch.Tensor:
        """``fn`` applied to raw (..., d) flattened to (N, d); its (N,) output is checked and reshaped to (...,)."""
        flat = raw.reshape(-1, raw.shape[-1])  # (N, d)
        out = self.fn(flat)
        if not isinstance(out, torch.Tensor) or out.shape != flat.shape[:1]:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"constraint {self.name!r}: fn must map embeddings {tuple(flat.shape)} to a "
                             f"per-row loss of shape ({flat.shape[0]},), got {got}")
        return out.reshape(raw.shape[:-1])

    def _resolve(self, encoder, registry):
        if self.encoder is not None and self.encoder != encoder.identity:
            raise ValueError(f"constraint {self.name!r} was built for encoder {self.encoder!r}, but the "
                             f"pipeline's encoder is {encoder.identity!r}")
        return self

    def __repr__(self) -> str:
        return self.name
