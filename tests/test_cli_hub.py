"""`dglm generate` and `dglm info` take a hub id and `--revision`, loaded the way Python's
``DGLM.from_pretrained`` loads them: offline, from a local hub cache laid out as huggingface_hub lays it out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_cli import FAST
from test_hub import lay_out_hub_cache

from dglm.cli import main

REPO = "some-org/some-dglm"


@pytest.fixture
def hub(checkpoint, tmp_path, monkeypatch):  # noqa: F811
    """The tiny checkpoint as REPO in a hub cache: tag v1 is it as saved, main the same with 7 steps."""
    first, second = "a" * 40, "b" * 40
    lay_out_hub_cache(tmp_path / "hub", REPO, Path(checkpoint), first, refs=("v1",))
    changed = tmp_path / "v2"
    shutil.copytree(checkpoint, changed)
    meta = json.loads((changed / "dglm.json").read_text())
    meta["sampling"]["steps"] = 7
    (changed / "dglm.json").write_text(json.dumps(meta))
    lay_out_hub_cache(tmp_path / "hub", REPO, changed, second, refs=("main",))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # HF_HUB_CACHE as a new process reads it (huggingface_hub reads the variable once, at import).
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    return checkpoint


def test_generate_and_info_take_a_hub_id_and_a_revision(hub, capsys):
    args = ["generate", "the game", "--seed", "3", *FAST]
    assert main([*args, "--checkpoint", hub]) == 0
    from_folder = capsys.readouterr().out
    assert main([*args, "--checkpoint", REPO, "--revision", "v1"]) == 0
    assert capsys.readouterr().out == from_folder  # the same checkpoint, by hub id
    steps = {}
    for revision in ("v1", "main", "b" * 40):
        assert main(["info", "--checkpoint", REPO, "--revision", revision]) == 0
        steps[revision] = json.loads(capsys.readouterr().out)["config"]["sampling"]["steps"]
    assert steps["main"] == steps["b" * 40] == 7 != steps["v1"]


def test_a_hub_id_or_revision_that_is_not_there_is_one_clean_error(hub, capsys):
    assert main(["info", "--checkpoint", REPO, "--revision", "v9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dglm: error: ") and "v9" in err and err.count("\n") == 1
    assert main(["info", "--checkpoint", hub, "--revision", "v1"]) == 2  # a folder has no revisions
    err = capsys.readouterr().err
    assert err.startswith("dglm: error: --checkpoint ") and "revision" in err and err.count("\n") == 1
