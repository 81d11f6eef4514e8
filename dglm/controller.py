"""Controller: constraints bound to a DGLM pipeline, for generation or for soft prompts to use elsewhere.

Example:
    >>> from dglm import Controller, toxicity, topic
    >>> ctl = Controller(toxicity.low() + topic("sports"), strength=20)      # loads the "mini" checkpoint  # doctest: +SKIP
    >>> ctl.generate(["The match last night"], num_samples=2, seed=0).continuations  # doctest: +SKIP
    >>> embeds, mask = ctl.prompt_embeds(["The match last night"], seed=0)   # doctest: +SKIP
    >>> my_model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=32)  # doctest: +SKIP
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch

from dglm.config import GenerationConfig
from dglm.constraints import Constraint, Control
from dglm.constraints.guidance import ConstraintLike
from dglm.outputs import GenerationOutput, Plan
from dglm.pipeline import DGLM


class Controller:
    """A constraint (``toxicity.low() + topic('sports')``, a string in the same syntax, or None for unguided
    generation) and default settings, bound to a :class:`DGLM` pipeline (default: ``DGLM.from_pretrained
    ("mini")``, loaded on first use): a thin front that hands a :class:`~dglm.constraints.Control` and its
    settings to :meth:`DGLM.plan` / :meth:`DGLM.generate`, which own the loop.

    ``settings`` are :class:`~dglm.config.GenerationConfig` fields (``strength``, ``guidance_samples``,
    ``steps``, ...), checked once, here; a call's keywords override them and mean what they mean at
    :meth:`DGLM.generate` (``strength``: one number, or one per prefix). Every call may also give one
    constraint per prefix (``constraints=[...]``), so one batch can serve requests with different controls.
    ``max_x0_shift``: see :class:`~dglm.constraints.guidance.ConstraintGuidance`.

    Example (a random-weight pipeline and a zero-shot constraint, which needs no shipped probes):
        >>> from dglm.constraints import near
        >>> from dglm.presets import random_pipeline
        >>> ctl = Controller(near("the game was won"), random_pipeline("tiny"), strength=5)
        >>> ctl
        Controller(near('the game was won'), strength=5.0)
        >>> out = ctl.generate(["the game was", "a new song"], num_samples=2, steps=4, seed=0,
        ...                    constraints=[None, 'near("old music")'], strength=[0, 10], max_new_tokens=3)
        >>> [len(texts) for texts in out.continuations]
        [2, 2]
        >>> embeds, mask = ctl.prompt_embeds(["the game was"], num_samples=2, steps=4, seed=0)
        >>> embeds.shape, mask.shape  # 3 prefix tokens + 4 soft tokens per row
        (torch.Size([2, 7, 32]), torch.Size([2, 7]))
    """

    def __init__(self, constraint: ConstraintLike = None, pipeline: DGLM | None = None, *,
                 max_x0_shift: float = 1.0, **settings):
        if not (constraint is None or isinstance(constraint, (Constraint, str))):
            raise TypeError(f"constraint={constraint!r:.100} must be a Constraint, a constraint expression string "
                            f"or None (per-prefix constraints go to generate(constraints=[...]))")
        strength = settings.get("strength")
        if isinstance(strength, Sequence) and not isinstance(strength, str):
            raise TypeError(f"strength={strength!r:.100} must be one number or None; per-prefix strengths go to "
                            f"generate(strength=[...])")
        self.generation_config = GenerationConfig().apply(GenerationConfig.check(settings))
        self.default_control = Control(constraint, max_x0_shift=max_x0_shift)
        self._pipeline = pipeline
        self._load_lock = threading.Lock()

    def __repr__(self) -> str:
        settings = "".join(f", {k}={v!r}" for k, v in self.generation_config.overrides().items())
        return f"Controller({self.constraint!r}{settings})"

    @property
    def pipeline(self) -> DGLM:
        """The bound :class:`DGLM` (the packaged ``"mini"`` checkpoint, loaded on first access, if none was
        given).

        Example:
            >>> from dglm.presets import random_pipeline
            >>> pipe = random_pipeline("tiny")
            >>> Controller("near('old music')", pipe).pipeline is pipe
            True
        """
        with self._load_lock:  # two threads must not both load it
            if self._pipeline is None:
                self._pipeline = DGLM.from_pretrained("mini")
        return self._pipeline

    @property
    def constraint(self) -> Constraint | None:
        """The default constraint (a parsed :class:`~dglm.constraints.Constraint`), or None for unguided.

        Example (a string is parsed when the controller is made):
            >>> Controller("toxicity.low() + topic('sports')").constraint
            toxicity.low() + topic('sports')
            >>> Controller().constraint is None
            True
        """
        return self.default_control.constraints

    def control(self, constraints: ConstraintLike | Sequence[ConstraintLike] | None = None) -> Control:
        """The :class:`~dglm.constraints.Control` of a call: this controller's constraint, or ``constraints``
        (one, or one per prefix) where given.

        Example:
            >>> Controller("topic('sports')").control(["topic('arts')", None]).constraints
            (topic('arts'), None)
        """
        if constraints is None:
            return self.default_control
        return Control(constraints, max_x0_shift=self.default_control.max_x0_shift)

    def plan(self, prefixes: Sequence[str], num_samples: int | None = None, *,
             constraints: Sequence[ConstraintLike] | None = None, **settings) -> Plan:
        """Guided plans and soft prompts (see :meth:`DGLM.plan` for ``settings``).

        Example (strength 0 for a prefix leaves its plan as the pipeline's unguided plan):
            >>> from dglm.constraints import near
            >>> from dglm.presets import random_pipeline
            >>> pipe = random_pipeline("tiny")
            >>> ctl = Controller(near("old music"), pipe, strength=50)
            >>> prefixes = ["the game was", "a new song"]
            >>> plan = ctl.plan(prefixes, num_samples=2, steps=4, seed=0, strength=[50, 0])
            >>> plan.embeddings.shape, plan.soft_prompts.shape
            (torch.Size([4, 32]), torch.Size([4, 4, 32]))
            >>> plain = pipe.plan(prefixes, num_samples=2, steps=4, seed=0).embeddings
            >>> torch.equal(plan.embeddings[2:], plain[2:]), torch.equal(plan.embeddings[:2], plain[:2])
            (True, False)
        """
        return self.pipeline.plan(prefixes, num_samples, control=self.control(constraints),
                                  generation_config=self.generation_config, **settings)

    def generate(self, prefixes: Sequence[str], num_samples: int | None = None, *,
                 constraints: Sequence[ConstraintLike] | None = None, instruction: str | bool | None = None,
                 **settings) -> GenerationOutput:
        """Controlled continuations: ``output.continuations[i][j]`` is sample j of prefix i (see
        :meth:`DGLM.generate` for ``settings``, ``control_scale`` among them).

        ``instruction`` (for instruct decoders): a request put in a user turn of the decoder's chat template,
        each prefix starting the assistant's answer, while the plan is guided as before; ``True`` writes it
        from this controller's constraint (``topic('sports')`` -> "Write about sports.",
        :func:`dglm.instructions.instruction_for`). Continuations never include it.

        Example (one batch, two controls: the default for the first prefix, another for the second):
            >>> from dglm.constraints import near
            >>> from dglm.presets import random_pipeline
            >>> ctl = Controller(near("the game was won"), random_pipeline("tiny"), strength=20)
            >>> out = ctl.generate(["the game was", "a new song"], 2, constraints=[None, "near('old music')"],
            ...                    steps=4, seed=0, max_new_tokens=3, min_new_tokens=3)
            >>> [[len(text.split()) for text in texts] for texts in out.continuations]
            [[3, 3], [3, 3]]
        """
        if instruction is not None and instruction is not False:
            from dglm.instructions import chat_prefixes, instruction_for

            if instruction is True:
                if self.constraint is None:
                    raise ValueError("instruction=True writes the instruction from the controller's constraint, "
                                     "and it has none; pass the instruction text instead")
                instruction = instruction_for(self.constraint)
            prefixes = chat_prefixes(self.pipeline.decoder.tokenizer, list(prefixes), instruction)
        return self.pipeline.generate(prefixes, num_samples, control=self.control(constraints),
                                      generation_config=self.generation_config, **settings)

    def prompt_embeds(self, prefixes: Sequence[str], num_samples: int | None = None, *, dtype: torch.dtype | None = None,
                      device: str | torch.device | None = None, max_new_tokens: int | None = None,
                      **plan_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs_embeds, attention_mask)`` for ``len(prefixes) * num_samples`` rows (row-major):
        ``[left padding][prefix token embeddings][soft tokens]``, ready for any HF ``model.generate(
        inputs_embeds=..., attention_mask=...)`` call of the same decoder. Under the same seed
        (``torch.manual_seed(seed)`` before your call), that call writes exactly what :meth:`generate` writes.
        Prefixes too long for the decoder's context keep their last tokens, leaving room for the soft tokens
        and the ``max_new_tokens`` you will generate (None: this call's default, what :meth:`generate` would
        write; pass the same number to both for identical inputs).

        Example (rows of 3 prefix tokens, padded to the longest, then 4 soft tokens; your LM then generates):
            >>> from dglm.constraints import near
            >>> from dglm.presets import random_pipeline
            >>> ctl = Controller(near("the game was won"), random_pipeline("tiny"), strength=20)
            >>> embeds, mask = ctl.prompt_embeds(["the game was", "a song"], steps=4, seed=0,
            ...                                  dtype=torch.float64)
            >>> embeds.shape, embeds.dtype, mask.tolist()
            (torch.Size([2, 7, 32]), torch.float64, [[1, 1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 1]])
            >>> ids = ctl.pipeline.decoder.model.generate(inputs_embeds=embeds.float(), attention_mask=mask,
            ...                                           max_new_tokens=3, min_new_tokens=3, do_sample=False,
            ...                                           pad_token_id=0)
            >>> ids.shape
            torch.Size([2, 3])
        """
        room = self.pipeline.generation_config(self.generation_config, max_new_tokens=max_new_tokens).max_new_tokens
        plan = self.plan(prefixes, num_samples, **plan_kwargs)
        rows = [p for p in plan.prefixes for _ in range(plan.num_samples)]
        decoder = self.pipeline.decoder
        budget = decoder.prefix_budget(plan.soft_prompts.shape[1], room)
        with torch.no_grad(), self.pipeline.lock:
            embeds, mask, _ = decoder.embed(decoder.tokenize(rows, budget), plan.soft_prompts)
        return embeds.to(device=device, dtype=dtype), mask.to(device=device)


