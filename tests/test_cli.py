"""The ``dglm`` console script, run in-process on a tiny real checkpoint (random weights, no network)."""

from __future__ import annotations

import json
import re
import sys

import pytest
import torch

from dglm.cli import main

HEADER = re.compile(r"^--- prefix (\d+), sample (\d+) ---$", re.M)
# Fast settings for the tiny checkpoint.
FAST = ["--steps", "3", "--max-new-tokens", "4", "--no-progress"]


@pytest.fixture(scope="module")
def checkpoint_root(tmp_path_factory):
    """A folder with a tiny checkpoint ``ckpt/`` and its encoder and decoder model folders next to it. The
    checkpoint records the model folders by relative path (checkpoints refuse absolute paths), so they load
    from within this folder. It ships a toxicity and a topic probe."""
    from dglm.constraints import Probe, ProbeRegistry
    from dglm.decoder import Decoder
    from dglm.encoder import SemanticEncoder
    from dglm.pipeline import DGLM
    from dglm.presets import random_pipeline

    root = tmp_path_factory.mktemp("cli")
    pipe = random_pipeline("tiny")
    enc_dir, dec_dir = root / "encoder-model", root / "decoder-model"
    pipe.encoder.model.save(str(enc_dir))
    pipe.decoder.model.save_pretrained(dec_dir)
    pipe.decoder.tokenizer.save_pretrained(dec_dir)

    encoder = SemanticEncoder(pipe.encoder.model, enc_dir.name)
    encoder.load_state_dict(pipe.encoder.state_dict())  # the standardisation statistics
    decoder = Decoder(pipe.decoder.model, pipe.decoder.tokenizer, dec_dir.name)
    g = torch.Generator().manual_seed(0)
    probes = ProbeRegistry(encoder, {
        "toxicity": Probe(torch.randn(1, encoder.dim, generator=g), torch.zeros(1), ("non-toxic", "toxic"),
                          encoder.identity, name="toxicity"),
        "topic": Probe(torch.randn(3, encoder.dim, generator=g), torch.zeros(3), ("sports", "music", "science"),
                       encoder.identity, name="topic"),
    })
    ckpt = root / "ckpt"
    DGLM(encoder, pipe.diffuser, pipe.prompt_generator, decoder, pipe.sampling, probes).save_pretrained(ckpt)
    _drop_bound_embeddings(ckpt / "prompt")
    return root


@pytest.fixture
def checkpoint(checkpoint_root, monkeypatch) -> str:
    """The tiny checkpoint's path, with the working directory set so that its model folders resolve."""
    monkeypatch.chdir(checkpoint_root)
    return str(checkpoint_root / "ckpt")


def _drop_bound_embeddings(folder) -> None:
    """Work around PromptGenerator.bind storing the decoder's embedding Parameter as an attribute (which
    registers it as a parameter, so save_pretrained writes it and from_pretrained refuses the extra key).
    A no-op once that is fixed."""
    from dglm.io import WEIGHTS_NAME, load_tensors, save_tensors

    state = load_tensors(folder / WEIGHTS_NAME)
    if "_embeddings" in state:
        del state["_embeddings"]
        save_tensors(folder / WEIGHTS_NAME, state)


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
