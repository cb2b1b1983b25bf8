"""The package's imports run one way: corpora -> prompts -> model -> scoring -> calibration -> training /
evaluation -> analysis -> plots -> pipeline (docs/ARCHITECTURE.md). An AST walk reads every import of every
module, at module level and inside functions, so a cycle hidden in a function-level import fails here too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dialoguellm"

# The layers, lowest first. A module may import from its own layer's modules or from any layer below it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("dialoguellm", "dialoguellm.io", "dialoguellm.progress", "dialoguellm.metrics", "dialoguellm.stats",
                    "dialoguellm.corpora.labels")),
    ("config", ("dialoguellm.config",)),
    ("runs", ("dialoguellm.runs",)),
    ("corpora", ("dialoguellm.corpora",)),
    ("prompts", ("dialoguellm.prompts",)),
    ("model", ("dialoguellm.model",)),
    ("scoring", ("dialoguellm.scoring",)),
    ("calibration", ("dialoguellm.calibration",)),
    ("training / evaluation", ("dialoguellm.training", "dialoguellm.evaluation")),
    ("analysis", ("dialoguellm.analysis",)),
    ("plots", ("dialoguellm.plots",)),
    ("report / pipeline / cli", ("dialoguellm.report", "dialoguellm.pipeline", "dialoguellm.cli", "dialoguellm.interop")),
]  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, source: str | None = None) -> set[str]:
    """The package modules ``name`` imports anywhere in its source (``from a import b`` counts as
    ``a.b`` when ``a.b`` is a module, else as ``a``); ``source`` replaces the file's text."""
    path = MODULES.get(name, PACKAGE / "x.py")
    tree = ast.parse(source if source is not None else path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names
            ]
        else:
            continue
        found |= {t for t in targets if t == "dialoguellm" or t.startswith("dialoguellm.")}
    return found - {name}


GRAPH = {name: imports_of(name) for name in MODULES}


def layer_of(name: str) -> int:
    """The index of the layer a module belongs to (the longest matching prefix wins)."""
    best, rank = -1, None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), index
    assert rank is not None, f"{name} belongs to no layer of tests/test_architecture.py; add it to LAYERS."
    return rank


def test_every_import_names_a_module_that_exists():
    missing = {
        f"{name} -> {target}"
        for name, targets in GRAPH.items()
        for target in targets
        if target not in MODULES
    }
    assert not missing, f"imports of modules that do not exist: {sorted(missing)}"


def test_no_import_cycle():
    """Depth-first search over the module graph; any back edge is a cycle."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt in MODULES and state.get(nxt) is None:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in MODULES:
        if state.get(name) is None:
            visit(name)


def test_imports_only_go_down_the_layers():
    upward = [
        f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for name, targets in GRAPH.items()
        for target in targets
        if target in MODULES and layer_of(target) > layer_of(name) and name != "dialoguellm"
    ]
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_the_checks_can_fail():
    """A function-level import, a relative one and an upward one are all seen."""
    hidden = "def f():\n    from dialoguellm.training import loop\n    from .engine import score_examples\n"
    found = imports_of("dialoguellm.scoring.predictions", hidden)
    assert found == {"dialoguellm.training.loop", "dialoguellm.scoring.engine"}
    assert layer_of("dialoguellm.training.loop") > layer_of("dialoguellm.scoring.predictions")
