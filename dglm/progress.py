"""Progress bars from the libraries dglm loads models with, shown only where the user asked for them.

transformers draws a "Loading weights" bar for every model it loads and huggingface_hub one per download;
a library call that loads models should print nothing unless asked (``show_progress=True``, or the CLI on a
terminal). Those libraries switch their bars with process-wide flags, so :func:`progress_bars` sets them
for one block and puts back what it found; dglm's own bars (the diffusion steps) have their own
``show_progress_bar`` knob.

Example:
    >>> from transformers.utils import logging as hf_logging
    >>> before = hf_logging.is_progress_bar_enabled()
    >>> with progress_bars(False):
    ...     hf_logging.is_progress_bar_enabled()
    False
    >>> hf_logging.is_progress_bar_enabled() == before
    True
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator


@contextlib.contextmanager
def progress_bars(show: bool) -> Iterator[None]:
    """Inside this block, transformers' and huggingface_hub's progress bars (weight loading, downloads) and
    bars made with ``tqdm`` directly (transformers' one-time GGUF conversion) are shown if ``show`` and
    hidden otherwise; after it, every flag is as it was. The flags are process-wide: another thread loading
    a model while the block is open gets the same setting.

    Example (a bar made with tqdm inside a quiet block is disabled; after it, bars draw again):
        >>> import io, tqdm
        >>> with progress_bars(False):
        ...     tqdm.tqdm(range(2), file=io.StringIO()).disable
        True
        >>> tqdm.tqdm(range(2), file=io.StringIO()).disable
        False
    """
    import huggingface_hub.utils as hub_utils
    import tqdm
    from transformers.utils import logging as hf_logging

    bars, hub_off = hf_logging.is_progress_bar_enabled(), hub_utils.are_progress_bars_disabled()
    init = tqdm.std.tqdm.__init__
    if show:
        hf_logging.enable_progress_bar()
    else:
        hf_logging.disable_progress_bar()
        tqdm.std.tqdm.__init__ = functools.partialmethod(init, disable=True)
    try:
        yield
    finally:
        tqdm.std.tqdm.__init__ = init
        (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()
        (hub_utils.disable_progress_bars if hub_off else hub_utils.enable_progress_bars)()
