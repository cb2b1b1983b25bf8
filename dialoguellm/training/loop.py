"""LoRA instruction tuning, the paper's recipe, with a plain loop built for speed on CPUs.

Why its own loop rather than transformers' Trainer: on 2 CPU cores the shared-prefix trick of the loss
(``training.loss``) halves the cost of every step, and Trainer's collators cannot express it.

``train`` runs these steps, each a function below that reads on one screen:

1. ``_accelerator``: accelerate's view of the processes (DDP, DeepSpeed) and their share of a step;
2. ``_start_run``: seeds, threads, the resume check, ``config.yaml`` and ``environment.json``;
3. ``_add_adapter``: a fresh LoRA adapter on the base model and its AdamW optimizer (the paper's betas and
   weight decay);
4. ``_schedule``: micro-batches per epoch, optimiser steps, when to evaluate on dev and save;
5. ``_open_session``: the loop state (restored from ``checkpoint/`` with ``resume``), TensorBoard, and the
   loss module accelerate wraps;
6. ``_optimizer_step`` until the last step: gradient accumulation to ``batch_size``, clipping, the learning
   rate; ``_after_step`` logs it, evaluates on dev (the same label scoring as the test) and keeps the adapter
   with the best dev weighted F1, and writes the checkpoint. The test split is never read here;
7. ``_finish``: the label biases on dev (``calibration.fit_calibration``, with ``eval.calibrate``) and
   ``metrics.json``.

The run folder's files are named by ``runs.TrainingLayout``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dialoguellm.calibration import calibration_reuses_selection, fit_calibration, label_bias_of
from dialoguellm.config import Config, save_config
from dialoguellm.corpora import overlap
from dialoguellm.io import metrics_name, recover_folder, split_stem, write_json
from dialoguellm.model import loading
from dialoguellm.model.card import invocation, write_model_card
from dialoguellm.progress import progress_bar as tqdm
from dialoguellm.prompts import Prepared, prepare_examples, prepare_split
from dialoguellm.prompts.builder import VIDEO_DATASETS
from dialoguellm.runs import TrainingLayout, environment, hardware_summary
from dialoguellm.scoring.engine import fp32_parameters
from dialoguellm.scoring.predictions import metrics_of, save_predictions, score_prepared
from dialoguellm.training.checkpoints import (
    check_same_config,
    checkpoint_dir_exists,
    load_checkpoint,
    save_adapter,
    save_checkpoint,
)
from dialoguellm.training.loss import AnswerLoss, lr_factor, micro_batches, training_precision, tuner_layers

log = logging.getLogger(__name__)

# With ``model.num_threads: 0`` the thread count is sampled again every this many optimiser steps (and before
# each dev evaluation), not fixed for the whole run from one reading at its start: a minute of someone else's
# work at startup once held a 25-minute training to 1 thread of 2 (issue 30). A reading costs 0.3 s idle.
THREAD_RECHECK_STEPS = 10


def set_seed(seed: int) -> None:
    """Seed Python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _file_logger(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("dialoguellm",):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)
    return handler


def process_seed(seed: int, rank: int, step: int) -> int:
    """The torch seed of training process ``rank`` > 0 from optimiser step ``step`` on (its dropout masks):
    independent streams for every (seed, process, step), from numpy's ``SeedSequence``."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, np.uint64)[0] >> 1)


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


def deepspeed_active(accelerator: Any) -> bool:
    """Whether ``accelerate launch`` runs DeepSpeed (a ZeRO config), whose optimizer state is partitioned."""
    return getattr(accelerator.state, "deepspeed_plugin", None) is not None


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


def dev_metrics(
    model: Any, tokenizer: Any, prepared: Prepared, config: Config, progress: bool = True
) -> dict[str, Any]:
    """Label-scoring metrics on the dev examples of every corpus, plus their mean weighted F1."""
    out: dict[str, Any] = {"predictions": score_prepared(model, tokenizer, prepared, config, "dev", progress)}
    for name, preds in out["predictions"].items():
        out[name] = metrics_of(preds, prepared.builders[name].labels)
    out["mean_weighted_f1"] = float(np.mean([out[n]["weighted_f1"] for n in prepared.examples["dev"]]))
    return out


def save_dev_selection(dev: Mapping[str, Any], prepared: Prepared, config: Config, folder: Path) -> None:
    """Next to the selected adapter: its dev metrics and predictions, and (``eval.calibrate`` with
    ``eval.calibration_per_dataset`` equal to ``data.dev_per_dataset``) the label biases fitted on those dev
    predictions, which evaluation then applies unchanged to the test split. Otherwise
    ``calibration.fit_calibration`` fits them after training, on their own dev sample."""
    write_json(folder / metrics_name("dev"), {k: v for k, v in dev.items() if k != "predictions"})
    calibration = {}
    for name, preds in dev["predictions"].items():
        labels = prepared.builders[name].labels
        save_predictions(preds, dev[name], folder, split_stem("dev", name))
        if config.eval.calibrate and calibration_reuses_selection(config):
            calibration[name] = label_bias_of(preds, labels).tolist()
    if calibration:
        write_json(folder / "calibration.json", calibration)


@dataclass
class TrainResult:
    run_dir: Path
    adapter_dir: Path
    best: dict[str, Any]
    history: list[dict[str, Any]]
    seconds: float


def training_records(
    config: Config, metrics: Mapping[str, Any], result: TrainResult, figure: str | os.PathLike
) -> dict[str, Any]:
    """What notebook 03 records: the model, the hardware, the examples, trainable parameters and steps of the
    run (its ``metrics.json``, ``TrainingLayout.metrics``), the best dev weighted F1, the minutes, the
    throughput, the adapter kept and the loss figure's file name."""
    throughput = metrics["throughput"]
    return {
        "model": config.model.name,
        "hardware": metrics["hardware"],
        "train_examples": metrics["train_examples"],
        "dev_examples": metrics["dev_examples"],
        "trainable_parameters": metrics["parameters"]["trainable"],
        "steps": metrics["steps"],
        "best_dev_weighted_f1": result.best["dev_weighted_f1"],
        "train_minutes": round(metrics["seconds"] / 60, 2),
        "padding_waste": round(throughput["padding_waste"], 4),
        "train_tokens_per_second": round(throughput["tokens_per_second"], 1),
        "adapter": str(result.adapter_dir),
        "figure": Path(figure).name,
    }


def train(
    config: Config,
    run_dir: str | os.PathLike,
    corpora: Mapping[str, Any],
    descriptions: Mapping[str, Mapping[str, str]] | None = None,
    resume: bool = False,
    loaded: loading.LoadedModel | None = None,
    progress: bool = True,
    one_of_seeds: bool = False,
) -> TrainResult:
    """Train a LoRA adapter on ``corpora`` (name -> DatasetDict with train/dev) and keep the best on dev.

    ``run_dir`` receives everything (``runs.TrainingLayout``). With ``resume`` an interrupted run continues
    from ``checkpoint/``; otherwise an existing checkpoint is an error (so no run is silently mixed).
    One call trains ``train.seed``; it warns when ``eval.seeds`` lists more, unless ``one_of_seeds`` says
    the caller trains them all (``dialoguellm train --all-seeds``).
    """
    if not one_of_seeds and process_state().is_main_process:
        warn_single_seed(config)
    start = time.time()
    run = TrainingLayout(Path(run_dir))
    run.root.mkdir(parents=True, exist_ok=True)
    if run.checkpoint.exists() and not resume:
        raise FileExistsError(
            f"{run.root} already holds a checkpoint from an earlier run; pass resume=True (--resume) to continue "
            "it or choose a fresh run folder."
        )
    if not process_state().is_main_process:  # under accelerate launch only rank 0 writes
        return _train(config, run, corpora, descriptions, resume, loaded, False, start)
    handler = _file_logger(run.log)
    try:
        return _train(config, run, corpora, descriptions, resume, loaded, progress, start)
    finally:
        for name in ("dialoguellm",):
            logging.getLogger(name).removeHandler(handler)
        handler.close()


# ------------------------------------------------------------------------------------------ the steps
@dataclass
class Schedule:
    """How many processes share a step, and the optimiser steps of the whole run."""

    world: int  # training processes
    per_rank: int  # micro-batches each process runs per optimiser step
    passes: int  # forward calls each process runs per optimiser step (per_rank / micro_batches_per_pass)
    micro_per_epoch: int
    total_micro: int
    total_steps: int
    eval_every: int
    save_every: int


@dataclass
class Session:
    """Everything the steps of one training run share, from the first optimiser step to the last."""

    config: Config
    run: TrainingLayout
    accelerator: Any
    model: Any
    tokenizer: Any
    prepared: Prepared
    optimizer: torch.optim.Optimizer
    trainable: list[torch.nn.Parameter]
    schedule: Schedule
    epoch_batches: list[list[tuple[str, list[int]]]]
    progress: bool
    start: float
    state: dict[str, Any] = field(default_factory=dict)
    seconds_before: float = 0.0
    loss_module: Any = None
    writer: Any = None
    bar: Any = None
    tuner_layers: list[Any] = field(default_factory=list)  # peft's adapter layers, listed once per run
    precision: str = "bf16"  # what training multiplies in (loading.training_dtype of train.precision) ...
    precision_reason: str = ""  # ... and why
    # tokens computed, pad tokens, answer tokens, seconds in steps
    counts: torch.Tensor = field(default_factory=lambda: torch.zeros(4, dtype=torch.float64))

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


def _train(
    config: Config,
    run: TrainingLayout,
    corpora: Mapping[str, Any],
    descriptions: Mapping[str, Mapping[str, str]] | None,
    resume: bool,
    loaded: loading.LoadedModel | None,
    progress: bool,
    start: float,
) -> TrainResult:
    m = config.model
    precision, precision_reason = loading.training_dtype(config.train.precision, m.dtype)
    accelerator, world, per_rank = _accelerator(config, resume, precision)
    env = _start_run(config, run, accelerator.is_main_process, resume)
    corpora, data_report = training_corpora(config, corpora)
    if loaded is None:
        loaded = loading.load_configured(m)
    prepared = prepare_examples(config, loaded.tokenizer, corpora, ("train", "dev"), descriptions)
    if sum(len(v) for v in prepared.examples["train"].values()) == 0:
        raise ValueError("No training examples: check data.datasets and data.train_per_dataset.")
    data_report["description_coverage"] = description_coverage(prepared)
    check_description_coverage(config, data_report["description_coverage"])
    if accelerator.is_main_process:
        write_json(run.data_report, data_report)
    model, optimizer, trainable, params = _add_adapter(config, loaded.model, prepared)
    schedule, first_epoch = _schedule(config, prepared, world, per_rank)
    session = Session(
        config, run, accelerator, model, loaded.tokenizer, prepared, optimizer, trainable, schedule,
        [first_epoch], progress, start,
    )  # fmt: skip
    session.precision, session.precision_reason = precision, precision_reason
    log.info("training multiplies in %s (%s)", session.precision, session.precision_reason)
    # fp32 arithmetic on 16-bit weights: fp32 copies of the same values for the run, the caller's back after
    with fp32_parameters(model) if session.precision == "fp32" else contextlib.nullcontext():
        _open_session(session, resume)
        _record_precision(session)
        while session.state["step"] < schedule.total_steps:
            step_loss, lr = _optimizer_step(session)
            _after_step(session, step_loss, lr)
        return _finish(session, corpora, descriptions, env, params, data_report)


def training_corpora(config: Config, corpora: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the corpora training reads, the data report): with ``data.remove_cross_corpus_overlap`` each
    training split without what it shares with another corpus's dev or test split (``corpora.overlap``),
    the count printed and logged. Dev and test are untouched."""
    used = {name: corpora[name] for name in config.data.datasets if name in corpora}
    report: dict[str, Any] = {"datasets": list(used), "cross_corpus_overlap": None}
    if not config.data.remove_cross_corpus_overlap:
        log.warning(
            "data.remove_cross_corpus_overlap is false: training splits may hold utterances of another "
            "corpus's dev/test split (MELD and EmoryNLP share Friends episodes)"
        )
        return {**corpora}, report
    cleaned, removal = overlap.remove_cross_corpus_overlap(used)
    line = overlap.summary_line(removal)
    log.info(line)
    if process_state().is_main_process:
        print(line, flush=True)
    report["cross_corpus_overlap"] = removal
    return {**corpora, **cleaned}, report


def description_coverage(prepared: Prepared) -> dict[str, dict[str, float]]:
    """``split -> corpus -> share of its prompts with a video description`` (0.0 where none has one)."""
    return {
        split: {
            name: (
                sum(e.meta.get("has_description", False) for e in examples) / len(examples)
                if examples
                else 0.0
            )
            for name, examples in per_corpus.items()
        }
        for split, per_corpus in prepared.examples.items()
    }


def check_description_coverage(config: Config, coverage: Mapping[str, Mapping[str, float]]) -> None:
    """Refuse to train with ``prompt.use_video`` when no training prompt of a video corpus (MELD) has a
    description: the model would learn without descriptions and meet them only at test time."""
    if not config.prompt.use_video:
        return
    for name in VIDEO_DATASETS:
        train = coverage.get("train", {}).get(name)
        if train is None:
            continue
        log.info(
            "video descriptions for %s: train %.1f%%, dev %.1f%% of prompts",
            name,
            100 * train,
            100 * coverage.get("dev", {}).get(name, 0.0),
        )
        if train == 0:
            raise ValueError(
                f"{config.source}: prompt.use_video is true but none of the {name} training prompts has a video "
                "description (coverage per split: "
                + ", ".join(f"{s} {100 * c.get(name, 0.0):.1f}%" for s, c in coverage.items())
                + "). The model would be trained without descriptions and tested with some. Fix: describe the "
                "training clips first (notebooks/02_video_descriptions.ipynb with SPLITS including train, into "
                "this RUN_DIR), or train without them: --set prompt.use_video=false."
            )


def warn_single_seed(config: Config) -> None:
    """``eval.seeds`` lists the seeds the protocol averages; one training call trains ``train.seed`` only."""
    seeds = list(config.eval.seeds)
    if len(seeds) > 1:
        others = " ".join(str(s) for s in seeds)
        log.warning(
            "%s: eval.seeds lists %d seeds %s (the paper averages them), but one training run trains one "
            "adapter, with train.seed=%d. For the paper's protocol train each seed into its own folder: "
            "dialoguellm train --all-seeds (each seed into <name>_seed<S>), then dialoguellm evaluate --all-seeds "
            "(mean and sd over the seeds); or by hand: for s in %s; do dialoguellm train ... --set train.seed=$s "
            "--name training_seed$s; done.",
            config.source,
            len(seeds),
            seeds,
            config.train.seed,
            others,
        )


def passes_per_step(per_rank: int, micro_batches_per_pass: int) -> int:
    """Forward calls each process runs per optimiser step: its micro-batches, ``micro_batches_per_pass`` to a
    pass (the last pass may hold fewer); what accelerate counts as accumulation steps."""
    return -(-per_rank // micro_batches_per_pass)


def _accelerator(config: Config, resume: bool, dtype: str) -> tuple[Any, int, int]:
    """(Accelerator, number of processes, micro-batches per process and step), refusing settings that
    cannot be shared by the processes or resumed. ``dtype`` is what training multiplies in
    (``loading.training_dtype``)."""
    from accelerate import Accelerator

    t = config.train
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
    # loop's own bf16 autocast does the work (engine.autocast_context). An accelerate config's
    # mixed_precision (ACCELERATE_MIXED_PRECISION, set by accelerate launch) wins.
    gpu = torch.cuda.is_available()
    precision = {"bf16": "bf16", "fp16": "fp16"}.get(dtype, "no") if gpu else "no"
    precision = None if os.environ.get("ACCELERATE_MIXED_PRECISION") else precision
    # Device placement is load_model's job (it also handles k-bit models spread by device_map).
    accelerator = Accelerator(
        gradient_accumulation_steps=passes_per_step(per_rank, t.micro_batches_per_pass),
        device_placement=False,
        cpu=not gpu,
        mixed_precision=precision,
    )
    if deepspeed_active(accelerator) and resume:
        raise ValueError(
            "--resume is not supported under DeepSpeed ZeRO (e.g. configs/accelerate/deepspeed_zero2.yaml): its "
            "optimizer state is partitioned across the processes, and dialoguellm's checkpoints hold one "
            "process's state, so no resumable checkpoint is written there. Start the run again without --resume "
            "in a fresh folder, or train with configs/accelerate/ddp.yaml, whose checkpoints resume."
        )
    if deepspeed_active(accelerator):
        log.info("DeepSpeed ZeRO: no resumable checkpoints; the best adapter is saved at each dev evaluation")
    return accelerator, world, per_rank


def _start_run(config: Config, run: TrainingLayout, main: bool, resume: bool) -> dict[str, Any]:
    """Threads and seeds; a resumed run must have the settings it was trained with; the main process writes
    ``config.yaml`` and ``environment.json``. Returns the environment."""
    loading.set_threads(config.model.num_threads)
    set_seed(config.train.seed)
    recover_folder(run.checkpoint)  # a kill between atomic_folder's two renames
    if resume and checkpoint_dir_exists(run.root):
        check_same_config(config, run.config)
    env = environment()
    if main:
        save_config(config, run.config)
        write_json(run.environment, env)
    return env


def _add_adapter(
    config: Config, base: Any, prepared: Prepared
) -> tuple[Any, torch.optim.Optimizer, list[torch.nn.Parameter], dict[str, int]]:
    """(model with a fresh LoRA adapter, its AdamW optimizer, the trainable parameters, parameter counts)."""
    t, lora = config.train, config.lora
    set_seed(t.seed)  # LoRA initialisation independent of how many prompts were built
    model = loading.add_lora(base, lora.r, lora.alpha, lora.dropout, lora.target_modules)
    params = loading.count_parameters(model)
    log.info(
        "model %s, %s trainable / %s parameters, %d training prompts",
        config.model.name,
        params["trainable"],
        params["total"],
        sum(len(v) for v in prepared.examples["train"].values()),
    )
    trainable = [p for _, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=t.lr, betas=tuple(t.adam_betas), weight_decay=t.weight_decay)
    return model, optimizer, trainable, params


def _schedule(
    config: Config, prepared: Prepared, world: int, per_rank: int
) -> tuple[Schedule, list[tuple[str, list[int]]]]:
    """The run's schedule and the first epoch's micro-batches (whose count sets it)."""
    t = config.train
    first = micro_batches(prepared.examples["train"], t.micro_batch_size, t.seed, t.group_by_length)
    micro_per_epoch = len(first)
    total_micro = max(1, int(round(micro_per_epoch * t.epochs)))
    total_steps = math.ceil(total_micro / t.grad_accum)
    if t.max_steps:
        total_steps = min(total_steps, t.max_steps)
    steps_per_epoch = max(1, math.ceil(micro_per_epoch / t.grad_accum))
    eval_every = t.eval_every or steps_per_epoch
    schedule = Schedule(
        world,
        per_rank,
        passes_per_step(per_rank, t.micro_batches_per_pass),
        micro_per_epoch,
        total_micro,
        total_steps,
        eval_every,
        t.save_every or eval_every,
    )
    return schedule, first


def _open_session(session: Session, resume: bool) -> None:
    """The loop state (from ``checkpoint/`` when resuming), TensorBoard, the progress bar, and the loss
    module accelerate wraps (one forward call per micro-batch, so DDP/DeepSpeed see an ordinary module)."""
    s, t = session, session.config.train
    s.state = {"step": 0, "micro": 0, "best": None, "history": [], "losses": [], "threads": []}
    if resume and checkpoint_dir_exists(s.run.root):
        s.state.update(load_checkpoint(s.model, s.optimizer, s.run.checkpoint))
        log.info("resumed from %s at step %d", s.run.checkpoint, s.state["step"])
    s.seconds_before = float(s.state.get("seconds", 0.0))  # time spent before an interruption counts too
    rank = s.accelerator.process_index
    if s.schedule.world > 1 and rank > 0:
        # Every process was seeded alike, as the LoRA initialisation must be; the dropout masks must not be, or
        # each process would drop the same positions of its own micro-batches. Process 0 keeps the stream a
        # single process draws (and its checkpoint saves); the others draw their own from here.
        torch.manual_seed(process_seed(t.seed, rank, s.state["step"]))
    _record_threads(s, "start", torch.get_num_threads())
    if s.main:
        from torch.utils.tensorboard import SummaryWriter

        s.writer = SummaryWriter(str(s.run.tensorboard))
    # Gradient checkpointing (the k-bit recipe turns it on) drops caches in training, so there the shared
    # prefix is not used and every row runs in full.
    share_prefix = not any(getattr(mod, "gradient_checkpointing", False) for mod in s.model.modules())
    plugin = getattr(s.accelerator.state, "deepspeed_plugin", None)
    if plugin is not None:  # no DataLoader here for DeepSpeed to read the micro-batch size from
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = t.micro_batch_size
    s.loss_module, s.optimizer = s.accelerator.prepare(
        AnswerLoss(s.model, s.tokenizer.pad_token_id, share_prefix, packed=t.micro_batches_per_pass > 1),
        s.optimizer,
    )
    if s.schedule.world > 1:
        log.info(
            "%d processes: %d micro-batches of %d per process and step (global batch %d)",
            s.schedule.world,
            s.schedule.per_rank,
            t.micro_batch_size,
            t.batch_size,
        )
    s.model.train()
    s.tuner_layers = tuner_layers(s.model)
    s.bar = tqdm(
        total=s.schedule.total_steps,
        initial=s.state["step"],
        desc="training",
        disable=not (s.progress and s.main),
    )


def _batch_at(session: Session, micro_index: int) -> tuple[str, list[int]]:
    """The micro-batch ``(corpus, example positions)`` at a position of the whole run."""
    t = session.config.train
    epoch, pos = divmod(micro_index, session.schedule.micro_per_epoch)
    while len(session.epoch_batches) <= epoch:  # each epoch has its own order, reproducible from the seed
        seed = t.seed + len(session.epoch_batches)
        session.epoch_batches.append(
            micro_batches(session.prepared.examples["train"], t.micro_batch_size, seed, t.group_by_length)
        )
    return session.epoch_batches[epoch][pos]


def _optimizer_step(session: Session) -> tuple[float, float]:
    """One optimiser step over the step's micro-batches; returns (mean loss over all processes, lr)."""
    s, t, sch = session, session.config.train, session.schedule
    lr = t.lr * lr_factor(s.state["step"], sch.total_steps, t.warmup_steps, t.scheduler, t.min_lr_ratio)
    for group in s.optimizer.param_groups:
        group["lr"] = lr
    step_start = time.time()
    # The step's micro-batches (the same on every process); process r takes every world-th one. Each
    # process runs exactly per_rank micro-batches, so gradient synchronisation always lines up; in a short
    # last step a process without a micro-batch of its own repeats one with weight 0.
    first = s.state["micro"]
    global_ids = [first + i for i in range(t.grad_accum) if first + i < sch.total_micro] or [first]
    mine = global_ids[s.accelerator.process_index :: sch.world]
    weights = [sch.world * sch.per_rank / len(global_ids)] * len(mine) + [0.0] * (sch.per_rank - len(mine))
    mine = (mine + [global_ids[0]] * sch.per_rank)[: sch.per_rank]
    step_loss = torch.zeros(1, dtype=torch.float64)
    k = t.micro_batches_per_pass  # micro-batches per forward call (packed into one sequence when > 1)
    for at in range(0, sch.per_rank, k):
        chunk = list(zip(mine[at : at + k], weights[at : at + k], strict=True))
        # a weight-0 repeat (a short last step) only keeps the passes in line: one per pass at most
        chunk = [(m, w) for m, w in chunk if w] or chunk[:1]
        batches = []
        for micro_index, _ in chunk:
            name, idx = _batch_at(s, micro_index)
            items = [s.prepared.examples["train"][name][i] for i in idx]
            answers = [s.prepared.builders[name].answer_ids[e.label_id] for e in items]
            batches.append(([e.prompt_ids for e in items], answers))
        part = [w for _, w in chunk]
        with (
            s.accelerator.accumulate(s.loss_module),
            training_precision(s.model, s.precision, s.tuner_layers),
        ):
            loss, each, stats = s.loss_module(batches, part)
            # accelerate divides by its accumulation steps (the passes per step): the sum over the step's
            # micro-batches, each weighted, divided by per_rank, whatever the passes
            s.accelerator.backward(loss * (sch.passes / sch.per_rank))
        for loss_i, weight in zip(each, part, strict=True):
            if weight:
                step_loss += float(loss_i) / len(global_ids)
        if any(part):  # a pass of a weight-0 repeat alone is not counted
            s.counts[:3] += stats.double()
    if t.max_grad_norm:
        s.accelerator.clip_grad_norm_(s.trainable, t.max_grad_norm)
    s.optimizer.step()
    s.optimizer.zero_grad(set_to_none=True)
    s.counts[3] += time.time() - step_start
    s.state["micro"] += len(global_ids)
    reduced = float(reduce_sum(s.accelerator, step_loss)) if sch.world > 1 else float(step_loss)
    return reduced, lr


def _after_step(session: Session, step_loss: float, lr: float) -> None:
    """Log the step; evaluate on dev every ``eval_every`` steps (keeping the best adapter) and write the
    checkpoint every ``save_every`` steps, and after the last."""
    s = session
    s.state["step"] += 1
    step = s.state["step"]
    s.state["losses"].append({"step": step, "loss": step_loss, "lr": lr})
    if s.writer is not None:
        s.writer.add_scalar("train/loss", step_loss, step)
        s.writer.add_scalar("train/lr", lr, step)
    s.bar.update(1)
    s.bar.set_postfix(loss=f"{step_loss:.3f}")
    done = step >= s.schedule.total_steps
    evaluate = (step % s.schedule.eval_every == 0 or done) and s.main
    if step % THREAD_RECHECK_STEPS == 0 or evaluate:
        _recheck_threads(s, "dev evaluation" if evaluate else "training")
    if evaluate:
        _evaluate_dev(s)
    if (step % s.schedule.save_every == 0 or done) and s.main and not deepspeed_active(s.accelerator):
        s.state["seconds"] = s.seconds_before + time.time() - s.start
        save_checkpoint(s.model, s.optimizer, s.state, s.run.checkpoint)
    s.accelerator.wait_for_everyone()


def _recheck_threads(session: Session, stage: str) -> None:
    """With ``model.num_threads: 0``, take the thread count again from what other work leaves free now
    (``loading.set_threads``); the other processes of a distributed run keep theirs. Only a change is
    recorded (``metrics.json``'s ``threads``)."""
    if session.config.model.num_threads or session.schedule.world > 1:
        return
    _record_threads(session, stage, loading.set_threads(0))


def _record_threads(session: Session, stage: str, threads: int) -> None:
    """Append ``{step, stage, threads}`` to the run's thread record when the count differs from the last."""
    record = session.state.setdefault("threads", [])
    if not record or record[-1]["threads"] != threads:
        record.append({"step": session.state["step"], "stage": stage, "threads": threads})
        if record[:-1]:
            log.info("step %d (%s): %d torch threads", session.state["step"], stage, threads)


def _record_precision(session: Session) -> None:
    """Append ``{step, computed_in, why}`` to the run's precision record when it differs from the last: a run
    resumed on another machine may multiply in another dtype (``train.precision: auto``), which is warned
    about and kept in ``metrics.json``."""
    s = session
    record = s.state.setdefault("precision", [])
    if record and record[-1]["computed_in"] != s.precision:
        log.warning(
            "resumed at step %d on a machine that multiplies in %s (%s); the steps before were computed in %s",
            s.state["step"],
            s.precision,
            s.precision_reason,
            record[-1]["computed_in"],
        )
    if not record or record[-1]["computed_in"] != s.precision:
        record.append({"step": s.state["step"], "computed_in": s.precision, "why": s.precision_reason})


def _evaluate_dev(session: Session) -> None:
    """Dev metrics of the current weights; a new best is saved as the adapter with its dev predictions."""
    s = session
    dev = dev_metrics(s.model, s.tokenizer, s.prepared, s.config, s.progress)
    names = s.prepared.examples["dev"]
    entry = {
        "step": s.state["step"],
        "epoch": s.state["micro"] / s.schedule.micro_per_epoch,
        "dev_weighted_f1": dev["mean_weighted_f1"],
        **{f"dev_{n}_weighted_f1": dev[n]["weighted_f1"] for n in names},
        **{f"dev_{n}_accuracy": dev[n]["accuracy"] for n in names},
    }
    s.state["history"].append(entry)
    if s.config.train.keep_every_eval:  # every evaluated adapter, for the test-selection practice (pitfalls)
        save_adapter(s.model, s.run.kept_adapter(len(s.state["history"])))
    s.writer.add_scalar("dev/weighted_f1", dev["mean_weighted_f1"], s.state["step"])
    log.info("step %d: dev weighted F1 %.4f", s.state["step"], dev["mean_weighted_f1"])
    if s.state["best"] is None or dev["mean_weighted_f1"] > s.state["best"]["dev_weighted_f1"]:
        s.state["best"] = dict(entry)
        save_adapter(s.model, s.run.adapter)
        save_dev_selection(dev, s.prepared, s.config, s.run.adapter)


def _finish(
    session: Session,
    corpora: Mapping[str, Any],
    descriptions: Mapping[str, Mapping[str, str]] | None,
    env: Mapping[str, Any],
    params: Mapping[str, int],
    data_report: Mapping[str, Any],
) -> TrainResult:
    """Throughput, the dev calibration (main process), ``metrics.json``; the result."""
    s, config = session, session.config
    counts = reduce_sum(s.accelerator, s.counts) if s.schedule.world > 1 else s.counts
    throughput = throughput_report(counts, s.schedule.world)
    if throughput["tokens"]:
        log.info(
            "trained %d tokens (%.1f%% padding) at %.0f tokens/s",
            throughput["tokens"],
            100 * throughput["padding_waste"],
            throughput["tokens_per_second"],
        )
    s.bar.close()
    if s.writer is not None:
        s.writer.close()
    seconds = s.seconds_before + time.time() - s.start
    result = TrainResult(s.run.root, s.run.adapter, s.state["best"], s.state["history"], seconds)
    if not s.main:
        return result
    if config.eval.calibrate and s.state["best"] is not None and not calibration_reuses_selection(config):
        if not (s.run.adapter / "calibration.json").is_file():  # after a resume, the fit may already be there
            n = config.eval.calibration_per_dataset
            dev = prepare_split(config, s.tokenizer, corpora, "dev", n, descriptions)
            fit_calibration(s.model, s.tokenizer, dev, config, s.run.adapter, s.progress)
        result.seconds = seconds = s.seconds_before + time.time() - s.start
    metrics = {
        "best": s.state["best"],
        "history": s.state["history"],
        "losses": s.state["losses"],
        "train_examples": {n: len(v) for n, v in s.prepared.examples["train"].items()},
        "dev_examples": {n: len(v) for n, v in s.prepared.examples["dev"].items()},
        "cross_corpus_overlap_removed": _removed_counts(data_report),
        "description_coverage": data_report.get("description_coverage", {}),
        "steps": s.state["step"],
        "parameters": dict(params),
        "seconds": seconds,
        "throughput": throughput,
        "processes": s.schedule.world,
        # torch threads from each step on (model.num_threads 0: sampled again every THREAD_RECHECK_STEPS steps)
        "threads": s.state.get("threads", []),
        # what the steps multiplied in, and why (train.precision; auto decides by the CPU's bf16 units)
        "precision": {
            "train.precision": config.train.precision,
            "computed_in": s.precision,
            "why": s.precision_reason,
            "by_step": s.state.get("precision", []),  # more than one entry: resumed on another machine
        },
        "hardware": hardware_summary(env),
        "model": config.model.name,
    }
    write_json(s.run.metrics, metrics)
    if s.state["best"] is not None:  # the adapter folder's model card (README.md), from what was just written
        write_model_card(s.run.adapter, train_command=invocation())
    return result


def _removed_counts(data_report: Mapping[str, Any]) -> dict[str, int] | None:
    """Training utterances removed per corpus (None when the removal was off)."""
    removal = data_report.get("cross_corpus_overlap")
    return dict(removal["removed"]) if removal else None
