"""``model.attention: eager_fp32``: transformers' eager attention computed in fp32.

Eager attention (transformers' ``eager_attention_forward``) multiplies bf16 queries and keys into bf16 scores
and bf16 softmax weights into the bf16 values: scores and weights are rounded to 8 bits of mantissa, so its
training loss differs from SDPA's (docs/SPEED.md). ``fp32_score_attention`` runs the same products on fp32
copies of the queries, keys and values (autocast off), the mask and softmax in fp32, and rounds only its output
back to the values' dtype. Attention products are a small share of a step's FLOPs (about 6% on the embedded
model), so the fp32 copies cost little next to what the CPU's SDPA (flash) kernel spends in its backward.

Grouped-query attention is computed in place: the query heads that share a key/value head are stacked into
one product with it (SmolLM2: 3 key/value heads for 9 query heads), instead of first copying every key/value
head once per query head (transformers' ``repeat_kv``). The products are the same; only fewer and larger.

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
    batch, heads, q_len, dim = query.shape
    kv_heads, k_len = key.shape[1], key.shape[2]
    groups = heads // kv_heads  # query heads per key/value head (transformers orders them group by group)
    with torch.autocast(query.device.type, enabled=False):
        stacked = query.float().reshape(batch, kv_heads, groups * q_len, dim)
        scores = torch.matmul(stacked, key.float().transpose(2, 3)) * scaling
        scores = scores.view(batch, kv_heads, groups, q_len, k_len)
        if attention_mask is not None:  # (batch, 1 or heads, q, k)
            mask = attention_mask[..., :k_len]
            mask = mask[:, :, None] if mask.shape[1] == 1 else mask.reshape(scores.shape)
            scores = scores + mask
        weights = torch.nn.functional.softmax(scores, dim=-1)
        weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
        output = torch.matmul(weights.view(batch, kv_heads, groups * q_len, k_len), value.float())
    output = output.view(batch, heads, q_len, dim).to(value.dtype).transpose(1, 2).contiguous()
    return output, weights.view(batch, heads, q_len, k_len)


def register() -> None:
    """Make ``eager_fp32`` a name transformers' ``attn_implementation`` accepts (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(NAME, fp32_score_attention)
    AttentionMaskInterface.register(NAME, eager_mask)
