"""The 7B numbers: a LLaMA 2-7B-shaped model with random weights, timed on one GPU (no download).

    dialoguellm benchmark gpu_7b                  # one H100/H200: about 3-5 minutes, writes one JSON
    dialoguellm benchmark gpu_7b --tiny           # CPU smoke test: a 2-layer LLaMA, a few steps

It runs from a plain checkout (it puts the repository root on ``sys.path``; nothing to install). On a GPU
image without this project's transformers/peft/bitsandbytes, docs/SCALING.md gives the one command (wheels
carried in ``.whl/``, fetched by tools/gpu_wheels.py).

The random weights are built on the GPU, written once to a temporary folder (13.5 GB; ``--tmp-dir``) and
loaded back through ``dialoguellm.model.loading.load_model`` for each part, so every number comes from the
package's own code paths. Settings from the paper profile (dialoguellm/profiles/paper.yaml): LoRA r/alpha/dropout/targets, micro-batch 8,
cutoff 256, scoring batch 16. What it measures:

(a) bf16 LoRA training steps (``dialoguellm.model.loading.add_lora`` + ``dialoguellm.training.loss.answer_loss``, bf16
    autocast, AdamW step every micro-batch): on full 8 x 256-token micro-batches (tokens/s, MFU, peak
    memory) and on micro-batches shaped like the real prompts (a shared prefix run once + distinct rest;
    examples/s);
(b) 4-bit NF4 QLoRA: ``dialoguellm.model.loading.load_model(..., quantization="4bit")`` (BitsAndBytesConfig
    NF4 + double quant, ``prepare_model_for_kbit_training``), i.e. exactly the package's QLoRA recipe; the
    same two step kinds, peak memory from before loading to the end of training;
(c) label scoring (``dialoguellm.scoring.engine.score_examples``) of synthetic prompts shaped like the real ones,
    7 labels of 2-4 tokens: utterances/s at two batch sizes;
(d) the projected time of the paper's full run (MELD 9,989 + EmoryNLP 7,551 + IEMOCAP 5,810 training
    utterances, 10 epochs, one dev evaluation per epoch) from those throughputs;
(e) the time to score the three test sets (2,610 + 984 + 1,623).

Nothing measured is lost to one failure. A preflight first runs each path for about a second on tiny
tensors: the package's imports (and transformers' ``cache=`` keyword), a bf16 matmul, SDPA with a boolean
mask, and an NF4 quantise/dequantise through bitsandbytes (a wheel built for another CUDA fails here, not
minutes later inside QLoRA); a part whose path failed is skipped with the reason. The JSON is rewritten
atomically after the preflight and after every part; a part that raises (out of memory, a bitsandbytes
error) records its error and traceback there and the next part still runs. The exit status is 1 when a
part failed. ``--inject-failure PART`` raises at the start of PART, so a test can check exactly that.

FLOPs (stated so the MFU can be checked): per trained token, LoRA executes 4 N + 12 L H S (N = parameters
that multiply, i.e. all but the input embedding; L layers, H hidden size, S sequence length): the forward
2N and the activation gradients 2N, but no weight gradients for the frozen base (LoRA's own matrices are
< 0.1% of N). This **4N MFU** is the one held against the target. PaLM's model FLOPs, 6 N + 12 L H S
(appendix B, which counts the weight gradients of full training), are reported beside it as ``mfu_6n``;
they overstate LoRA's work by half, so 40% at 6N is 27% at 4N. ``answer_loss`` computes logits for the
answer columns only, so the lm_head (2% of N) is mostly skipped: both MFUs are slightly generous by that
much. MFU = FLOPs / time / peak, with the GPU's dense bf16 peak from PEAK_BF16_TFLOPS (or
``--peak-tflops``).

Real-shaped steps are timed on micro-batches spread evenly over the length-sorted batches (the midpoints of
equal strata), so their prompts are as long as the data's on average, not the shortest ones.

Mean tokens per training example and the prompt shape come from benchmarks/results/prompt_lengths.json
(written by ``dialoguellm benchmark prompt_lengths`` with the embedded tokenizer), else from the defaults
below (stated as assumed in the JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import random
import re
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
# A plain checkout on a GPU image: `dialoguellm` is importable without `pip install -e .`.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results"
PROMPT_LENGTHS = RESULTS / "prompt_lengths.json"

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets, in TFLOPS (the sheets print twice
# these, "with sparsity"). First match in the device name wins, so specific names come first: "GH200"
# contains "H200", and "H100"/"H200" alone are the SXM boards ("NVIDIA H100 80GB HBM3", "NVIDIA H200").
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H200 NVL", 835.0),
    ("GH200", 989.0),
    ("H100", 989.0),  # SXM
    ("H200", 989.0),  # SXM
    ("A100", 312.0),  # SXM and PCIe, 40 and 80 GB alike
    ("L40S", 362.0),
]
LLAMA2_7B = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}
TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "vocab_size": 512,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}
# Utterances of the official splits; IEMOCAP's dev dialogues are held out of its 5,810.
TRAIN_SIZES = {"meld": 9989, "emorynlp": 7551, "iemocap": 5810}
DEV_SIZES = {"meld": 1109, "emorynlp": 954}
TEST_SIZES = {"meld": 2610, "emorynlp": 984, "iemocap": 1623}
# Used only when benchmarks/results/prompt_lengths.json is missing.
DEFAULT_SHAPE = {"tokens_per_example": 141.0, "shared_prefix": 90, "distinct": 40}
# Answers: the label word's tokens + end-of-sequence, 2-4 tokens (measured mean 2.5-2.7).
ANSWER_LENGTHS = [2, 2, 3, 2, 3, 4, 2]
TARGETS = {
    "bf16_lora_mfu_4n": ("bf16 LoRA MFU (4N, LoRA's FLOPs)", ">=", 0.40),
    "qlora_peak_gb": ("QLoRA peak memory, GB", "<=", 12.0),
    "full_run_hours": ("paper's full run on this GPU, h", "<=", 1.0),
    "test_sets_seconds": ("score all three test sets, s", "<=", 60.0),
}
GB = 1e9


# ------------------------------------------------------------------------------------------- helpers
def peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU by its name, or None when it is not in the table."""
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


def slug(text: str) -> str:
    """A file-name-safe form of a device name: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, float | None]:
    """Peak bytes since the last reset (GB = 1e9 bytes): tensors allocated, and what the allocator held."""
    if device.type != "cuda":
        return {"peak_allocated_gb": None, "peak_reserved_gb": None}
    return {
        "peak_allocated_gb": round(torch.cuda.max_memory_allocated(device) / GB, 2),
        "peak_reserved_gb": round(torch.cuda.max_memory_reserved(device) / GB, 2),
    }


def training_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for training steps. On GPU it matters for QLoRA: ``prepare_model_for_kbit_training``
    casts norms and embeddings to fp32, and without autocast the whole residual stream would run in fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16)


def versions() -> dict[str, str | None]:
    import importlib.metadata as md

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("torch", "transformers", "peft", "accelerate", "bitsandbytes"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    out["cuda"] = torch.version.cuda
    return out


def prompt_shape() -> dict[str, Any]:
    """Mean tokens per training example, shared prefix and distinct rest: measured when the file exists."""
    if PROMPT_LENGTHS.is_file():
        data = json.loads(PROMPT_LENGTHS.read_text(encoding="utf-8"))
        shape = {
            "tokens_per_example": float(data["train_mean_tokens_per_example"]),
            "shared_prefix": round(float(data["train_mean_shared_prefix"])),
            "distinct": round(float(data["train_mean_distinct"])),
            "source": f"measured: {data['command']} ({data['tokenizer']}; MELD + EmoryNLP training prompts)",
        }
    else:
        shape = {**DEFAULT_SHAPE, "source": f"assumed ({PROMPT_LENGTHS.name} not found)"}
    return shape


# ---------------------------------------------------------------------------------------------- model
def build_random_model(shape: dict[str, Any], device: torch.device) -> Any:
    """A LLaMA with random weights in bf16, created directly on ``device`` (no download, no CPU copy)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(**shape, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    return model


def save_random_checkpoint(model: Any, folder: Path) -> None:
    """Write the random weights and a stub tokenizer, so ``loading.load_model`` can load them quantised
    (from_pretrained quantises while loading; the tokenizer is never used to encode anything here)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    model.save_pretrained(folder)
    stub = Tokenizer(models.WordLevel({"<unk>": 0, "<s>": 1, "</s>": 2}, unk_token="<unk>"))
    PreTrainedTokenizerFast(
        tokenizer_object=stub, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<unk>"
    ).save_pretrained(folder)


def flops_per_token(n_matmul: int, layers: int, hidden: int, seq: int) -> dict[str, float]:
    """Training FLOPs per token: model (6N + 12LHS) and LoRA-actual (4N + 12LHS)."""
    attention = 12 * layers * hidden * seq
    return {"model_6n": 6 * n_matmul + attention, "lora_4n": 4 * n_matmul + attention}


# ----------------------------------------------------------------------------------------------- data
def label_answers(vocab: int, eos: int, rng: random.Random) -> list[list[int]]:
    """7 candidate answers: 1-3 word tokens + end-of-sequence (2-4 tokens), all distinct."""
    answers: list[list[int]] = []
    while len(answers) < len(ANSWER_LENGTHS):
        n = ANSWER_LENGTHS[len(answers)]
        a = [rng.randrange(3, vocab) for _ in range(n - 1)] + [eos]
        if a not in answers:
            answers.append(a)
    return answers


def synthetic_examples(n: int, prefix_len: int, distinct: int, vocab: int, seed: int) -> list[Any]:
    """``n`` PromptExamples: one shared prefix + a distinct rest of ``distinct`` +- 15 tokens each."""
    from dialoguellm.prompts import PromptExample

    rng = random.Random(seed)
    prefix = [1] + [rng.randrange(3, vocab) for _ in range(prefix_len - 1)]
    examples = []
    for i in range(n):
        rest = [rng.randrange(3, vocab) for _ in range(max(1, distinct + rng.randint(-15, 15)))]
        examples.append(
            PromptExample(
                example_id=f"synthetic-{i}",
                dataset="synthetic",
                prompt="",
                prompt_ids=prefix + rest,
                label_id=rng.randrange(len(ANSWER_LENGTHS)),
            )
        )
    return examples


def dense_batches(n: int, batch: int, seq: int, answers: list[list[int]], vocab: int, seed: int):
    """Micro-batches of ``batch`` distinct rows of exactly ``seq`` tokens (prompt + answer): no padding,
    nothing shared, so every step runs batch x seq tokens."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        labels = [rng.randrange(len(answers)) for _ in range(batch)]
        prompts = [[rng.randrange(3, vocab) for _ in range(seq - len(answers[j]))] for j in labels]
        out.append((prompts, [answers[j] for j in labels]))
    return out


def spread(items: list, n: int) -> list:
    """``n`` items spread evenly over ``items`` (the midpoints of ``n`` equal strata; repeats when ``n`` is
    larger), so a sample of length-sorted batches is as long as all of them on average."""
    return [items[min(len(items) - 1, int((k + 0.5) * len(items) / n))] for k in range(n)]


def realistic_batches(examples: list[Any], batch: int, answers: list[list[int]]):
    """Micro-batches of examples sorted by length (as the trainer's length grouping does)."""
    ordered = sorted(examples, key=lambda e: len(e.prompt_ids))
    return [
        (
            [e.prompt_ids for e in ordered[i : i + batch]],
            [answers[e.label_id] for e in ordered[i : i + batch]],
        )
        for i in range(0, len(ordered) - batch + 1, batch)
    ]


# ------------------------------------------------------------------------------------------ measures
def uses_gradient_checkpointing(model: Any) -> bool:
    # The k-bit recipe turns it on; it drops caches in training, so the shared prefix cannot be reused
    # (the trainer makes the same check).
    return any(getattr(m, "gradient_checkpointing", False) for m in model.modules())


def time_training(
    model: Any, batches: list, warmup: int, pad_id: int, share_prefix: bool, config: Any
) -> dict:
    """Seconds per micro-batch step (forward, backward, AdamW step) after ``warmup`` untimed steps."""
    from dialoguellm.training.loss import answer_loss

    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=config.train.lr,
        betas=tuple(config.train.adam_betas),
        weight_decay=config.train.weight_decay,
    )
    model.train()
    losses = []
    start = 0.0
    for i, (prompts, answers) in enumerate(batches):
        if i == warmup:
            sync(device)
            start = time.perf_counter()
        with training_autocast(device):
            loss, _ = answer_loss(model, prompts, answers, pad_id, share_prefix=share_prefix)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    sync(device)
    timed = len(batches) - warmup
    seconds = (time.perf_counter() - start) / timed
    del optimizer
    return {"steps_timed": timed, "seconds_per_step": round(seconds, 5), "loss_last": round(losses[-1], 4)}


def train_measures(
    model: Any, args: argparse.Namespace, config: Any, answers: list, examples: list, sizes: dict
) -> dict[str, Any]:
    """Dense 8 x 256 steps (tokens/s, MFU) and real-shaped steps (examples/s) on one LoRA model."""
    device = next(model.parameters()).device
    mb, seq = config.train.micro_batch_size, config.prompt.cutoff_len
    n = args.warmup + args.steps
    share = not uses_gradient_checkpointing(model)
    out: dict[str, Any] = {"gradient_checkpointing": not share}
    reset_peak(device)
    dense = time_training(
        model, dense_batches(n, mb, seq, answers, sizes["vocab"], args.seed), args.warmup, 0, False, config
    )
    tokens = mb * seq
    dense["tokens_per_step"] = tokens
    dense["tokens_per_s"] = round(tokens / dense["seconds_per_step"], 1)
    fpt = flops_per_token(sizes["n_matmul"], sizes["layers"], sizes["hidden"], seq)
    achieved = {k: v * dense["tokens_per_s"] for k, v in fpt.items()}
    dense["achieved_tflops_6n"] = round(achieved["model_6n"] / 1e12, 3)
    dense["achieved_tflops_4n"] = round(achieved["lora_4n"] / 1e12, 3)
    peak = args.peak_tflops
    dense["mfu_4n"] = round(achieved["lora_4n"] / (peak * 1e12), 4) if peak else None
    dense["mfu_6n"] = round(achieved["model_6n"] / (peak * 1e12), 4) if peak else None
    dense["mfu_note"] = "mfu_4n: FLOPs LoRA executes (target); mfu_6n: PaLM model FLOPs, for comparison"
    dense.update(peak_memory(device))
    out["dense"] = dense
    reset_peak(device)
    everything = realistic_batches(examples, mb, answers)
    timed = spread(everything, args.steps)
    real = time_training(model, spread(everything, args.warmup) + timed, args.warmup, 0, share, config)
    real["share_prefix"] = share
    real["examples_per_s"] = round(mb / real["seconds_per_step"], 2)
    real["mean_prompt_tokens"] = round(sum(len(e.prompt_ids) for e in examples) / len(examples), 1)
    real["mean_prompt_tokens_timed"] = round(
        sum(len(p) for prompts, _ in timed for p in prompts) / sum(len(prompts) for prompts, _ in timed), 1
    )
    real["batches_timed"] = f"{len(timed)} of {len(everything)}, spread evenly over the length order"
    real.update(peak_memory(device))
    out["real_shape"] = real
    return out


def score_measures(model: Any, examples: list, answers: list, batch_sizes: list[int]) -> dict[str, Any]:
    """Label-scoring utterances/s (``scoring.engine.score_examples``: fp32 compute on the loaded weights, the
    one scoring arithmetic) at each batch size (one untimed warm-up pass on a few examples first)."""
    from dialoguellm.scoring.engine import score_examples

    device = next(model.parameters()).device
    score_examples(model, examples[: max(batch_sizes)], answers, 0, max(batch_sizes), "bf16", progress=False)
    out: dict[str, Any] = {"examples": len(examples), "by_batch_size": {}}
    reset_peak(device)
    for bs in batch_sizes:
        sync(device)
        start = time.perf_counter()
        scores = score_examples(model, examples, answers, 0, bs, "bf16", desc="scoring", progress=False)
        sync(device)
        seconds = time.perf_counter() - start
        assert scores.shape == (len(examples), len(answers))
        out["by_batch_size"][str(bs)] = {
            "seconds": round(seconds, 3),
            "utterances_per_s": round(len(examples) / seconds, 1),
        }
    out.update(peak_memory(device))
    best = max(out["by_batch_size"].items(), key=lambda kv: kv[1]["utterances_per_s"])
    out["best_batch_size"] = int(best[0])
    out["best_utterances_per_s"] = best[1]["utterances_per_s"]
    return out


def projection(train: dict, scoring: dict | None, shape: dict, epochs: float) -> dict[str, Any]:
    """Hours of the paper's full run and seconds for the three test sets, from measured throughputs."""
    examples = sum(TRAIN_SIZES.values()) * epochs
    dense_tps = train["dense"]["tokens_per_s"]
    out: dict[str, Any] = {
        "train_examples_per_epoch": sum(TRAIN_SIZES.values()),
        "epochs": epochs,
        "tokens_per_example": shape["tokens_per_example"],
        # (i) every token of every prompt run (no prefix reuse, no padding) at the dense rate
        "train_hours_dense": round(examples * shape["tokens_per_example"] / dense_tps / 3600, 3),
        # (ii) the package's loop on real-shaped micro-batches (prefix reused unless checkpointing)
        "train_hours_real_shape": round(examples / train["real_shape"]["examples_per_s"] / 3600, 3),
    }
    if scoring:
        rate = scoring["best_utterances_per_s"]
        out["dev_eval_hours"] = round(sum(DEV_SIZES.values()) * epochs / rate / 3600, 3)
        out["full_run_hours"] = round(out["train_hours_real_shape"] + out["dev_eval_hours"], 3)
        out["test_utterances"] = sum(TEST_SIZES.values())
        out["test_sets_seconds"] = round(sum(TEST_SIZES.values()) / rate, 1)
    return out


# ------------------------------------------------------------------------------------------ preflight
def _repeat(seconds: float, step: Callable[[], float]) -> dict[str, Any]:
    """Run ``step`` (it returns an error measure) for about ``seconds``, at least twice: runs, seconds, and
    the largest error seen."""
    start = time.perf_counter()
    runs, worst = 0, 0.0
    while runs < 2 or time.perf_counter() - start < seconds:
        worst = max(worst, step())
        runs += 1
    return {"runs": runs, "seconds": round(time.perf_counter() - start, 3), "max_error": round(worst, 5)}


def check_package(device: torch.device, seconds: float) -> dict[str, Any]:
    """The package and the transformers it needs (the model forward's ``cache=`` keyword) import."""
    import inspect

    import transformers
    from transformers import LlamaForCausalLM

    import dialoguellm
    from dialoguellm.model import loading  # noqa: F401  (imported to fail here, not later)
    from dialoguellm.scoring import engine  # noqa: F401
    from dialoguellm.training import loop  # noqa: F401

    if "cache" not in inspect.signature(LlamaForCausalLM.forward).parameters:
        raise RuntimeError(
            f"transformers {transformers.__version__} names the model's cache argument past_key_values; "
            "dialoguellm passes cache= (the transformers this project pins). Carry newer wheels: "
            "python tools/gpu_wheels.py, then the command in docs/SCALING.md."
        )
    # Where each came from: the checkout, and the carried wheels (.whl/site) or the image's own packages.
    return {
        "transformers": transformers.__version__,
        "transformers_from": str(Path(transformers.__file__).parent),
        "dialoguellm_from": str(Path(dialoguellm.__file__).parent),
    }


def check_bf16_matmul(device: torch.device, seconds: float) -> dict[str, Any]:
    """bf16 matmuls on ``device`` agree with fp32 (relative to the largest entry)."""
    a = torch.randn(256, 256, device=device, dtype=torch.bfloat16)
    b = torch.randn(256, 256, device=device, dtype=torch.bfloat16)
    ref = a.float() @ b.float()

    def step() -> float:
        out = a @ b
        sync(device)
        return float((out.float() - ref).abs().max() / ref.abs().max())

    out = _repeat(seconds, step)
    if out["max_error"] > 0.02:
        raise RuntimeError(f"bf16 matmul on {device} is off by {out['max_error']:.3g} of its largest entry")
    return out


def check_sdpa(device: torch.device, seconds: float) -> dict[str, Any]:
    """SDPA in bf16 with a boolean mask (what the package passes) agrees with attention written out."""
    import torch.nn.functional as F

    q, k, v = (torch.randn(2, 4, 16, 32, device=device, dtype=torch.bfloat16) for _ in range(3))
    mask = torch.ones(16, 16, dtype=torch.bool, device=device).tril().expand(2, 1, 16, 16)
    scores = (q.float() @ k.float().transpose(-1, -2)) / 32**0.5
    ref = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v.float()

    def step() -> float:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        sync(device)
        return float((out.float() - ref).abs().max())

    out = _repeat(seconds, step)
    if out["max_error"] > 0.05:
        raise RuntimeError(f"SDPA on {device} is off by {out['max_error']:.3g} from attention written out")
    return out


def check_nf4(device: torch.device, seconds: float) -> dict[str, Any]:
    """bitsandbytes quantises a bf16 tensor to NF4 (double quant, blocks of 64) and back on ``device``: the
    library for this torch's CUDA loads and its kernels run."""
    import importlib.metadata as md

    try:
        import bitsandbytes.functional as bnbf
    except ImportError as err:
        raise RuntimeError(
            f"bitsandbytes does not import ({err}); carry it: python tools/gpu_wheels.py"
        ) from err
    x = torch.randn(256, 256, device=device, dtype=torch.bfloat16)

    def step() -> float:
        packed, state = bnbf.quantize_4bit(x, blocksize=64, compress_statistics=True, quant_type="nf4")
        back = bnbf.dequantize_4bit(packed, state)
        sync(device)
        return float((back.float() - x.float()).abs().mean() / x.float().abs().mean())

    try:
        out = _repeat(seconds, step)
    except Exception as err:
        if device.type != "cuda":
            raise
        raise RuntimeError(
            f"{type(err).__name__}: {err} (torch is built for CUDA {torch.version.cuda}; bitsandbytes needs "
            f"its library for that version: python tools/gpu_wheels.py --keep-cuda {torch.version.cuda})"
        ) from err
    if out["max_error"] > 0.2:  # NF4 keeps about 9% mean relative error on normal data
        raise RuntimeError(f"NF4 round trip on {device} is off by {out['max_error']:.3g} (mean, relative)")
    return {**out, "bitsandbytes": md.version("bitsandbytes"), "torch_cuda": torch.version.cuda}


CHECKS: dict[str, Callable[[torch.device, float], dict[str, Any]]] = {
    "package": check_package,
    "bf16_matmul": check_bf16_matmul,
    "sdpa": check_sdpa,
    "nf4": check_nf4,
}
# What each part runs on; a failed check skips the parts that need it.
NEEDS = {
    "setup": ("package", "bf16_matmul"),
    "bf16_lora": ("package", "bf16_matmul", "sdpa"),
    "scoring": ("package", "bf16_matmul", "sdpa"),
    "qlora": ("package", "bf16_matmul", "sdpa", "nf4"),
    "projection": (),
}


class InjectedFailure(RuntimeError):
    """Raised by ``--inject-failure``: a test's stand-in for an out-of-memory or bitsandbytes error."""


def describe(err: BaseException) -> dict[str, Any]:
    """An error as the JSON keeps it: type and message, and the last lines of its traceback."""
    lines = traceback.format_exception(type(err), err, err.__traceback__)
    return {"error": f"{type(err).__name__}: {err}", "traceback": "".join(lines).splitlines()[-12:]}


def preflight(device: torch.device, seconds: float, inject: list[str]) -> dict[str, dict[str, Any]]:
    """Each check for about ``seconds``: ``{"ok": True, ...}`` or ``{"ok": False, "error": ...}``."""
    out: dict[str, dict[str, Any]] = {}
    for name, check in CHECKS.items():
        try:
            if name in inject:
                raise InjectedFailure(f"--inject-failure {name}")
            out[name] = {"ok": True, **check(device, seconds)}
        except Exception as err:  # a failed check is a finding: it skips the parts that need it
            out[name] = {"ok": False, **describe(err)}
    return out


# ------------------------------------------------------------------------------------------------ parts
class Run:
    """One benchmark run: the result so far, the JSON it is rewritten to, and what the parts share."""

    def __init__(self, args: argparse.Namespace, device: torch.device, result: dict[str, Any], path: Path):
        self.args, self.device, self.result, self.path = args, device, result, path
        self.checkpoint: Path | None = None
        self.sizes: dict[str, Any] = {}
        self.model: Any = None  # the bf16 LoRA model, kept from bf16_lora for scoring
        self.config: Any = None
        self.epochs = 0.0
        self.answers: list[list[int]] = []
        self.examples: list[Any] = []

    def save(self) -> None:
        """Rewrite the JSON in one rename, so an interrupted run leaves the last complete version."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.result, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)

    def part(self, name: str, skip: str | None, fn: Callable[[Run], dict[str, Any]]) -> None:
        """Run ``fn`` as part ``name`` unless ``skip`` says why not; its numbers, the skip reason or its
        error go into the result under ``name``, and the JSON is rewritten."""
        start = time.perf_counter()
        try:
            if name in self.args.inject_failure:
                raise InjectedFailure(f"--inject-failure {name}")
            if skip:
                self.result[name] = {"skipped": skip}
            else:
                self.result[name] = fn(self)
            status = "skipped" if skip else "ok"
        except Exception as err:  # the other parts' numbers must survive (OOM, bitsandbytes, ...)
            self.result[name] = describe(err)
            status = "error"
            print(f"{name} failed: {self.result[name]['error']}", file=sys.stderr)
        free_memory(self.device)
        entry = {"status": status, "seconds": round(time.perf_counter() - start, 1)}
        if status != "ok":
            entry["reason"] = self.result[name].get("skipped") or self.result[name].get("error")
        self.result["parts"][name] = entry
        self.save()

    def ok(self, name: str) -> bool:
        return self.result["parts"].get(name, {}).get("status") == "ok"

    def skip_reason(self, name: str, *extra: str | None) -> str | None:
        """Why part ``name`` cannot run: a failed preflight check it needs, or an ``extra`` reason."""
        checks = self.result["preflight"]
        failed = [f"preflight {c} failed: {checks[c]['error']}" for c in NEEDS[name] if not checks[c]["ok"]]
        return "; ".join(failed + [e for e in extra if e]) or None


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def part_setup(run: Run) -> dict[str, Any]:
    """Random weights built on the device and written once, so every part loads them through
    ``loading.load_model`` (what `dialoguellm train` runs, including the loader's own adjustments)."""
    shape_cfg, timings = run.result["settings"]["llama_config"], run.result["timings"]
    start = time.perf_counter()
    model = build_random_model(shape_cfg, run.device)
    run.sizes = {
        "vocab": shape_cfg["vocab_size"],
        "layers": shape_cfg["num_hidden_layers"],
        "hidden": shape_cfg["hidden_size"],
        "n_total": sum(p.numel() for p in model.parameters()),
    }
    run.sizes["n_matmul"] = run.sizes["n_total"] - model.get_input_embeddings().weight.numel()
    timings["build_model_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    run.checkpoint = Path(tempfile.mkdtemp(prefix="gpu7b-random-", dir=run.args.tmp_dir))
    save_random_checkpoint(model, run.checkpoint)
    timings["save_checkpoint_s"] = round(time.perf_counter() - start, 1)
    run.result["parameters"].update(n_matmul=run.sizes["n_matmul"], n_total_base=run.sizes["n_total"])
    return {"checkpoint": "written", **run.sizes}


def load_lora(run: Run, quantization: str = "none") -> Any:
    """The random checkpoint through ``loading.load_model`` (bf16, or quantised while loading) + LoRA."""
    from dialoguellm.model import loading

    lora = run.config.lora
    loaded = loading.load_model(str(run.checkpoint), dtype="bf16", quantization=quantization)
    return loading.add_lora(loaded.model, lora.r, lora.alpha, lora.dropout, lora.target_modules)


def part_bf16_lora(run: Run) -> dict[str, Any]:
    """(a) bf16 LoRA training steps; the model stays loaded for scoring."""
    from dialoguellm.model import loading

    start = time.perf_counter()
    run.model = load_lora(run)
    run.result["timings"]["bf16_load_s"] = round(time.perf_counter() - start, 1)
    run.result["parameters"].update(loading.count_parameters(run.model))
    start = time.perf_counter()
    out = train_measures(run.model, run.args, run.config, run.answers, run.examples, run.sizes)
    run.result["timings"]["bf16_train_s"] = round(time.perf_counter() - start, 1)
    return out


def part_scoring(run: Run) -> dict[str, Any]:
    """(c) label scoring with the bf16 LoRA model (loaded here if the bf16 part did not leave one)."""
    model, run.model = run.model if run.model is not None else load_lora(run), None
    return score_measures(model, run.examples, run.answers, run.result["settings"]["score_batch_sizes"])


def part_qlora(run: Run) -> dict[str, Any]:
    """(b) QLoRA: the same weights, quantised to NF4 while loading; peak memory over loading and training."""
    device, timings = run.device, run.result["timings"]
    reset_peak(device)
    # Whatever the earlier parts left allocated would inflate the QLoRA peak: recorded, should be ~0.
    left_over_gb = round(torch.cuda.memory_allocated(device) / GB, 2) if device.type == "cuda" else None
    start = time.perf_counter()
    qmodel = load_lora(run, quantization="4bit")
    timings["qlora_load_s"] = round(time.perf_counter() - start, 1)
    load_peak = peak_memory(device)
    start = time.perf_counter()
    qlora = {
        "allocated_before_load_gb": left_over_gb,
        "load": load_peak,
        **train_measures(qmodel, run.args, run.config, run.answers, run.examples, run.sizes),
    }
    # Peak over loading and both step kinds (train_measures resets between its measures).
    peaks = [load_peak, qlora["dense"], qlora["real_shape"]]
    qlora["peak_gb"] = max((p["peak_reserved_gb"] or 0.0) for p in peaks) if device.type == "cuda" else None
    timings["qlora_train_s"] = round(time.perf_counter() - start, 1)
    return qlora


def part_projection(run: Run) -> dict[str, Any]:
    """(d, e) the paper's full run and the test sets, from whichever throughputs were measured."""
    scoring = run.result["scoring"] if run.ok("scoring") else None
    proj = projection(run.result["bf16_lora"], scoring, run.result["settings"]["prompt_shape"], run.epochs)
    if run.ok("qlora"):
        rate = run.result["qlora"]["real_shape"]["examples_per_s"]
        proj["qlora_train_hours_real_shape"] = round(sum(TRAIN_SIZES.values()) * run.epochs / rate / 3600, 3)
    return proj


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="2-layer LLaMA, a few steps; runs on CPU.")
    parser.add_argument("--steps", type=int, default=None, help="Timed steps per measure (7B: 10, tiny: 3).")
    parser.add_argument("--warmup", type=int, default=None, help="Untimed steps first (7B: 3, tiny: 1).")
    parser.add_argument("--score-examples", type=int, default=None, help="Utterances scored (7B: 512).")
    parser.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak; default by name.")
    parser.add_argument("--skip-qlora", action="store_true", help="Skip the 4-bit part (no disk needed).")
    parser.add_argument(
        "--tmp-dir", default=None, help="Where the random checkpoint for QLoRA goes (13.5 GB)."
    )
    parser.add_argument("--out-dir", default=str(RESULTS), help="Folder of the JSON result.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--preflight-seconds",
        type=float,
        default=None,
        help="Each preflight check runs this long (1; tiny 0.1).",
    )
    parser.add_argument(
        "--inject-failure",
        action="append",
        default=[],
        choices=[*CHECKS, *NEEDS],
        help="For tests: raise an error at the start of this preflight check or part (before any skip).",
    )
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.steps = args.steps or (3 if args.tiny else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 3)
    args.score_examples = args.score_examples or (32 if args.tiny else 512)
    if args.preflight_seconds is None:
        args.preflight_seconds = 0.1 if args.tiny else 1.0
    return args


def settings_of(args: argparse.Namespace, config: Any, shape_cfg: dict, shape: dict) -> dict[str, Any]:
    lora = config.lora
    return {
        "model_shape": "tiny LLaMA (2 layers)" if args.tiny else "LLaMA 2-7B (random weights)",
        "llama_config": shape_cfg,
        "config": "dialoguellm/profiles/paper.yaml",
        "lora": {
            "r": lora.r,
            "alpha": lora.alpha,
            "dropout": lora.dropout,
            "target_modules": lora.target_modules,
        },
        "micro_batch_size": config.train.micro_batch_size,
        "sequence_tokens": config.prompt.cutoff_len,
        "score_batch_sizes": [config.eval.batch_size] if args.tiny else sorted({config.eval.batch_size, 64}),
        "steps_timed": args.steps,
        "warmup_steps": args.warmup,
        "score_examples": args.score_examples,
        "prompt_shape": shape,
        "answer_lengths": ANSWER_LENGTHS,
        "dtype": "bf16 weights, bf16 autocast in training steps",
        "peak_tflops_bf16": args.peak_tflops,
        "flops_per_token": "LoRA-actual (MFU target): 4N + 12*L*H*S; PaLM model FLOPs: 6N + 12*L*H*S "
        "(N: all parameters but the input embedding)",
        "preflight_seconds": args.preflight_seconds,
    }


def start_run(args: argparse.Namespace) -> Run:
    """The device, the settings, the preflight, and the first write of the JSON."""
    from dialoguellm.config import load_config

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        torch.set_num_threads(1 if args.tiny else torch.get_num_threads())
    name = (
        torch.cuda.get_device_name(device) if cuda else f"CPU ({platform.processor() or platform.machine()})"
    )
    if args.peak_tflops is None:
        args.peak_tflops = peak_tflops(name) if cuda else None
    config = load_config("paper")
    shape_cfg = TINY if args.tiny else LLAMA2_7B
    shape = prompt_shape()
    result: dict[str, Any] = {
        "benchmark": "benchmarks/gpu_7b.py" + (" --tiny" if args.tiny else ""),
        "command": " ".join(["benchmarks/gpu_7b.py", *args.argv]),
        "status": "running",
        "device": name,
        "gpu_memory_gb": round(torch.cuda.get_device_properties(device).total_memory / GB, 1)
        if cuda
        else None,
        "versions": versions(),
        "settings": settings_of(args, config, shape_cfg, shape),
        "preflight": preflight(device, args.preflight_seconds, args.inject_failure),
        "parts": {},
        "parameters": {},
        "timings": {},
        "notes": [
            "the paper profile loads the base in 8-bit fp16 (the released code); this benchmark times bf16 "
            "LoRA and 4-bit NF4 QLoRA with the profile's LoRA, batch and cutoff settings."
        ],
    }
    out = Path(args.out_dir) / f"gpu_7b_{'tiny_' if args.tiny else ''}{slug(name)}.json"
    run = Run(args, device, result, out)
    run.config, run.epochs = config, config.train.epochs
    torch.manual_seed(args.seed)
    run.answers = label_answers(shape_cfg["vocab_size"], 2, random.Random(args.seed))
    run.examples = synthetic_examples(
        args.score_examples, shape["shared_prefix"], shape["distinct"], shape_cfg["vocab_size"], args.seed
    )
    run.save()
    return run


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every part (each skipped with its reason or recorded with its error) and return the result."""
    args = parse_args(argv)
    t0 = time.perf_counter()
    run = start_run(args)
    cuda = run.device.type == "cuda"
    no_qlora = None if cuda else "no CUDA device (bitsandbytes' 4-bit training kernels need one)"
    try:
        run.part("setup", run.skip_reason("setup"), part_setup)
        no_setup = None if run.ok("setup") else "the setup part (random checkpoint) did not complete"
        run.part("bf16_lora", run.skip_reason("bf16_lora", no_setup), part_bf16_lora)
        run.part("scoring", run.skip_reason("scoring", no_setup), part_scoring)
        skip_q = run.skip_reason("qlora", no_setup, no_qlora, "--skip-qlora" if args.skip_qlora else None)
        run.part("qlora", skip_q, part_qlora)
    finally:
        run.model = None
        if run.checkpoint is not None:
            shutil.rmtree(run.checkpoint, ignore_errors=True)
    no_bf16 = None if run.ok("bf16_lora") else "needs the bf16_lora numbers"
    run.part("projection", no_bf16, part_projection)
    finish(run, time.perf_counter() - t0)
    print(render_table(run.result))
    print(f"wrote {run.path}")
    return run.result


def finish(run: Run, seconds: float) -> None:
    """Targets, notes and the final status, written last."""
    result, tiny = run.result, run.args.tiny
    for name, entry in result["parts"].items():
        if entry["status"] != "ok":
            result["notes"].append(f"{name} {entry['status']}: {entry['reason']}")
    measured = {
        "bf16_lora_mfu_4n": dig(result, "bf16_lora", "dense", "mfu_4n"),
        "qlora_peak_gb": dig(result, "qlora", "peak_gb"),
        "full_run_hours": dig(result, "projection", "full_run_hours"),
        "test_sets_seconds": dig(result, "projection", "test_sets_seconds"),
    }
    result["targets"] = []
    for key, (label, op, bound) in TARGETS.items():
        value = measured[key]
        # A tiny run tests the script; its numbers are not held against the 7B targets.
        met = None if value is None or tiny else (value >= bound if op == ">=" else value <= bound)
        result["targets"].append(
            {"key": key, "label": label, "target": f"{op} {bound}", "measured": value, "met": met}
        )
    if tiny:
        result["notes"].append("--tiny: a 2-layer model; the numbers test the script, not a 7B model.")
    failed = [name for name, entry in result["parts"].items() if entry["status"] == "error"]
    result["status"] = f"finished with errors in {', '.join(failed)}" if failed else "complete"
    result["timings"]["total_s"] = round(seconds, 1)
    run.save()


def dig(data: dict[str, Any], *keys: str) -> Any:
    """``data[k1][k2]...`` or None where a part was skipped or failed."""
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def render_table(result: dict[str, Any]) -> str:
    """The headline numbers, each part's status and the targets as a plain-text table."""

    def fmt(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:,.4g}" if isinstance(value, float) else str(value)

    def get(*keys: str) -> Any:
        return dig(result, *keys)

    rows = [
        ("device", result["device"]),
        ("bf16 LoRA, 8x256: tokens/s", get("bf16_lora", "dense", "tokens_per_s")),
        (
            "  MFU 4N (LoRA's FLOPs) / 6N (model)",
            f"{fmt(get('bf16_lora', 'dense', 'mfu_4n'))} / {fmt(get('bf16_lora', 'dense', 'mfu_6n'))}",
        ),
        ("  peak memory, GB (reserved)", get("bf16_lora", "dense", "peak_reserved_gb")),
        ("bf16 LoRA, real-shaped: examples/s", get("bf16_lora", "real_shape", "examples_per_s")),
        ("QLoRA, 8x256: tokens/s", get("qlora", "dense", "tokens_per_s")),
        ("QLoRA, real-shaped: examples/s", get("qlora", "real_shape", "examples_per_s")),
        ("QLoRA peak memory, GB (reserved)", get("qlora", "peak_gb")),
        (
            "scoring: utterances/s (best batch)",
            f"{fmt(get('scoring', 'best_utterances_per_s'))} (batch {fmt(get('scoring', 'best_batch_size'))})",
        ),
        (
            "full run: train h (dense / real shape)",
            f"{fmt(get('projection', 'train_hours_dense'))} / {fmt(get('projection', 'train_hours_real_shape'))}",
        ),
        ("full run incl. dev evals, h", get("projection", "full_run_hours")),
        ("three test sets, s", get("projection", "test_sets_seconds")),
    ]
    width = max(len(k) for k, _ in rows) + 2
    lines = [f"{k:<{width}}{fmt(v)}" for k, v in rows]
    lines.append("")
    for name, check in result["preflight"].items():
        lines.append(f"{'preflight ' + name:<{width}}{'ok' if check['ok'] else 'FAILED: ' + check['error']}")
    for name, part in result["parts"].items():
        status = part["status"] if part["status"] == "ok" else f"{part['status']}: {part['reason']}"
        lines.append(f"{'part ' + name:<{width}}{status}")
    lines.append("")
    lines.append(f"{'target':<{width}}{'wanted':<10}{'measured':<12}met")
    for t in result["targets"]:
        met = "-" if t["met"] is None else ("yes" if t["met"] else "NO")
        lines.append(f"{t['label']:<{width}}{t['target']:<10}{fmt(t['measured']):<12}{met}")
    return "\n".join(lines)


if __name__ == "__main__":
    # Exit 1 when a part raised: its error is in the JSON, next to every other part's numbers.
    sys.exit(1 if "errors" in main()["status"] else 0)
