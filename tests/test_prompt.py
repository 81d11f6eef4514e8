"""The prompt generator learns to make a frozen decoder write embedding-specific text."""

import numpy as np
import pytest
import torch

from dglm.config import DiffusionConfig, PromptConfig
from dglm.prompt import PromptGenerator
from dglm.training.data import WindowSet
from dglm.training.plan_use import evaluate_plan_use
from dglm.training.train_prompt import PromptTrainingConfig, train_prompt_generator

K = 4  # distinct plans


def plan_dataset(decoder, n_per_class: int = 16):
    """K classes: each class's continuation is a fixed word sequence and its embedding a fixed random vector."""
    words = ["the game was won by the team", "a river of water in the city", "the king and queen of peace",
             "music and art for children"]
    cont_ids = decoder.tokenize(words)
    prefix_ids = decoder.tokenize(["the story of"])[0]
    emb = torch.nn.functional.normalize(torch.randn(K, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    length = max(len(c) for c in cont_ids)
    ids, cls = [], []
    for k in range(K):
        c = (cont_ids[k] + [decoder.tokenizer.eos_token_id] * length)[:length]
        ids += [prefix_ids + c] * n_per_class
        cls += [k] * n_per_class
    ids = np.array(ids)
    split = np.full((len(ids), 1), len(prefix_ids))
    return WindowSet(ids, split, cont_emb=emb[cls][:, None].half()), words


@pytest.fixture(scope="module")
def tiny_llama_decoder():
    from conftest import make_llama, make_tokenizer

    from dglm.decoder import Decoder

    tok = make_tokenizer()
    return Decoder(make_llama(len(tok)).requires_grad_(False), tok, "tiny-llama")


def test_prompt_generator_learns_embedding_specific_text(tiny_llama_decoder, tmp_path):
    torch.manual_seed(0)
    dec = tiny_llama_decoder
    data, words = plan_dataset(dec)
    gen = PromptGenerator(PromptConfig(dim=16, out_dim=dec.hidden_size, num_soft_tokens=4, width=64, depth=2,
                                       heads=4))
    mean, std = torch.zeros(16), torch.full((16,), 0.25)
    before = evaluate_plan_use(gen, dec, data, mean, std, batch_size=64)
    cfg = PromptTrainingConfig(steps=150, batch_size=16, lr=3e-3, warmup=10, eval_every=150, save_every=150,
                               mixed_precision="no")
    after = train_prompt_generator(gen, dec, data, data, mean, std, cfg, tmp_path, show_progress_bar=False)
    assert after["true"] < before["true"] - 1.0
    assert after["gap"] > 1.0  # the decoder uses the plan: a wrong embedding costs > 1 nat per token
    gen.eval()
    emb = data.cont_emb[:: len(data) // K, 0].float()
    soft = gen.prompt((emb - mean) / std, sigma2=0.0)
    outs = dec.generate(["the story of"] * K, soft, max_new_tokens=4, do_sample=False)
    assert len(set(outs)) == K  # each plan gives its own text
    hits = sum(out.split()[:2] == w.split()[:2] for out, w in zip(outs, words, strict=True))
    assert hits >= 3


def test_resumes_from_state(tiny_llama_decoder, tmp_path):
    dec = tiny_llama_decoder
    data, _ = plan_dataset(dec, 4)
    cfg = PromptTrainingConfig(steps=4, batch_size=4, warmup=1, eval_every=100, save_every=2, mixed_precision="no")
    make = lambda: PromptGenerator(PromptConfig(dim=16, out_dim=dec.hidden_size, num_soft_tokens=2, width=32,  # noqa: E731
                                                depth=1, heads=2))
    train_prompt_generator(make(), dec, data, data, torch.zeros(16), torch.ones(16), cfg, tmp_path, False)
    resumed = make()
    cfg6 = cfg.model_copy(update={"steps": 6})
    train_prompt_generator(resumed, dec, data, data, torch.zeros(16), torch.ones(16), cfg6, tmp_path, False)
    steps = [line.split(",")[0] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == [f'{{"step": {i}' for i in range(1, 7)]


def switch_dataset(decoder, n_per_class: int = 16):
    """K classes whose prefix sentence always announces its own continuation: natural pairs never need the plan."""
    prefixes = ["the game of the season .", "the river of the city .", "the king of the war .",
                "the music of the night ."]
    words = ["the team won the match", "water in the old house", "a queen and peace", "song and art for children"]
    emb = torch.nn.functional.normalize(torch.randn(K, 16, generator=torch.Generator().manual_seed(1)), dim=-1)
    rows = [decoder.tokenize([p + " " + w])[0] for p, w in zip(prefixes, words, strict=True)]
    length = max(len(r) for r in rows)
    ids, splits, cls = [], [], []
    for k in range(K):
        ids += [(rows[k] + [decoder.tokenizer.eos_token_id] * length)[:length]] * n_per_class
        splits += [len(decoder.tokenize([prefixes[k]])[0])] * n_per_class
        cls += [k] * n_per_class
    return WindowSet(np.array(ids), np.array(splits)[:, None], cont_emb=emb[cls][:, None].half())


def test_topic_switches_teach_the_decoder_to_follow_a_plan_against_its_prefix(tiny_llama_decoder, tmp_path):
    from dglm.training.data import sentence_ends

    dec = tiny_llama_decoder
    data = switch_dataset(dec)
    ends = sentence_ends(dec.tokenizer)
    mean, std = torch.zeros(16), torch.full((16,), 0.25)
    results = {}
    for fraction in (0.0, 0.5):
        torch.manual_seed(0)
        gen = PromptGenerator(PromptConfig(dim=16, out_dim=dec.hidden_size, num_soft_tokens=4, width=64, depth=2,
                                           heads=4))
        cfg = PromptTrainingConfig(steps=120, batch_size=16, lr=3e-3, warmup=10, eval_every=1000, save_every=1000,
                                   mixed_precision="no", switch_fraction=fraction)
        train_prompt_generator(gen, dec, data, data, mean, std, cfg, tmp_path / str(fraction), show_progress_bar=False)
        results[fraction] = evaluate_plan_use(gen, dec, data, mean, std, batch_size=64, ends=ends)
    natural, switched = results[0.0], results[0.5]
    assert switched["switch_n"] == len(data)  # every prefix ends a sentence
    # Trained on switches, the decoder takes the continuation from the plan even when the prefix names another.
    assert switched["switch_true"] < natural["switch_true"] - 0.5
    assert switched["switch_gap"] > natural["switch_gap"] + 0.5


def opener_dataset(decoder, n_per_class: int = 16):
    """K classes whose first sentence announces the continuation, followed by the same two-word opener: the
    whole prefix never needs the plan, the opener alone always does."""
    prefixes = [f"{p} and the" for p in ["the game of the season .", "the river of the city .",
                                          "the king of the war .", "the music of the night ."]]
    data = switch_dataset(decoder, n_per_class)
    rows = [decoder.tokenize([p + " " + w])[0] for p, w in
            zip(prefixes, ["the team won the match", "water in the old house", "a queen and peace",
                           "song and art for children"], strict=True)]
    length = max(len(r) for r in rows)
    ids = [(r + [decoder.tokenizer.eos_token_id] * length)[:length] for r in rows for _ in range(n_per_class)]
    splits = [len(decoder.tokenize([p])[0]) for p in prefixes for _ in range(n_per_class)]
    return WindowSet(np.array(ids), np.array(splits)[:, None], cont_emb=data.cont_emb)


def test_sentence_openers_teach_the_plan_after_a_short_prompt(tiny_llama_decoder, tmp_path):
    from dglm.data.windows import word_starts
    from dglm.training.data import SentenceOpeners, sentence_ends

    dec = tiny_llama_decoder
    data = opener_dataset(dec)
    ends, starts = sentence_ends(dec.tokenizer), word_starts(dec.tokenizer)
    openers = SentenceOpeners(data, ends, starts, max_words=2)
    assert len(openers.index) == len(data)
    assert {dec.tokenizer.decode(p).strip() for p in openers.take(openers.index)[0]} == {"and the"}
    mean, std = torch.zeros(16), torch.full((16,), 0.25)
    results = {}
    for fraction in (0.0, 1.0):
        torch.manual_seed(0)
        gen = PromptGenerator(PromptConfig(dim=16, out_dim=dec.hidden_size, num_soft_tokens=4, width=64, depth=2,
                                           heads=4))
        cfg = PromptTrainingConfig(steps=120, batch_size=16, lr=3e-3, warmup=10, eval_every=1000, save_every=1000,
                                   mixed_precision="no", opener_fraction=fraction, opener_words=2)
        train_prompt_generator(gen, dec, data, data, mean, std, cfg, tmp_path / str(fraction), show_progress_bar=False)
        results[fraction] = evaluate_plan_use(gen, dec, data, mean, std, batch_size=64, ends=ends, starts=starts,
                                              opener_words=2)
    natural, opened = results[0.0], results[1.0]
    assert opened["opener_n"] == len(data)
    # Trained on openers, two words are enough for the plan to decide the continuation.
    assert opened["opener_true"] < natural["opener_true"] - 0.5
    assert opened["opener_gap"] > natural["opener_gap"] + 0.5


def test_example_fractions_are_checked_together():
    with pytest.raises(ValueError, match=r"switch_fraction=0.6 \+ opener_fraction=0.5 \+ diffused_fraction=0.0 "
                                         r"must not exceed 1"):
        PromptTrainingConfig(switch_fraction=0.6, opener_fraction=0.5)
    with pytest.raises(ValueError, match=r"diffused_fraction=0.5 must not exceed 1"):
        PromptTrainingConfig(opener_fraction=0.6, diffused_fraction=0.5)


def test_diffused_plans_train_through_the_diffuser_and_need_it(tiny_llama_decoder, tmp_path):
    """A batch of diffused plans: every plan is the continuation's embedding passed through the diffuser (it
    changes, and the trainer uses them); without the diffuser, or without prefix embeddings, a clear error."""
    from dglm.diffusion import SemanticDiffuser
    from dglm.training.data import DiffusedPlans

    dec = tiny_llama_decoder
    base = switch_dataset(dec, 4)
    g = torch.Generator().manual_seed(0)
    data = WindowSet(base.ids, base.splits, prefix_emb=torch.randn(len(base), 1, 16, generator=g),
                     cont_emb=base.cont_emb)
    diffuser = SemanticDiffuser(DiffusionConfig(dim=16, num_tokens=2, token_features=8, width=16, depth=1, heads=2))
    torch.nn.init.normal_(diffuser.out.weight, std=0.5)  # a denoiser that changes what it is given
    mean, std = torch.zeros(16), torch.full((16,), 0.25)
    prefixes, conts, plans = DiffusedPlans(data, diffuser, mean, std, max_t=1.0).sample(8, np.random.default_rng(0))
    assert len(prefixes) == len(conts) == 8 and plans.shape == (8, 16)
    assert not any(torch.allclose(p, c.float()) for p in plans for c in data.cont_emb[:, 0])
    gen = PromptGenerator(PromptConfig(dim=16, out_dim=dec.hidden_size, num_soft_tokens=2, width=32, depth=1,
                                       heads=2))
    cfg = PromptTrainingConfig(steps=2, batch_size=4, warmup=1, eval_every=100, save_every=100,
                               mixed_precision="no", diffused_fraction=1.0)
    train_prompt_generator(gen, dec, data, data, mean, std, cfg, tmp_path / "ok", False, diffuser=diffuser)
    assert len((tmp_path / "ok" / "log.jsonl").read_text().splitlines()) == 2
    with pytest.raises(ValueError, match=r"diffused_fraction=1.0 needs the diffusion model"):
        train_prompt_generator(gen, dec, data, data, mean, std, cfg, tmp_path / "no", False)
    with pytest.raises(ValueError, match="need the prefixes' embeddings"):
        DiffusedPlans(base, diffuser, mean, std)
