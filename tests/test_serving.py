"""vLLM requests from dglm plans, checked on CPU without vLLM: unpadded prompt-embedding rows, the adapter
in peft's format (what vLLM's LoRA loader reads), and the sampling keywords."""

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
from conftest import make_llama, make_tokenizer
from safetensors.torch import load_file

from dglm import DGLM, Controller, near
from dglm.decoder import Decoder
from dglm.pipeline import DEFAULT_GENERATE_KWARGS
from dglm.presets import random_pipeline
from dglm.serving import export_adapter, unpad_rows, vllm_requests, vllm_sampling_kwargs

PREFIXES = ["the game was", "", "a river of water in the city"]


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # peft looks the adapter's base model up on the hub when saving
    monkeypatch.setenv("DGLM_CACHE", str(tmp_path / "cache"))  # where adapters are exported for vLLM


@pytest.fixture(scope="module")
def llama_pipe():
    """A tiny pipeline around a Llama decoder (the architecture vLLM serves with LoRA) with a LoRA adapter."""
    parts, tok = random_pipeline("tiny"), make_tokenizer()
    decoder = Decoder(make_llama(len(tok)), tok, "org/tiny-llama")
    pipe = DGLM(parts.encoder, parts.diffuser, parts.prompt_generator, decoder, parts.sampling)
    with torch.no_grad():
        for p in decoder.add_adapter(rank=4):
            p.normal_(0, 0.2)  # a trained-looking adapter: lora_B is zero at initialisation
    return pipe


def test_rows_are_the_unpadded_rows_of_the_batch(llama_pipe):
    ctl = Controller(near("the team won the match"), llama_pipe)
    embeds, mask = ctl.prompt_embeds(PREFIXES, 2, seed=3, steps=3, max_new_tokens=4)
    reqs = vllm_requests(ctl, PREFIXES, 2, seed=3, steps=3, max_new_tokens=4)
    assert len(reqs.prompts) == len(PREFIXES) * 2 == embeds.shape[0]
    for i, prompt in enumerate(reqs.prompts):
        row = prompt["prompt_embeds"]
        assert set(prompt) == {"prompt_embeds"} and row.device.type == "cpu"
        assert row.shape == (int(mask[i].sum()), embeds.shape[2])
        assert torch.equal(row, embeds[i, -row.shape[0]:]) and not mask[i, :-row.shape[0]].any()  # left padding
    lengths = [p["prompt_embeds"].shape[0] for p in reqs.prompts]
    assert lengths[0] == lengths[1] and lengths[2] < lengths[0] < lengths[4]  # the empty prefix: soft tokens only


def test_an_unpadded_row_alone_decodes_what_its_padded_batch_row_decodes(llama_pipe):
    """What an engine does with one row (no padding, positions from 0) equals the batched HF decode."""
    ctl = Controller(None, llama_pipe)
    embeds, mask = ctl.prompt_embeds(PREFIXES, 1, seed=0, steps=3)
    model, greedy = llama_pipe.decoder.model, dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    batch = model.generate(inputs_embeds=embeds, attention_mask=mask, **greedy)
    for i, row in enumerate(unpad_rows(embeds, mask)):
        alone = model.generate(inputs_embeds=row[None], attention_mask=torch.ones(1, row.shape[0], dtype=torch.long),
                               **greedy)
        assert alone[0].tolist() == batch[i].tolist()


def test_the_adapter_is_written_in_peft_format_for_vllm(llama_pipe, tmp_path):
    reqs = vllm_requests(Controller(None, llama_pipe), ["the game was"], steps=2, seed=0)
    folder = tmp_path / "cache" / "vllm-adapters"
    assert reqs.adapter_rank == 4 and reqs.adapter_path.startswith(str(folder))
    config = json.loads((Path(reqs.adapter_path) / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8
    assert config["base_model_name_or_path"] == "org/tiny-llama" and config["bias"] == "none"
    assert not config["use_dora"] and config["modules_to_save"] is None and not config["fan_in_fan_out"]
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    tensors = load_file(f"{reqs.adapter_path}/adapter_model.safetensors")
    pattern = re.compile(r"^base_model\.model\.model\.layers\.\d+\.self_attn\.[qkvo]_proj\.lora_[AB]\.weight$")
    assert tensors and all(pattern.match(name) for name in tensors), sorted(tensors)[:4]
    a = tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    b = tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    assert a.shape == (4, 32) and b.shape[1] == 4
    # The same adapter maps to the same folder, written once.
    again = vllm_requests(Controller(None, llama_pipe), ["a"], steps=2, seed=0)
    assert again.adapter_path == reqs.adapter_path and len(list(folder.iterdir())) == 1
    # The folder round-trips through peft onto a fresh base model: same logits as the pipeline's adapter.
    from peft import PeftModel

    tok = make_tokenizer()
    fresh = PeftModel.from_pretrained(make_llama(len(tok)), reqs.adapter_path).eval()
    ids = torch.tensor([tok("the game was won").input_ids])
    with torch.no_grad():
        assert torch.allclose(fresh(ids).logits, llama_pipe.decoder.model(ids).logits, atol=1e-5)


def test_lora_request_needs_vllm_and_nothing_else_does(llama_pipe, tmp_path):
    reqs = vllm_requests(Controller(None, llama_pipe), ["a"], steps=2, seed=0, adapter_folder=tmp_path / "lora")
    assert reqs.adapter_path == str(tmp_path / "lora")
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ImportError, match="needs vLLM"):
            reqs.lora_request()
    else:
        request = reqs.lora_request(lora_int_id=7)
        assert (request.lora_name, request.lora_int_id, request.lora_path) == (reqs.adapter_name, 7, reqs.adapter_path)
    assert export_adapter(random_pipeline("tiny").decoder) is None  # no adapter: no LoRA request
    assert vllm_requests(Controller(None, random_pipeline("tiny")), ["a"], steps=2).lora_request() is None


def test_sampling_keywords_map_to_vllm_names():
    assert vllm_sampling_kwargs(DEFAULT_GENERATE_KWARGS) == {"top_p": 0.9, "repetition_penalty": 1.2,
                                                             "max_tokens": 32}
    assert vllm_sampling_kwargs({"do_sample": False, "min_new_tokens": 2}) == {"min_tokens": 2, "temperature": 0.0}
    with pytest.raises(ValueError, match="'logits_processor' has no vLLM"):
        vllm_sampling_kwargs({"logits_processor": []})
    with pytest.raises(ValueError, match=r"inputs_embeds must be \(B, T, h\)"):
        unpad_rows(torch.zeros(2, 3), torch.ones(2, 3))
