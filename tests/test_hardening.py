"""Issue 20 (hardening, round two) and issue 17 item 4 (a quiet, fast CLI): each case of
docs/results/robustness.md's "Round two" tables is a test here.

The request and the checkpoint are untrusted: the CLI checks everything a request sets before any model
loads, config sizes are bounded and checked against the weights file's header before any module is
allocated, adapters load from safetensors only and must match the decoder's modules.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# The tiny checkpoint of the CLI tests (and the working directory its model folders resolve from).
from test_cli import FAST, blocks

from dglm.checkpoint import checkpoint_settings
from dglm.cli import main
from dglm.cli_support import JsonOutput, UserError, read_prefixes
from dglm.config import MAX_INPUT_BYTES, MAX_PREFIX_CHARS, MAX_STEPS
from dglm.hub import PACKAGED
from dglm.io import CheckpointError, read_json
from dglm.pipeline import DGLM
from dglm.presets import preset_config, random_decoder, random_pipeline

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if the CLI gets as far as loading a checkpoint: what is checked must be checked first."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the request was checked")

    monkeypatch.setattr(DGLM, "from_pretrained", refuse)


def run_cli(capsys, *args) -> tuple[int, str, str]:
    status = main(["generate", *args])
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status, err, *needles):
    assert status == 2, err
    # After the lines saying what the CLI was doing (off a terminal, once the models load), one error line.
    *doing, last = err.splitlines() or [""]
    assert all(line.startswith("dglm: ") and not line.startswith("dglm: error") for line in doing), err
    assert last.startswith("dglm: error: ") and err.endswith("\n") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


# -- 1. --json: only a regular file or nothing, never the input, checked before the run ---------------------------

@pytest.mark.parametrize("make, kind", [
    (lambda p: os.mkfifo(p), "FIFO"),
    (lambda p: os.symlink("/dev/null", p), "symbolic link"),
    (lambda p: p.mkdir(), "folder"),
])
def test_json_refuses_what_is_not_a_regular_file_and_leaves_it_alone(tmp_path, capsys, no_model_load, make, kind):
    target = tmp_path / "out.json"
    make(target)
    before = os.lstat(target)
    status, _, err = run_cli(capsys, "the game", "--json", str(target))
    assert_one_line_error(status, err, f"is a {kind}", "accepted: a regular file")
    after = os.lstat(target)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    assert sorted(os.listdir(tmp_path)) == ["out.json"]  # no temporary file left behind


def test_json_refuses_devices_proc_and_stdout(capsys, no_model_load):
    for path, needle in [("/dev/null", "is a character device"), ("/dev/stdout", "is a symbolic link"),
                         ("/proc/dglm-out.json", "cannot create a file in /proc"), ("", "give the name")]:
        status, _, err = run_cli(capsys, "the game", "--json", path)
        assert_one_line_error(status, err, needle)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_json_never_overwrites_the_input(tmp_path, capsys, no_model_load):
    src = tmp_path / "prefixes.txt"
    src.write_text("the game\n")
    os.link(src, tmp_path / "alias.txt")  # another name of the same file
    for target in (src, tmp_path / "alias.txt", tmp_path / "." / "prefixes.txt"):
        status, _, err = run_cli(capsys, "--input", str(src), "--json", str(target))
        assert_one_line_error(status, err, "is the --input file")
    assert src.read_text() == "the game\n"


def test_json_replaces_a_regular_file_keeping_its_mode(checkpoint, tmp_path, capsys):  # noqa: F811
    target = tmp_path / "out.json"
    target.write_text("old")
    target.chmod(0o640)
    assert main(["generate", "the game", "--json", str(target), "--checkpoint", checkpoint, *FAST]) == 0
    assert json.loads(target.read_text())[0]["prefix"] == "the game"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
    new = tmp_path / "new.json"
    assert main(["generate", "the game", "--json", str(new), "--checkpoint", checkpoint, *FAST]) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(new).st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.json", "out.json"]


def test_json_reserved_file_is_removed_when_the_run_fails(checkpoint, tmp_path, capsys):  # noqa: F811
    status, _, err = run_cli(capsys, "the game", "--control", "topic('cooking')", "--json",
                             str(tmp_path / "out.json"), "--checkpoint", checkpoint, *FAST)
    assert_one_line_error(status, err, "cooking")
    assert list(tmp_path.iterdir()) == []


# -- 2. --input: lines end at \n only, BOM dropped, bounded ------------------------------------------------------

def test_input_splits_at_newlines_only_and_drops_the_bom(tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes("\ufeffone\x0ctwo\r\nthree\x1cfour\x85five\u2028six\n\n  \nseven".encode())
    assert read_prefixes(["first"], str(path)) == ["first", "one\x0ctwo", "three\x1cfour\x85five\u2028six", "seven"]


def test_input_lines_with_separators_are_one_prefix_each_end_to_end(checkpoint, tmp_path, capsys):  # noqa: F811
    path = tmp_path / "in.txt"
    path.write_bytes("\ufeffthe game\x0cwas\nthe\u2028match\n".encode())
    assert main(["generate", "--input", str(path), "--checkpoint", checkpoint, *FAST]) == 0
    out = blocks(capsys.readouterr().out)
    assert [b[:2] for b in out] == [(1, 1), (2, 1)]
    assert out[0][2].startswith("the game\x0cwas")


@pytest.mark.parametrize("source, needle", [
    ("/dev/zero", f"more than {MAX_INPUT_BYTES} bytes"),
    ("/", "cannot read it"),
    ("latin1", "not UTF-8 text (byte 0xe9 at offset 3)"),
    ("long", f"has {MAX_PREFIX_CHARS + 1} characters; the limit is {MAX_PREFIX_CHARS}"),
])
def test_input_that_is_endless_unreadable_or_too_long_is_refused(tmp_path, capsys, no_model_load, source, needle):
    if source == "latin1":
        source = tmp_path / "in.txt"
        source.write_bytes("caf\u00e9\n".encode("latin-1"))
    elif source == "long":
        source = tmp_path / "in.txt"
        source.write_text("a" * (MAX_PREFIX_CHARS + 1) + "\nshort\n")
    status, _, err = run_cli(capsys, "--input", str(source))
    assert_one_line_error(status, err, needle)


def test_too_many_rows_are_refused(capsys, no_model_load):
    status, _, err = run_cli(capsys, "a", "b", "-n", "60000")
    assert_one_line_error(status, err, "2 prefixes x -n 60000 = 120000 continuations; the limit of one run is")


def test_invalid_utf8_on_the_command_line_is_refused_before_loading(capsys, no_model_load):
    bad = b"caf\xe9".decode("utf-8", "surrogateescape")  # what Python makes of an invalid byte in argv
    status, _, err = run_cli(capsys, bad)
    assert_one_line_error(status, err, "PREFIX 1 is not valid UTF-8: byte 0xe9 at character 3")
    status, _, err = run_cli(capsys, "the game", "--control", f"near('{bad}')")
    assert_one_line_error(status, err, "--control is not valid UTF-8")


# -- 3, 6, 9, 10: settings that cannot be honoured are refused, not ignored ----------------------------------

@pytest.mark.parametrize("args, needle", [
    (["--repetition-penalty", "0"], "--repetition-penalty=0.0: Input should be greater than 0"),
    (["--repetition-penalty", "-1"], "--repetition-penalty=-1.0: Input should be greater than 0"),
    (["--top-p", "nan"], "--top-p=nan: Input should be a finite number"),
    (["--top-p", "1.5"], "--top-p=1.5: Input should be less than or equal to 1"),
    (["--top-p", "0"], "--top-p=0.0: Input should be greater than 0"),
    (["--temperature", "1e-45"], "--temperature=1e-45: Input should be greater than or equal to 0.01"),
    (["--temperature", "inf"], "--temperature=inf: Input should be a finite number"),
    (["--strength", "5"], "--strength 5: guidance strength needs a --control"),
    (["--steps", "1000000000"], f"--steps=1000000000: Input should be less than or equal to {MAX_STEPS}"),
    (["--steps", "1000000"], f"--steps=1000000: Input should be less than or equal to {MAX_STEPS}"),
    (["--cfg-scale", "inf"], "--cfg-scale=inf: Input should be a finite number"),
    (["--max-new-tokens", "100000000"], "--max-new-tokens=100000000: Input should be less than or equal to"),
    (["--seed", str(2**63)], "--seed=9223372036854775808: Input should be less than 9223372036854775808"),
    (["--seed", "-1"], "--seed=-1: Input should be greater than or equal to 0"),
    (["--device", "meta"], "--device 'meta': dglm runs on cpu or cuda"),
    (["--device", "xla"], "--device 'xla'"),
    (["--device", "mps"], "--device 'mps'"),
    (["--control", "1e308*near('a') + 1e308*near('a')"], "the weights of near('a') in 1e+308*near('a') + 1e+308*near('a') overflow"),
    (["--control", "3e38*near('game') + topic('sports')"], "weights x strength add up to 3e+40; the limit is 3.4e+38"),
])
def test_settings_that_cannot_be_honoured_are_refused_before_loading(capsys, no_model_load, args, needle):
    status, _, err = run_cli(capsys, "the game", *args)
    assert_one_line_error(status, err, needle)


def test_largest_seed_runs_every_batch(checkpoint, capsys):  # noqa: F811
    seed = str(2**63 - 1)  # the second batch's seed wraps to 0 instead of overflowing
    assert main(["generate", "a", "b", "--batch-size", "1", "--seed", seed, "--checkpoint", checkpoint, *FAST]) == 0
    assert [b[:2] for b in blocks(capsys.readouterr().out)] == [(1, 1), (2, 1)]


def test_api_refuses_what_the_cli_refuses():
    pipe = random_pipeline("tiny")
    fast = {"steps": 2, "max_new_tokens": 2}
    for kwargs, match in [({"repetition_penalty": 0}, "repetition_penalty=0: Input should be greater than 0"),
                          ({"top_p": 1.5}, "top_p=1.5"), ({"top_p": float("nan")}, "top_p=nan"),
                          ({"temperature": 1e-45}, "temperature=1e-45"),
                          ({"return_dict_in_generate": True}, "return_dict_in_generate=True is not supported"),
                          ({"steps": 10**6}, f"steps=1000000: Input should be less than or equal to {MAX_STEPS}")]:
        with pytest.raises(ValueError, match=match.replace("(", r"\(").replace("[", r"\[")):
            pipe.generate(["the game"], **{**fast, **kwargs})


# -- exit codes: internal errors are 1 with a --debug hint --------------------------------------------------------

def test_an_internal_error_exits_1_with_a_hint(checkpoint_root, checkpoint, tmp_path, capsys):  # noqa: F811
    import shutil

    # A decoder folder whose config.json nests 100,000 brackets: transformers itself fails (RecursionError).
    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoint, ckpt)
    shutil.copytree(checkpoint_root / "decoder-model", tmp_path / "decoder-model")
    shutil.copytree(checkpoint_root / "encoder-model", tmp_path / "encoder-model")
    (tmp_path / "decoder-model" / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    os.chdir(tmp_path)
    status, _, err = run_cli(capsys, "the game", "--checkpoint", str(ckpt), *FAST)
    last = err.splitlines()[-1]  # after the lines saying what the CLI was doing
    assert status == 1 and err.count("dglm: internal error") == 1 and "Traceback" not in err, err
    assert last.startswith("dglm: internal error: ") and "rerun with --debug" in last


def test_nested_json_in_a_checkpoint_is_a_one_line_error(checkpoint, tmp_path, capsys):  # noqa: F811
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoint, ckpt)
    (ckpt / "encoder" / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    assert main(["info", "--checkpoint", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert "encoder/config.json is not valid JSON: nested too deeply" in err and err.count("\n") == 1
    (ckpt / "dglm.json").write_text("[" * 100_000)
    with pytest.raises(CheckpointError, match="nested too deeply"):
        read_json(ckpt / "dglm.json")


# -- 7. checkpoint configs: bounded, and checked against the weights file before allocating ----------------

@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hard") / "ckpt"
    random_pipeline("tiny").save_pretrained(folder)
    return folder


def edited(saved, tmp_path, component, **fields):
    import shutil

    folder = tmp_path / "ckpt"
    shutil.copytree(saved, folder)
    path = folder / component / "config.json" if component != "dglm.json" else folder / "dglm.json"
    data = json.loads(path.read_text())
    if component == "dglm.json":
        data["sampling"] = {**data["sampling"], **fields}
    else:
        data.update(fields)
    path.write_text(json.dumps(data))  # json.dumps writes inf as Infinity, which json.loads reads back
    return folder


@pytest.mark.parametrize("component, fields, match", [
    ("diffusion", {"width": 64}, r"weights in .*diffusion do not match the config: .*\(8, 64\) in the config"),
    ("diffusion", {"width": 65536}, r"asks for 201,882,799,240 parameters; the limit is 1,073,741,824"),
    ("diffusion", {"width": 10**12}, "width\n  Input should be less than or equal to 65536"),
    ("diffusion", {"num_tokens": 10**9}, "num_tokens\n  Input should be less than or equal to 1024"),
    ("diffusion", {"mlp_ratio": 1e9}, "mlp_ratio\n  Input should be less than or equal to 64"),
    ("diffusion", {"mlp_ratio": math.inf}, "mlp_ratio\n  Input should be a finite number"),
    ("diffusion", {"depth": 10**6}, "depth\n  Input should be less than or equal to 128"),
    ("diffusion", {"depth": 128, "width": 16384}, r"asks for [\d,]+ parameters; the limit is 1,073,741,824"),
    ("prompt", {"num_soft_tokens": 10**9}, "num_soft_tokens\n  Input should be less than or equal to 1024"),
    ("prompt", {"width": 4096, "heads": 4}, r"weights in .*prompt do not match the config"),
    ("dglm.json", {"steps": 10**9}, "sampling.steps\n  Input should be less than or equal to 10000"),
    ("dglm.json", {"guidance_samples": 10**9}, "sampling.guidance_samples\n  Input should be less than or equal"),
    ("dglm.json", {"cfg_scale": math.inf}, "sampling.cfg_scale\n  Input should be a finite number"),
    ("dglm.json", {"strength": 1e300}, "sampling.strength\n  Input should be less than or equal to 34028234"),
])
def test_checkpoint_configs_are_bounded_and_match_their_weights(saved, tmp_path, component, fields, match):
    folder = edited(saved, tmp_path, component, **fields)
    pipe = random_pipeline("tiny")
    with pytest.raises(CheckpointError, match=match):
        DGLM.from_pretrained(folder, encoder=pipe.encoder, decoder=pipe.decoder)


@pytest.mark.parametrize("recorded", ["./evil_model", ".", "a/b/c", "\x00", "a/./b", "org/.hidden/x", " gpt2"])
def test_recorded_ids_that_are_not_hub_ids_are_refused(saved, tmp_path, recorded):
    import shutil

    folder = tmp_path / "ckpt"
    shutil.copytree(saved, folder)
    (tmp_path / "evil_model").mkdir()
    meta = json.loads((folder / "dglm.json").read_text())
    (folder / "dglm.json").write_text(json.dumps({**meta, "decoder": recorded}))
    os.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=r"a path outside the checkpoint folder; accepted: a hub id"):
        DGLM.from_pretrained(folder, encoder=random_pipeline("tiny").encoder)


# The stated limit: loading any of these configs adds at most this much to the process's peak memory
# (the tiny checkpoint's weights are a few hundred KB), and fails with CheckpointError unless the config is
# the saved one.
PEAK_LIMIT_MIB = 64

# The process's peak resident memory (VmHWM; ru_maxrss would carry the parent's peak over a fork + exec).
PEAK_KIB = """def peak_kib():
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])"""

_PROPERTY_CHILD = r"""
import json, math, shutil, sys, tempfile
from pathlib import Path
from hypothesis import HealthCheck, given, settings, strategies as st
from dglm.diffusion import SemanticDiffuser
from dglm.io import CheckpointError
from dglm.presets import random_pipeline
from dglm.prompt import PromptGenerator

root = Path(tempfile.mkdtemp())
random_pipeline("tiny").save_pretrained(root / "ckpt")
originals = {c: json.loads((root / "ckpt" / c / "config.json").read_text()) for c in ("diffusion", "prompt")}
classes = {"diffusion": SemanticDiffuser, "prompt": PromptGenerator}
shapes = {c: {k: v.shape for k, v in classes[c].from_pretrained(root / "ckpt" / c).state_dict().items()}
          for c in classes}
big = st.one_of(st.integers(-2, 2**70), st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(
    [0, 1, 2, 3, 4, 8, 16, 32, 64, 65536, 10**9, 10**12, "Infinity", None, [32], "4", True]))
fields = ["dim", "num_tokens", "token_features", "width", "depth", "heads", "mlp_ratio", "out_dim",
          "num_soft_tokens", "vocab_size"]
base = peak_kib()
outcomes = {"refused": 0, "loaded": 0}

@settings(max_examples=int(sys.argv[1]), deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(st.sampled_from(["diffusion", "prompt"]), st.dictionaries(st.sampled_from(fields), big, max_size=4))
def check(component, edit):
    folder = root / "ckpt" / component
    config = {**originals[component], **{k: v for k, v in edit.items() if k in originals[component]}}
    (folder / "config.json").write_text(json.dumps(config))
    try:
        module = classes[component].from_pretrained(folder)
        # Only a config that builds exactly the saved shapes loads (e.g. vocab_size with a linear head).
        assert {k: v.shape for k, v in module.state_dict().items()} == shapes[component], (component, edit)
        outcomes["loaded"] += 1
    except CheckpointError:
        outcomes["refused"] += 1

check()
for c in originals:
    (root / "ckpt" / c / "config.json").write_text(json.dumps(originals[c]))
grown = (peak_kib() - base) / 1024
print(json.dumps({**outcomes, "peak_growth_mib": grown}))
"""


def test_property_checkpoint_configs_never_allocate_beyond_their_weights():
    """Hypothesis over diffusion and prompt configs (sizes up to 2**70, floats with NaN/inf, wrong types),
    in a fresh process so that its peak memory measures what loading added: every config other than the
    saved shapes is refused with a CheckpointError (never a RuntimeError from a failed allocation, an
    OverflowError or a traceback), and the peak grows by less than PEAK_LIMIT_MIB."""
    result = subprocess.run([sys.executable, "-c", PEAK_KIB + "\n" + _PROPERTY_CHILD, "150"], capture_output=True, text=True,
                            cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    print("checkpoint-config property:", outcome)  # docs/results/robustness.md quotes it (pytest -s)
    assert outcome["refused"] > 100 and outcome["peak_growth_mib"] < PEAK_LIMIT_MIB, outcome


# -- 5, 11: adapters: safetensors only, keys and shapes must match the decoder --------------------------------

@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    folder = tmp_path_factory.mktemp("adapter") / "decoder_adapter"
    decoder = random_decoder(preset_config("tiny").decoder)
    decoder.add_adapter(rank=2)
    decoder.save_adapter(folder)
    return folder


def adapter_copy(adapter, tmp_path) -> Path:
    import shutil

    shutil.copytree(adapter, tmp_path / "a")
    return tmp_path / "a"


def fresh_decoder():
    return random_decoder(preset_config("tiny").decoder)


def test_a_matching_adapter_loads(adapter):
    decoder = fresh_decoder()
    decoder.load_adapter(adapter)
    assert decoder.has_adapter


def test_adapter_with_only_an_unrelated_key_is_refused(adapter, tmp_path):
    from safetensors.torch import save_file

    folder = adapter_copy(adapter, tmp_path)
    save_file({"unrelated.weight": torch.zeros(2, 2)}, str(folder / "adapter_model.safetensors"))
    decoder = fresh_decoder()
    with pytest.raises(CheckpointError, match="holds 'unrelated.weight', which is not the LoRA weight of a module"):
        decoder.load_adapter(folder)
    assert not decoder.has_adapter


def test_adapter_missing_modules_or_with_wrong_shapes_is_refused(adapter, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = adapter_copy(adapter, tmp_path)
    state = load_file(str(folder / "adapter_model.safetensors"))
    save_file(dict(list(state.items())[:2]), str(folder / "adapter_model.safetensors"))
    with pytest.raises(CheckpointError, match=r"has no LoRA weights for 5 of the 6 modules it targets \(\['c_attn', 'c_proj'\]\)"):
        fresh_decoder().load_adapter(folder)
    key = next(k for k in state if "lora_A" in k)
    save_file({**state, key: torch.zeros(3, state[key].shape[1])}, str(folder / "adapter_model.safetensors"))
    with pytest.raises(CheckpointError, match=r"A \(3, 32\).*need A \(2, 32\)"):
        fresh_decoder().load_adapter(folder)


@pytest.mark.parametrize("edit, match", [
    ({"r": 10**9}, "r=1000000000: Input should be less than or equal to 4096"),
    ({"r": 4}, r"need A \(4, 32\)"),  # a rank the weights do not have: refused before peft allocates it
    ({"peft_type": "PREFIX_TUNING"}, "peft_type='PREFIX_TUNING'"),
    ({"target_modules": ["nothing_here"]}, "not the LoRA weight of a module the adapter targets"),
    ({"lora_alpha": math.inf}, "lora_alpha=inf: Input should be a finite number"),
])
def test_adapter_configs_are_bounded_and_checked_against_the_weights(adapter, tmp_path, edit, match):
    folder = adapter_copy(adapter, tmp_path)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, **edit}))
    with pytest.raises(CheckpointError, match=match):
        fresh_decoder().load_adapter(folder)


def test_a_lone_adapter_bin_is_refused_before_peft_unpickles_it(adapter, tmp_path):
    folder = adapter_copy(adapter, tmp_path)
    (folder / "adapter_model.safetensors").unlink()

    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    (folder / "adapter_model.bin").write_bytes(pickle.dumps(Boom(), protocol=2))
    with pytest.raises(CheckpointError, match=r"adapter_model.safetensors is missing \(found \['adapter_model.bin'\]: "
                                              r"only safetensors adapters are loaded, never pickles\)"):
        fresh_decoder().load_adapter(folder)
    assert not (tmp_path / "pwned").exists()


# -- property: the CLI's options -----------------------------------------------------------------------------

NUMBERS = st.one_of(st.sampled_from(["0", "-1", "1", "0.5", "1.5", "2", "20", "nan", "inf", "-inf", "1e-45",
                                     "1e308", "1e9", str(2**63 - 1), str(2**63), "x", "", "1e", "0x10"]),
                    st.integers(-2**70, 2**70).map(str), st.floats().map(repr))
OPTIONS = st.dictionaries(st.sampled_from(["--steps", "--cfg-scale", "--sigma2", "--seed", "--max-new-tokens",
                                           "--top-p", "--temperature", "--repetition-penalty", "--plan-scale",
                                           "--control-scale", "--strength", "-n", "--batch-size"]), NUMBERS,
                          max_size=5)
EXTRA = st.lists(st.sampled_from([["--sampler", "ddim"], ["--sampler", "euler"], ["--control", "topic('sports')"],
                                  ["--control", "toxicity.low() +"], ["--control", "1e308*near('a')"],
                                  ["--device", "cpu"], ["--device", "meta"], ["--device", "cuda:7"],
                                  ["--json", "/dev/null"], ["--json", ""], ["--input", "/dev/zero"],
                                  ["--no-progress"], ["--progress"]]), max_size=3)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(options=OPTIONS, extra=EXTRA)
def test_property_cli_options_never_leave_a_traceback(monkeypatch, capsys, options, extra):
    """Hypothesis over the generate command's options (numbers of every kind, good and bad choices, files
    that must be refused): main never raises, every refusal is one ``dglm: error:`` line with status 2, and
    whatever passes the checks is within the config bounds when it reaches the model loading step (which
    is replaced here by a recorder, so each example costs milliseconds; real runs are tested above)."""
    import dglm.cli as cli

    reached = []
    monkeypatch.setattr(cli, "_generate_all", lambda args, prefixes, control, settings, *rest:
                        reached.append((args, settings)) or [])
    args = ["the game", *[x for k, v in options.items() for x in (k, v)], *[x for pair in extra for x in pair]]
    status, _, err = run_cli(capsys, *args)
    assert "Traceback" not in err
    if status == 0:
        ((a, given),) = reached
        merged = checkpoint_settings(PACKAGED / "mini").apply(given.overrides())  # its defaults, then the flags
        assert 0 < merged.top_p <= 1 and merged.repetition_penalty > 0 and merged.max_new_tokens >= 1
        assert merged.seed is None or 0 <= merged.seed < 2**63
        assert a.control is not None or not {"strength", "control_scale"} & given.model_fields_set
    else:
        # One dglm line, or argparse's usage and its one "dglm generate: error:" line for a malformed option.
        assert status == 2 and not reached, err
        assert err.startswith("dglm: error: ") or err.splitlines()[-1].startswith("dglm generate: error: "), err


# -- issue 17 item 4: a fast, quiet CLI ------------------------------------------------------------------------

def test_help_and_version_import_no_heavy_package():
    code = ("import sys; from dglm.cli import main\n"
            "for argv in (['--help'], ['--version'], ['generate', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            # pydantic is imported: generate's options are generated from GenerationConfig's fields (issue 16).
            "heavy = ('torch', 'transformers', 'sentence_transformers', 'peft', 'numpy')\n"
            "print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0 and result.stderr.strip() == "[]", result.stderr
    assert "usage: dglm" in result.stdout and "dglm 0." in result.stdout


def test_generate_with_stderr_not_a_terminal_prints_no_bars_or_warnings(checkpoint_root):  # noqa: F811
    """A whole process, stderr a pipe: no "Loading weights" bars, no peft/transformers warnings."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default"}
    args = [sys.executable, "-m", "dglm", "generate", "the game", "--checkpoint", "ckpt", "--steps", "2",
            "--max-new-tokens", "3", "--seed", "0"]
    result = subprocess.run(args, capture_output=True, text=True, cwd=checkpoint_root, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    # Only dglm's own lines saying what it is doing (issue 32): no bars, no third-party warnings.
    assert all(line.startswith("dglm: ") for line in result.stderr.splitlines()), result.stderr
    assert "Loading weights" not in result.stderr and "Warning" not in result.stderr
    assert result.stdout.startswith("--- prefix 1, sample 1 ---")


def test_user_error_and_read_prefixes_agree():
    with pytest.raises(UserError, match="no prefix given"):
        read_prefixes([], None)
    assert isinstance(UserError("x"), ValueError)


def test_peak_memory_probe_works():
    """The property test's memory measure is real: allocating and touching 128 MiB in a child raises its
    peak by at least that much (so a config that slipped through would be seen)."""
    code = (f"import torch\n{PEAK_KIB}\nb = peak_kib()\nx = torch.ones(32 * 2**20)\nprint((peak_kib() - b) / 1024)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert float(result.stdout) >= 120, result.stdout


def test_json_output_is_checked_again_before_the_rename(tmp_path):
    out = JsonOutput(str(tmp_path / "o.json"))
    os.mkfifo(tmp_path / "o.json")  # swapped in while the run was going
    with pytest.raises(UserError, match="is a FIFO"):
        out.write([])
    assert stat.S_ISFIFO(os.lstat(tmp_path / "o.json").st_mode)
    assert sorted(os.listdir(tmp_path)) == ["o.json"]
