"""The 7B numbers: a LLaMA 2-7B-shaped model with random weights, timed on one GPU (no download).

    python benchmarks/gpu_7b.py                  # one H100/H200: about 3-5 minutes, writes one JSON
    python benchmarks/gpu_7b.py --tiny           # CPU smoke test: a 2-layer LLaMA, a few steps

The random weights are built on the GPU, written once to a temporary folder (13.5 GB; ``--tmp-dir``) and
loaded back through ``dialoguellm.model.loading.load_model`` for each part, so every number comes from the
package's own code paths. Settings from configs/paper.yaml: LoRA r/alpha/dropout/targets, micro-batch 8,
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

FLOPs (stated so the MFU can be checked): per trained token, model FLOPs = 6 N + 12 L H S (PaLM, appendix
B: N = parameters that multiply, i.e. all but the input embedding; L layers, H hidden size, S sequence
length); the LoRA-actual count is 4 N + 12 L H S, since frozen weights get no weight gradients (LoRA's own
matrices are < 0.1% of N). ``answer_loss`` computes logits for the answer columns only, so the lm_head
(2% of N) is mostly skipped: both MFUs are slightly generous by that much. MFU = FLOPs / time / peak, with
the GPU's dense bf16 peak from PEAK_BF16_TFLOPS (or ``--peak-tflops``).

Mean tokens per training example and the prompt shape come from benchmarks/results/prompt_lengths.json
(written by ``python benchmarks/prompt_lengths.py`` with the embedded tokenizer), else from the defaults
below (stated as assumed in the JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT_LENGTHS = RESULTS / "prompt_lengths.json"

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets, in TFLOPS. First match wins, so the
# specific names come before "H100".
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("GH200", 989.0),
    ("H100", 989.0),  # SXM (device name "NVIDIA H100 80GB HBM3")
    ("H200", 989.0),
    ("A100", 312.0),
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
    "bf16_lora_mfu_6n": ("bf16 LoRA MFU (6N)", ">=", 0.40),
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
    """Write the random weights and a stub tokenizer, so ``modeling.load_model`` can load them quantised
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
    dense["mfu_6n"] = round(achieved["model_6n"] / (peak * 1e12), 4) if peak else None
    dense["mfu_4n"] = round(achieved["lora_4n"] / (peak * 1e12), 4) if peak else None
    dense.update(peak_memory(device))
    out["dense"] = dense
    reset_peak(device)
    batches = realistic_batches(examples, mb, answers)
    batches = (batches * (n // max(1, len(batches)) + 1))[:n]
    real = time_training(model, batches, args.warmup, 0, share, config)
    real["share_prefix"] = share
    real["examples_per_s"] = round(mb / real["seconds_per_step"], 2)
    real["mean_prompt_tokens"] = round(sum(len(e.prompt_ids) for e in examples) / len(examples), 1)
    real.update(peak_memory(device))
    out["real_shape"] = real
    return out


def score_measures(model: Any, examples: list, answers: list, batch_sizes: list[int]) -> dict[str, Any]:
    """Label-scoring utterances/s (``evaluate.score_examples``, bf16) at each batch size (one untimed
    warm-up pass on a few examples first)."""
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


# ------------------------------------------------------------------------------------------------ main
def preflight(cuda: bool, skip_qlora: bool) -> str | None:
    """Fail fast on a transformers too old for the package; return why QLoRA cannot run (None if it can)."""
    import importlib.util
    import inspect

    import transformers
    from transformers import LlamaForCausalLM

    if "cache" not in inspect.signature(LlamaForCausalLM.forward).parameters:
        sys.exit(
            f"transformers {transformers.__version__} names the model's cache argument past_key_values; "
            "dialoguellm passes cache= (the transformers this project pins). On a GPU machine with an older "
            "image, carry newer wheels: python tools/gpu_wheels.py (see its docstring)."
        )
    if not cuda:
        return "no CUDA device (bitsandbytes 4-bit kernels need one)"
    if skip_qlora:
        return "--skip-qlora"
    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed (carry it: python tools/gpu_wheels.py)"
    return None


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
    args = parser.parse_args(argv)
    args.steps = args.steps or (3 if args.tiny else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 3)
    args.score_examples = args.score_examples or (32 if args.tiny else 512)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from dialoguellm.config import load_config
    from dialoguellm.model import loading as modeling

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    notes: list[str] = []
    config = load_config("paper")
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    no_qlora = preflight(cuda, args.skip_qlora)
    if not cuda:
        torch.set_num_threads(1 if args.tiny else torch.get_num_threads())
    device_name = (
        torch.cuda.get_device_name(device) if cuda else f"CPU ({platform.processor() or platform.machine()})"
    )
    if args.peak_tflops is None:
        args.peak_tflops = peak_tflops(device_name) if cuda else None
    shape_cfg = TINY if args.tiny else LLAMA2_7B
    shape = prompt_shape()
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    answers = label_answers(shape_cfg["vocab_size"], 2, rng)
    examples = synthetic_examples(
        args.score_examples, shape["shared_prefix"], shape["distinct"], shape_cfg["vocab_size"], args.seed
    )
    lora = config.lora
    settings = {
        "model_shape": "tiny LLaMA (2 layers)" if args.tiny else "LLaMA 2-7B (random weights)",
        "llama_config": shape_cfg,
        "config": "configs/paper.yaml",
        "lora": {
            "r": lora.r,
            "alpha": lora.alpha,
            "dropout": lora.dropout,
            "target_modules": lora.target_modules,
        },
        "micro_batch_size": config.train.micro_batch_size,
        "sequence_tokens": config.prompt.cutoff_len,
        "score_batch_sizes": sorted({config.eval.batch_size, 64})
        if not args.tiny
        else [config.eval.batch_size],
        "steps_timed": args.steps,
        "warmup_steps": args.warmup,
        "score_examples": args.score_examples,
        "prompt_shape": shape,
        "answer_lengths": ANSWER_LENGTHS,
        "dtype": "bf16 weights, bf16 autocast in training steps",
        "peak_tflops_bf16": args.peak_tflops,
        "flops_per_token": "model: 6N + 12*L*H*S; LoRA-actual: 4N + 12*L*H*S (N: all parameters but the "
        "input embedding)",
    }
    notes.append(
        "configs/paper.yaml loads the base in 8-bit fp16 (the released code); this benchmark times bf16 LoRA "
        "and 4-bit NF4 QLoRA with the profile's LoRA, batch and cutoff settings."
    )

    # The random weights are written once and every model below is loaded through modeling.load_model,
    # so the benchmark runs what `dialoguellm train` runs (including the loader's own adjustments).
    start = time.perf_counter()
    model = build_random_model(shape_cfg, device)
    sizes = {
        "vocab": shape_cfg["vocab_size"],
        "layers": shape_cfg["num_hidden_layers"],
        "hidden": shape_cfg["hidden_size"],
        "n_total": sum(p.numel() for p in model.parameters()),
    }
    sizes["n_matmul"] = sizes["n_total"] - model.get_input_embeddings().weight.numel()
    timings["build_model_s"] = round(time.perf_counter() - start, 1)
    checkpoint = Path(tempfile.mkdtemp(prefix="gpu7b-random-", dir=args.tmp_dir))
    try:
        start = time.perf_counter()
        save_random_checkpoint(model, checkpoint)
        del model
        reset_peak(device)
        timings["save_checkpoint_s"] = round(time.perf_counter() - start, 1)

        # (a) bf16 LoRA
        start = time.perf_counter()
        loaded = modeling.load_model(str(checkpoint), dtype="bf16")
        timings["bf16_load_s"] = round(time.perf_counter() - start, 1)
        model = modeling.add_lora(loaded.model, lora.r, lora.alpha, lora.dropout, lora.target_modules)
        params = modeling.count_parameters(model)
        start = time.perf_counter()
        bf16 = train_measures(model, args, config, answers, examples, sizes)
        timings["bf16_train_s"] = round(time.perf_counter() - start, 1)
        # (c) label scoring with the bf16 LoRA model
        start = time.perf_counter()
        scoring = score_measures(model, examples, answers, settings["score_batch_sizes"])
        timings["scoring_s"] = round(time.perf_counter() - start, 1)
        del model, loaded
        gc.collect()

        # (b) QLoRA: the same weights, quantised to NF4 while loading
        if no_qlora is None:
            start = time.perf_counter()
            reset_peak(device)
            # Whatever the bf16 part left allocated would inflate the QLoRA peak: recorded, should be ~0.
            left_over_gb = round(torch.cuda.memory_allocated(device) / GB, 2)
            loaded = modeling.load_model(str(checkpoint), dtype="bf16", quantization="4bit")
            timings["qlora_load_s"] = round(time.perf_counter() - start, 1)
            qmodel = modeling.add_lora(loaded.model, lora.r, lora.alpha, lora.dropout, lora.target_modules)
            load_peak = peak_memory(device)
            start = time.perf_counter()
            qlora = {
                "allocated_before_load_gb": left_over_gb,
                "load": load_peak,
                **train_measures(qmodel, args, config, answers, examples, sizes),
            }
            # Peak over loading and both step kinds (train_measures resets between its measures).
            qlora["peak_gb"] = max(
                load_peak["peak_reserved_gb"],
                qlora["dense"]["peak_reserved_gb"],
                qlora["real_shape"]["peak_reserved_gb"],
            )
            timings["qlora_train_s"] = round(time.perf_counter() - start, 1)
            del qmodel, loaded
            gc.collect()
        else:
            qlora = {"skipped": no_qlora}
            notes.append(f"QLoRA skipped: {no_qlora}.")
    finally:
        shutil.rmtree(checkpoint, ignore_errors=True)

    proj = projection(bf16, scoring, shape, config.train.epochs)
    if "skipped" not in qlora:
        proj["qlora_train_hours_real_shape"] = round(
            sum(TRAIN_SIZES.values()) * config.train.epochs / qlora["real_shape"]["examples_per_s"] / 3600, 3
        )
    timings["total_s"] = round(time.perf_counter() - t0, 1)
    measured = {
        "bf16_lora_mfu_6n": bf16["dense"]["mfu_6n"],
        "qlora_peak_gb": qlora.get("peak_gb"),
        "full_run_hours": proj.get("full_run_hours"),
        "test_sets_seconds": proj.get("test_sets_seconds"),
    }
    targets = []
    for key, (label, op, bound) in TARGETS.items():
        value = measured[key]
        # A tiny run tests the script; its numbers are not held against the 7B targets.
        met = None if value is None or args.tiny else (value >= bound if op == ">=" else value <= bound)
        targets.append({"key": key, "label": label, "target": f"{op} {bound}", "measured": value, "met": met})
    if args.tiny:
        notes.append(
            "--tiny: a 2-layer model; the numbers test the script, they say nothing about a 7B model."
        )
    result = {
        "benchmark": "benchmarks/gpu_7b.py" + (" --tiny" if args.tiny else ""),
        "device": device_name,
        "gpu_memory_gb": round(torch.cuda.get_device_properties(device).total_memory / GB, 1)
        if cuda
        else None,
        "versions": versions(),
        "settings": settings,
        "parameters": {**params, "n_matmul": sizes["n_matmul"], "n_total_base": sizes["n_total"]},
        "bf16_lora": bf16,
        "qlora": qlora,
        "scoring": scoring,
        "projection": proj,
        "targets": targets,
        "timings": timings,
        "notes": notes,
    }
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"gpu_7b_{'tiny_' if args.tiny else ''}{slug(device_name)}.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(render_table(result))
    print(f"wrote {out}")
    return result


def render_table(result: dict[str, Any]) -> str:
    """The headline numbers and the targets as a plain-text table."""

    def fmt(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:,.4g}" if isinstance(value, float) else str(value)

    b, s, p, q = result["bf16_lora"], result["scoring"], result["projection"], result["qlora"]
    rows = [
        ("device", result["device"]),
        ("bf16 LoRA, 8x256: tokens/s", b["dense"]["tokens_per_s"]),
        ("  MFU 6N / 4N", f"{fmt(b['dense']['mfu_6n'])} / {fmt(b['dense']['mfu_4n'])}"),
        ("  peak memory, GB (reserved)", b["dense"]["peak_reserved_gb"]),
        ("bf16 LoRA, real-shaped: examples/s", b["real_shape"]["examples_per_s"]),
        ("QLoRA, 8x256: tokens/s", q.get("dense", {}).get("tokens_per_s", q.get("skipped"))),
        ("QLoRA, real-shaped: examples/s", q.get("real_shape", {}).get("examples_per_s")),
        ("QLoRA peak memory, GB (reserved)", q.get("peak_gb")),
        (
            "scoring: utterances/s (best batch)",
            f"{fmt(s['best_utterances_per_s'])} (batch {s['best_batch_size']})",
        ),
        (
            "full run: train h (dense / real shape)",
            f"{fmt(p['train_hours_dense'])} / {fmt(p['train_hours_real_shape'])}",
        ),
        ("full run incl. dev evals, h", p.get("full_run_hours")),
        ("three test sets, s", p.get("test_sets_seconds")),
    ]
    width = max(len(k) for k, _ in rows) + 2
    lines = [f"{k:<{width}}{fmt(v)}" for k, v in rows]
    lines.append("")
    lines.append(f"{'target':<{width}}{'wanted':<10}{'measured':<12}met")
    for t in result["targets"]:
        met = "-" if t["met"] is None else ("yes" if t["met"] else "NO")
        lines.append(f"{t['label']:<{width}}{t['target']:<10}{fmt(t['measured']):<12}{met}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
    sys.exit(0)
