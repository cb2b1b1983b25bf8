"""Notebook kernels run with mimalloc preloaded (runs.allocator_environment) where the cmeel-mimalloc wheel is
installed: glibc's malloc let a training process grow by fragmentation (docs/SPEED.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dialoguellm import runs


def test_the_preload_is_added_once_in_front_and_can_be_switched_off(monkeypatch, tmp_path):
    library = tmp_path / "libmimalloc.so.3"
    monkeypatch.setattr(runs, "mimalloc_library", lambda: library)
    env = runs.allocator_environment({"LD_PRELOAD": "/opt/other.so", "PATH": "/bin"})
    assert env["LD_PRELOAD"] == f"{library} /opt/other.so" and env["PATH"] == "/bin"
    assert runs.allocator_environment(env) == env  # not twice
    off = {runs.ALLOCATOR_SWITCH: "system"}
    assert runs.allocator_environment(off) == off
    monkeypatch.setattr(runs, "mimalloc_library", lambda: None)  # not installed (not Linux): unchanged
    assert runs.allocator_environment({"PATH": "/bin"}) == {"PATH": "/bin"}


def test_a_process_started_with_it_runs_torch_on_mimalloc():
    library = runs.mimalloc_library()
    if library is None:
        pytest.skip("cmeel-mimalloc is not installed (a Linux dependency): nothing to preload")
    code = (
        "import json, torch; from dialoguellm import runs; x = torch.randn(300, 200).bfloat16();"
        "y = sum(float((x @ x.T).float().sum()) for _ in range(3));"
        "maps = open('/proc/self/maps').read();"
        "print(json.dumps({'allocator': runs.allocator_in_use(), 'mapped': 'libmimalloc' in maps}))"
    )
    env = runs.allocator_environment({"PATH": "/usr/bin:/bin"})
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "allocator": "mimalloc, purge delay -1",
        "mapped": True,
    }
    assert runs.environment()["hardware"]["allocator"].split(",")[0] in ("mimalloc", "system")


def test_the_preload_is_set_only_while_inside(monkeypatch, tmp_path):
    library = tmp_path / "libmimalloc.so.3"
    monkeypatch.setattr(runs, "mimalloc_library", lambda: library)
    monkeypatch.delenv(runs.ALLOCATOR_SWITCH, raising=False)
    monkeypatch.delenv(runs.PURGE_DELAY[0], raising=False)
    for before in (None, "/opt/other.so"):
        if before is None:
            monkeypatch.delenv("LD_PRELOAD", raising=False)
        else:
            monkeypatch.setenv("LD_PRELOAD", before)
        with pytest.raises(RuntimeError), runs.allocator_preloaded():
            assert os.environ["LD_PRELOAD"].split()[0] == str(library)
            assert os.environ[runs.PURGE_DELAY[0]] == "-1"
            raise RuntimeError("a failed notebook restores it too")
        assert os.environ.get("LD_PRELOAD") == before and runs.PURGE_DELAY[0] not in os.environ


def test_the_purge_delay_is_set_unless_the_caller_set_one(monkeypatch, tmp_path):
    monkeypatch.setattr(runs, "mimalloc_library", lambda: tmp_path / "libmimalloc.so.3")
    assert runs.allocator_environment({})[runs.PURGE_DELAY[0]] == "-1"
    assert runs.allocator_environment({runs.PURGE_DELAY[0]: "10"})[runs.PURGE_DELAY[0]] == "10"


REPORT = (
    "import json, os; from dialoguellm import runs;"
    "print(json.dumps([runs.allocator_in_use(), os.environ.get('MIMALLOC_PURGE_DELAY')]))"
)


@pytest.mark.parametrize("switch", ["", "system"])
def test_the_command_line_starts_again_on_the_allocator(switch):
    if runs.mimalloc_library() is None:
        pytest.skip("cmeel-mimalloc is not installed (a Linux dependency): nothing to preload")
    code = (
        "import sys; from dialoguellm import runs;"
        f"runs.reexec_with_allocator([sys.executable, '-c', {REPORT!r}]); print('[\"not started again\"]')"
    )
    env = {"PATH": "/usr/bin:/bin", runs.ALLOCATOR_SWITCH: switch}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == (["not started again"] if switch else ["mimalloc, purge delay -1", "-1"])


def test_the_console_script_asks_for_the_allocator_first(monkeypatch):
    from dialoguellm import cli

    asked = []
    monkeypatch.setattr(runs, "reexec_with_allocator", lambda: asked.append(True))
    monkeypatch.setattr(sys, "argv", ["dialoguellm", "tables", "--help"])
    with pytest.raises(SystemExit):
        cli.main()
    assert asked == [True]
    with pytest.raises(SystemExit):  # called with its arguments (tests, other programs): never started again
        cli.main(["tables", "--help"])
    assert asked == [True]
