"""Helpers of the ``dglm`` command line that load no model: what it reads and writes (checked before any
model loads), which errors are the user's, and how quiet third-party libraries are.

``--input``: read at most :data:`~dglm.config.MAX_INPUT_BYTES` bytes of UTF-8 (a leading byte-order mark is
dropped), split into prefixes at ``\\n`` only (a trailing ``\\r`` is dropped; form feeds, ``\\x1c``, ``\\x85``,
U+2028 stay inside their line), blank lines skipped, each prefix at most
:data:`~dglm.config.MAX_PREFIX_CHARS` characters.

``--json``: the target may be a regular file (replaced atomically, keeping its permissions) or nothing;
a symlink, device, FIFO, folder or the ``--input`` file is refused. The temporary file is created in the
target's folder at once, so an unwritable folder fails before the run, not after it.

Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = Path(f"{d}/in.txt").write_bytes("\\ufeffa\\x0cb\\r\\n\\nc\\u2028d\\n".encode())
    ...     prefixes = read_prefixes([], f"{d}/in.txt")
    ...     out = JsonOutput(f"{d}/out.json", f"{d}/in.txt")
    ...     out.write([{"prefix": p} for p in prefixes])
    ...     Path(f"{d}/out.json").read_text().count("prefix")
    2
    >>> prefixes
    ['a\\x0cb', 'c\\u2028d']
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

# The packages whose warnings and progress bars follow --progress.
THIRD_PARTY = r"(transformers|peft|torch|huggingface_hub|sentence_transformers|safetensors|accelerate|tqdm)(\..*)?"


class UserError(ValueError):
    """A problem with what the user asked for; the CLI prints it as one line and exits with status 2.

    Example:
        >>> read_prefixes([], None)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        dglm.cli_support.UserError: no prefix given: ...
    """


def check_utf8(text: str, what: str) -> str:
    """Refuse text that cannot be encoded as UTF-8 (an invalid byte on the command line arrives as a lone
    surrogate), naming where.

    Example:
        >>> check_utf8("caf\\udce9", "PREFIX 1")
        Traceback (most recent call last):
            ...
        dglm.cli_support.UserError: PREFIX 1 is not valid UTF-8: byte 0xe9 at character 3
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = text[e.start]
        byte = f"byte 0x{ord(bad) - 0xDC00:02x}" if 0xDC80 <= ord(bad) <= 0xDCFF else f"U+{ord(bad):04X}"
        raise UserError(f"{what} is not valid UTF-8: {byte} at character {e.start}") from None
    return text


def read_prefixes(positional: Sequence[str], path: str | None, stdin: BinaryIO | None = None) -> list[str]:
    """The prefixes of a request: the positional ones, then the lines of ``path`` ('-': ``stdin``, default
    ``sys.stdin``), bounded as the module docstring says.

    Example:
        >>> read_prefixes(["The match", ""], None)
        ['The match', '']
    """
    from dglm.config import MAX_INPUT_BYTES, MAX_PREFIX_CHARS

    prefixes = [check_utf8(p, f"PREFIX {i + 1}") for i, p in enumerate(positional)]
    if path is not None:
        try:
            if path == "-":
                data = (stdin or sys.stdin.buffer).read(MAX_INPUT_BYTES + 1)
            else:
                with open(path, "rb") as f:
                    data = f.read(MAX_INPUT_BYTES + 1)
        except OSError as e:
            raise UserError(f"--input {path}: cannot read it ({e.strerror or e})") from None
        if len(data) > MAX_INPUT_BYTES:
            raise UserError(f"--input {path}: more than {MAX_INPUT_BYTES} bytes; the limit of one request is "
                            f"{MAX_INPUT_BYTES} bytes (split the file)")
        try:
            text = data.decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError as e:
            raise UserError(f"--input {path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                            f"{e.start})") from None
        prefixes += [line.removesuffix("\r") for line in text.split("\n") if line.strip()]
    if not prefixes:
        raise UserError("no prefix given: pass one or more PREFIX arguments, or --input FILE with one prefix "
                        "per line" + (f" ({path} has no non-blank line)" if path is not None else ""))
    for i, prefix in enumerate(prefixes):
        if len(prefix) > MAX_PREFIX_CHARS:
            raise UserError(f"prefix {i + 1} has {len(prefix)} characters; the limit is {MAX_PREFIX_CHARS} (the "
                            f"decoder reads only the last tokens that fit its context anyway)")
    return prefixes


def _kind(mode: int) -> str:
    kinds = [(stat.S_ISLNK, "symbolic link"), (stat.S_ISDIR, "folder"), (stat.S_ISCHR, "character device"),
             (stat.S_ISBLK, "block device"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket")]
    return next((name for test, name in kinds if test(mode)), "special file")


class JsonOutput:
    """The ``--json`` target, checked and reserved (a temporary file in its folder) when made; :meth:`write`
    fills the temporary file and renames it into place, :meth:`discard` removes it.

    Example:
        >>> JsonOutput("/dev/null", None)
        Traceback (most recent call last):
            ...
        dglm.cli_support.UserError: --json /dev/null is a character device; accepted: a regular file (replaced) or a new file
    """

    def __init__(self, path: str, input_path: str | None = None):
        if not path:
            raise UserError("--json '': give the name of the file to write")
        self.path = path
        self.target = Path(path)
        existing = self._check_target()
        if input_path not in (None, "-") and existing is not None and os.path.exists(input_path) \
                and os.path.samefile(input_path, path):
            raise UserError(f"--json {path} is the --input file; write the results to another file")
        folder = self.target.parent
        if not folder.is_dir():
            raise UserError(f"--json {path}: the folder {folder.resolve()} does not exist")
        try:
            fd, self.tmp = tempfile.mkstemp(prefix=f".{self.target.name}.", suffix=".tmp", dir=folder)
        except OSError as e:
            raise UserError(f"--json {path}: cannot create a file in {folder.resolve()} ({e.strerror or e})") from None
        # mkstemp makes the file 0600: give it the replaced file's permissions, or the umask's default.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, stat.S_IMODE(existing.st_mode) if existing is not None else 0o666 & ~umask)
        os.close(fd)

    def _check_target(self) -> os.stat_result | None:
        try:
            st = os.lstat(self.target)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise UserError(f"--json {self.path}: cannot inspect it ({e.strerror or e})") from None
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"--json {self.path} is a {_kind(st.st_mode)}; accepted: a regular file (replaced) or "
                            f"a new file")
        return st

    def write(self, data) -> None:
        """Write ``data`` as indented JSON into the temporary file, then rename it onto the target (checked
        again just before)."""
        try:
            with open(self.tmp, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2, ensure_ascii=False)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            self._check_target()
            os.replace(self.tmp, self.target)
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Remove the temporary file (when the run fails before writing)."""
        Path(self.tmp).unlink(missing_ok=True)


def is_user_error(e: Exception) -> bool:
    """Whether ``e`` is about the request: dglm's own errors for bad input (a ``UserError``, a malformed
    control, a bad checkpoint, a model that cannot be found) and the ValueError / TypeError that dglm's
    argument checks raise. The same exceptions raised inside torch or transformers are internal errors.

    Example:
        >>> is_user_error(UserError("bad")), is_user_error(RuntimeError("bug")), is_user_error(KeyError("x"))
        (True, False, False)
    """
    from pydantic import ValidationError

    from dglm.constraints.parse import ConstraintSyntaxError

    # dglm's error types from modules that import torch: an error of one exists only if its module was imported
    # (a request refused before torch loads is answered without loading it).
    loaded = tuple(getattr(sys.modules[module], name) for module, name in
                   (("dglm.assets", "MissingAssetError"), ("dglm.io", "CheckpointError"), ("dglm.io", "ModelLoadError"))
                   if module in sys.modules)
    if isinstance(e, (UserError, ConstraintSyntaxError, *loaded, ValidationError, FileNotFoundError,
                      PermissionError, IsADirectoryError, NotADirectoryError)):
        return True
    if not isinstance(e, (ValueError, TypeError)):
        return False
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    package = os.path.dirname(os.path.abspath(__file__))  # the dglm package
    return tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(package + os.sep)


@contextlib.contextmanager
def third_party_output(show: bool):
    """Inside this block, third-party progress bars (transformers' "Loading weights", hub downloads),
    transformers' logged warnings and third-party Python warnings are shown only if ``show``.

    Example (``show=False`` silences them inside the block and restores transformers' settings after it):
        >>> with third_party_output(show=True):  # a terminal: nothing changes
        ...     pass
    """
    if show:
        yield
        return
    from transformers.utils import logging as hf_logging

    from dglm.progress import progress_bars

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with progress_bars(False), warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=THIRD_PARTY)
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
