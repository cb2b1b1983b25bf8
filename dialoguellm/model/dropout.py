"""LoRA dropout that draws random numbers for the dropped elements only.

peft applies ``nn.Dropout(p)`` to the input of every LoRA layer (210 layers in the embedded model). On CPU
``F.dropout`` draws one Bernoulli number per element (``aten::bernoulli_``), and that was a quarter of a
training step's CPU time at ``p = 0.05`` (24.5%, ``benchmarks/results/train_profile_cpu.json``): for the
(1920, 576) bf16 input of one layer, on one thread, the dropout takes about 4.5 ms where the base layer's
576 -> 1536 product takes about 7 ms, and the sparse sampler about 1 ms (``dialoguellm benchmark
lora_dropout`` times both samplers side by side).

``sparse_dropout`` draws the dropped positions instead: in i.i.d. Bernoulli(p) trials over the elements
0 .. n-1 (flattened), the gaps between successive successes are Geometric(p) on 1, 2, 3, ... and
independent, so the first dropped position is ``g1 - 1`` and each next one is the previous plus ``g``.
About ``p * n`` random numbers are drawn instead of ``n``. The kept values are scaled by ``1 / (1 - p)``
exactly as ``nn.Dropout`` does it on CPU (the scale rounded to the input's dtype, then one multiply in that
dtype), so the output has the same distribution as ``nn.Dropout``'s, with a different random stream: a run
with LoRA dropout draws other masks than it did with peft's own module, but a seed still fixes them (the
positions come from torch's default CPU generator, which checkpoints save and restore).

On other devices (CUDA) ``SparseDropout`` calls ``F.dropout``: there the Bernoulli draws are cheap and fused,
and the sparse sampler's data-dependent loop would synchronise the device once per layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# Gaps are drawn in float64: float32 uniforms would cut the gaps' tail (a gap past log(2**-24) / log(1 - p))
# and round gaps past 2**24 (possible only for a tiny p, but then the draw would no longer be exact).
_GAP_DTYPE = torch.float64


def _check_p(p: float) -> float:
    p = float(p)
    if not 0.0 <= p <= 1.0:  # nn.Dropout's range and message
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    return p


def dropped_positions(
    n: int, p: float, generator: torch.Generator | None = None, *, chunk: int | None = None
) -> torch.Tensor:
    """Sorted int64 positions in ``0 .. n-1``, each included independently with probability ``p``
    (``0 < p < 1``), drawn as Geometric(p) gaps: about ``p * n`` random numbers, not ``n``.

    Gaps are drawn ``chunk`` at a time, by default enough to pass ``n`` nearly always (the mean number of
    drops + 6 sd + 16); when they fall short, more are drawn after the last position (tests set a small
    ``chunk`` to take that path).
    """
    if n <= 0:
        return torch.empty(0, dtype=torch.long)
    m = chunk or int(n * p + 6.0 * (n * p * (1.0 - p)) ** 0.5 + 16)

    def gaps() -> torch.Tensor:
        # A uniform draw of exactly 0 gives an infinite gap (probability 2**-53): any gap past n means "no
        # further drop", and clamping keeps the int64 cast and cumsum defined.
        return geometric_gaps(m, p, generator).clamp_(max=n + 1).long()

    pos = torch.cumsum(gaps(), 0).sub_(1)  # int64: a float32 cumsum would lose integers past 2**24
    last = int(pos[-1])
    while last < n:  # rare: continue after the last position drawn
        more = torch.cumsum(gaps(), 0).add_(last)
        pos = torch.cat([pos, more])
        last = int(pos[-1])
    return pos[: int(torch.searchsorted(pos, n))]  # positions increase: those below n are a prefix


def geometric_gaps(m: int, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``m`` independent Geometric(p) draws on 1, 2, 3, ... (float64): ``floor(log(u) / log(1 - p)) + 1``
    for uniform ``u`` in [0, 1), since P(gap > k) = P(u < (1 - p)**k) = (1 - p)**k.

    The inverse-CDF transform, applied to a vector of uniforms (``torch.rand``, vectorised): 2.3x faster than
    torch's ``geometric_`` (one uniform per element, drawn one by one) for the 60,000 gaps of a LoRA layer's
    input on this project's CPU, the same distribution. ``u = 0`` gives an infinite gap.
    """
    u = torch.rand(m, dtype=_GAP_DTYPE, generator=generator)
    return u.log_().div_(math.log1p(-p)).floor_().add_(1.0)


def sparse_dropout(
    x: torch.Tensor, p: float, training: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``F.dropout(x, p, training)`` in distribution, drawing ~``p * x.numel()`` random numbers on CPU.

    ``p == 0`` or ``training=False`` return ``x`` itself; ``p == 1`` returns ``x * 0`` as ``F.dropout`` does.
    The result is a new tensor (``x`` is never written), contiguous, autograd-safe: the gradient is the
    output gradient times ``1 / (1 - p)`` at the kept elements and 0 at the dropped ones. A dropped element
    is set to 0 rather than multiplied by 0, so an inf or nan input gives 0 there (``F.dropout`` gives nan).
    """
    p = _check_p(p)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * torch.zeros((), dtype=x.dtype, device=x.device)
    flat, _, _ = dropped_copy(x, p, generator)
    return flat.view(x.shape)


def dropped_copy(
    x: torch.Tensor, p: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The dropout of ``x`` (``0 < p < 1``) as ``sparse_dropout`` and the fused LoRA layer draw it: (a new
    contiguous flat copy of ``x`` scaled by ``1 / (1 - p)`` with the dropped positions set to 0, those
    positions, the scale)."""
    # nn.Dropout on CPU: noise = bernoulli(1 - p) in x's dtype, noise.div_(1 - p), x * noise. Rounding the
    # scale to x's dtype first keeps the kept values bit-identical to it (bf16: 1 / 0.95 -> 1.0546875).
    scale = torch.ones((), dtype=x.dtype, device=x.device).div_(1.0 - p)
    flat = x.reshape(-1) * scale  # a new contiguous tensor whatever x's strides
    # The positions are drawn on the CPU generator whatever x's device (SparseDropout sends non-CPU inputs to
    # F.dropout instead).
    positions = dropped_positions(flat.numel(), p, generator).to(flat.device)
    if flat.numel():
        # In place on a fresh tensor that no backward needs (mul saves only the scale): IndexFillBackward
        # zeroes the same positions of the gradient.
        flat.index_fill_(0, positions, 0)
    return flat, positions, scale


class SparseDropout(nn.Module):
    """Drop-in for ``nn.Dropout(p)`` (no parameters, no buffers: a state dict without new keys); identity in
    eval mode and for ``p == 0``. CPU inputs go through ``sparse_dropout``, others through ``F.dropout``."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = _check_p(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, True)
        return sparse_dropout(x, self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def replace_lora_dropout(model: Any, old: type[nn.Module], new: Callable[[float], nn.Module]) -> int:
    """Replace every dropout of type ``old`` (exactly) in ``model``'s LoRA layers (peft's ``lora_dropout``
    ModuleDicts, one entry per adapter; ``nn.Identity`` where the dropout is 0) by ``new(p)``; how many."""
    replaced = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, nn.ModuleDict):
            continue
        for name, dropout in list(dropouts.items()):
            if type(dropout) is old:
                dropouts[name] = new(dropout.p)
                replaced += 1
    return replaced


def use_sparse_dropout(model: Any) -> int:
    """Replace every ``nn.Dropout`` in ``model``'s LoRA layers (``nn.Identity``, where the dropout is 0, stays
    as it is) by ``SparseDropout`` of the same p.

    Returns how many were replaced. Idempotent. The adapter's saved files do not change: dropout has no state.
    """
    return replace_lora_dropout(model, nn.Dropout, SparseDropout)
