"""The documentation site builds in strict mode (mkdocs.yml), and its docstring reader (docs/griffe_dglm.py)."""

from __future__ import annotations

import doctest
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS_EXTRA = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python", "griffe_pydantic")


def _missing() -> list[str]:
    return [m for m in DOCS_EXTRA if importlib.util.find_spec(m.split(".")[0]) is None]


needs_docs = pytest.mark.skipif(bool(_missing()), reason=f"the docs extra is not installed ({', '.join(_missing())}): "
                                                          f"pip install -e '.[docs]'")


@pytest.fixture(scope="module")
def dialect():
    spec = importlib.util.spec_from_file_location("griffe_dglm", ROOT / "docs" / "griffe_dglm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_docs
def test_the_site_builds_in_strict_mode(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    api = (tmp_path / "api" / "index.html").read_text(encoding="utf-8")
    # Rendered from the code: a class, a config field's description with its bounds, a docstring example.
    assert 'id="dglm.pipeline.DGLM"' in api and 'id="dglm.config.DiffusionConfig.depth"' in api
    assert "the first half feeds long skips into the second half" in api and "&lt;= 128" in api
    assert "random_pipeline" in api
    config = (tmp_path / "configuration" / "index.html").read_text(encoding="utf-8")
    assert 'id="dglm.bench.config.BenchConfig.num_neutral"' in config
    assert (tmp_path / "architecture" / "index.html").is_file()


@needs_docs
def test_the_docstring_reader_examples_hold(dialect):
    assert doctest.testmod(dialect).failed == 0


@needs_docs
def test_titled_examples_become_example_sections(dialect):
    text = dialect.convert("Intro.\n\nExample (random weights):\n    >>> 1 + 1\n    2\n\nExample:\n    >>> 3\n    3")
    assert text.count("Examples:") == 2 and "    Random weights:\n" in text and "Example (" not in text


@needs_docs
def test_roles_become_cross_references_or_code(dialect):
    known = {"dglm.config.DGLMConfig": "dglm.config.DGLMConfig", "dglm.DGLM": "dglm.pipeline.DGLM"}
    text = dialect.convert(":class:`~dglm.config.DGLMConfig`, :meth:`dglm.DGLM`, :func:`torch.randn`, "
                           ":data:`dglm.io.UNDOCUMENTED`", target=known.get)
    assert text == ("[`DGLMConfig`][dglm.config.DGLMConfig], [`dglm.DGLM`][dglm.pipeline.DGLM], `torch.randn`, "
                    "`dglm.io.UNDOCUMENTED`")
