"""The fused LoRA layer (dialoguellm/model/fused_lora.py): peft's LoRA forward and backward in one autograd
function, with the same dropout masks; only rounding differs, and everything it does not cover runs peft's."""

from __future__ import annotations

import pytest
import torch

from dialoguellm.model import fused_lora, loading
from dialoguellm.model.dropout import SparseDropout
from dialoguellm.training import loss as training_loss

PROMPTS, ANSWERS = [[1, 5, 6, 7, 8, 11], [1, 5, 6, 9]], [[3, 2], [4, 2]]


def _model(folder: str, dropout: float, fused: bool, dtype: str = "fp32"):
    loaded = loading.load_model(folder, dtype=dtype)
    torch.manual_seed(0)
    model = loading.add_lora(loaded.model, 4, 8, dropout, ["q_proj", "v_proj", "o_proj", "down_proj"])
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # a non-zero update, so the gradients reach A and the input as well
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    if not fused:  # add_lora fuses; peft's own forward back
        assert fused_lora.use_peft_forward(model) == 4 * model.config.num_hidden_layers
    return model.train(), loaded.tokenizer


def _loss_and_grads(model, tok, precision: str = "fp32", seed: int = 3):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the dropout positions
    with training_loss.training_precision(model, precision):
        loss, _ = training_loss.answer_loss(model, PROMPTS, ANSWERS, tok.pad_token_id)
        loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return float(loss.detach()), grads


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_the_fused_layer_gives_peft_s_loss_and_gradients_in_fp32(tiny_model_dir, dropout):
    fused, tok = _model(tiny_model_dir, dropout, fused=True)
    plain, _ = _model(tiny_model_dir, dropout, fused=False)
    assert fused_lora.use_fused_lora(fused) == 4 * fused.config.num_hidden_layers
    loss_f, grads_f = _loss_and_grads(fused, tok)
    loss_p, grads_p = _loss_and_grads(plain, tok)
    assert loss_f == pytest.approx(loss_p, rel=1e-6)
    for name, g in grads_p.items():
        assert g.abs().max() > 0, name
        assert (grads_f[name] - g).abs().max() <= 1e-5 * g.abs().max(), name
    if dropout:  # another draw moves the loss: the masks above were the same ones
        other, _ = _loss_and_grads(plain, tok, seed=4)
        assert abs(other - loss_p) > 1e-4


def test_the_fused_layer_in_bf16_autocast_is_as_close_to_fp32_as_peft_s(tiny_model_dir):
    """bf16 weights under the trainer's autocast, the same masks: both paths against the fp32 arithmetic on
    the same bf16 weights; the fused one rounds once where peft rounds the LoRA update on its own first."""
    reference, tok = _model(tiny_model_dir, 0.05, fused=False, dtype="bf16")
    with torch.no_grad():
        for p in reference.parameters():
            p.data = p.data.float()
    loss_r, grads_r = _loss_and_grads(reference, tok, "fp32")
    errors = {}
    for fused in (True, False):
        model, _ = _model(tiny_model_dir, 0.05, fused=fused, dtype="bf16")
        loss, grads = _loss_and_grads(model, tok, "bf16")
        assert all(g.dtype == torch.float32 for g in grads.values())  # the adapter's own dtype
        errors[fused] = (
            abs(loss - loss_r),
            max(float((grads[n] - g).norm() / g.norm()) for n, g in grads_r.items()),
        )
    assert errors[False][1] > 1e-3  # bf16 rounding is visible at all
    assert errors[True][0] <= 2 * errors[False][0] + 1e-3
    assert errors[True][1] <= 2 * errors[False][1], errors


def test_evaluation_and_no_grad_run_peft_s_own_forward(tiny_model_dir):
    fused, tok = _model(tiny_model_dir, 0.3, fused=True)
    plain, _ = _model(tiny_model_dir, 0.3, fused=False)
    ids = torch.tensor([PROMPTS[0]])
    for model in (fused, plain):
        model.eval()
    with torch.no_grad():
        assert torch.equal(fused(input_ids=ids).logits, plain(input_ids=ids).logits)
    for model in (fused, plain):
        model.train()
    with torch.no_grad():  # training mode without a gradient: peft's path, dropout included
        torch.manual_seed(5)
        a = fused(input_ids=ids).logits
        torch.manual_seed(5)
        b = plain(input_ids=ids).logits
    assert torch.equal(a, b)


def test_layers_it_does_not_cover_keep_peft_s_forward(tiny_model_dir):
    model, tok = _model(tiny_model_dir, 0.3, fused=True)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    layer.lora_dropout["default"] = torch.nn.Dropout(0.3)  # not the sparse sampler: peft's path
    x = torch.randn(2, 3, layer.in_features, requires_grad=True)
    torch.manual_seed(0)
    out = layer(x)
    torch.manual_seed(0)
    assert torch.equal(out, type(layer).forward(layer, x))
    assert isinstance(
        model.base_model.model.model.layers[1].self_attn.q_proj.lora_dropout["default"], SparseDropout
    )
