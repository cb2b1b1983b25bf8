"""The package's imports run one way, down the layers of docs/ARCHITECTURE.md, with no cycle. The layer order
has one home: the import-linter contract in pyproject.toml ([tool.importlinter]); these tests run
`lint-imports` on it (so `make test` and CI check it), show that it catches an upward import and a cycle
hidden inside functions, and check that every function-level import names a module that exists."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from dialoguellm.runs import REPO_DIR

REPO = REPO_DIR
PACKAGE = REPO / "dialoguellm"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def contract_layers() -> list[str]:
    """The layers of pyproject.toml's layers contract, highest first."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    return next(c for c in config["contracts"] if c["type"] == "layers")["layers"]


def lint_imports(root: Path, package_parent: Path) -> subprocess.CompletedProcess:
    """`lint-imports` with ``root``'s pyproject.toml on the package found in ``package_parent``."""
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter not installed (dev extra)")


def test_the_import_contract_is_kept():
    result = lint_imports(REPO, REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_the_contract_catches_an_upward_import_and_a_cycle_inside_functions(tmp_path):
    shutil.copytree(PACKAGE, tmp_path / "dialoguellm", ignore=shutil.ignore_patterns("raw", "__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    with (tmp_path / "dialoguellm" / "io.py").open("a") as io_module:  # foundation reaching up to training
        io_module.write("\n\ndef _upward():\n    from dialoguellm.training import loop  # noqa\n")
    with (tmp_path / "dialoguellm" / "scoring" / "engine.py").open(
        "a"
    ) as engine:  # predictions imports engine
        engine.write("\n\ndef _circle():\n    from dialoguellm.scoring import predictions  # noqa\n")
    result = lint_imports(tmp_path, tmp_path)
    assert result.returncode != 0
    assert "0 kept, 2 broken" in result.stdout, result.stdout
    assert "dialoguellm.io -> dialoguellm.training.loop" in result.stdout


def test_every_top_level_module_has_a_layer_and_a_line_in_the_architecture_doc():
    named = {name.strip() for layer in contract_layers() for name in re.split(r"[:|]", layer)}
    top_level = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    top_level |= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert named == top_level, "pyproject.toml's layers contract and the package's top-level modules differ"
    doc = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    for name in named:
        assert f"`{name}.py`" in doc or f"`{name}/" in doc, f"docs/ARCHITECTURE.md has no row for {name}"


def imports_of(name: str) -> set[str]:
    """The package modules ``name`` imports anywhere in its source, function-level imports included."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        found |= {t for t in targets if t == "dialoguellm" or t.startswith("dialoguellm.")}
    return found - {name}


def test_every_import_names_a_module_that_exists():
    """A function-level import of a module that was moved fails only when called; this finds it now."""
    missing = {
        f"{name} -> {target}" for name in MODULES for target in imports_of(name) if target not in MODULES
    }
    assert not missing, f"imports of modules that do not exist: {sorted(missing)}"


def test_notebooks_load_a_profiles_model_with_every_model_setting():
    """A notebook that loads the model a profile names goes through ``loading.load_configured``, which passes
    every setting of the model section (attention included): notebook 03 once called ``load_model`` with four
    of them, and `make reproduce` trained with SDPA whatever ``model.attention`` said."""
    import json
    import re

    from dialoguellm import pipeline

    piecemeal = re.compile(r"load_model\(\s*(m|config\.model|cfg\.model)\.name")
    for path in pipeline.notebook_paths():
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        assert not piecemeal.search(code), f"{path.name}: use loading.load_configured(config.model)"
