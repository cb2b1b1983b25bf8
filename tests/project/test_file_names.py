"""The names of a scored split's files (``<split>_<corpus>_predictions.csv``, ``_metrics.json``,
``_per_class.csv``, a baseline's ``<corpus>_<name>_<split>_predictions.csv``) have one home, ``dialoguellm.io``,
and ``runs.RunLayout`` builds the paths from it: no other module or notebook cell spells them in its code
(docstrings, which describe the files, may). The names are those of the committed results, which still read."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from dialoguellm import io
from dialoguellm.runs import REPO_DIR, RunLayout, TrainingLayout

SUFFIXES = (io.PREDICTIONS_SUFFIX, io.METRICS_SUFFIX, io.PER_CLASS_SUFFIX)
HOME = REPO_DIR / "dialoguellm" / "io.py"
RESULTS = REPO_DIR / "results" / "cpu"


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the string constants that are docstrings (of the module, a class or a function)."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def spelled(source: str) -> list[str]:
    """The string literals of ``source`` (f-string parts included, docstrings not) that spell a file-name
    suffix of the one home."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in skip
        and any(suffix in node.value for suffix in SUFFIXES)
    ]


def sources() -> dict[str, str]:
    """Every module of the package and the benchmarks, and every notebook's code cells, by relative path."""
    out = {
        str(path.relative_to(REPO_DIR)): path.read_text()
        for folder in ("dialoguellm", "benchmarks")
        for path in sorted((REPO_DIR / folder).rglob("*.py"))
        if path != HOME
    }
    for notebook in sorted((REPO_DIR / "notebooks").glob("*.ipynb")):
        for i, cell in enumerate(json.loads(notebook.read_text())["cells"]):
            if cell["cell_type"] == "code":
                out[f"{notebook.relative_to(REPO_DIR)} cell {i}"] = "".join(cell["source"])
    return out


def test_no_module_or_notebook_spells_a_result_file_name():
    found = {where: hits for where, source in sources().items() if (hits := spelled(source))}
    assert not found, (
        f"result file names built by hand (ask runs.RunLayout or dialoguellm.io's names instead): {found}"
    )


def test_the_check_catches_a_hand_built_name_and_spares_a_docstring():
    source = (
        '"""Writes <split>_<corpus>_predictions.csv."""\npath = folder / f"{split}_{corpus}_per_class.csv"\n'
    )
    assert spelled(source) == ["_per_class.csv"]
    assert spelled('"""Reads dev_metrics.json."""\n') == []


def test_the_names_are_those_of_the_committed_results():
    run = RunLayout(RESULTS)
    assert run.evaluation_predictions("test", "meld").is_file()
    assert run.evaluation_metrics("test", "emorynlp").is_file()
    assert run.baseline_predictions("meld", "tfidf_lr", "dev").is_file()
    assert list(run.evaluation_files("test")) == ["emorynlp", "meld"]
    adapter = TrainingLayout(run.training).adapter
    assert (adapter / io.metrics_name("dev")).is_file()
    for corpus in ("meld", "emorynlp"):
        stem = io.split_stem("dev", corpus)
        for name in (io.predictions_name(stem), io.metrics_name(stem), io.per_class_name(stem)):
            assert (adapter / name).is_file(), name
    assert io.stem_of(run.evaluation_predictions("test", "meld")) == "test_meld"


def test_stem_of_another_file_is_an_error_naming_it():
    with pytest.raises(ValueError, match="summary.json"):
        io.stem_of(Path("evaluation") / "summary.json")
