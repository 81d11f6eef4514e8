"""Checkpoint files: safetensors for tensors, JSON for configs, atomic folder writes.

Every component saves ``config.json`` (its pydantic config) and ``model.safetensors`` in its own
folder. A checkpoint is written into a temporary sibling folder and renamed into place, so a crash never
leaves a half-written checkpoint where a good one was. Nothing here unpickles.

Example:
    >>> import tempfile, torch
    >>> from dglm.config import EncoderConfig
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with atomic_directory(f"{d}/ckpt") as tmp:
    ...         save_component(tmp, EncoderConfig(name_or_path="m", dim=2), {"w": torch.ones(2)})
    ...     cfg, tensors = load_component(f"{d}/ckpt", EncoderConfig)
    >>> cfg.dim, tensors["w"].tolist()
    (2, [1.0, 1.0])
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import torch
from pydantic import BaseModel, ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # protocol-2+ pickles and zip-based torch.save files
# Largest JSON file read (configs are a few hundred bytes; a training state a few KB).
MAX_JSON_BYTES = 64 * 2**20

C = TypeVar("C", bound=BaseModel)


class CheckpointError(ValueError):
    """A checkpoint folder or file is missing, truncated, corrupted or not in the expected format.

    Example (a ValueError, so bad checkpoints and bad arguments can be caught together):
        >>> read_json("/no/such/dglm.json")
        Traceback (most recent call last):
            ...
        dglm.io.CheckpointError: /no/such/dglm.json is missing
        >>> issubclass(CheckpointError, ValueError)
        True
    """


class ModelLoadError(OSError):
    """A model named by hub id could not be loaded: it is not a local folder, not cached, and the hub is
    offline, unreachable or has no such repository.

    Example:
        >>> err = ModelLoadError.for_hub("decoder", "/no/such/folder", OSError("404"))
        >>> print(err)  # doctest: +ELLIPSIS
        cannot load the decoder name_or_path='/no/such/folder': it is not a local folder and no folder exists ...
        >>> isinstance(err, OSError)
        True
    """

    @classmethod
    def for_hub(cls, what: str, name_or_path, error: BaseException) -> ModelLoadError:
        """One readable error for a failed hub load of the ``what`` ("decoder", "encoder") ``name_or_path``.

        Example (a path that is no folder is named as such, whatever the hub says):
            >>> error = ModelLoadError.for_hub("decoder", "/no/such/model", OSError("not found"))
            >>> print(str(error).split(". ")[0])
            cannot load the decoder name_or_path='/no/such/model': it is not a local folder and no folder \
exists at that path (and it is not a hub id)
        """
        name = os.fspath(name_or_path)
        offline = any(os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"}
                      for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
        if os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name:
            why = "no folder exists at that path (and it is not a hub id)"
        elif offline:
            why = "the model hub is offline (HF_HUB_OFFLINE=1) and no cached copy exists"
        else:
            why = "the model hub could not be reached or has no such model, and no cached copy exists"
        detail = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        return cls(f"cannot load the {what} name_or_path={name!r}: it is not a local folder and {why}. "
                   f"Pass the path of a local model folder instead (or connect and unset HF_HUB_OFFLINE). "
                   f"[{type(error).__name__}: {detail}]")


# ------------------------------------------------------------------------------------------- write safety
# The rule every writer follows (docs/training.md "What a rerun overwrites"): a folder dglm did not write is never
# emptied or replaced, a file is never replaced by a folder, dglm's own output of the same kind is replaced (a
# rerun), anything else needs ``overwrite=True`` (``--overwrite``), and the refusal names what would be lost.

MARKER = ".dglm"
"""The small JSON file dglm writes into every output folder: its kind and the files it wrote (at any depth)."""
MAX_LISTED = 5  # entries named in a refusal

# Outputs written before the marker existed, recognised by their own record: kind -> (record file, the keys it
# holds, the layout such a folder has). A layout maps an entry's name to None (a file), to the layout of a
# subfolder, or to ANY (anything in it is the output's). A folder holding anything else is not counted as dglm's.
ANY = "*"
_COMPONENT = {"config.json": None, "model.safetensors": None}
_ADAPTER = {"adapter_config.json": None, "adapter_model.safetensors": None}
_PROBE = {"probe.json": None, "probe.safetensors": None}
LEGACY_KINDS: dict[str, tuple[str, tuple[str, ...], dict | str]] = {
    "checkpoint": ("dglm.json", ("library_version", "decoder", "decoder_hidden_size"),
                   {"dglm.json": None, "README.md": None, "encoder": _COMPONENT, "diffusion": _COMPONENT,
                    "prompt": _COMPONENT, "probes": ANY, "decoder_adapter": _ADAPTER}),
    "training state": ("state.json", ("step", "param_groups"), {"state.json": None, "state.safetensors": None}),
    "windows": ("windows.safetensors", (), {"windows.safetensors": None}),
    "probe": ("probe.json", ("format", "labels"), _PROBE),
    "probe registry": ("registry.json", ("format", "probes"), {"registry.json": None}),  # + its probes' folders
    "corpus": ("counts.json", ("documents", "seed"),
               {"train.jsonl": None, "validation.jsonl": None, "test.jsonl": None, "counts.json": None}),
    "converted decoder": ("dglm_asset.json", ("source",), ANY),
    "adapter": ("adapter_config.json", ("peft_type",), _ADAPTER),
    # A component (encoder statistics, diffusion model, prompt generator): its writer also checks that the
    # config.json parses as its config (``owns``), so a Hugging Face model folder is never taken for one.
    "component": ("config.json", (), _COMPONENT),
}
MAX_WALKED = 100_000  # entries of an existing output folder inspected before refusing to replace it


class OutputError(ValueError):
    """An output path that would lose a user's file if written (or that cannot be written): nothing was
    changed. A ValueError, so the command lines report it as a user error.

    Example:
        >>> with tempfile.TemporaryDirectory() as d:  # doctest: +ELLIPSIS
        ...     _ = Path(d, "thesis.txt").write_text("years of work")
        ...     check_output_folder(d, "checkpoint")
        Traceback (most recent call last):
            ...
        dglm.io.OutputError: ... holds files dglm did not write (thesis.txt); writing a checkpoint there would delete it...
    """


def _names(entries: list[str]) -> str:
    shown = ", ".join(entries[:MAX_LISTED])
    return shown + (f" and {len(entries) - MAX_LISTED} more" if len(entries) > MAX_LISTED else "")


def _file_kind(mode: int) -> str:
    kinds = [(stat.S_ISLNK, "symbolic link"), (stat.S_ISDIR, "folder"), (stat.S_ISCHR, "character device"),
             (stat.S_ISBLK, "block device"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
             (stat.S_ISREG, "file")]
    return next((name for test, name in kinds if test(mode)), "special file")


def output_kind(folder: str | os.PathLike) -> str | None:
    """The kind of dglm output ``folder`` holds: its marker's, or a known record's for outputs written
    before markers existed (a ``dglm.json`` checkpoint, a training ``state.json``, ...); None for anything else.

    Example:
        >>> from dglm.hub import PACKAGED
        >>> output_kind(PACKAGED / "mini"), output_kind(PACKAGED)
        ('checkpoint', None)
    """
    folder = Path(folder)
    marker = _read_marker(folder)
    if marker is not None:
        return marker["kind"]
    for kind, (record, keys, _) in LEGACY_KINDS.items():
        if kind != "component" and _has_record(folder / record, keys):  # (components: only their writer knows)
            return kind
    return None


def output_record(folder: str | os.PathLike) -> dict:
    """What ``folder``'s :data:`MARKER` records (its ``kind``, ``files`` and what the writer added); ``{}``
    without a valid marker.

    Example:
        >>> with tempfile.TemporaryDirectory() as d:
        ...     with atomic_directory(f"{d}/w", "windows", record={"window": 64}):
        ...         pass
        ...     output_record(f"{d}/w")["window"], output_record(d)
        (64, {})
    """
    return _read_marker(Path(folder)) or {}


def _read_marker(folder: Path) -> dict | None:
    try:
        data = read_json(folder / MARKER)
    except (CheckpointError, OSError):
        return None
    files = data.get("files")
    if not isinstance(data.get("kind"), str) or not isinstance(files, list) \
            or not all(isinstance(f, str) for f in files):
        return None
    return data


def _has_record(path: Path, keys: tuple[str, ...]) -> bool:
    if not path.is_file():
        return False
    if path.suffix == ".safetensors":
        try:
            return bool(tensor_shapes(path))
        except CheckpointError:
            return False
    try:
        data = read_json(path)
    except (CheckpointError, OSError):
        return False
    return all(k in data for k in keys)


def _walk(folder: Path) -> list[str]:
    """Every entry of ``folder`` that holds data (files, links, special files: not plain folders), as
    relative POSIX paths, sorted; refuses a folder too large to inspect."""
    out = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        rel = Path(root).relative_to(folder)
        out += [(rel / name).as_posix() for name in files]
        out += [(rel / name).as_posix() for name in dirs if os.path.islink(os.path.join(root, name))]
        if len(out) > MAX_WALKED:
            raise OutputError(f"{folder} holds more than {MAX_WALKED:,} entries; dglm does not replace it")
    return sorted(out)


def _in_layout(path: str, layout: dict | str) -> bool:
    for part in path.split("/"):
        if layout == ANY:
            return True
        if not isinstance(layout, dict) or part not in layout:
            return False
        layout = layout[part]
    return layout is None or layout == ANY


def foreign_entries(folder: str | os.PathLike, kind: str,
                    owns: Callable[[Path], bool] | None = None) -> list[str]:
    """The entries of an existing ``folder`` (files at any depth, as relative paths, sorted) that are not
    dglm's own output of ``kind``: what replacing the folder would lose. Own entries: those its marker lists
    when the marker names ``kind``, or for an older output without a marker, those of the kind's layout in
    :data:`LEGACY_KINDS`, when ``owns(folder)``, if given, agrees (a component's ``config.json`` must parse as
    its config).

    Example:
        >>> with tempfile.TemporaryDirectory() as d:
        ...     with atomic_directory(f"{d}/state", "training state") as tmp:
        ...         _ = (tmp / "state.json").write_text("{}")
        ...     _ = Path(d, "state", "notes.txt").write_text("mine")
        ...     foreign_entries(f"{d}/state", "training state"), foreign_entries(f"{d}/state", "checkpoint")
        (['notes.txt'], ['.dglm', 'notes.txt', 'state.json'])
    """
    folder = Path(folder)
    entries = _walk(folder)
    marker = _read_marker(folder)
    if marker is not None:
        own = set(marker["files"]) | {MARKER} if marker["kind"] == kind else set()
        return [e for e in entries if e not in own]
    if kind in LEGACY_KINDS and _has_record(folder / LEGACY_KINDS[kind][0], LEGACY_KINDS[kind][1]) \
            and (owns is None or owns(folder)):
        record, _, layout = LEGACY_KINDS[kind]
        if kind == "probe registry":
            probes = read_json(folder / record).get("probes")
            layout = {record: None, **{p: _PROBE for p in (probes if isinstance(probes, list) else [])
                                       if isinstance(p, str)}}
        return [e for e in entries if not _in_layout(e, layout)]
    return entries


def check_output_folder(target: str | os.PathLike, kind: str, *, overwrite: bool = False,
                        owns: Callable[[Path], bool] | None = None, what: str | None = None) -> None:
    """Refuse to replace ``target`` with a ``kind`` folder when that would lose something: a file (never
    replaced by a folder), or a folder holding entries that are not dglm's own ``kind`` output (see
    :func:`foreign_entries`), unless ``overwrite``. A missing path, an empty folder and dglm's own output of
    the same kind (a rerun) pass. ``what`` names the path in the message (an option such as ``--out``).

    Example:
        >>> with tempfile.TemporaryDirectory() as d:
        ...     check_output_folder(f"{d}/new", "checkpoint")            # missing: fine
        ...     check_output_folder(d, "checkpoint")                     # empty: fine
        ...     _ = Path(d, "a.txt").write_text("x")
        ...     check_output_folder(d, "checkpoint", overwrite=True)     # explicitly asked
        ...     check_output_folder(f"{d}/a.txt", "checkpoint", overwrite=True)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        dglm.io.OutputError: .../a.txt is a file; a checkpoint folder never replaces a file: choose another path
    """
    target = Path(target)
    name = f"{what} {target}" if what else str(target)
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return
    except OSError as e:
        raise OutputError(f"{name}: cannot inspect it ({e.strerror or e})") from None
    if stat.S_ISLNK(st.st_mode):
        if overwrite:  # the link is replaced, never what it points to
            return
        raise OutputError(f"{name} is a symbolic link (to {os.readlink(target)}); dglm does not write through "
                          f"links: choose another path, or pass overwrite=True (--overwrite) to replace the link")
    if not stat.S_ISDIR(st.st_mode):
        article = "an" if kind[0] in "aeiou" else "a"
        raise OutputError(f"{name} is a {_file_kind(st.st_mode)}; {article} {kind} folder never replaces a "
                          f"{_file_kind(st.st_mode)}: choose another path")
    if overwrite:
        return
    try:
        foreign = foreign_entries(target, kind, owns)
    except OSError as e:
        raise OutputError(f"{name}: cannot list it ({e.strerror or e})") from None
    if foreign:
        other = output_kind(target)
        held = f"dglm's {other} output" if other and other != kind else "files dglm did not write"
        raise OutputError(f"{name} holds {held} ({_names(foreign)}); writing {'an' if kind[0] in 'aeiou' else 'a'} "
                          f"{kind} there would delete "
                          f"{'them' if len(foreign) > 1 else 'it'}. Choose another (new or empty) folder, move "
                          f"{'them' if len(foreign) > 1 else 'it'} away, or pass overwrite=True (--overwrite) to "
                          f"replace the folder")


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, kind: str = "folder", *, overwrite: bool = False,
                     owns: Callable[[Path], bool] | None = None, marker: bool = True,
                     record: dict | None = None) -> Iterator[Path]:
    """Yield a temporary folder next to ``target``; on success replace ``target`` with it.

    ``target`` is checked first (:func:`check_output_folder`: a user's folder or file is never replaced
    unless ``overwrite``) and again just before the rename. The new folder gets a :data:`MARKER` naming
    ``kind``, its entries and ``record`` (what the output was made from, for caches keyed by it; see
    :func:`output_record`), unless ``marker=False`` (outputs whose own record says what they are), so a rerun
    knows the folder as its own. If the body raises, ``target`` is left exactly as it was and the
    temporary folder is removed.

    Example:
        >>> with tempfile.TemporaryDirectory() as d:
        ...     with atomic_directory(f"{d}/ckpt", "demo") as tmp:
        ...         write_json(tmp / "a.json", {"v": 1})
        ...     try:
        ...         with atomic_directory(f"{d}/ckpt", "demo") as tmp:
        ...             write_json(tmp / "a.json", {"v": 2})
        ...             raise KeyboardInterrupt  # interrupted: the first version stays
        ...     except KeyboardInterrupt:
        ...         pass
        ...     read_json(f"{d}/ckpt/a.json"), sorted(os.listdir(d)), sorted(os.listdir(f"{d}/ckpt"))
        ({'v': 1}, ['ckpt'], ['.dglm', 'a.json'])
    """
    target = Path(target)
    check_output_folder(target, kind, overwrite=overwrite, owns=owns)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError as e:
        raise OutputError(f"cannot write {target}: {e.strerror or e}") from None
    try:
        yield tmp
        if marker:
            write_json(tmp / MARKER, {**(record or {}), "kind": kind, "files": _walk(tmp)})
        check_output_folder(target, kind, overwrite=overwrite, owns=owns)  # again: it may have changed
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    if os.path.lexists(target):
        os.replace(target, old)
    os.replace(tmp, target)
    if old.is_symlink() or old.is_file():
        old.unlink()
    else:
        shutil.rmtree(old, ignore_errors=True)


def check_output_file(path: str | os.PathLike, *, overwrite: bool = False,
                      owns: Callable[[Path], bool] | None = None, what: str | None = None) -> None:
    """Refuse to write the file ``path`` when that would lose something or never finish: a folder, a FIFO,
    a device or a link is refused (a FIFO is never opened, so nothing blocks); an existing regular file is
    replaced only when ``owns(path)`` says it is dglm's own output of the same kind, or with ``overwrite``.
    The folder must exist or be creatable.

    Example:
        >>> check_output_file("/dev/full", what="--out-json")
        Traceback (most recent call last):
            ...
        dglm.io.OutputError: --out-json /dev/full is a character device; accepted: a new file, or a regular file (replaced)
    """
    path = Path(path)
    name = f"{what} {path}" if what else str(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise OutputError(f"{name}: cannot inspect it ({e.strerror or e})") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{name} is a {_file_kind(st.st_mode)}; accepted: a new file, or a regular file "
                          f"(replaced)")
    if st is not None and not overwrite and not (owns is not None and owns(path)):
        raise OutputError(f"{name} exists and is not dglm's own output of this kind; writing would replace it. "
                          f"Choose another path, or pass overwrite=True (--overwrite) to replace it")
    for parent in path.parents:
        if os.path.lexists(parent):
            if not parent.is_dir():
                raise OutputError(f"{name}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK) and parent == path.parent:
                raise OutputError(f"{name}: the folder {parent} is not writable")
            break


def write_output(path: str | os.PathLike, text: str, *, overwrite: bool = False,
                 owns: Callable[[Path], bool] | None = None, what: str | None = None) -> Path:
    """Write ``text`` to the file ``path`` atomically (a temporary file in its folder, renamed into place),
    after :func:`check_output_file` (again just before the rename); creates missing folders.

    Example:
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = write_output(f"{d}/r.json", "{}\\n")
        ...     write_output(f"{d}/r.json", "[]\\n")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        dglm.io.OutputError: .../r.json exists and is not dglm's own output of this kind; writing would replace it. ...
    """
    path = Path(path)
    check_output_file(path, overwrite=overwrite, owns=owns, what=what)
    name = f"{what} {path}" if what else str(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OutputError(f"{name}: cannot write it ({e.strerror or e})") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        check_output_file(path, overwrite=overwrite, owns=owns, what=what)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"{name}: cannot write it ({e.strerror or e})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_text(path: str | os.PathLike, limit: int, what: str | None = None) -> str:
    """A UTF-8 text file of at most ``limit`` bytes; a folder, FIFO or device (``/dev/zero``), a larger file or
    one that is not UTF-8 is refused by name (a FIFO is never opened, so nothing blocks).

    Example:
        >>> read_text("/dev/zero", 1000, what="--card")
        Traceback (most recent call last):
            ...
        dglm.io.OutputError: --card /dev/zero is a character device; accepted: a text file of at most 1,000 bytes
    """
    name = f"{what} {path}" if what else str(path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise OutputError(f"{name}: cannot read it ({e.strerror or e})") from None
    accepted = f"accepted: a text file of at most {limit:,} bytes"
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{name} is a {_file_kind(st.st_mode)}; {accepted}")
    try:
        with open(path, "rb") as f:
            raw = f.read(limit + 1)
    except OSError as e:
        raise OutputError(f"{name}: cannot read it ({e.strerror or e})") from None
    if len(raw) > limit:
        raise OutputError(f"{name} is larger than {limit:,} bytes; {accepted}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise OutputError(f"{name} is not UTF-8 text (byte {e.start}); {accepted}") from None


def json_with_keys(*keys: str) -> Callable[[Path], bool]:
    """An ``owns`` test for :func:`write_output`: the file is a JSON object holding all of ``keys`` (a
    previous output of the same kind).

    Example:
        >>> with tempfile.TemporaryDirectory() as d:
        ...     write_json(f"{d}/a.json", {"gap": 1, "command": "x"})
        ...     json_with_keys("gap", "command")(Path(d, "a.json")), json_with_keys("step")(Path(d, "a.json"))
        (True, False)
    """
    def owns(path: Path) -> bool:
        return _has_record(Path(path), keys)

    return owns


def check_apart(outputs: dict[str, str | os.PathLike], inputs: dict[str, str | os.PathLike | None]) -> None:
    """Refuse outputs that would write into an input: an output path equal to, inside or containing an input
    path (compared resolved, symbolic links followed). Inputs that are not local paths (hub ids) are skipped.

    Example:
        >>> with tempfile.TemporaryDirectory() as w:  # doctest: +ELLIPSIS
        ...     os.makedirs(f"{w}/data/train")
        ...     check_apart({"--work/data": f"{w}/data"}, {"--data": f"{w}/data/train", "--decoder": "org/model"})
        Traceback (most recent call last):
            ...
        dglm.io.OutputError: --data .../data/train lies inside .../data, which this stage writes (--work/data); an input is never written: move it or choose another --work / --out
    """
    resolved = {name: Path(p).resolve() for name, p in inputs.items()
                if p is not None and not str(p).startswith("hf:") and os.path.lexists(p)}
    for out_name, out in outputs.items():
        out_path = Path(out).resolve()
        for in_name, in_path in resolved.items():
            if in_path == out_path or out_path in in_path.parents:
                rel = "is" if in_path == out_path else "lies inside"
                raise OutputError(f"{in_name} {inputs[in_name]} {rel} {out}, which this stage writes ({out_name}); "
                                  f"an input is never written: move it or choose another --work / --out")
            if in_path in out_path.parents:
                raise OutputError(f"{out_name} {out} lies inside the input {in_name} {inputs[in_name]}; an input "
                                  f"is never written: choose another --work / --out")


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write ``data`` as indented JSON with sorted keys (and a final newline).

    Example:
        >>> with tempfile.TemporaryDirectory() as d:
        ...     write_json(f"{d}/c.json", {"b": 1, "a": [2]})
        ...     print(Path(f"{d}/c.json").read_text(), end="")
        {
          "a": [
            2
          ],
          "b": 1
        }
    """
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> dict:
    """Read a JSON object; a missing file, invalid JSON or a non-object raises :class:`CheckpointError`.

    Example:
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = Path(f"{d}/list.json").write_text("[1, 2]")
        ...     read_json(f"{d}/list.json")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        dglm.io.CheckpointError: .../list.json must hold a JSON object, got list
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    with open(path, "rb") as f:
        raw = f.read(MAX_JSON_BYTES + 1)
    if len(raw) > MAX_JSON_BYTES:
        raise CheckpointError(f"{path} is larger than {MAX_JSON_BYTES} bytes, the limit of a JSON file here")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
    except RecursionError:  # e.g. 100,000 nested brackets
        raise CheckpointError(f"{path} is not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def read_config(path: str | os.PathLike, cls: type[C]) -> C:
    """Parse a JSON config into ``cls``; unknown or wrongly typed fields raise an error naming them.

    Example:
        >>> from dglm.config import EncoderConfig
        >>> with tempfile.TemporaryDirectory() as d:
        ...     write_json(f"{d}/config.json", {"name_or_path": "m", "dim": 4})
        ...     read_config(f"{d}/config.json", EncoderConfig).dim
        4
    """
    try:
        return cls.model_validate(read_json(path))
    except ValidationError as e:
        raise CheckpointError(f"{path} does not hold a valid {cls.__name__}: {e}") from e


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor]) -> None:
    """Write tensors (detached, made contiguous, moved to CPU) to a safetensors file.

    Example:
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_tensors(f"{d}/t.safetensors", {"w": torch.arange(6.0).reshape(2, 3).T})
        ...     load_tensors(f"{d}/t.safetensors")["w"].shape
        torch.Size([3, 2])
    """
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a safetensors file; a pickle, a truncated or a corrupted file raises :class:`CheckpointError`.

    Example (torch.save files are refused, never unpickled):
        >>> with tempfile.TemporaryDirectory() as d:
        ...     torch.save({"w": torch.ones(2)}, f"{d}/w.pt")
        ...     load_tensors(f"{d}/w.pt")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        dglm.io.CheckpointError: .../w.pt is a pickle / torch.save file; only safetensors files are loaded
    """
    path = _check_safetensors(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from e


def _check_safetensors(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    with open(path, "rb") as f:
        head = f.read(9)
    # A safetensors file starts with its header's length (8 bytes, little endian) and then the JSON header.
    if head[8:9] != b"{":
        kind = "a pickle / torch.save file" if head.startswith(PICKLE_MAGIC) else "not a safetensors file"
        raise CheckpointError(f"{path} is {kind}; only safetensors files are loaded")
    return path


def tensor_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor in a safetensors file, read from its header (no tensor is loaded).

    Example:
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_tensors(f"{d}/t.safetensors", {"w": torch.zeros(2, 3), "b": torch.zeros(3)})
        ...     tensor_shapes(f"{d}/t.safetensors")
        {'b': (3,), 'w': (2, 3)}
    """
    path = _check_safetensors(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in sorted(f.keys())}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from e


def check_shapes(where: str | os.PathLike, expected: dict[str, tuple[int, ...]],
                 found: dict[str, tuple[int, ...]]) -> None:
    """Refuse weights whose names or shapes differ from what a config builds, naming the first differences.

    Example:
        >>> check_shapes("ckpt/prompt", {"w": (2, 3)}, {"w": (2, 4), "x": (1,)})
        Traceback (most recent call last):
            ...
        dglm.io.CheckpointError: weights in ckpt/prompt do not match the config: unexpected: ['x']; w: (2, 4) in the file, (2, 3) in the config
    """
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    wrong = [f"{k}: {found[k]} in the file, {expected[k]} in the config" for k in sorted(set(expected) & set(found))
             if tuple(found[k]) != tuple(expected[k])]
    problems = ([f"missing: {missing[:5]}"] if missing else []) + ([f"unexpected: {extra[:5]}"] if extra else []) \
        + wrong[:5]
    if problems:
        raise CheckpointError(f"weights in {where} do not match the config: {'; '.join(problems)}")


def save_component(folder: str | os.PathLike, config: BaseModel, state: dict[str, torch.Tensor], *,
                   overwrite: bool = False) -> None:
    """Write ``config.json`` and ``model.safetensors`` into ``folder``, atomically; an existing ``folder`` is
    replaced only when it holds an earlier save of the same config class (or with ``overwrite``; see
    :func:`atomic_directory`).

    Example:
        >>> from dglm.config import EncoderConfig
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_component(f"{d}/enc", EncoderConfig(name_or_path="m", dim=2), {"mean": torch.zeros(2)})
        ...     sorted(os.listdir(f"{d}/enc"))
        ['config.json', 'model.safetensors']
    """
    def owns(existing: Path) -> bool:  # an earlier save of the same kind of component
        try:
            read_config(existing / CONFIG_NAME, type(config))
        except CheckpointError:
            return False
        return True

    with atomic_directory(folder, "component", overwrite=overwrite, owns=owns, marker=False) as tmp:
        write_json(tmp / CONFIG_NAME, config.model_dump(mode="json"))
        save_tensors(tmp / WEIGHTS_NAME, state)


def load_component(folder: str | os.PathLike, cls: type[C],
                   build: Callable[[C], torch.nn.Module] | None = None) -> tuple[C, dict[str, torch.Tensor]]:
    """Read what :func:`save_component` wrote.

    With ``build`` (config -> module, e.g. the component's class), the config is first built on the
    ``meta`` device (nothing allocated), its parameter count checked against
    :data:`~dglm.config.MAX_COMPONENT_PARAMS`, and its tensor names and shapes checked against the weights
    file's header; only then are the weights read. So an untrusted config can never allocate more than
    its weights file holds.

    Example:
        >>> from dglm.config import EncoderConfig
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_component(d, EncoderConfig(name_or_path="m", dim=2), {"mean": torch.zeros(2)})
        ...     config, state = load_component(d, EncoderConfig)
        >>> config.name_or_path, list(state)
        ('m', ['mean'])
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    config = read_config(folder / CONFIG_NAME, cls)
    if build is not None:
        check_shapes(folder, _meta_shapes(build, config, folder), tensor_shapes(folder / WEIGHTS_NAME))
    return config, load_tensors(folder / WEIGHTS_NAME)


def _meta_shapes(build: Callable[[C], torch.nn.Module], config: C, where) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the state a config builds, built on the meta device (allocates nothing)."""
    from dglm.config import MAX_COMPONENT_PARAMS

    try:
        with torch.device("meta"):
            module = build(config)
    except (ValueError, TypeError, RuntimeError, AssertionError) as e:
        raise CheckpointError(f"the config in {where} cannot be built: {e}") from e
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    count = sum(math.prod(shape) for shape in shapes.values())
    if count > MAX_COMPONENT_PARAMS:
        raise CheckpointError(f"the config in {where} asks for {count:,} parameters; the limit is "
                              f"{MAX_COMPONENT_PARAMS:,} (dglm.config.MAX_COMPONENT_PARAMS)")
    return shapes


def load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], where: str | os.PathLike) -> None:
    """Load ``state`` strictly into ``module``; missing, extra or mis-shaped tensors raise CheckpointError.

    Example:
        >>> layer = torch.nn.Linear(2, 2)
        >>> load_state(layer, {"weight": torch.eye(2), "bias": torch.zeros(2)}, "here")
        >>> load_state(layer, {"weight": torch.eye(2)}, "ckpt/diffusion")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        dglm.io.CheckpointError: weights in ckpt/diffusion do not match the config: ...
    """
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"weights in {where} do not match the config: {e}") from e


LOCK_NAME = ".dglm.lock"
"""The lock file of a working folder (:func:`folder_lock`); ``.dglm.lock.json`` beside it names the holder."""


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "--work") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if missing) for the body, or refuse at once when another
    process holds it, naming that process (its pid, host and command line). The lock is the ``filelock``
    library's (``fcntl`` / ``msvcrt``), so a killed process never leaves a stale lock behind.

    Example:
        >>> with tempfile.TemporaryDirectory() as d:  # doctest: +ELLIPSIS
        ...     with folder_lock(d):
        ...         print(read_json(Path(d, LOCK_NAME + ".json"))["pid"] == os.getpid())
        True
    """
    import socket
    import sys

    from filelock import FileLock, Timeout

    folder = Path(folder)
    if os.path.lexists(folder) and not folder.is_dir():
        raise OutputError(f"{what} {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{what} {folder}: cannot create it ({e.strerror or e})") from None
    lock, owner = FileLock(folder / LOCK_NAME, timeout=0), folder / (LOCK_NAME + ".json")
    try:
        lock.acquire()
    except Timeout:
        try:
            who = read_json(owner)
            holder = f"process {who.get('pid')} on {who.get('host')} ({who.get('command')!r})"
        except (CheckpointError, OSError):
            holder = "another process"
        raise OutputError(f"{what} {folder} is in use by {holder}; wait for it to finish, or use another "
                          f"{what}") from None
    except OSError as e:
        raise OutputError(f"{what} {folder}: cannot lock it ({e.strerror or e}); is it writable?") from None
    try:
        write_json(owner, {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)})
        yield folder
    finally:
        owner.unlink(missing_ok=True)
        lock.release()
