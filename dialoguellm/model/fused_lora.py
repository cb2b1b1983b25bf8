"""A LoRA layer's training step as one autograd function: the frozen product, dropout, both LoRA products and
the scaling in one forward and one backward (CPU).

peft computes ``base(x) + lora_B(lora_A(dropout(x))) * scaling`` as separate modules, so autograd records
six operations per layer and its backward runs each one's gradient on its own: the scaling's multiply, the
sum's copy, the dropout's masked copy, a gradient for the input of each product and their sum. The embedded
model has 210 LoRA layers, so a CPU training step made some 10,000 such calls, most of them passes over memory
for little arithmetic (``benchmarks/results/train_profile_cpu.json``). ``LoraLinearFunction`` does the same
arithmetic with fewer, larger calls:

- forward: ``y = x W^T``, then ``y += scaling * (drop(x) A^T) B^T`` in one ``addmm_`` (the scaling is the
  product's ``alpha``, not a multiply of its own);
- backward: ``g_h = g B * scaling`` (rank columns), the weight gradients ``g^T h * scaling`` and ``g_h^T
  drop(x)``, and the input's gradient ``g W + mask(g_h A) / (1 - p)`` in one ``addmm``.

The dropout is ``dropout.SparseDropout``'s: the same positions drawn from the same generator in the same
order, so a layer drops what it would drop unfused, and the kept inputs are scaled by ``1 / (1 - p)`` rounded
to their dtype as ``nn.Dropout`` does. The products run in the layer's compute dtype (bf16 under the trainer's
autocast; the LoRA weights are cast to it per call, as autocast casts them); the gradients of ``A`` and ``B``
are returned in their own dtype (fp32). Only the rounding differs from peft's path: the LoRA update is added
to the frozen product inside one ``addmm_`` instead of after its own rounding
(``tests/model/test_fused_lora.py`` compares both in fp32 and in bf16).

``use_fused_lora(model)`` gives every eligible peft ``lora.Linear`` this forward for training; anything else
(evaluation, no gradient, a merged or disabled adapter, several adapters, DoRA and other variants, a bias, a
dropout other than ``SparseDropout``, a GPU) runs peft's own forward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dialoguellm.model.dropout import SparseDropout, _check_p, dropped_copy
from dialoguellm.model.forwards import install_forward, remove_forward


class LoraLinearFunction(torch.autograd.Function):
    """``x W^T + scaling * (dropout_p(x) A^T) B^T`` with a frozen ``W`` (no gradient), trainable ``A`` (r, in)
    and ``B`` (out, r); ``x`` (..., in). Products in ``x``'s dtype."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        lora_a: torch.Tensor,
        lora_b: torch.Tensor,
        scaling: float,
        p: float,
    ) -> torch.Tensor:
        dtype = x.dtype
        x2 = x.reshape(-1, x.shape[-1])
        a, b = lora_a.to(dtype), lora_b.to(dtype)
        y = x2 @ weight.t()
        if p > 0.0:  # sparse_dropout's draw, keeping its positions and scale for the backward
            dropped, positions, scale = dropped_copy(x2, p)
            dropped = dropped.view(x2.shape)
        else:
            scale, dropped, positions = None, x2, None
        h = dropped @ a.t()
        y.addmm_(h, b.t(), alpha=scaling)
        ctx.save_for_backward(weight, a, b, dropped, h, positions, scale)
        ctx.scaling, ctx.shapes = scaling, (x.shape, lora_a.dtype, lora_b.dtype)
        return y.view(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        weight, a, b, dropped, h, positions, scale = ctx.saved_tensors
        shape, a_dtype, b_dtype = ctx.shapes
        g = grad.reshape(-1, grad.shape[-1]).to(dropped.dtype)
        gh = g @ (b * ctx.scaling)  # (tokens, r)
        grad_b = (g.t() @ h).mul_(ctx.scaling).to(b_dtype)
        grad_a = (gh.t() @ dropped).to(a_dtype)
        grad_x = None
        if ctx.needs_input_grad[0]:
            through_lora = gh @ a
            if positions is not None:
                through_lora.mul_(scale).view(-1).index_fill_(0, positions, 0)
            grad_x = torch.addmm(through_lora, g, weight).view(shape)
        return grad_x, None, grad_a, grad_b, None, None


def _fused_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """A peft ``lora.Linear``'s forward: ``LoraLinearFunction`` where it applies, peft's otherwise."""
    adapters = [a for a in self.active_adapters if a in self.lora_A]
    if (
        args
        or kwargs
        or not (self.training and torch.is_grad_enabled())
        or self.disable_adapters
        or self.merged
        or len(adapters) != 1
        or adapters[0] in getattr(self, "lora_variant", {})
        or x.device.type != "cpu"
    ):
        return type(self).forward(self, x, *args, **kwargs)
    name = adapters[0]
    base, dropout = self.get_base_layer(), self.lora_dropout[name]
    if type(base) is not nn.Linear or base.bias is not None or base.weight.requires_grad:
        return type(self).forward(self, x, *args, **kwargs)
    if isinstance(dropout, SparseDropout):
        p = _check_p(dropout.p)
    elif isinstance(dropout, nn.Identity):
        p = 0.0
    else:
        return type(self).forward(self, x, *args, **kwargs)
    if p >= 1.0:
        return type(self).forward(self, x, *args, **kwargs)
    weight = base.weight
    if torch.is_autocast_enabled("cpu"):  # autocast's compute dtype for the products, as F.linear would
        dtype = torch.get_autocast_dtype("cpu")
        x, weight = x.to(dtype), weight.to(dtype)
    elif x.dtype != weight.dtype:
        x = x.to(weight.dtype)
    with torch.autocast("cpu", enabled=False):
        return LoraLinearFunction.apply(
            x, weight, self.lora_A[name].weight, self.lora_B[name].weight, float(self.scaling[name]), p
        )


def use_fused_lora(model: Any) -> int:
    """Give every peft ``lora.Linear`` in ``model`` the fused training forward (``LoraLinearFunction``);
    how many. Idempotent; the modules' parameters and saved files do not change."""
    from peft.tuners.lora.layer import Linear

    return install_forward(model, lambda module: type(module) is Linear, _fused_forward)


def use_peft_forward(model: Any) -> int:
    """Undo ``use_fused_lora``: every LoRA layer of ``model`` runs peft's own forward again; how many."""
    return remove_forward(model, _fused_forward)
