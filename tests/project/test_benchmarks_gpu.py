"""benchmarks/gpu_7b.py: the 7B GPU benchmark, run end to end at its --tiny size on CPU."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import random
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

# Every test here runs a benchmark script end to end (tiny models, but whole measurements).
pytestmark = pytest.mark.slow


REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_7b.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("gpu_7b", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H100 80GB HBM3", 989.0),  # SXM
        ("NVIDIA H100 PCIe", 756.0),  # the PCIe card is slower than the SXM one
        ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA H200", 989.0),  # SXM
        ("NVIDIA H200 NVL", 835.0),  # not the SXM peak
        ("NVIDIA GH200 480GB", 989.0),
        ("NVIDIA A100-SXM4-40GB", 312.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA A100-PCIE-40GB", 312.0),
        ("NVIDIA A100 80GB PCIe", 312.0),
        ("Some CPU", None),
    ],
)
def test_dense_bf16_peaks(name, peak):
    assert load_benchmark().peak_tflops(name) == peak


def test_slug():
    assert load_benchmark().slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


def test_timed_batches_are_spread_over_the_length_order():
    """64 length-sorted batches, 10 timed: their mean length is the data's, not the shortest batches'."""
    bench = load_benchmark()
    lengths = sorted(range(100, 164))
    sample = bench.spread(lengths, 10)
    assert sample == sorted(sample) and len(set(sample)) == 10
    assert abs(sum(sample) / 10 - sum(lengths) / 64) < 1.0
    assert sum(lengths[:10]) / 10 < sum(lengths) / 64 - 20  # what the first 10 would have been
    assert bench.spread([7, 8], 5) == [7, 7, 8, 8, 8]  # more steps than batches: repeats


def test_real_shaped_steps_are_timed_on_a_spread_sample(monkeypatch):
    """train_measures hands time_training warm-up and timed batches spread over all 64 length-sorted
    batches of 512 prompts, so the timed prompts are as long as all of them on average."""
    from dialoguellm.config import load_config

    bench = load_benchmark()
    calls = []

    def record(model, batches, warmup, pad_id, share_prefix, config):
        calls.append((batches, warmup))
        return {"steps_timed": len(batches) - warmup, "seconds_per_step": 1.0, "loss_last": 1.0}

    monkeypatch.setattr(bench, "time_training", record)
    examples = bench.synthetic_examples(512, 90, 40, 512, seed=0)
    answers = bench.label_answers(512, 2, random.Random(0))
    args = argparse.Namespace(steps=10, warmup=3, seed=0, peak_tflops=None)
    sizes = {"vocab": 512, "n_matmul": 1000, "layers": 2, "hidden": 64}
    out = bench.train_measures(torch.nn.Linear(2, 2), args, load_config("paper"), answers, examples, sizes)
    batches, warmup = calls[1]  # calls[0] is the dense 8 x 256 measure
    assert warmup == 3 and len(batches) == 13
    timed = [len(p) for prompts, _ in batches[3:] for p in prompts]
    everything = [len(e.prompt_ids) for e in examples]
    assert abs(sum(timed) / len(timed) - sum(everything) / len(everything)) < 1.0
    assert out["real_shape"]["mean_prompt_tokens_timed"] == round(sum(timed) / len(timed), 1)
    assert out["real_shape"]["batches_timed"].startswith("10 of 64")


def test_preflight_runs_every_path_on_the_cpu():
    bench = load_benchmark()
    checks = bench.preflight(torch.device("cpu"), 0.01, [])
    assert set(checks) == {"package", "bf16_matmul", "sdpa", "nf4"}
    assert all(c["ok"] for c in checks.values()), checks
    assert all(c["runs"] >= 2 for name, c in checks.items() if name != "package")
    assert checks["nf4"]["max_error"] < 0.2  # a real round trip, not a copy: NF4 loses about 9%
    assert checks["nf4"]["max_error"] > 0.01


def _run(bench, tmp_path, inject=()):
    args = argparse.Namespace(inject_failure=list(inject))
    result = {"parts": {}, "preflight": {c: {"ok": True} for c in bench.CHECKS}}
    return bench.Run(args, torch.device("cpu"), result, tmp_path / "out" / "result.json")


def test_a_failing_part_keeps_the_others_numbers(tmp_path):
    """An error in one part is recorded in the JSON, the next part still runs, and the file is rewritten
    after each part in one rename."""
    bench = load_benchmark()
    run = _run(bench, tmp_path)
    run.part("bf16_lora", None, lambda r: {"tokens_per_s": 123.0})
    on_disk = json.loads(run.path.read_text())
    assert on_disk["bf16_lora"] == {"tokens_per_s": 123.0} and on_disk["parts"]["bf16_lora"]["status"] == "ok"

    def out_of_memory(r):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    run.part("qlora", None, out_of_memory)
    run.part("scoring", None, lambda r: {"best_utterances_per_s": 9.0})
    on_disk = json.loads(run.path.read_text())
    assert on_disk["bf16_lora"] == {"tokens_per_s": 123.0}
    assert on_disk["scoring"] == {"best_utterances_per_s": 9.0}
    assert on_disk["qlora"]["error"] == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert any("out_of_memory" in line for line in on_disk["qlora"]["traceback"])
    assert on_disk["parts"]["qlora"] == {
        "status": "error",
        "seconds": on_disk["parts"]["qlora"]["seconds"],
        "reason": on_disk["qlora"]["error"],
    }
    assert [p.name for p in run.path.parent.iterdir()] == ["result.json"]  # no temporary file left


def test_a_failed_preflight_check_skips_the_parts_that_need_it(tmp_path):
    bench = load_benchmark()
    run = _run(bench, tmp_path)
    run.result["preflight"]["nf4"] = {"ok": False, "error": "RuntimeError: no libbitsandbytes_cuda126.so"}
    assert run.skip_reason("bf16_lora") is None
    reason = run.skip_reason("qlora")
    assert reason == "preflight nf4 failed: RuntimeError: no libbitsandbytes_cuda126.so"
    ran = []
    run.part("qlora", reason, lambda r: ran.append(1) or {})
    assert ran == [] and run.result["qlora"] == {"skipped": reason}
    assert run.result["parts"]["qlora"]["status"] == "skipped"


def test_inject_failure_raises_even_where_the_part_would_be_skipped(tmp_path):
    bench = load_benchmark()
    run = _run(bench, tmp_path, inject=["qlora"])
    run.part("qlora", "no CUDA device", lambda r: {})
    assert run.result["qlora"]["error"] == "InjectedFailure: --inject-failure qlora"


def test_7b_shape_is_llama2_7b():
    """The random model has LLaMA 2-7B's exact parameter count (built on the meta device: no memory)."""
    bench = load_benchmark()
    model = bench.build_random_model(bench.LLAMA2_7B, torch.device("meta"))
    assert sum(p.numel() for p in model.parameters()) == 6_738_415_616
    # FLOPs per token at 256 tokens: 6N dominates, the attention term is ~1%.
    n = 6_738_415_616 - 32000 * 4096
    fpt = bench.flops_per_token(n, 32, 4096, 256)
    assert fpt["model_6n"] == 6 * n + 12 * 32 * 4096 * 256
    assert fpt["lora_4n"] == 4 * n + 12 * 32 * 4096 * 256


def documented_command() -> str:
    """The one command for a bare GPU image, in docs/SCALING.md (the README links there)."""
    lines = [
        line
        for line in (REPO / "docs" / "SCALING.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("python3 -m pip install")
    ]
    assert len(lines) == 1, lines
    return lines[0]


def stand_in_wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel in place of the downloaded ones (the test stays offline)."""
    files = {
        "carried_stand_in/__init__.py": "CARRIED = True\n",
        "carried_stand_in-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: carried-stand-in\nVersion: 1.0\n",
        "carried_stand_in-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = "carried_stand_in-1.0.dist-info/RECORD"
    files[record] = "".join(f"{name},,\n" for name in [*files, record])
    wheel = folder / "carried_stand_in-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return wheel


def plain_checkout(dest: Path) -> Path:
    """The files a fresh clone has (tracked, plus new files git does not ignore), without .whl/ or .venv."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def test_tiny_run_through_the_documented_bare_image_command(tmp_path):
    """The documented line, verbatim, with `--tiny` appended, from a plain checkout: `python3` is this
    environment's Python (as on the GPU image), nothing is installed but what `.whl/` carries, and the
    benchmark finds the package through its own sys.path entry."""
    checkout = plain_checkout(tmp_path / "checkout")
    (checkout / ".whl").mkdir()
    stand_in_wheel(checkout / ".whl")
    shim = tmp_path / "bin" / "python3"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    shim.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PATH=f"{shim.parent}{os.pathsep}{env['PATH']}", OUT=str(out))
    proc = subprocess.run(
        ["bash", "-c", documented_command() + " --tiny"],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (checkout / ".whl" / "site" / "carried_stand_in" / "__init__.py").is_file()  # the install step ran
    files = list(out.glob("gpu_7b_tiny_*.json"))
    assert len(files) == 1, proc.stdout
    result = json.loads(files[0].read_text())
    assert f"wrote {files[0]}" in proc.stdout
    assert "bf16 LoRA MFU (4N, LoRA's FLOPs)" in proc.stdout  # the targets table
    assert result["preflight"]["package"]["dialoguellm_from"] == str(checkout / "dialoguellm")
    assert result["status"] == "complete"
    assert all(check["ok"] for check in result["preflight"].values())

    assert result["device"] and result["versions"]["torch"] and result["versions"]["transformers"]
    settings = result["settings"]
    from dialoguellm.config import load_config

    paper = load_config("paper")
    assert (
        settings["lora"]["r"] == paper.lora.r
        and settings["lora"]["target_modules"] == paper.lora.target_modules
    )
    assert settings["micro_batch_size"] == paper.train.micro_batch_size
    assert settings["sequence_tokens"] == paper.prompt.cutoff_len

    dense = result["bf16_lora"]["dense"]
    assert dense["tokens_per_step"] == paper.train.micro_batch_size * paper.prompt.cutoff_len
    assert dense["tokens_per_s"] == pytest.approx(
        dense["tokens_per_step"] / dense["seconds_per_step"], rel=0.01
    )
    assert math.isfinite(dense["loss_last"]) and dense["loss_last"] > 0
    real = result["bf16_lora"]["real_shape"]
    assert real["examples_per_s"] > 0 and real["share_prefix"] is True  # bf16 LoRA: no checkpointing
    assert abs(real["mean_prompt_tokens_timed"] - real["mean_prompt_tokens"]) < 8  # spread, not the shortest
    # LoRA on q_proj/v_proj only: r * (in + out) per target per layer.
    h, layers = settings["llama_config"]["hidden_size"], settings["llama_config"]["num_hidden_layers"]
    assert result["parameters"]["trainable"] == layers * 2 * paper.lora.r * (h + h)

    if torch.cuda.is_available():
        assert result["qlora"]["peak_gb"] > 0
    else:
        assert "CUDA" in result["qlora"]["skipped"]
        assert any(note.startswith("qlora skipped: no CUDA") for note in result["notes"])

    scoring = result["scoring"]
    assert scoring["examples"] > 0 and scoring["best_utterances_per_s"] > 0
    proj = result["projection"]
    assert proj["train_examples_per_epoch"] == 9989 + 7551 + 5810
    assert proj["test_utterances"] == 2610 + 984 + 1623
    # rounded to 0.1 s in the JSON: a fast tiny run needs the absolute tolerance
    assert proj["test_sets_seconds"] == pytest.approx(
        5217 / scoring["best_utterances_per_s"], rel=0.01, abs=0.06
    )
    hours = 23350 * proj["epochs"] * proj["tokens_per_example"] / dense["tokens_per_s"] / 3600
    assert proj["train_hours_dense"] == pytest.approx(hours, rel=0.01)
    assert proj["full_run_hours"] >= proj["train_hours_real_shape"] > 0

    targets = {t["key"]: t for t in result["targets"]}
    assert set(targets) == {"bf16_lora_mfu_4n", "qlora_peak_gb", "full_run_hours", "test_sets_seconds"}
    assert all(t["met"] is None for t in targets.values())  # a tiny run is never judged against 7B targets


def test_a_forced_qlora_failure_leaves_the_other_numbers_and_the_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--inject-failure", "qlora", "--out-dir", str(tmp_path)]
        + ["--steps", "2", "--warmup", "0", "--score-examples", "16"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "qlora failed: InjectedFailure" in proc.stderr
    (path,) = tmp_path.glob("gpu_7b_tiny_*.json")
    result = json.loads(path.read_text())
    assert result["status"] == "finished with errors in qlora"
    assert result["qlora"]["error"] == "InjectedFailure: --inject-failure qlora"
    assert result["qlora"]["traceback"][-1] == "InjectedFailure: --inject-failure qlora"
    assert {name: part["status"] for name, part in result["parts"].items()} == {
        "setup": "ok",
        "bf16_lora": "ok",
        "scoring": "ok",
        "qlora": "error",
        "projection": "ok",
    }
    assert result["bf16_lora"]["dense"]["tokens_per_s"] > 0
    assert result["bf16_lora"]["real_shape"]["examples_per_s"] > 0
    assert result["scoring"]["best_utterances_per_s"] > 0
    assert (
        result["projection"]["full_run_hours"] > 0
        and "qlora_train_hours_real_shape" not in result["projection"]
    )
    assert "qlora error: InjectedFailure: --inject-failure qlora" in result["notes"]


# ------------------------------------------------------------------------------------- tools/gpu_wheels.py
def load_wheels():
    spec = importlib.util.spec_from_file_location("gpu_wheels", REPO / "tools" / "gpu_wheels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_bitsandbytes_wheel(path: Path) -> Path:
    libs = ["cpu", "cuda118", "cuda126", "cuda128", "cuda130", "cuda132", "rocm64", "xpu2025"]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("bitsandbytes/__init__.py", "")
        for lib in libs:
            zf.writestr(f"bitsandbytes/libbitsandbytes_{lib}.so", b"\0" * 64)
    return path


def kept_libraries(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return sorted(n.split("_", 1)[1][:-3] for n in zf.namelist() if n.endswith(".so"))


def test_wheels_keep_the_cpu_library_and_the_cuda_versions_asked_for(tmp_path):
    wheels = load_wheels()
    default = fake_bitsandbytes_wheel(tmp_path / "a.whl")
    wheels.slim(default)
    assert kept_libraries(default) == ["cpu", "cuda130", "cuda132"]
    asked = fake_bitsandbytes_wheel(tmp_path / "b.whl")
    wheels.slim(asked, ["12.8"])
    assert kept_libraries(asked) == ["cpu", "cuda128"]


def test_wheels_download_names_the_tested_versions_and_clears_stale_ones(tmp_path, monkeypatch):
    """The pip download command (not run: the test stays offline), what it asks for, and a clean .whl/."""
    import importlib.metadata as md

    wheels = load_wheels()
    dest = tmp_path / ".whl"
    (dest / "site" / "old").mkdir(parents=True)
    (dest / "transformers-4.0.0-py3-none-any.whl").write_bytes(b"old")
    commands = []

    def download(command, check):
        commands.append(command)
        fake_bitsandbytes_wheel(dest / "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl")

    monkeypatch.setattr(wheels.subprocess, "run", download)
    assert wheels.main(["--dest", str(dest), "--keep-cuda", "12.6"]) == 0
    (command,) = commands
    assert command[1:4] == ["-m", "pip", "download"] and "--no-deps" in command
    for name in ("transformers", "tokenizers", "safetensors", "peft", "accelerate", "bitsandbytes"):
        assert f"{name}=={md.version(name)}" in command
    assert sorted(p.name for p in dest.iterdir()) == [
        "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl"
    ]
    assert kept_libraries(next(dest.glob("*.whl"))) == ["cpu", "cuda126"]
