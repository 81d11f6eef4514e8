"""Instructions for instruct decoders: a control's own words as a request, and prefixes wrapped in the
decoder's chat template.

DGLM composes with prompting: on an instruct decoder the request ("Write about sports.") goes in a user
turn, the prefix starts the assistant's answer, and the plan is guided as before. :func:`instruction_for`
writes the request from a constraint's terms (``topic('sports')`` -> ``"Write about sports."``,
``-topic('sports')`` -> ``"Do not write about sports."``); :func:`chat_prefixes` does the wrapping with the
tokenizer's ``apply_chat_template`` (a tokenizer without a chat template gets the request as a plain line
before the prefix).

Example:
    >>> from dglm.constraints import parse_constraint
    >>> instruction_for(parse_constraint("topic('sports') + sentiment.positive()"))
    'Write about sports, in a positive tone.'
    >>> chat_prefixes(None, ["The match"], "Write about sports.")
    ['Write about sports.\\n\\nThe match']
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["chat_prefixes", "instruction_for"]

# (probe, label) of the shipped binary probes -> how the request words it.
_PHRASES = {("sentiment", "positive"): "in a positive tone", ("sentiment", "negative"): "in a negative tone",
            ("toxicity", "toxic"): "offensively", ("toxicity", "non-toxic"): "politely"}


def _phrase(leaf) -> str:
    from dglm.constraints.builtin import TOPIC, Target

    if not isinstance(leaf, Target):
        raise ValueError(f"{leaf!r}: only probe targets (topic, sentiment, toxicity, target(probe, label)) can be "
                         f"put in words; write the instruction yourself")
    if leaf.probe == TOPIC:
        return "about " + leaf.label.replace("_", " ")
    return _PHRASES.get((leaf.probe, leaf.label), f"so that its {leaf.probe.replace('_', ' ')} is "
                                                  f"{leaf.label.replace('_', ' ')}")


def instruction_for(constraint) -> str:
    """A one-sentence request saying what ``constraint`` asks for (a constraint or its string form): the
    terms of positive weight as "Write ...", those of negative weight as "Do not write ...".

    Example:
        >>> from dglm.constraints import parse_constraint
        >>> instruction_for(parse_constraint("topic('sports')")), instruction_for("-topic('sports')")
        ('Write about sports.', 'Do not write about sports.')
        >>> instruction_for("toxicity.low() + topic('arts')")
        'Write about arts. Do not write offensively.'
        >>> instruction_for("near('a song')")
        Traceback (most recent call last):
            ...
        ValueError: near('a song'): only probe targets (topic, sentiment, toxicity, target(probe, label)) can be \
put in words; write the instruction yourself
    """
    from dglm.constraints import parse_constraint

    if isinstance(constraint, str):
        constraint = parse_constraint(constraint)
    terms = constraint.terms()
    pos = [_phrase(leaf) for leaf, w in terms if w > 0]
    neg = [_phrase(leaf) for leaf, w in terms if w < 0]
    parts = ([f"Write {', '.join(pos)}."] if pos else []) + ([f"Do not write {' or '.join(neg)}."] if neg else [])
    if not parts:
        raise ValueError(f"constraint={constraint!r} has no terms to put in words")
    return " ".join(parts)


def chat_prefixes(tokenizer, prefixes: Sequence[str], instruction: str) -> list[str]:
    """Each prefix as the start of the assistant's answer to a user turn holding ``instruction``, in the
    tokenizer's chat template (``apply_chat_template(..., add_generation_prompt=True)``); without a chat
    template (or ``tokenizer=None``) the instruction is a plain line before each prefix.

    Example (SmolLM2-style template: ``<|im_start|>user ... <|im_end|> <|im_start|>assistant``):
        >>> from dglm.presets import TINY, random_decoder
        >>> tok = random_decoder(TINY.decoder).tokenizer
        >>> chat_prefixes(tok, ["The house"], "Write about sports.")[0].endswith("The house")
        True
    """
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError(f"instruction={instruction!r} must be a non-empty string")
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        head = tokenizer.apply_chat_template([{"role": "user", "content": instruction}], tokenize=False,
                                             add_generation_prompt=True)
    else:
        head = instruction + "\n\n"
    return [head + p for p in prefixes]
