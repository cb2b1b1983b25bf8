"""LoRA instruction tuning, the paper's recipe, with a plain loop built for speed on CPUs.

What the loop does (and why it is its own loop rather than transformers' Trainer: on 2 CPU cores the
shared-prefix trick below halves the cost of every step, and Trainer's collators cannot express it):

- loss on the answer tokens only (the label word and the end-of-sequence token), averaged per token;
- dynamic padding and length grouping: micro-batches hold prompts of one corpus and similar length;
- the tokens shared by every prompt of a micro-batch (system message, instruction, demonstrations) are run
  once and their keys/values broadcast to the batch; gradients flow through them as usual;
- AdamW with the paper's betas and weight decay, cosine decay to ``min_lr_ratio`` of the peak, gradient
  clipping, gradient accumulation to ``batch_size``; bf16 autocast on CPU;
- dev-set evaluation with the same label scoring as the test (``dialoguellm.evaluate``) and the adapter
  with the best dev weighted F1 kept. The test split is never read here;
- a run folder: ``adapter/`` (best, safetensors), ``checkpoint/`` (last, for ``resume``), ``config.yaml``,
  ``metrics.json``, ``environment.json``, ``train.log``, ``tensorboard/``, ``loss_curve.png``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import random
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dialoguellm import evaluate, modeling
from dialoguellm.config import Config, save_config
from dialoguellm.io import atomic_folder, read_json, recover_folder, write_json
from dialoguellm.progress import progress_bar as tqdm
from dialoguellm.prompts import PromptBuilder, PromptExample, builders_from_config, rows_of

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- data
def sample_indices(n: int, k: int, seed: int, labels: Sequence[int] | None = None) -> list[int]:
    """``k`` of ``n`` row positions (all when k is 0 or >= n), stratified by label, deterministic in seed."""
    if k <= 0 or k >= n:
        return list(range(n))
    rng = random.Random(seed)
    if labels is None:
        return sorted(rng.sample(range(n), k))
    by_label: dict[int, list[int]] = {}
    for i, lab in enumerate(labels):
        by_label.setdefault(int(lab), []).append(i)
    chosen: list[int] = []
    # Proportional allocation with largest remainders, so the sample keeps the split's label shares.
    quotas = {lab: k * len(idx) / n for lab, idx in by_label.items()}
    counts = {lab: int(q) for lab, q in quotas.items()}
    for lab in sorted(quotas, key=lambda x: quotas[x] - counts[x], reverse=True)[: k - sum(counts.values())]:
        counts[lab] += 1
    for lab, idx in sorted(by_label.items()):
        chosen += rng.sample(idx, counts[lab])
    return sorted(chosen)


@dataclass
class Prepared:
    """Prompt builders and encoded examples for every corpus and split used in a run."""

    builders: dict[str, PromptBuilder]
    examples: dict[str, dict[str, list[PromptExample]]]  # split -> corpus -> examples


def prepare_examples(
    config: Config,
    tokenizer: Any,
    corpora: Mapping[str, Any],
    splits: Sequence[str] = ("train", "dev"),
    descriptions: Mapping[str, Mapping[str, str]] | None = None,
) -> Prepared:
    """Build prompts for ``splits`` of each corpus, sampled as ``config.data`` says.

    ``descriptions``: ``split -> {clip_id: text}`` (MELD reuses clip ids across splits); missing = none.
    """
    descriptions = descriptions or {}
    builders = builders_from_config(
        tokenizer, {name: corpora[name] for name in config.data.datasets}, config, descriptions
    )
    sizes = {
        "train": config.data.train_per_dataset,
        "dev": config.data.dev_per_dataset,
        "test": config.data.test_per_dataset,
    }
    examples: dict[str, dict[str, list[PromptExample]]] = {}
    for split in splits:
        examples[split] = {}
        for name in config.data.datasets:
            rows = rows_of(corpora[name][split])
            only = sample_indices(len(rows), sizes[split], config.train.seed, [r["label_id"] for r in rows])
            examples[split][name] = builders[name].build_split(rows, descriptions.get(split, {}), only=only)
    return Prepared(builders=builders, examples=examples)


def micro_batches(
    examples: Mapping[str, Sequence[PromptExample]], size: int, seed: int, group_by_length: bool = True
) -> list[tuple[str, list[int]]]:
    """One epoch of micro-batches ``(corpus, example positions)``, shuffled with ``seed``.

    Each micro-batch holds one corpus (its prompts share an instruction prefix); with length grouping,
    examples are sorted by length within chunks of 32 micro-batches before batching, so padding is small but
    the order stays random.
    """
    rng = random.Random(seed)
    batches: list[tuple[str, list[int]]] = []
    for name, items in examples.items():
        order = list(range(len(items)))
        rng.shuffle(order)
        if group_by_length:
            chunk = size * 32
            grouped = []
            for start in range(0, len(order), chunk):
                part = order[start : start + chunk]
                grouped += sorted(part, key=lambda i: len(items[i].prompt_ids))
            order = grouped
        batches += [(name, order[i : i + size]) for i in range(0, len(order), size)]
    rng.shuffle(batches)
    return batches


# ------------------------------------------------------------------------------------------- the loss
def answer_loss(
    model: Any,
    prompts: Sequence[Sequence[int]],
    answers: Sequence[Sequence[int]],
    pad_id: int,
    share_prefix: bool = True,
    stats: dict[str, int] | None = None,
) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over the answer tokens of a micro-batch, and the number of answer tokens.

    The prompts' common prefix runs once (batch 1) and is broadcast; prompt+answer rows are left-padded so
    all answers end in the last column, and the output projection runs on the answer positions only (one 2-D
    product: no logits over the vocabulary for prompt tokens). ``stats``, when given, accumulates the
    tokens computed and the pad tokens among them (the trainer's padding-waste report).
    """
    p = evaluate.common_prefix_length(prompts) if share_prefix else 0
    prefix = evaluate.encode_prefix(model, list(prompts[0][:p]))
    suffixes = [list(q[p:]) + list(a) for q, a in zip(prompts, answers, strict=True)]
    a_max = max(len(a) for a in answers)
    hidden, s_max = evaluate.forward_hidden(model, prefix, p, suffixes, pad_id)
    if stats is not None:
        real = sum(len(s) for s in suffixes)
        stats["tokens"] = stats.get("tokens", 0) + p + len(suffixes) * s_max
        stats["pad_tokens"] = stats.get("pad_tokens", 0) + len(suffixes) * s_max - real
        stats["answer_tokens"] = stats.get("answer_tokens", 0) + sum(len(a) for a in answers)
    # Column c predicts the token in column c + 1; an answer of n tokens fills the last n columns, so the
    # columns s_max - a_max - 1 ... s_max - 2 predict every answer token.
    picked = hidden[:, s_max - a_max - 1 : s_max - 1]
    targets = torch.full((len(answers), a_max), -100, dtype=torch.long, device=hidden.device)
    for row, a in enumerate(answers):
        targets[row, a_max - len(a) :] = torch.tensor(list(a), device=hidden.device)
    keep = targets.reshape(-1) != -100
    _, head = evaluate.decoder_parts(model)
    logits = head(picked.reshape(-1, picked.shape[-1])[keep])
    n_tokens = int(keep.sum())
    loss = torch.nn.functional.cross_entropy(logits.float(), targets.reshape(-1)[keep], reduction="sum")
    return loss / max(n_tokens, 1), n_tokens


class AnswerLoss(torch.nn.Module):
    """``answer_loss`` as a module, so that one forward call holds a whole micro-batch (prefix and rows).

    DDP (``accelerate launch``) synchronises gradients through a module's forward; wrapping the loss, not the
    language model, keeps the shared-prefix pass inside that one call.
    """

    def __init__(self, model: Any, pad_id: int, share_prefix: bool = True):
        super().__init__()
        self.model = model
        self.pad_id = pad_id
        self.share_prefix = share_prefix

    def forward(
        self,
        prompts: Sequence[Sequence[int]],
        answers: Sequence[Sequence[int]],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean answer-token loss, tensor of tokens computed, pad tokens, answer tokens)."""
        stats: dict[str, int] = {}
        loss, _ = answer_loss(self.model, prompts, answers, self.pad_id, self.share_prefix, stats)
        return loss, torch.tensor([stats["tokens"], stats["pad_tokens"], stats["answer_tokens"]])


# ----------------------------------------------------------------------------------------- schedules
def lr_factor(step: int, total: int, warmup: int, kind: str, min_ratio: float) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` (0-based)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if kind == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def set_seed(seed: int) -> None:
    """Seed Python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------- run records
def environment() -> dict[str, Any]:
    """Package versions, git commit and hardware, for the run folder."""
    import importlib.metadata as md

    versions = {}
    for pkg in (
        "torch",
        "transformers",
        "peft",
        "accelerate",
        "datasets",
        "numpy",
        "scikit-learn",
        "bitsandbytes",
    ):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    try:
        from dialoguellm.paths import REPO_DIR

        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=REPO_DIR, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    hardware: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        hardware["gpu"] = torch.cuda.get_device_name(0)
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        hardware["memory_gb"] = round(pages / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "python": platform.python_version(),
        "packages": versions,
        "git_commit": commit,
        "hardware": hardware,
    }


def hardware_summary(env: Mapping[str, Any]) -> str:
    """One line naming the hardware, e.g. '2 CPU cores (x86_64), no GPU'."""
    hw = env.get("hardware", {})
    gpu = hw.get("gpu") or "no GPU"
    return f"{hw.get('cpu_count')} CPU cores ({hw.get('processor')}), {gpu}"


def _file_logger(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("dialoguellm",):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)
    return handler


# --------------------------------------------------------------------------------------- checkpoints
def _trainable(model: Any) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def save_adapter(model: Any, folder: Path) -> Path:
    """Save the LoRA adapter (safetensors) into ``folder``, replacing it in one rename."""
    with atomic_folder(folder) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
    return folder


def save_checkpoint(
    model: Any, optimizer: torch.optim.Optimizer, state: Mapping[str, Any], folder: Path
) -> None:
    """Trainable weights + AdamW moments as safetensors and the loop state as JSON (no pickle anywhere)."""
    from safetensors.torch import save_file

    names = list(_trainable(model))
    opt = optimizer.state_dict()
    tensors, steps = {}, {}
    for idx, entry in opt["state"].items():
        for key, value in entry.items():
            if key == "step":
                steps[str(idx)] = float(value)
            else:
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
    meta = dict(state)
    meta.update({"param_names": names, "optimizer_steps": steps, "param_groups": opt["param_groups"]})
    meta["rng"] = {
        "python": list(random.getstate()[1]),
        "torch": torch.get_rng_state().tolist(),
        **cuda_rng_state(),
    }
    with atomic_folder(folder) as tmp:
        save_file(
            {n: p.detach().cpu().contiguous() for n, p in _trainable(model).items()},
            str(tmp / "weights.safetensors"),
        )
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "state.json").write_text(json.dumps(meta), encoding="utf-8")


def load_checkpoint(model: Any, optimizer: torch.optim.Optimizer, folder: Path) -> dict[str, Any]:
    """Restore what ``save_checkpoint`` wrote; returns the loop state."""
    from safetensors.torch import load_file

    meta = read_json(folder / "state.json")
    params = _trainable(model)
    if list(params) != meta["param_names"]:
        raise ValueError(
            f"Checkpoint {folder} was written for other trainable parameters (different LoRA settings?); "
            "start a fresh run folder or train without --resume."
        )
    weights = load_file(str(folder / "weights.safetensors"))
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(weights[name].to(param.dtype))
    tensors = load_file(str(folder / "optimizer.safetensors"))
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for idx, step in meta["optimizer_steps"].items():
        state.setdefault(int(idx), {})["step"] = torch.tensor(step)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    rng = meta.get("rng") or {}
    if rng.get("python"):
        random.setstate((3, tuple(rng["python"]), None))
    if rng.get("torch"):
        torch.set_rng_state(torch.tensor(rng["torch"], dtype=torch.uint8))
    restore_cuda_rng_state(rng.get("cuda"), folder)
    return meta


def cuda_rng_state() -> dict[str, list[list[int]]]:
    """``{"cuda": one state per visible GPU}`` when CUDA is available (dropout on a GPU draws from these, not
    from the CPU generator), else nothing, so CPU checkpoints stay as they were."""
    if not torch.cuda.is_available():
        return {}
    return {"cuda": [state.tolist() for state in torch.cuda.get_rng_state_all()]}


def restore_cuda_rng_state(states: list[list[int]] | None, folder: Path) -> None:
    """Put back what ``cuda_rng_state`` saved. Checkpoints written without it (before it existed, or on a
    CPU) restore as before; a different number of visible GPUs restores nothing and says so."""
    if not states or not torch.cuda.is_available():
        return
    if len(states) != torch.cuda.device_count():
        log.warning(
            "checkpoint %s holds CUDA random states for %d GPUs but %d are visible; the resumed run's GPU "
            "random numbers (dropout) will differ from an uninterrupted run.",
            folder,
            len(states),
            torch.cuda.device_count(),
        )
        return
    torch.cuda.set_rng_state_all([torch.tensor(state, dtype=torch.uint8) for state in states])


# ------------------------------------------------------------------------------------------- the loop
def distributed_world() -> int:
    """Number of training processes (more than 1 under ``accelerate launch`` / ``torchrun``)."""
    return process_state().num_processes


def process_state() -> Any:
    """accelerate's view of this process (rank, world size); CPU-only machines use gloo between processes."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def reduce_sum(accelerator: Any, tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes and return it on the CPU. The collective gets it on
    ``accelerator.device``: NCCL, the backend of every multi-GPU launch, takes only CUDA tensors ("No
    backend type associated with device type cpu"); gloo, the CPU one, takes CPU tensors."""
    return accelerator.reduce(tensor.to(accelerator.device), "sum").cpu()


def throughput_report(counts: torch.Tensor, world: int = 1) -> dict[str, float]:
    """Tokens computed, pad tokens among them, padding waste (pad / computed) and tokens/s of the steps run.

    ``counts`` = (tokens computed, pad tokens, answer tokens, seconds summed over processes). Computed tokens
    are the shared prefix once per micro-batch plus every padded row; ``tokens_per_second`` counts the
    computed tokens that are not padding, so the prefix once per micro-batch. (benchmarks/train_speed.py
    counts every example's whole prompt instead, to compare with a trainer that runs each prompt in full.)
    """
    tokens, pads, answer, seconds = (float(v) for v in counts)
    wall = seconds / max(world, 1)
    return {
        "tokens": int(tokens),
        "pad_tokens": int(pads),
        "answer_tokens": int(answer),
        "padding_waste": pads / tokens if tokens else 0.0,
        "tokens_per_second": (tokens - pads) / wall if wall else 0.0,
        "seconds_in_steps": wall,
    }


def score_prepared(
    model: Any, tokenizer: Any, prepared: Prepared, config: Config, split: str, progress: bool = True
) -> dict[str, Any]:
    """Label-scoring predictions (``evaluate.predict_by_scoring``) of every corpus's ``split`` examples, with
    the config's batch size, dtype, ``eval.length_normalise`` and ``eval.precision``."""
    return {
        name: evaluate.predict_by_scoring(
            model,
            tokenizer,
            prepared.builders[name],
            examples,
            config.eval.batch_size,
            config.model.dtype,
            progress,
            config.eval.length_normalise,
            config.eval.precision,
        )
        for name, examples in prepared.examples[split].items()
    }


def dev_metrics(
    model: Any, tokenizer: Any, prepared: Prepared, config: Config, progress: bool = True
) -> dict[str, Any]:
    """Label-scoring metrics on the dev examples of every corpus, plus their mean weighted F1."""
    out: dict[str, Any] = {"predictions": score_prepared(model, tokenizer, prepared, config, "dev", progress)}
    for name, preds in out["predictions"].items():
        out[name] = evaluate.metrics_of(preds, prepared.builders[name].labels)
    out["mean_weighted_f1"] = float(np.mean([out[n]["weighted_f1"] for n in prepared.examples["dev"]]))
    return out


@dataclass
class TrainResult:
    run_dir: Path
    adapter_dir: Path
    best: dict[str, Any]
    history: list[dict[str, Any]]
    seconds: float


def train(
    config: Config,
    run_dir: str | os.PathLike,
    corpora: Mapping[str, Any],
    descriptions: Mapping[str, Mapping[str, str]] | None = None,
    resume: bool = False,
    loaded: modeling.LoadedModel | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a LoRA adapter on ``corpora`` (name -> DatasetDict with train/dev) and keep the best on dev.

    ``run_dir`` receives everything (see module docstring). With ``resume`` an interrupted run continues
    from ``checkpoint/``; otherwise an existing checkpoint is an error (so no run is silently mixed).
    """
    start = time.time()
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = run / "checkpoint"
    if checkpoint_dir.exists() and not resume:
        raise FileExistsError(
            f"{run} already holds a checkpoint from an earlier run; pass resume=True (--resume) to continue it "
            "or choose a fresh run folder."
        )
    if not process_state().is_main_process:  # under accelerate launch only rank 0 writes
        return _train(config, run, corpora, descriptions, resume, loaded, False, start)
    handler = _file_logger(run / "train.log")
    try:
        return _train(config, run, corpora, descriptions, resume, loaded, progress, start)
    finally:
        for name in ("dialoguellm",):
            logging.getLogger(name).removeHandler(handler)
        handler.close()


def _train(config, run, corpora, descriptions, resume, loaded, progress, start) -> TrainResult:
    from accelerate import Accelerator

    t, m = config.train, config.model
    world = distributed_world()
    if t.grad_accum % world:
        raise ValueError(
            f"train.grad_accum={t.grad_accum} micro-batches per step cannot be shared by {world} processes: the "
            f"global batch is train.batch_size={t.batch_size} = micro_batch_size {t.micro_batch_size} x "
            f"grad_accum {t.grad_accum}, and each process takes grad_accum / {world} of them. Choose a "
            f"grad_accum divisible by {world} (keeping batch_size = micro_batch_size x grad_accum)."
        )
    per_rank = t.grad_accum // world
    # On GPU, accelerate's mixed precision gives fp16 its gradient scaler (and bf16 its autocast); on CPU the
    # loop's own bf16 autocast does the work (evaluate.autocast_context). An accelerate config's
    # mixed_precision (ACCELERATE_MIXED_PRECISION, set by accelerate launch) wins.
    gpu = torch.cuda.is_available()
    precision = {"bf16": "bf16", "fp16": "fp16"}.get(m.dtype, "no") if gpu else "no"
    precision = None if os.environ.get("ACCELERATE_MIXED_PRECISION") else precision
    # Device placement is load_model's job (it also handles k-bit models spread by device_map).
    accelerator = Accelerator(
        gradient_accumulation_steps=per_rank, device_placement=False, cpu=not gpu, mixed_precision=precision
    )
    main = accelerator.is_main_process
    zero = deepspeed_active(accelerator)
    if zero and resume:
        raise ValueError(
            "--resume is not supported under DeepSpeed ZeRO (e.g. configs/accelerate/deepspeed_zero2.yaml): its "
            "optimizer state is partitioned across the processes, and dialoguellm's checkpoints hold one "
            "process's state, so no resumable checkpoint is written there. Start the run again without --resume "
            "in a fresh folder, or train with configs/accelerate/ddp.yaml, whose checkpoints resume."
        )
    if zero:
        log.info("DeepSpeed ZeRO: no resumable checkpoints; the best adapter is saved at each dev evaluation")
    modeling.set_threads(m.num_threads)
    set_seed(t.seed)
    recover_folder(run / "checkpoint")  # a kill between atomic_folder's two renames
    if resume and checkpoint_dir_exists(run):
        _check_same_config(config, run / "config.yaml")
    env = environment()
    if main:
        save_config(config, run / "config.yaml")
        write_json(run / "environment.json", env)
    if loaded is None:
        loaded = modeling.load_model(m.name, m.dtype, m.quantization, m.trust_remote_code)
    tokenizer = loaded.tokenizer
    prepared = prepare_examples(config, tokenizer, corpora, ("train", "dev"), descriptions)
    n_train = sum(len(v) for v in prepared.examples["train"].values())
    if n_train == 0:
        raise ValueError("No training examples: check data.datasets and data.train_per_dataset.")
    set_seed(t.seed)  # LoRA initialisation independent of how many prompts were built
    model = modeling.add_lora(
        loaded.model, config.lora.r, config.lora.alpha, config.lora.dropout, config.lora.target_modules
    )
    params = modeling.count_parameters(model)
    log.info(
        "model %s, %s trainable / %s parameters, %d training prompts",
        m.name,
        params["trainable"],
        params["total"],
        n_train,
    )
    decay = [p for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(decay, lr=t.lr, betas=tuple(t.adam_betas), weight_decay=t.weight_decay)
    epoch_batches = [micro_batches(prepared.examples["train"], t.micro_batch_size, t.seed, t.group_by_length)]
    micro_per_epoch = len(epoch_batches[0])
    total_micro = max(1, int(round(micro_per_epoch * t.epochs)))
    total_steps = math.ceil(total_micro / t.grad_accum)
    if t.max_steps:
        total_steps = min(total_steps, t.max_steps)
    steps_per_epoch = max(1, math.ceil(micro_per_epoch / t.grad_accum))
    eval_every = t.eval_every or steps_per_epoch
    save_every = t.save_every or eval_every

    state: dict[str, Any] = {"step": 0, "micro": 0, "best": None, "history": [], "losses": []}
    if resume and checkpoint_dir_exists(run):
        state.update(load_checkpoint(model, optimizer, run / "checkpoint"))
        log.info("resumed from %s at step %d", run / "checkpoint", state["step"])
    seconds_before = float(state.get("seconds", 0.0))  # time spent before an interruption counts too
    writer = None
    if main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run / "tensorboard"))
    pad = tokenizer.pad_token_id
    # Gradient checkpointing (the k-bit recipe turns it on) drops caches in training, so there the shared
    # prefix is not used and every row runs in full.
    share_prefix = not any(getattr(mod, "gradient_checkpointing", False) for mod in model.modules())
    # One forward call per micro-batch (prefix + rows), so DDP/DeepSpeed see an ordinary module.
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is not None:  # no DataLoader here for DeepSpeed to read the micro-batch size from
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = t.micro_batch_size
    loss_module, optimizer = accelerator.prepare(AnswerLoss(model, pad, share_prefix), optimizer)
    if world > 1:
        log.info(
            "%d processes: %d micro-batches of %d per process and step (global batch %d)",
            world,
            per_rank,
            t.micro_batch_size,
            t.batch_size,
        )

    def batch_at(micro_index: int) -> tuple[str, list[int]]:
        epoch, pos = divmod(micro_index, micro_per_epoch)
        while len(epoch_batches) <= epoch:  # each epoch has its own order, reproducible from the seed
            epoch_batches.append(
                micro_batches(
                    prepared.examples["train"],
                    t.micro_batch_size,
                    t.seed + len(epoch_batches),
                    t.group_by_length,
                )
            )
        return epoch_batches[epoch][pos]

    counts = torch.zeros(4, dtype=torch.float64)  # tokens computed, pad tokens, answer tokens, seconds
    model.train()
    bar = tqdm(total=total_steps, initial=state["step"], desc="training", disable=not (progress and main))
    while state["step"] < total_steps:
        step = state["step"]
        factor = lr_factor(step, total_steps, t.warmup_steps, t.scheduler, t.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = t.lr * factor
        step_start = time.time()
        # The step's micro-batches (the same on every process); process r takes every world-th one. Each
        # process runs exactly per_rank micro-batches, so gradient synchronisation always lines up; in a
        # short last step a process without a micro-batch of its own repeats one with weight 0.
        global_ids = [state["micro"] + i for i in range(t.grad_accum) if state["micro"] + i < total_micro]
        global_ids = global_ids or [state["micro"]]
        mine = global_ids[accelerator.process_index :: world]
        weights = [world * per_rank / len(global_ids)] * len(mine) + [0.0] * (per_rank - len(mine))
        mine = (mine + [global_ids[0]] * per_rank)[:per_rank]
        step_loss = torch.zeros(1, dtype=torch.float64)
        for micro_index, weight in zip(mine, weights, strict=True):
            name, idx = batch_at(micro_index)
            items = [prepared.examples["train"][name][i] for i in idx]
            answers = [prepared.builders[name].answer_ids[e.label_id] for e in items]
            with accelerator.accumulate(loss_module), evaluate.autocast_context(model, m.dtype):
                loss, stats = loss_module([e.prompt_ids for e in items], answers)
                accelerator.backward(loss * weight)  # accelerate divides by per_rank
            if weight:
                step_loss += float(loss.detach()) / len(global_ids)
                counts[:3] += stats.double()
        if t.max_grad_norm:
            accelerator.clip_grad_norm_(decay, t.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        counts[3] += time.time() - step_start
        step_loss = float(reduce_sum(accelerator, step_loss)) if world > 1 else float(step_loss)
        state["micro"] += len(global_ids)
        state["step"] += 1
        state["losses"].append({"step": state["step"], "loss": step_loss, "lr": t.lr * factor})
        if writer is not None:
            writer.add_scalar("train/loss", step_loss, state["step"])
            writer.add_scalar("train/lr", t.lr * factor, state["step"])
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.3f}")
        done = state["step"] >= total_steps
        if (state["step"] % eval_every == 0 or done) and main:
            dev = dev_metrics(model, tokenizer, prepared, config, progress)
            entry = {
                "step": state["step"],
                "epoch": state["micro"] / micro_per_epoch,
                "dev_weighted_f1": dev["mean_weighted_f1"],
                **{f"dev_{n}_weighted_f1": dev[n]["weighted_f1"] for n in prepared.examples["dev"]},
                **{f"dev_{n}_accuracy": dev[n]["accuracy"] for n in prepared.examples["dev"]},
            }
            state["history"].append(entry)
            writer.add_scalar("dev/weighted_f1", dev["mean_weighted_f1"], state["step"])
            log.info("step %d: dev weighted F1 %.4f", state["step"], dev["mean_weighted_f1"])
            if state["best"] is None or dev["mean_weighted_f1"] > state["best"]["dev_weighted_f1"]:
                state["best"] = dict(entry)
                save_adapter(model, run / "adapter")
                save_dev_selection(dev, prepared, config, run / "adapter")
        if (state["step"] % save_every == 0 or done) and main and not zero:
            state["seconds"] = seconds_before + time.time() - start
            save_checkpoint(model, optimizer, state, run / "checkpoint")
        accelerator.wait_for_everyone()
    counts = reduce_sum(accelerator, counts) if world > 1 else counts
    throughput = throughput_report(counts, world)
    if throughput["tokens"]:
        log.info(
            "trained %d tokens (%.1f%% padding) at %.0f tokens/s",
            throughput["tokens"],
            100 * throughput["padding_waste"],
            throughput["tokens_per_second"],
        )
    bar.close()
    if writer is not None:
        writer.close()
    seconds = seconds_before + time.time() - start
    if not main:
        return TrainResult(run, run / "adapter", state["best"], state["history"], seconds)
    calibrated = (run / "adapter" / "calibration.json").is_file()
    if config.eval.calibrate and state["best"] is not None and not calibration_reuses_selection(config):
        if not calibrated:  # after a resume, the fit may already be there
            fit_calibration(model, tokenizer, corpora, config, run / "adapter", descriptions, progress)
        seconds = seconds_before + time.time() - start
    metrics = {
        "best": state["best"],
        "history": state["history"],
        "losses": state["losses"],
        "train_examples": {n: len(v) for n, v in prepared.examples["train"].items()},
        "dev_examples": {n: len(v) for n, v in prepared.examples["dev"].items()},
        "steps": state["step"],
        "parameters": params,
        "seconds": seconds,
        "throughput": throughput,
        "processes": world,
        "hardware": hardware_summary(env),
        "model": m.name,
    }
    write_json(run / "metrics.json", metrics)
    try:
        from dialoguellm.plots_method import plot_loss_curve

        plot_loss_curve(state["losses"], state["history"], run / "loss_curve.png")
    except Exception as err:  # a figure must never lose a finished run
        log.warning("loss curve not drawn: %s", err)
    return TrainResult(
        run_dir=run,
        adapter_dir=run / "adapter",
        best=state["best"],
        history=state["history"],
        seconds=seconds,
    )


def deepspeed_active(accelerator: Any) -> bool:
    """Whether ``accelerate launch`` runs DeepSpeed (a ZeRO config), whose optimizer state is partitioned."""
    return getattr(accelerator.state, "deepspeed_plugin", None) is not None


def checkpoint_dir_exists(run: Path) -> bool:
    return (run / "checkpoint" / "state.json").is_file()


def load_corpora_for(
    config: Config, run_dir: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None
) -> dict[str, Any]:
    """The corpora a config names: notebook 01's curated copies in ``run_dir/data`` when present, else the
    raw corpora (``data_dir`` or the vendored copies)."""
    from dialoguellm import data

    corpora = {}
    for name in config.data.datasets:
        if run_dir is not None and (Path(run_dir) / "data" / name).is_dir():
            corpora[name] = data.load_curated(run_dir, name)
        else:
            corpora.update(data.load_corpora([name], data_dir))
        if name not in corpora:
            raise FileNotFoundError(
                f"Corpus {name!r} (data.datasets) could not be loaded; run notebook 01 with this RUN_DIR or drop "
                "it from data.datasets."
            )
    return corpora


def load_descriptions_for(
    config: Config, run_dir: str | os.PathLike | None, splits: Sequence[str] = ("train", "dev", "test")
) -> dict[str, dict[str, str]]:
    """``split -> {clip_id: description}`` from notebook 02's cache in ``run_dir`` ({} when video is off or
    nothing was described)."""
    if not config.prompt.use_video or run_dir is None:
        return {}
    try:
        from dialoguellm.video import load_description_map
    except ImportError:
        return {}
    out = {}
    for split in splits:
        try:
            out[split] = load_description_map(run_dir, split=split)
        except FileNotFoundError as err:  # a corrupt cache is an error (it names the line), not "no video"
            log.info("no %s video descriptions in %s (%s)", split, run_dir, err)
            out[split] = {}
    return out


def _check_same_config(config: Config, saved: Path) -> None:
    import yaml

    if not saved.is_file():
        return
    before = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
    now = config.to_dict()
    before.pop("source", None)
    now.pop("source", None)
    changed = sorted(
        f"{section}.{key}"
        for section, values in now.items()
        for key, value in values.items()
        if before.get(section, {}).get(key) != value
    )
    if changed:
        raise ValueError(
            f"Cannot resume {saved.parent}: its checkpoint was trained with other settings ({', '.join(changed)}). "
            "Use a fresh run folder, or the settings in its config.yaml."
        )


def calibration_reuses_selection(config: Config) -> bool:
    """Whether the calibration biases are fitted on the model-selection dev predictions (the same sample)."""
    return config.eval.calibration_per_dataset == config.data.dev_per_dataset


def save_dev_selection(dev: Mapping[str, Any], prepared: Prepared, config: Config, folder: Path) -> None:
    """Next to the selected adapter: its dev metrics and predictions, and (``eval.calibrate`` with
    ``eval.calibration_per_dataset`` equal to ``data.dev_per_dataset``) the per-label biases fitted on those
    dev predictions, which evaluation then applies unchanged to the test split. Otherwise
    ``fit_calibration`` fits them after training, on their own dev sample."""
    predictions = dev["predictions"]
    write_json(folder / "dev_metrics.json", {k: v for k, v in dev.items() if k != "predictions"})
    calibration = {}
    for name, preds in predictions.items():
        labels = prepared.builders[name].labels
        evaluate.save_predictions(preds, dev[name], folder, f"dev_{name}")
        if config.eval.calibrate and calibration_reuses_selection(config):
            calibration[name] = evaluate.fit_label_bias(
                evaluate.loglik_matrix(preds, labels), preds["gold_id"].to_numpy(), labels
            ).tolist()
    if calibration:
        write_json(folder / "calibration.json", calibration)


def fit_calibration(
    model: Any,
    tokenizer: Any,
    corpora: Mapping[str, Any],
    config: Config,
    folder: Path,
    descriptions: Mapping[str, Mapping[str, str]] | None = None,
    progress: bool = True,
) -> dict[str, list[float]]:
    """Per-label biases (``eval.calibrate``) fitted on ``eval.calibration_per_dataset`` dev utterances per
    corpus (0 = all), scored with the selected adapter in ``folder``, whose weights are loaded into ``model``
    first. Writes ``calibration.json`` (what evaluation applies to test) and ``calibration_dev.json`` (how
    many dev rows, weighted F1 before and after, in-sample) into ``folder``; returns the biases.

    Biases fitted on few rows follow that sample's noise (benchmarks/length_normalisation.py prints held-out
    dev weighted F1 by the number of rows they were fitted on). Prompts come from ``analysis.score_split``,
    exactly as in training and evaluation.
    """
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from dialoguellm.analysis import score_split
    from dialoguellm.labels import normalised_label_names

    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"No selected adapter in {folder} to calibrate (adapter_model.safetensors).")
    set_peft_model_state_dict(model, load_file(str(weights)))
    predictions = score_split(
        config, model, tokenizer, corpora, "dev", config.eval.calibration_per_dataset, descriptions, progress
    )
    calibration, report = {}, {"length_normalise": bool(config.eval.length_normalise), "corpora": {}}
    for name, preds in predictions.items():
        labels = normalised_label_names(name)
        bias = evaluate.fit_label_bias(
            evaluate.loglik_matrix(preds, labels), preds["gold_id"].to_numpy(), labels
        )
        calibration[name] = bias.tolist()
        raw = evaluate.metrics_of(preds, labels)
        fitted = evaluate.metrics_of(evaluate.apply_label_bias(preds, labels, bias), labels)
        report["corpora"][name] = {
            "dev_utterances": len(preds),
            "weighted_f1_raw": raw["weighted_f1"],
            "weighted_f1_calibrated_in_sample": fitted["weighted_f1"],
        }
        log.info(
            "%s: label biases fitted on %d dev utterances (dev weighted F1 %.4f -> %.4f in sample)",
            name,
            len(preds),
            raw["weighted_f1"],
            fitted["weighted_f1"],
        )
    write_json(folder / "calibration_dev.json", report)
    write_json(folder / "calibration.json", calibration)
    return calibration
