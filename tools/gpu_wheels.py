"""A development-machine helper (not a benchmark): the wheels that a bare GPU machine needs to run
benchmarks/gpu_7b.py, downloaded here, small enough to carry.

A GPU image that already holds torch (with CUDA) may lack bitsandbytes, or hold a transformers older than
the package uses (transformers before the ``cache=`` keyword of the model forward breaks label scoring).
This downloads the versions installed in this environment (the ones the tests ran with) for Linux x86-64,
Python 3.12 by default, and drops bitsandbytes' libraries for CUDA 11/12, ROCm and XPU (43 MB -> 7 MB), so
the three wheels are about 22 MB in all.

    python tools/gpu_wheels.py                     # -> .whl/ (add /.whl/ to .git/info/exclude)
    # then, on the GPU machine, from the repository root:
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu_7b.py --out-dir "$OUT"
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import subprocess
import sys
import zipfile
from pathlib import Path

PACKAGES = ("transformers", "peft", "bitsandbytes")
# bitsandbytes ships one library per CUDA/ROCm/XPU version; keep the CPU one and CUDA 13.x.
UNNEEDED = re.compile(r"bitsandbytes/libbitsandbytes_(cuda1[12]\d|rocm\d+|xpu\d+)\.so$")
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
]


def slim(wheel: Path) -> None:
    """Rewrite ``wheel`` without the libraries that the target machine's CUDA does not use."""
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if not UNNEEDED.search(info.filename):
                dst.writestr(info, src.read(info.filename))
    tmp.replace(wheel)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", default=".whl", help="Folder for the wheels (ignored by git).")
    parser.add_argument("--python-version", default="3.12", help="The GPU machine's Python.")
    args = parser.parse_args(argv)
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    specs = [f"{name}=={md.version(name)}" for name in PACKAGES]
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--implementation",
    ]
    command += ["cp", "--python-version", args.python_version, "-d", str(dest)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    subprocess.run(command + specs, check=True)
    for wheel in dest.glob("bitsandbytes-*.whl"):
        slim(wheel)
    for wheel in sorted(dest.glob("*.whl")):
        print(f"{wheel}  {wheel.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
