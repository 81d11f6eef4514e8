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

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from dglm.config import preset_config
from dglm.io import (
    CheckpointError,
    check_apart,
    check_output_file,
    check_output_folder,
    folder_lock,
    json_with_keys,
    load_component,
    output_record,
    read_config,
    read_text,
    save_component,
    write_json,  # noqa: F401  (the examples write records with it)
    write_output,
)
from dglm.training.stage_configs import (
    AssembleConfig,
    DiffusionStageConfig,
    EvaluateConfig,
    ExportConfig,
    PrepareConfig,
    PromptStageConfig,
)

logger = logging.getLogger(__name__)


MAX_CARD_BYTES = 1_000_000  # --card: a Markdown results page, read with this bound
PREPARED = json_with_keys("work", "data", "encoder", "decoder", "window")  # prepare.json, as prepare writes it
PLAN_USE = json_with_keys("command", "plain", "gap")  # an evaluate result


def _prepared(work: Path) -> PrepareConfig | None:
    from dglm.io import read_json

    if not (work / "prepare.json").is_file():
        return None
    try:
        return PrepareConfig.model_validate(read_json(work / "prepare.json"))
    except ValueError as e:  # (pydantic's ValidationError is a ValueError)
        raise CheckpointError(f"{work}/prepare.json is not a prepare record: {e}") from e


def _local(name_or_path: str | None) -> str | None:
    """A model or data argument as an absolute path when it names a local path (else as given: a hub id)."""
    if name_or_path is None or name_or_path.startswith("hf:") or not os.path.lexists(name_or_path):
        return name_or_path
    return str(Path(name_or_path).resolve())


@contextlib.contextmanager
def _guarded(work: Path, outputs: dict[str, Path], inputs: dict[str, str | None], create: bool = False):
    """The checks every stage makes before writing: no output lies in or over an input (the models, texts,
    checkpoints it reads, even inside ``work``), and one process per work folder (a ``filelock`` lock, taken
    by the main process of a data-parallel run). Only ``prepare`` (``create``) makes a missing work folder."""
    if not create and not work.exists():
        raise FileNotFoundError(f"--work {work} does not exist: run `dglm train prepare --work {work}` first "
                                f"(or pass the work folder it wrote)")
    check_apart(outputs, inputs)
    if int(os.environ.get("RANK", "0")) != 0:  # another process of an `accelerate launch` run: rank 0 holds it
        yield
        return
    with folder_lock(work):
        yield


def _check_component(folder: Path, config_class, overwrite: bool, what: str) -> None:
    check_output_folder(folder, "component", overwrite=overwrite, owns=lambda f: _config_of(f, config_class),
                        what=what)


def _decoder_input(work: Path, given: str | None) -> str | None:
    """The decoder a stage reads (given, else the prepared one), as an input that is never written."""
    if given is not None:
        return given
    prepared = _prepared(work) if (work / "prepare.json").is_file() else None
    return prepared.decoder if prepared is not None else None


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


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """torch's global random state seeded with ``seed`` inside this block (the models' initial weights, the
    adapter's, dropout), and as it was after it: the same seed, data and machine train the same weights.

    Example:
        >>> with _seeded(3):
        ...     a = torch.randn(2)
        >>> with _seeded(3):
        ...     b = torch.randn(2)
        >>> torch.equal(a, b)
        True
    """
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []):
        torch.manual_seed(seed)
        yield


def _layout(log: Path) -> dict | None:
    """How the run was spread over processes, as the last line of its ``log.jsonl`` records it
    (:func:`dglm.training.loop.process_layout`); None without one."""
    lines = log.read_text().splitlines() if log.is_file() else []
    last = json.loads(lines[-1]) if lines else {}
    return {k: last[k] for k in ("world_size", "ranks", "accumulation") if k in last} or None


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

    The cached windows are keyed by every setting they depend on (texts, models, window, splits, seed): a
    rerun with the same settings continues (a split already made is kept), other settings are refused before
    anything is loaded, unless ``overwrite`` (then everything is made again). The texts and models are never
    written, even inside the work folder, and are recorded by absolute path.

    Example (a work folder keeps its settings: changing them is refused before anything is loaded):
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as work:
        ...     first = PrepareConfig(work=work, data="texts/", encoder="enc", decoder="dec")
        ...     write_json(Path(work, "prepare.json"), first.model_dump(mode="json"))
        ...     prepare(first.model_copy(update={"window": 32}))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        ValueError: ... was prepared with other settings (window=64, now 32); use another --work, or pass \
--overwrite to prepare it again
    """
    from dglm.config import EncoderConfig

    work = Path(c.work)
    # Models and texts are recorded by absolute path, so later stages run from any folder.
    c = c.model_copy(update={k: _local(getattr(c, k)) for k in ("data", "validation", "encoder", "decoder")})
    data = work / "data"
    outputs = {"--work/data/train": data / "train", "--work/data/validation": data / "validation",
               "--work/encoder": work / "encoder", "--work/prepare.json": work / "prepare.json"}
    with _guarded(work, outputs, {"--data": c.data, "--validation": c.validation, "--encoder": c.encoder,
                                  "--decoder": c.decoder}, create=True):
        before = _prepared(work)
        settings = _settings(c)
        if before is not None and not c.overwrite and _settings(before) != settings:
            raise ValueError(f"{work} was prepared with other settings ({_changes(_settings(before), settings)}); "
                             f"use another --work, or pass --overwrite to prepare it again")
        cached = {}
        for split in ("validation", "train"):
            folder = data / split
            check_output_folder(folder, "windows", overwrite=c.overwrite, what=f"--work/data/{split}")
            if c.overwrite or not (folder / "windows.safetensors").is_file():
                continue
            key = output_record(folder).get("settings")
            if key is None and before is not None:  # made by an older dglm: the settings prepare.json records
                key = _settings(before)
            if key is None:
                raise ValueError(f"{folder} holds {split} windows whose settings are not recorded (a prepare that "
                                 f"did not finish under an older dglm); pass --overwrite to make them again")
            if key != settings:
                raise ValueError(f"{folder} holds {split} windows made with other settings "
                                 f"({_changes(key, settings)}); use another --work, or pass --overwrite to make "
                                 f"them again")
            cached[split] = True
        _check_component(work / "encoder", EncoderConfig, c.overwrite, "--work/encoder")
        check_output_file(work / "prepare.json", overwrite=c.overwrite, owns=PREPARED, what="--work/prepare.json")
        _prepare(c, work, data, cached, settings)


def _settings(c: PrepareConfig) -> dict:
    """What the prepared windows depend on (paths made absolute, as recorded)."""
    settings = c.model_dump(mode="json", exclude={"work", "batch_size", "device", "overwrite"})
    return settings | {k: _local(settings[k]) for k in ("data", "validation", "encoder", "decoder")}


def _changes(old: dict, new: dict) -> str:
    return ", ".join(f"{k}={old.get(k)!r}, now {v!r}" for k, v in new.items() if old.get(k) != v)


def _prepare(c: PrepareConfig, work: Path, data: Path, cached: dict[str, bool], settings: dict) -> None:
    from transformers import AutoTokenizer

    from dglm.assets import load_encoder, resolve_decoder
    from dglm.data.corpus import parse_source_weights
    from dglm.training.data import WindowSet, build_windows
    from dglm.training.texts import read_documents

    encoder = load_encoder(c.encoder, device=c.device)
    tokenizer = AutoTokenizer.from_pretrained(resolve_decoder(c.decoder))
    train_docs, val_docs = read_documents(c.data, c.validation, c.text_field, c.hf_split, c.validation_fraction,
                                          c.seed, parse_source_weights(c.source_weights))
    for split, docs, kwargs in (("validation", val_docs, {"fixed_split": c.eval_prefix}),
                                ("train", train_docs, {"per_window": c.per_window, "max_prefix": c.max_prefix})):
        if cached.get(split):
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
        windows.embed(encoder, tokenizer, c.batch_size, show_progress_bar=True, prefixes=prefixes).save(
            data / split, {"settings": settings}, overwrite=c.overwrite)
    train = WindowSet.load(data / "train")
    encoder.fit_standardization(train.cont_emb.reshape(-1, encoder.dim).float())
    save_component(work / "encoder", encoder.config, {"mean": encoder.mean, "std": encoder.std},
                   overwrite=c.overwrite)
    write_output(work / "prepare.json", _json(c.model_dump(mode="json")), overwrite=c.overwrite, owns=PREPARED,
                 what="--work/prepare.json")


def _json(data: dict, sort_keys: bool = True) -> str:
    import json

    return json.dumps(data, indent=2, sort_keys=sort_keys) + "\n"


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

    work = Path(c.work)
    folder = checkpoint_folder(c.from_checkpoint) if c.from_checkpoint else None
    outputs = {"--work/diffusion": work / "diffusion", "--work/runs/diffusion": work / "runs" / "diffusion"}
    if folder is not None:
        outputs["--work/encoder"] = work / "encoder"
    with _guarded(work, outputs, {"--from-checkpoint": folder}):
        _check_component(work / "diffusion", DiffusionConfig, c.overwrite, "--work/diffusion")
        if folder is not None:
            _check_component(work / "encoder", EncoderConfig, c.overwrite, "--work/encoder")
            _reuse_diffusion(c, work, folder)
        else:
            _train_diffusion(c, work)


def _reuse_diffusion(c: DiffusionStageConfig, work: Path, folder: Path) -> None:
    from dglm.config import EncoderConfig
    from dglm.diffusion import SemanticDiffuser

    theirs, stats = load_component(folder / "encoder", EncoderConfig)
    ours = read_config(work / "encoder" / "config.json", EncoderConfig)
    if (theirs.name_or_path, theirs.dim) != (ours.name_or_path, ours.dim):
        raise ValueError(f"from_checkpoint={c.from_checkpoint!r} was trained on encoder {theirs.name_or_path!r} "
                         f"({theirs.dim}-d), the work folder on {ours.name_or_path!r} ({ours.dim}-d); its "
                         f"diffusion model is reusable only with the same encoder")
    diffuser = SemanticDiffuser.from_pretrained(folder / "diffusion").float()
    # Its standardised space replaces the prepared one, so the prompt stage trains in the same space.
    save_component(work / "encoder", theirs, stats, overwrite=c.overwrite)
    save_component(work / "diffusion", diffuser.config, diffuser.state_dict(), overwrite=c.overwrite)
    logger.info("reused the diffusion model and statistics of %s", folder)


def _check_resume(state: Path, modules: dict[str, torch.nn.Module], what: str) -> None:
    """Refuse to resume a saved training state with networks of other shapes, before anything is written."""
    from dglm.io import check_shapes, tensor_shapes

    if not (state / "state.safetensors").is_file():
        return
    found = {k: v for k, v in tensor_shapes(state / "state.safetensors").items() if k.split(".")[0] in modules}
    expected = {f"{name}.{k}": tuple(v.shape) for name, m in modules.items() for k, v in m.state_dict().items()
                if not k.startswith("_")}  # (not the bound decoder embeddings: they follow the decoder)
    try:
        check_shapes(state, expected, {k: v for k, v in found.items() if not k.split(".", 1)[1].startswith("_")})
    except CheckpointError as e:
        raise ValueError(f"{state} was saved by a run with other network settings, so it cannot be resumed with "
                         f"these ({e}); rerun with the run's own settings ({what}), or start a new run "
                         f"elsewhere") from None


def _train_diffusion(c: DiffusionStageConfig, work: Path) -> None:
    from dglm.config import DiffusionConfig
    from dglm.diffusion import SemanticDiffuser
    from dglm.training.train_diffusion import train_diffuser

    mean, std, train, val = _load(work)
    if train.prefix_emb is None:
        raise ValueError(f"{work}/data/train has no prefix embeddings (prepared with --no-prefix-embeddings); "
                         f"prepare again with them, or reuse a checkpoint's model with --from-checkpoint")
    config = DiffusionConfig.model_validate({**preset_config(c.preset).diffusion.model_dump(), **c.model,
                                             "dim": mean.shape[0]})

    def standard(e):  # raw (N, S, d) -> standardised (N * S, d)
        return ((e.float() - mean) / std).reshape(-1, mean.shape[0])

    with _seeded(c.training.seed):  # the diffusion network's initial weights
        model = SemanticDiffuser(config)
        _check_resume(work / "runs" / "diffusion" / "state", {"model": model, "ema": model},
                      "the same --preset and network-shape options, or another --work")
        ema = train_diffuser(model, standard(train.prefix_emb), standard(train.cont_emb),
                             c.training, out_dir=work / "runs" / "diffusion",
                             heldout=(standard(val.prefix_emb), standard(val.cont_emb)))
    if _is_main():
        save_component(work / "diffusion", ema.config, ema.state_dict(), overwrite=c.overwrite)


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

    work = Path(c.work)
    run = work / "runs" / c.run
    inputs = {"--decoder": _decoder_input(work, c.decoder), "--init-from-checkpoint": c.init_from_checkpoint}
    with _guarded(work, {"--run": run}, inputs):
        _check_component(run / "prompt", PromptConfig, c.overwrite, f"--work/runs/{c.run}/prompt")
        check_output_folder(run / "lora", "adapter", overwrite=c.overwrite, what=f"--work/runs/{c.run}/lora")
        for name, owns in (("result.json", json_with_keys("config", "eval")),
                           ("prompt_config.json", json_with_keys("dim", "out_dim"))):
            check_output_file(run / name, overwrite=c.overwrite, owns=owns, what=f"--work/runs/{c.run}/{name}")
        return _train_prompt(c, work, run)


def _same_tokenizer(work: Path, decoder) -> None:
    """Refuse a decoder whose tokenizer is not the one the windows were cut with (their ids would be wrong)."""
    from transformers import AutoTokenizer

    from dglm.assets import resolve_decoder

    prepared = _prepared(work)
    if prepared is None or prepared.decoder == decoder.config.name_or_path:
        return
    theirs = AutoTokenizer.from_pretrained(resolve_decoder(prepared.decoder))
    if theirs.get_vocab() != decoder.tokenizer.get_vocab():
        raise ValueError(f"decoder={decoder.config.name_or_path!r} has another tokenizer than the prepared decoder "
                         f"{prepared.decoder!r} ({len(decoder.tokenizer)} vs {len(theirs)} tokens): the prepared "
                         f"windows are that tokenizer's ids. Use a decoder with the same tokenizer, or prepare "
                         f"another --work for this one")


def _train_prompt(c: PromptStageConfig, work: Path, run: Path) -> dict:
    from dglm.assets import load_decoder
    from dglm.config import PromptConfig
    from dglm.io import read_json
    from dglm.prompt import PromptGenerator
    from dglm.training.train_prompt import train_prompt_generator

    mean, std, train, val = _load(work)
    decoder = load_decoder(_decoder_id(work, c.decoder), device=c.device)
    _same_tokenizer(work, decoder)
    with _seeded(c.training.seed):  # the generator's and the adapter's initial weights, dropout
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
        if (run / "state" / "state.json").is_file():  # a resume: checked against the saved run before any write
            if (run / "prompt_config.json").is_file():
                saved = read_config(run / "prompt_config.json", PromptConfig)
                changed = {k: (v, getattr(generator.config, k)) for k, v in saved if getattr(generator.config, k) != v}
                if changed:
                    raise ValueError(f"{run} was trained with another generator ("
                                     + ", ".join(f"{k}={a!r}, now {b!r}" for k, (a, b) in changed.items())
                                     + "); resume it with its own settings, or start another --run")
            _check_resume(run / "state", {"generator": generator}, "its own --preset and network-shape options")
            rank = read_json(run / "state" / "state.json").get("config", {}).get("lora_rank")
            if rank is not None and rank != c.training.lora_rank and not decoder.has_adapter:
                raise ValueError(f"{run} was trained with lora_rank={rank}, now {c.training.lora_rank}; resume it with "
                                 f"--lora-rank {rank}, or start another --run")
        if _is_main():
            write_output(run / "prompt_config.json", _json(generator.config.model_dump(mode="json")),
                         overwrite=c.overwrite, owns=json_with_keys("dim", "out_dim"))
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
        save_component(run / "prompt", generator.config, generator.state_dict(), overwrite=c.overwrite)
        if decoder.has_adapter:
            decoder.save_adapter(run / "lora", overwrite=c.overwrite)
        if result or not (run / "result.json").is_file():  # (a rerun of a finished run trains nothing)
            write_output(run / "result.json", _json({"config": c.model_dump(mode="json"), "eval": result,
                                                     "processes": _layout(run / "log.jsonl")}),
                         overwrite=c.overwrite, owns=json_with_keys("config", "eval"))
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
    work = Path(c.work)
    run = work / "runs" / c.run
    out = Path(c.out_json) if c.out_json else run / "plan_use.json"
    what = "--out-json" if c.out_json else f"--work/runs/{c.run}/plan_use.json"
    inputs = {"--decoder": _decoder_input(work, c.decoder), "--checkpoint-adapter": c.checkpoint_adapter,
              **{f"--work/{name}": work / name for name in ("prepare.json", "encoder", "data", "diffusion")},
              **{f"--work/runs/{c.run}/{name}": run / name for name in ("prompt", "lora", "state", "result.json",
                                                                       "prompt_config.json", "log.jsonl")}}
    with _guarded(work, {what: out}, inputs):
        check_output_file(out, overwrite=c.overwrite, owns=PLAN_USE, what=what)  # before any work
        result = _evaluate(c, work, run)
        write_output(out, _json(result, sort_keys=False), overwrite=c.overwrite, owns=PLAN_USE, what=what)
    return result


def _evaluate(c: EvaluateConfig, work: Path, run: Path) -> dict:
    from dglm.assets import load_decoder
    from dglm.data.windows import word_starts
    from dglm.prompt import PromptGenerator
    from dglm.training.data import sentence_ends
    from dglm.training.plan_use import evaluate_plan_use, noise_knob_curve

    mean, std, _, val = _load(work)
    decoder = load_decoder(_decoder_id(work, c.decoder), device=c.device)
    _same_tokenizer(work, decoder)
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

    work = Path(c.work)
    run = work / "runs" / c.run
    outputs = {f"--work/runs/{c.run}/prompt": run / "prompt", f"--work/runs/{c.run}/lora": run / "lora"}
    with _guarded(work, outputs, {"--decoder": _decoder_input(work, c.decoder)}):
        _check_component(run / "prompt", PromptConfig, c.overwrite, f"--work/runs/{c.run}/prompt")
        check_output_folder(run / "lora", "adapter", overwrite=c.overwrite, what=f"--work/runs/{c.run}/lora")
        _export(c, run)


def _config_of(folder: Path, config_class) -> bool:
    try:
        read_config(folder / "config.json", config_class)
    except CheckpointError:
        return False
    return True


def _export(c: ExportConfig, run: Path) -> None:
    from dglm.assets import load_decoder
    from dglm.config import PromptConfig
    from dglm.io import load_state, load_tensors, read_json
    from dglm.prompt import PromptGenerator

    tensors, meta = load_tensors(run / "state" / "state.safetensors"), read_json(run / "state" / "state.json")
    if (run / "prompt_config.json").is_file():
        config = read_config(run / "prompt_config.json", PromptConfig)
    else:  # a run started before the prompt stage recorded its generator's config
        config = PromptConfig.model_validate({**preset_config(c.preset).prompt.model_dump(), **c.model})
    generator = PromptGenerator(config)
    load_state(generator, {k[len("generator."):]: v for k, v in tensors.items()
                           if k.startswith("generator.") and k != "generator._embeddings"}, run / "state")
    save_component(run / "prompt", generator.config, generator.state_dict(), overwrite=c.overwrite)
    lora = [tensors[f"lora.{i}"] for i in range(sum(k.startswith("lora.") for k in tensors))]
    if lora:  # the adapter's parameters, in the order Decoder.add_adapter returned them
        rank = meta["config"]["lora_rank"] or lora[0].shape[0]  # lora_A of the first module: (rank, in)
        decoder = load_decoder(_decoder_id(Path(c.work), c.decoder))
        with torch.no_grad():
            for param, value in zip(decoder.add_adapter(rank), lora, strict=True):
                param.copy_(value)
        decoder.save_adapter(run / "lora", overwrite=c.overwrite)
    logger.info("exported step %d of %s", meta["step"], run)


def assemble(c: AssembleConfig) -> Path:
    """A DGLM checkpoint folder (fp16 weights) with a model card (README.md); returns its path.

    Example (it assembles the parts the other stages wrote, and names the first one missing):
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as work:
        ...     assemble(AssembleConfig(work=work, run="r1", out=f"{work}/checkpoint"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        dglm.io.CheckpointError: .../encoder/config.json is missing
    """
    work, run = Path(c.work), Path(c.work) / "runs" / c.run
    out = Path(c.out) if c.out else work / "checkpoint"
    probe_folder = Path(c.probes) if c.probes else work / "probes"
    inputs = {"--decoder": _decoder_input(work, c.decoder), "--probes": probe_folder, "--card": c.card,
              **{f"--work/{name}": work / name for name in ("prepare.json", "encoder", "data", "diffusion", "runs")}}
    with _guarded(work, {"--out": out}, inputs):
        check_output_folder(out, "checkpoint", overwrite=c.overwrite, what="--out")  # before any loading
        extra = read_text(c.card, MAX_CARD_BYTES, what="--card") if c.card else None
        return _assemble(c, work, run, out, probe_folder, extra)


def _assemble(c: AssembleConfig, work: Path, run: Path, out: Path, probe_folder: Path, extra: str | None) -> Path:
    from dglm.assets import load_decoder, load_encoder
    from dglm.config import EncoderConfig
    from dglm.diffusion import SemanticDiffuser
    from dglm.encoder import SemanticEncoder
    from dglm.pipeline import DGLM
    from dglm.prompt import PromptGenerator
    from dglm.training.model_card import training_report

    saved = read_config(work / "encoder" / "config.json", EncoderConfig)
    encoder = SemanticEncoder.from_pretrained_stats(work / "encoder", model=load_encoder(saved.name_or_path).model)
    decoder = load_decoder(_decoder_id(work, c.decoder))
    if (run / "lora").is_dir():  # shipped as the checkpoint's decoder_adapter/
        decoder.load_adapter(run / "lora")
    probes = None
    if probe_folder.is_dir():
        from dglm.constraints import ProbeRegistry

        probes = ProbeRegistry.load(probe_folder)
    pipe = DGLM(encoder, SemanticDiffuser.from_pretrained(work / "diffusion").half(),
                PromptGenerator.from_pretrained(run / "prompt").half(), decoder, preset_config(c.preset).sampling,
                probes)
    card = training_report(work, run)
    if extra is not None:  # the --card file, its title dropped, its sections nested under the card's
        extra = extra.split("\n", 1)[-1].replace("\n## ", "\n### ")
        card += f"\n## Results ({c.card}; its links are relative to its folder)\n{extra}"
    pipe.save_pretrained(out, license=c.license, card_text=card, overwrite=c.overwrite)
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

