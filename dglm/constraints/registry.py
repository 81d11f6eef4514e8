"""A registry of named probes for one encoder: what a pipeline checkpoint ships ("toxicity", "sentiment",
"topic"), saved as ``registry.json`` plus one folder per :class:`~dglm.constraints.probes.Probe`.

Example:
    >>> import torch
    >>> from dglm.constraints.probes import Probe
    >>> reg = ProbeRegistry("toy:2", {"sentiment": Probe(torch.ones(1, 2), torch.zeros(1), ("neg", "pos"), "toy:2")})
    >>> "sentiment" in reg, reg.dim
    (True, 2)
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from dglm.constraints.probes import FORMAT_VERSION, Probe, _identity_and_dim
from dglm.io import CheckpointError, atomic_directory, read_json, write_json

REGISTRY_INDEX = "registry.json"
REGISTRY_FORMAT = "dglm-probe-registry"
# Registry names become folder names: keep them plain.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


class ProbeRegistry:
    """Named probes for one encoder (what a pipeline checkpoint ships), e.g. "toxicity", "sentiment",
    "topic". Adding a probe of another encoder identity or dimension is refused. Saved as
    ``registry.json`` plus one ``<name>/`` subfolder per probe.

    Example:
        >>> import torch
        >>> reg = ProbeRegistry("toy:2")
        >>> reg.add("sentiment", Probe(torch.ones(1, 2), torch.zeros(1), ("negative", "positive"), "toy:2"))
        >>> reg.names, reg.get("sentiment").labels
        (('sentiment',), ('negative', 'positive'))
    """

    def __init__(self, encoder, probes: Mapping[str, Probe] | None = None):
        self.encoder, self.dim = _identity_and_dim(encoder)
        self._probes: dict[str, Probe] = {}
        for name, probe in dict(probes or {}).items():
            self.add(name, probe)

    def add(self, name: str, probe: Probe) -> None:
        """Register ``probe`` under ``name`` (a plain folder-safe name); replaces a probe of that name.

        Example (a probe of another encoder is refused):
            >>> import torch
            >>> reg = ProbeRegistry("toy:2")
            >>> reg.add("sentiment", Probe(torch.ones(1, 2), torch.zeros(1), ("neg", "pos"), "toy:2"))
            >>> reg.add("topic", Probe(torch.ones(1, 2), torch.zeros(1), ("arts", "sports"), "other:2"))
            Traceback (most recent call last):
                ...
            ValueError: probe 'probe' was trained on encoder 'other:2', but the pipeline's encoder is \
'toy:2'; its weights mean nothing in another embedding space: fit the probe on this encoder \
(Probe.fit(texts, labels, encoder=...))
            >>> reg.names
            ('sentiment',)
        """
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"name={name!r} must be 1-100 letters, digits, '_', '.' or '-' (it becomes a folder)")
        if not isinstance(probe, Probe):
            raise TypeError(f"probe={probe!r} must be a Probe")
        probe.check_encoder(self.encoder)
        self._probes[name] = probe

    def get(self, name: str) -> Probe:
        """The probe called ``name``; an unknown name raises a KeyError listing the known ones.

        Example:
            >>> import torch
            >>> reg = ProbeRegistry("toy:2", {"sentiment": Probe(torch.ones(1, 2), torch.zeros(1),
            ...                                                  ("negative", "positive"), "toy:2")})
            >>> reg.get("sentiment").labels
            ('negative', 'positive')
            >>> reg.get("topic")
            Traceback (most recent call last):
                ...
            KeyError: "no probe named 'topic' for encoder 'toy:2'; this registry holds ['sentiment'] \
(add one with registry.add(name, Probe.fit(...)))"
        """
        if name not in self._probes:
            raise KeyError(f"no probe named {name!r} for encoder {self.encoder!r}; this registry holds "
                           f"{list(self.names) or 'none'} (add one with registry.add(name, Probe.fit(...)))")
        return self._probes[name]

    @property
    def names(self) -> tuple[str, ...]:
        """The registered probe names, sorted.

        Example:
            >>> import torch
            >>> binary = Probe(torch.ones(1, 2), torch.zeros(1), ("no", "yes"), "toy:2")
            >>> ProbeRegistry("toy:2", {"toxicity": binary, "sentiment": binary}).names
            ('sentiment', 'toxicity')
        """
        return tuple(sorted(self._probes))

    def __contains__(self, name) -> bool:
        return name in self._probes

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self._probes)

    def __repr__(self) -> str:
        return f"ProbeRegistry(encoder={self.encoder!r}, probes={list(self.names)})"

    def check_encoder(self, encoder) -> None:
        """Raise ValueError unless ``encoder`` is the encoder these probes were trained on.

        Example:
            >>> reg = ProbeRegistry("toy:2")
            >>> reg.check_encoder("toy:2")  # fine: returns None
            >>> reg.check_encoder("toy:3")
            Traceback (most recent call last):
                ...
            ValueError: the probe registry was built for encoder 'toy:2' (2-d), but the pipeline's encoder \
is 'toy:3' (3-d)
        """
        identity, dim = _identity_and_dim(encoder)
        if (identity, dim) != (self.encoder, self.dim):
            raise ValueError(f"the probe registry was built for encoder {self.encoder!r} ({self.dim}-d), but the "
                             f"pipeline's encoder is {identity!r} ({dim}-d)")

    def save(self, folder: str | os.PathLike) -> None:
        """Write ``registry.json`` and one ``<name>/`` probe folder per probe (atomically replaced).

        Example (:meth:`load` reads it back, refusing another encoder when one is given):
            >>> import torch
            >>> import tempfile
            >>> binary = Probe(torch.ones(1, 2), torch.zeros(1), ("no", "yes"), "toy:2")
            >>> reg = ProbeRegistry("toy:2", {"toxicity": binary, "sentiment": binary})
            >>> with tempfile.TemporaryDirectory() as d:
            ...     reg.save(d)
            ...     files = sorted(os.listdir(d))
            ...     loaded = ProbeRegistry.load(d, encoder="toy:2")
            >>> files, loaded.names, loaded.get("toxicity") == binary
            (['registry.json', 'sentiment', 'toxicity'], ('sentiment', 'toxicity'), True)
        """
        with atomic_directory(folder, "probe registry", marker=False) as tmp:
            write_json(tmp / REGISTRY_INDEX, {"format": REGISTRY_FORMAT, "version": FORMAT_VERSION,
                                              "encoder": self.encoder, "dim": self.dim, "probes": list(self.names)})
            for name, probe in self._probes.items():
                probe._write(tmp / name)

    @classmethod
    def load(cls, folder: str | os.PathLike, encoder=None) -> ProbeRegistry:
        """Read what :meth:`save` wrote; with ``encoder``, refuse probes of another encoder.

        Example (probes are only read for the encoder they were trained on):
            >>> import torch
            >>> import tempfile
            >>> binary = Probe(torch.ones(1, 2), torch.zeros(1), ("no", "yes"), "toy:2")
            >>> with tempfile.TemporaryDirectory() as d:
            ...     ProbeRegistry("toy:2", {"toxicity": binary}).save(d)
            ...     names = ProbeRegistry.load(d).names
            ...     ProbeRegistry.load(d, encoder="other:2")
            Traceback (most recent call last):
                ...
            ValueError: the probe registry was built for encoder 'toy:2' (2-d), but the pipeline's encoder \
is 'other:2' (2-d)
            >>> names
            ('toxicity',)
        """
        folder = Path(folder)
        where = folder / REGISTRY_INDEX
        meta = read_json(where)
        if meta.get("format") != REGISTRY_FORMAT or meta.get("version") != FORMAT_VERSION:
            raise CheckpointError(f"{where}: expected format {REGISTRY_FORMAT!r} version {FORMAT_VERSION}")
        names = meta.get("probes")
        if not isinstance(names, list) or not all(isinstance(n, str) and _NAME.match(n) for n in names):
            raise CheckpointError(f"{where}: 'probes' must list plain probe names, got {names!r}")
        if not isinstance(meta.get("encoder"), str) or not isinstance(meta.get("dim"), int):
            raise CheckpointError(f"{where}: 'encoder' (str) and 'dim' (int) are required")
        try:
            registry = cls(meta["encoder"])
            if registry.dim != meta["dim"]:
                raise ValueError(f"encoder {meta['encoder']!r} does not match dim {meta['dim']}")
            for name in names:
                registry.add(name, Probe.load(folder / name))
        except ValueError as e:
            if isinstance(e, CheckpointError):
                raise
            raise CheckpointError(f"{folder} does not hold a consistent probe registry: {e}") from e
        if encoder is not None:
            registry.check_encoder(encoder)
        return registry
