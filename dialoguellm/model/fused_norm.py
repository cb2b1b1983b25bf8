"""RMSNorm's training step as one autograd function: transformers' arithmetic, its backward written out (CPU).

transformers' ``LlamaRMSNorm`` computes ``weight * (x32 * rsqrt(mean(x32**2) + eps)).to(dtype)`` with
``x32 = x.float()``: eight operations, each recorded by autograd with its own backward (the square, the mean,
the reciprocal root and the two casts among them), over every token of a layer's input, twice per decoder
layer. With the norms replaced by a bare multiply, a CPU training step of the embedded model ran 7% faster (a
probe on the idle 2-core machine, 82 ms of 1.15 s): the norms are passes over memory, not arithmetic.
``RMSNormFunction`` does the same forward, operation for operation (the same result bit for bit), and its
backward in fewer passes:

    dx = rs * gn - x32 * (rs**3 * sum(gn * x32) / H),  gn = (g * weight).float()

where ``rs = rsqrt(mean(x32**2) + eps)`` (saved, one number per token) and H the hidden size: the gradient
of ``x32 * rs`` through both of its factors, in fp32, rounded once to the input's dtype.

``use_fused_norms(model)`` gives every ``LlamaRMSNorm``-like module (a ``weight`` and a
``variance_epsilon``, transformers' forward) this forward for training; evaluation, no-gradient passes, a
trainable norm weight and GPUs run transformers' own.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dialoguellm.model.forwards import install_forward, remove_forward


class RMSNormFunction(torch.autograd.Function):
    """``weight * (x32 * rsqrt(mean(x32**2, -1) + eps)).to(x.dtype)``, ``x32 = x.float()``, with a frozen
    ``weight`` (no gradient)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        x32 = x.to(torch.float32)
        rs = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
        out = weight * (x32 * rs).to(x.dtype)
        ctx.save_for_backward(x, weight, rs)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        x, weight, rs = ctx.saved_tensors
        gn = (grad * weight).to(torch.float32)
        x32 = x.to(torch.float32)
        coeff = (gn * x32).sum(-1, keepdim=True).mul_(rs.pow(3)).div_(x.shape[-1])
        grad_x = gn.mul_(rs).sub_(x32 * coeff)  # not in place on x32: for an fp32 input it is x itself
        return grad_x.to(x.dtype), None, None


def _fused_forward(self: Any, hidden_states: torch.Tensor) -> torch.Tensor:
    """An RMSNorm's forward: ``RMSNormFunction`` for a CPU training pass with a frozen weight, transformers'
    otherwise."""
    weight = self.weight
    if (
        not (self.training and torch.is_grad_enabled())
        or weight.requires_grad
        or hidden_states.device.type != "cpu"
        or not hidden_states.requires_grad
    ):
        return type(self).forward(self, hidden_states)
    return RMSNormFunction.apply(hidden_states, weight, float(self.variance_epsilon))


def _is_rms_norm(module: nn.Module) -> bool:
    return (
        type(module).__name__.endswith("RMSNorm")
        and hasattr(module, "variance_epsilon")
        and isinstance(getattr(module, "weight", None), nn.Parameter)
    )


def use_fused_norms(model: Any) -> int:
    """Give every RMSNorm of ``model`` (transformers' LLaMA-family ``*RMSNorm``) the fused training forward; how
    many. Idempotent; parameters and saved files do not change."""
    return install_forward(model, _is_rms_norm, _fused_forward)


def use_transformers_norms(model: Any) -> int:
    """Undo ``use_fused_norms``; how many."""
    return remove_forward(model, _fused_forward)
