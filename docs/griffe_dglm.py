r"""A griffe extension (mkdocs.yml loads it) that reads dglm's docstring dialect for mkdocstrings.

dglm's docstrings are Google style with two habits griffe's Google parser does not know: an example section
may carry a title (``Example (random weights):``, or plain ``Example:``), and cross-references are Sphinx
roles (``:class:`~dglm.config.DGLMConfig```). Before a docstring is parsed, each such heading becomes a Google
``Examples:`` section (its title the section's first line), so the ``>>>`` lines render as code, and each
role on a ``dglm.*`` name becomes a mkdocstrings cross-reference to where that object is documented (``~``
shows the last component only), which ``mkdocs build --strict`` checks; a role on any other name, or on an
object the reference does not render (no docstring), becomes inline code. A pydantic field's description
(its docstring, from griffe-pydantic) gets a line with the field's bounds, which the template does not show.

Example:
    >>> convert("Example (tiny):\n    >>> 1\n    1")
    'Examples:\n    Tiny:\n\n    >>> 1\n    1'
    >>> convert("Reads it with :func:`~dglm.io.read_json` and :func:`json.loads`.")
    'Reads it with [`read_json`][dglm.io.read_json] and `json.loads`.'
"""

from __future__ import annotations

import re

import griffe

import dglm

EXAMPLE = re.compile(r"^(?P<indent>[ \t]*)Example(?: \((?P<title>.+)\))?:[ \t]*$", re.MULTILINE)
BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "min_length": "length >=", "max_length": "length <="}
ROLE = re.compile(r":(?:class|func|meth|attr|data|mod|exc|obj):`(?P<short>~?)(?P<name>[\w.]+)`")


def convert(docstring: str, target=lambda name: name) -> str:
    """``docstring`` with titled example headings and Sphinx roles rewritten (see the module docstring);
    ``target(name)`` is the path a ``dglm.*`` name is documented at, or None to show it as code only."""

    def heading(m: re.Match) -> str:
        title = m["title"]
        if not title:
            return f"{m['indent']}Examples:"
        return f"{m['indent']}Examples:\n{m['indent']}    {title[0].upper()}{title[1:]}:\n"

    def role(m: re.Match) -> str:
        name = m["name"]
        shown = name.rsplit(".", 1)[-1] if m["short"] else name
        path = target(name) if name.startswith("dglm.") else None
        return f"[`{shown}`][{path}]" if path else f"`{shown}`"

    return ROLE.sub(role, EXAMPLE.sub(heading, docstring))


class DocstringDialect(griffe.Extension):
    """Rewrites every docstring with :func:`convert` once griffe has loaded the whole package."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs) -> None:
        if obj.docstring is None:
            return

        def target(name: str) -> str | None:
            top, _, rest = name.removeprefix("dglm.").partition(".")
            if top in dglm._LAZY:  # a public name of the package (dglm.DGLM), defined in one of its modules
                name = ".".join(filter(None, (dglm._LAZY[top], top, rest)))
            try:
                found = loader.modules_collection.get_member(name)
            except (KeyError, ValueError, griffe.AliasResolutionError):
                return name  # unknown: left as a link, so the strict build names it
            if found.is_alias:  # re-exported, e.g. dglm.DGLM: documented where it is defined
                found = found.final_target
            documented = found.docstring is not None and not any(p.startswith("_") for p in found.path.split("."))
            return found.path if documented else None

        obj.docstring.value = convert(obj.docstring.value, target)
        if obj.is_attribute and (limits := bounds(obj)):
            obj.docstring.value += f"\n\nBounds: {limits}."


def bounds(field: griffe.Attribute) -> str:
    """The bounds of a pydantic field (``> 0, <= 65536``), a module constant shown by its value; "" if none."""
    constraints = field.extra.get("griffe_pydantic", {}).get("constraints") or {}
    parts = []
    for key, value in constraints.items():
        if key not in BOUNDS:
            continue
        text = str(value)
        if text.isidentifier():  # a constant such as MAX_DIM
            try:
                text = str(field.module[text].value).replace("_", "")
            except (KeyError, AttributeError, griffe.AliasResolutionError):
                pass
        parts.append(f"{BOUNDS[key]} {text}")
    return ", ".join(f"`{p}`" for p in parts)
