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


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to ``target``; on success replace ``target`` with it.

    If the body raises, ``target`` is left exactly as it was and the temporary folder is removed.

    Example:
        >>> with tempfile.TemporaryDirectory() as d:
        ...     with atomic_directory(f"{d}/ckpt") as tmp:
        ...         write_json(tmp / "a.json", {"v": 1})
        ...     try:
        ...         with atomic_directory(f"{d}/ckpt") as tmp:
        ...             write_json(tmp / "a.json", {"v": 2})
        ...             raise KeyboardInterrupt  # interrupted: the first version stays
        ...     except KeyboardInterrupt:
        ...         pass
        ...     read_json(f"{d}/ckpt/a.json"), sorted(os.listdir(d))
        ({'v': 1}, ['ckpt'])
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


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


def save_component(folder: str | os.PathLike, config: BaseModel, state: dict[str, torch.Tensor]) -> None:
    """Write ``config.json`` and ``model.safetensors`` into ``folder``.

    Example:
        >>> from dglm.config import EncoderConfig
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_component(f"{d}/enc", EncoderConfig(name_or_path="m", dim=2), {"mean": torch.zeros(2)})
        ...     sorted(os.listdir(f"{d}/enc"))
        ['config.json', 'model.safetensors']
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / CONFIG_NAME, config.model_dump(mode="json"))
    save_tensors(folder / WEIGHTS_NAME, state)


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
