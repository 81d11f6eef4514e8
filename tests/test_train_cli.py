"""`dglm train`: options generated from the configs, the documented end-to-end example on a tiny decoder built
from a config (docs/training.md), reuse of a checkpoint's diffusion model, and the mini recipe's commands."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dglm.cli import main
from dglm.training.cli import build_parser, stage_config
from dglm.training.stages import STAGES
from dglm.training.train_prompt import PromptTrainingConfig

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_every_stage(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(re.search(rf"^\s+{stage}\b", out, re.M) for stage in STAGES)


def test_options_are_the_config_fields_with_their_defaults():
    config = stage_config(build_parser().parse_args(["prompt"]))
    assert config.training == PromptTrainingConfig() and config.model == {}
    config = stage_config(build_parser().parse_args(
        ["prompt", "--switch-fraction", "0.25", "--mixed-precision", "none", "--heads", "2"]))
    assert config.training.switch_fraction == 0.25 and config.training.mixed_precision is None
    assert config.model == {"heads": 2}
    with pytest.raises(ValueError, match="switch_fraction"):  # the config's bound, checked by pydantic
        stage_config(build_parser().parse_args(["prompt", "--switch-fraction", "2"]))


def test_a_user_error_is_one_line_and_status_2(tmp_path, capsys):
    assert main(["train", "prompt", "--work", str(tmp_path)]) == 2
    assert "run `dglm train prepare" in capsys.readouterr().err


def test_every_documented_mini_command_maps_to_a_valid_stage_config():
    sys.path.insert(0, str(ROOT / "recipes"))
    from train_mini import recipe_arguments

    lines = re.findall(r"python recipes/train_mini\.py ((?:[^\n]*\\\n)*[^\n]*)", (ROOT / "results" / "mini" /
                                                                                   "README.md").read_text())
    assert len(lines) >= 10
    for line in lines:
        argv = shlex.split(line.replace("\\\n", " ").replace("$LORA", "--lora-rank 16"))
        config = stage_config(build_parser().parse_args(recipe_arguments(argv)))
        assert config.work == (argv[argv.index("--work") + 1] if "--work" in argv else "cache/mini")
        if argv[0] == "prompt" and "vm2" in argv:
            assert config.training.time_budget_s == 25 * 60 and config.model["head"] == "vocab_mixture"
            assert (config.training.bow_pretrain_steps, config.vocab_skip) == (800, 100)


def _blocks(text: str, marker: str) -> list[str]:
    section = text.split(f"<!-- {marker}:start -->")[1].split(f"<!-- {marker}:end -->")[0]
    return re.findall(r"```(?:python|bash)\n(.*?)```", section, re.S)


def test_the_documented_end_to_end_example_runs(tmp_path, monkeypatch):
    build, commands, use = _blocks((ROOT / "docs" / "training.md").read_text(), "e2e-example")
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    (tmp_path / "build.py").write_text(build)
    subprocess.run([sys.executable, "build.py"], cwd=tmp_path, env=env, check=True, capture_output=True)
    monkeypatch.chdir(tmp_path)
    for line in commands.replace("\\\n", " ").splitlines():
        if line.strip() and not line.startswith("#"):
            argv = shlex.split(line, comments=True)
            assert argv[:2] == ["dglm", "train"] and main(argv[1:]) == 0, line
    result = json.loads(Path("work/runs/r1/result.json").read_text())["eval"]
    assert {"gap", "switch_n", "plain"} <= result.keys()
    assert (Path("work/checkpoint/dglm.json").is_file() and
            "## Plan use" in Path("work/checkpoint/README.md").read_text())
    # export rebuilds the generator and the adapter from the run's last state: the same weights as trained.
    from dglm.io import load_tensors

    trained = {p.name: load_tensors(p) for p in Path("work/runs/r1").glob("*/*.safetensors")
               if p.parent.name in ("prompt", "lora")}
    assert main(["train", "export", "--work", "work", "--run", "r1"]) == 0
    assert len(trained) == 2 and all(
        torch.equal(v, load_tensors(Path("work/runs/r1") / ("prompt" if n == "model.safetensors" else "lora") / n)[k])
        for n, tensors in trained.items() for k, v in tensors.items())
    (tmp_path / "use.py").write_text(use)
    out = subprocess.run([sys.executable, "use.py"], cwd=tmp_path, env=env, check=True, capture_output=True, text=True)
    assert out.stdout.strip()  # the checkpoint loads and writes text

    # The diffusion model depends only on the encoder: a work folder for another decoder reuses it.
    assert main(["train", "prepare", "--work", "other", "--data", "texts", "--encoder", "models/encoder",
                 "--decoder", "models/decoder", "--window", "24", "--eval-prefix", "8", "--max-prefix", "16",
                 "--validation-fraction", "0.2", "--no-prefix-embeddings"]) == 0
    assert main(["train", "diffusion", "--work", "other", "--from-checkpoint", "work/checkpoint"]) == 0

    shipped = load_tensors("work/checkpoint/diffusion/model.safetensors")
    reused = load_tensors("other/diffusion/model.safetensors")
    assert all(torch.equal(shipped[k].float(), reused[k]) for k in shipped)
    assert torch.equal(load_tensors("other/encoder/model.safetensors")["mean"],
                       load_tensors("work/checkpoint/encoder/model.safetensors")["mean"])
    # Another encoder's checkpoint is refused by name.
    Path("third").mkdir()
    (Path("third") / "prepare.json").write_text(Path("other/prepare.json").read_text())
    config = json.loads(Path("other/encoder/config.json").read_text()) | {"name_or_path": "another-encoder"}
    (Path("third") / "encoder").mkdir()
    (Path("third") / "encoder" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="another-encoder"):
        main(["train", "diffusion", "--work", "third", "--from-checkpoint", "work/checkpoint", "--debug"])


def test_texts_from_a_folder_a_jsonl_file_or_a_datasets_dataset(tmp_path):
    from dglm.training.texts import read_documents

    (tmp_path / "docs").mkdir()
    for i in range(40):
        (tmp_path / "docs" / f"{i}.txt").write_text(f"document {i}")
    train, held_out = read_documents(tmp_path / "docs", validation_fraction=0.2)
    assert len(train) + len(held_out) == 40 and 2 <= len(held_out) <= 16 and not set(train) & set(held_out)
    lines = [json.dumps({"body": f"line {i}"}) for i in range(5)]
    (tmp_path / "a.jsonl").write_text("\n".join(lines))
    assert read_documents(tmp_path / "a.jsonl", validation=tmp_path / "a.jsonl", text_field="body")[1][0] == "line 0"
    with pytest.raises(ValueError, match="text_field"):
        read_documents(tmp_path / "a.jsonl")
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["one text", "another"]}).save_to_disk(tmp_path / "ds")
    assert sorted(read_documents(f"hf:{tmp_path / 'ds'}", validation=f"hf:{tmp_path / 'ds'}")[0]) == \
        ["another", "one text"]
