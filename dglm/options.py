"""Command-line options generated from pydantic config fields: one option per field, its help the field's
description, its default the field's default (declared once, in the config).

Example:
    >>> import argparse
    >>> from pydantic import BaseModel, Field
    >>> class Demo(BaseModel):
    ...     steps: int = Field(default=10, gt=0, description="Optimizer steps.")
    ...     head: Literal["linear", "vocab_mixture"] = Field(default="linear", description="Output head.")
    ...     prefix_embeddings: bool = Field(default=True, description="Embed prefixes too.")
    >>> parser = argparse.ArgumentParser()
    >>> add_config_options(parser, Demo)
    >>> config_from_args(Demo, parser.parse_args(["--steps", "3", "--no-prefix-embeddings"]))
    Demo(steps=3, head='linear', prefix_embeddings=False)
"""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

# Marks an option the user did not give (so the config's own default, or a preset's value, applies).
UNSET = argparse.SUPPRESS


def _unwrap_optional(annotation) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (annotation, False)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _none_or(kind):
    def parse(text: str):
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = getattr(kind, "__name__", "value")  # argparse names the type in its errors
    return parse


def add_config_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, model: type[BaseModel],
                       exclude: typing.Iterable[str] = (), defaults_from: str | None = None,
                       include: typing.Iterable[str] | None = None,
                       aliases: dict[str, list[str]] | None = None, list_nargs: str = "+") -> None:
    """Add ``--field-name`` for every field of ``model`` (or of ``include``, in its order) except ``exclude``;
    ``aliases`` gives a field more option strings (``{"num_samples": ["-n"]}``).

    ``int``, ``float`` and ``str`` fields take one value, ``Literal`` fields a choice, ``bool`` fields
    ``--name`` / ``--no-name``, ``list[...]`` fields one or more values (``list_nargs="*"``: zero or more, so
    that ``--name`` alone gives an empty list); ``X | None`` fields also accept
    ``none``. A field without a default is a required option. An option not given is left out of the parsed
    namespace, so the config's default applies; with ``defaults_from`` the help says that text supplies it
    instead (a preset's value).

    Example:
        >>> import argparse
        >>> from dglm.config import GenerationConfig
        >>> parser = argparse.ArgumentParser()
        >>> add_config_options(parser, GenerationConfig, include=["steps"], aliases={"steps": ["-s"]})
        >>> parser.parse_args(["-s", "8"]), parser.parse_args([])
        (Namespace(steps=8), Namespace())
    """
    for name in model.model_fields if include is None else include:
        field = model.model_fields[name]
        if name in exclude:
            continue
        annotation, optional = _unwrap_optional(field.annotation)
        origin = typing.get_origin(annotation)
        default = field.default
        required = default is PydanticUndefined and field.default_factory is None and defaults_from is None
        if defaults_from is not None:
            shown = f" (default: {defaults_from})"
        elif required:
            shown = " (required)"
        else:
            shown = f" (default: {field.get_default(call_default_factory=True)!r})"
        kwargs: dict[str, Any] = {"dest": name, "default": UNSET, "help": (field.description or "") + shown}
        if annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is Literal:
            choices = list(typing.get_args(annotation)) + ([None] if optional else [])
            kwargs |= {"choices": choices, "type": _none_or(str) if optional else str,
                       "metavar": "{" + ",".join(map(str, choices)) + "}"}
        elif origin in (list, tuple):
            item = typing.get_args(annotation)[0]
            if typing.get_origin(item) is Literal:
                choices = list(typing.get_args(item))
                kwargs |= {"nargs": list_nargs, "type": type(choices[0]), "choices": choices}
            else:
                kwargs |= {"nargs": list_nargs, "type": item, "metavar": name.upper()}
        elif annotation in (int, float, str):
            kwargs |= {"type": _none_or(annotation) if optional else annotation, "metavar": name.upper()}
        else:
            raise TypeError(f"{model.__name__}.{name}: no command-line form for {field.annotation!r}")
        parser.add_argument(*(aliases or {}).get(name, []), "--" + name.replace("_", "-"), required=required, **kwargs)


def config_from_args(model: type[BaseModel], args: argparse.Namespace, base: dict | None = None,
                     exclude: typing.Iterable[str] = ()) -> BaseModel:
    """``model`` validated from ``base`` updated with the options given on the command line (the fields of
    ``model`` present in ``args``), so pydantic checks every bound once.

    Example:
        >>> import argparse
        >>> from dglm.config import GenerationConfig
        >>> args = argparse.Namespace(steps=8)
        >>> cfg = config_from_args(GenerationConfig, args, base={"steps": 50, "top_p": 0.5})
        >>> cfg.steps, cfg.top_p
        (8, 0.5)
    """
    given = {name: getattr(args, name) for name in model.model_fields if hasattr(args, name) and name not in exclude}
    return model.model_validate({**(base or {}), **given})
