"""recipes/train_probe.py: train a probe from a local CSV / JSONL file (the Hugging Face path is only checked
for its missing-library error), with the tiny sentence encoder."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from dglm.constraints import Probe, ProbeRegistry
from dglm.constraints.builtin import sentiment, topic

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "train_probe.py"

# Two toy classes with disjoint words of the tiny encoder's vocabulary: linearly separable.
SPORT = ["the team won the match", "a player scored a goal", "the coach of the league", "the season of the team",
         "the player won the game", "a goal for the team", "the match and the score", "the league won the game",
         "the team and the coach", "a sport with a ball", "the ball in the game", "the player of the season"]
FOOD = ["bake the bread in the oven", "salt and sugar in the soup", "the recipe with flour", "cook dinner in "
        "the kitchen", "the cheese and the bread", "a soup with salt", "taste the soup", "bake with sugar and flour",
        "the oven in the kitchen", "cook the cheese", "the bread recipe", "dinner with bread and cheese"]


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("train_probe", RECIPE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_csv_probe_saves_loads_and_predicts_its_training_labels(recipe, tiny_sentence_encoder, tmp_path):
    rows = [{"sentence": t, "topic": "sports"} for t in SPORT] + [{"sentence": t, "topic": "food"} for t in FOOD]
    data = write_csv(tmp_path / "toy.csv", rows)
    out = tmp_path / "probe"
    recipe.main(["--data", str(data), "--text-column", "sentence", "--label-column", "topic", "--name", "topic",
                 "--out", str(out)], encoder=tiny_sentence_encoder)

    probe = Probe.load(out, encoder=tiny_sentence_encoder)
    assert probe.name == "topic" and probe.labels == ("food", "sports")
    x = tiny_sentence_encoder.encode(SPORT + FOOD)
    assert [probe.labels[i] for i in probe.predict(x).tolist()] == ["sports"] * len(SPORT) + ["food"] * len(FOOD)
    held = probe.provenance["held_out"]  # a stratified 10%: one example of each class of 12
    # The probe labels every text above correctly, the two held-out ones included: their metrics are perfect.
    assert held["n"] == 2 and held["accuracy"] == held["balanced_accuracy"] == 1.0
    assert held["per_class"] == {c: {"n": 1, "precision": 1.0, "recall": 1.0} for c in ("food", "sports")}
    assert held["majority_baseline"] == 0.5
    assert probe.provenance["source"] == str(data) and probe.provenance["proxy"] is False
    # the probe behind topic('sports') resolves against a registry holding it
    registry = ProbeRegistry(tiny_sentence_encoder, {"topic": probe})
    assert topic("sports").resolve(tiny_sentence_encoder, registry).loss(x[:1]) < \
        topic("food").resolve(tiny_sentence_encoder, registry).loss(x[:1])


def test_jsonl_integer_labels_named_and_added_to_a_registry(recipe, tiny_sentence_encoder, tmp_path):
    rows = [{"text": t, "label": 1} for t in SPORT] + [{"text": t, "label": 0} for t in FOOD]
    data = write_jsonl(tmp_path / "toy.jsonl", rows)
    folder = tmp_path / "probes"
    common = ["--data", str(data), "--registry", str(folder)]
    recipe.main([*common, "--label-names", "negative,positive", "--name", "sentiment"], encoder=tiny_sentence_encoder)
    recipe.main([*common, "--label-names", "food,sports", "--name", "topic", "--held-out", "0"],
                encoder=tiny_sentence_encoder)

    registry = ProbeRegistry.load(folder, encoder=tiny_sentence_encoder)
    assert registry.names == ("sentiment", "topic")
    probe = registry.get("sentiment")
    assert probe.binary and probe.labels == ("negative", "positive")
    x = tiny_sentence_encoder.encode(SPORT + FOOD)
    assert probe.predict(x).tolist() == [1] * len(SPORT) + [0] * len(FOOD)
    assert registry.get("topic").provenance["held_out"] is None
    constraint = sentiment.positive().resolve(tiny_sentence_encoder, registry)
    assert (constraint.loss(x[:3]) < constraint.loss(x[-3:])).all()


def test_builtin_binary_names_need_their_labels(recipe, tiny_sentence_encoder, tmp_path):
    rows = [{"text": t, "label": "good"} for t in SPORT] + [{"text": t, "label": "bad"} for t in FOOD]
    data = write_csv(tmp_path / "toy.csv", rows)
    with pytest.raises(ValueError, match=r"labels must be \['negative', 'positive'\].*--label-names"):
        recipe.main(["--data", str(data), "--name", "sentiment", "--out", str(tmp_path / "p")],
                    encoder=tiny_sentence_encoder)
    assert not (tmp_path / "p").exists()


def test_bad_inputs_name_what_is_accepted(recipe, tmp_path):
    data = write_csv(tmp_path / "toy.csv", [{"sentence": "the game", "label": "a"}])
    with pytest.raises(ValueError, match=r"--text-column 'text' is not a column.*\['sentence', 'label'\]"):
        recipe.read_file(data)
    with pytest.raises(ValueError, match=r"unknown file type '.txt'"):
        recipe.read_file(write_jsonl(tmp_path / "toy.txt", [{"text": "x", "label": 0}]))
    with pytest.raises(ValueError, match=r"label 'pos' is not an integer in 0..1"):
        recipe.name_labels(["pos"], ["negative", "positive"])
    with pytest.raises(SystemExit):  # neither --out nor --registry
        recipe.main(["--data", str(data), "--name", "x"])


def test_hf_dataset_without_the_library_says_how_to_install_it(recipe, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(ImportError, match="pip install datasets"):
        recipe.read_hf("stanfordnlp/sst2")
