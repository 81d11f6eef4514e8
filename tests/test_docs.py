"""The documentation site builds in strict mode (mkdocs.yml), and its docstring reader (docs/griffe_dglm.py)."""

from __future__ import annotations

import doctest
import importlib.util
import re
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


def _relative_links(page: Path) -> list[str]:
    """The link targets of a markdown page that are neither URLs nor in-page anchors (code blocks left out)."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return [url for url in re.findall(r"\]\(([^)\s]+)\)", text)
            if not url.startswith("#") and not re.match(r"[a-z][a-z0-9+.-]*:", url)]


def test_links_mkdocs_does_not_check_name_files_that_exist():
    # mkdocs checks the site's own links; these it leaves alone: the docs' links into the repository outside the
    # site ("/results/...", which GitHub resolves from the repository's root), README.md's, and the lab's results'.
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "results").rglob("*.md"))]
    broken = []
    for page in pages:
        in_site = page.is_relative_to(ROOT / "docs")
        for url in _relative_links(page):
            path = url.split("#")[0]
            if path.startswith("/"):
                target = ROOT / path.lstrip("/")
            elif in_site:
                continue
            else:
                target = page.parent / path
            if not target.exists():
                broken.append(f"{page.relative_to(ROOT)}: {url}")
    assert not broken, "links to nothing:\n" + "\n".join(broken)
    assert any("/results/" in url for url in _relative_links(ROOT / "docs" / "results" / "bench.md"))


def test_the_readme_stays_a_front_door():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 120
    for page in ("quickstart.md#install", "custom-probes.md", "training.md", "results/bench.md"):  # one click each
        assert f"(docs/{page})" in readme, page
    # CI runs the test command README.md gives, character for character.
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").split("exactly as README.md gives it:\n", 1)[1]
    assert f"```bash\n{ci.splitlines()[0]}\n```" in readme
    assert readme.count("<!-- own-model-snippet -->") == readme.count("<!-- /own-model-snippet -->") == 1


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
