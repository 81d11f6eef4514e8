"""The distillation term of prompt training (``distill_weight``): KL from plain decoding to the soft-prompted
decoder on the continuation tokens, computed right, reaching only the trained parts, and lowered by training."""

import json

import numpy as np
import pytest
import torch

from dglm.config import PromptConfig
from dglm.prompt import PromptGenerator
from dglm.training.data import WindowSet
from dglm.training.distill import continuation_logits, nll_and_plain_kl
from dglm.training.plan_use import evaluate_plan_use
from dglm.training.train_prompt import PromptObjective, PromptTrainingConfig, train_prompt_generator


def tiny_decoder(seed: int = 0):
    from conftest import make_llama, make_tokenizer

    from dglm.decoder import Decoder

    tok = make_tokenizer()
    return Decoder(make_llama(len(tok), seed=seed).requires_grad_(False), tok, "tiny-llama")


def with_adapter(decoder, rank: int = 2, scale: float = 0.3):
    """A LoRA adapter with non-zero weights (a fresh one is the identity), so the adapter's state matters."""
    params = decoder.add_adapter(rank)
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * scale)
    return params


def test_nll_and_kl_match_separate_model_calls():
    dec = tiny_decoder()
    with_adapter(dec)
    prefixes = dec.tokenize(["the game was", ""])  # (the second row: no prefix at all)
    conts = dec.tokenize(["won by the team", "a river"])
    soft = torch.randn(2, 3, dec.hidden_size, generator=torch.Generator().manual_seed(1))
    nll, kl = nll_and_plain_kl(dec, prefixes, conts, soft)
    emb = dec.embeddings
    for row, (prefix, cont) in enumerate(zip(prefixes, conts, strict=True)):
        c = torch.tensor(cont)
        with dec.adapter_off():  # plain decoding: base LM, no soft tokens, a start token for an empty prompt
            ids = torch.tensor((prefix or [dec.start_token_id]) + cont)[None]
            plain = dec.model(input_ids=ids).logits[0, -len(cont) - 1:-1]
        x = torch.cat([emb(torch.tensor(prefix, dtype=torch.long)), soft[row], emb(c)])[None]
        student = dec.model(inputs_embeds=x).logits[0, -len(cont) - 1:-1]  # adapter on
        log_p, log_q = plain.log_softmax(-1), student.log_softmax(-1)
        want_kl = torch.nn.functional.kl_div(log_q, log_p, log_target=True, reduction="sum") / len(cont)
        want_nll = torch.nn.functional.cross_entropy(student, c)
        assert kl[row].item() == pytest.approx(want_kl.item(), rel=1e-4, abs=1e-5)
        assert nll[row].item() == pytest.approx(want_nll.item(), rel=1e-4)
        assert kl[row].item() > 0.01  # soft tokens and the adapter move the distribution
    # The NLL equals the decoder's own (the loss without distillation), padding included.
    assert torch.allclose(nll, dec.continuation_nll(prefixes, conts, soft), atol=1e-5)


def test_kl_is_zero_when_the_soft_prompted_distribution_is_the_plain_one():
    dec = tiny_decoder()
    prefixes, conts = dec.tokenize(["the game was", "the king"]), dec.tokenize(["won by the team", "and queen"])
    plain, mask = continuation_logits(dec, prefixes, conts)
    _, kl = nll_and_plain_kl(dec, prefixes, conts, soft=None)  # the same model twice
    assert kl.abs().max().item() < 1e-6
    # One soft token that is the embedding of the prefix's last token, after a prefix without it, with the same
    # positions: the soft-prompted decoder sees exactly the plain input, so the KL is 0 up to rounding.
    head = [p[:-1] for p in prefixes]
    soft = torch.stack([dec.embeddings.weight[p[-1]][None] for p in prefixes])  # (B, 1, h)
    student, _ = continuation_logits(dec, head, conts, soft)
    assert torch.allclose(student[mask], plain[mask], atol=1e-4)
    # ... while a different soft token moves it.
    _, kl_other = nll_and_plain_kl(dec, head, conts, soft.roll(1, 0))
    assert kl_other.min().item() > 1e-3


def test_the_kl_gradient_reaches_the_generator_and_adapter_only():
    dec = tiny_decoder()
    lora = with_adapter(dec)
    gen = PromptGenerator(PromptConfig(dim=8, out_dim=dec.hidden_size, num_soft_tokens=2, width=16, depth=1,
                                       heads=2))
    objective = PromptObjective(gen, dec, PromptTrainingConfig(distill_weight=1.0, mixed_precision="no"))
    prefixes, conts = dec.tokenize(["the game was", "the king"]), dec.tokenize(["won by the team", "and queen"])
    x = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
    loss, nll, kl = objective(prefixes, conts, x, torch.full((2,), 0.9), torch.zeros(2, 8))
    assert loss.item() == pytest.approx(nll.mean().item() + kl.mean().item(), rel=1e-5)
    kl.mean().backward()  # the distillation term alone
    assert gen.inp.weight.grad.abs().sum() > 0 and gen.out.weight.grad.abs().sum() > 0  # (gated blocks start at 0)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
    base = [p for n, p in dec.model.named_parameters() if "lora_" not in n]
    assert base and all(not p.requires_grad and p.grad is None for p in base)


def test_distillation_lowers_the_kl_from_plain_decoding(tmp_path):
    words = ["the game was won by the team", "a river of water in the city", "the king and queen of peace",
             "music and art for children"]
    runs = {}
    for weight in (0.0, 2.0):
        dec = tiny_decoder()
        conts, prefix = dec.tokenize(words), dec.tokenize(["the story of"])[0]
        length = max(len(c) for c in conts)
        ids = np.array([prefix + (c + [dec.tokenizer.eos_token_id] * length)[:length] for c in conts for _ in range(8)])
        emb = torch.nn.functional.normalize(torch.randn(4, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
        data = WindowSet(ids, np.full((len(ids), 1), len(prefix)), cont_emb=emb.repeat_interleave(8, 0)[:, None])
        torch.manual_seed(0)
        gen = PromptGenerator(PromptConfig(dim=16, out_dim=dec.hidden_size, num_soft_tokens=4, width=64, depth=2,
                                           heads=4))
        mean, std = torch.zeros(16), torch.full((16,), 0.25)
        cfg = PromptTrainingConfig(steps=60, batch_size=16, lr=3e-3, warmup=5, lora_rank=2, lora_lr=3e-3,
                                   eval_every=1000, save_every=1000, mixed_precision="no", distill_weight=weight)
        train_prompt_generator(gen, dec, data, data, mean, std, cfg, tmp_path / str(weight), show_progress_bar=False)
        runs[weight] = evaluate_plan_use(gen, dec, data, mean, std, batch_size=64)
        log = [json.loads(line) for line in (tmp_path / str(weight) / "log.jsonl").read_text().splitlines()]
        assert ("kl" in log[-1]) == (weight > 0)
        if weight:  # the logged training KL fell
            assert np.mean([r["kl"] for r in log[-10:]]) < np.mean([r["kl"] for r in log[:10]])
    free, distilled = runs[0.0], runs[2.0]
    assert distilled["plain_kl"] < 0.5 * free["plain_kl"]
    assert distilled["gap"] > 0.1  # the plan still matters
