"""Serving dglm's plans with vLLM: per-row prompt embeddings, the checkpoint's adapter as a LoRA request.

dglm plans and builds the soft prompts; vLLM decodes. :meth:`Controller.prompt_embeds` gives a left-padded
``(B, T, h)`` batch and its ``(B, T)`` mask; vLLM takes one ``{"prompt_embeds": (T_i, h)}`` per request
(``LLM(..., enable_prompt_embeds=True)``), so :func:`unpad_rows` cuts each row to its unmasked positions.
A checkpoint trained with a decoder adapter (LoRA, ``peft`` format) needs it to read its soft tokens:
:func:`vllm_requests` writes it where vLLM can load it and :meth:`VLLMRequests.lora_request` wraps it in a
``vllm.lora.request.LoRARequest`` (``LLM(..., enable_lora=True, max_lora_rank=rank)``). vLLM is imported
only there, so everything else runs without it. ``recipes/serve_vllm.py`` puts it together.

Plan guidance (``plan_scale``) and control contrast (``control_scale``) run a second forward pass of the
decoder inside a logits processor (:class:`dglm.plan_guidance.PlanGuidance`); they need HF ``generate``
and are not available through vLLM. Guidance on the plan (constraints, ``strength``) happens before
decoding and works unchanged.

Example:
    >>> import torch
    >>> embeds = torch.arange(12.0).reshape(2, 3, 2)             # (B, T, h), left-padded
    >>> mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    >>> [tuple(r.shape) for r in unpad_rows(embeds, mask)]
    [(2, 2), (3, 2)]
    >>> vllm_sampling_kwargs({"do_sample": True, "top_p": 0.9, "repetition_penalty": 1.2, "max_new_tokens": 32})
    {'top_p': 0.9, 'repetition_penalty': 1.2, 'max_tokens': 32}
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from dglm.io import atomic_directory, check_output_folder, output_record

# HF generate keywords and their vLLM SamplingParams names (the ones dglm uses or documents).
SAMPLING_NAMES = {"max_new_tokens": "max_tokens", "min_new_tokens": "min_tokens", "top_p": "top_p", "top_k": "top_k",
                  "temperature": "temperature", "repetition_penalty": "repetition_penalty"}


@dataclass
class VLLMRequests:
    """What :func:`vllm_requests` returns: ``prompts``, one ``{"prompt_embeds": (T_i, h)}`` per row (row-major:
    prefix i, sample j), and the decoder adapter (``adapter_path``, a ``peft`` folder; None without one) that
    every one of them needs.

    Example:
        >>> reqs = VLLMRequests([{"prompt_embeds": torch.zeros(3, 8)}], adapter_path=None)
        >>> len(reqs.prompts), reqs.lora_request() is None
        (1, True)
    """

    prompts: list[dict[str, torch.Tensor]]
    adapter_path: str | None
    adapter_name: str = "dglm-decoder-adapter"
    adapter_rank: int | None = None

    def lora_request(self, lora_int_id: int = 1):
        """The adapter as a ``vllm.lora.request.LoRARequest(name, id, path)`` (None without an adapter); needs
        vLLM installed. ``lora_int_id`` must be unique per adapter within one ``LLM``."""
        if self.adapter_path is None:
            return None
        try:
            from vllm.lora.request import LoRARequest
        except ImportError as e:
            raise ImportError("lora_request() needs vLLM (pip install vllm, on a CUDA machine); the prompts and "
                              f"adapter_path={self.adapter_path!r} are usable without it") from e
        return LoRARequest(self.adapter_name, lora_int_id, self.adapter_path)


def unpad_rows(inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
    """The rows of a padded ``(B, T, h)`` batch without their masked positions: B tensors ``(T_i, h)``.

    Example:
        >>> rows = unpad_rows(torch.ones(2, 4, 3), torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]]))
        >>> [r.shape[0] for r in rows]
        [2, 4]
    """
    if inputs_embeds.dim() != 3 or attention_mask.shape != inputs_embeds.shape[:2]:
        raise ValueError(f"inputs_embeds must be (B, T, h) and attention_mask (B, T), got "
                         f"{tuple(inputs_embeds.shape)} and {tuple(attention_mask.shape)}")
    keep = attention_mask.bool()  # (B, T)
    return [row[k].contiguous() for row, k in zip(inputs_embeds, keep, strict=True)]  # each (T_i, h)


def vllm_sampling_kwargs(generate_kwargs: dict) -> dict:
    """vLLM ``SamplingParams`` keywords for HF ``generate`` keywords (e.g. :meth:`DGLM.generate_kwargs`):
    renamed, ``do_sample=False`` as ``temperature=0`` (greedy); others are refused by name.

    Example:
        >>> vllm_sampling_kwargs({"do_sample": False, "max_new_tokens": 8})
        {'max_tokens': 8, 'temperature': 0.0}
        >>> vllm_sampling_kwargs({"num_beams": 4})
        Traceback (most recent call last):
            ...
        ValueError: generate keyword 'num_beams' has no vLLM SamplingParams counterpart here; accepted: do_sample, max_new_tokens, min_new_tokens, repetition_penalty, temperature, top_k, top_p
    """
    out = {}
    for key, value in generate_kwargs.items():
        if key == "do_sample":
            continue
        if key not in SAMPLING_NAMES:
            accepted = ", ".join(sorted([*SAMPLING_NAMES, "do_sample"]))
            raise ValueError(f"generate keyword {key!r} has no vLLM SamplingParams counterpart here; "
                             f"accepted: {accepted}")
        out[SAMPLING_NAMES[key]] = value
    if generate_kwargs.get("do_sample") is False:
        out["temperature"] = 0.0
    return out


def export_adapter(decoder, folder: str | os.PathLike | None = None, *, overwrite: bool = False) -> Path | None:
    """Write the decoder's LoRA adapter in ``peft`` format (``adapter_config.json`` +
    ``adapter_model.safetensors``, the format vLLM's LoRA loader reads) and return its folder; None without
    an adapter. The default folder is ``$DGLM_CACHE/vllm-adapters/<hash of the adapter weights>``.

    The folder is keyed by content: its ``.dglm`` marker records the hash of the weights, and a folder that
    holds another adapter (other weights, or one written before the hash was recorded) is rewritten, so vLLM
    never serves stale weights. A folder holding anything else, or a file, is refused
    (:class:`dglm.io.OutputError`) unless ``overwrite=True`` (a file: never).

    Example:
        >>> import tempfile
        >>> from dglm.presets import random_pipeline
        >>> export_adapter(random_pipeline("tiny").decoder) is None   # no adapter, nothing to serve
        True
        >>> decoder = random_pipeline("tiny").decoder
        >>> _ = decoder.add_adapter(rank=2)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     first = output_record(export_adapter(decoder, f"{d}/lora"))["weights_sha256"]
        ...     with torch.no_grad():
        ...         _ = next(p for n, p in decoder.model.named_parameters() if "lora_B" in n).add_(1.0)
        ...     second = output_record(export_adapter(decoder, f"{d}/lora"))["weights_sha256"]
        >>> first != second
        True
    """
    if not decoder.has_adapter:
        return None
    digest = hashlib.sha256()
    for name, param in sorted(decoder.model.named_parameters()):
        if "lora_" in name:
            digest.update(name.encode())
            digest.update(param.detach().float().cpu().numpy().tobytes())
    digest.update(repr(sorted((k, v.to_dict()) for k, v in decoder.model.peft_config.items())).encode())
    if folder is None:
        from dglm.assets import cache_dir

        folder = cache_dir() / "vllm-adapters" / digest.hexdigest()[:16]
    folder = Path(folder)
    record = output_record(folder) if folder.is_dir() and not folder.is_symlink() else {}
    if record.get("kind") != "adapter" or record.get("weights_sha256") != digest.hexdigest() \
            or not (folder / "adapter_model.safetensors").is_file():
        with atomic_directory(folder, "adapter", overwrite=overwrite,
                              record={"weights_sha256": digest.hexdigest()}) as tmp:
            decoder.save_adapter(tmp)
    return folder


def vllm_requests(controller, prefixes: Sequence[str], num_samples: int | None = None, *, seed: int | None = None,
                  max_new_tokens: int | None = None, dtype: torch.dtype | None = None,
                  adapter_folder: str | os.PathLike | None = None, overwrite: bool = False,
                  **plan_kwargs) -> VLLMRequests:
    """Plan ``num_samples`` continuations per prefix with ``controller`` (a :class:`dglm.Controller`; its
    constraints steer the plans) and turn them into vLLM requests: one prompt-embeddings row per plan, unpadded
    and on the CPU (``dtype``: default the decoder's), and the checkpoint's adapter (see :func:`export_adapter`,
    which ``overwrite`` goes to).
    ``max_new_tokens`` reserves room in the context as in :meth:`Controller.prompt_embeds`; ``plan_kwargs`` go
    there too (``steps``, ``sigma2``, ``constraints``, ``strength``, ...).

    Example:
        >>> from dglm import Controller, near
        >>> from dglm.presets import random_pipeline
        >>> ctl = Controller(near("the team won"), random_pipeline("tiny"))
        >>> reqs = vllm_requests(ctl, ["the game was", "a"], num_samples=2, steps=3, seed=0)
        >>> [tuple(p["prompt_embeds"].shape) for p in reqs.prompts], reqs.adapter_path
        ([(7, 32), (7, 32), (5, 32), (5, 32)], None)
    """
    if adapter_folder is not None and controller.pipeline.decoder.has_adapter:  # checked before any planning
        check_output_folder(adapter_folder, "adapter", overwrite=overwrite, what="adapter_folder")
    embeds, mask = controller.prompt_embeds(prefixes, num_samples, seed=seed, max_new_tokens=max_new_tokens,
                                            dtype=dtype, device="cpu", **plan_kwargs)
    prompts = [{"prompt_embeds": row} for row in unpad_rows(embeds, mask)]
    decoder = controller.pipeline.decoder
    path = export_adapter(decoder, adapter_folder, overwrite=overwrite)
    rank = next(iter(decoder.model.peft_config.values())).r if path is not None else None
    return VLLMRequests(prompts, None if path is None else str(path), adapter_rank=rank)
