"""The GPU paths of training, checked on a CPU: what NCCL would refuse, where a process puts its model, the
CUDA random states of a checkpoint, and non-reentrant gradient checkpointing. (tests/training/test_distributed.py
runs two real processes over gloo, which accepts CPU tensors and so cannot see a wrong device.)"""

from __future__ import annotations

import json
import logging

import accelerate
import pytest
import torch
from ddp_worker import config, corpus

from dialoguellm.model import loading
from dialoguellm.training import checkpoints, loop


class MetaDeviceAccelerator(accelerate.Accelerator):
    """A real single-process Accelerator that reports a device other than the CPU (``meta``, as a GPU process
    would report ``cuda:N``) and whose reduce refuses tensors elsewhere, as NCCL does."""

    reduced: list[tuple[torch.device, tuple[int, ...]]] = []

    @property
    def device(self) -> torch.device:
        return torch.device("meta")

    def reduce(self, tensor, reduction="sum", scale=1.0):
        if tensor.device != self.device:
            raise RuntimeError(f"No backend type associated with device type {tensor.device.type}")
        type(self).reduced.append((tensor.device, tuple(tensor.shape)))
        # A meta tensor holds no values; the sum of two processes is not needed for this test.
        return torch.zeros(tensor.shape, dtype=tensor.dtype)


@pytest.mark.slow
def test_collectives_get_tensors_on_the_accelerator_device(tiny_model_dir, tmp_path, monkeypatch):
    """Training as one of two processes: every tensor handed to accelerator.reduce is on accelerator.device."""
    MetaDeviceAccelerator.reduced = []
    monkeypatch.setattr(accelerate, "Accelerator", MetaDeviceAccelerator)
    monkeypatch.setattr(loop, "distributed_world", lambda: 2)
    cfg = config(tiny_model_dir)
    result = loop.train(cfg, tmp_path / "run", corpus(), progress=False)
    steps = json.loads((result.run_dir / "metrics.json").read_text())["steps"]
    # one loss per step, then the throughput counts once
    assert MetaDeviceAccelerator.reduced.count((torch.device("meta"), (1,))) == steps
    assert MetaDeviceAccelerator.reduced[-1] == (torch.device("meta"), (4,))
    assert len(MetaDeviceAccelerator.reduced) == steps + 1


def test_reduce_sum_returns_the_sum_on_the_cpu():
    class Summing:  # two processes holding the same tensor
        device = torch.device("cpu")

        def reduce(self, tensor, reduction):
            assert reduction == "sum"
            return tensor * 2

    out = loop.reduce_sum(Summing(), torch.tensor([1.5, 2.0], dtype=torch.float64))
    assert out.device.type == "cpu" and out.tolist() == [3.0, 4.0]


# ------------------------------------------------------------------------------------------ placement
class FakeState:
    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self, cpu: bool = False):
        return self


def test_process_device_comes_from_accelerate_not_local_rank(monkeypatch):
    """With CUDA_VISIBLE_DEVICES giving each process one GPU, LOCAL_RANK=3 names a GPU that does not exist;
    accelerate's state (local rank modulo visible GPUs) says cuda:0, and that is what the model gets."""
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(accelerate, "PartialState", FakeState(torch.device("cuda", 0)))
    assert loading.process_device() == torch.device("cuda", 0)
    # a single process: accelerate says plain "cuda"; the index is the current device
    monkeypatch.setattr(accelerate, "PartialState", FakeState(torch.device("cuda")))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert loading.process_device() == torch.device("cuda", 0)


def test_process_device_on_a_cpu_machine():
    assert loading.process_device().type == "cpu"


def test_load_model_puts_the_model_on_the_process_device(tiny_model_dir, monkeypatch):
    """The GPU branch of load_model (no device_map) moves the model to process_device(), whatever LOCAL_RANK
    says (``meta`` stands in for the GPU)."""
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(loading, "process_device", lambda: torch.device("meta"))
    loaded = loading.load_model(tiny_model_dir, dtype="fp32")
    assert {p.device.type for p in loaded.model.parameters()} == {"meta"}


# ---------------------------------------------------------------------------------------- CUDA RNG
def _checkpoint_pair():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    return model, optimizer


class FakeCuda:
    """Two GPUs' random states, as torch.cuda exposes them, recorded when set."""

    def __init__(self, count: int = 2):
        self.count = count
        self.states = [torch.arange(16, dtype=torch.uint8) + i for i in range(count)]
        self.restored: list[torch.Tensor] | None = None

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: self.count)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in self.states])
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", self._set)

    def _set(self, states) -> None:
        self.restored = [s.clone() for s in states]


def test_checkpoint_saves_and_restores_cuda_random_states(tmp_path, monkeypatch):
    cuda = FakeCuda()
    cuda.install(monkeypatch)
    model, optimizer = _checkpoint_pair()
    checkpoints.save_checkpoint(model, optimizer, {"step": 1}, tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "state.json").read_text())["rng"]["cuda"]
    assert saved == [s.tolist() for s in cuda.states]

    fresh, fresh_opt = _checkpoint_pair()
    checkpoints.load_checkpoint(fresh, fresh_opt, tmp_path / "ckpt")
    assert cuda.restored is not None
    assert [s.tolist() for s in cuda.restored] == saved
    assert all(s.dtype == torch.uint8 for s in cuda.restored)


def test_checkpoint_with_other_gpu_count_restores_no_cuda_state(tmp_path, monkeypatch, caplog):
    FakeCuda(count=2).install(monkeypatch)
    model, optimizer = _checkpoint_pair()
    checkpoints.save_checkpoint(model, optimizer, {"step": 1}, tmp_path / "ckpt")
    one = FakeCuda(count=1)
    one.install(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="dialoguellm.train"):
        checkpoints.load_checkpoint(*_checkpoint_pair(), tmp_path / "ckpt")
    assert one.restored is None
    assert "2 GPUs but 1 are visible" in caplog.text


def test_cpu_checkpoint_without_cuda_states_still_loads(tmp_path, monkeypatch):
    """A checkpoint written on a CPU (or before CUDA states were saved) has no "cuda" entry and resumes."""
    model, optimizer = _checkpoint_pair()
    checkpoints.save_checkpoint(model, optimizer, {"step": 3}, tmp_path / "ckpt")
    assert "cuda" not in json.loads((tmp_path / "ckpt" / "state.json").read_text())["rng"]
    cuda = FakeCuda()
    cuda.install(monkeypatch)  # resumed on a GPU machine
    fresh, fresh_opt = _checkpoint_pair()
    state = checkpoints.load_checkpoint(fresh, fresh_opt, tmp_path / "ckpt")
    assert state["step"] == 3 and cuda.restored is None
    torch.testing.assert_close(fresh.weight, model.weight)


# ------------------------------------------------------------------------------ gradient checkpointing
def test_kbit_preparation_checkpoints_without_reentrancy(tiny_model_dir):
    """The k-bit recipe's gradient checkpointing is non-reentrant, and LoRA still gets gradients through it
    (the reentrant kind needs peft's input-grad hook for that)."""
    loaded = loading.load_model(tiny_model_dir, dtype="fp32")
    model = loaded.model
    model.is_loaded_in_4bit = True  # what bitsandbytes loading sets; peft then turns checkpointing on
    model = loading.prepare_for_kbit_training(model)
    layers = [m for m in model.modules() if getattr(m, "gradient_checkpointing", False)]
    assert layers, "no layer has gradient checkpointing on"
    for layer in layers:
        assert layer._gradient_checkpointing_func.keywords == {"use_reentrant": False}
    lora = loading.add_lora(model, 4, 8, 0.0, ["q_proj", "v_proj"])
    lora.train()
    ids = torch.tensor([[2, 5, 6, 7, 8, 9]])
    lora(input_ids=ids, labels=ids).loss.backward()
    grads = [p.grad for n, p in lora.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("quantization", ["8bit", "4bit"])
def test_kbit_loading_goes_through_the_non_reentrant_preparation(tiny_model_dir, monkeypatch, quantization):
    """load_model's k-bit branch calls prepare_for_kbit_training and places the model with a device_map from
    process_device() (bitsandbytes itself is faked: it needs a GPU)."""
    import transformers

    calls: dict[str, object] = {}
    monkeypatch.setattr(loading, "_check_quantization", lambda q: None)
    monkeypatch.setattr(loading, "process_device", lambda: torch.device("cuda", 0))
    monkeypatch.setenv("LOCAL_RANK", "5")
    real = transformers.AutoModelForCausalLM.from_pretrained

    def from_pretrained(folder, **kwargs):
        calls["device_map"] = kwargs.pop("device_map")
        kwargs.pop("quantization_config")
        return real(folder, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    monkeypatch.setattr(loading, "prepare_for_kbit_training", lambda m: calls.setdefault("prepared", m))
    loaded = loading.load_model(tiny_model_dir, dtype="fp32", quantization=quantization)
    assert calls["device_map"] == {"": 0}
    assert calls["prepared"] is not None and loaded.model is calls["prepared"]
