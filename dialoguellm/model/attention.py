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

Packed passes (``PackedBlock``): training runs the micro-batches of an optimiser step in one forward pass,
each as a block of one sequence of batch 1: its shared prefix, then its left-padded rows of one width. The
linear layers see every token of the step in one product; attention is computed block by block (the prefix
causally over itself, each row over its prefix and its own earlier tokens), with the same products as
separate passes would run. ``scoring.engine.packed_hidden`` builds the blocks and passes them to the model as
the ``packed`` keyword, which transformers hands to the attention function unchanged.

``register()`` makes the name known to transformers (``AttentionInterface`` for the function,
``AttentionMaskInterface`` for the additive float masks eager attention takes); ``model.loading.load_model``
calls it. ``ADDITIVE_MASKS`` are the implementations that add their mask to the scores
(``scoring.engine.mask_for`` gives them 0 / the lowest float instead of booleans).
"""

from __future__ import annotations

from dataclasses import dataclass
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
    floats, ``scoring.engine.mask_for``). With ``packed`` (a list of ``PackedBlock``) the batch-1 sequence is
    computed block by block (``packed_attention``) and ``attention_mask`` is not read."""
    packed = kwargs.get("packed")
    if packed is not None:
        return packed_attention(module, query, key, value, packed, scaling, dropout), None
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


@dataclass(frozen=True)
class PackedBlock:
    """One block of a packed pass (batch 1): ``prefix_len`` shared tokens from position ``start`` of the
    sequence, then ``rows`` left-padded rows of ``width`` tokens each, row after row.

    ``prefix_mask`` (additive, (1, 1, prefix_len, prefix_len); None without a prefix) is causal;
    ``rows_mask`` (additive, (rows, 1, width, prefix_len + width)) lets each row see the whole prefix and its
    own earlier real tokens, as ``scoring.engine.forward_hidden`` masks a row after a cached prefix.
    """

    start: int
    prefix_len: int
    rows: int
    width: int
    prefix_mask: torch.Tensor | None
    rows_mask: torch.Tensor

    @property
    def end(self) -> int:
        return self.start + self.prefix_len + self.rows * self.width


def packed_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    blocks: list[PackedBlock],
    scaling: float,
    dropout: float = 0.0,
) -> torch.Tensor:
    """``fp32_score_attention`` over a packed sequence: (1, heads, n, dim) queries, keys and values whose
    tokens are the ``blocks`` in order; returns the (1, n, heads, dim) output.

    Each block's prefix attends causally to itself; its rows are viewed as a batch (no copy) and attend to
    the prefix's keys and values (broadcast to every row, as a cached prefix is) and to their own.
    """
    outputs = []
    for b in blocks:
        a, p, r, w = b.start, b.prefix_len, b.rows, b.width
        if p:
            pq, pk, pv = (t[:, :, a : a + p] for t in (query, key, value))
            out, _ = fp32_score_attention(module, pq, pk, pv, b.prefix_mask, scaling, dropout)
            outputs.append(out)
        s = a + p

        def rows_of(t: torch.Tensor, s: int = s, r: int = r, w: int = w) -> torch.Tensor:
            return t[0, :, s : s + r * w].unflatten(1, (r, w)).transpose(0, 1)  # (rows, heads, width, dim)

        rq, rk, rv = rows_of(query), rows_of(key), rows_of(value)
        if p:
            rk = torch.cat([pk.expand(r, -1, -1, -1), rk], dim=2)
            rv = torch.cat([pv.expand(r, -1, -1, -1), rv], dim=2)
        out, _ = fp32_score_attention(module, rq, rk, rv, b.rows_mask, scaling, dropout)
        outputs.append(out.reshape(1, r * w, *out.shape[2:]))
    return torch.cat(outputs, dim=1) if len(outputs) > 1 else outputs[0]


def register() -> None:
    """Make ``eager_fp32`` a name transformers' ``attn_implementation`` accepts (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(NAME, fp32_score_attention)
    AttentionMaskInterface.register(NAME, eager_mask)
