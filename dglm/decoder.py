"""Decoder: a thin adapter over any Hugging Face causal LM that places soft tokens after the prefix.

The input of every row is ``[left padding][prefix token embeddings][k soft tokens]`` with an attention
mask that hides the padding; ``generate()`` keywords pass through untouched (except
``repetition_penalty``, see :meth:`Decoder.generate`) and only the continuation is returned.

The model you pass stays yours: the decoder works on its own copy of the model's module tree whose
parameters view the same weight storage (no extra memory), so an adapter's LoRA layers, hooks, train/eval
switches and ``.to()`` moves of the pipeline happen on that copy, never on your object, and the weights
are never written. A LoRA adapter trained with the prompt generator (:meth:`Decoder.load_adapter`) is
active only while soft prompts are given, so plain decoding through the same object is the base LM's; a
``generate`` call with soft prompts runs with the adapter merged into (copies of) the projection weights,
so it costs what plain decoding costs.

A prefix longer than the LM's context leaves room for the soft tokens and ``max_new_tokens`` by keeping
its *last* tokens (the leading special tokens, such as a BOS, are kept) and logging a warning; a request
whose soft tokens and ``max_new_tokens`` alone do not fit is refused. Weights load from safetensors only.

Example:
    >>> dec = Decoder.from_pretrained("gpt2")                                  # doctest: +SKIP
    >>> soft = torch.zeros(2, 8, dec.hidden_size)                              # doctest: +SKIP
    >>> dec.generate(["Hello", "The match last night"], soft, max_new_tokens=8, do_sample=False)  # doctest: +SKIP
    [' ...', ' ...']
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    RepetitionPenaltyLogitsProcessor,
)

from dglm.config import DecoderConfig
from dglm.io import ModelLoadError, atomic_directory

logger = logging.getLogger(__name__)

# Names of attention projections a LoRA adapter targets (Llama-style, and GPT-2's fused ones).
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "c_attn", "c_proj")
# transformers' decoding flags that act only when sampling (do_sample=True).
SAMPLING_ONLY = ("temperature", "top_p", "top_k", "min_p", "top_h", "typical_p", "epsilon_cutoff", "eta_cutoff")


def share_weights(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s module tree whose parameters and buffers view the same storage (no weights are
    copied). Modules, configs and hooks are the copy's own, and so are the ``Parameter`` objects (tied
    weights stay tied), so replacing layers, registering hooks, ``.train()`` or ``.to()`` on the copy leave
    ``model`` as it was; in-place writes to the weights would show in both (dglm never makes them).

    Example:
        >>> lin = nn.Linear(2, 2)
        >>> twin = share_weights(lin)
        >>> twin.weight is lin.weight, twin.weight.data_ptr() == lin.weight.data_ptr()
        (False, True)
    """
    memo: dict[int, object] = {}
    for p in model.parameters():
        # Quantised parameter types carry state beyond their data: share those objects as they are.
        memo[id(p)] = nn.Parameter(p.data, requires_grad=p.requires_grad) if type(p) is nn.Parameter else p
    for b in model.buffers():
        memo[id(b)] = b
    return copy.deepcopy(model, memo)


def check_prefixes(prefixes: Sequence[str]) -> list[str]:
    """Validate a batch of prefixes: a non-empty list of str.

    An empty or whitespace-only prefix is allowed and means "no context" (unconditional generation: the
    encoder embeds it like any text and the decoder starts from the soft tokens alone).

    Example:
        >>> check_prefixes(("The match", ""))
        ['The match', '']
        >>> check_prefixes("The match")
        Traceback (most recent call last):
            ...
        TypeError: prefixes must be a list of str, got a single str 'The match'; wrap it in a list
        >>> check_prefixes([bytes([99, 97, 102, 233]).decode("utf-8", "surrogateescape")])
        Traceback (most recent call last):
            ...
        ValueError: prefixes[0] is not valid Unicode text (character 3: '\udce9'); decode input bytes as UTF-8 first
    """
    if isinstance(prefixes, str):
        raise TypeError(f"prefixes must be a list of str, got a single str {prefixes[:40]!r}; wrap it in a list")
    if not isinstance(prefixes, Sequence) or len(prefixes) == 0:
        raise ValueError(f"prefixes must be a non-empty list of str, got {prefixes!r}")
    for i, p in enumerate(prefixes):
        if not isinstance(p, str):
            raise TypeError(f"prefixes[{i}] must be a str, got {type(p).__name__} ({p!r:.40})")
        try:
            p.encode("utf-8")
        except UnicodeEncodeError as e:  # lone surrogates, e.g. undecodable bytes read with surrogateescape
            raise ValueError(f"prefixes[{i}] is not valid Unicode text (character {e.start}: "
                             f"{p[e.start:e.end]!r}); decode input bytes as UTF-8 first") from None
    return list(prefixes)


class Decoder(nn.Module):
    """A causal LM + tokenizer that accepts soft prompts (B, k, hidden_size) after each prefix, and its LoRA
    adapter, trained with the prompt generator so that the decoder reads the soft tokens: added, loaded
    (checked against the LM before peft reads a byte), saved, switched off for plain decoding, and merged
    into the projection weights for a ``generate`` call (of this decoder's LM, or of a user's own model).

    Example (a random-weight stand-in; a real one comes from from_pretrained):
        >>> from dglm.presets import preset_config, random_decoder
        >>> dec = random_decoder(preset_config("tiny").decoder)
        >>> dec.hidden_size, dec.device, dec.max_length
        (32, device(type='cpu'), 256)
        >>> soft = torch.zeros(1, 2, dec.hidden_size)
        >>> out = dec.generate(["the game was"], soft, max_new_tokens=3, min_new_tokens=3, do_sample=False)
        >>> len(out), len(out[0].split())
        (1, 3)
        >>> dec.continuation_nll(dec.tokenize(["the game"]), dec.tokenize(["was won"]), soft).shape
        torch.Size([1])
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name_or_path: str | None = None):
        super().__init__()
        self.model = share_weights(model)  # dglm's own module tree over the caller's weights
        self.tokenizer = tokenizer
        self.config = DecoderConfig(name_or_path=name_or_path or getattr(model, "name_or_path", None) or "custom",
                                    hidden_size=self.embeddings.embedding_dim)
        # A start token for rows that would otherwise be empty; padding needs some id (it is masked out).
        self.start_token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_token_id is None or self.start_token_id is None:
            raise ValueError("the tokenizer has none of pad, bos and eos tokens; set tokenizer.pad_token first")

    @classmethod
    def from_pretrained(cls, name_or_path: str, dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None, *, name: str | None = None,
                        show_progress: bool = False, **kwargs) -> Decoder:
        """Load a causal LM and its tokenizer from exactly the hub id or folder given; ``name`` (default
        ``name_or_path``) is the id the decoder is known by (``config.name_or_path``, what checkpoints
        record). Packaged default models are looked up by the loading boundary,
        :func:`dglm.assets.load_decoder`, never here. transformers' progress bars are shown only with
        ``show_progress=True`` (:func:`dglm.progress.progress_bars`).

        Weights are read from safetensors files only (``use_safetensors=True`` unless overridden). A hub id
        that is not cached while the hub is offline or unreachable raises one :class:`~dglm.io.ModelLoadError`.

        Example (a local folder holding a model and its tokenizer):
            >>> import tempfile
            >>> from dglm.presets import TINY, random_decoder
            >>> saved = random_decoder(TINY.decoder)
            >>> with tempfile.TemporaryDirectory() as d:
            ...     saved.model.save_pretrained(d)
            ...     _ = saved.tokenizer.save_pretrained(d)
            ...     dec = Decoder.from_pretrained(d, dtype=torch.bfloat16)
            >>> same_ids = dec.tokenize(["the game"]) == saved.tokenize(["the game"])
            >>> dec.hidden_size, dec.embeddings.weight.dtype, same_ids
            (32, torch.bfloat16, True)
        """
        from dglm.progress import progress_bars

        path = name_or_path
        kwargs.setdefault("use_safetensors", True)
        with progress_bars(show_progress):
            try:
                tokenizer = AutoTokenizer.from_pretrained(path)
                model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32, **kwargs)
            except (OSError, ValueError) as e:
                if Path(os.fspath(path)).is_dir():
                    raise
                raise ModelLoadError.for_hub("decoder", name or name_or_path, e) from None
        if device is not None:
            model = model.to(device)
        return cls(model.eval().requires_grad_(False), tokenizer, name or os.fspath(name_or_path))

    @contextlib.contextmanager
    def _quiet_generation_config(self, generate_kwargs: dict):
        """Inside this block, dglm's copy of the LM has no generation settings that this call overrides or
        leaves unused: ``max_length`` when ``max_new_tokens`` is given (many ``generation_config.json`` files
        set one), and sampling flags when decoding greedily (also dropped from ``generate_kwargs``, where
        dglm's defaults merged them). Each would draw a transformers warning on every call although the
        call's result is the same without it. The user's model object is never touched."""
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        config = base.generation_config
        quiet = copy.copy(config)
        if "max_new_tokens" in generate_kwargs:
            quiet.max_length = None
        if not generate_kwargs.get("do_sample", config.do_sample):
            for flag in SAMPLING_ONLY:
                generate_kwargs.pop(flag, None)
                if getattr(quiet, flag, None) is not None:
                    setattr(quiet, flag, None)
        base.generation_config = quiet
        try:
            yield
        finally:
            base.generation_config = config

    def generation_defaults(self, defaults: dict) -> dict:
        """``defaults`` with every key that the LM's own ``generation_config`` sets taken from it instead: a
        decoder's ``generation_config`` supplies the defaults a call does not override, dglm's fill the rest.

        Example:
            >>> from dglm.presets import preset_config, random_decoder
            >>> dec = random_decoder(preset_config("tiny").decoder)
            >>> dec.model.generation_config.max_new_tokens = 5
            >>> dec.generation_defaults({"max_new_tokens": 32, "top_p": 0.9})
            {'max_new_tokens': 5, 'top_p': 0.9}
        """
        config = getattr(self.model, "generation_config", None)
        own = config.to_diff_dict() if config is not None else {}  # the values set, not the library's defaults
        return {key: own.get(key, value) for key, value in defaults.items()}

    @property
    def embeddings(self) -> nn.Embedding:
        """The LM's input-embedding layer (token id -> (hidden_size,) vector).

        Example:
            >>> from dglm.presets import TINY, random_decoder
            >>> dec = random_decoder(TINY.decoder)
            >>> dec.embeddings.weight.shape, dec.embeddings(torch.tensor([5])).shape
            (torch.Size([512, 32]), torch.Size([1, 32]))
        """
        return self.model.get_input_embeddings()

    @property
    def hidden_size(self) -> int:
        """Width of the LM's token embeddings, and of the soft tokens it accepts.

        Example:
            >>> from dglm.presets import TINY, random_decoder
            >>> dec = random_decoder(TINY.decoder)
            >>> dec.hidden_size, dec.hidden_size == dec.embeddings.embedding_dim
            (32, True)
        """
        return self.config.hidden_size

    @property
    def device(self) -> torch.device:
        """The device of the LM's input embeddings, where inputs are built.

        Example:
            >>> from dglm.presets import TINY, random_decoder
            >>> dec = random_decoder(TINY.decoder)
            >>> dec.device
            device(type='cpu')
        """
        return self.embeddings.weight.device

    @property
    def max_length(self) -> int | None:
        """The LM's context length in positions (None if its config does not say).

        Example:
            >>> from dglm.presets import TINY, random_decoder
            >>> dec = random_decoder(TINY.decoder)
            >>> dec.max_length, dec.model.config.max_position_embeddings
            (256, 256)
        """
        value = getattr(self.model.config, "max_position_embeddings", None)
        return value if isinstance(value, int) and value > 0 else None

    def prefix_budget(self, num_soft_tokens: int, max_new_tokens: int = 0) -> int | None:
        """How many prefix tokens fit next to ``num_soft_tokens`` soft tokens and ``max_new_tokens`` new ones
        (None: no known limit). Raises if not even one prefix token fits.

        Example (the tiny decoder has 256 positions):
            >>> from dglm.presets import TINY, random_decoder
            >>> dec = random_decoder(TINY.decoder)
            >>> dec.max_length, dec.prefix_budget(8, max_new_tokens=32)
            (256, 216)
            >>> dec.prefix_budget(8, max_new_tokens=250)
            Traceback (most recent call last):
                ...
            ValueError: max_new_tokens=250 with 8 soft tokens does not fit the decoder's context of 256 \
positions; accepted: max_new_tokens <= 247
        """
        if self.max_length is None:
            return None
        budget = self.max_length - num_soft_tokens - max_new_tokens
        if budget < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens} with {num_soft_tokens} soft tokens does not fit the "
                             f"decoder's context of {self.max_length} positions; accepted: max_new_tokens <= "
                             f"{self.max_length - num_soft_tokens - 1}")
        return budget

    def tokenize(self, texts: Sequence[str], max_tokens: int | None = None) -> list[list[int]]:
        """Token ids of each text, with the tokenizer's own special-token convention. With ``max_tokens``,
        longer rows keep their leading special tokens and their last tokens (a warning is logged).

        Example:
            >>> from dglm.presets import TINY, random_decoder
            >>> dec = random_decoder(TINY.decoder)
            >>> ids = dec.tokenize(["the game was won", "a song"])
            >>> ids, dec.tokenize(["the game was won"], max_tokens=2)  # a long prefix keeps its end
            ([[63, 24, 69, 75], [4, 59]], [[69, 75]])
        """
        ids = self.tokenizer(list(texts)).input_ids
        if max_tokens is None or all(len(row) <= max_tokens for row in ids):
            return ids
        head = self.tokenizer("").input_ids  # special tokens the tokenizer puts before any text
        head = head if len(head) < max_tokens else []
        out, cut = [], []
        for row in ids:
            if len(row) > max_tokens:
                keep = head if row[:len(head)] == head else []
                cut.append(len(row))
                row = keep + row[len(row) - (max_tokens - len(keep)):]
            out.append(row)
        logger.warning("%d prefix(es) of up to %d tokens are longer than the %d that fit the decoder's context; "
                       "their first tokens were dropped", len(cut), max(cut), max_tokens)
        return out

    def embed(self, prefix_ids: Sequence[Sequence[int]], soft: torch.Tensor | None = None,
              continuation_ids: Sequence[Sequence[int]] | None = None,
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Build ``inputs_embeds`` (B, T, h) and ``attention_mask`` (B, T) for
        ``[left pad][prefix][soft][continuation][right pad]``, and ``labels`` (B, T) for the continuation
        (-100 elsewhere) when ``continuation_ids`` is given. Rows with no token at all get a start token.

        Example (2 rows: prefixes of 3 and 1 tokens, k = 2 soft tokens, continuations of 1 and 2 tokens):
            >>> from dglm.presets import TINY, random_decoder
            >>> dec = random_decoder(TINY.decoder)
            >>> soft = torch.zeros(2, 2, dec.hidden_size)
            >>> embeds, mask, labels = dec.embed([[63, 24, 69], [4]], soft, [[75], [59, 5]])
            >>> embeds.shape, mask.tolist()
            (torch.Size([2, 7, 32]), [[1, 1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1, 1]])
            >>> labels.tolist()
            [[-100, -100, -100, -100, -100, 75, -100], [-100, -100, -100, -100, -100, 59, 5]]
        """
        emb = self.embeddings
        if soft is None and continuation_ids is None:
            prefix_ids = [ids if len(ids) else [self.start_token_id] for ids in prefix_ids]
        prefix = self._pad(prefix_ids, "left")  # (B, L), 0-length allowed
        pieces, masks = [emb(prefix.masked_fill(prefix < 0, self.pad_token_id))], [prefix >= 0]
        labels = None
        if soft is not None:
            if soft.dim() != 3 or soft.shape[0] != prefix.shape[0] or soft.shape[2] != self.hidden_size:
                raise ValueError(f"soft prompts must have shape ({prefix.shape[0]}, k, {self.hidden_size}), "
                                 f"got {tuple(soft.shape)}")
            pieces.append(soft.to(device=self.device, dtype=emb.weight.dtype))
            masks.append(torch.ones(soft.shape[:2], dtype=torch.bool, device=self.device))
        if continuation_ids is not None:
            cont = self._pad(continuation_ids, "right")  # (B, C)
            pieces.append(emb(cont.masked_fill(cont < 0, self.pad_token_id)))
            masks.append(cont >= 0)
            before = sum(p.shape[1] for p in pieces[:-1])
            labels = torch.cat([torch.full((cont.shape[0], before), -100, device=self.device),
                                cont.masked_fill(cont < 0, -100)], dim=1)
        return torch.cat(pieces, dim=1), torch.cat(masks, dim=1).long(), labels

    def _pad(self, seqs: Sequence[Sequence[int]], side: str) -> torch.Tensor:
        """Pad id lists with -1 to one (B, T) long tensor on the model's device."""
        rows = [torch.as_tensor(list(s), dtype=torch.long) for s in seqs]
        if not rows or max(len(r) for r in rows) == 0:
            return torch.empty(len(rows), 0, dtype=torch.long, device=self.device)
        return pad_sequence(rows, batch_first=True, padding_value=-1, padding_side=side).to(self.device)

    def continuation_nll(self, prefix_ids: Sequence[Sequence[int]], continuation_ids: Sequence[Sequence[int]],
                         soft: torch.Tensor | None = None) -> torch.Tensor:
        """Per-row mean negative log-likelihood of the continuation tokens: (B,). Differentiable in ``soft``.

        Example (about log(512) nats a token from a random decoder over 512 tokens; ``soft`` gets gradients):
            >>> import math
            >>> from dglm.presets import TINY, random_decoder
            >>> dec = random_decoder(TINY.decoder)
            >>> prefix, continuation = dec.tokenize(["the game was"]), dec.tokenize([" won by the team"])
            >>> nll = dec.continuation_nll(prefix, continuation)
            >>> nll.shape, abs(nll.item() - math.log(512)) < 1.0
            (torch.Size([1]), True)
            >>> soft = torch.zeros(1, 4, dec.hidden_size, requires_grad=True)
            >>> dec.continuation_nll(prefix, continuation, soft).sum().backward()
            >>> soft.grad.shape, bool(soft.grad.abs().sum() > 0)
            (torch.Size([1, 4, 32]), True)
        """
        inputs_embeds, mask, labels = self.embed(prefix_ids, soft, continuation_ids)
        position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
        with self.adapter_off(soft is None):
            logits = self.model(inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=position_ids).logits
        logits, labels = logits[:, :-1].float(), labels[:, 1:]  # predict token t+1 from position t
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
        return nll.sum(1) / (labels != -100).sum(1).clamp_min(1)

    @torch.no_grad()
    def text_nll(self, prefixes: Sequence[str], continuations: Sequence[str], batch_size: int = 16) -> torch.Tensor:
        """Per-row mean negative log-likelihood (nats per token) of each continuation text given its prefix
        under the base LM (no soft tokens, no adapter): (B,), on the CPU; 0 for an empty continuation. What
        ``max_nll`` (:class:`~dglm.config.GenerationConfig`) compares.

        Example (a random decoder over 512 tokens gives about log(512) nats a token):
            >>> import math
            >>> from dglm.presets import TINY, random_decoder
            >>> dec = random_decoder(TINY.decoder)
            >>> nll = dec.text_nll(["the game was", "a new song"], [" won by the team", ""])
            >>> abs(nll[0].item() - math.log(512)) < 1.0, nll[1].item()
            (True, 0.0)
        """
        if len(prefixes) != len(continuations):
            raise ValueError(f"prefixes and continuations must pair up: got {len(prefixes)} and "
                             f"{len(continuations)}")
        cont = self.tokenizer(list(continuations), add_special_tokens=False).input_ids
        if self.max_length is not None:  # a re-tokenised text can come out longer than it was generated
            cont = [ids[:self.max_length - 1] for ids in cont]
        budget = self.prefix_budget(0, max([len(ids) for ids in cont], default=0) or 1)
        prefix = self.tokenize(prefixes, budget)
        out = [self.continuation_nll(prefix[i:i + batch_size], cont[i:i + batch_size]).float().cpu()
               for i in range(0, len(cont), batch_size)]
        return torch.cat(out) if out else torch.empty(0)

    @torch.no_grad()
    def generate(self, prefixes: Sequence[str], soft: torch.Tensor | None = None, seed: int | None = None,
                 **generate_kwargs) -> list[str]:
        """Continuations of ``prefixes`` (one per row, or ``num_return_sequences`` per row, row-major).

        ``generate_kwargs`` go to ``model.generate`` untouched (``max_new_tokens``, ``top_p``,
        ``logits_processor``, ...), except ``repetition_penalty`` (or the model's generation config's), which
        becomes a ``RepetitionPenaltyLogitsProcessor`` ahead of any ``logits_processor`` given, over every
        generated token of every row. (transformers' own penalty, given ``inputs_embeds`` and left padding,
        exempts a padded row's first generated tokens, one per padding position, so a prefix's text would
        depend on the other prefixes of its batch.) A processor with an ``attached(model)`` context manager
        (:class:`~dglm.plan_guidance.PairedPlanGuidance`) runs attached to the LM for the call. ``seed`` makes
        sampling reproducible without touching the global RNG. Prefixes too long for the context lose their
        first tokens (see the module docstring). With soft prompts the call runs with the adapter merged
        (:meth:`adapter_merged`); without, on the base LM.

        Example (the synthetic tokenizer decodes one word per token):
            >>> from dglm.presets import TINY, random_decoder
            >>> dec = random_decoder(TINY.decoder)
            >>> prefixes = ["the game was", "a new song"]
            >>> out = dec.generate(prefixes, max_new_tokens=3, min_new_tokens=3, seed=0)
            >>> len(out), [len(text.split()) for text in out]
            (2, [3, 3])
            >>> out == dec.generate(prefixes, max_new_tokens=3, min_new_tokens=3, seed=0)
            True
            >>> soft = torch.randn(2, 4, dec.hidden_size)
            >>> greedy = dec.generate(prefixes, soft, max_new_tokens=3, do_sample=False)
            >>> [len(text.split()) <= 3 for text in greedy]
            [True, True]
        """
        prefixes = check_prefixes(prefixes)
        # max_new_tokens and repetition_penalty arrive checked (the pipeline's door, GenerationConfig.check).
        budget = self.prefix_budget(0 if soft is None else soft.shape[1], generate_kwargs.get("max_new_tokens", 1))
        inputs_embeds, mask, _ = self.embed(self.tokenize(prefixes, budget), soft)
        generate_kwargs.setdefault("pad_token_id", self.pad_token_id)
        penalty = generate_kwargs.pop("repetition_penalty", None)
        penalty = self.model.generation_config.repetition_penalty if penalty is None else penalty
        processors = [RepetitionPenaltyLogitsProcessor(penalty)] if penalty not in (None, 1.0) else []
        processors += generate_kwargs.get("logits_processor") or []
        generate_kwargs["logits_processor"] = LogitsProcessorList(processors)
        with contextlib.ExitStack() as stack:
            stack.enter_context(self._quiet_generation_config(generate_kwargs))
            # Soft prompts: the adapter merged for the whole call; none: the base LM.
            stack.enter_context(self.adapter_off() if soft is None else self.adapter_merged())
            for processor in processors:
                if hasattr(processor, "attached"):
                    stack.enter_context(processor.attached(self.model))
            stack.enter_context(torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []))
            if seed is not None:
                torch.manual_seed(seed)
            out = self.model.generate(inputs_embeds=inputs_embeds, attention_mask=mask, **generate_kwargs)
        return self.tokenizer.batch_decode(out, skip_special_tokens=True)

    # -------------------------------------------------------------------------------------------- the adapter
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


def cache_keyword(model) -> str:
    """The name of a causal LM's KV-cache argument and output: transformers >= 5.2x says ``cache``, older
    versions ``past_key_values`` (a peft wrapper is looked through).

    Example:
        >>> from dglm.presets import TINY, random_decoder
        >>> cache_keyword(random_decoder(TINY.decoder).model) in ("cache", "past_key_values")
        True
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _target_layers(peft_model: nn.Module, layers: list, model: nn.Module | None, name: str) -> list[nn.Module]:
    """The layers whose weights :meth:`Decoder.adapter_merged` replaces: the LoRA layers' own base
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
