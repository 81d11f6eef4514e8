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


def test_a_run_ended_by_its_time_budget_closes_its_progress_bar_at_the_step_reached(tmp_path, capsys):
    import numpy as np
    import torch

    from dglm.config import PromptConfig
    from dglm.presets import TINY, random_decoder
    from dglm.prompt import PromptGenerator
    from dglm.training.data import WindowSet
    from dglm.training.train_prompt import PromptTrainingConfig, train_prompt_generator

    decoder = random_decoder(TINY.decoder)
    generator = PromptGenerator(PromptConfig(dim=8, out_dim=32, num_soft_tokens=2, width=16, depth=2, heads=2))
    rng = np.random.default_rng(0)
    data = WindowSet(rng.integers(4, 100, (6, 8)), np.full((6, 1), 4), cont_emb=torch.randn(6, 1, 8))
    config = PromptTrainingConfig(steps=100_000, batch_size=2, warmup=1, eval_limit=4, eval_every=1000,
                                  mixed_precision="no", time_budget_s=1.0, bow_pretrain_steps=0)
    train_prompt_generator(generator, decoder, data, data, torch.zeros(8), torch.ones(8), config, tmp_path)
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    done, total = (int(n) for n in last.split("|")[2].split()[0].split("/"))
    assert "time budget of 1 s reached" in last and done == total < 100_000, last
