"""The decoder's LoRA adapter, trained with the prompt generator so that the decoder reads the soft tokens:
added, loaded (checked against the LM before peft reads a byte), saved, switched off for plain decoding, and
merged into the projection weights for a ``generate`` call.

:class:`~dglm.decoder.Decoder` carries these methods (it inherits :class:`DecoderAdapter`); they act on its
``model``, the LM, which is peft-wrapped once an adapter is added or loaded.

Example:
    >>> from dglm.presets import TINY, random_decoder
    >>> dec = random_decoder(TINY.decoder)
    >>> isinstance(dec, DecoderAdapter), dec.has_adapter
    (True, False)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from dglm.io import atomic_directory

# Names of attention projections a LoRA adapter targets (Llama-style, and GPT-2's fused ones).
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "c_attn", "c_proj")


class DecoderAdapter:
    """The LoRA-adapter methods of :class:`~dglm.decoder.Decoder` (a mixin: it needs the decoder's ``model``
    and ``config``). The adapter is active only while soft prompts are given; the base weights are never
    written.

    Example (a new adapter, merged for a call and switched off around plain decoding):
        >>> from dglm.presets import TINY, random_decoder
        >>> dec = random_decoder(TINY.decoder)
        >>> _ = dec.add_adapter(rank=2)
        >>> with dec.adapter_merged(), dec.adapter_off():
        ...     pass
        >>> dec.has_adapter
        True
    """

    def add_adapter(self, rank: int) -> list[nn.Parameter]:
        """Wrap the LM with a new, trainable LoRA adapter (``peft``) of ``rank`` on its attention projections
        and return the adapter's parameters; the base weights stay frozen and untouched. Like a loaded
        adapter, it is active only when soft prompts are given.

        Example:
            >>> from dglm.presets import preset_config, random_decoder
            >>> dec = random_decoder(preset_config("tiny").decoder)
            >>> params = dec.add_adapter(rank=2)
            >>> dec.has_adapter, sum(p.numel() for p in params) > 0
            (True, True)
        """
        from peft import LoraConfig, get_peft_model  # imported when used: peft is slow to import
        from transformers.pytorch_utils import Conv1D

        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank={rank!r} must be an integer >= 1")
        if self.has_adapter:
            raise ValueError("the decoder already carries an adapter; load a fresh decoder to add another")
        layers = {n.rsplit(".", 1)[-1]: m for n, m in self.model.named_modules() if isinstance(m, (nn.Linear, Conv1D))}
        targets = [t for t in ATTENTION_PROJECTIONS if t in layers]
        if not targets:
            raise ValueError(f"no attention projection named one of {ATTENTION_PROJECTIONS} in the decoder")
        transposed = any(isinstance(layers[t], Conv1D) for t in targets)  # GPT-2 stores (in, out) weights
        self.model = get_peft_model(self.model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets,
                                                           fan_in_fan_out=transposed))
        return [p for p in self.model.parameters() if p.requires_grad]

    def load_adapter(self, folder: str | os.PathLike) -> None:
        """Wrap the LM with a trained LoRA adapter (a ``peft`` folder: ``adapter_config.json`` +
        ``adapter_model.safetensors``, as :meth:`DGLM.save_pretrained` writes it). The base weights stay
        untouched; the adapter is active only when soft prompts are given (plain decoding and plain NLL
        switch it off, see :meth:`adapter_off`).

        Example:
            >>> from dglm.assets import load_decoder                                    # doctest: +SKIP
            >>> dec = load_decoder("HuggingFaceTB/SmolLM2-135M-Instruct")   # doctest: +SKIP
            >>> dec.load_adapter("dglm/checkpoints/mini/decoder_adapter")             # doctest: +SKIP
            >>> dec.has_adapter                                                        # doctest: +SKIP
            True
        """
        if self.has_adapter:
            raise ValueError("the decoder already carries an adapter; load a fresh decoder to add another")
        self._check_adapter(Path(folder))  # before peft reads (or allocates) anything
        from peft import PeftModel
        self.model = PeftModel.from_pretrained(self.model, os.fspath(folder)).eval().requires_grad_(False)

    def _check_adapter(self, folder: Path) -> None:
        """Refuse an adapter folder peft should not read: no safetensors weights (a pickled ``.bin`` is never
        handed to peft), a config out of bounds (:class:`~dglm.config.AdapterConfig`), or weights that do
        not match this LM's modules one to one (names and shapes, read from the safetensors header)."""
        from pydantic import ValidationError
        from transformers.pytorch_utils import Conv1D

        from dglm.config import AdapterConfig, describe_errors
        from dglm.io import CheckpointError, read_json, tensor_shapes

        weights = folder / "adapter_model.safetensors"
        if not weights.is_file():
            other = sorted(p.name for p in folder.glob("adapter_model*")) if folder.is_dir() else []
            raise CheckpointError(f"{weights} is missing" + (f" (found {other}: only safetensors adapters are "
                                                              f"loaded, never pickles)" if other else ""))
        try:
            config = AdapterConfig.model_validate(read_json(folder / "adapter_config.json"))
        except ValidationError as e:
            raise CheckpointError(f"{folder / 'adapter_config.json'} is not a LoRA adapter dglm loads: "
                                  f"{describe_errors(e)}") from None
        targets = {config.target_modules} if isinstance(config.target_modules, str) else set(config.target_modules)
        modules = {n: m for n, m in self.model.named_modules() if isinstance(m, (nn.Linear, Conv1D))}
        wrapped = {n for n in modules if n.rsplit(".", 1)[-1] in targets}
        found: dict[str, dict[str, tuple[int, ...]]] = {}
        for key, shape in tensor_shapes(weights).items():
            name, _, part = key.removeprefix("base_model.model.").rpartition(".lora_")
            if name not in wrapped or part not in ("A.weight", "B.weight"):
                raise CheckpointError(f"{weights} holds {key!r}, which is not the LoRA weight of a module the "
                                      f"adapter targets ({sorted(targets)}) in this decoder; the adapter does not "
                                      f"match the decoder {self.config.name_or_path!r}")
            found.setdefault(name, {})[part[0]] = shape
        if not wrapped or set(found) != wrapped:
            missing = sorted(wrapped - set(found))
            raise CheckpointError(f"{weights} has no LoRA weights for {len(missing)} of the {len(wrapped)} modules "
                                  f"it targets ({sorted(targets)}), e.g. {missing[:3]}; it does not match the "
                                  f"decoder {self.config.name_or_path!r}")
        for name, parts in found.items():
            module = modules[name]
            d_in, d_out = (module.in_features, module.out_features) if isinstance(module, nn.Linear) \
                else tuple(module.weight.shape)  # Conv1D stores (in, out)
            rank = next((r for pattern, r in config.rank_pattern.items() if name.endswith(pattern)), config.r)
            if parts.get("A") != (rank, d_in) or parts.get("B") != (d_out, rank):
                raise CheckpointError(f"{weights}: the LoRA weights of {name} have shapes A {parts.get('A')} and "
                                      f"B {parts.get('B')}; this decoder and r={rank} need A {(rank, d_in)} and "
                                      f"B {(d_out, rank)}")

    def save_adapter(self, folder: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Write the adapter only (``adapter_config.json`` + ``adapter_model.safetensors``), recording the
        decoder by the id it was loaded by (never a local cache path). The folder is written atomically and
        replaces only an earlier adapter holding nothing else, or anything with ``overwrite=True`` (a file
        never; see :func:`dglm.io.atomic_directory`).

        Example (a trained adapter saved and loaded into a fresh copy of the same decoder):
            >>> import copy, tempfile
            >>> from dglm.presets import TINY, random_decoder
            >>> dec = random_decoder(TINY.decoder)
            >>> fresh = copy.deepcopy(dec)
            >>> params = dec.add_adapter(rank=2)
            >>> with torch.no_grad():
            ...     _ = params[1].add_(0.5)  # as if trained
            >>> with tempfile.TemporaryDirectory() as d:
            ...     dec.save_adapter(d)
            ...     files = sorted(os.listdir(d))
            ...     fresh.load_adapter(d)
            >>> files, fresh.has_adapter
            (['adapter_config.json', 'adapter_model.safetensors'], True)
        """
        if not self.has_adapter:
            raise ValueError("the decoder carries no adapter to save")
        for config in self.model.peft_config.values():
            config.base_model_name_or_path = self.config.name_or_path
        with atomic_directory(folder, "adapter", overwrite=overwrite, marker=False) as tmp:
            # The adapter never touches the embeddings: no need for peft to look the base model up (on the hub).
            self.model.save_pretrained(os.fspath(tmp), save_embedding_layers=False)
            (tmp / "README.md").unlink(missing_ok=True)  # peft's model-card template, all placeholders

    @property
    def has_adapter(self) -> bool:
        """Whether the LM is wrapped with a LoRA adapter (see :meth:`load_adapter`).

        Example:
            >>> from dglm.presets import TINY, random_decoder
            >>> dec = random_decoder(TINY.decoder)
            >>> before = dec.has_adapter
            >>> _ = dec.add_adapter(rank=2)
            >>> before, dec.has_adapter
            (False, True)
        """
        return hasattr(self.model, "disable_adapter")

    @contextlib.contextmanager
    def adapter_off(self, off: bool = True) -> Iterator[None]:
        """Run the base LM inside this block (a no-op without an adapter, or with ``off=False``).

        Example (inside the block the LM computes what it computed before the adapter was added):
            >>> from dglm.presets import TINY, random_decoder
            >>> dec = random_decoder(TINY.decoder)
            >>> ids = torch.tensor([[5, 6, 7]])
            >>> base = dec.model(input_ids=ids).logits
            >>> with torch.no_grad():
            ...     for p in dec.add_adapter(rank=2):
            ...         _ = p.add_(0.5)
            >>> with dec.adapter_off():
            ...     off = dec.model(input_ids=ids).logits
            >>> torch.allclose(off, base), torch.allclose(dec.model(input_ids=ids).logits, base)
            (True, False)
        """
        with self.model.disable_adapter() if off and self.has_adapter else contextlib.nullcontext():
            yield

    @contextlib.contextmanager
    def adapter_merged(self, model: nn.Module | None = None) -> Iterator[nn.Module]:
        """Run the LM with its LoRA adapter merged into the projection weights inside this block (no LoRA
        matmuls per layer), for inference without gradients to the adapter; yields the model that carries it.

        Each adapted layer gets a new weight ``W + delta`` (peft's ``get_delta_weight``, the value peft's
        ``merge_adapter`` writes); the original weight objects are put back on exit, so nothing is restored
        by subtraction and the base weights are bit-identical afterwards. A no-op without an adapter or
        inside :meth:`adapter_off` (the adapter stays off); adapters peft cannot merge as one delta (DoRA,
        quantised base layers) stay unmerged.

        ``model``: your own instance of this decoder's LM (a plain Hugging Face model, say
        ``AutoModelForCausalLM.from_pretrained(id)``), to decode soft tokens with your code. Its projection
        layers get the merged weights for the block, in their own dtype and device, and their original
        ``Parameter`` objects back on exit: no module is added, replaced or hooked, and its state dict is
        bit-identical afterwards. Its layers must match the decoder's (names and shapes), else a
        ``ValueError`` names the first that does not; an adapter that cannot be merged is refused.

        Like :meth:`adapter_off`, it changes how the model runs for every caller while the block is open: use
        it from one thread at a time (:class:`~dglm.DGLM` calls hold the pipeline's lock).

        Example (the LM with its adapter, and a user's own copy of the base LM inside the block):
            >>> import copy
            >>> from dglm.presets import preset_config, random_decoder
            >>> dec = random_decoder(preset_config("tiny").decoder)
            >>> mine = copy.deepcopy(dec.model)                       # the user's own object
            >>> for p in dec.add_adapter(rank=2):
            ...     _ = torch.nn.init.normal_(p)
            >>> embeds, mask, _ = dec.embed(dec.tokenize(["the game was"]), torch.zeros(1, 2, dec.hidden_size))
            >>> with torch.no_grad():
            ...     lora = dec.model(inputs_embeds=embeds, attention_mask=mask).logits
            ...     with dec.adapter_merged():
            ...         merged = dec.model(inputs_embeds=embeds, attention_mask=mask).logits
            ...     with dec.adapter_merged(mine) as m:
            ...         users = m(inputs_embeds=embeds, attention_mask=mask).logits
            ...     after = mine(inputs_embeds=embeds, attention_mask=mask).logits
            >>> torch.allclose(lora, merged, atol=1e-4), torch.allclose(lora, users, atol=1e-4)
            (True, True)
            >>> torch.allclose(lora, after, atol=1e-4)                # the user's model is its own again
            False
        """
        own = model is None or model is self.model
        layers = _mergeable_lora_layers(self.model) if self.has_adapter else []
        if not own and self.has_adapter and not layers:
            raise ValueError("the decoder's adapter cannot be merged into another model (DoRA or quantised "
                             "base layers); decode with pipe.decoder.model, which carries it")
        if not layers or any(layer.disable_adapters for layer in layers):  # none, or switched off around us
            yield self.model if own else model
            return
        targets = _target_layers(self.model, layers, None if own else model, self.config.name_or_path)
        swapped = []
        try:
            with torch.no_grad(), self.model.disable_adapter():  # the LoRA branch is off: its delta is in W
                for layer, base in zip(layers, targets, strict=True):
                    delta = sum(layer.get_delta_weight(name) for name in layer.active_adapters)
                    weight = base.weight
                    swapped.append((base, weight))
                    # As peft's merge: the sum in the promoted dtype (adapters may be float32 over a bf16 base),
                    # stored in the base weight's dtype.
                    base.weight = nn.Parameter((weight + delta.to(weight.device)).to(weight.dtype),
                                               requires_grad=False)
                yield self.model if own else model
        finally:
            for base, weight in swapped:
                base.weight = weight


def _target_layers(peft_model: nn.Module, layers: list, model: nn.Module | None, name: str) -> list[nn.Module]:
    """The layers whose weights :meth:`DecoderAdapter.adapter_merged` replaces: the LoRA layers' own base
    layers, or (``model`` given) the layers of ``model`` at the same names, checked to match in shape."""
    if model is None:
        return [layer.get_base_layer() for layer in layers]
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (your instance of the decoder {name!r}), "
                        f"got {type(model).__name__}")
    from peft.tuners.lora import LoraLayer

    names = {id(m): n.removeprefix("base_model.model.") for n, m in peft_model.named_modules()}
    theirs = dict(model.named_modules())
    targets = []
    for layer in layers:
        base, key = layer.get_base_layer(), names[id(layer)]
        mine = theirs.get(key)
        if mine is None or not isinstance(getattr(mine, "weight", None), torch.Tensor) \
                or mine.weight.shape != base.weight.shape:
            found = "no such module" if mine is None else \
                f"a {type(mine).__name__} with weight {tuple(getattr(mine, 'weight', torch.empty(0)).shape)}"
            raise ValueError(f"model is not an instance of the decoder {name!r} the adapter was trained on: "
                             f"the adapter needs {key!r} with weight {tuple(base.weight.shape)}, model has {found}")
        if isinstance(mine, LoraLayer):
            raise ValueError(f"model already carries a LoRA adapter at {key!r} (dglm's pipe.decoder.model, or a "
                             f"peft-wrapped model): pass the plain model")
        targets.append(mine)
    return targets


def _mergeable_lora_layers(model: nn.Module) -> list:
    """The LoRA layers of a peft-wrapped model whose adapters merge as one weight delta (plain LoRA on a
    float ``Linear`` / GPT-2 ``Conv1D``); [] if any adapted layer does not (then nothing is merged)."""
    from peft.tuners.lora import LoraLayer
    from transformers.pytorch_utils import Conv1D

    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    for layer in layers:
        base = layer.get_base_layer()
        if not isinstance(base, (nn.Linear, Conv1D)) or not base.weight.dtype.is_floating_point \
                or type(base.weight) is not nn.Parameter \
                or any(layer.use_dora.get(name, False) for name in layer.active_adapters):
            return []
    return layers
