"""The ``dglm`` console script on a tiny real checkpoint (random weights, no network): in-process, then as a
process (exit statuses, broken pipe, Ctrl-C, ``--version``), and on the packaged ``mini`` checkpoint."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dglm.cli import main

HEADER = re.compile(r"^--- prefix (\d+), sample (\d+) ---$", re.M)
# Fast settings for the tiny checkpoint.
FAST = ["--steps", "3", "--max-new-tokens", "4", "--no-progress"]


def blocks(stdout: str) -> list[tuple[int, int, str]]:
    """(prefix number, sample number, text) of each printed block."""
    parts = HEADER.split(stdout)
    return [(int(parts[i]), int(parts[i + 1]), parts[i + 2].strip("\n")) for i in range(1, len(parts), 3)]


def test_generate_prints_one_block_per_sample(checkpoint, capsys):
    assert main(["generate", "the game was", "-n", "2", "--seed", "0", "--checkpoint", checkpoint, *FAST]) == 0
    out = blocks(capsys.readouterr().out)
    assert [(p, s) for p, s, _ in out] == [(1, 1), (1, 2)]
    assert all(text.startswith("the game was") and len(text) > len("the game was") for _, _, text in out)


def test_input_file_and_json_output(checkpoint, capsys, tmp_path):
    prefixes = ["the match", "a king of old", "the river was"]
    (tmp_path / "in.txt").write_text(f"{prefixes[0]}\n\n{prefixes[1]}\n   \n{prefixes[2]}\n")
    target = tmp_path / "out.json"
    assert main(["generate", "--input", str(tmp_path / "in.txt"), "--json", str(target), "-n", "2", "--seed", "1",
                 "--checkpoint", checkpoint, *FAST]) == 0
    captured = capsys.readouterr()
    data = json.loads(target.read_text())
    assert [entry["prefix"] for entry in data] == prefixes
    assert all(len(entry["continuations"]) == 2 and all(isinstance(c, str) for c in entry["continuations"])
               for entry in data)
    printed = blocks(captured.out)
    assert [(p, s) for p, s, _ in printed] == [(p, s) for p in (1, 2, 3) for s in (1, 2)]
    assert [t for _, _, t in printed] == [e["prefix"] + c for e in data for c in e["continuations"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.json"]  # no temporary file left


def test_batches_cover_every_prefix(checkpoint, capsys, tmp_path):
    assert main(["generate", "a", "b", "c", "--batch-size", "2", "--seed", "0", "--checkpoint", checkpoint,
                 *FAST]) == 0
    assert [(p, s) for p, s, _ in blocks(capsys.readouterr().out)] == [(1, 1), (2, 1), (3, 1)]


def test_same_seed_same_output(checkpoint, capsys):
    argv = ["generate", "the game was", "-n", "2", "--checkpoint", checkpoint, *FAST,
            "--control", "toxicity.low() + topic('sports')"]
    outputs = []
    for seed in ("7", "7", "8"):
        assert main([*argv, "--seed", seed]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    assert outputs[0] != outputs[2]


def test_malformed_control_shows_the_caret(checkpoint, capsys):
    assert main(["generate", "the game", "--control", "toxicity.low() +", "--checkpoint", checkpoint]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dglm: error: --control:")
    assert "toxicity.low() +" in err and err.rstrip().endswith("^")
    assert "Traceback" not in err


@pytest.mark.parametrize(("flag", "value"), [("--sigma2", "2"), ("--plan-scale", "0.5"), ("--control-scale", "11")])
def test_bad_sampling_value_is_one_clean_line(checkpoint, capsys, flag, value):
    assert main(["generate", "the game", flag, value, "--checkpoint", checkpoint]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dglm: error: {flag}=") and ": Input should be " in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_plan_scale_reaches_the_decoder(checkpoint, capsys):
    args = ["generate", "the game", "--checkpoint", checkpoint, "--seed", "0", *FAST]
    assert main(args) == 0
    off = capsys.readouterr().out
    assert main([*args, "--plan-scale", "3"]) == 0
    assert capsys.readouterr().out != off


def test_control_scale_reaches_the_decoder_and_needs_a_control(checkpoint, capsys):
    args = ["generate", "the game", "--checkpoint", checkpoint, "--seed", "0", "--control", "topic('sports')",
            "--strength", "50", *FAST]
    assert main(args) == 0
    off = capsys.readouterr().out
    assert main([*args, "--control-scale", "4"]) == 0
    assert capsys.readouterr().out != off
    assert main(["generate", "the game", "--checkpoint", checkpoint, "--control-scale", "2"]) == 2
    assert "control contrast needs a --control" in capsys.readouterr().err
    assert main([*args, "--control-scale", "2", "--plan-scale", "2"]) == 2
    assert "use one decoder-side contrast at a time" in capsys.readouterr().err


def test_unknown_topic_and_missing_checkpoint_are_user_errors(checkpoint, capsys, tmp_path):
    assert main(["generate", "the game", "--control", "topic('cooking')", "--checkpoint", checkpoint, *FAST]) == 2
    assert "cooking" in capsys.readouterr().err
    assert main(["generate", "the game", "--checkpoint", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dglm: error: ") and "nowhere" in err and err.count("\n") == 1


def test_debug_shows_the_traceback(checkpoint):
    with pytest.raises(ValueError, match="sigma2"):
        main(["generate", "the game", "--sigma2", "2", "--checkpoint", checkpoint, "--debug"])


def test_no_prefix_is_a_user_error(tmp_path, capsys):
    (tmp_path / "blank.txt").write_text("\n  \n")
    assert main(["generate", "--input", str(tmp_path / "blank.txt")]) == 2
    assert "no prefix" in capsys.readouterr().err


def test_info_prints_config_and_probes(checkpoint, capsys):
    assert main(["info", "--checkpoint", checkpoint]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["probes"] == {"topic": ["sports", "music", "science"], "toxicity": ["non-toxic", "toxic"]}
    assert info["encoder"].endswith("encoder-model") and info["decoder"].endswith("decoder-model")
    assert info["config"]["diffusion"]["dim"] == 32 and info["library_version"]
    assert info["decoder_adapter"] is None


@pytest.mark.parametrize("command", [[], ["generate"], ["assets"], ["info"], ["bench"]])
def test_every_help_exits_0(command, capsys):
    assert main([*command, "--help"]) == 0
    assert "usage: dglm" in capsys.readouterr().out


def test_bad_command_line_exits_2(capsys):
    assert main(["generate", "x", "-n", "0"]) == 2
    assert "-n" in capsys.readouterr().err
    assert main([]) == 2


def test_bench_without_its_module_says_so(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "dglm.bench.run", None)  # as if dglm/bench/run.py did not exist
    assert main(["bench", "--quick"]) == 2
    assert "dglm/bench/run.py is missing" in capsys.readouterr().err
    assert main(["bench", "--help"]) == 0
    assert "usage: dglm bench" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ as a process
# The installed console script run as a user runs it. What is checked is the contract (exit status classes,
# one stderr line without a traceback), not the wording of messages.
SCRIPT = Path(sys.executable).with_name("dglm")
REPO = Path(__file__).resolve().parents[1]


def dglm_env() -> dict[str, str]:
    """The environment of the console script: this checkout's dglm, no model hub, one thread per process,
    and no transformers progress bars on stderr (they are not dglm's output; the checks below read dglm's)."""
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def run_dglm(*args: str, cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
    assert SCRIPT.is_file(), f"the console script is not installed next to {sys.executable}: pip install -e ."
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=dglm_env(), cwd=cwd,
                          timeout=timeout)


def one_clean_line(stderr: str) -> bool:
    """One line about what went wrong, after any lines saying what the CLI was doing (off a terminal)."""
    *doing, _ = stderr.strip().splitlines() or [""]
    return all(line.startswith("dglm: ") and ": error" not in line for line in doing) and "Traceback" not in stderr


def test_process_version_and_help_exit_0():
    from dglm import __version__

    version = run_dglm("--version")
    assert version.returncode == 0 and version.stdout.split() == ["dglm", __version__] and not version.stderr
    shown = run_dglm("generate", "--help")
    assert shown.returncode == 0 and "usage: dglm generate" in shown.stdout and not shown.stderr


def test_process_user_errors_exit_2_with_one_line(checkpoint_root, tmp_path):
    bad_value = run_dglm("generate", "the game", "--sigma2", "2", "--checkpoint", "ckpt", cwd=checkpoint_root)
    assert bad_value.returncode == 2 and one_clean_line(bad_value.stderr) and "sigma2" in bad_value.stderr
    assert not bad_value.stdout
    missing = run_dglm("generate", "the game", "--checkpoint", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and one_clean_line(missing.stderr) and "nowhere" in missing.stderr
    bad_line = run_dglm("generate", "the game", "-n", "0")  # argparse: usage, then the error
    assert bad_line.returncode == 2 and "Traceback" not in bad_line.stderr and "-n" in bad_line.stderr


def test_process_generate_exits_0(checkpoint_root):
    done = run_dglm("generate", "the game was", "-n", "2", "--seed", "0", "--checkpoint", "ckpt", *FAST,
                    cwd=checkpoint_root)
    assert done.returncode == 0, done.stderr
    assert [(p, s) for p, s, _ in blocks(done.stdout)] == [(1, 1), (1, 2)]


def _start_generating(checkpoint_root, tmp_path, count: int = 300) -> subprocess.Popen:
    """A generate run over ``count`` prefixes, one per batch (so it prints between batches for a while),
    once it has printed its first block."""
    (tmp_path / "many.txt").write_text("".join(f"the game {i} was\n" for i in range(count)))
    child = subprocess.Popen([str(SCRIPT), "generate", "--input", str(tmp_path / "many.txt"), "--batch-size", "1",
                              "--seed", "0", "--checkpoint", "ckpt", *FAST], cwd=checkpoint_root, env=dglm_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             # a shell's background job (`pytest &`, CI under nohup) ignores SIGINT, and a child
                             # inherits that: give it the default Ctrl-C behaviour a terminal user has
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler))
    assert HEADER.match(child.stdout.readline().rstrip("\n")), child.stderr.read() if child.poll() else ""
    return child


def test_process_broken_pipe_exits_1_quietly(checkpoint_root, tmp_path):
    """`dglm generate ... | head -n 1`: the reader goes away; dglm stops with status 1 and no traceback."""
    child = _start_generating(checkpoint_root, tmp_path)
    child.stdout.close()
    try:
        assert child.wait(timeout=300) == 1
        assert "Traceback" not in child.stderr.read()
    finally:
        child.kill()
        child.stderr.close()


def test_process_ctrl_c_exits_130_with_one_line(checkpoint_root, tmp_path):
    child = _start_generating(checkpoint_root, tmp_path)
    try:
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=300)
        assert child.returncode == 130 and one_clean_line(err), err
    finally:
        child.kill()


def test_process_info_reads_the_default_mini_checkpoint():
    """`dglm info` without --checkpoint reads the packaged `mini` checkpoint (its files only: no model)."""
    done = run_dglm("info")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert Path(info["checkpoint"]).name == "mini" and info["decoder_adapter"]["peft_type"] == "LORA"
    assert set(info["probes"]) >= {"topic", "sentiment", "toxicity"} and "sports" in info["probes"]["topic"]


@pytest.mark.assets
def test_process_assets_prints_the_default_model_folders():
    done = run_dglm("assets")
    assert done.returncode == 0, done.stderr
    paths = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert set(paths) == {"encoder", "decoder"} and all(Path(p).is_dir() for p in paths.values())
    assert (Path(paths["encoder"]) / "modules.json").is_file() and (Path(paths["decoder"]) / "config.json").is_file()


@pytest.mark.assets
def test_process_generate_uses_the_default_mini_checkpoint():
    """No --checkpoint: the packaged `mini` checkpoint with its packaged models writes text."""
    done = run_dglm("generate", "The match last night", "--seed", "0", "--steps", "2", "--max-new-tokens", "6",
                    "--no-progress", "--control", "topic('sports')")
    assert done.returncode == 0, done.stderr
    (prefix_number, sample, text), = blocks(done.stdout)
    assert (prefix_number, sample) == (1, 1) and text.startswith("The match last night")
    assert len(text) > len("The match last night")
