"""``model.attention: eager_fp32``: transformers' eager attention computed in fp32.

Eager attention (transformers' ``eager_attention_forward``) multiplies bf16 queries and keys into bf16 scores
and bf16 softmax weights into the bf16 values: scores and weights are rounded to 8 bits of mantissa, so its
training loss differs from SDPA's (docs/SPEED.md). ``fp32_score_attention`` runs the same products on fp32
copies of the queries, keys and values (autocast off), the mask and softmax in fp32, and rounds only its output
back to the values' dtype. Attention products are a small share of a step's FLOPs (about 6% on the embedded
model), so the fp32 copies cost little next to what the CPU's SDPA (flash) kernel spends in its backward.

``register()`` makes the name known to transformers (``AttentionInterface`` for the function,
``AttentionMaskInterface`` for the additive float masks eager attention takes); ``model.loading.load_model``
calls it. ``ADDITIVE_MASKS`` are the implementations that add their mask to the scores
(``scoring.engine.mask_for`` gives them 0 / the lowest float instead of booleans).
"""

from __future__ import annotations

from typing import Any

import torch

NAME = "eager_fp32"
ADDITIVE_MASKS = ("eager", NAME)


def fp32_score_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Transformers' attention-function signature: the (batch, length, heads, dim) output in the values'
    dtype, and the fp32 weights. Queries (batch, heads, q, dim), keys and values enter the products as fp32
    (autocast off: it would run them in bf16 again); ``attention_mask`` is added to the scores (additive
    floats, ``scoring.engine.mask_for``)."""
    from transformers.models.llama.modeling_llama import repeat_kv

    groups = getattr(module, "num_key_value_groups", 1)
    key_states = repeat_kv(key, groups).float()
    value_states = repeat_kv(value, groups).float()
    with torch.autocast(query.device.type, enabled=False):
        scores = torch.matmul(query.float(), key_states.transpose(2, 3)) * scaling
        if attention_mask is not None:
            scores = scores + attention_mask[:, :, :, : key_states.shape[-2]]
        weights = torch.nn.functional.softmax(scores, dim=-1)
        weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
        output = torch.matmul(weights, value_states)
    return output.to(value.dtype).transpose(1, 2).contiguous(), weights


def register() -> None:
    """Make ``eager_fp32`` a name transformers' ``attn_implementation`` accepts (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(NAME, fp32_score_attention)
    AttentionMaskInterface.register(NAME, eager_mask)
