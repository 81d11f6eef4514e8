"""A library prints nothing it was not asked for: loading, generating, saving and exporting leave stderr
empty (no progress bars, no per-call warnings, no peft warnings), run in a fresh interpreter as a user's
script would be."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from dglm.presets import random_pipeline

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter that imports this tree's dglm, offline, as a user's script."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("PYTHONWARNINGS", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny checkpoint with a decoder adapter, and its encoder and decoder saved as model folders; the
    decoder's generation_config.json sets what many hub models' do (max_length, sampling flags)."""
    root = tmp_path_factory.mktemp("quiet")
    pipe = random_pipeline("tiny")
    pipe.encoder.model.save(str(root / "encoder"))
    pipe.decoder.model.save_pretrained(root / "decoder")
    pipe.decoder.tokenizer.save_pretrained(root / "decoder")
    torch.manual_seed(0)
    for p in pipe.decoder.add_adapter(rank=2):
        torch.nn.init.normal_(p, std=0.1)
    pipe.save_pretrained(root / "ckpt")
    config = root / "decoder" / "generation_config.json"
    settings = json.loads(config.read_text()) if config.is_file() else {}
    settings.update(max_length=20, do_sample=True, temperature=0.7, top_p=0.95)  # as Llama 3 ships
    config.write_text(json.dumps(settings))
    return root


def test_loading_generating_saving_and_exporting_print_nothing(saved, tmp_path):
    result = run_python(f"""
        from dglm import DGLM, Controller, Decoder
        from dglm.encoder import SemanticEncoder
        from dglm.serving import export_adapter, vllm_requests

        encoder = SemanticEncoder.from_pretrained({str(saved / "encoder")!r})
        decoder = Decoder.from_pretrained({str(saved / "decoder")!r})
        pipe = DGLM.from_pretrained({str(saved / "ckpt")!r}, encoder=encoder, decoder=decoder)
        assert pipe.decoder.has_adapter
        for _ in range(2):  # per-call warnings would show on the second call too
            pipe.generate(["Hi", "the game was"], steps=2, max_new_tokens=4)
            pipe.generate(["Hi"], steps=2, max_new_tokens=4, do_sample=False)  # greedy: the flags unused
            Controller(None, pipe).generate(["Hi"], steps=2, max_new_tokens=4, plan_scale=2.0)
        pipe.save_pretrained("saved")
        export_adapter(pipe.decoder, "exported")
        print("done")
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"
    assert result.stderr == ""
    assert (tmp_path / "exported" / "adapter_model.safetensors").is_file()


def test_show_progress_draws_the_loading_bars_when_asked(saved, tmp_path):
    result = run_python(f"""
        from dglm import Decoder
        Decoder.from_pretrained({str(saved / "decoder")!r}, show_progress=True)
        Decoder.from_pretrained({str(saved / "decoder")!r})
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("Loading weights") >= 1  # asked for once: drawn (and only then)
    assert result.stderr.count("Loading weights: 100%") == 1


@pytest.mark.assets
def test_mini_from_the_readme_prints_nothing(tmp_path):
    """The issue's command: the packaged checkpoint loads and writes with an empty stderr."""
    result = run_python("""
        from dglm import DGLM
        DGLM.from_pretrained('mini').generate(['Hi'], max_new_tokens=4)
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
