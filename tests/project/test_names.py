"""Every module of the package imports, and every ``dialoguellm.x.y`` name the notebooks, README and docs cite
exists: a module renamed or a function moved fails here, not in a reader's hands."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest

import dialoguellm
from dialoguellm.runs import REPO_DIR

CITED = re.compile(r"\bdialoguellm(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
# Files of the package cited by name, not Python names (the packaged matplotlib style).
NOT_PYTHON = {"dialoguellm.mplstyle"}
PACKAGE = Path(dialoguellm.__file__).parent
# From the files, not pkgutil: folders without an __init__.py (namespace packages such as analysis/) count too.
MODULES = sorted(
    ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
    for p in PACKAGE.rglob("*.py")
)


def cited_names() -> dict[str, set[str]]:
    """``dialoguellm.x.y`` name -> the files citing it: README, docs/ and the notebooks' cells."""
    texts = {p: p.read_text() for p in [REPO_DIR / "README.md", *sorted((REPO_DIR / "docs").rglob("*.md"))]}
    for notebook in sorted((REPO_DIR / "notebooks").glob("*.ipynb")):
        cells = json.loads(notebook.read_text())["cells"]
        texts[notebook] = "\n".join("".join(c["source"]) for c in cells)
    cited: dict[str, set[str]] = {}
    for path, text in texts.items():
        for name in CITED.findall(text):
            cited.setdefault(name, set()).add(path.name)
    return cited


def resolves(name: str) -> bool:
    """Whether ``name`` is a module of the package, or an attribute reached from the longest such module."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        if module_name not in MODULES:
            continue
        target = importlib.import_module(module_name)
        for attribute in parts[cut:]:
            if not hasattr(target, attribute):
                return False
            target = getattr(target, attribute)
        return True
    return False


@pytest.mark.parametrize("module", MODULES)
def test_every_module_imports(module):
    importlib.import_module(module)


def test_every_name_the_docs_and_notebooks_cite_exists():
    cited = cited_names()
    assert len(cited) > 20, "the scan found almost no cited names: is the pattern broken?"
    stale = {
        name: sorted(files) for name, files in cited.items() if name not in NOT_PYTHON and not resolves(name)
    }
    assert not stale, f"cited names the package no longer has (name: files): {stale}"


def test_a_stale_name_is_caught():
    assert resolves("dialoguellm.scoring.predictions.save_predictions")
    assert not resolves("dialoguellm.evaluate.save_predictions")
    assert not resolves("dialoguellm.scoring.predictions.no_such_function")


CITED_TEST = re.compile(r"\b(tests/[A-Za-z0-9_/]+\.py)(?:::([A-Za-z0-9_]+))?")


def cited_tests() -> dict[str, set[str]]:
    """``tests/x/test_y.py[::test_name]`` -> the files citing it: README, docs, notebooks, the package, Makefile."""
    paths = [REPO_DIR / "README.md", REPO_DIR / "Makefile", *sorted((REPO_DIR / "docs").rglob("*.md"))]
    paths += sorted(PACKAGE.rglob("*.py")) + sorted((REPO_DIR / "notebooks").glob("*.ipynb"))
    cited: dict[str, set[str]] = {}
    for path in paths:
        for file, name in CITED_TEST.findall(path.read_text(encoding="utf-8")):
            cited.setdefault(f"{file}::{name}" if name else file, set()).add(path.name)
    return cited


def test_every_test_the_docs_cite_exists():
    cited = cited_tests()
    assert len(cited) > 10, "the scan found almost no cited tests: is the pattern broken?"
    stale = {}
    for target, files in cited.items():
        file, _, name = target.partition("::")
        path = REPO_DIR / file
        if not path.is_file() or (
            name and not re.search(rf"\bdef {name}\(", path.read_text(encoding="utf-8"))
        ):
            stale[target] = sorted(files)
    assert not stale, f"cited tests that do not exist (test: files citing it): {stale}"
