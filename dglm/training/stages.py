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

Each stage is a function taking its pydantic config (``prepare(PrepareConfig(...))``, the configs in
:mod:`dglm.training.stage_configs`); ``dglm train STAGE``
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

from dglm.config import preset_config
from dglm.io import CheckpointError, load_component, read_config, save_component, write_json
from dglm.training.stage_configs import (
    AssembleConfig,
    DiffusionStageConfig,
    EvaluateConfig,
    ExportConfig,
    PrepareConfig,
    PromptStageConfig,
)

logger = logging.getLogger(__name__)


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
    from dglm.data.corpus import parse_source_weights

    train_docs, val_docs = read_documents(c.data, c.validation, c.text_field, c.hf_split, c.validation_fraction,
                                          c.seed, parse_source_weights(c.source_weights))
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
    from dglm.data.windows import word_starts
    from dglm.decoder import Decoder
    from dglm.prompt import PromptGenerator
    from dglm.training.data import sentence_ends
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

