"""The sparse LoRA dropout (dialoguellm/model/dropout.py): nn.Dropout's distribution, values and gradient, drawn
from geometric gaps; and add_lora / load_adapter putting it in every LoRA layer without changing the adapter
files."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from torch import nn

from dialoguellm.model import dropout as sparse
from dialoguellm.model import loading

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def no_zeros(shape, dtype=torch.float32) -> torch.Tensor:
    """Values in [0.5, 1.5): a zero in the output is a dropped element, never a kept one."""
    return (torch.rand(shape) + 0.5).to(dtype)


def within(count: float, n: int, p: float, sds: float = 5.0) -> bool:
    """``count`` is within ``sds`` standard deviations (+1 for discreteness) of Binomial(n, p)'s mean."""
    return abs(count - n * p) <= sds * math.sqrt(n * p * (1 - p)) + 1


def scale_of(dtype: torch.dtype, p: float) -> torch.Tensor:
    """nn.Dropout's scale on CPU: 1 / (1 - p) computed in ``dtype`` (bf16: 1 / 0.95 -> 1.0546875)."""
    return torch.ones((), dtype=dtype).div_(1 - p)


# ---------------------------------------------------------------------------------- the distribution
@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(1, 96), min_size=1, max_size=3),
    p=st.floats(0.005, 0.995),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    seed=st.integers(0, 2**31 - 1),
)
def test_the_dropped_fraction_is_binomial(shape, p, dtype, seed):
    x = no_zeros(shape, dtype)
    torch.manual_seed(seed)
    out = sparse.sparse_dropout(x, p)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert within(int((out == 0).sum()), x.numel(), p)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.9])
def test_the_dropped_fraction_of_a_large_tensor(p):
    torch.manual_seed(0)
    x = no_zeros((1920, 576), torch.bfloat16)  # a LoRA input of the embedded model, micro-batch 16
    assert within(int((sparse.sparse_dropout(x, p) == 0).sum()), x.numel(), p)


@pytest.mark.parametrize("chunk", [None, 1, 3])
def test_positions_are_independent_with_probability_p_each(chunk):
    """Every index (the first and the last included) is dropped in a fraction p of the draws, adjacent pairs
    in p**2: an off-by-one in the first position or in the gaps would show. ``chunk`` 1 and 3 make the
    sampler draw more gaps after the last position, several times per call."""
    torch.manual_seed(1)
    n, p, draws = 7, 0.3, 4000
    hits = torch.zeros(n)
    pairs = torch.zeros(n - 1)
    for _ in range(draws):
        mask = torch.zeros(n)
        pos = sparse.dropped_positions(n, p, chunk=chunk)
        assert bool((pos[1:] > pos[:-1]).all()) and (len(pos) == 0 or 0 <= int(pos[0]) <= int(pos[-1]) < n)
        mask[pos] = 1
        hits += mask
        pairs += mask[:-1] * mask[1:]
    for count in hits.tolist():
        assert within(count, draws, p)
    for count in pairs.tolist():
        assert within(count, draws, p * p)


def test_both_halves_of_a_tensor_drop_alike():
    torch.manual_seed(2)
    n, p = 1_000_000, 0.05
    pos = sparse.dropped_positions(n, p)
    first, second = int((pos < n // 2).sum()), int((pos >= n // 2).sum())
    assert within(first, n // 2, p) and within(second, n // 2, p)
    assert abs(first - second) <= 5 * math.sqrt(2 * (n // 2) * p * (1 - p))


@pytest.mark.parametrize("p", [0.05, 0.3])
def test_gaps_are_geometric_from_one(p):
    """The gaps count trials to the first success (support 1, 2, ...), which the positions (first = gap - 1,
    next = previous + gap) rely on: P(gap = k) = (1 - p)**(k - 1) p, and the tail as torch's own
    ``geometric_`` draws it."""
    torch.manual_seed(3)
    gaps = sparse.geometric_gaps(200_000, p)
    reference = torch.empty(200_000, dtype=torch.float64).geometric_(p)
    assert float(gaps.min()) == 1.0 and bool((gaps == gaps.floor()).all())
    for k in (1, 2, 3, 10):
        assert within(int((gaps == k).sum()), gaps.numel(), (1 - p) ** (k - 1) * p)
    tail = int(math.log(0.01) / math.log(1 - p))  # P(gap > tail) is about 1%
    assert within(int((gaps > tail).sum()), gaps.numel(), (1 - p) ** tail)
    assert within(int((reference > tail).sum()), gaps.numel(), (1 - p) ** tail)


# ------------------------------------------------------------------------------- values and gradient
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.05, 0.1, 0.5, 0.9])
def test_kept_values_are_those_of_nn_dropout(dtype, p):
    torch.manual_seed(4)
    x = torch.randn(64, 576).to(dtype)
    x[x == 0] = 1.0  # a zero in the output is a dropped element
    before = x.clone()
    out = sparse.sparse_dropout(x, p)
    reference = nn.functional.dropout(x, p, training=True)
    kept, reference_kept = out != 0, reference != 0
    assert torch.equal(x, before)  # the input is never written
    assert torch.equal(out[kept], (x * scale_of(dtype, p))[kept])
    both = kept & reference_kept
    assert both.any() and torch.equal(out[both], reference[both])  # bit for bit, as nn.Dropout rounds
    assert bool((out[~kept] == 0).all()) and bool((x[~kept] != 0).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_gradient_is_the_mask_over_one_minus_p(dtype):
    torch.manual_seed(5)
    p = 0.2
    x = no_zeros((3, 40, 64), dtype).requires_grad_()
    out = sparse.sparse_dropout(x, p)
    (out.float() * 3).sum().backward()
    mask = (out != 0).to(dtype)
    assert 0 < float(mask.mean()) < 1
    assert torch.equal(x.grad, (mask * 3) * scale_of(dtype, p))


def test_a_non_contiguous_input():
    torch.manual_seed(6)
    x = no_zeros((300, 200)).t()
    assert not x.is_contiguous()
    out = sparse.sparse_dropout(x, 0.25)
    kept = out != 0
    assert out.shape == x.shape
    assert torch.equal(out[kept], (x * scale_of(torch.float32, 0.25))[kept])
    assert within(int((~kept).sum()), x.numel(), 0.25)


def test_identity_cases_all_zero_and_bad_probabilities():
    x = no_zeros((4, 5)).requires_grad_()
    assert sparse.sparse_dropout(x, 0.0) is x
    assert sparse.sparse_dropout(x, 0.3, training=False) is x
    module = sparse.SparseDropout(0.3)
    assert module(x) is not x  # training by default, as nn.Dropout
    assert module.eval()(x) is x
    assert sparse.SparseDropout(0.0)(x) is x
    zeros = sparse.sparse_dropout(x, 1.0)  # nn.Dropout allows p = 1: all dropped
    assert torch.equal(zeros, torch.zeros_like(x)) and torch.equal(nn.Dropout(1.0)(x), zeros)
    zeros.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="between 0 and 1"):
            sparse.SparseDropout(bad)
        with pytest.raises(ValueError, match="between 0 and 1"):
            sparse.sparse_dropout(x, bad)
    empty = torch.empty(0, 576, dtype=torch.bfloat16)
    assert sparse.sparse_dropout(empty, 0.05).shape == (0, 576)
    assert len(sparse.dropped_positions(0, 0.5)) == 0
    assert module.extra_repr() == "p=0.3" and not list(module.state_dict())


def test_a_seed_fixes_the_mask_and_a_restored_generator_state_repeats_it():
    x = no_zeros((16, 120, 64))
    torch.manual_seed(7)
    first = sparse.sparse_dropout(x, 0.05)
    torch.manual_seed(7)
    assert torch.equal(sparse.sparse_dropout(x, 0.05), first)
    state = torch.get_rng_state()  # what a checkpoint saves
    after = sparse.sparse_dropout(x, 0.05)
    assert not torch.equal(after, first)
    torch.set_rng_state(state)
    assert torch.equal(sparse.sparse_dropout(x, 0.05), after)
    generator = torch.Generator().manual_seed(7)
    assert torch.equal(sparse.sparse_dropout(x, 0.05, generator=generator), first)


def test_inputs_off_the_cpu_go_to_f_dropout(monkeypatch):
    """On a GPU, Bernoulli draws are cheap and the sparse sampler's loop would synchronise every layer."""
    x = torch.empty(4, 5, device="meta")
    assert sparse.sparse_dropout(x, 0.5).device.type == "meta"  # the function itself works anywhere

    def refuse(*args, **kwargs):
        raise AssertionError("sparse sampler called")

    monkeypatch.setattr(sparse, "sparse_dropout", refuse)
    assert sparse.SparseDropout(0.5)(x).shape == (4, 5)
    with pytest.raises(AssertionError, match="sparse sampler"):
        sparse.SparseDropout(0.5)(no_zeros((4, 5)))


# -------------------------------------------------------------------------------------- in the model
def lora_dropouts(model) -> list[nn.Module]:
    return [d for m in model.modules() if isinstance(getattr(m, "lora_dropout", None), nn.ModuleDict)
            for d in m.lora_dropout.values()]  # fmt: skip


def test_add_lora_uses_sparse_dropout_and_writes_the_same_adapter(tiny_model_dir, tmp_path, monkeypatch):
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "v_proj"]
    torch.manual_seed(0)
    model = loading.add_lora(loading.load_model(tiny_model_dir, dtype="fp32").model, 4, 16, 0.05, targets)
    dropouts = lora_dropouts(model)
    assert len(dropouts) == 4  # 2 layers x 2 targets
    assert all(type(d) is sparse.SparseDropout and d.p == 0.05 for d in dropouts)
    assert sparse.use_sparse_dropout(model) == 0  # idempotent: nothing left to replace

    config = LoraConfig(r=4, lora_alpha=16, lora_dropout=0.05, target_modules=targets, task_type="CAUSAL_LM")
    plain = get_peft_model(loading.load_model(tiny_model_dir, dtype="fp32").model, config)
    assert all(type(d) is nn.Dropout for d in lora_dropouts(plain))  # what peft builds, and what is replaced
    assert list(model.state_dict()) == list(plain.state_dict())

    # The adapter folder is that of add_lora without the replacement: same config, same tensors.
    monkeypatch.setattr(loading, "use_sparse_dropout", lambda m: 0)
    torch.manual_seed(0)
    before = loading.add_lora(loading.load_model(tiny_model_dir, dtype="fp32").model, 4, 16, 0.05, targets)
    assert all(type(d) is nn.Dropout for d in lora_dropouts(before))
    model.save_pretrained(tmp_path / "now")
    before.save_pretrained(tmp_path / "before")
    configs = [json.loads((tmp_path / f / "adapter_config.json").read_text()) for f in ("now", "before")]
    assert configs[0] == configs[1]
    weights = [load_file(tmp_path / f / "adapter_model.safetensors") for f in ("now", "before")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_no_dropout_keeps_peft_identity(tiny_model_dir):
    model = loading.add_lora(loading.load_model(tiny_model_dir, dtype="fp32").model, 4, 16, 0.0, ["q_proj"])
    dropouts = lora_dropouts(model)
    assert dropouts and all(type(d) is nn.Identity for d in dropouts)
    assert sparse.use_sparse_dropout(model) == 0


def test_training_forward_drops_and_eval_does_not(tiny_model_dir, tmp_path):
    model = loading.add_lora(loading.load_model(tiny_model_dir, dtype="fp32").model, 4, 16, 0.5, ["q_proj"])
    with torch.no_grad():  # a non-zero B, so that the dropout reaches the logits
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    model.eval()
    reference = model(input_ids=ids).logits
    torch.manual_seed(8)
    assert torch.equal(model(input_ids=ids).logits, reference)  # eval: no dropout
    model.train()
    torch.manual_seed(8)
    first = model(input_ids=ids).logits
    torch.manual_seed(8)
    assert torch.equal(model(input_ids=ids).logits, first)
    assert not torch.allclose(first, reference)

    model.save_pretrained(tmp_path / "adapter")
    resumed = loading.load_adapter(
        loading.load_model(tiny_model_dir, dtype="fp32").model, tmp_path / "adapter", trainable=True
    )
    assert all(type(d) is sparse.SparseDropout and d.p == 0.5 for d in lora_dropouts(resumed))
    resumed.train()
    torch.manual_seed(8)
    torch.testing.assert_close(resumed(input_ids=ids).logits, first)  # same weights, same seed, same mask
    frozen = loading.load_adapter(
        loading.load_model(tiny_model_dir, dtype="fp32").model, tmp_path / "adapter"
    )
    assert all(
        type(d) is nn.Dropout for d in lora_dropouts(frozen)
    )  # inference loads are left as peft has them
