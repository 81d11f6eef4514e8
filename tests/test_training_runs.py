"""Training runs a user can rely on, on the tiny models of docs/training.md's end-to-end example: the same seed
gives bit-identical weights, and the documented 2-process command (torchrun, gloo on CPU) runs 2 processes,
records it, and trains like one process accumulating the same global batch."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train_cli import _blocks

from dglm.cli import main
from dglm.io import load_tensors

ROOT = Path(__file__).resolve().parents[1]
DOCS = (ROOT / "docs" / "training.md").read_text()
ENV = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
       "HF_HUB_OFFLINE": "1", "HOME": os.environ.get("HOME", "/tmp")}


def commands(block: str) -> list[list[str]]:
    return [shlex.split(line, comments=True) for line in block.replace("\\\n", " ").splitlines()
            if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """The end-to-end example's models and texts, and its `prepare` command run: a work folder to train in."""
    root = tmp_path_factory.mktemp("runs")
    build, steps, _ = _blocks(DOCS, "e2e-example")
    (root / "build.py").write_text(build)
    subprocess.run([sys.executable, "build.py"], cwd=root, env=ENV, check=True, capture_output=True)
    prepare = commands(steps)[0]
    assert prepare[:3] == ["dglm", "train", "prepare"]
    old = Path.cwd()
    os.chdir(root)
    try:
        assert main(prepare[1:]) == 0
    finally:
        os.chdir(old)
    return root


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return {f"{p.parent.name}/{k}": v for p in sorted(folder.glob("*/*.safetensors")) for k, v in load_tensors(p).items()}


def test_the_same_seed_trains_bit_identical_weights(prepared, monkeypatch):
    monkeypatch.chdir(prepared)
    for work in ("a", "b"):
        shutil.copytree("work", work)
        assert main(["train", "diffusion", "--work", work, "--preset", "tiny", "--steps", "4", "--batch-size", "8",
                     "--warmup", "1", "--save-every", "4"]) == 0
    a, b = (load_tensors(f"{w}/diffusion/model.safetensors") for w in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    prompt = ["--work", "a", "--preset", "tiny", "--steps", "3", "--batch-size", "4", "--warmup", "1",
              "--lora-rank", "2", "--mixed-precision", "no", "--eval-every", "1000", "--eval-limit", "4"]
    for run in ("s1", "s2", "other"):
        seed = ["--seed", "1"] if run == "other" else []
        assert main(["train", "prompt", "--run", run, *prompt, *seed]) == 0
    s1, s2, other = (weights(Path("a/runs") / run) for run in ("s1", "s2", "other"))
    assert {k.split("/")[0] for k in s1} == {"prompt", "lora", "state"}  # weights, and the optimizer state
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    assert any(not torch.equal(s1[k], other[k]) for k in s1)  # the seed matters


def test_the_documented_two_process_command_runs_two_processes_like_one_accumulating(prepared):
    two, one = commands(DOCS.split("<!-- multi-process-example:start -->")[1]
                        .split("<!-- multi-process-example:end -->")[0].split("```bash")[1].split("```")[0])
    assert two[:5] == ["torchrun", "--standalone", "--nproc_per_node", "2", "-m"]
    assert one[:4] == ["accelerate", "launch", "--gradient_accumulation_steps", "2"]
    work = prepared  # the example's folder: its work folder records the models by relative path
    # torchrun as written (the torchrun script is this interpreter's torch.distributed.run); the reference runs
    # in one process with accelerate's accumulation setting, as `accelerate launch` passes it on.
    ran = subprocess.run([sys.executable, "-m", "torch.distributed.run", *two[1:]], cwd=work, env=ENV,
                         capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr[-3000:]
    env = {**ENV, "ACCELERATE_GRADIENT_ACCUMULATION_STEPS": "2"}
    ran = subprocess.run([sys.executable, *one[4:]], cwd=work, env=env, capture_output=True, text=True,
                         timeout=600)
    assert ran.returncode == 0, ran.stderr[-3000:]

    runs = work / "work" / "runs"
    for run, layout in (("p2", {"world_size": 2, "ranks": [0, 1], "accumulation": 1}),
                        ("p1", {"world_size": 1, "ranks": [0], "accumulation": 2})):
        log = [json.loads(line) for line in (runs / run / "log.jsonl").read_text().splitlines()]
        assert len(log) == 4 and all({k: r[k] for k in layout} == layout for r in log)
        assert json.loads((runs / run / "result.json").read_text())["processes"] == layout
    p2, p1 = weights(runs / "p2"), weights(runs / "p1")
    assert p2.keys() == p1.keys() and any("lora" in k for k in p2)
    for k in p2:
        assert torch.allclose(p2[k], p1[k], rtol=1e-4, atol=1e-6), (k, (p2[k] - p1[k]).abs().max())
