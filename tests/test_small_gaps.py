"""Small parts of the user's path: streaming through ``streamer=``, and the package's type hints (py.typed)."""

from __future__ import annotations

from pathlib import Path

import tomllib
from transformers.generation.streamers import TextIteratorStreamer

from dglm import Controller
from dglm.presets import random_pipeline

ROOT = Path(__file__).resolve().parents[1]


def test_streaming_through_streamer_yields_the_continuation_as_it_is_written():
    pipe = random_pipeline("tiny")
    streamer = TextIteratorStreamer(pipe.decoder.tokenizer, skip_prompt=False, skip_special_tokens=True, timeout=60)
    out = Controller(None, pipe).generate(["the game was"], seed=0, steps=3, max_new_tokens=6, min_new_tokens=6,
                                          streamer=streamer)
    pieces = list(streamer)  # the text in pieces, as generate wrote it (a thread would read them live)
    assert len(pieces) >= 1 and "".join(pieces).strip() == out.continuations[0][0].strip()


def test_the_package_ships_its_type_hints():
    assert (ROOT / "dglm" / "py.typed").is_file()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data["dglm"]
