"""A DGLM checkpoint on disk and on the hub: ``dglm.json`` (what it records), saving, uploading and loading a
pipeline, and building an untrained one from a config.

:class:`~dglm.pipeline.DGLM` carries these methods (it inherits :class:`PipelineCheckpoint`). Layout of a
checkpoint folder: ``dglm.json``, ``encoder/``, ``diffusion/``, ``prompt/``, ``probes/`` (if any),
``decoder_adapter/`` (if any) and the model card ``README.md`` (docs/architecture.md).

Example:
    >>> from dglm.hub import PACKAGED
    >>> checkpoint_settings(PACKAGED / "mini").steps
    50
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from pydantic import BaseModel, ConfigDict, Field

from dglm.config import DGLMConfig, EncoderConfig, GenerationConfig, preset_config
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
from dglm.io import atomic_directory, read_config, write_json
from dglm.prompt import PromptGenerator

if TYPE_CHECKING:
    from dglm.pipeline import DGLM

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


def checkpoint_settings(folder: str | os.PathLike) -> GenerationConfig:
    """The generation defaults a checkpoint folder records (``dglm.json``'s ``"sampling"``), read without
    loading any model.

    Example:
        >>> from dglm.hub import PACKAGED
        >>> checkpoint_settings(PACKAGED / "mini").strength
        100.0
    """
    return read_config(Path(folder) / PIPELINE_FILE, _PipelineFile).sampling


class PipelineCheckpoint:
    """Saving, uploading and loading of :class:`~dglm.pipeline.DGLM` (a mixin: it needs the pipeline's parts
    and ``sampling``), and its construction from a config.

    Example (a round trip of a random tiny pipeline):
        >>> import tempfile
        >>> from dglm.presets import random_pipeline
        >>> pipe = random_pipeline("tiny")
        >>> with tempfile.TemporaryDirectory() as d:
        ...     pipe.save_pretrained(d)
        ...     loaded = type(pipe).from_pretrained(d, encoder=pipe.encoder, decoder=pipe.decoder)
        >>> loaded.config == pipe.config
        True
    """

    @classmethod
    def from_config(cls, config: DGLMConfig | str, encoder: SemanticEncoder | None = None,
                    decoder: Decoder | None = None) -> DGLM:
        """Untrained diffusion and prompt networks (their training initialisation) of a config or a preset
        name in :data:`dglm.config.PRESETS`, around the given (or loaded-by-id) encoder and decoder; a
        ``random:`` id, as the ``tiny`` preset's, loads a random stand-in (:func:`dglm.presets.load_encoder`).

        Example:
            >>> from dglm import DGLM
            >>> pipe = DGLM.from_config("tiny")
            >>> pipe.config.encoder == preset_config("tiny").encoder, pipe.encoder.fitted
            (True, True)
        """
        # Imported here: dglm.presets builds pipelines, so it imports this module.
        from dglm.presets import load_decoder, load_encoder

        config = preset_config(config)
        encoder = encoder or load_encoder(config.encoder)
        decoder = decoder or load_decoder(config.decoder)
        return cls(encoder, SemanticDiffuser(config.diffusion), PromptGenerator(config.prompt), decoder,
                   config.sampling)

    def save_pretrained(self, folder: str | os.PathLike, *, license: str | None = None,
                        card_text: str | None = None, name: str | None = None) -> None:
        """Write the checkpoint atomically: ``dglm.json`` + ``encoder/``, ``diffusion/``, ``prompt/``,
        ``probes/`` subfolders (JSON configs + safetensors), ``decoder_adapter/`` when the decoder carries
        a LoRA adapter trained with the prompt generator (:meth:`Decoder.load_adapter`; the adapter only),
        and a model card ``README.md`` (:func:`dglm.hub.model_card`: YAML metadata with ``license``, default
        ``"unknown"``, the parts, then ``card_text``; ``name``, default the folder's name, is what its example
        loads). The decoder and encoder weights are referenced by their ids, which ``dglm.json`` records with
        the library version and the decoder weights' source and fingerprint (:class:`dglm.hub.DecoderWeights`).

        Example (a round trip; the random stand-ins' weights are passed back in, as they have no files):
            >>> import tempfile
            >>> from dglm import DGLM
            >>> from dglm.presets import random_pipeline
            >>> pipe = random_pipeline("tiny")
            >>> with tempfile.TemporaryDirectory() as d:
            ...     pipe.save_pretrained(f"{d}/ckpt", license="mit")
            ...     files = sorted(os.listdir(f"{d}/ckpt"))
            ...     loaded = DGLM.from_pretrained(f"{d}/ckpt", encoder=pipe.encoder, decoder=pipe.decoder)
            >>> files
            ['README.md', 'dglm.json', 'diffusion', 'encoder', 'prompt']
            >>> loaded.config == pipe.config, torch.equal(loaded.encoder.mean, pipe.encoder.mean)
            (True, True)
        """
        card = model_card(self, name or Path(folder).name, license, card_text)
        with atomic_directory(folder) as tmp:
            self.encoder.save_pretrained(tmp / "encoder")
            self.diffuser.save_pretrained(tmp / "diffusion")
            self.prompt_generator.save_pretrained(tmp / "prompt")
            if self.probes is not None and len(self.probes):
                self.probes.save(tmp / "probes")
            if self.decoder.has_adapter:
                self.decoder.save_adapter(tmp / ADAPTER_FOLDER)
            write_json(tmp / PIPELINE_FILE, {"library_version": library_version(),
                                             "encoder": self.encoder.config.name_or_path,
                                             "decoder": self.decoder.config.name_or_path,
                                             "decoder_weights": DecoderWeights.of(self.decoder).model_dump(),
                                             "decoder_hidden_size": self.decoder.hidden_size,
                                             "sampling": self.sampling.saved()})
            (tmp / MODEL_CARD).write_text(card, encoding="utf-8")

    def push_to_hub(self, repo_id: str, *, revision: str | None = None, private: bool | None = None,
                    token: str | bool | None = None, commit_message: str = "Upload dglm checkpoint", api=None,
                    license: str | None = None, card_text: str | None = None):
        """Save the checkpoint (:meth:`save_pretrained`, its card naming ``repo_id``) into a temporary folder
        and upload it to the hub repo ``repo_id`` (created if missing) with ``HfApi.upload_folder``; ``api``
        is an ``HfApi`` (default: one made with ``token``). Returns the upload's ``CommitInfo``.

        Example (``pipe.push_to_hub("my-org/my-dglm", private=True)`` uploads; a repo id is checked before
        anything is saved or sent):
            >>> from dglm.presets import random_pipeline
            >>> pipe = random_pipeline("tiny")
            >>> pipe.push_to_hub("my-dglm")
            Traceback (most recent call last):
                ...
            ValueError: repo_id='my-dglm' must be a hub repo id 'org/name'
        """
        return push_folder(lambda folder: self.save_pretrained(folder, license=license, card_text=card_text,
                                                               name=repo_id),
                           repo_id, api=api, token=token, private=private, revision=revision,
                           commit_message=commit_message)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, encoder: SemanticEncoder | None = None,
                        decoder: Decoder | None = None, device: str | torch.device | None = None, *,
                        revision: str | None = None, cache_dir: str | os.PathLike | None = None,
                        token: str | bool | None = None, show_progress: bool = False) -> DGLM:
        """Load a checkpoint folder, a packaged one by name (``"mini"``), or a hub repo id (``"org/name"``,
        at ``revision``; ``cache_dir`` and ``token`` go to ``huggingface_hub.snapshot_download``; with
        ``HF_HUB_OFFLINE=1`` from the local hub cache only), see :func:`dglm.hub.resolve_checkpoint`. The
        encoder and decoder are loaded by the ids the checkpoint records unless given; a decoder whose weights
        differ from the recorded fingerprint of the training weights is logged as a warning. The
        checkpoint's decoder adapter, if it has one, is loaded into the decoder (given or not) unless that
        decoder already carries one. Nothing is printed while loading: progress bars (weights, downloads)
        are shown only with ``show_progress=True``.

        Example (a saved folder, its sampling defaults included; ``DGLM.from_pretrained("mini")`` loads the
        packaged checkpoint the same way, its encoder and decoder fetched by id):
            >>> import tempfile
            >>> from dglm import DGLM
            >>> from dglm.presets import random_pipeline
            >>> pipe = random_pipeline("tiny")
            >>> pipe.sampling = pipe.sampling.model_copy(update={"steps": 7, "strength": 30.0})
            >>> with tempfile.TemporaryDirectory() as d:
            ...     pipe.save_pretrained(d)
            ...     loaded = DGLM.from_pretrained(d, encoder=pipe.encoder, decoder=pipe.decoder)
            >>> loaded.sampling.steps, loaded.sampling.strength, loaded.decoder is pipe.decoder
            (7, 30.0, True)
        """
        from dglm.progress import progress_bars

        with progress_bars(show_progress):
            folder = resolve_checkpoint(name_or_path, revision=revision, cache_dir=cache_dir, token=token)
        meta = read_config(folder / PIPELINE_FILE, _PipelineFile)
        if encoder is None:
            saved = read_config(folder / "encoder" / "config.json", EncoderConfig)
            check_recorded_id(saved.name_or_path, "encoder", folder / "encoder" / "config.json")
            encoder = SemanticEncoder.from_pretrained_stats(folder / "encoder", device=device,
                                                            show_progress=show_progress)
        else:
            saved = read_config(folder / "encoder" / "config.json", type(encoder.config))
            if saved.dim != encoder.dim:
                raise ValueError(f"encoder dimension {encoder.dim} does not match the checkpoint's {saved.dim}; "
                                 f"pass the encoder {saved.name_or_path!r} it was trained with")
            if not encoder.fitted:
                encoder = SemanticEncoder.from_pretrained_stats(folder / "encoder", model=encoder.model)
        if decoder is None:
            check_recorded_id(meta.decoder, "decoder", folder / PIPELINE_FILE)
            pinned = meta.decoder_weights.revision if meta.decoder_weights is not None else None
            decoder = Decoder.from_pretrained(meta.decoder, device=device, show_progress=show_progress,
                                              **({"revision": pinned} if pinned else {}))
        if meta.decoder_weights is not None:
            meta.decoder_weights.check(decoder, decoder.config.name_or_path, f"the checkpoint {str(name_or_path)!r}")
        if (folder / ADAPTER_FOLDER).is_dir() and not decoder.has_adapter:
            decoder.load_adapter(folder / ADAPTER_FOLDER)
        probes = None
        if (folder / "probes").is_dir():
            from dglm.constraints import ProbeRegistry

            probes = ProbeRegistry.load(folder / "probes")
        pipe = cls(encoder, SemanticDiffuser.from_pretrained(folder / "diffusion"),
                   PromptGenerator.from_pretrained(folder / "prompt"), decoder, meta.sampling, probes)
        return pipe.to(device) if device is not None else pipe
