"""Built-in constraints: the probes a checkpoint ships (toxicity, sentiment, topic) and zero-shot ones.

These are *unresolved* leaves: they name a probe or hold a text, and only become computable once
``constraint.resolve(encoder, registry)`` looks the probe up in the checkpoint's
:class:`~dglm.constraints.registry.ProbeRegistry` (or embeds the text with the encoder). The Controller does
that with its pipeline's encoder and probes; calling ``loss`` before raises
:class:`~dglm.constraints.algebra.UnresolvedConstraintError`.

Shipped-probe conventions (registry names and labels): ``"toxicity"`` binary ("non-toxic", "toxic");
``"sentiment"`` binary ("negative", "positive"); ``"topic"`` multi-class over topic names.

Zero-shot probes (:meth:`topic.describe <_Topic.describe>`, :func:`near`, :func:`away_from`) need no
training: with ``e`` the encoder's unit-norm embedding of the text, the probe is the binary logistic
regression ``logit(x) = scale * (cos(x, e) - threshold)``. ``threshold`` defaults to the average similarity
of corpus texts to ``e`` (``encoder.mean @ e``, with the mean raw embedding the encoder's standardisation
statistics hold; 0 if the encoder has none): "closer to this text than the average text is". ``scale``
defaults to 20 (a contrastive temperature of 0.05), so cosines a few tenths apart move the probability
from near 0 to near 1, and the loss stays bounded by ``softplus(scale * (1 + |threshold|))``.

Example:
    >>> c = 0.5 * toxicity.low() + topic("sports") - sentiment.negative()
    >>> c
    0.5*toxicity.low() + topic('sports') - sentiment.negative()
    >>> c == 0.5 * toxicity.low() + topic("sports") + sentiment.positive()
    True
    >>> c.is_resolved
    False
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dglm.constraints.algebra import Leaf, UnresolvedConstraintError, check_weight, format_weight
from dglm.constraints.probes import Probe, ProbeTarget
from dglm.constraints.registry import ProbeRegistry

DEFAULT_SCALE = 20.0

# Binary shipped probes: registry name -> (negative label, positive label, method for each).
BINARY_BUILTINS = {
    "toxicity": ("non-toxic", "toxic", "low", "high"),
    "sentiment": ("negative", "positive", "negative", "positive"),
}
TOPIC = "topic"


def _check_text(value, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name}={value!r} must be a non-empty string")
    return value


class _Unresolved(Leaf):
    is_resolved = False

    def toward(self, raw):
        raise UnresolvedConstraintError(
            f"{self!r} is not resolved yet: call constraint.resolve(encoder, registry) with the pipeline's "
            f"encoder and probe registry first (the Controller does this for you)")

    away = toward


@dataclass(frozen=True, eq=False, repr=False)
class Target(_Unresolved):
    """Aim the registry probe named ``probe`` at class ``label``: ``toxicity.low()`` is
    ``Target("toxicity", "non-toxic")``, ``topic("sports")`` is ``Target("topic", "sports")``.

    Example:
        >>> Target("toxicity", "non-toxic"), Target("topic", "sports"), Target("formality", "formal")
        (toxicity.low(), topic('sports'), target('formality', 'formal'))
    """

    probe: str
    label: str

    def __post_init__(self):
        _check_text(self.probe, "probe")
        _check_text(self.label, "label")
        if self.probe in BINARY_BUILTINS and self.label not in BINARY_BUILTINS[self.probe][:2]:
            raise ValueError(f"label={self.label!r} is not a {self.probe} label; accepted: "
                             f"{list(BINARY_BUILTINS[self.probe][:2])}")

    def key(self):
        """The probe name and the label."""
        return ("target", self.probe, self.label)

    def canonical(self):
        """For a shipped binary probe aimed at its first label (``toxicity.low()``): the twin aimed at the
        second one with sign -1."""
        if self.probe in BINARY_BUILTINS and self.label == BINARY_BUILTINS[self.probe][0]:
            return Target(self.probe, BINARY_BUILTINS[self.probe][1]), -1.0
        return self, 1.0

    def _resolve(self, encoder, registry):
        if registry is None:
            raise ValueError(f"{self!r} needs the checkpoint's probes: pass registry= to resolve()")
        if not isinstance(registry, ProbeRegistry):
            raise TypeError(f"registry={registry!r} must be a ProbeRegistry")
        registry.check_encoder(encoder)
        try:
            probe = registry.get(self.probe)
        except KeyError as e:
            raise ValueError(e.args[0]) from None
        if self.label not in probe.labels:
            what = "topics" if self.probe == TOPIC else "labels"
            hint = "; or describe one zero-shot: topic.describe('...')" if self.probe == TOPIC else ""
            raise ValueError(f"{self!r}: {self.label!r} is not known to this checkpoint's {self.probe!r} probe; "
                             f"known {what}: {', '.join(map(repr, probe.labels))}{hint}")
        if self.probe in BINARY_BUILTINS and not probe.binary:
            raise ValueError(f"the registry's {self.probe!r} probe must be binary with labels "
                             f"{BINARY_BUILTINS[self.probe][:2]}, got {probe!r}")
        probe.check_encoder(encoder)
        return ProbeTarget(probe, self.label, display=repr(self))

    def __repr__(self) -> str:
        if self.probe in BINARY_BUILTINS:
            neg, pos, neg_method, pos_method = BINARY_BUILTINS[self.probe]
            return f"{self.probe}.{neg_method if self.label == neg else pos_method}()"
        if self.probe == TOPIC:
            return f"topic({self.label!r})"
        return f"target({self.probe!r}, {self.label!r})"


@dataclass(frozen=True, eq=False, repr=False)
class TextTarget(_Unresolved):
    """A zero-shot probe from a text (see the module docstring for its definition). ``kind`` is
    ``"describe"`` (a topic description) or ``"near"`` (an example text); ``away`` aims at the opposite;
    ``name`` labels the class (default: the text).

    Example:
        >>> TextTarget("near", "I loved it", away=True)
        away_from('I loved it')
        >>> TextTarget("near", "I loved it", away=True) == -near("I loved it")
        True
    """

    kind: str
    text: str
    name: str | None = None
    scale: float = DEFAULT_SCALE
    threshold: float | None = None
    away: bool = False

    def __post_init__(self):
        if self.kind not in ("describe", "near"):
            raise ValueError(f"kind={self.kind!r} must be 'describe' or 'near'")
        _check_text(self.text, "text")
        if self.name is not None:
            _check_text(self.name, "name")
        object.__setattr__(self, "scale", check_weight(self.scale, "scale"))
        if self.scale <= 0:
            raise ValueError(f"scale={self.scale} must be > 0")
        if self.threshold is not None:
            object.__setattr__(self, "threshold", check_weight(self.threshold, "threshold"))
            if not -1 <= self.threshold <= 1:
                raise ValueError(f"threshold={self.threshold} is a cosine similarity: it must lie in [-1, 1]")

    @property
    def label(self) -> str:
        """The name of the class aimed at: ``name``, or the text itself."""
        return self.name or self.text

    def key(self):
        """Every field (the text, name, scale, threshold and direction)."""
        return ("text", self.kind, self.text, self.name, self.scale, self.threshold, self.away)

    def canonical(self):
        """For an ``away`` target: the twin aimed at the text with sign -1."""
        if self.away:
            return TextTarget(self.kind, self.text, self.name, self.scale, self.threshold), -1.0
        return self, 1.0

    def build_probe(self, encoder) -> Probe:
        """The zero-shot binary probe for ``encoder`` (embeds the text once)."""
        if not hasattr(encoder, "encode"):
            raise TypeError(f"encoder={encoder!r} must be a SemanticEncoder (with .encode) to embed {self.text!r}")
        e = encoder.encode([self.text])[0].float().cpu()  # (d,), unit norm
        threshold = self.threshold
        if threshold is None:
            mean = getattr(encoder, "mean", None)
            threshold = float(mean.float().cpu() @ e) if isinstance(mean, torch.Tensor) else 0.0
        return Probe(self.scale * e[None], torch.tensor([-self.scale * threshold]), (f"not {self.label}", self.label),
                     encoder.identity, name=f"{self.kind}:{self.label}",
                     provenance={"method": "zero-shot", "kind": self.kind, "text": self.text,
                                 "scale": self.scale, "threshold": threshold})

    def _resolve(self, encoder, registry):
        probe = self.build_probe(encoder)
        return ProbeTarget(probe, probe.labels[0] if self.away else probe.labels[1], display=repr(self))

    def __repr__(self) -> str:
        args = [repr(self.text)]
        if self.name is not None:
            args.append(f"name={self.name!r}")
        if self.scale != DEFAULT_SCALE:
            args.append(f"scale={format_weight(self.scale)}")
        if self.threshold is not None:
            args.append(f"threshold={format_weight(self.threshold)}")
        fn = "topic.describe" if self.kind == "describe" else ("away_from" if self.away else "near")
        out = f"{fn}({', '.join(args)})"
        return f"-{out}" if self.away and self.kind == "describe" else out


class _Toxicity:
    """The shipped toxicity probe (registry name ``"toxicity"``, labels ("non-toxic", "toxic")).

    Example:
        >>> toxicity.low(), -toxicity.low() == toxicity.high()
        (toxicity.low(), True)
    """

    def low(self) -> Target:
        """Aim at non-toxic text."""
        return Target("toxicity", "non-toxic")

    def high(self) -> Target:
        """Aim at toxic text."""
        return Target("toxicity", "toxic")

    def __repr__(self) -> str:
        return "toxicity"


class _Sentiment:
    """The shipped sentiment probe (registry name ``"sentiment"``, labels ("negative", "positive")).

    Example:
        >>> sentiment.positive() == -sentiment.negative()
        True
    """

    def positive(self) -> Target:
        """Aim at positive sentiment."""
        return Target("sentiment", "positive")

    def negative(self) -> Target:
        """Aim at negative sentiment."""
        return Target("sentiment", "negative")

    def __repr__(self) -> str:
        return "sentiment"


class _Topic:
    """``topic(name)``: aim the shipped multi-class topic probe (registry name ``"topic"``) at one of its
    classes; ``-topic(name)`` aims away from it. ``topic.describe(text)``: a zero-shot topic from a
    description.

    Example:
        >>> topic("sports"), -topic("sports")
        (topic('sports'), -topic('sports'))
        >>> topic.describe("competitive sports and athletes", name="sports")
        topic.describe('competitive sports and athletes', name='sports')
    """

    def __call__(self, name: str) -> Target:
        return Target(TOPIC, name)

    def describe(self, text: str, name: str | None = None, scale: float = DEFAULT_SCALE,
                 threshold: float | None = None) -> TextTarget:
        """A zero-shot topic: closer to the description ``text`` than the average text is."""
        return TextTarget("describe", text, name, scale, threshold)

    def __repr__(self) -> str:
        return "topic"


toxicity = _Toxicity()
sentiment = _Sentiment()
topic = _Topic()


def near(text: str, scale: float = DEFAULT_SCALE, threshold: float | None = None) -> TextTarget:
    """Aim close to an example text (zero-shot, see the module docstring).

    Example:
        >>> near("What a wonderful day!")
        near('What a wonderful day!')
    """
    return TextTarget("near", text, None, scale, threshold)


def away_from(text: str, scale: float = DEFAULT_SCALE, threshold: float | None = None) -> TextTarget:
    """Aim away from an example text: the negation of :func:`near`.

    Example:
        >>> away_from("I hate you") == -near("I hate you")
        True
    """
    return TextTarget("near", text, None, scale, threshold, away=True)


def target(probe: str, label: str) -> Target:
    """Aim any probe of the checkpoint's registry at one of its labels.

    Example:
        >>> target("formality", "formal")
        target('formality', 'formal')
    """
    return Target(probe, label)
