"""Never lose a user's file: every writer of dglm against existing targets, inputs inside the work folder, reruns,
resumes, bounds and concurrent runs (issue 28; the rows of docs/results/robustness.md, "Write safety").

The `dglm train` rows run the real command on a tiny decoder and encoder built from configs (as in
docs/training.md), in a project folder holding the user's texts and models. After every refused command each
file that existed before is byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dglm import DGLM, Controller, near
from dglm.io import MARKER, OutputError, check_output_file, folder_lock, output_record, write_output
from dglm.presets import random_pipeline
from dglm.serving import export_adapter, vllm_requests
from dglm.training.cli import main as train_main
from dglm.training.data import WindowSet
from dglm.training.loop import save_state

ROOT = Path(__file__).resolve().parents[1]
TOPICS = {"sport": "the team won the match after a late goal in the second half of the season".split(),
          "food": "bake the bread in a hot oven with flour salt and a little sugar for dinner".split()}


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (links not followed)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def kept(before: dict[str, str], folder: Path) -> list[str]:
    """The files of ``before`` that are gone or changed (new files, such as a lock file, are fine)."""
    after = digest(folder)
    return [f for f, h in before.items() if after.get(f) != h]


# -- a project folder: the user's texts and models, and a prepared and briefly trained work folder ------------
@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from tokenizers import ByteLevelBPETokenizer
    from transformers import (
        BertConfig,
        BertModel,
        BertTokenizerFast,
        GPT2Config,
        GPT2LMHeadModel,
        PreTrainedTokenizerFast,
    )

    root = tmp_path_factory.mktemp("project")
    rng = np.random.default_rng(0)
    (root / "data" / "train").mkdir(parents=True)
    for i in range(24):
        words = TOPICS[list(TOPICS)[i % 2]]
        text = " ".join(" ".join(rng.choice(words, 9)).capitalize() + "." for _ in range(8))
        (root / "data" / "train" / f"doc{i:02d}.txt").write_text(text)
    texts = [p.read_text() for p in sorted((root / "data" / "train").glob("*.txt"))]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=300, special_tokens=["<|endoftext|>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tok.save_pretrained(root / "decoder")
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=16, n_layer=1, n_head=2,
                               bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
                    ).save_pretrained(root / "decoder")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted({w for ws in TOPICS.values() for w in ws})
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(root / "bert")
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(root / "bert")
    bert = Transformer(str(root / "bert"), max_seq_length=64)
    SentenceTransformer(modules=[bert, Pooling(bert.get_embedding_dimension(), "mean"), Normalize()]).save(
        str(root / "encoder"))
    shutil.rmtree(root / "bert")
    # Another decoder, with another tokenizer (a character-level one).
    other = ByteLevelBPETokenizer()
    other.train_from_iterator(texts, vocab_size=270, special_tokens=["<|endoftext|>"])
    other_tok = PreTrainedTokenizerFast(tokenizer_object=other, eos_token="<|endoftext|>",
                                        pad_token="<|endoftext|>")
    other_tok.save_pretrained(root / "other_decoder")
    GPT2LMHeadModel(GPT2Config(vocab_size=len(other_tok), n_positions=64, n_embd=16, n_layer=1, n_head=2)
                    ).save_pretrained(root / "other_decoder")
    work = root / "runs_here" / "work"
    common = ["--work", str(work)]
    assert train(["prepare", *common, "--data", str(root / "data" / "train"), "--encoder", str(root / "encoder"),
                  "--decoder", str(root / "decoder"), "--window", "16", "--max-prefix", "12", "--eval-prefix",
                  "8", "--validation-fraction", "0.25", "--batch-size", "64"]) == 0
    assert train(["diffusion", *common, "--preset", "tiny", "--steps", "2", "--batch-size", "8", "--warmup", "1",
                  "--save-every", "1"]) == 0
    assert train(["prompt", *common, "--run", "r1", "--preset", "tiny", "--steps", "2", "--batch-size", "2",
                  "--warmup", "1", "--save-every", "1", "--eval-every", "2", "--eval-limit", "4",
                  "--mixed-precision", "no"]) == 0
    return root


def train(argv: list[str]) -> int:
    return train_main(argv)


# -- `dglm train`: refusals that lose nothing ---------------------------------------------------------------
def _fifo(tmp: Path) -> str:
    os.mkfifo(tmp / "pipe.json")
    return str(tmp / "pipe.json")


def _thesis(tmp: Path) -> str:
    (tmp / "out" / "mydocs").mkdir(parents=True)
    (tmp / "out" / "mydocs" / "thesis.txt").write_text("four years of work")
    return str(tmp / "out")


def _user_encoder_folder(tmp: Path) -> str:
    (tmp / "encoder").mkdir()
    (tmp / "encoder" / "config.json").write_text('{"model_type": "bert"}')
    (tmp / "encoder" / "notes.md").write_text("my encoder notes")
    return str(tmp)


def _jsonl(content: str):
    def make(tmp: Path) -> str:
        (tmp / "docs.jsonl").write_text(content)
        return str(tmp / "docs.jsonl")
    return make


def _card_folder(tmp: Path) -> str:
    (tmp / "card").mkdir()
    return str(tmp / "card")


def _my_json(tmp: Path) -> str:
    (tmp / "mine.json").write_text('{"my": "numbers"}')
    return str(tmp / "mine.json")


def _a_file(tmp: Path) -> str:
    (tmp / "notes.txt").write_text("not a folder")
    return str(tmp / "notes.txt")


PREPARE = ["--encoder", "{root}/encoder", "--decoder", "{root}/decoder", "--window", "16", "--max-prefix", "12",
           "--eval-prefix", "8", "--validation-fraction", "0.25"]
CASES = [
    # (case, stage and options ({root}: the project, {work}: its work folder, {x}: what `make` returned), make,
    #  the refusal's words)
    ("prepare --work . over the user's texts and encoder",
     ["prepare", "--work", "{root}", "--data", "{root}/data/train", *PREPARE], None,
     r"--data .*data/train is .*data/train, which this stage writes"),
    ("prepare: --encoder is WORK/encoder",
     ["prepare", "--work", "{root}", "--data", "{x}", "--encoder", "{root}/encoder", "--decoder", "{root}/decoder"],
     _jsonl('{"text": "a b c"}\n'), r"--encoder .*encoder is .*encoder, which this stage writes"),
    ("prepare: WORK/encoder holds the user's files", ["prepare", "--work", "{x}", "--data", "{root}/data/train",
                                                      *PREPARE], _user_encoder_folder,
     r"--work/encoder .* holds files dglm did not write \(config.json, notes.md\)"),
    ("assemble --out DIR holding mydocs/thesis.txt", ["assemble", "--work", "{work}", "--run", "r1", "--out", "{x}"],
     _thesis, r"--out .*out holds files dglm did not write \(mydocs/thesis.txt\)"),
    ("assemble --out WORK", ["assemble", "--work", "{work}", "--run", "r1", "--out", "{work}"], None,
     r"--work/\S+ .* lies inside .*work, which this stage writes \(--out\)"),
    ("assemble --out WORK/runs", ["assemble", "--work", "{work}", "--run", "r1", "--out", "{work}/runs"], None,
     r"--work/runs .* is .*runs, which this stage writes \(--out\)"),
    ("assemble --out ..", ["assemble", "--work", "{work}", "--run", "r1", "--out", "{work}/../.."], None,
     r"lies inside .*, which this stage writes \(--out\)"),
    ("assemble --out a file", ["assemble", "--work", "{work}", "--run", "r1", "--out", "{x}"], _a_file,
     r"--out .*notes.txt is a file; a checkpoint folder never replaces a file"),
    ("assemble --card /dev/zero", ["assemble", "--work", "{work}", "--run", "r1", "--out", "{x}/ckpt", "--card",
                                   "/dev/zero"], str, r"--card /dev/zero is a character device"),
    ("assemble --card a folder", ["assemble", "--work", "{work}", "--run", "r1", "--out", "{t}/ckpt", "--card",
                                  "{x}"], _card_folder, r"--card .*card is a folder"),
    ("evaluate --out-json WORK/prepare.json", ["evaluate", "--work", "{work}", "--run", "r1", "--out-json",
                                               "{work}/prepare.json"], None,
     r"--work/prepare.json .* is .*prepare.json, which this stage writes"),
    ("evaluate --out-json another JSON file", ["evaluate", "--work", "{work}", "--run", "r1", "--out-json", "{x}"],
     _my_json, r"--out-json .*mine.json exists and is not dglm's own output"),
    ("evaluate --out-json into the decoder", ["evaluate", "--work", "{work}", "--run", "r1", "--out-json",
                                              "{root}/decoder/config.json"], None,
     r"--out-json .*config.json lies inside the input --decoder"),
    ("evaluate --out-json FIFO", ["evaluate", "--work", "{work}", "--run", "r1", "--out-json", "{x}"], _fifo,
     r"--out-json .*pipe.json is a FIFO"),
    ("evaluate --out-json /dev/full", ["evaluate", "--work", "{work}", "--run", "r1", "--out-json", "/dev/full"],
     None, r"--out-json /dev/full is a character device"),
    ("evaluate --out-json a folder", ["evaluate", "--work", "{work}", "--run", "r1", "--out-json", "{x}"], str,
     r"--out-json .* is a folder"),
    ("prepare again with another --window", ["prepare", "--work", "{work}", "--data", "{root}/data/train",
                                             *PREPARE, "--window", "12"], None,
     r"was prepared with other settings \(window=16, now 12\)"),
    ("prepare again with other --data", ["prepare", "--work", "{work}", "--data", "{x}", *PREPARE],
     _jsonl('{"text": "a b c"}\n'), r"was prepared with other settings \(data="),
    ("prompt: resume with another --width", ["prompt", "--work", "{work}", "--run", "r1", "--preset", "tiny",
                                             "--width", "24", "--steps", "4"], None,
     r"runs/r1 was trained with another generator \(width=\d+, now 24"),
    ("prompt: resume with another --lora-rank", ["prompt", "--work", "{work}", "--run", "r1", "--preset", "tiny",
                                                 "--steps", "4", "--lora-rank", "2"], None,
     r"trained with lora_rank=0, now 2"),
    ("diffusion: resume with another --depth", ["diffusion", "--work", "{work}", "--preset", "tiny", "--depth", "3",
                                                "--steps", "4"], None,
     r"runs/diffusion/state was saved by a run with other network settings"),
    ("prompt --lr inf", ["prompt", "--work", "{work}", "--run", "r2", "--lr", "inf"], None,
     r"training.lr=inf; accepted: a finite number"),
    ("evaluate --sigma2 nan", ["evaluate", "--work", "{work}", "--run", "r1", "--sigma2", "nan"], None,
     r"sigma2.*finite number"),
    ("evaluate --sigma2 2", ["evaluate", "--work", "{work}", "--run", "r1", "--sigma2", "2"], None,
     r"2.0 is not a variance in \[0, 1\]"),
    ("prompt --batch-size 1e9", ["prompt", "--work", "{work}", "--run", "r2", "--batch-size", "1000000000"], None,
     r"training.batch_size=1000000000 is above the limit 65,536"),
    ("prompt --lora-rank 1e6", ["prompt", "--work", "{work}", "--run", "r2", "--lora-rank", "1000000"], None,
     r"training.lora_rank=1000000 is above the limit 1,024"),
    ("prepare --per-window 1e9", ["prepare", "--work", "{t}/w", "--data", "{root}/data/train", *PREPARE,
                                  "--per-window", "1000000000"], str, r"per_window=1000000000 is above the limit 64"),
    ("--run diffusion", ["prompt", "--work", "{work}", "--run", "diffusion"], None,
     r"run='diffusion' is the diffusion stage's folder"),
    ("--run ../escape", ["prompt", "--work", "{work}", "--run", "../escape"], None, r"run\s+String should match"),
    ("--work a file", ["evaluate", "--work", "{x}", "--run", "r1"], _a_file, r"--work .*notes.txt is a file"),
    ("unknown --encoder", ["prepare", "--work", "{t}/w", "--data", "{root}/data/train", "--encoder",
                           "{t}/no-such-encoder", "--decoder", "{root}/decoder"], None,
     r"cannot load the encoder|no-such-encoder"),
    ("empty JSONL", ["prepare", "--work", "{t}/w", "--data", "{x}", *PREPARE[:4]], _jsonl(""), r"holds no JSON record"),
    ("a JSONL record that is a list", ["prepare", "--work", "{t}/w", "--data", "{x}", *PREPARE[:4]],
     _jsonl('{"text": "a"}\n[1, 2]\n'), r"line 2 of .* is a JSON list"),
    ("a JSONL record that is a number", ["prepare", "--work", "{t}/w", "--data", "{x}", *PREPARE[:4]],
     _jsonl("3\n"), r"line 1 of .* is a JSON int"),
    ("no validation documents", ["prepare", "--work", "{t}/w", "--data", "{x}", *PREPARE[:4],
                                 "--validation-fraction", "0.01"], _jsonl('{"id": "a", "text": "one text"}\n'),
     r"gives no (held-out|training) document"),
    ("a decoder with another tokenizer", ["prompt", "--work", "{work}", "--run", "r3", "--decoder",
                                          "{root}/other_decoder", "--steps", "1"], None,
     r"has another tokenizer than the prepared decoder"),
    pytest.param("--device cuda without CUDA", ["prompt", "--work", "{work}", "--run", "r2", "--device", "cuda"], None,
                 r"device='cuda', but CUDA is not available", id="--device cuda without CUDA",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")),
]


@pytest.mark.parametrize("case, argv, make, refusal", CASES, ids=[c[0] if isinstance(c, tuple) else c.id
                                                                  for c in CASES])
def test_train_refuses_and_loses_nothing(project, tmp_path, capsys, case, argv, make, refusal):
    import re

    x = make(tmp_path) if make is not None else ""
    work = project / "runs_here" / "work"
    argv = [a.format(root=project, work=work, x=x, t=tmp_path) for a in argv]
    before, mine = digest(project), digest(tmp_path)
    capsys.readouterr()
    assert train(argv) == 2, case
    err = capsys.readouterr().err
    assert "Traceback" not in err and re.search(refusal, err, re.S), err
    assert kept(before, project) == [] and kept(mine, tmp_path) == []


def test_a_second_process_on_the_work_folder_is_refused_by_name(project, capsys):
    work = project / "runs_here" / "work"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from dglm.io import folder_lock\n"
        "with folder_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)"), str(work)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        before = digest(project)
        capsys.readouterr()
        assert train(["evaluate", "--work", str(work), "--run", "r1", "--eval-limit", "4"]) == 2
        err = capsys.readouterr().err
        assert f"is in use by process {holder.pid}" in err and kept(before, project) == []
    finally:
        holder.kill()
        holder.wait()
    with folder_lock(work):  # released with its process
        pass


def test_prepare_records_absolute_paths_and_stages_run_from_elsewhere(project, tmp_path, monkeypatch):
    work = project / "runs_here" / "work"
    recorded = json.loads((work / "prepare.json").read_text())
    assert all(Path(recorded[k]).is_absolute() for k in ("data", "encoder", "decoder"))
    assert output_record(work / "data" / "train")["settings"]["window"] == 16  # the cache's key
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "plan_use.json"
    assert train(["evaluate", "--work", str(work), "--run", "r1", "--eval-limit", "4", "--out-json", str(out)]) == 0
    # A rerun replaces its own output; another JSON file needs --overwrite.
    assert train(["evaluate", "--work", str(work), "--run", "r1", "--eval-limit", "4", "--out-json", str(out)]) == 0
    other = tmp_path / "mine.json"
    other.write_text('{"my": "numbers"}')
    assert train(["evaluate", "--work", str(work), "--run", "r1", "--eval-limit", "4", "--out-json",
                  str(other)]) == 2
    assert json.loads(other.read_text()) == {"my": "numbers"}
    assert train(["evaluate", "--work", str(work), "--run", "r1", "--eval-limit", "4", "--out-json", str(other),
                  "--overwrite"]) == 0
    assert "plain" in json.loads(other.read_text())


def test_a_failed_prepare_cache_is_keyed_by_its_settings(project, tmp_path, capsys):
    """A prepare that failed after the validation split leaves it cached: a rerun with another window refuses
    it (it used to mix 16-token validation windows with 12-token training ones); --overwrite makes it again."""
    work = tmp_path / "work"
    shutil.copytree(project / "runs_here" / "work" / "data", work / "data")
    shutil.rmtree(work / "data" / "train")
    before = digest(work)
    argv = ["prepare", "--work", str(work), "--data", str(project / "data" / "train"), *PREPARE[:4],
            "--window", "12", "--max-prefix", "8", "--eval-prefix", "6", "--validation-fraction", "0.25"]
    argv = [a.format(root=project) for a in argv]
    assert train(argv) == 2 and "validation windows made with other settings (window=16, now 12" in \
        capsys.readouterr().err
    assert kept(before, work) == []
    assert train([*argv, "--overwrite"]) == 0
    assert output_record(work / "data" / "validation")["settings"]["window"] == 12


def test_a_folder_named_like_a_text_is_skipped(project, tmp_path):
    from dglm.training.texts import read_documents

    data = tmp_path / "texts"
    shutil.copytree(project / "data" / "train", data)
    (data / "x.txt").mkdir()
    train_docs, held_out = read_documents(data, validation_fraction=0.25)
    assert len(train_docs) + len(held_out) >= 24


# -- the library's writers ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pipe():
    return random_pipeline("tiny")


def _user_folder(tmp: Path) -> Path:
    (tmp / "target" / "mydocs").mkdir(parents=True)
    (tmp / "target" / "mydocs" / "thesis.txt").write_text("four years of work")
    return tmp / "target"


def _user_file(tmp: Path) -> Path:
    (tmp / "target").write_text("my notes")
    return tmp / "target"


def _hf_model_folder(tmp: Path) -> Path:
    target = _user_folder(tmp)
    (target / "config.json").write_text('{"model_type": "gpt2", "n_embd": 16}')
    return target


def _own_checkpoint_with_notes(tmp: Path) -> Path:
    random_pipeline("tiny").save_pretrained(tmp / "target")
    (tmp / "target" / "notes.txt").write_text("my notes about it")
    return tmp / "target"


def _link(tmp: Path) -> Path:
    (tmp / "real").mkdir()
    (tmp / "real" / "keep.txt").write_text("keep")
    (tmp / "target").symlink_to(tmp / "real")
    return tmp / "target"


def _with_adapter(pipe):
    import copy

    dec = copy.deepcopy(pipe.decoder)
    dec.add_adapter(rank=2)
    return dec


LIBRARY_CASES = [
    ("save_pretrained(a folder with the user's files)", _user_folder,
     lambda pipe, t: pipe.save_pretrained(t), r"holds files dglm did not write \(mydocs/thesis.txt\)"),
    ("save_pretrained(an existing file)", _user_file, lambda pipe, t: pipe.save_pretrained(t),
     r"is a file; a checkpoint folder never replaces a file"),
    ("save_pretrained(a file, overwrite=True)", _user_file, lambda pipe, t: pipe.save_pretrained(t, overwrite=True),
     r"is a file; a checkpoint folder never replaces a file"),
    ("save_pretrained(its checkpoint + the user's notes)", _own_checkpoint_with_notes,
     lambda pipe, t: pipe.save_pretrained(t), r"holds files dglm did not write \(notes.txt\)"),
    ("save_pretrained(a symbolic link)", _link, lambda pipe, t: pipe.save_pretrained(t), r"is a symbolic link"),
    ("export_adapter(decoder, a file)", _user_file, lambda pipe, t: export_adapter(_with_adapter(pipe), t),
     r"is a file; an adapter folder never replaces a file"),
    ("export_adapter(decoder, a folder with other files)", _user_folder,
     lambda pipe, t: export_adapter(_with_adapter(pipe), t), r"holds files dglm did not write"),
    ("WindowSet.save(a folder with the user's files)", _user_folder,
     lambda pipe, t: WindowSet(np.zeros((1, 4), dtype=np.int64), np.zeros((1, 1), dtype=np.int64)).save(t),
     r"holds files dglm did not"),
    ("save_state(a folder with the user's files)", _user_folder,
     lambda pipe, t: save_state(t, {"m": torch.nn.Linear(1, 1)},
                                torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1), 1),
     r"holds files dglm did not"),
    ("a component's save over a Hugging Face model folder", _hf_model_folder,
     lambda pipe, t: pipe.diffuser.save_pretrained(t), r"holds files dglm did not write \(config.json, mydocs"),
]


@pytest.mark.parametrize("case, make, write, refusal", LIBRARY_CASES, ids=[c[0] for c in LIBRARY_CASES])
def test_library_writers_refuse_and_lose_nothing(pipe, tmp_path, case, make, write, refusal):
    target = make(tmp_path)
    before = digest(tmp_path)
    with pytest.raises(OutputError, match=refusal):
        write(pipe, target)
    assert kept(before, tmp_path) == [] and sorted(digest(tmp_path)) == sorted(before)


def test_vllm_requests_checks_the_adapter_folder_before_planning(tmp_path):
    served = random_pipeline("tiny")
    served.decoder.add_adapter(rank=2)
    folder = _user_folder(tmp_path)
    before = digest(tmp_path)
    with pytest.raises(OutputError, match="adapter_folder .* holds files dglm did not write"):
        vllm_requests(Controller(near("the team won"), served), ["the game"], steps=2, adapter_folder=folder)
    assert kept(before, tmp_path) == []


def test_reruns_replace_dglm_own_output_and_overwrite_replaces_the_rest(pipe, tmp_path):
    target = tmp_path / "ckpt"
    pipe.save_pretrained(target)
    pipe.save_pretrained(target)  # a rerun
    assert json.loads((target / MARKER).read_text())["kind"] == "checkpoint"
    (target / MARKER).unlink()  # a checkpoint saved by an older dglm: its dglm.json says whose it is
    pipe.save_pretrained(target)
    (target / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="notes.txt"):
        pipe.save_pretrained(target)
    pipe.save_pretrained(target, overwrite=True)
    assert not (target / "notes.txt").exists() and DGLM.from_pretrained(target, encoder=pipe.encoder,
                                                                         decoder=pipe.decoder)
    (tmp_path / "empty").mkdir()
    pipe.save_pretrained(tmp_path / "empty")  # an empty folder is fine


def test_a_reused_vllm_adapter_folder_follows_the_weights(pipe, tmp_path):
    from dglm.io import load_tensors

    decoder = _with_adapter(pipe)
    folder = export_adapter(decoder, tmp_path / "lora")
    with torch.no_grad():
        for name, param in decoder.model.named_parameters():
            if "lora_B" in name:
                param.add_(1.0)
    assert export_adapter(decoder, folder) == folder
    saved = load_tensors(folder / "adapter_model.safetensors")
    assert any(k for k in saved if "lora_B" in k) and all(v.abs().sum() > 0 for k, v in saved.items() if "lora_B" in k)


def test_from_pretrained_uses_the_checkpoints_statistics_not_the_given_encoders(tmp_path):
    a, b = random_pipeline("tiny"), random_pipeline("tiny")
    assert a.encoder.fitted
    with torch.no_grad():
        b.encoder.mean.add_(1.0)
    b.save_pretrained(tmp_path / "b")
    loaded = DGLM.from_pretrained(tmp_path / "b", encoder=a.encoder, decoder=a.decoder)
    assert torch.equal(loaded.encoder.mean, b.encoder.mean) and loaded.encoder.model is a.encoder.model
    assert not torch.equal(a.encoder.mean, b.encoder.mean)  # the given encoder is left as it was


@pytest.mark.parametrize("std, match", [(-1.0, "std > 0"), (0.0, "std > 0"), (float("nan"), "finite")])
def test_statistics_that_cannot_standardise_are_refused(pipe, tmp_path, std, match):
    from dglm.io import CheckpointError, load_tensors, save_tensors

    pipe.save_pretrained(tmp_path / "c")
    stats = load_tensors(tmp_path / "c" / "encoder" / "model.safetensors")
    stats["std"][0] = std
    save_tensors(tmp_path / "c" / "encoder" / "model.safetensors", stats)
    with pytest.raises(CheckpointError, match=match):
        DGLM.from_pretrained(tmp_path / "c", encoder=pipe.encoder, decoder=pipe.decoder)


def test_training_stops_on_a_non_finite_loss_and_keeps_the_last_good_state(tmp_path):
    from dglm.config import DiffusionConfig
    from dglm.diffusion import SemanticDiffuser
    from dglm.io import load_tensors
    from dglm.training.loop import TrainingDiverged
    from dglm.training.train_diffusion import DiffusionTrainingConfig, train_diffuser

    model = SemanticDiffuser(DiffusionConfig(dim=8, num_tokens=2, token_features=4, width=16, depth=1, heads=2))
    prefix, cont = torch.randn(16, 8), torch.randn(16, 8)
    config = DiffusionTrainingConfig(steps=2, batch_size=4, warmup=1, save_every=1)
    train_diffuser(model, prefix, cont, config, out_dir=tmp_path, show_progress_bar=False)
    good = digest(tmp_path / "state")
    cont[:] = float("nan")  # the data turns the loss into NaN from here on
    with pytest.raises(TrainingDiverged, match="the last good state \\(step 2\\) is kept"):
        train_diffuser(model, prefix, cont, config.model_copy(update={"steps": 4}), out_dir=tmp_path,
                       show_progress_bar=False)
    assert digest(tmp_path / "state") == good
    assert all(torch.isfinite(v).all() for v in load_tensors(tmp_path / "state" / "state.safetensors").values())


# -- files: FIFOs never block, devices and folders are refused ----------------------------------------------
@pytest.mark.parametrize("kind", ["fifo", "folder", "device", "link"])
def test_file_outputs_refuse_what_is_not_a_regular_file_without_blocking(tmp_path, kind):
    path = tmp_path / "out.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "link":
        (tmp_path / "real.json").write_text("{}")
        path.symlink_to(tmp_path / "real.json")
    else:
        path = Path("/dev/full")
    start = time.perf_counter()
    with pytest.raises(OutputError, match="accepted: a new file, or a regular file"):
        write_output(path, "{}\n", overwrite=True)
    assert time.perf_counter() - start < 5
    check_output_file(tmp_path / "new.json")


# -- property: after any write, every file that was not dglm's own output of that kind is byte-identical ---------
NAMES = ["notes.txt", "mydocs/thesis.txt", "encoder/extra.bin", "dglm.json", "config.json", "README.md", ".hidden",
         "prompt/model.safetensors", "deep/a/b/c.txt", MARKER]
LAYOUTS = st.tuples(
    st.sampled_from(["missing", "empty", "own", "older own", "file"]),
    st.lists(st.tuples(st.sampled_from(NAMES), st.binary(min_size=0, max_size=20)), max_size=3, unique_by=lambda x: x[0]),
)


def _lay_out(tmp: Path, template: Path, layout) -> tuple[Path, set[str]]:
    """Build the target folder; returns it and the files that are the user's (never dglm's own)."""
    base, extras = layout
    target = tmp / "target"
    if base == "file":
        target.write_bytes(b"a file of the user")
        return target, {"target"}
    if base in ("own", "older own"):
        shutil.copytree(template, target)
        if base == "older own":
            (target / MARKER).unlink()
    elif base == "empty":
        target.mkdir()
    own = set(digest(target)) if target.exists() else set()
    user = set()
    for name, content in extras:
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            continue
        path.write_bytes(content)
        if name not in own:
            user.add(f"target/{name}")
    return target, user


@pytest.fixture(scope="module")
def template(tmp_path_factory, pipe):
    folder = tmp_path_factory.mktemp("template") / "ckpt"
    pipe.save_pretrained(folder)
    return folder


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layout=LAYOUTS)
@example(layout=("older own", []))
@example(layout=("own", [("notes.txt", b"mine")]))
def test_property_save_pretrained_never_loses_a_users_file(pipe, template, tmp_path_factory, layout):
    tmp = tmp_path_factory.mktemp("layout")
    target, user = _lay_out(tmp, template, layout)
    before = digest(tmp)
    try:
        pipe.save_pretrained(target)
        saved = True
    except OutputError:
        saved = False
    after = digest(tmp)
    assert all(after.get(f) == before[f] for f in user), (layout, saved)
    if not saved:
        assert after == before  # a refusal changes nothing
    # Liveness: a missing or empty target, or dglm's own checkpoint as it wrote it, is always written.
    if not layout[1] and layout[0] != "file":
        assert saved, layout


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layout=LAYOUTS, card=st.booleans(), license=st.sampled_from([None, "mit"]))
@example(layout=("missing", []), card=True, license="mit")
@example(layout=("own", []), card=False, license=None)
def test_property_assemble_never_loses_a_users_file(project, template, tmp_path_factory, layout, card, license):
    """`dglm train assemble --out TARGET` over the same layouts (and some of its options): what was not dglm's
    own checkpoint is byte-identical afterwards, the work folder and the user's models included."""
    tmp = tmp_path_factory.mktemp("assemble")
    target, user = _lay_out(tmp, template, layout)
    (tmp / "card.md").write_text("# Results\n\n## Numbers\n\nnone yet\n")
    argv = ["assemble", "--work", str(project / "runs_here" / "work"), "--run", "r1", "--preset", "tiny",
            "--out", str(target)] + (["--card", str(tmp / "card.md")] if card else []) + \
        (["--license", license] if license else [])
    before, theirs = digest(tmp), digest(project)
    code = train(argv)
    after = digest(tmp)
    assert code in (0, 2) and kept(theirs, project) == []
    assert all(after.get(f) == before[f] for f in user), (layout, code)
    if code == 2:
        assert after == before
    if not layout[1] and layout[0] != "file":
        assert code == 0 and (target / "dglm.json").is_file(), layout
