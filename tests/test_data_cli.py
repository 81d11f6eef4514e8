"""`dglm data build`: the training corpus built from the installed packages, without a checkout's recipes."""

from __future__ import annotations

import json

import pytest

from dglm.cli import main
from dglm.data.corpus import SPLITS, austen_documents, load_split


def test_data_build_writes_the_corpus_from_an_installed_source(tmp_path, capsys):
    try:
        expected = len(austen_documents())
    except (FileNotFoundError, RuntimeError, OSError, ImportError) as e:  # Debian's r-cran-janeaustenr, rdata
        pytest.skip(f"the austen source is not installed: {e}")
    assert main(["data", "build", "--out", str(tmp_path / "corpus"), "--source", "austen", "--seed", "1"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["per_source"]["austen"]["documents"] == counts["documents"] <= expected
    docs = {split: load_split(tmp_path / "corpus", split) for split in SPLITS}
    assert sum(map(len, docs.values())) == counts["documents"] and all(docs.values())
    assert json.loads((tmp_path / "corpus" / "counts.json").read_text())["seed"] == 1


def test_data_build_refuses_an_unknown_source_or_fraction_before_reading(tmp_path, capsys):
    assert main(["data", "build", "--out", str(tmp_path / "c"), "--source", "austen", "nope"]) == 2
    assert "--source 'nope' is not a corpus source; accepted: wikipedia, austen" in capsys.readouterr().err
    assert main(["data", "build", "--out", str(tmp_path / "c"), "--val-fraction", "2"]) == 2
    assert "val_fraction=2.0" in capsys.readouterr().err and not (tmp_path / "c").exists()
