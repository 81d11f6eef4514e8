"""Generate ``docs/api.md`` and the generated tables of ``docs/configuration.md`` from the code itself.

    python recipes/gen_api_docs.py                     # write docs/api.md, refresh docs/configuration.md
    python recipes/gen_api_docs.py --check             # exit 1 if either file is out of date
    python recipes/gen_api_docs.py --missing-examples  # list public objects whose docstring has no example

``docs/api.md``: every module under ``dglm/`` (``__main__`` modules excepted: importing them runs them), in
the order of the method's data flow; for each, its docstring and every public class, function and
module-level instance defined there, with its signature and docstring (:mod:`inspect`), its fields
(dataclasses and pydantic configs, with the comment above each field in the source) and its public
methods and properties. The names that ``dglm.__all__``, ``dglm.constraints.__all__`` and
``dglm.bench.__all__`` export are listed first, each linked to where it is documented. A last section
lists the public objects whose docstring has no example and the public methods with no docstring.

``docs/configuration.md``: the hand-written text stays; only the blocks between
``<!-- gen_api_docs:begin NAME -->`` and ``<!-- gen_api_docs:end NAME -->`` are replaced (config fields with
their comments, defaults and bounds; the presets side by side; the ``dglm generate`` options).

Standard library and ``dglm`` only; nothing runs beyond importing the modules.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import importlib
import inspect
import pkgutil
import re
import sys
import textwrap
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
API_MD = ROOT / "docs" / "api.md"
CONFIG_MD = ROOT / "docs" / "configuration.md"
COMMAND = "python recipes/gen_api_docs.py"

# Modules in the order of the data flow (style.md's layout); modules found but not listed here come after,
# alphabetically, so a new module is documented without editing this list.
ORDER = [
    "dglm", "dglm.config", "dglm.encoder", "dglm.schedule", "dglm.nn", "dglm.diffusion", "dglm.sampling",
    "dglm.prompt", "dglm.decoder", "dglm.pipeline", "dglm.controller",
    "dglm.constraints", "dglm.constraints.algebra", "dglm.constraints.probes", "dglm.constraints.builtin",
    "dglm.constraints.parse", "dglm.constraints.guidance",
    "dglm.io", "dglm.presets", "dglm.assets",
    "dglm.training", "dglm.training.data", "dglm.training.loop", "dglm.training.train_diffusion",
    "dglm.training.train_prompt", "dglm.training.corpus", "dglm.training.probe_data",
    "dglm.bench", "dglm.bench.metrics", "dglm.bench.evaluators", "dglm.bench.baselines", "dglm.bench.run",
    "dglm.cli",
]
# Packages whose ``__all__`` is the public API, shown as an index at the top.
EXPORTING = ["dglm", "dglm.constraints", "dglm.bench"]
WIDTH = 100  # signatures longer than this get one parameter per line


# ----------------------------------------------------------------------------------------------- discovery


def discover() -> list[str]:
    """Every importable module of the package except ``__main__`` ones, data-flow order first."""
    import dglm

    found = {"dglm"}
    for info in pkgutil.walk_packages(dglm.__path__, "dglm."):
        if info.name.rsplit(".", 1)[-1] != "__main__":
            found.add(info.name)
    return [m for m in ORDER if m in found] + sorted(found - set(ORDER))


def public_members(module) -> list[tuple[str, object]]:
    """Public classes, functions and module-level instances *defined* in ``module``, in definition order."""
    out = []
    for name, obj in vars(module).items():
        if name.startswith("_"):
            continue
        if inspect.isclass(obj) or inspect.isfunction(obj):
            if getattr(obj, "__module__", None) == module.__name__:
                out.append((name, obj))
        elif _is_instance_api(obj, module):
            out.append((name, obj))
    return out


def _is_instance_api(obj, module) -> bool:
    """A module-level object whose (private) class is defined in the module: ``toxicity``, ``topic``, ..."""
    cls = type(obj)
    return cls.__module__ == module.__name__ and cls.__name__.startswith("_") and not inspect.isclass(obj)


def constants(module) -> list[tuple[str, str]]:
    """UPPER_CASE module constants with a short, machine-independent repr."""
    out = []
    for name, obj in vars(module).items():
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*", name) or inspect.ismodule(obj) or callable(obj):
            continue
        if isinstance(obj, (re.Pattern, Path)) or type(obj).__module__ == "typing":
            continue
        text = _stable_repr(obj)
        if isinstance(obj, (int, float, str, bool, tuple, frozenset)) and len(text) <= 90:
            out.append((name, text))
        elif isinstance(obj, dict):
            out.append((name, f"dict with keys {list(obj)!r}" if len(repr(list(obj))) <= 90 else
                        f"dict of {len(obj)} entries"))
    return out


def _stable_repr(obj) -> str:
    """``repr``, with set elements sorted (a set's order changes from run to run with hash randomisation)."""
    if isinstance(obj, (set, frozenset)):
        inner = ", ".join(sorted(map(repr, obj)))
        return f"{type(obj).__name__}({{{inner}}})" if obj else f"{type(obj).__name__}()"
    return repr(obj)


def own_members(cls) -> list[tuple[str, object]]:
    """Public methods, class/static methods and properties defined in ``cls`` itself (plus ``__call__``)."""
    out = []
    for name, raw in vars(cls).items():
        if name.startswith("_") and name != "__call__":
            continue
        if isinstance(raw, (staticmethod, classmethod, property)) or inspect.isfunction(raw):
            out.append((name, raw))
    return out


# ----------------------------------------------------------------------------------------------- rendering


def _is_pydantic(cls) -> bool:
    return inspect.isclass(cls) and hasattr(cls, "model_fields") and hasattr(cls, "model_validate")


def _short_type(annotation) -> str:
    """A readable type: ``str``, ``int | None``, ``"ddpm" | "ddim"``, ``list[float]``."""
    if annotation is inspect.Parameter.empty or annotation is None:
        return ""
    if isinstance(annotation, str):
        return annotation
    if typing.get_origin(annotation) is typing.Literal:
        return " | ".join(f'"{a}"' if isinstance(a, str) else repr(a) for a in typing.get_args(annotation))
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return re.sub(r"\btyping\.", "", str(annotation))


def _default(value) -> str:
    """A default as source-like text that does not depend on the machine (no addresses, no absolute paths)."""
    if callable(value) and hasattr(value, "__name__") and not inspect.isclass(value):
        return value.__name__
    text = _stable_repr(value)
    if text == "<factory>":  # a dataclass field(default_factory=...)
        return text
    if " at 0x" in text or text.startswith("<"):
        return type(value).__name__ + "(...)"
    return text


def signature(name: str, obj, drop_self: bool = False) -> str:
    """``name(params) -> ret`` from :func:`inspect.signature`, annotations as written in the source."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return f"{name}(...)"
    params, seen_star = [], False
    for i, p in enumerate(sig.parameters.values()):
        if drop_self and i == 0 and p.name in ("self", "cls"):
            continue
        if p.kind is p.KEYWORD_ONLY and not seen_star:
            params.append("*")
            seen_star = True
        text = p.name
        if p.kind is p.VAR_POSITIONAL:
            text, seen_star = "*" + p.name, True
        elif p.kind is p.VAR_KEYWORD:
            text = "**" + p.name
        annotation = _short_type(p.annotation)
        if annotation:
            text += f": {annotation}"
        if p.default is not p.empty:
            text += f" = {_default(p.default)}" if annotation else f"={_default(p.default)}"
        params.append(text)
    ret = _short_type(sig.return_annotation)
    tail = f" -> {ret}" if ret else ""
    one_line = f"{name}({', '.join(params)}){tail}"
    if len(one_line) <= WIDTH:
        return one_line
    return f"{name}(\n" + "".join(f"    {p},\n" for p in params) + f"){tail}"


_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|obj|exc):`(~?)([^`<]+?)(?:\s*<([^>]+)>)?`")
_HEADER = re.compile(r"(Examples?|Raises|Returns|Args|Arguments|Yields|Notes?|See also)( \([^)]*\))?:")


def _inline(text: str) -> str:
    """reST inline markup to markdown: roles and ``literals`` to `code`; ``<`` escaped outside code."""
    def role(m: re.Match) -> str:
        tilde, target, explicit = m.groups()
        shown = target.strip() if explicit else (target.split(".")[-1] if tilde else target)
        return f"``{shown}``"

    text = _ROLE.sub(role, text)
    text = re.sub(r"``(.+?)``", lambda m: f"`{m.group(1)}`", text)
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(p if i % 2 else p.replace("<", "&lt;") for i, p in enumerate(parts))


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def docstring_md(doc: str | None) -> str:
    """A docstring as markdown: doctest examples and ``::`` literal blocks fenced, section headers bold,
    inline reST markup converted, indentation removed elsewhere (so it does not become code)."""
    if not doc:
        return ""
    lines = inspect.cleandoc(doc).splitlines()
    out: list[str] = []
    i, n = 0, len(lines)
    while i < n:
        line, s = lines[i], lines[i].strip()
        if s.startswith(">>>") or s.startswith("$ "):
            base, block, shell = _indent(line), [], s.startswith("$ ")
            while i < n and lines[i].strip() and _indent(lines[i]) >= base:
                block.append(re.sub(r"\s*# doctest: \+\w+$", "", lines[i][base:]))
                i += 1
            out += ["", "```console" if shell else "```pycon", *block, "```", ""]
            continue
        if s.endswith("::"):
            lead = s[:-2].rstrip()
            if lead:
                out.append(_inline(lead + ":"))
            base = _indent(line)
            i += 1
            block = []
            while i < n and (not lines[i].strip() or _indent(lines[i]) > base):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            out += ["", "```", *textwrap.dedent("\n".join(block)).strip("\n").splitlines(), "```", ""]
            continue
        if _HEADER.fullmatch(s):
            out += ["", f"**{s[:-1]}**", ""]
        else:
            out.append(_inline(s))
        i += 1
    text = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def has_example(doc: str | None) -> bool:
    """A docstring counts as having an example when it holds a doctest or an ``Example(s)`` section."""
    return bool(doc) and (">>>" in doc or re.search(r"^\s*Examples?\b[^\n]*:", doc, re.M) is not None)


def anchor(qualname: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", qualname.lower()).strip("-")


def field_comments(cls) -> dict[str, str]:
    """The ``# comment`` lines right above (or at the end of) each annotated field in a class's source."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    tree = ast.parse(source)
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    out: dict[str, str] = {}
    previous = None  # (end line, comment) of the field before
    for node in body:
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            previous = None
            continue
        row = node.lineno - 1
        comment = []
        j = row - 1
        while j >= 0 and lines[j].strip().startswith("#"):
            comment.insert(0, lines[j].strip().lstrip("#").strip())
            j -= 1
        trailing = lines[node.end_lineno - 1].split("  # ", 1)
        if not comment and len(trailing) == 2:
            comment = [trailing[1].strip()]
        text = " ".join(comment)
        if not text and previous is not None and previous[0] == node.lineno - 1:
            text = previous[1]  # one comment above a group of consecutive fields describes them all
        out[node.target.id] = text
        previous = (node.end_lineno, text)
    return out


def _bounds(metadata) -> str:
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    parts = []
    for m in metadata:
        for key, sym in symbols.items():
            if getattr(m, key, None) is not None:
                parts.append(f"{sym} {getattr(m, key)}")
    return ", ".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def fields_table(cls) -> str:
    """A markdown table of a pydantic model's or dataclass's fields: name, type, default, bounds, comment."""
    comments = field_comments(cls)
    rows = []
    if _is_pydantic(cls):
        from pydantic_core import PydanticUndefined

        for name, f in cls.model_fields.items():
            if f.default_factory is not None:
                default = f"{_default(f.default_factory())}"
            elif f.default is PydanticUndefined:
                default = "required"
            else:
                default = _default(f.default)
            rows.append((name, _short_type(f.annotation), default, _bounds(f.metadata), comments.get(name) or (f.description or "")))
    elif dataclasses.is_dataclass(cls):
        for f in dataclasses.fields(cls):
            if f.name.startswith("_"):
                continue
            if f.default is not dataclasses.MISSING:
                default = _default(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                default = _default(f.default_factory())
            else:
                default = "required"
            rows.append((f.name, _short_type(f.type), default, "", comments.get(f.name, "")))
    if not rows:
        return ""
    has_bounds = any(r[3] for r in rows)
    head = "| field | type | default |" + (" bounds |" if has_bounds else "") + " meaning |"
    sep = "|---|---|---|" + ("---|" if has_bounds else "") + "---|"
    body = [f"| `{r[0]}` | `{_cell(r[1])}` | `{_cell(r[2])}` |" + (f" {r[3]} |" if has_bounds else "")
            + f" {_cell(_inline(r[4])) or '-'} |" for r in rows]
    return "\n".join([head, sep, *body])


def render_function(module: str, name: str, fn, level: str = "###") -> list[str]:
    return [f'<a id="{anchor(module + "." + name)}"></a>', "", f"{level} `{name}`", "",
            "```python", signature(name, fn), "```", "", docstring_md(inspect.getdoc(fn)) or "*No docstring.*", ""]


def render_members(cls, owner: str) -> list[str]:
    out = []
    for name, raw in own_members(cls):
        if isinstance(raw, property):
            doc = docstring_md(raw.__doc__) or "*No docstring.*"
            out += [f"- **`{owner}.{name}`** (property): {doc}", ""]
            continue
        fn = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
        if name == "__call__":
            heading, shown = f"#### Calling `{owner}(...)`", owner
        else:
            kind = " (class method)" if isinstance(raw, classmethod) else \
                " (static method)" if isinstance(raw, staticmethod) else ""
            heading, shown = f"#### `{owner}.{name}`{kind}", name
        out += [heading, "", "```python", signature(shown, fn, drop_self=not isinstance(raw, staticmethod)), "```",
                "", docstring_md(fn.__doc__) or "*No docstring.*", ""]
    return out


def public_path(cls) -> str:
    """The shortest ``package.Name`` that already-imported modules export ``cls`` as (``torch.nn.Module``,
    not ``torch.nn.modules.module.Module``)."""
    if cls.__module__ == "builtins":
        return cls.__qualname__
    parts = cls.__module__.split(".")
    for i in range(1, len(parts) + 1):
        module = sys.modules.get(".".join(parts[:i]))
        if module is not None and getattr(module, cls.__qualname__, None) is cls:
            return f"{'.'.join(parts[:i])}.{cls.__qualname__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def render_class(module: str, name: str, cls) -> list[str]:
    bases = [b for b in cls.__bases__ if b is not object]
    base_text = ", ".join(f"`{public_path(b)}`" for b in bases)
    if _is_pydantic(cls):
        sig = f"{name}(" + ", ".join(f"{f}=..." for f in cls.model_fields) + ")"
        sig = sig if len(sig) <= WIDTH else f"{name}(**fields)"
    else:
        sig = signature(name, cls)
    out = [f'<a id="{anchor(module + "." + name)}"></a>', "", f"### class `{name}`", ""]
    if base_text:
        out += [f"Bases: {base_text}", ""]
    out += ["```python", sig, "```", "", docstring_md(cls.__doc__) or "*No docstring.*", ""]
    table = fields_table(cls)
    if table:
        out += ["**Fields**", "", table, ""]
    return out + render_members(cls, name)


def render_instance(module: str, name: str, obj) -> list[str]:
    cls = type(obj)
    out = [f'<a id="{anchor(module + "." + name)}"></a>', "", f"### `{name}`", "",
           f"An instance of `{cls.__name__}`.", "", docstring_md(cls.__doc__) or "*No docstring.*", ""]
    return out + render_members(cls, name)


# ----------------------------------------------------------------------------------------------- documents


def where_documented(package: str, name: str, modules: dict[str, object]) -> tuple[str, str]:
    """(module that defines it, kind) of a name a package exports."""
    obj = getattr(modules[package], name)
    home = getattr(obj, "__module__", None) if (inspect.isclass(obj) or inspect.isfunction(obj)) \
        else type(obj).__module__
    kind = "class" if inspect.isclass(obj) else "function" if inspect.isfunction(obj) else "object"
    return home or package, kind


def first_sentence(doc: str | None, limit: int = 160) -> str:
    """The docstring's first sentence ("e.g." and "i.e." do not end one), cut to about ``limit`` characters."""
    if not doc:
        return ""
    para = " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())
    end = next((m.end(1) for m in re.finditer(r"([.!?])(\s|$)", para)
                if not re.search(r"\b(e\.g|i\.e)$", para[:m.start(1)])), len(para))
    text = para[:end]
    if len(text) > limit:
        text = text[:text.rfind(" ", 0, limit)] + " ..."
        for mark in ("``", "`"):  # never leave a code span open
            if text.replace("``", "").count("`") % 2 if mark == "`" else text.count("``") % 2:
                text = text.rsplit(mark, 1)[0].rstrip() + " ..."
    return _inline(text)


def coverage(modules: dict[str, object]) -> tuple[list[str], list[str]]:
    """(public classes / functions / instances without an example, public methods and properties without
    a docstring), as qualified names."""
    no_example, no_doc = [], []
    for modname, module in modules.items():
        for name, obj in public_members(module):
            doc = (type(obj).__doc__ if not (inspect.isclass(obj) or inspect.isfunction(obj)) else obj.__doc__)
            if not has_example(doc):
                no_example.append(f"{modname}.{name}")
            cls = obj if inspect.isclass(obj) else type(obj) if not inspect.isfunction(obj) else None
            if cls is None:
                continue
            for member, raw in own_members(cls):
                fn = raw.fget if isinstance(raw, property) else getattr(raw, "__func__", raw)
                if not (fn.__doc__ or "").strip() and member != "__call__":
                    no_doc.append(f"{modname}.{name}.{member}")
    return no_example, no_doc


def build_api(modules: dict[str, object]) -> str:
    import dglm

    out = [
        "# API reference",
        "",
        f"<!-- Generated by `{COMMAND}`: do not edit by hand; change the docstrings and rerun. -->",
        "",
        f"Generated by `{COMMAND}` from dglm {dglm.__version__}: for every module under `dglm/` "
        f"(`__main__` modules excepted), the signature ({'`inspect.signature`'}) and docstring "
        "(`inspect.getdoc`) of each public class, function and method defined there, and the fields of "
        "dataclasses and pydantic configs with the comment written above each field. Edit the docstrings, "
        "not this file; `python recipes/gen_api_docs.py --check` says whether it is up to date. "
        "Prose guides: [index](index.md).",
        "",
    ]
    for package in EXPORTING:
        if package not in modules:
            continue
        names = getattr(modules[package], "__all__", [])
        out += [f"## Exported by `{package}`", "", f"`from {package} import ...` gives these names "
                f"(`{package}.__all__`):", "", "| name | kind | defined in | summary |", "|---|---|---|---|"]
        for name in names:
            home, kind = where_documented(package, name, modules)
            obj = getattr(modules[package], name)
            doc = obj.__doc__ if inspect.isclass(obj) or inspect.isfunction(obj) else type(obj).__doc__
            out.append(f"| [`{name}`](#{anchor(home + '.' + name)}) | {kind} | `{home}` | "
                       f"{_cell(first_sentence(doc))} |")
        out.append("")
    out += ["## Modules", ""]
    out += [f"- [`{m}`](#{anchor('module ' + m)}): {_cell(first_sentence(modules[m].__doc__))}" for m in modules]
    out.append("")
    for modname, module in modules.items():
        out += [f'<a id="{anchor("module " + modname)}"></a>', "", f"## `{modname}`", "",
                docstring_md(module.__doc__) or "*No module docstring.*", ""]
        consts = constants(module)
        if consts:
            out += ["**Constants**", ""] + [f"- `{n} = {_cell(v)}`" if not v.startswith(("dict ", "dict of"))
                                             else f"- `{n}`: {v}" for n, v in consts] + [""]
        for name, obj in public_members(module):
            if inspect.isclass(obj):
                out += render_class(modname, name, obj)
            elif inspect.isfunction(obj):
                out += render_function(modname, name, obj)
            else:
                out += render_instance(modname, name, obj)
    no_example, no_doc = coverage(modules)
    out += ["## Docstring coverage", "",
            "Public classes, functions and objects whose docstring holds no example "
            f"({len(no_example)}):", ""]
    out += [f"- `{q}`" for q in no_example] or ["- none"]
    out += ["", f"Public methods and properties with no docstring ({len(no_doc)}):", ""]
    out += [f"- `{q}`" for q in no_doc] or ["- none"]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).rstrip() + "\n"


# ----------------------------------------------------------------------------------------------- configuration


def config_blocks() -> dict[str, str]:
    """The generated blocks of docs/configuration.md, by name."""
    from dglm.config import (
        DecoderConfig,
        DGLMConfig,
        DiffusionConfig,
        EncoderConfig,
        PromptConfig,
        SamplingConfig,
    )
    from dglm.pipeline import DEFAULT_BATCH_SIZE, DEFAULT_GENERATE_KWARGS, _PipelineFile
    from dglm.presets import preset_config
    from dglm.training.train_diffusion import DiffusionTrainingConfig
    from dglm.training.train_prompt import PromptTrainingConfig

    def section(cls, title: str) -> str:
        doc = first_sentence(cls.__doc__)
        return f"### `{title}`\n\n{doc}\n\n{fields_table(cls)}\n"

    blocks = {
        "components": "\n".join(section(c, f"{c.__module__}.{c.__name__}") for c in
                                (EncoderConfig, DiffusionConfig, PromptConfig, DecoderConfig, SamplingConfig,
                                 DGLMConfig)),
        "pipeline-file": fields_table(_PipelineFile),
        "generate-defaults": "\n".join([
            "| keyword | default |", "|---|---|",
            *(f"| `{k}` | `{v!r}` |" for k, v in DEFAULT_GENERATE_KWARGS.items()),
            f"| `batch_size` (rows planned and decoded at once) | `{DEFAULT_BATCH_SIZE}` |"]),
        "training": "\n".join(section(c, f"{c.__module__}.{c.__name__}") for c in
                              (DiffusionTrainingConfig, PromptTrainingConfig)),
    }
    presets = {name: preset_config(name).model_dump() for name in ("mini", "paper", "tiny")}
    rows = ["| field | mini | paper | tiny |", "|---|---|---|---|"]
    for part in presets["mini"]:
        for key in presets["mini"][part]:
            values = [presets[p][part][key] for p in ("mini", "paper", "tiny")]
            rows.append(f"| `{part}.{key}` | " + " | ".join(f"`{v}`" for v in values) + " |")
    blocks["presets"] = "\n".join(rows)
    try:
        from dglm.bench.config import BenchConfig
    except ImportError as e:  # the benchmark is optional
        blocks["bench"] = f"*Not available in this installation: {e}*"
    else:
        blocks["bench"] = fields_table(BenchConfig)
    try:
        from dglm.cli import build_parser
    except ImportError as e:
        blocks["cli-generate"] = f"*Not available in this installation: {e}*"
    else:
        blocks["cli-generate"] = cli_table(build_parser(), "generate")
    return blocks


def cli_table(parser: argparse.ArgumentParser, command: str) -> str:
    """Options of one subcommand: flags, default, help (``%(default)s`` expanded)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    rows = ["| option | default | help |", "|---|---|---|"]
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        flags = ", ".join(action.option_strings) or action.metavar or action.dest
        if action.option_strings and action.nargs != 0 and not isinstance(action, argparse.BooleanOptionalAction):
            choices = "{" + ",".join(map(str, action.choices)) + "}" if action.choices else None
            flags += f" {action.metavar or choices or action.dest.upper()}"
        try:
            text = (action.help or "") % {**vars(action), "prog": f"dglm {command}"}
        except (KeyError, TypeError, ValueError):
            text = action.help or ""
        default = "" if action.default in (None, argparse.SUPPRESS) else f"`{action.default}`"
        rows.append(f"| `{flags}` | {default} | {_cell(text)} |")
    return "\n".join(rows)


def fill_blocks(text: str, blocks: dict[str, str], path: Path) -> str:
    """Replace each ``<!-- gen_api_docs:begin NAME -->...<!-- gen_api_docs:end NAME -->`` block's body."""
    def replace(m: re.Match) -> str:
        name = m.group(1)
        if name not in blocks:
            raise SystemExit(f"{path}: unknown generated block {name!r}; known: {sorted(blocks)}")
        return f"<!-- gen_api_docs:begin {name} -->\n{blocks[name].rstrip()}\n<!-- gen_api_docs:end {name} -->"

    return re.sub(r"<!-- gen_api_docs:begin ([\w-]+) -->.*?<!-- gen_api_docs:end \1 -->", replace, text,
                  flags=re.S)


# ----------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is out of date")
    parser.add_argument("--missing-examples", action="store_true",
                        help="print the public objects without a docstring example and the public methods "
                             "without a docstring, then exit")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    modules = {name: importlib.import_module(name) for name in discover()}

    if args.missing_examples:
        no_example, no_doc = coverage(modules)
        print(f"# public classes / functions / objects without a docstring example ({len(no_example)})")
        print("\n".join(no_example))
        print(f"\n# public methods / properties without a docstring ({len(no_doc)})")
        print("\n".join(no_doc))
        return 0

    outputs = {API_MD: build_api(modules)}
    if CONFIG_MD.is_file():
        outputs[CONFIG_MD] = fill_blocks(CONFIG_MD.read_text(encoding="utf-8"), config_blocks(), CONFIG_MD)
    stale = []
    for path, text in outputs.items():
        old = path.read_text(encoding="utf-8") if path.is_file() else ""
        if old == text:
            continue
        stale.append(path)
        if args.check:
            diff = difflib.unified_diff(old.splitlines(), text.splitlines(), str(path), "generated", lineterm="", n=1)
            print("\n".join(list(diff)[:40]))
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    if args.check and stale:
        print(f"out of date: {', '.join(str(p.relative_to(ROOT)) for p in stale)}; run {COMMAND}", file=sys.stderr)
        return 1
    if not stale:
        print("up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
