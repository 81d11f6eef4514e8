"""Linear probes on the encoder's raw embedding space and their constraints (a registry of named probes is
:class:`~dglm.constraints.registry.ProbeRegistry`).

A :class:`Probe` is a logistic regression exported to torch: binary (one logit, ``labels[1]`` is the
positive class, as in scikit-learn) or multi-class (softmax over named classes). ``probe(label)`` is the
constraint "aim at ``label``" (cross-entropy toward it); its negation aims at "not ``label``". A probe
records the identity and dimension of the encoder it was trained on and refuses any other encoder. It
saves as ``probe.json`` (labels, encoder, dimension, provenance) + ``probe.safetensors`` (weights);
loading never unpickles.

Example:
    >>> import torch
    >>> probe = Probe(torch.tensor([[4.0, 0.0]]), torch.zeros(1), ("negative", "positive"), "toy:2",
    ...               name="sentiment")
    >>> probe.predict(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    tensor([1, 0])
    >>> c = probe("positive")
    >>> c, -c, -c == probe("negative")
    (sentiment['positive'], -sentiment['positive'], True)
    >>> c.loss(torch.tensor([[1.0, 0.0]])).round(decimals=4)
    tensor([0.0181])
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from dglm.constraints.algebra import Leaf
from dglm.io import CheckpointError, atomic_directory, load_tensors, read_json, save_tensors, write_json

logger = logging.getLogger(__name__)

PROBE_CONFIG = "probe.json"
PROBE_WEIGHTS = "probe.safetensors"
PROBE_FORMAT = "dglm-probe"
FORMAT_VERSION = 1


def _identity_and_dim(encoder) -> tuple[str, int]:
    """(identity, dim) of a SemanticEncoder-like object or of an identity string ``"<name>:<dim>"``."""
    if isinstance(encoder, str):
        name, _, dim = encoder.rpartition(":")
        if not name or not dim.isdigit():
            raise ValueError(f"encoder={encoder!r}: an identity string must look like '<name_or_path>:<dim>'")
        return encoder, int(dim)
    if not hasattr(encoder, "identity") or not hasattr(encoder, "dim"):
        raise TypeError(f"encoder={encoder!r} must be a SemanticEncoder (with .identity and .dim) or an "
                        f"identity string '<name_or_path>:<dim>'")
    return str(encoder.identity), int(encoder.dim)


@dataclass(frozen=True, eq=False, repr=False)
class Probe:
    """A linear probe on raw unit-norm embeddings; immutable (its tensors are private float32 copies).

    weight: (K, d) with K = 1 for a binary probe (logit > 0 means ``labels[1]``) or K = len(labels) for a
    multi-class one (a 2-row softmax probe is folded into the binary form); bias: (K,); labels: class
    names; encoder: identity of the encoder it was trained on (``SemanticEncoder.identity``,
    ``"<name_or_path>:<dim>"``); name: what it measures; provenance: JSON-serialisable notes on the
    training data. Equality and hashing use the name, labels, encoder and weights (not the provenance).

    Example:
        >>> import torch
        >>> topics = Probe(torch.eye(3, 4), torch.zeros(3), ("sports", "food", "world"), "toy:4", name="topic")
        >>> topics.probs(torch.tensor([1.0, 0, 0, 0])).argmax().item(), topics.dim, topics.binary
        (0, 4, False)
    """

    weight: torch.Tensor
    bias: torch.Tensor
    labels: tuple[str, ...]
    encoder: str
    name: str = "probe"
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        weight, bias = self.weight, self.bias
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[1] < 1:
            raise ValueError(f"weight must be a (K, d) tensor, got {getattr(weight, 'shape', weight)!r}")
        if not isinstance(bias, torch.Tensor) or bias.shape != weight.shape[:1]:
            raise ValueError(f"bias must be a ({weight.shape[0]},) tensor to match weight {tuple(weight.shape)}, "
                             f"got {getattr(bias, 'shape', bias)!r}")
        labels = tuple(self.labels) if not isinstance(self.labels, str) else None
        if not labels or not all(isinstance(x, str) and x for x in labels) or len(set(labels)) != len(labels):
            raise ValueError(f"labels={self.labels!r} must be distinct non-empty strings")
        if len(labels) < 2:
            raise ValueError(f"labels={labels!r}: a probe needs at least 2 classes")
        k = weight.shape[0]
        if len(labels) == 2 and k == 2:  # a 2-class softmax is the binary probe on the logit difference
            weight, bias = weight[1:] - weight[:1], bias[1:] - bias[:1]
            k = 1
        if (k == 1) != (len(labels) == 2) or (k > 1 and k != len(labels)):
            raise ValueError(f"weight has {k} rows but labels={labels!r}: use 1 row for 2 labels (binary) or "
                             f"one row per label (multi-class)")
        weight = weight.detach().to("cpu", torch.float32).clone().contiguous()
        bias = bias.detach().to("cpu", torch.float32).clone().contiguous()
        if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
            raise ValueError(f"probe {self.name!r} has non-finite weights")
        identity, dim = _identity_and_dim(self.encoder)
        if dim != weight.shape[1]:
            raise ValueError(f"encoder={identity!r} says dimension {dim} but weight is {tuple(weight.shape)}")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name={self.name!r} must be a non-empty str")
        try:
            provenance = json.loads(json.dumps(dict(self.provenance)))
        except (TypeError, ValueError) as e:
            raise ValueError(f"provenance must be a JSON-serialisable dict: {e}") from e
        digest = hashlib.sha256(weight.numpy().tobytes() + bias.numpy().tobytes()).hexdigest()
        for key, value in dict(weight=weight, bias=bias, labels=labels, encoder=identity, provenance=provenance,
                               _digest=digest, _on_device={}).items():
            object.__setattr__(self, key, value)

    # -- shape and identity ----------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Embedding dimension d the probe reads.

        Example:
            >>> sentiment = Probe(torch.ones(1, 2), torch.zeros(1), ("negative", "positive"), "toy:2")
            >>> sentiment.dim
            2
        """
        return self.weight.shape[1]

    @property
    def binary(self) -> bool:
        """True for a one-logit probe over two labels.

        Example (a 2-row softmax probe is folded into the one-logit form):
            >>> Probe(torch.eye(2), torch.zeros(2), ("negative", "positive"), "toy:2").binary
            True
            >>> Probe(torch.eye(3, 2), torch.zeros(3), ("a", "b", "c"), "toy:2").binary
            False
        """
        return self.weight.shape[0] == 1

    def __eq__(self, other) -> bool:
        if not isinstance(other, Probe):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple:
        return (self.name, self.labels, self.encoder, self._digest)

    def __repr__(self) -> str:
        kind = "binary" if self.binary else f"{len(self.labels)}-class"
        return f"Probe(name={self.name!r}, {kind}, labels={self.labels!r}, encoder={self.encoder!r})"

    def check_encoder(self, encoder) -> None:
        """Raise ValueError unless ``encoder`` (a SemanticEncoder or an identity string) is the one this
        probe was trained on: same dimension and same identity.

        Example:
            >>> sentiment = Probe(torch.ones(1, 2), torch.zeros(1), ("negative", "positive"), "toy:2")
            >>> sentiment.check_encoder("toy:2")  # fine: returns None
            >>> sentiment.check_encoder("other:3")
            Traceback (most recent call last):
                ...
            ValueError: probe 'probe' reads 2-d embeddings of encoder 'toy:2', but the pipeline's encoder \
'other:3' makes 3-d embeddings; fit the probe on this encoder (Probe.fit(texts, labels, encoder=...))
        """
        identity, dim = _identity_and_dim(encoder)
        if dim != self.dim:
            raise ValueError(f"probe {self.name!r} reads {self.dim}-d embeddings of encoder {self.encoder!r}, but "
                             f"the pipeline's encoder {identity!r} makes {dim}-d embeddings; fit the probe on "
                             f"this encoder (Probe.fit(texts, labels, encoder=...))")
        if identity != self.encoder:
            raise ValueError(f"probe {self.name!r} was trained on encoder {self.encoder!r}, but the pipeline's "
                             f"encoder is {identity!r}; its weights mean nothing in another embedding space: fit "
                             f"the probe on this encoder (Probe.fit(texts, labels, encoder=...))")

    def label_index(self, label: str) -> int:
        """Index of ``label`` in ``labels``; an unknown label raises a KeyError listing the known ones.

        Example:
            >>> topics = Probe(torch.eye(3, 4), torch.zeros(3), ("sports", "food", "world"), "toy:4",
            ...                name="topic")
            >>> topics.label_index("world")
            2
            >>> topics.label_index("music")
            Traceback (most recent call last):
                ...
            KeyError: "label 'music' is not one of probe 'topic''s labels ['sports', 'food', 'world']"
        """
        if label not in self.labels:
            raise KeyError(f"label {label!r} is not one of probe {self.name!r}'s labels {list(self.labels)}")
        return self.labels.index(label)

    # -- evaluation ------------------------------------------------------------------------------------
    def _params(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if raw.shape[-1] != self.dim:
            raise ValueError(f"probe {self.name!r} reads {self.dim}-d embeddings (encoder {self.encoder!r}), "
                             f"got shape {tuple(raw.shape)}")
        if raw.device not in self._on_device:  # one copy per device, made once
            self._on_device[raw.device] = (self.weight.to(raw.device), self.bias.to(raw.device))
        return self._on_device[raw.device]

    def logits(self, raw: torch.Tensor) -> torch.Tensor:
        """raw (..., d) -> logits (..., K), computed in float32 (K = 1 for a binary probe).

        Example:
            >>> probe = Probe(torch.tensor([[4.0, 0.0]]), torch.zeros(1), ("negative", "positive"), "toy:2")
            >>> probe.logits(torch.tensor([[0.5, 0.5], [-1.0, 0.0]])).tolist()
            [[2.0], [-4.0]]
        """
        weight, bias = self._params(raw)
        return raw.float() @ weight.T + bias

    def log_probs(self, raw: torch.Tensor) -> torch.Tensor:
        """raw (..., d) -> log-probabilities of each label (..., len(labels)), float32.

        Example (a binary probe still gives one column per label):
            >>> probe = Probe(torch.tensor([[4.0, 0.0]]), torch.zeros(1), ("negative", "positive"), "toy:2")
            >>> lp = probe.log_probs(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
            >>> lp.shape, lp.exp().round(decimals=4)
            (torch.Size([2, 2]), tensor([[0.5000, 0.5000],
                    [0.0180, 0.9820]]))
        """
        logits = self.logits(raw)
        if self.binary:
            return torch.cat([F.logsigmoid(-logits), F.logsigmoid(logits)], dim=-1)
        return logits.log_softmax(dim=-1)

    def probs(self, raw: torch.Tensor) -> torch.Tensor:
        """raw (..., d) -> probabilities of each label (..., len(labels)).

        Example:
            >>> topics = Probe(torch.eye(3, 4) * 5, torch.zeros(3), ("sports", "food", "world"), "toy:4")
            >>> topics.probs(torch.tensor([0.0, 1.0, 0.0, 0.0])).round(decimals=3)
            tensor([0.0070, 0.9870, 0.0070])
        """
        return self.log_probs(raw).exp()

    def predict(self, raw: torch.Tensor) -> torch.Tensor:
        """raw (..., d) -> index of the most likely label (...,), int64.

        Example:
            >>> topics = Probe(torch.eye(3, 4), torch.zeros(3), ("sports", "food", "world"), "toy:4")
            >>> [topics.labels[i] for i in topics.predict(torch.tensor([[0.0, 0, 1, 0], [1.0, 0, 0, 0]]))]
            ['world', 'sports']
        """
        return self.log_probs(raw).argmax(dim=-1)

    def __call__(self, label: str) -> ProbeTarget:
        """The constraint "aim at ``label``" (a :class:`ProbeTarget`)."""

        return ProbeTarget(self, label)

    # -- construction ------------------------------------------------------------------------------------
    @classmethod
    def from_sklearn(cls, clf, encoder, name: str = "probe", labels: Sequence[str] | None = None,
                     provenance: Mapping | None = None) -> Probe:
        """Export a fitted scikit-learn linear classifier (``coef_``, ``intercept_``, ``classes_``; e.g.
        LogisticRegression, SGDClassifier, LinearSVC) to a probe for ``encoder``. Class names default to
        ``str(c)`` for ``c`` in ``clf.classes_``. For multi-class models the softmax over
        ``decision_function`` is what guidance uses (exact for multinomial logistic regression).

        Example:
            >>> import numpy as np
            >>> from sklearn.linear_model import LogisticRegression
            >>> x = np.array([[1.0, 0.0], [0.0, 1.0]])
            >>> clf = LogisticRegression().fit(x, ["food", "sports"])
            >>> probe = Probe.from_sklearn(clf, encoder="toy:2", name="topic")
            >>> probe.labels, probe.binary
            (('food', 'sports'), True)
        """
        missing = [a for a in ("coef_", "intercept_", "classes_") if not hasattr(clf, a)]
        if missing:
            raise TypeError(f"clf={clf!r} is not a fitted linear classifier: it lacks {missing} (fit it first, "
                            f"or wrap a non-linear model in FunctionConstraint)")
        identity, dim = _identity_and_dim(encoder)
        coef = torch.as_tensor(clf.coef_, dtype=torch.float64).reshape(-1, clf.coef_.shape[-1])
        intercept = torch.as_tensor(clf.intercept_, dtype=torch.float64).reshape(-1)
        if coef.shape[1] != dim:
            raise ValueError(f"clf was fitted on {coef.shape[1]}-d features but encoder {identity!r} makes "
                             f"{dim}-d embeddings")
        names = tuple(str(c) for c in clf.classes_) if labels is None else tuple(labels)
        if len(names) != len(clf.classes_):
            raise ValueError(f"labels={labels!r} must name each of clf.classes_={list(clf.classes_)}")
        if intercept.numel() == 1 and coef.shape[0] > 1:
            intercept = intercept.expand(coef.shape[0])
        record = {"method": "from_sklearn", "estimator": type(clf).__name__,
                  "params": _json_params(clf), "sklearn": _sklearn_version()}
        record.update(dict(provenance or {}))
        return cls(coef.float(), intercept.float(), names, identity, name=name, provenance=record)

    @classmethod
    def fit(cls, texts: Sequence[str] | torch.Tensor, labels: Sequence, encoder, name: str = "probe",
            label_names: Sequence[str] | None = None, C: float = 1000.0, max_iter: int = 10_000,
            class_weight: str | dict | None = None, provenance: Mapping | None = None,
            batch_size: int = 64) -> Probe:
        """Fit a logistic regression (scikit-learn ``LogisticRegression(C=1000, max_iter=10000)``, as in
        the reference) on ``encoder``'s raw embeddings of ``texts`` (or on raw embeddings (N, d) given
        directly) and export it. ``labels``: one class per text, as strings, or as ints 0..K-1 /
        bools with ``label_names`` naming them. Classes are ordered as scikit-learn orders them (sorted),
        so binary probes get ``labels[1]`` as the positive class: ("non-toxic", "toxic"),
        ("negative", "positive"). ``class_weight="balanced"`` is what the reference used for toxicity.

        Example:
            >>> import torch
            >>> x = torch.nn.functional.normalize(torch.tensor([[1.0, 0.2], [0.9, -0.1], [-1.0, 0.3],
            ...                                                 [-0.8, 0.0]]), dim=-1)
            >>> probe = Probe.fit(x, ["pos", "pos", "neg", "neg"], encoder="toy:2", name="demo")
            >>> probe.labels, probe.predict(x).tolist()
            (('neg', 'pos'), [1, 1, 0, 0])
        """
        from sklearn.linear_model import LogisticRegression

        identity, dim = _identity_and_dim(encoder)
        if isinstance(texts, torch.Tensor):
            x = texts.detach().float().cpu()
            if x.dim() != 2 or x.shape[1] != dim:
                raise ValueError(f"embeddings must have shape (N, {dim}) for encoder {identity!r}, got "
                                 f"{tuple(x.shape)}")
        else:
            if isinstance(texts, str) or not hasattr(encoder, "encode"):
                raise TypeError("texts must be a sequence of str (with a SemanticEncoder to embed them) or a "
                                "(N, d) tensor of raw embeddings")
            x = encoder.encode(list(texts), batch_size=batch_size).float().cpu()
        y = list(labels)
        if len(y) != x.shape[0]:
            raise ValueError(f"got {x.shape[0]} texts but {len(y)} labels")
        if label_names is not None:
            label_names = tuple(label_names)
            if not all(isinstance(v, (bool, int)) and 0 <= int(v) < len(label_names) for v in y):
                raise ValueError(f"with label_names={label_names!r}, labels must be ints in "
                                 f"0..{len(label_names) - 1}")
            y = [label_names[int(v)] for v in y]
        elif not all(isinstance(v, str) for v in y):
            raise TypeError("labels must be strings, or ints/bools together with label_names")
        classes = sorted(set(y))
        if len(classes) < 2:
            raise ValueError(f"need examples of at least 2 classes to fit a probe, got only {classes}")
        clf = LogisticRegression(C=C, max_iter=max_iter, class_weight=class_weight)
        clf.fit(x.numpy(), y)
        accuracy = float(clf.score(x.numpy(), y))
        counts = {c: y.count(c) for c in classes}
        logger.info("fitted probe %r on %d examples %s: training accuracy %.3f", name, len(y), counts, accuracy)
        record = {"method": "fit", "num_examples": len(y), "class_counts": counts, "train_accuracy": accuracy,
                  "C": C, "max_iter": max_iter, "class_weight": class_weight, "sklearn": _sklearn_version()}
        record.update(dict(provenance or {}))
        return cls.from_sklearn(clf, identity, name=name, provenance=record)

    # -- files -------------------------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike) -> None:
        """Write ``probe.json`` and ``probe.safetensors`` into ``folder`` (atomically replaced).

        Example (:meth:`load` reads it back):
            >>> import tempfile
            >>> sentiment = Probe(torch.ones(1, 2), torch.zeros(1), ("negative", "positive"), "toy:2")
            >>> with tempfile.TemporaryDirectory() as d:
            ...     sentiment.save(d + "/sentiment")
            ...     sorted(os.listdir(d + "/sentiment"))
            ['probe.json', 'probe.safetensors']
        """
        with atomic_directory(folder, "probe", marker=False) as tmp:
            self._write(tmp)

    def _write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / PROBE_CONFIG, {
            "format": PROBE_FORMAT, "version": FORMAT_VERSION, "name": self.name, "labels": list(self.labels),
            "encoder": self.encoder, "dim": self.dim, "kind": "binary" if self.binary else "multiclass",
            "provenance": self.provenance, "torch": torch.__version__})
        save_tensors(folder / PROBE_WEIGHTS, {"weight": self.weight, "bias": self.bias})

    @classmethod
    def load(cls, folder: str | os.PathLike, encoder=None) -> Probe:
        """Read what :meth:`save` wrote (safetensors + JSON only, never a pickle). With ``encoder``, also
        refuse a probe trained on another encoder.

        Example:
            >>> import tempfile, torch
            >>> probe = Probe(torch.ones(1, 3), torch.zeros(1), ("no", "yes"), "toy:3", name="demo")
            >>> with tempfile.TemporaryDirectory() as d:
            ...     probe.save(d + "/demo")
            ...     Probe.load(d + "/demo", encoder="toy:3") == probe
            True
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError(f"probe folder {folder} does not exist")
        meta = read_json(folder / PROBE_CONFIG)
        where = folder / PROBE_CONFIG
        if meta.get("format") != PROBE_FORMAT or meta.get("version") != FORMAT_VERSION:
            raise CheckpointError(f"{where}: expected format {PROBE_FORMAT!r} version {FORMAT_VERSION}, got "
                                  f"{meta.get('format')!r} version {meta.get('version')!r}")
        expected = {"name": str, "labels": list, "encoder": str, "dim": int, "kind": str, "provenance": dict}
        for key, kind in expected.items():
            if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
                raise CheckpointError(f"{where}: field {key!r} must be a {kind.__name__}, got {meta.get(key)!r}")
        tensors = load_tensors(folder / PROBE_WEIGHTS)
        if set(tensors) != {"weight", "bias"}:
            raise CheckpointError(f"{folder / PROBE_WEIGHTS}: expected tensors 'weight' and 'bias', got "
                                  f"{sorted(tensors)}")
        rows = 1 if meta["kind"] == "binary" else len(meta["labels"])
        if meta["kind"] not in ("binary", "multiclass") or tensors["weight"].shape != (rows, meta["dim"]) \
                or tensors["bias"].shape != (rows,):
            raise CheckpointError(f"{folder}: a {meta['kind']!r} probe over {len(meta['labels'])} labels in "
                                  f"{meta['dim']}-d needs weight ({rows}, {meta['dim']}) and bias ({rows},), got "
                                  f"{tuple(tensors['weight'].shape)} and {tuple(tensors['bias'].shape)}")
        try:
            probe = cls(tensors["weight"], tensors["bias"], tuple(meta["labels"]), meta["encoder"],
                        name=meta["name"], provenance=meta["provenance"])
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"{folder} does not hold a valid probe: {e}") from e
        if encoder is not None:
            probe.check_encoder(encoder)
        return probe


def _sklearn_version() -> str:
    import sklearn

    return sklearn.__version__


def _json_params(clf) -> dict:
    params = clf.get_params() if hasattr(clf, "get_params") else {}
    return {k: v for k, v in params.items() if isinstance(v, (str, int, float, bool, type(None)))}


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
