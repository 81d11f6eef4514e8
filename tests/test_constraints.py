"""Constraint algebra, probes (fit / export / save / load / encoder checks), registry and built-ins."""

from __future__ import annotations

import dataclasses
import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from dglm.constraints import (
    Constraint,
    FunctionConstraint,
    Probe,
    ProbeRegistry,
    ProbeTarget,
    UnresolvedConstraintError,
    away_from,
    near,
    sentiment,
    target,
    topic,
    toxicity,
)
from dglm.io import CheckpointError

D = 6


def _probe(name="toxicity", labels=("non-toxic", "toxic"), encoder=f"toy:{D}", seed=0) -> Probe:
    g = torch.Generator().manual_seed(seed)
    rows = 1 if len(labels) == 2 else len(labels)
    return Probe(3 * torch.randn(rows, D, generator=g), torch.randn(rows, generator=g), labels, encoder, name=name)


def _raw(n=5, seed=1) -> torch.Tensor:
    return F.normalize(torch.randn(n, D, generator=torch.Generator().manual_seed(seed)), dim=-1)


class _Encoder:
    """A duck-typed encoder: identity and dimension only."""

    def __init__(self, identity: str, dim: int):
        self.identity, self.dim = identity, dim


TOX, TOPIC = _probe(), _probe("topic", ("business", "sports", "world"), seed=3)
REGISTRY = ProbeRegistry(f"toy:{D}", {"toxicity": TOX, "topic": TOPIC,
                                      "sentiment": _probe("sentiment", ("negative", "positive"), seed=5)})
ENC = _Encoder(f"toy:{D}", D)


# -- algebra ---------------------------------------------------------------------------------------------------
def test_algebra_identities_hold_by_value():
    a, b = TOX("toxic"), TOPIC("sports")
    assert a + b == b + a and hash(a + b) == hash(b + a)
    assert 2 * a == a * 2 == a.weight(2) == a + a
    assert -(-a) == a and -(-a) is a  # noqa: B002
    assert a - b == a + (-b)
    assert (a - a).terms() == () and (0 * a).terms() == () and (a.weight(0) + b - b).terms() == ()
    assert (0.1 * a + 0.2 * a - 0.3 * a).terms() == ()  # float round-off cancels too
    assert -TOX("toxic") == TOX("non-toxic")  # binary: the opposite aim is the other label
    assert (2 * a + TOX("non-toxic")).terms() == ((a, 1.0),)  # weights on one probe add up
    assert sum([a, b]) == a + b
    assert len({a + b, b + a, 2 * a, a.weight(2)}) == 2


def test_repr_reads_like_the_expression():
    c = 0.5 * toxicity.low() + topic("sports") - sentiment.negative()
    assert repr(c) == "0.5*toxicity.low() + topic('sports') - sentiment.negative()"
    assert repr(-(toxicity.high() + 2 * near("hello"))) == "-(toxicity.high() + 2*near('hello'))"
    assert repr(away_from("x") - 0.25 * topic.describe("cooking", name="food")) == \
        "away_from('x') - 0.25*topic.describe('cooking', name='food')"
    assert repr(target("formality", "formal")) == "target('formality', 'formal')"
    assert repr(TOX("toxic") / 4) == "0.25*toxicity['toxic']"


def test_objects_are_immutable():
    c = toxicity.low() + topic("sports")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.parts = ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        TOX.name = "other"


def test_operator_errors_name_the_problem():
    a = toxicity.low()
    with pytest.raises(TypeError, match="cannot multiply two constraints"):
        a * topic("sports")
    with pytest.raises(TypeError):
        a + 1
    with pytest.raises(ValueError, match="must be finite"):
        a.weight(float("nan"))
    with pytest.raises(TypeError, match="real number"):
        a.weight(True)
    with pytest.raises(ZeroDivisionError):
        a / 0
    with pytest.raises(ValueError, match="not a toxicity label.*'non-toxic', 'toxic'"):
        target("toxicity", "polite")


def test_loss_composes_by_adding_and_negation_stays_bounded():
    raw = _raw()
    tox, sports = TOX("toxic"), TOPIC("sports")
    assert torch.allclose((2 * tox + sports).loss(raw), 2 * tox.loss(raw) + sports.loss(raw))
    assert torch.equal((tox - tox).loss(raw), torch.zeros(5))
    # binary: BCE toward the label, and toward the other label when negated
    logit = raw @ TOX.weight[0] + TOX.bias[0]
    assert torch.allclose(tox.loss(raw), F.binary_cross_entropy_with_logits(logit, torch.ones(5), reduction="none"))
    assert torch.allclose((-tox).loss(raw), F.binary_cross_entropy_with_logits(logit, torch.zeros(5), reduction="none"))
    # multi-class: cross-entropy toward the class; negated: -log(1 - p(class)), finite and >= 0
    p = (raw @ TOPIC.weight.T + TOPIC.bias).softmax(-1)[:, 1]
    assert torch.allclose(sports.loss(raw), -p.log(), atol=1e-6)
    assert torch.allclose((-sports).loss(raw), -(1 - p).log(), atol=1e-6)
    extreme = torch.zeros(1, D)
    extreme[0, TOPIC.weight[1].argmax()] = 1e4  # p(sports) ~ 1 in float32
    assert torch.isfinite((-sports).loss(extreme)).all() and (-sports).loss(extreme).item() > 100


def test_function_constraint_wraps_any_torch_callable():
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(D, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    c = FunctionConstraint(lambda x: mlp(x).squeeze(-1), name="mlp")
    raw = _raw().requires_grad_()
    loss = (0.5 * c + TOX("toxic")).loss(raw[None].expand(3, 5, D))  # any leading shape
    assert loss.shape == (3, 5)
    loss.sum().backward()
    assert raw.grad is not None and torch.isfinite(raw.grad).all()
    bad = FunctionConstraint(lambda x: x, name="bad")
    with pytest.raises(ValueError, match="per-row loss of shape"):
        bad.loss(_raw())


# -- probes ------------------------------------------------------------------------------------------------------
def test_from_sklearn_equals_the_decision_function():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, D))
    for y in (rng.integers(0, 2, 60), np.array(["b", "a", "c"])[rng.integers(0, 3, 60)]):
        clf = LogisticRegression(C=1000, max_iter=10000).fit(x, y)
        probe = Probe.from_sklearn(clf, encoder=ENC, name="demo")
        logits = probe.logits(torch.tensor(x, dtype=torch.float32)).squeeze(-1).double().numpy()
        assert np.allclose(logits, clf.decision_function(x), atol=1e-4)
        assert np.allclose(probe.probs(torch.tensor(x, dtype=torch.float32)).numpy(), clf.predict_proba(x), atol=1e-5)
        assert probe.labels == tuple(str(c) for c in clf.classes_)
    with pytest.raises(ValueError, match="fitted on 6-d features but encoder 'toy:8'"):
        Probe.from_sklearn(clf, encoder="toy:8")
    with pytest.raises(TypeError, match="not a fitted linear classifier"):
        Probe.from_sklearn(LogisticRegression(), encoder=ENC)


SPORTS = "match team goal player score season coach league win won game sport ball".split()
FOOD = "soup bake oven recipe flour salt sugar cook kitchen dinner bread cheese taste".split()
FILLER = "the a of and to in is was it this that with for on at".split()


def _sentences(words, n, rng):
    return [" ".join(rng.sample(words, 3) + rng.sample(FILLER, 3)) for _ in range(n)]


def test_probe_fit_separates_a_toy_set(tiny_sentence_encoder):
    rng = random.Random(0)
    train = _sentences(SPORTS, 30, rng) + _sentences(FOOD, 30, rng)
    test = _sentences(SPORTS, 20, rng) + _sentences(FOOD, 20, rng)
    labels = ["sports"] * 30 + ["food"] * 30
    probe = Probe.fit(train, labels, encoder=tiny_sentence_encoder, name="topic",
                      provenance={"data": "toy sentences"})
    assert probe.labels == ("food", "sports") and probe.encoder == "tiny-bert:32" and probe.dim == 32
    predicted = [probe.labels[i] for i in probe.predict(tiny_sentence_encoder.encode(test)).tolist()]
    accuracy = np.mean([p == t for p, t in zip(predicted, ["sports"] * 20 + ["food"] * 20, strict=True)])
    assert accuracy >= 0.9
    assert probe.provenance["data"] == "toy sentences" and probe.provenance["num_examples"] == 60
    assert probe.provenance["class_counts"] == {"food": 30, "sports": 30} and probe.provenance["C"] == 1000
    # integer labels with names; embeddings given directly
    x = tiny_sentence_encoder.encode(train)
    same = Probe.fit(x, [1] * 30 + [0] * 30, encoder=tiny_sentence_encoder, label_names=("food", "sports"),
                     name="topic")
    assert torch.allclose(same.weight, probe.weight, atol=1e-3)


def test_probe_saves_and_loads_to_identical_losses(tmp_path):
    for probe in (TOX, TOPIC):
        probe = dataclasses.replace(probe, provenance={"data": "jigsaw", "n": 3})
        probe.save(tmp_path / probe.name)
        assert sorted(p.name for p in (tmp_path / probe.name).iterdir()) == ["probe.json", "probe.safetensors"]
        loaded = Probe.load(tmp_path / probe.name, encoder=ENC)
        assert loaded == probe and loaded.provenance == {"data": "jigsaw", "n": 3}
        raw = _raw(7)
        for label in probe.labels:
            assert torch.equal(loaded(label).loss(raw), probe(label).loss(raw))
            assert torch.equal((-loaded(label)).loss(raw), (-probe(label)).loss(raw))
    meta = json.loads((tmp_path / "toxicity" / "probe.json").read_text())
    assert meta["encoder"] == f"toy:{D}" and meta["dim"] == D and meta["labels"] == ["non-toxic", "toxic"]


def test_probe_load_never_unpickles_and_reports_bad_files(tmp_path):
    TOX.save(tmp_path / "p")
    torch.save({"weight": TOX.weight, "bias": TOX.bias}, tmp_path / "p" / "probe.safetensors")
    with pytest.raises(CheckpointError, match="pickle"):
        Probe.load(tmp_path / "p")
    TOX.save(tmp_path / "q")
    meta = json.loads((tmp_path / "q" / "probe.json").read_text())
    meta["dim"] = 7
    (tmp_path / "q" / "probe.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"needs weight \(1, 7\)"):
        Probe.load(tmp_path / "q")
    with pytest.raises(CheckpointError, match="does not exist"):
        Probe.load(tmp_path / "missing")


def test_probe_refuses_another_encoder(tiny_sentence_encoder):
    probe = Probe(torch.randn(1, 384), torch.zeros(1), ("non-toxic", "toxic"), "sentence-transformers/all-MiniLM-L6-v2:384",
                  name="toxicity")
    with pytest.raises(ValueError, match=r"reads 384-d embeddings.*makes 768-d embeddings"):
        probe.check_encoder(_Encoder("sentence-transformers/sentence-t5-xl:768", 768))
    with pytest.raises(ValueError, match="trained on encoder 'sentence-transformers/all-MiniLM-L6-v2:384'.*'other:384'"):
        probe.check_encoder(_Encoder("other:384", 384))
    with pytest.raises(ValueError, match="makes 32-d embeddings"):
        probe("toxic").resolve(tiny_sentence_encoder)
    with pytest.raises(ValueError, match="reads 384-d embeddings"):
        probe("toxic").loss(torch.randn(2, 768))
    with pytest.raises(ValueError, match="makes 32-d"):
        ProbeRegistry(tiny_sentence_encoder).add("toxicity", probe)


def test_registry_round_trips_and_refuses_mismatches(tmp_path):
    REGISTRY.save(tmp_path / "probes")
    assert sorted(p.name for p in (tmp_path / "probes").iterdir()) == ["registry.json", "sentiment", "topic", "toxicity"]
    loaded = ProbeRegistry.load(tmp_path / "probes", encoder=ENC)
    assert loaded.names == REGISTRY.names and all(loaded.get(n) == REGISTRY.get(n) for n in REGISTRY)
    with pytest.raises(ValueError, match="registry was built for encoder 'toy:6'"):
        ProbeRegistry.load(tmp_path / "probes", encoder=_Encoder("other:6", 6))
    with pytest.raises(ValueError, match="trained on encoder 'toy:6'"):
        ProbeRegistry("other:6").add("toxicity", TOX)
    with pytest.raises(ValueError, match="becomes a folder"):
        ProbeRegistry(ENC).add("../evil", TOX)
    with pytest.raises(KeyError, match=r"holds \['sentiment', 'topic', 'toxicity'\]"):
        REGISTRY.get("formality")


# -- built-ins and resolution ------------------------------------------------------------------------------------
def test_builtins_resolve_through_the_registry():
    c = 0.5 * toxicity.low() + topic("sports") - sentiment.negative()
    assert not c.is_resolved
    with pytest.raises(UnresolvedConstraintError, match=r"toxicity.low\(\), topic\(.sports.\), sentiment.negative\(\) are not resolved.*resolve\(encoder, registry\)"):
        c.loss(_raw())
    resolved = c.resolve(ENC, REGISTRY)
    assert resolved.is_resolved and repr(resolved) == repr(c)
    sentiment_probe = REGISTRY.get("sentiment")
    expected = 0.5 * TOX("non-toxic") + TOPIC("sports") + sentiment_probe("positive")
    assert resolved == expected
    assert torch.allclose(resolved.loss(_raw()), expected.loss(_raw()))
    assert (toxicity.low() + toxicity.high()).resolve(ENC, REGISTRY).terms() == ()


def test_unknown_topic_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"'sprots' is not known.*known topics: 'business', 'sports', 'world'"):
        topic("sprots").resolve(ENC, REGISTRY)
    with pytest.raises(ValueError, match="no probe named 'toxicity'"):
        toxicity.low().resolve(ENC, ProbeRegistry(ENC))
    with pytest.raises(ValueError, match="pass registry="):
        toxicity.low().resolve(ENC)
    with pytest.raises(ValueError, match="registry was built for encoder"):
        toxicity.low().resolve(_Encoder("other:6", 6), REGISTRY)


def test_zero_shot_constraints_from_text(tiny_sentence_encoder):
    enc = tiny_sentence_encoder
    texts = ["the match was a great game for the team", "bake the bread in the oven with salt",
             "rain and wind and snow on the mountain"]
    raw = enc.encode(texts)
    c = near(texts[0]).resolve(enc)
    loss = c.loss(raw)
    assert loss.argmin().item() == 0 and (loss >= 0).all()
    away = away_from(texts[0]).resolve(enc)
    assert away == -c and away.loss(raw).argmax().item() == 0
    sports = topic.describe("match team goal player score season", name="sports").resolve(enc)
    probe = sports.probe
    assert probe.labels == ("not sports", "sports") and probe.provenance["method"] == "zero-shot"
    e = enc.encode(["match team goal player score season"])[0]
    cos = raw @ e
    # logit = scale * (cos - threshold); threshold = mean corpus similarity (0 for unfitted statistics)
    assert torch.allclose(probe.logits(raw).squeeze(-1), 20 * cos, atol=1e-5)
    # fitted statistics set the threshold to the average text's similarity; losses stay bounded
    from dglm.encoder import SemanticEncoder

    fitted = SemanticEncoder(enc.model, "tiny-bert")
    fitted.fit_standardization(texts * 2)
    probe = topic.describe("match team goal player score season").resolve(fitted).probe
    threshold = float(fitted.mean @ e)
    assert probe.provenance["threshold"] == pytest.approx(threshold)
    assert torch.allclose(probe.logits(raw).squeeze(-1), 20 * (cos - threshold), atol=1e-5)
    assert float(topic.describe("x y").resolve(enc).loss(-raw).max()) <= float(F.softplus(torch.tensor(20.0 * 2)))


def test_equality_and_hash_are_by_value_for_probes():
    same = Probe(TOX.weight.clone(), TOX.bias.clone(), TOX.labels, TOX.encoder, name=TOX.name)
    assert same == TOX and hash(same) == hash(TOX)
    assert TOX("toxic") == same("toxic") and isinstance(TOX("toxic"), ProbeTarget)
    assert isinstance(TOX("toxic"), Constraint)
    assert dataclasses.replace(TOX, weight=TOX.weight + 1) != TOX
    with pytest.raises(KeyError, match=r"'rude' is not one of probe 'toxicity''s labels \['non-toxic', 'toxic'\]"):
        TOX("rude")


def test_weights_that_overflow_when_merged_raise_instead_of_dropping_the_term():
    from dglm.constraints import near

    with pytest.raises(ValueError, match="overflow the float range"):
        (1e308 * near("a") + 1e308 * near("a")).terms()
    with pytest.raises(ValueError, match="must be finite"):
        1e300 * (1e300 * near("a"))  # a product out of range is refused when the scale is built
    assert (1e307 * near("a") + 1e307 * near("a")).terms()[0][1] == pytest.approx(2e307)
