"""Random-weight presets (dglm.presets) and the GPU runtime check's CPU fallback (recipes/gpu_check.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from dglm.presets import preset_config, random_pipeline, random_texts, synthetic_tokenizer

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "gpu_check.py"


@pytest.fixture(scope="module")
def tiny_pipe():
    return random_pipeline("tiny")


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", RECIPE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the recipe is executed
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_tiny_pipeline_generates_end_to_end_and_is_reproducible(tiny_pipe):
    kwargs = dict(num_samples=2, steps=4, max_new_tokens=4, min_new_tokens=4, seed=3)
    out = tiny_pipe.generate(["the game was", "a player won the match"], **kwargs)
    assert [len(row) for row in out.continuations] == [2, 2]
    assert all(isinstance(text, str) and text.strip() for row in out.continuations for text in row)
    assert out.plans.shape == (2, 2, tiny_pipe.encoder.dim)
    assert torch.allclose(out.plans.norm(dim=-1), torch.ones(2, 2), atol=1e-4)  # raw space: unit norm
    assert set(out.timings) == {"encode", "diffusion", "prompt", "decode"}
    again = tiny_pipe.generate(["the game was", "a player won the match"], **kwargs)
    assert again.continuations == out.continuations


def test_random_pipeline_matches_its_config_and_fits_standardisation(tiny_pipe):
    config = preset_config("tiny")
    assert tiny_pipe.config.diffusion == config.diffusion and tiny_pipe.config.prompt == config.prompt
    assert tiny_pipe.encoder.fitted and tiny_pipe.encoder.config.name_or_path == "random:tiny-bert"
    # Standardised embeddings of fresh random texts sit near the unit scale the noise schedule assumes.
    z = tiny_pipe.encoder.standardize(tiny_pipe.encoder.encode(random_texts(64, 24, seed=1)))
    assert 0.3 < z.std().item() < 3


def test_synthetic_tokenizer_covers_the_model_vocabulary():
    tok = synthetic_tokenizer(300)
    assert len(tok) == 300 and tok.pad_token_id == 0 and tok.eos_token_id == 3
    ids = tok("the game was zzz").input_ids
    assert ids[-1] == tok.unk_token_id and tok.decode(ids[:3]) == "the game was"
    assert tok.decode([299]) == "<w299>"


def test_unknown_preset_and_architecture_are_refused_by_name():
    with pytest.raises(ValueError, match="preset='huge'"):
        random_pipeline("huge")
    config = preset_config("tiny").model_copy(update={"decoder": preset_config("mini").decoder.model_copy(
        update={"name_or_path": "some/other-lm"})})
    with pytest.raises(ValueError, match="some/other-lm"):
        random_pipeline(config)


def test_recipe_cpu_fallback_runs_the_tiny_check_and_exits_0(gpu_check, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu_check.md"
    assert gpu_check.main(["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "CPU-only" in printed and "all cells ran" in printed
    assert "| 2 | 8 |" in printed and "failed" not in printed
    assert not out.exists()  # the fallback writes no report


def test_recipe_reports_a_failing_cell_instead_of_aborting(gpu_check, tmp_path, monkeypatch):
    from dglm.constraints import Control, FunctionConstraint

    def explode(x):
        raise RuntimeError("guidance exploded")

    monkeypatch.setattr(gpu_check, "random_probe_control",
                        lambda *args: Control(FunctionConstraint(explode, name="explode"), 1.0))
    out = tmp_path / "check.md"
    code = gpu_check.main(["--device", "cpu", "--preset", "tiny", "--dtype", "float32", "--batch-sizes", "1",
                           "--new-tokens", "4", "--steps", "2", "--repeats", "1", "--out", str(out)])
    assert code == 1
    measured = out.read_text().split("## Reference anchors")[0]
    planning, decoding = [line for line in measured.splitlines() if line.startswith("| 1 |")]
    assert "failed: RuntimeError: guidance exploded" in planning
    assert decoding.count("x |") == 1  # the unguided ratio is there, the guided one is not
    assert "## Reference anchors" in out.read_text()
