"""A development-machine helper (not a benchmark): the wheels that a bare GPU machine needs to run
benchmarks/gpu_7b.py, downloaded here, small enough to carry.

A GPU image that already holds torch (with CUDA) may lack bitsandbytes, or hold a transformers older than
the package uses (transformers before the ``cache=`` keyword of the model forward breaks label scoring).
This downloads the versions installed in this environment (the ones the tests ran with) for Linux x86-64,
Python 3.12 by default: transformers with the tokenizers and safetensors it requires at import, peft with
accelerate (peft imports it; so does ``dialoguellm.model.loading.process_device``), and bitsandbytes without its libraries
for ROCm, XPU and the CUDA versions not kept (43 MB -> 7 MB). bitsandbytes loads the library of the CUDA
that torch was built with (``torch.version.cuda``); CUDA 13.0 and 13.2 are kept by default, ``--keep-cuda
12.8`` (repeatable) keeps others. About 26 MB in all.

    python tools/gpu_wheels.py                     # -> .whl/ (ignored by git: carry it explicitly)

then on the GPU machine, from the repository root, the one command of docs/SCALING.md (installs into
``.whl/site``, nothing outside the checkout):

    python3 -m pip install -q --upgrade --no-index --no-deps --target .whl/site .whl/*.whl && PYTHONPATH=.whl/site python3 benchmarks/gpu_7b.py --out-dir "$OUT"

The benchmark's preflight checks what this cannot know in advance (the image's huggingface_hub, a
bitsandbytes library for its CUDA) and records a failure in its JSON instead of stopping.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

PACKAGES = ("transformers", "tokenizers", "safetensors", "peft", "accelerate", "bitsandbytes")
# bitsandbytes ships one library per CUDA/ROCm/XPU version (libbitsandbytes_cuda128.so is CUDA 12.8).
LIBRARY = re.compile(r"bitsandbytes/libbitsandbytes_(cuda\d+|rocm\d+|xpu\d+)\.so$")
KEEP_CUDA = ("13.0", "13.2")
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
]


def unneeded(filename: str, keep_cuda: Sequence[str]) -> bool:
    """True for a bitsandbytes GPU library other than the CPU one and those of the CUDA versions kept."""
    match = LIBRARY.search(filename)
    keep = {"cuda" + version.replace(".", "") for version in keep_cuda}
    return match is not None and match.group(1) not in keep


def slim(wheel: Path, keep_cuda: Sequence[str] = KEEP_CUDA) -> None:
    """Rewrite ``wheel`` without the libraries that the target machine's CUDA does not use."""
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if not unneeded(info.filename, keep_cuda):
                dst.writestr(info, src.read(info.filename))
    tmp.replace(wheel)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", default=".whl", help="Folder for the wheels (ignored by git).")
    parser.add_argument("--python-version", default="3.12", help="The GPU machine's Python.")
    parser.add_argument(
        "--keep-cuda",
        action="append",
        default=None,
        help=f"CUDA version whose bitsandbytes library is kept (default {', '.join(KEEP_CUDA)}).",
    )
    args = parser.parse_args(argv)
    keep_cuda = args.keep_cuda or list(KEEP_CUDA)
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    # `.whl/*.whl` must name one version of each package, and an old install must not travel along.
    for stale in dest.glob("*.whl"):
        stale.unlink()
    shutil.rmtree(dest / "site", ignore_errors=True)
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
        slim(wheel, keep_cuda)
    for wheel in sorted(dest.glob("*.whl")):
        print(f"{wheel}  {wheel.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
