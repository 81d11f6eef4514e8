"""The benchmark's peers on tiny models: activation steering, FUDGE, prompting, and the neutral-opener builder."""

from __future__ import annotations

import pytest
import torch

from dglm.presets import TINY, random_decoder

SPORTS = ["the team won the match", "a goal in the game", "the player and the coach", "the league season ball"]
ARTS = ["a song and a film", "the book of art", "music and a story", "the film and the song"]


@pytest.fixture(scope="module")
def dec():
    torch.manual_seed(0)  # the same random weights whatever ran before
    return random_decoder(TINY.decoder)


# ----------------------------------------------------------------------------------------------- steering


def test_steering_changes_the_logits_inside_the_block_and_leaves_the_model_as_it_was(dec):
    from dglm.bench.steering import SteeringVector, decoder_layers

    vec = SteeringVector.fit(dec, SPORTS + ARTS, ["sports"] * 4 + ["arts"] * 4, "sports", layers=[0, 1])
    ids = torch.tensor([[5, 6, 7, 8]])

    def hooks():
        return [len(block._forward_hooks) for block in decoder_layers(dec.model)]

    own = hooks()  # transformers may keep hooks of its own
    with torch.no_grad():
        before = dec.model(input_ids=ids).logits
        with vec.apply(dec.model, scale=10.0):
            steered = dec.model(input_ids=ids).logits
            assert hooks() == [n + 1 for n in own]
        after = dec.model(input_ids=ids).logits
    assert (steered - before).abs().max() > 1e-3
    assert torch.equal(after, before)
    assert hooks() == own
    with pytest.raises(RuntimeError), vec.apply(dec.model, 1.0):  # removed on error too
        raise RuntimeError("boom")
    assert hooks() == own


def test_steering_vector_is_the_class_mean_difference_and_vectors_compose(dec):
    from dglm.bench.steering import LabelledActivations, SteeringVector, constraint_vector, mean_activations

    acts = mean_activations(dec, SPORTS + ARTS, [1])  # (8, 1, h)
    vec = SteeringVector.fit(dec, SPORTS + ARTS, ["sports"] * 4 + ["arts"] * 4, "sports", layers=[1])
    assert torch.allclose(vec.directions[1], acts[:4, 0].mean(0) - acts[4:, 0].mean(0), atol=1e-5)
    a, b = SteeringVector({1: torch.ones(3)}), SteeringVector({1: torch.ones(3), 2: torch.full((3,), 2.0)})
    assert torch.equal((a + 2.0 * b).directions[1], torch.full((3,), 3.0)) and (a + b).layers == [1, 2]
    assert torch.equal((-a).directions[1], -torch.ones(3))
    from dglm.constraints import parse_constraint

    banks = {"topic": LabelledActivations(acts, ["sports"] * 4 + ["arts"] * 4, [1]),
             "sentiment": LabelledActivations(acts, ["positive", "negative"] * 4, [1])}
    both = constraint_vector(parse_constraint("topic('sports') + sentiment.positive()"), banks)
    assert torch.allclose(both.directions[1], banks["topic"].vector("sports").directions[1]
                          + banks["sentiment"].vector("positive").directions[1], atol=1e-6)
    away = constraint_vector(parse_constraint("-sentiment.negative()"), banks)  # = toward positive
    assert torch.allclose(away.directions[1], banks["sentiment"].vector("positive").directions[1], atol=1e-6)
    with pytest.raises(ValueError, match="layers"):
        SteeringVector.fit(dec, SPORTS, ["sports"] * 4, "sports", layers=[5])
    with pytest.raises(ValueError, match="target"):
        SteeringVector.from_activations(acts[:4], ["sports"] * 4, "sports", [1])


def test_steered_generation_differs_from_plain_and_repeats_after(dec):
    from dglm.bench.baselines import steered_generate
    from dglm.bench.steering import SteeringVector

    vec = SteeringVector.fit(dec, SPORTS + ARTS, ["sports"] * 4 + ["arts"] * 4, "sports", layers=[0])
    kw = dict(max_new_tokens=6, min_new_tokens=6, seed=0)
    prefixes = ["the king and", "old music", "a city of", "the river"]
    plain = dec.generate(prefixes, None, **kw)
    steered = steered_generate(dec, vec, prefixes, 50.0, **kw)
    assert steered != plain
    assert dec.generate(prefixes, None, **kw) == plain  # nothing left behind


# ----------------------------------------------------------------------------------------------- FUDGE


def test_fudge_rescoring_favours_the_attribute_of_a_toy_discriminator(dec):
    from dglm.bench.baselines import fudge_generate
    from dglm.bench.fudge import FudgeProcessor, PrefixDiscriminator

    tok = dec.tokenizer
    vocab = dec.model.get_output_embeddings().weight.shape[0]
    sporty = [tok.convert_tokens_to_ids(w) for w in ("team", "game", "goal", "match", "ball")]
    table = torch.zeros(vocab, 2)
    table[sporty, 1] = 20.0  # the "sports" class likes these tokens
    disc = PrefixDiscriminator(table, torch.zeros(2), ("other", "sports"))
    # One step: the candidate's discriminator log-probability is added with weight strength, others -inf.
    scores = torch.zeros(1, vocab)
    out = FudgeProcessor([(disc, "sports", 1.0)], strength=1.0, top_k=vocab)(torch.zeros(1, 0, dtype=torch.long),
                                                                             scores)
    assert set(out[0].topk(5).indices.tolist()) == set(sporty)
    cut = FudgeProcessor([(disc, "sports", 1.0)], strength=1.0, top_k=3)(torch.zeros(1, 0, dtype=torch.long),
                                                                         torch.arange(vocab, dtype=torch.float)[None])
    assert torch.isfinite(cut).sum() == 3  # only the decoder's top 3 survive

    prefixes = ["the king and", "old music", "a city of", "the river"] * 2
    kw = dict(max_new_tokens=8, min_new_tokens=8, seed=0, top_k=vocab)  # a random decoder rarely ranks them high

    def rate(texts):  # the toy discriminator calls a text "sports" once it holds a sporty token
        return sum(any(t in sporty for t in tok(text, add_special_tokens=False).input_ids) for text in texts) / len(texts)

    free = fudge_generate(dec, [(disc, "sports", 1.0)], prefixes, strength=0.0, **kw)
    steered = fudge_generate(dec, [(disc, "sports", 1.0)], prefixes, strength=20.0, **kw)
    assert steered == fudge_generate(dec, [(disc, "sports", 1.0)], prefixes, strength=20.0, **kw)
    assert rate(steered) >= 0.9 > rate(free)


def test_prefix_discriminator_learns_the_class_from_the_first_tokens(dec):
    from dglm.bench.fudge import PrefixDiscriminator

    tok = dec.tokenizer
    texts, labels = SPORTS * 5 + ARTS * 5, ["sports"] * 20 + ["arts"] * 20
    for emb in (None, dec.embeddings.weight.detach()):
        d = PrefixDiscriminator.fit(tok, texts, labels, embeddings=emb, C=10.0, held_out=(SPORTS + ARTS,
                                                                                         ["sports"] * 4 + ["arts"] * 4))
        assert d.info["held_out"]["first_4_tokens"] >= 0.75
        ids = tok(["team goal", "song film"], add_special_tokens=False).input_ids
        assert d.logits(ids).argmax(1).tolist() == [d.index("sports"), d.index("arts")]
    with pytest.raises(ValueError, match="label"):
        d.index("cooking")


# ----------------------------------------------------------------------------------------------- prompting


def test_prompting_puts_the_request_before_the_prefix(dec):
    from dglm.bench.baselines import prompted_prefixes

    class Chat:
        chat_template = "x"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return f"<user>{messages[0]['content']}</user><assistant>"

    assert prompted_prefixes(Chat(), ["The house"], "sports", "instruction") == \
        ["<user>Write a short text about sports.</user><assistant>The house"]
    assert "Every sentence" in prompted_prefixes(Chat(), ["The house"], "sports", "insistent")[0]
    assert prompted_prefixes(dec.tokenizer, ["The house"], "sports", "header") == ["Topic: sports.\n\nThe house"]
    with pytest.raises(ValueError, match="style"):
        prompted_prefixes(dec.tokenizer, ["x"], "sports", "poem")


# ----------------------------------------------------------------------------------------------- openers


def _doc(i, text, topic="History", description="Period"):
    from dglm.data.corpus import Document

    return Document(f"wikipedia:{i}", "wikipedia", str(i), text, topic, description)


def test_neutral_openers_follow_the_rules():
    from dglm.bench.prompts import neutral_openers

    docs = [_doc(0, "The house stood on a hill. In 1923 the roof fell in. She said that it rained."),
            _doc(1, "The house stood on a hill. \"Quoted words\" start here. (Bracketed) too."),
            _doc(2, "Football is a team sport. The match was long.", "Everyday life", "Team sport"),
            _doc(3, "Sport clubs meet often. Many sports exist. Cities grow.")]
    out = neutral_openers(docs, 4, seed=0, per_document=3, exclude_doc=lambda d: d.doc_id == "wikipedia:2",
                          banned=["sport"])
    assert all(2 <= len(o.split()) <= 5 for o in out)
    lowered = [o.lower() for o in out]
    assert len(set(lowered)) == len(lowered)  # deduplicated (doc 1 repeats doc 0's first sentence)
    assert not any("sport" in o for o in lowered)  # banned stem
    assert not any(o.startswith(("Football", "The match")) for o in out)  # excluded document
    assert not any('"' in o or "(" in o for o in out)  # unclean words
    starts = ("The house", "In 1923", "She said", "Cities grow")
    assert all(o.startswith(starts) for o in out)  # document and sentence starts only
    assert all(not o.endswith((".", ",")) for o in out)
    # per_document caps each document; exclude_text drops openers a classifier flags
    assert len(neutral_openers(docs[:1], 2, seed=0, per_document=2)) == 2
    kept = neutral_openers(docs[:1], 2, seed=0, per_document=3, exclude_text=lambda ts: ["She" in t for t in ts])
    assert not any(o.startswith("She") for o in kept)
    with pytest.raises(ValueError, match="only"):
        neutral_openers(docs[:1], 5, seed=0, per_document=1)
    assert neutral_openers(docs, 3, seed=1) == neutral_openers(docs, 3, seed=1)


def test_request_styles_and_the_instruction_built_from_a_constraint(dec):
    from dglm.bench.baselines import prompt_requests, requested_prefixes
    from dglm.instructions import chat_prefixes, instruction_for

    class Chat:
        chat_template = "x"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return f"<user>{messages[0]['content']}</user><assistant>"

    assert instruction_for("topic('sports')") == "Write about sports."
    assert instruction_for("-topic('sports')") == "Do not write about sports."
    assert instruction_for("topic('sports') + sentiment.positive()") == "Write about sports, in a positive tone."
    assert chat_prefixes(Chat(), ["The match"], "Do not write about sports.") == \
        ["<user>Do not write about sports.</user><assistant>The match"]
    with pytest.raises(ValueError, match="instruction"):
        chat_prefixes(Chat(), ["x"], " ")
    avoid = prompt_requests("sports", negated=True)
    assert avoid["instruction"] == instruction_for("-topic('sports')")  # the peer and DGLM ask the same
    assert requested_prefixes(Chat(), ["The match"], "few-shot", "Here are examples") == \
        ["<user>Here are examples</user><assistant>The match"]


def test_steering_strength_is_a_fraction_of_the_residual_norm(dec):
    import torch

    from dglm.bench.steering import LabelledActivations, constraint_vector, residual_norms
    from dglm.constraints import parse_constraint

    norms = residual_norms(dec, ["the team won the match", "a song and a film"], layers=[0, 1])
    acts = torch.tensor([[[1.0] * dec.hidden_size] * 2, [[0.0] * dec.hidden_size] * 2])  # (N=2, L=2, h)
    bank = LabelledActivations(acts, ["sports", "arts"], [0, 1], norms)
    vec = constraint_vector(parse_constraint("topic('sports')"), {"topic": bank}, [1])
    assert float(vec.directions[1].norm()) == pytest.approx(norms[1], rel=1e-5)
    away = constraint_vector(parse_constraint("-topic('sports')"), {"topic": bank}, [1])
    assert torch.allclose(away.directions[1], -vec.directions[1])  # avoidance: the negated vector


def test_style_evaluator_is_fitted_on_other_texts_and_the_data_file_is_read(tmp_path):
    import json

    from dglm.bench.style import fit_style_evaluator, quick_style_data, read_style_data

    data = quick_style_data()
    assert not set(data["probe"][0]) & set(data["evaluator"][0])  # the probe's texts are not the evaluator's
    clf = fit_style_evaluator(*data["evaluator"], validation=data["check"])
    assert clf.proxy and clf.validation["heldout_accuracy"] > 0.9
    path = tmp_path / "style.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": lab, "split": "probe", "source": "x"}) + "\n"
                            for t, lab in zip(*data["probe"], strict=True)))
    assert read_style_data(path)["probe"] == data["probe"]
    with pytest.raises(FileNotFoundError, match="build_style_data.py"):
        read_style_data(tmp_path / "missing.jsonl")
