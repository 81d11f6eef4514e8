"""The stages of ``dglm train``: train DGLM for your own encoder, decoder and texts, one resumable step at a
time, each reading what the previous one wrote into a working folder.

======== ============================================================ =========================================
stage    does                                                         writes (under ``WORK``)
======== ============================================================ =========================================
prepare  cut the texts into decoder-token windows, split them, embed  ``data/{train,validation}/``,
         every prefix and continuation once, fit standardisation      ``encoder/``, ``prepare.json``
diffusion train the semantic diffusion model, or reuse a checkpoint's ``runs/diffusion/``, ``diffusion/``
         (same encoder: it never depends on the decoder)
prompt   train the prompt generator (+ optional LoRA adapter) for     ``runs/RUN/`` (``prompt/``, ``lora/``,
         the decoder                                                  ``result.json``)
evaluate the plan-use evaluation of a prompt run                      ``runs/RUN/plan_use.json``
export   the generator (+ adapter) of a run stopped early             ``runs/RUN/prompt/``, ``lora/``
assemble a DGLM checkpoint folder with a model card                   ``--out``
======== ============================================================ =========================================

Each stage is a function taking its pydantic config (``prepare(PrepareConfig(...))``); ``dglm train STAGE``
builds the same config from options generated from its fields (:mod:`dglm.training.cli`). Rerunning a stage
continues it: prepare skips cached splits, the training stages resume from their saved state.

Example:
    >>> PromptStageConfig(work="w", run="lora", training={"steps": 10}).training.steps
    10
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from dglm.config import PresetName, preset_config
from dglm.io import CheckpointError, load_component, read_config, save_component, write_json
from dglm.training.train_diffusion import DiffusionTrainingConfig
from dglm.training.train_prompt import PromptTrainingConfig

logger = logging.getLogger(__name__)

WORK = Field(default="cache/dglm", description="Working folder of the stages (data, runs and trained parts).")
PRESET = Field(default="mini", description=(
    "Preset whose network shapes are used (dimensions always come from the encoder and decoder), a name in "
    "dglm.config.PRESETS."))


class _Stage(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PrepareConfig(_Stage):
    """Settings of :func:`prepare`.

    Example:
        >>> config = PrepareConfig(data="texts/", encoder="sentence-transformers/all-MiniLM-L6-v2",
        ...                        decoder="HuggingFaceTB/SmolLM2-135M-Instruct", window=32)
        >>> config.work, config.window, config.per_window, config.validation_fraction
        ('cache/dglm', 32, 2, 0.05)
    """

    work: str = WORK
    data: str = Field(description=(
        "Training texts: a folder of .txt files (one document each, searched recursively), a JSON Lines file "
        "(one object per line, the text under --text-field), a corpus folder holding train.jsonl and "
        "validation.jsonl (recipes/build_corpus.py), or hf:NAME for a Hugging Face datasets dataset (a hub "
        "name or a save_to_disk folder; needs the datasets package)."))
    validation: str | None = Field(default=None, description=(
        "Held-out texts, in any form --data accepts; default: a corpus folder's validation.jsonl, else "
        "--validation-fraction of the documents, chosen by a hash of their id."))
    validation_fraction: float = Field(default=0.05, gt=0, lt=1, description=(
        "Share of the documents held out when --validation is not given."))
    text_field: str = Field(default="text", description="Key of the text in JSON Lines records and datasets.")
    hf_split: str = Field(default="train", description="Split of a datasets dataset to read.")
    encoder: str = Field(description="Sentence encoder: a sentence-transformers hub id or folder.")
    decoder: str = Field(description=(
        "Decoder whose tokenizer cuts the windows: a Hugging Face causal LM hub id or folder (the prompt stage "
        "trains for it by default)."))
    window: int = Field(default=64, ge=2, description="Tokens per window (windows never cross documents).")
    per_window: int = Field(default=2, gt=0, description="Random word-boundary splits per training window.")
    max_prefix: int = Field(default=48, ge=0, description="Longest training prefix, in tokens.")
    eval_prefix: int = Field(default=32, ge=1, description="Prefix length of the held-out windows' fixed split.")
    max_train_windows: int = Field(default=0, ge=0, description=(
        "Embed a random subset of this many training windows (0 = all)."))
    prefix_embeddings: bool = Field(default=True, description=(
        "Embed the training prefixes (only the diffusion stage reads them)."))
    batch_size: int = Field(default=128, gt=0, description="Encoder batch size.")
    device: str | None = Field(default=None, description="Device of the encoder (default: its own choice).")
    seed: int = Field(default=0, description="Seed of the splits and the subset.")


class DiffusionStageConfig(_Stage):
    """Settings of :func:`diffusion`; ``model`` overrides fields of the preset's ``DiffusionConfig``.

    Example:
        >>> config = DiffusionStageConfig(work="w", preset="tiny", model={"depth": 4}, training={"steps": 40})
        >>> config.model, config.training.steps, config.from_checkpoint
        ({'depth': 4}, 40, None)
    """

    work: str = WORK
    from_checkpoint: str | None = Field(default=None, description=(
        "Reuse this DGLM checkpoint's diffusion model and standardisation statistics (a folder or a packaged "
        "name such as mini) instead of training; its encoder must be the prepared one."))
    preset: PresetName = PRESET
    model: dict = Field(default_factory=dict, description="DiffusionConfig fields that differ from the preset's.")
    training: DiffusionTrainingConfig = Field(default_factory=DiffusionTrainingConfig, description=(
        "Optimisation settings of the diffusion model."))


class PromptStageConfig(_Stage):
    """Settings of :func:`prompt`; ``model`` overrides fields of the preset's ``PromptConfig``.

    Example:
        >>> config = PromptStageConfig(work="w", run="vm", model={"head": "vocab_mixture"}, vocab_skip=100,
        ...                            training={"lora_rank": 16})
        >>> config.model["head"], config.vocab_skip, config.training.lora_rank, config.decoder
        ('vocab_mixture', 100, 16, None)
    """

    work: str = WORK
    run: str = Field(default="prompt", description="Name of the run folder under WORK/runs.")
    decoder: str | None = Field(default=None, description=(
        "Decoder to train for: a hub id or folder with the prepared tokenizer (default: the prepared one)."))
    preset: PresetName = PRESET
    init_from: str | None = Field(default=None, description=(
        "Start the generator from WORK/runs/INIT_FROM/prompt (a new run with its own optimizer)."))
    init_from_checkpoint: str | None = Field(default=None, description=(
        "Start from a DGLM checkpoint folder's prompt generator and decoder adapter, both trained on."))
    vocab_skip: int = Field(default=0, ge=0, description=(
        "vocab_mixture heads: leave out this many most frequent tokens (function words, punctuation)."))
    device: str | None = Field(default=None, description="Device of the decoder (default: accelerate's).")
    model: dict = Field(default_factory=dict, description="PromptConfig fields that differ from the preset's.")
    training: PromptTrainingConfig = Field(default_factory=PromptTrainingConfig, description=(
        "Optimisation settings of the prompt generator (and its adapter)."))


class EvaluateConfig(_Stage):
    """Settings of :func:`evaluate`.

    Example:
        >>> config = EvaluateConfig(work="w", run="r1", sigma2=[0.05, 0.5, 1.0])
        >>> config.sigma2[0], config.eval_limit, config.out_json
        (0.05, 200, None)
    """

    work: str = WORK
    run: str = Field(default="prompt", description="Prompt run to evaluate (WORK/runs/RUN).")
    decoder: str | None = Field(default=None, description="Decoder (default: the prepared one).")
    checkpoint_adapter: str | None = Field(default=None, description=(
        "Decoder adapter folder for a run that has none of its own."))
    sigma2: list[float] = Field(default=[0.05], min_length=1, description=(
        "Re-noising level(s): the first gives the plan-use numbers; with several, the noise-knob curve over "
        "all of them, in increasing order."))
    eval_limit: int = Field(default=200, gt=1, description="Held-out pairs evaluated.")
    out_json: str | None = Field(default=None, description="Where to write the JSON (default: WORK/runs/RUN/plan_use.json).")
    device: str | None = Field(default=None, description="Device of the decoder.")


class ExportConfig(_Stage):
    """Settings of :func:`export`.

    Example:
        >>> ExportConfig(work="w", run="r1").preset
        'mini'
    """

    work: str = WORK
    run: str = Field(default="prompt", description="Prompt run whose latest state is exported.")
    decoder: str | None = Field(default=None, description="Decoder (default: the prepared one).")
    preset: PresetName = Field(default="mini", description=(
        "For a run without prompt_config.json (started before dglm train): the preset of its generator's shape."))
    model: dict = Field(default_factory=dict, description="... and the PromptConfig fields it changed.")


class AssembleConfig(_Stage):
    """Settings of :func:`assemble`.

    Example:
        >>> config = AssembleConfig(work="w", run="r1", out="checkpoint", license="apache-2.0")
        >>> config.out, config.probes, config.preset
        ('checkpoint', None, 'mini')
    """

    work: str = WORK
    run: str = Field(default="prompt", description="Prompt run to ship (WORK/runs/RUN).")
    out: str | None = Field(default=None, description="Checkpoint folder to write (default: WORK/checkpoint).")
    decoder: str | None = Field(default=None, description="Decoder id recorded in the checkpoint (default: the prepared one).")
    probes: str | None = Field(default=None, description="Probe registry folder to ship (default: WORK/probes if present).")
    preset: PresetName = Field(default="mini", description="Preset whose sampling defaults the checkpoint records.")
    license: str | None = Field(default=None, description="Licence in the model card's metadata (default: unknown).")
    card: str | None = Field(default=None, description="A Markdown file appended to the model card (e.g. results).")


# ------------------------------------------------------------------------------------------------- helpers

def _prepared(work: Path) -> PrepareConfig | None:
    return PrepareConfig.model_validate_json((work / "prepare.json").read_text()) \
        if (work / "prepare.json").is_file() else None


def _decoder_id(work: Path, given: str | None) -> str:
    prepared = _prepared(work)
    if given is None and prepared is None:
        raise ValueError(f"decoder=None and {work}/prepare.json is missing: pass --decoder (the prepared tokenizer's)")
    return given or prepared.decoder


def _load(work: Path):
    """Standardisation statistics and the cached train / validation windows (training needs no encoder)."""
    from dglm.config import EncoderConfig
    from dglm.training.data import WindowSet

    if not (work / "encoder" / "config.json").is_file():
        raise FileNotFoundError(f"{work}/encoder is missing: run `dglm train prepare --work {work}` first")
    _, stats = load_component(work / "encoder", EncoderConfig)
    return stats["mean"], stats["std"], WindowSet.load(work / "data" / "train"), \
        WindowSet.load(work / "data" / "validation")


def _is_main() -> bool:
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available()).is_main_process  # as make_accelerator joins


def checkpoint_folder(name_or_path: str) -> Path:
    """A checkpoint folder, or a packaged checkpoint by name (``mini``).

    Example:
        >>> from dglm.hub import PACKAGED
        >>> checkpoint_folder("mini") == PACKAGED / "mini"
        True
        >>> checkpoint_folder("no/such/folder")
        Traceback (most recent call last):
            ...
        dglm.io.CheckpointError: from_checkpoint='no/such/folder' is neither a DGLM checkpoint folder nor a \
packaged checkpoint name
    """
    from dglm.hub import PACKAGED, PIPELINE_FILE

    folder = Path(name_or_path)
    if not folder.is_dir() and (PACKAGED / name_or_path).is_dir():
        folder = PACKAGED / name_or_path
    if not (folder / PIPELINE_FILE).is_file():
        raise CheckpointError(f"from_checkpoint={name_or_path!r} is neither a DGLM checkpoint folder nor a packaged "
                              f"checkpoint name")
    return folder


# ------------------------------------------------------------------------------------------------- stages

def prepare(c: PrepareConfig) -> None:
    """Windows, splits and cached embeddings of the texts, and the standardisation statistics.

    Example (a work folder keeps its encoder, decoder and window: rerunning continues it, changing them is
    refused before anything is loaded):
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as work:
        ...     first = PrepareConfig(work=work, data="texts/", encoder="enc", decoder="dec")
        ...     write_json(Path(work, "prepare.json"), first.model_dump(mode="json"))
        ...     prepare(first.model_copy(update={"window": 32}))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        ValueError: ... was prepared for encoder='enc', decoder='dec', window=64; use another --work for \
encoder='enc', decoder='dec', window=32
    """
    from transformers import AutoTokenizer

    from dglm.assets import resolve_decoder
    from dglm.encoder import SemanticEncoder
    from dglm.training.data import WindowSet, build_windows
    from dglm.training.texts import read_documents

    work = Path(c.work)
    before = _prepared(work)
    if before is not None and (before.encoder, before.decoder, before.window) != (c.encoder, c.decoder, c.window):
        raise ValueError(f"{work} was prepared for encoder={before.encoder!r}, decoder={before.decoder!r}, "
                         f"window={before.window}; use another --work for encoder={c.encoder!r}, "
                         f"decoder={c.decoder!r}, window={c.window}")
    encoder = SemanticEncoder.from_pretrained(c.encoder, device=c.device)
    tokenizer = AutoTokenizer.from_pretrained(resolve_decoder(c.decoder))
    data = work / "data"
    train_docs, val_docs = read_documents(c.data, c.validation, c.text_field, c.hf_split, c.validation_fraction,
                                          c.seed)
    for split, docs, kwargs in (("validation", val_docs, {"fixed_split": c.eval_prefix}),
                                ("train", train_docs, {"per_window": c.per_window, "max_prefix": c.max_prefix})):
        if (data / split / "windows.safetensors").is_file():
            logger.info("%s: cached in %s", split, data / split)
            continue
        windows = build_windows(docs, tokenizer, window=c.window, seed=c.seed, **kwargs)
        if not len(windows):
            raise ValueError(f"no {split} text is {c.window} tokens long (window={c.window}); give longer texts or "
                             f"a smaller --window")
        if split == "train" and c.max_train_windows and len(windows) > c.max_train_windows:
            keep = np.sort(np.random.default_rng(c.seed).choice(len(windows), c.max_train_windows, replace=False))
            windows = WindowSet(windows.ids[keep], windows.splits[keep])
        logger.info("%s: %d documents -> %d windows; embedding", split, len(docs), len(windows))
        prefixes = split == "validation" or c.prefix_embeddings
        windows.embed(encoder, tokenizer, c.batch_size, show_progress_bar=True, prefixes=prefixes).save(data / split)
    train = WindowSet.load(data / "train")
    encoder.fit_standardization(train.cont_emb.reshape(-1, encoder.dim).float())
    encoder.save_pretrained(work / "encoder")
    write_json(work / "prepare.json", c.model_dump(mode="json"))


def diffusion(c: DiffusionStageConfig) -> None:
    """Train the diffusion model on the prepared pairs, or reuse a checkpoint's (same encoder).

    Example (reusing the packaged ``mini`` checkpoint's model in a work folder prepared for its encoder):
        >>> import shutil, tempfile
        >>> with tempfile.TemporaryDirectory() as work:
        ...     _ = shutil.copytree(checkpoint_folder("mini") / "encoder", Path(work, "encoder"))
        ...     diffusion(DiffusionStageConfig(work=work, from_checkpoint="mini"))
        ...     sorted(p.name for p in Path(work, "diffusion").iterdir())
        ['config.json', 'model.safetensors']
    """
    from dglm.config import DiffusionConfig, EncoderConfig
    from dglm.diffusion import SemanticDiffuser
    from dglm.training.train_diffusion import train_diffuser

    work = Path(c.work)
    if c.from_checkpoint:
        folder = checkpoint_folder(c.from_checkpoint)
        theirs, stats = load_component(folder / "encoder", EncoderConfig)
        ours = read_config(work / "encoder" / "config.json", EncoderConfig)
        if (theirs.name_or_path, theirs.dim) != (ours.name_or_path, ours.dim):
            raise ValueError(f"from_checkpoint={c.from_checkpoint!r} was trained on encoder {theirs.name_or_path!r} "
                             f"({theirs.dim}-d), the work folder on {ours.name_or_path!r} ({ours.dim}-d); its "
                             f"diffusion model is reusable only with the same encoder")
        # Its standardised space replaces the prepared one, so the prompt stage trains in the same space.
        save_component(work / "encoder", theirs, stats)
        SemanticDiffuser.from_pretrained(folder / "diffusion").float().save_pretrained(work / "diffusion")
        logger.info("reused the diffusion model and statistics of %s", folder)
        return
    mean, std, train, val = _load(work)
    if train.prefix_emb is None:
        raise ValueError(f"{work}/data/train has no prefix embeddings (prepared with --no-prefix-embeddings); "
                         f"prepare again with them, or reuse a checkpoint's model with --from-checkpoint")
    config = DiffusionConfig.model_validate({**preset_config(c.preset).diffusion.model_dump(), **c.model,
                                             "dim": mean.shape[0]})

    def standard(e):  # raw (N, S, d) -> standardised (N * S, d)
        return ((e.float() - mean) / std).reshape(-1, mean.shape[0])

    ema = train_diffuser(SemanticDiffuser(config), standard(train.prefix_emb), standard(train.cont_emb),
                         c.training, out_dir=work / "runs" / "diffusion",
                         heldout=(standard(val.prefix_emb), standard(val.cont_emb)))
    if _is_main():
        ema.save_pretrained(work / "diffusion")


def prompt(c: PromptStageConfig) -> dict:
    """Train the prompt generator (and an adapter, with ``lora_rank``) for the decoder; returns the final
    plan-use evaluation (``{}`` on processes other than the main one).

    Example (it trains on what :func:`prepare` wrote, and says so when that is missing):
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as work:
        ...     prompt(PromptStageConfig(work=work, run="r1", training={"steps": 20}))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        FileNotFoundError: .../encoder is missing: run `dglm train prepare --work ...` first
    """
    from dglm.config import PromptConfig
    from dglm.decoder import Decoder
    from dglm.prompt import PromptGenerator
    from dglm.training.train_prompt import train_prompt_generator

    work = Path(c.work)
    mean, std, train, val = _load(work)
    decoder = Decoder.from_pretrained(_decoder_id(work, c.decoder), device=c.device)
    run = work / "runs" / c.run
    if c.init_from:
        generator = PromptGenerator.from_pretrained(work / "runs" / c.init_from / "prompt").float()
    elif c.init_from_checkpoint:
        folder = Path(c.init_from_checkpoint)
        generator = PromptGenerator.from_pretrained(folder / "prompt").float()
        if (folder / "decoder_adapter").is_dir():
            decoder.load_adapter(folder / "decoder_adapter")
    else:
        config = PromptConfig.model_validate({**preset_config(c.preset).prompt.model_dump(), **c.model,
                                              "dim": mean.shape[0], "out_dim": decoder.hidden_size})
        generator = PromptGenerator(config)
        if config.head == "vocab_mixture":  # frequent content tokens of the training windows
            counts = np.bincount(train.ids.ravel(), minlength=len(decoder.tokenizer))
            ranked = np.argsort(-counts, kind="stable")[c.vocab_skip:c.vocab_skip + config.vocab_size]
            generator.vocab_ids.copy_(torch.from_numpy(ranked.copy()))
    if _is_main():
        run.mkdir(parents=True, exist_ok=True)
        write_json(run / "prompt_config.json", generator.config.model_dump(mode="json"))
    diffuser = None
    if c.training.diffused_fraction:  # diffused plans imitate this work folder's diffusion model
        from dglm.diffusion import SemanticDiffuser

        if not (work / "diffusion").is_dir():
            raise FileNotFoundError(f"diffused_fraction={c.training.diffused_fraction} needs {work}/diffusion: run "
                                    f"`dglm train diffusion --work {work}` first")
        diffuser = SemanticDiffuser.from_pretrained(work / "diffusion").float().eval()
    result = train_prompt_generator(generator, decoder, train, val, mean, std, c.training, run,
                                    diffuser=diffuser)
    if _is_main():
        generator.save_pretrained(run / "prompt")
        if decoder.has_adapter:
            decoder.save_adapter(run / "lora")
        if result or not (run / "result.json").is_file():  # (a rerun of a finished run trains nothing)
            write_json(run / "result.json", {"config": c.model_dump(mode="json"), "eval": result})
    return result


def evaluate(c: EvaluateConfig) -> dict:
    """The plan-use evaluation of a prompt run (NLL plain / true / shuffled, with and without the prefix, and
    topic switches; with several ``sigma2``, the noise-knob curve), written as JSON and returned.

    Example (it reads the prepared held-out windows, and says so when they are missing):
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as work:
        ...     evaluate(EvaluateConfig(work=work, run="r1", eval_limit=8))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        FileNotFoundError: .../encoder is missing: run `dglm train prepare --work ...` first
    """
    from dglm.decoder import Decoder
    from dglm.prompt import PromptGenerator
    from dglm.training.data import sentence_ends, word_starts
    from dglm.training.plan_use import evaluate_plan_use, noise_knob_curve

    work = Path(c.work)
    mean, std, _, val = _load(work)
    decoder = Decoder.from_pretrained(_decoder_id(work, c.decoder), device=c.device)
    run = work / "runs" / c.run
    generator = PromptGenerator.from_pretrained(run / "prompt").float().to(decoder.device)
    if (run / "lora").is_dir():
        decoder.load_adapter(run / "lora")
    elif c.checkpoint_adapter:
        decoder.load_adapter(c.checkpoint_adapter)
    generator.bind(decoder.embeddings.weight)
    result = evaluate_plan_use(generator, decoder, val, mean, std, sigma2=c.sigma2[0], limit=c.eval_limit,
                               ends=sentence_ends(decoder.tokenizer), starts=word_starts(decoder.tokenizer))
    if len(c.sigma2) > 1:
        result["noise_knob"] = noise_knob_curve(generator, decoder, val, mean, std, sorted(c.sigma2),
                                                limit=c.eval_limit)
    program = "dglm" if Path(sys.argv[0]).name == "dglm" else f"python {sys.argv[0]}"
    result["command"] = " ".join([program, *sys.argv[1:]])
    out = Path(c.out_json) if c.out_json else run / "plan_use.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def export(c: ExportConfig) -> None:
    """Write the generator (and adapter) of a prompt run's latest state to its ``prompt/`` (and ``lora/``).

    Example (a run's saved training state, as the prompt stage writes it, exported as a generator folder):
        >>> import tempfile
        >>> from dglm.config import PromptConfig
        >>> from dglm.prompt import PromptGenerator
        >>> from dglm.training.loop import save_state
        >>> generator = PromptGenerator(PromptConfig(dim=8, out_dim=16, num_soft_tokens=2, width=16, depth=1,
        ...                                          heads=2))
        >>> with tempfile.TemporaryDirectory() as work:
        ...     run = Path(work, "runs", "r1")
        ...     optimizer = torch.optim.AdamW(generator.parameters())
        ...     save_state(run / "state", {"generator": generator}, optimizer, step=7)
        ...     write_json(run / "prompt_config.json", generator.config.model_dump(mode="json"))
        ...     export(ExportConfig(work=work, run="r1"))
        ...     exported = PromptGenerator.from_pretrained(run / "prompt")
        >>> all(torch.equal(a, b) for a, b in zip(exported.parameters(), generator.parameters(), strict=True))
        True
    """
    from dglm.config import PromptConfig
    from dglm.decoder import Decoder
    from dglm.io import load_state, load_tensors, read_json
    from dglm.prompt import PromptGenerator

    run = Path(c.work) / "runs" / c.run
    tensors, meta = load_tensors(run / "state" / "state.safetensors"), read_json(run / "state" / "state.json")
    if (run / "prompt_config.json").is_file():
        config = read_config(run / "prompt_config.json", PromptConfig)
    else:  # a run started before the prompt stage recorded its generator's config
        config = PromptConfig.model_validate({**preset_config(c.preset).prompt.model_dump(), **c.model})
    generator = PromptGenerator(config)
    load_state(generator, {k[len("generator."):]: v for k, v in tensors.items()
                           if k.startswith("generator.") and k != "generator._embeddings"}, run / "state")
    generator.save_pretrained(run / "prompt")
    lora = [tensors[f"lora.{i}"] for i in range(sum(k.startswith("lora.") for k in tensors))]
    if lora:  # the adapter's parameters, in the order Decoder.add_adapter returned them
        rank = meta["config"]["lora_rank"] or lora[0].shape[0]  # lora_A of the first module: (rank, in)
        decoder = Decoder.from_pretrained(_decoder_id(Path(c.work), c.decoder))
        with torch.no_grad():
            for param, value in zip(decoder.add_adapter(rank), lora, strict=True):
                param.copy_(value)
        decoder.save_adapter(run / "lora")
    logger.info("exported step %d of %s", meta["step"], run)


def assemble(c: AssembleConfig) -> Path:
    """A DGLM checkpoint folder (fp16 weights) with a model card (README.md); returns its path.

    Example (it assembles the parts the other stages wrote, and names the first one missing):
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as work:
        ...     assemble(AssembleConfig(work=work, run="r1", out=f"{work}/checkpoint"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        dglm.io.CheckpointError: checkpoint folder .../encoder does not exist
    """
    from dglm.decoder import Decoder
    from dglm.diffusion import SemanticDiffuser
    from dglm.encoder import SemanticEncoder
    from dglm.pipeline import DGLM
    from dglm.prompt import PromptGenerator
    from dglm.training.model_card import training_report

    work, run = Path(c.work), Path(c.work) / "runs" / c.run
    out = Path(c.out) if c.out else work / "checkpoint"
    encoder = SemanticEncoder.from_pretrained_stats(work / "encoder")
    decoder = Decoder.from_pretrained(_decoder_id(work, c.decoder))
    if (run / "lora").is_dir():  # shipped as the checkpoint's decoder_adapter/
        decoder.load_adapter(run / "lora")
    probes, probe_folder = None, Path(c.probes) if c.probes else work / "probes"
    if probe_folder.is_dir():
        from dglm.constraints import ProbeRegistry

        probes = ProbeRegistry.load(probe_folder)
    pipe = DGLM(encoder, SemanticDiffuser.from_pretrained(work / "diffusion").half(),
                PromptGenerator.from_pretrained(run / "prompt").half(), decoder, preset_config(c.preset).sampling,
                probes)
    card = training_report(work, run)
    if c.card:  # its title dropped, its sections nested under the card's
        extra = Path(c.card).read_text(encoding="utf-8").split("\n", 1)[-1].replace("\n## ", "\n### ")
        card += f"\n## Results ({c.card}; its links are relative to its folder)\n{extra}"
    pipe.save_pretrained(out, license=c.license, card_text=card)
    logger.info("wrote %s", out)
    return out


STAGES = {"prepare": (PrepareConfig, prepare), "diffusion": (DiffusionStageConfig, diffusion),
          "prompt": (PromptStageConfig, prompt), "evaluate": (EvaluateConfig, evaluate),
          "export": (ExportConfig, export), "assemble": (AssembleConfig, assemble)}


def train(stage: str, **settings):
    """Run one stage by name with its settings: the Python form of ``dglm train STAGE --option ...``.

    Example:
        >>> train("prepare", work="w")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        pydantic_core._pydantic_core.ValidationError: 3 validation errors for PrepareConfig
        ...
    """
    if stage not in STAGES:
        raise ValueError(f"stage={stage!r}; accepted: {', '.join(STAGES)}")
    config_class, run = STAGES[stage]
    return run(config_class.model_validate(settings))

