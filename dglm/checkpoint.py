"""The loading boundary of a DGLM checkpoint: ``dglm.json`` (what it records), and the parts of a pipeline read
from a folder, a packaged name or a hub id (:func:`load_parts`), written to a folder (:func:`save_checkpoint`)
or built untrained from a config (:func:`parts_from_config`).

:class:`~dglm.pipeline.DGLM`'s ``from_pretrained``, ``save_pretrained``, ``push_to_hub`` and ``from_config``
call these functions; this module never imports the pipeline (it returns the parts the pipeline is built
from). Layout of a checkpoint folder: ``dglm.json``, ``encoder/``, ``diffusion/``, ``prompt/``, ``probes/`` (if any),
``decoder_adapter/`` (if any) and the model card ``README.md`` (docs/architecture.md).

Example:
    >>> from dglm.hub import PACKAGED
    >>> checkpoint_settings(PACKAGED / "mini").steps
    50
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

from dglm.assets import load_decoder, load_encoder
from dglm.config import RANDOM_PREFIX, DGLMConfig, EncoderConfig, GenerationConfig, preset_config
from dglm.decoder import Decoder
from dglm.diffusion import SemanticDiffuser
from dglm.encoder import SemanticEncoder
from dglm.hub import (
    ADAPTER_FOLDER,
    MODEL_CARD,
    PIPELINE_FILE,
    DecoderWeights,
    check_recorded_id,
    library_version,
    model_card,
    push_folder,
    resolve_checkpoint,
)
from dglm.io import WEIGHTS_NAME, atomic_directory, check_output_folder, load_tensors, read_config, write_json
from dglm.progress import progress_bars
from dglm.prompt import PromptGenerator

logger = logging.getLogger(__name__)


class _PipelineFile(BaseModel):
    """What ``dglm.json`` holds; unknown or wrongly typed fields are refused by name."""

    model_config = ConfigDict(extra="forbid")

    library_version: str = Field(description="Version of dglm that wrote the checkpoint.")
    encoder: str = Field(description=(
        "Hub id of the encoder the checkpoint was trained with (never a path outside the folder)."))
    decoder: str = Field(description=(
        "Hub id of the decoder the checkpoint was trained with (never a path outside the folder)."))
    decoder_weights: DecoderWeights | None = Field(default=None, description=(
        "Which decoder weights it was trained with: their source and a fingerprint (absent in older "
        "checkpoints)."))
    decoder_hidden_size: int = Field(description=(
        "The decoder's hidden size, for a clear error when another decoder is passed."))
    sampling: GenerationConfig = Field(default=GenerationConfig(), description=(
        "Generation defaults the checkpoint was evaluated with (decoding ones only where set: else the "
        "decoder's)."))


def _same_statistics(encoder: SemanticEncoder, folder: Path) -> bool:
    """Whether a fitted encoder's statistics are the ones saved in a checkpoint's ``encoder/`` folder."""
    state = load_tensors(folder / WEIGHTS_NAME)
    return all(name in state and state[name].shape == getattr(encoder, name).shape
               and torch.allclose(state[name].float(), getattr(encoder, name).detach().float().cpu())
               for name in ("mean", "std"))


def checkpoint_settings(folder: str | os.PathLike) -> GenerationConfig:
    """The generation defaults a checkpoint folder records (``dglm.json``'s ``"sampling"``), read without
    loading any model.

    Example:
        >>> from dglm.hub import PACKAGED
        >>> checkpoint_settings(PACKAGED / "mini").strength
        100.0
    """
    return read_config(Path(folder) / PIPELINE_FILE, _PipelineFile).sampling


@dataclass
class Parts:
    """The parts a pipeline is built from: ``DGLM(**vars(parts))``.

    Example:
        >>> from dglm.presets import TINY, random_decoder, random_encoder
        >>> parts = parts_from_config("tiny", random_encoder(TINY.encoder), random_decoder(TINY.decoder))
        >>> parts.diffuser.dim, parts.sampling == TINY.sampling, parts.probes
        (32, True, None)
    """

    encoder: SemanticEncoder
    diffuser: SemanticDiffuser
    prompt_generator: PromptGenerator
    decoder: Decoder
    sampling: GenerationConfig
    probes: object = None


def parts_from_config(config: DGLMConfig | str, encoder: SemanticEncoder | None = None,
                      decoder: Decoder | None = None) -> Parts:
    """Untrained diffusion and prompt networks (their training initialisation) of a config or a preset name in
    :data:`dglm.config.PRESETS`, around the given encoder and decoder, or the ones loaded by the config's ids
    (:func:`dglm.assets.load_encoder` / :func:`~dglm.assets.load_decoder`). A ``random:`` id (the ``tiny``
    preset's) names a random stand-in that only :mod:`dglm.presets` builds: pass it in.

    Example:
        >>> parts_from_config("tiny")
        Traceback (most recent call last):
            ...
        ValueError: encoder 'random:tiny-bert' is a random stand-in, which checkpoints never load: pass \
encoder= and decoder= (dglm.presets.random_encoder / random_decoder), or build the whole pipeline with \
dglm.presets.random_pipeline('tiny')
    """
    config = preset_config(config)
    for role, given, part in (("encoder", encoder, config.encoder), ("decoder", decoder, config.decoder)):
        if given is None and part.name_or_path.startswith(RANDOM_PREFIX):
            raise ValueError(f"{role} {part.name_or_path!r} is a random stand-in, which checkpoints never load: "
                             f"pass encoder= and decoder= (dglm.presets.random_encoder / random_decoder), or "
                             f"build the whole pipeline with dglm.presets.random_pipeline('tiny')")
    encoder = encoder or load_encoder(config.encoder.name_or_path)
    decoder = decoder or load_decoder(config.decoder.name_or_path)
    return Parts(encoder, SemanticDiffuser(config.diffusion), PromptGenerator(config.prompt), decoder,
                 config.sampling)


def save_checkpoint(pipe, folder: str | os.PathLike, *, license: str | None = None, card_text: str | None = None,
                    name: str | None = None, overwrite: bool = False) -> None:
    """Write ``pipe``'s checkpoint (a :class:`~dglm.pipeline.DGLM`) atomically into ``folder``; see
    :meth:`dglm.pipeline.DGLM.save_pretrained`.

    Example:
        >>> import tempfile
        >>> from dglm.presets import random_pipeline
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_checkpoint(random_pipeline("tiny"), f"{d}/ckpt")
        ...     sorted(os.listdir(f"{d}/ckpt"))
        ['.dglm', 'README.md', 'dglm.json', 'diffusion', 'encoder', 'prompt']
    """
    check_output_folder(folder, "checkpoint", overwrite=overwrite)
    card = model_card(pipe, name or Path(folder).name, license, card_text)
    with atomic_directory(folder, "checkpoint", overwrite=overwrite) as tmp:
        pipe.encoder.save_pretrained(tmp / "encoder")
        pipe.diffuser.save_pretrained(tmp / "diffusion")
        pipe.prompt_generator.save_pretrained(tmp / "prompt")
        if pipe.probes is not None and len(pipe.probes):
            pipe.probes.save(tmp / "probes")
        if pipe.decoder.has_adapter:
            pipe.decoder.save_adapter(tmp / ADAPTER_FOLDER)
        write_json(tmp / PIPELINE_FILE, {"library_version": library_version(),
                                         "encoder": pipe.encoder.config.name_or_path,
                                         "decoder": pipe.decoder.config.name_or_path,
                                         "decoder_weights": DecoderWeights.of(pipe.decoder).model_dump(),
                                         "decoder_hidden_size": pipe.decoder.hidden_size,
                                         "sampling": pipe.sampling.saved()})
        (tmp / MODEL_CARD).write_text(card, encoding="utf-8")


def push_checkpoint(pipe, repo_id: str, *, revision: str | None = None, private: bool | None = None,
                    token: str | bool | None = None, commit_message: str = "Upload dglm checkpoint", api=None,
                    license: str | None = None, card_text: str | None = None):
    """Save ``pipe``'s checkpoint into a temporary folder and upload it to the hub repo ``repo_id``; see
    :meth:`dglm.pipeline.DGLM.push_to_hub`.

    Example (a repo id is checked before anything is saved or sent):
        >>> from dglm.presets import random_pipeline
        >>> push_checkpoint(random_pipeline("tiny"), "my-dglm")
        Traceback (most recent call last):
            ...
        ValueError: repo_id='my-dglm' must be a hub repo id 'org/name'
    """
    return push_folder(lambda folder: save_checkpoint(pipe, folder, license=license, card_text=card_text,
                                                      name=repo_id),
                       repo_id, api=api, token=token, private=private, revision=revision,
                       commit_message=commit_message)


def load_parts(name_or_path: str | os.PathLike, encoder: SemanticEncoder | None = None,
               decoder: Decoder | None = None, device: str | torch.device | None = None, *,
               revision: str | None = None, cache_dir: str | os.PathLike | None = None,
               token: str | bool | None = None, show_progress: bool = False) -> Parts:
    """The parts of the checkpoint ``name_or_path`` (a folder, a packaged name or a hub id, resolved by
    :func:`dglm.hub.resolve_checkpoint`); see :meth:`dglm.pipeline.DGLM.from_pretrained`.

    Example:
        >>> import tempfile
        >>> from dglm.presets import random_pipeline
        >>> pipe = random_pipeline("tiny")
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_checkpoint(pipe, d)
        ...     parts = load_parts(d, encoder=pipe.encoder, decoder=pipe.decoder)
        >>> parts.decoder is pipe.decoder, parts.diffuser.config == pipe.diffuser.config
        (True, True)
    """
    with progress_bars(show_progress):
        folder = resolve_checkpoint(name_or_path, revision=revision, cache_dir=cache_dir, token=token)
    meta = read_config(folder / PIPELINE_FILE, _PipelineFile)
    if encoder is None:
        saved = read_config(folder / "encoder" / "config.json", EncoderConfig)
        check_recorded_id(saved.name_or_path, "encoder", folder / "encoder" / "config.json")
        encoder = SemanticEncoder.from_pretrained_stats(
            folder / "encoder", model=load_encoder(saved.name_or_path, device=device, show_progress=show_progress).model)
    else:
        saved = read_config(folder / "encoder" / "config.json", type(encoder.config))
        if saved.dim != encoder.dim:
            raise ValueError(f"encoder dimension {encoder.dim} does not match the checkpoint's {saved.dim}; "
                             f"pass the encoder {saved.name_or_path!r} it was trained with")
        if not encoder.fitted or not _same_statistics(encoder, folder / "encoder"):
            # The checkpoint's statistics, never another checkpoint's: its planner was trained in its space.
            if encoder.fitted:
                logger.warning("the encoder passed to from_pretrained carries other standardisation "
                               "statistics than %s; using the checkpoint's (with the encoder's model)", folder)
            encoder = SemanticEncoder.from_pretrained_stats(folder / "encoder", model=encoder.model)
    if decoder is None:
        check_recorded_id(meta.decoder, "decoder", folder / PIPELINE_FILE)
        pinned = meta.decoder_weights.revision if meta.decoder_weights is not None else None
        decoder = load_decoder(meta.decoder, device=device, show_progress=show_progress,
                               **({"revision": pinned} if pinned else {}))
    if meta.decoder_weights is not None:
        meta.decoder_weights.check(decoder, decoder.config.name_or_path, f"the checkpoint {str(name_or_path)!r}")
    if (folder / ADAPTER_FOLDER).is_dir() and not decoder.has_adapter:
        decoder.load_adapter(folder / ADAPTER_FOLDER)
    probes = None
    if (folder / "probes").is_dir():
        from dglm.constraints import ProbeRegistry

        probes = ProbeRegistry.load(folder / "probes")
    return Parts(encoder, SemanticDiffuser.from_pretrained(folder / "diffusion"),
                 PromptGenerator.from_pretrained(folder / "prompt"), decoder, meta.sampling, probes)
