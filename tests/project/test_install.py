"""A non-editable install is complete: profiles, ablation arms and the vendored corpora ship inside the
package, so ``load_config("cpu")`` and ``load_meld()`` work from any folder, away from the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CHECK = """
import json, dialoguellm
from dialoguellm.config import load_config
from dialoguellm.corpora.readers import load_meld
from dialoguellm.analysis.ablation import arm_paths
config = load_config("cpu")
meld = load_meld()
print(json.dumps({"file": dialoguellm.__file__, "profile": config.source, "test": len(meld["test"]),
                  "arms": len(arm_paths())}))
"""


@pytest.mark.slow
def test_a_non_editable_install_loads_the_cpu_profile_and_meld_from_any_folder(tmp_path):
    target, elsewhere, source = tmp_path / "site", tmp_path / "elsewhere", tmp_path / "source"
    elsewhere.mkdir()
    # Build from a copy, so the build leaves nothing in the checkout.
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "dialoguellm", source / "dialoguellm", ignore=shutil.ignore_patterns("__pycache__")
    )
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-compile",
         "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DIALOGUELLM_DATA_DIR")}
    env["PYTHONPATH"] = str(target)
    ran = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    got = json.loads(ran.stdout.strip().splitlines()[-1])
    assert Path(got["file"]).is_relative_to(target), got  # the installed copy, not the checkout
    assert Path(got["profile"]).is_relative_to(target) and got["profile"].endswith("cpu.yaml")
    assert got["test"] == 2610 and got["arms"] == 10
