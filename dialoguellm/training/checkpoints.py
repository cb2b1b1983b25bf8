"""Saving and restoring a training run: the selected adapter (safetensors), and a resumable checkpoint
(trainable weights, AdamW moments, loop state and random-number states; no pickle anywhere)."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from dialoguellm.config import Config
from dialoguellm.io import atomic_folder, read_json
from dialoguellm.runs import TrainingLayout

log = logging.getLogger(__name__)


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


def checkpoint_dir_exists(run: Path) -> bool:
    """Whether a training run folder holds a resumable checkpoint."""
    return (TrainingLayout(run).checkpoint / "state.json").is_file()


def check_same_config(config: Config, saved: Path) -> None:
    import yaml

    if not saved.is_file():
        return
    before = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
    now = config.to_dict()
    before.pop("source", None)
    now.pop("source", None)
    # a setting added to the package after the checkpoint was written counts as unchanged at its default
    defaults = Config().to_dict()
    changed = sorted(
        f"{section}.{key}"
        for section, values in now.items()
        for key, value in values.items()
        if before.get(section, {}).get(key, defaults[section][key]) != value
    )
    if changed:
        raise ValueError(
            f"Cannot resume {saved.parent}: its checkpoint was trained with other settings ({', '.join(changed)}). "
            "Use a fresh run folder, or the settings in its config.yaml."
        )
