import pytest
import torch

from dglm.decoder import Decoder

PREFIXES = ["the game was", "a player won the match last night and the team", "", "water"]
GREEDY = dict(max_new_tokens=6, do_sample=False)


def test_left_padded_batch_matches_each_prefix_alone(tiny_decoder):
    soft = torch.randn(len(PREFIXES), 3, tiny_decoder.hidden_size) * 0.05
    batch = tiny_decoder.generate(PREFIXES, soft, **GREEDY)
    alone = [tiny_decoder.generate([p], soft[i:i + 1], **GREEDY)[0] for i, p in enumerate(PREFIXES)]
    assert batch == alone


def test_plain_decoding_batch_matches_alone_including_empty_prefix(tiny_decoder):
    batch = tiny_decoder.generate(PREFIXES, **GREEDY)
    alone = [tiny_decoder.generate([p], **GREEDY)[0] for p in PREFIXES]
    assert batch == alone


def test_repetition_penalty_batch_matches_alone(tiny_decoder):
    # transformers' own penalty exempts a left-padded row's first generated tokens; the decoder's does not
    kw = dict(GREEDY, max_new_tokens=12, min_new_tokens=12, repetition_penalty=1.5)
    soft = torch.randn(len(PREFIXES), 3, tiny_decoder.hidden_size) * 0.05
    batch = tiny_decoder.generate(PREFIXES, soft, **kw)
    assert batch == [tiny_decoder.generate([p], soft[i:i + 1], **kw)[0] for i, p in enumerate(PREFIXES)]
    assert batch != tiny_decoder.generate(PREFIXES, soft, **dict(kw, repetition_penalty=1.0))


def test_cached_and_uncached_greedy_agree(tiny_decoder):
    soft = torch.randn(len(PREFIXES), 2, tiny_decoder.hidden_size) * 0.05
    assert tiny_decoder.generate(PREFIXES, soft, use_cache=True, **GREEDY) == \
        tiny_decoder.generate(PREFIXES, soft, use_cache=False, **GREEDY)


def test_soft_tokens_change_the_output(tiny_decoder):
    a = torch.randn(1, 4, tiny_decoder.hidden_size)
    outs = {tiny_decoder.generate(["the game was"], a * s, **GREEDY)[0] for s in (0.0, 3.0, -3.0)}
    assert len(outs) > 1


def test_generate_kwargs_pass_through_and_seed_is_reproducible(tiny_decoder):
    kw = dict(max_new_tokens=5, do_sample=True, top_p=0.9, repetition_penalty=1.2, num_return_sequences=3)
    a = tiny_decoder.generate(PREFIXES[:2], seed=7, **kw)
    b = tiny_decoder.generate(PREFIXES[:2], seed=7, **kw)
    assert len(a) == 6 and a == b


def test_nll_matches_model_loss_and_soft_gets_gradients(tiny_decoder):
    tok = tiny_decoder.tokenize(["the game was won by the team", "a player"])
    prefix, cont = [tok[0][:3], tok[1][:1]], [tok[0][3:], tok[1][1:]]
    nll = tiny_decoder.continuation_nll(prefix, cont)
    ids = torch.tensor([tok[0]])
    labels = ids.clone()
    labels[:, :3] = -100
    expected = tiny_decoder.model(ids, labels=labels).loss
    assert torch.allclose(nll[0], expected, atol=1e-5)
    soft = torch.zeros(2, 2, tiny_decoder.hidden_size, requires_grad=True)
    tiny_decoder.continuation_nll(prefix, cont, soft).sum().backward()
    assert soft.grad.abs().sum() > 0


def test_weights_untouched(tiny_decoder):
    before = {k: v.clone() for k, v in tiny_decoder.model.state_dict().items()}
    tiny_decoder.generate(PREFIXES, torch.randn(4, 2, tiny_decoder.hidden_size), **GREEDY)
    assert all(torch.equal(before[k], v) for k, v in tiny_decoder.model.state_dict().items())


def test_bad_prefixes(tiny_decoder):
    with pytest.raises(ValueError, match="non-empty"):
        tiny_decoder.generate([])
    with pytest.raises(TypeError, match=r"prefixes\[1\]"):
        tiny_decoder.generate(["ok", 3])
    with pytest.raises(TypeError, match="single str"):
        tiny_decoder.generate("a string")


def test_tokenizer_without_pad_token_uses_eos():
    from conftest import make_gpt2, make_tokenizer

    tok = make_tokenizer(padding=False)
    dec = Decoder(make_gpt2(len(tok)), tok)
    assert dec.pad_token_id == tok.eos_token_id
    assert len(dec.generate(["the game", "a"], **GREEDY)) == 2


def test_a_zero_or_negative_repetition_penalty_is_refused_not_read_as_off(tiny_decoder):
    # The decoder takes checked values (the pipeline's door names the knob, tests/test_knobs.py); below it,
    # transformers' own processor still refuses a penalty that would read as "off".
    for penalty in (0, 0.0, -1.2):
        with pytest.raises(ValueError, match=r"penalty.*strictly positive"):
            tiny_decoder.generate(PREFIXES, None, max_new_tokens=2, repetition_penalty=penalty)
