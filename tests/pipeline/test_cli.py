"""One command, ``dialoguellm SUBCOMMAND``, is the way in that docs/ names: every subcommand has a handler, the
benchmark and stats subcommands pass their arguments through, and docs/ sends nobody to `python -m` or to a
benchmark script directly."""

from __future__ import annotations

import re

import pytest

from dialoguellm import cli
from dialoguellm.runs import REPO_DIR


def _subcommands() -> dict:
    parser = cli._parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices


def test_every_subcommand_has_a_handler():
    commands = _subcommands()
    expected = {"train", "evaluate", "predict", "export", "prompt", "reproduce", "figures", "summary"}
    assert expected | {"export-results", "export-seeds", "stats", "benchmark"} <= set(commands)
    for name, parser in commands.items():
        assert callable(parser.get_default("handler")), f"dialoguellm {name} names no handler"


def test_benchmark_runs_the_script_with_its_arguments(tmp_path, monkeypatch):
    script = tmp_path / "echo_args.py"
    script.write_text(
        "import sys, pathlib\n"
        "pathlib.Path(sys.argv[1]).write_text(' '.join(sys.argv[2:]))\n"
        "if __name__ == '__main__':\n    sys.exit(3 if '--fail' in sys.argv else 0)\n"
    )
    monkeypatch.setattr(cli, "BENCHMARKS_DIR", tmp_path)
    out = tmp_path / "seen.txt"
    assert cli.main(["benchmark", "echo_args", str(out), "--adapter", "x", "--compare", "0"]) == 0
    assert out.read_text() == "--adapter x --compare 0"
    assert cli.main(["benchmark", "echo_args", str(out), "--fail"]) == 3


def test_an_unknown_benchmark_names_the_known_ones(capsys):
    assert cli.main(["benchmark", "no_such_benchmark"]) == 2
    err = capsys.readouterr().err
    assert "no_such_benchmark" in err and "eval_speed" in err


def test_stats_passes_its_arguments_through(tmp_path, capsys):
    missing = tmp_path / "absent.csv"
    assert cli.main(["stats", "interval", str(missing)]) == 2  # the stats command's own error
    assert "absent.csv" in capsys.readouterr().err


def test_docs_name_the_one_command():
    """docs/ and the Makefile send users to `dialoguellm ...`, not to `python -m dialoguellm.pipeline|stats`
    or `python benchmarks/NAME.py` (aliases that may remain, but are not the way in)."""
    stale = re.compile(r"python -m dialoguellm\.(pipeline|stats)\b|python benchmarks/\w+\.py")
    texts = [*sorted((REPO_DIR / "docs").rglob("*.md")), REPO_DIR / "Makefile"]
    found = {p.name: stale.findall(p.read_text()) for p in texts}
    assert not {name: hits for name, hits in found.items() if hits}
    for name in cli.benchmark_names():
        assert (REPO_DIR / "benchmarks" / f"{name}.py").is_file()


@pytest.mark.parametrize("command", ["figures", "reproduce", "benchmark", "stats"])
def test_subcommand_help_works(command, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0 and command in capsys.readouterr().out


@pytest.mark.slow
def test_python_m_pipeline_remains_a_thin_alias():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "dialoguellm.pipeline", "figures", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "--run-dir" in done.stdout and "usage: dialoguellm figures" in done.stdout
