"""The fused RMSNorm (dialoguellm/model/fused_norm.py): transformers' forward operation for operation, its
backward written out; what it does not cover runs transformers' own; and the trainer's precision context lists
peft's layers once (training.loss.tuner_layers)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from dialoguellm.model import fused_norm, loading
from dialoguellm.training import loss as training_loss

PROMPTS, ANSWERS = [[1, 5, 6, 7, 8, 11], [1, 5, 6, 9]], [[3, 2], [4, 2]]


def _norm(hidden: int, dtype: torch.dtype, seed: int = 0) -> LlamaRMSNorm:
    norm = LlamaRMSNorm(hidden, eps=1e-5).to(dtype)
    norm.weight.requires_grad_(False)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(hidden, generator=torch.Generator().manual_seed(seed)) * 0.3 + 1)
    return norm


def _forward_backward(norm, x, grad):
    x = x.detach().clone().requires_grad_(True)
    kept = x.detach().clone()
    out = norm(x)
    (out * grad).sum().backward()
    assert torch.equal(x.detach(), kept), "the input was changed"
    return out.detach(), x.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@settings(max_examples=10, deadline=None)
@given(tokens=st.integers(1, 40), hidden=st.sampled_from([8, 64, 576]), seed=st.integers(0, 1000))
def test_the_fused_norm_gives_transformers_output_and_gradient(dtype, tokens, hidden, seed):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(2, tokens, hidden, generator=gen) * 3).to(dtype)
    grad = torch.randn(2, tokens, hidden, generator=gen).to(dtype)
    norm = _norm(hidden, dtype, seed).train()
    out_t, grad_t = _forward_backward(norm, x, grad)
    assert fused_norm.use_fused_norms(norm) == 1
    out_f, grad_f = _forward_backward(norm, x, grad)
    assert norm.forward.__func__ is fused_norm._fused_forward
    assert torch.equal(out_f, out_t)  # the same operations in the same order
    # the gradient: written out in fp32, against autograd's in float64
    x64 = x.double().requires_grad_(True)
    x32 = x64.float().double()
    rs = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-5)
    ((norm.weight.double() * (x32 * rs)) * grad.double()).sum().backward()
    exact = x64.grad
    scale = exact.abs().max()
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert (grad_f.double() - exact).abs().max() <= tol * scale
    assert (grad_t.double() - exact).abs().max() <= tol * scale


def test_evaluation_no_grad_and_a_trainable_weight_run_transformers_forward(monkeypatch):
    calls = []
    monkeypatch.setattr(fused_norm.RMSNormFunction, "apply", lambda *a: calls.append(1))
    norm = _norm(16, torch.float32)
    fused_norm.use_fused_norms(norm)
    x = torch.randn(3, 16, requires_grad=True)
    norm.eval()
    assert norm(x).grad_fn is not None and not calls
    norm.train()
    with torch.no_grad():
        norm(x)
    norm.weight.requires_grad_(True)
    assert norm(x).grad_fn is not None and not calls
    norm.weight.requires_grad_(False)
    norm(x)
    assert calls == [1]
    assert fused_norm.use_transformers_norms(norm) == 1 and "forward" not in vars(norm)


def test_add_lora_fuses_every_norm_and_training_keeps_its_loss_and_gradients(tiny_model_dir):
    def loss_and_grads(fused: bool):
        loaded = loading.load_model(tiny_model_dir, dtype="fp32")
        assert not loaded.model.use_kernels  # no Hub kernels, which would reset the norms at each mode switch
        torch.manual_seed(0)
        model = loading.add_lora(loaded.model, 4, 8, 0.1, ["q_proj", "v_proj", "down_proj"])
        model.eval()
        model.train()
        layers = model.config.num_hidden_layers
        if fused:
            assert fused_norm.use_fused_norms(model) == 2 * layers + 1  # add_lora did it already
        else:
            assert fused_norm.use_transformers_norms(model) == 2 * layers + 1
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
        model.train()
        torch.manual_seed(3)
        with training_loss.training_precision(model, "fp32"):
            loss, _ = training_loss.answer_loss(model, PROMPTS, ANSWERS, loaded.tokenizer.pad_token_id)
            loss.backward()
        return float(loss.detach()), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    loss_f, grads_f = loss_and_grads(True)
    loss_t, grads_t = loss_and_grads(False)
    assert loss_f == loss_t
    for name, g in grads_t.items():
        assert g.abs().max() > 0, name
        assert (grads_f[name] - g).abs().max() <= 1e-5 * g.abs().max(), name


def test_training_precision_turns_peft_input_casting_off_on_the_listed_layers_and_back(tiny_model_dir):
    loaded = loading.load_model(tiny_model_dir, dtype="fp32")
    model = loading.add_lora(loaded.model, 4, 8, 0.0, ["q_proj", "v_proj"])
    layers = training_loss.tuner_layers(model)
    assert len(layers) == 2 * model.config.num_hidden_layers
    assert all(layer.cast_input_dtype_enabled for layer in layers)
    for given_layers in (None, layers):
        with training_loss.training_precision(model, "bf16", given_layers):
            assert not any(layer.cast_input_dtype_enabled for layer in layers)
            assert torch.is_autocast_enabled("cpu")
        assert all(layer.cast_input_dtype_enabled for layer in layers)
    with training_loss.training_precision(model, "fp32", layers):  # fp32: nothing to turn off
        assert all(layer.cast_input_dtype_enabled for layer in layers)
    with pytest.raises(RuntimeError), training_loss.training_precision(model, "bf16", layers):
        raise RuntimeError("an interrupted pass restores the switch too")
    assert all(layer.cast_input_dtype_enabled for layer in layers)
