"""Where a benchmark run writes, decided and checked before any work.

- ``--out`` given: it must be a folder (or a path that can become one) that this process can write, and
  either empty or one a previous ``dglm bench`` wrote (its :data:`dglm.io.MARKER` names the kind
  ``"benchmark"``: the write-safety rule of :mod:`dglm.io`, which every writer follows); a file, a
  device such as ``/dev/full``, a read-only place or someone else's folder is refused with the option
  named, before a model is loaded.
- no ``--out``: a fresh folder per run, ``./dglm-bench/<UTC time>`` for a full run, a new temporary folder
  for ``--quick`` (never one fixed shared path).
- ``--quick`` never writes into a checkout's ``docs/results`` or ``results`` (published results).

Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     out = prepare_out_dir(str(Path(d) / "run"), quick=False)
    ...     sorted(p.name for p in out.iterdir())
    ['.dglm']
"""

from __future__ import annotations

import datetime
import os
import tempfile
from pathlib import Path

from dglm.io import MARKER, output_kind, write_json

KIND = "benchmark"  # the kind of output dglm.io's marker records in every folder the benchmark writes to


def _published(path: Path) -> Path | None:
    """The ``docs/results`` or checkout-level ``results`` folder ``path`` lies in, if any."""
    for p in (path, *path.parents):
        if p.name == "results" and (p.parent.name == "docs" or (p.parent / "pyproject.toml").is_file()):
            return p
    return None


def check_out_dir(out: str | os.PathLike, quick: bool = False) -> Path:
    """``out`` as an absolute path, after checking the benchmark may write its results there; raises a
    ValueError naming ``--out`` otherwise (nothing is created).

    Example:
        >>> check_out_dir("/dev/full")
        Traceback (most recent call last):
            ...
        ValueError: --out '/dev/full' is not a folder (a file or device); give a folder for the benchmark's \
outputs (it is created if missing)
    """
    path = Path(out).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {str(out)!r} is not a folder (a file or device); give a folder for the "
                         f"benchmark's outputs (it is created if missing)")
    if quick and _published(path) is not None:
        raise ValueError(f"--out {str(out)!r}: --quick (a smoke test on random weights) never writes into "
                         f"{_published(path)} (published results); give another folder or leave --out out")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError(f"--out {str(out)!r}: the folder is not writable by this user")
        if any(path.iterdir()) and output_kind(path) != KIND:
            raise ValueError(f"--out {str(out)!r} is a non-empty folder that dglm bench did not write (no "
                             f"{MARKER} file naming it in it); give an empty or new folder so nothing of yours "
                             f"is overwritten")
        return path
    parent = next(p for p in path.parents if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out {str(out)!r}: cannot create it, {str(parent)!r} is not a writable folder")
    return path


def default_out_dir(quick: bool) -> Path:
    """A fresh folder for a run without ``--out``: a new temporary folder for ``--quick``, else
    ``./dglm-bench/<UTC time>`` (``-2``, ``-3``, ... if taken). Not created here for a full run.

    Example:
        >>> default_out_dir(quick=False).parent.name
        'dglm-bench'
    """
    if quick:
        return Path(tempfile.mkdtemp(prefix="dglm-bench-quick-"))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = Path.cwd() / "dglm-bench" / stamp
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{stamp}-{i}")
    return path


def prepare_out_dir(out: str | os.PathLike | None, quick: bool = False) -> Path:
    """Check ``out`` (:func:`check_out_dir`; None: :func:`default_out_dir`), create it and mark it as the
    benchmark's (:data:`dglm.io.MARKER`, kind :data:`KIND`; later runs may write there again), proving it
    writable before any work. Returns the folder.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     first = prepare_out_dir(d + "/x")
        ...     again = prepare_out_dir(d + "/x")            # a folder the benchmark wrote: fine
        ...     Path(d, "mine").mkdir(); _ = Path(d, "mine", "notes.txt").write_text("keep")
        ...     prepare_out_dir(d + "/mine")                  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        ValueError: --out '.../mine' is a non-empty folder that dglm bench did not write ...
    """
    path = check_out_dir(out, quick) if out is not None else default_out_dir(quick)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if output_kind(path) != KIND:
            write_json(path / MARKER, {"kind": KIND, "files": []})
    except OSError as e:
        raise ValueError(f"--out {str(out if out is not None else path)!r}: cannot write there ({e})") from None
    return path
