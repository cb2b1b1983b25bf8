"""The scoring engine: every pass of a language model over prompts goes through here.

Training's answer loss, label scoring, generation, calibration's dev scores, the ablation arms and the SECEU
test's option probabilities all call these functions, so there is one implementation of the cached,
batched forward pass (the lm-evaluation-harness split: the scorer apart from the tasks that use it).

Speed on CPUs comes from these, none of which changes a score:
- the tokens every prompt of a corpus shares (system message, instruction, demonstrations) are run once and
  their keys/values reused for every batch (``encode_prefix``);
- prompts are batched by length with left padding, so all end in the same column and each batch needs one
  forward pass over its distinct tokens;
- all candidate answers continue from the prompt's keys/values as branches of one pass
  (``forward_hidden``'s tails), so the prompt is read once, not once per answer;
- on CPUs, attention reads the shared key/value heads in place (``grouped_query_attention``);
  benchmarks/inference_weights.py measures it. Generation gets the same, so benchmarks/eval_speed.py compares
  like with like.

The arithmetic is fp32 (``inference_context``; ``eval.precision`` accepts only "fp32"): bf16 rounding made a
prediction depend on the other utterances of its batch, so the bf16 autocast option was removed, although
it scores about 3x faster on CPUs with bf16 matrix units (measured on dev in docs/PRECISION.md).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from dialoguellm.config import DEFAULT_PRECISION, EVAL_PRECISIONS
from dialoguellm.model.attention import ADDITIVE_MASKS, PackedBlock
from dialoguellm.model.attention import NAME as PACKED_ATTENTION
from dialoguellm.progress import progress_bar as tqdm


# ------------------------------------------------------------------------------------ forward machinery
def autocast_context(model: Any, dtype: str = "bf16") -> contextlib.AbstractContextManager:
    """Training's mixed-precision autocast for a 16-bit ``dtype`` (scoring computes in fp32): bf16 on CPU,
    bf16 or fp16 on GPU (k-bit models keep norms and embeddings in fp32 after
    ``prepare_model_for_kbit_training``; autocast keeps their matmuls in 16 bits, as the QLoRA recipe does).
    Nothing for fp32."""
    device = next(model.parameters()).device
    if dtype not in ("bf16", "fp16"):
        return contextlib.nullcontext()
    if device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return torch.autocast(device.type, dtype=torch.bfloat16 if dtype == "bf16" else torch.float16)


GQA_SWITCH = "TRANSFORMERS_SDPA_FORCE_GQA"


@contextlib.contextmanager
def grouped_query_attention(model: Any) -> Any:
    """While inside, transformers' SDPA attention reads the shared key/value heads in place (``enable_gqa``)
    on CPU instead of first copying them once per query head (``repeat_kv``; SmolLM2 has 3 key/value heads
    for 9 query heads). The same kernel does the same arithmetic: scores are bit-identical
    (tests/scoring/test_inference_weights.py). transformers turns this on only without a mask, because CUDA
    kernels fall back to a slow path with one; label scoring always passes a mask, so GPUs keep the default.
    The switch is transformers' own environment variable, restored on exit."""
    if next(model.parameters()).device.type != "cpu":
        yield model
        return
    before = os.environ.get(GQA_SWITCH)
    os.environ[GQA_SWITCH] = "1"
    try:
        yield model
    finally:
        if before is None:
            os.environ.pop(GQA_SWITCH, None)
        else:
            os.environ[GQA_SWITCH] = before


@contextlib.contextmanager
def fp32_parameters(model: Any) -> Any:
    """While inside, 16-bit floating parameters hold fp32 copies of their values, so the model computes in
    fp32 on the same (16-bit) weights.

    The copy replaces the parameter's data in place, so a tied input embedding and output projection stay
    tied and peft's wrappers see it; the original data comes back on exit, also after an error. Integer
    (k-bit) weights are left as they are. Costs an fp32 copy of the 16-bit weights in memory.
    """
    swapped: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for param in model.parameters():  # each tied parameter once
                if param.dtype in (torch.bfloat16, torch.float16):
                    swapped.append((param, param.data))
                    param.data = param.data.float()
        yield model
    finally:
        for param, data in swapped:
            param.data = data


@contextlib.contextmanager
def inference_context(model: Any, precision: str = DEFAULT_PRECISION) -> Any:
    """What label scoring and generation both run inside: no autograd, every weight computed in fp32 (16-bit
    weights upcast while inside, ``fp32_parameters``; k-bit layers as bitsandbytes computes them) and, on CPU,
    grouped key/value heads read in place (``grouped_query_attention``, which changes no score).

    ``precision`` is ``eval.precision``, which accepts only "fp32": bf16 autocast scoring was removed (slower
    than fp32 on CPU and batch-dependent, docs/PRECISION.md).
    """
    if precision not in EVAL_PRECISIONS:
        raise ValueError(
            f"eval.precision must be {', '.join(EVAL_PRECISIONS)}, not {precision!r} (autocast scoring was "
            "removed, docs/PRECISION.md)."
        )
    with fp32_parameters(model), torch.inference_mode(), grouped_query_attention(model):
        yield model


def model_dtype(model: Any) -> str:
    """``model.dtype``'s name for a loaded model: "bf16" or "fp16" when any floating weight is 16-bit, else
    "fp32" (for callers without a config, such as the SECEU test)."""
    dtypes = {p.dtype for p in model.parameters()}
    for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        if dtype in dtypes:
            return name
    return "fp32"


def common_prefix_length(sequences: Sequence[Sequence[int]], keep: int = 1) -> int:
    """Length of the token prefix all ``sequences`` share, leaving at least ``keep`` tokens of the shortest."""
    if not sequences:
        return 0
    first = sequences[0]
    limit = min(len(s) for s in sequences) - keep
    n = 0
    while n < limit and all(s[n] == first[n] for s in sequences):
        n += 1
    return max(n, 0)


def attention_mask_4d(key_valid: torch.Tensor, q_len: int) -> torch.Tensor:
    """Boolean (B, 1, Q, K) mask: the last ``q_len`` columns are queries; causal and padding-aware.

    Every query may see itself, so a padding row never has an empty softmax (no NaN that could leak).
    """
    b, k = key_valid.shape
    offset = k - q_len
    q_idx = torch.arange(q_len, device=key_valid.device)[:, None] + offset
    k_idx = torch.arange(k, device=key_valid.device)[None, :]
    allowed = key_valid[:, None, None, :] & (k_idx <= q_idx)[None, None]
    diag = torch.arange(q_len, device=key_valid.device)
    allowed[:, 0, diag, diag + offset] = True
    return allowed


def mask_for(model: Any, allowed: torch.Tensor) -> torch.Tensor:
    """``allowed`` (a boolean ``attention_mask_4d``) in the form ``model``'s attention takes it.

    SDPA takes a boolean mask as it is. Eager attention (and ``eager_fp32``, ``model.attention``) adds the
    mask to its scores, so it gets 0 where a query may look and the most negative float32 elsewhere (a boolean
    would be added as 1 and 0 and mask nothing).
    """
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", "sdpa") not in ADDITIVE_MASKS:
        return allowed
    lowest = torch.finfo(torch.float32).min
    return torch.zeros(allowed.shape, dtype=torch.float32, device=allowed.device).masked_fill_(
        ~allowed, lowest
    )


def decoder_parts(model: Any) -> tuple[Any, Any]:
    """The decoder stack (hidden states) and the output projection of a causal LM.

    Works through peft's PeftModel and DDP/accelerate wrappers: LoRA layers live inside the decoder, so
    calling it directly still applies them. Own code computes logits only at the positions it needs, as
    one 2-D matrix product (a sliced 3-D input makes torch copy the whole vocabulary matrix once per row when
    the weights are frozen: that alone halved label-scoring speed).
    """
    inner = model
    while isinstance(inner, torch.nn.parallel.DistributedDataParallel):
        inner = inner.module
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    return inner.get_decoder(), inner.get_output_embeddings()


def _new_cache(layers: Sequence[tuple[torch.Tensor, torch.Tensor]] | None, batch: int) -> Any:
    from transformers import DynamicCache

    if not layers:
        return DynamicCache()
    return DynamicCache([(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in layers])


def _cache_layers(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def encode_prefix(model: Any, prefix_ids: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Run a shared prefix once (batch of 1) and return its per-layer keys/values (None when empty)."""
    if not prefix_ids:
        return None
    from transformers import DynamicCache

    body, _ = decoder_parts(model)
    device = next(model.parameters()).device
    ids = torch.tensor([list(prefix_ids)], device=device)
    n = ids.shape[1]
    cache = DynamicCache()
    body(
        input_ids=ids,
        attention_mask=mask_for(
            body, attention_mask_4d(torch.ones(1, n, dtype=torch.bool, device=device), n)
        ),
        position_ids=torch.arange(n, device=device)[None],
        cache=cache,
        use_cache=True,
    )
    return _cache_layers(cache)


def _rows_after_prefix(
    suffixes: Sequence[Sequence[int]], prefix_len: int, pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows that continue a shared prefix of ``prefix_len`` tokens, left-padded to the longest so that all end
    in the last column: their ids (B, S), each token's position (its row's count after the prefix; pads
    take the prefix's length) and which keys a row may see (B, prefix_len + S: the prefix and its own tokens).
    ``forward_hidden`` and ``packed_hidden`` lay rows out this way."""
    b, s_max = len(suffixes), max(len(s) for s in suffixes)
    ids = torch.full((b, s_max), pad_id, dtype=torch.long, device=device)
    valid = torch.zeros((b, s_max), dtype=torch.bool, device=device)
    for i, seq in enumerate(suffixes):
        ids[i, s_max - len(seq) :] = torch.tensor(list(seq), dtype=torch.long, device=device)
        valid[i, s_max - len(seq) :] = True
    positions = (prefix_len + valid.long().cumsum(-1) - 1).clamp(min=prefix_len)
    key_valid = torch.cat([torch.ones((b, prefix_len), dtype=torch.bool, device=device), valid], dim=1)
    return ids, positions, key_valid


def forward_hidden(
    model: Any,
    prefix: list[tuple[torch.Tensor, torch.Tensor]] | None,
    prefix_len: int,
    suffixes: Sequence[Sequence[int]],
    pad_id: int,
    tails: Sequence[Sequence[int]] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states of left-padded ``suffixes`` after the shared prefix, plus optional ``tails``.

    Rows end in the same column (left padding). ``tails`` are token groups appended after every row's
    suffix as a tree: each group continues its row's suffix at the suffix's end position and attends to the
    prefix, the row's suffix and its own earlier tokens only, never to another group. So one pass scores
    every candidate answer of every prompt without copying any cache.
    Returns (hidden states (B, S + T, H), the number S of suffix columns).
    """
    body, _ = decoder_parts(model)
    device = next(model.parameters()).device
    b = len(suffixes)
    lengths = torch.tensor([len(s) for s in suffixes], device=device)
    ids, positions, key_valid = _rows_after_prefix(suffixes, prefix_len, pad_id, device)
    s_max = ids.shape[1]
    flat_tail = [t for group in tails for t in group]
    n_tail = len(flat_tail)
    if n_tail:
        ids = torch.cat([ids, torch.tensor(flat_tail, device=device).expand(b, n_tail)], dim=1)
        offsets = torch.tensor([k for group in tails for k in range(len(group))], device=device)
        positions = torch.cat([positions, (prefix_len + lengths)[:, None] + offsets[None]], dim=1)
        key_valid = torch.cat([key_valid, torch.ones((b, n_tail), dtype=torch.bool, device=device)], dim=1)
    q_len = s_max + n_tail
    mask = attention_mask_4d(key_valid, q_len)
    if n_tail:
        group = torch.tensor([g for g, t in enumerate(tails) for _ in t], device=device)
        start = prefix_len + s_max
        same = group[:, None] == group[None, :]
        mask[:, :, s_max:, start:] &= same[None, None]
    out = body(
        input_ids=ids,
        attention_mask=mask_for(body, mask),
        position_ids=positions,
        cache=_new_cache(prefix, b),
        use_cache=prefix is not None,
    )
    return out.last_hidden_state, s_max


def packed_hidden(
    model: Any, groups: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]], pad_id: int
) -> list[torch.Tensor]:
    """Hidden states of several groups ``(prefix ids, suffixes)`` in one forward pass; per group a
    (rows, width, H) tensor of its left-padded suffixes, as ``forward_hidden`` returns them after the group's
    prefix.

    The groups are packed into one sequence of batch 1 (``model.attention.PackedBlock``: each prefix, then
    its rows), so the linear layers run once over every token and attention keeps the groups apart. The same
    products as one ``encode_prefix`` + ``forward_hidden`` per group, in one pass instead of two per group:
    training's ``train.micro_batches_per_pass``. Needs ``model.attention: eager_fp32``.
    """
    body, _ = decoder_parts(model)
    if getattr(body.config, "_attn_implementation", None) != PACKED_ATTENTION:
        raise ValueError(
            f"a packed pass (train.micro_batches_per_pass > 1) needs model.attention: {PACKED_ATTENTION}, not "
            f"{getattr(body.config, '_attn_implementation', None)!r}; set model.attention: {PACKED_ATTENTION} "
            "or train.micro_batches_per_pass: 1."
        )
    device = next(model.parameters()).device
    ids: list[torch.Tensor] = []
    positions: list[torch.Tensor] = []
    blocks: list[PackedBlock] = []
    start = 0
    for prefix, suffixes in groups:
        p, r = len(prefix), len(suffixes)
        rows, row_positions, key_valid = _rows_after_prefix(suffixes, p, pad_id, device)
        width = rows.shape[1]
        ids += [torch.tensor(list(prefix), dtype=torch.long, device=device), rows.reshape(-1)]
        positions += [torch.arange(p, device=device), row_positions.reshape(-1)]
        prefix_mask = None
        if p:  # the additive masks eager_fp32 takes (mask_for)
            prefix_mask = mask_for(
                body, attention_mask_4d(torch.ones((1, p), dtype=torch.bool, device=device), p)
            )
        rows_mask = mask_for(body, attention_mask_4d(key_valid, width))
        blocks.append(PackedBlock(start, p, r, width, prefix_mask, rows_mask))
        start = blocks[-1].end
    out = body(
        input_ids=torch.cat(ids)[None],
        # a 4-D mask is taken as prepared, so transformers builds no (n x n) mask; attention reads ``packed``
        attention_mask=torch.zeros((1, 1, 1, 1), device=device),
        position_ids=torch.cat(positions)[None],
        use_cache=False,
        packed=blocks,
    )
    hidden = out.last_hidden_state[0]
    return [hidden[b.start + b.prefix_len : b.end].unflatten(0, (b.rows, b.width)) for b in blocks]


def score_answers(
    model: Any,
    prefix: list[tuple[torch.Tensor, torch.Tensor]] | None,
    prefix_len: int,
    suffixes: Sequence[Sequence[int]],
    answers: Sequence[Sequence[int]],
    pad_id: int,
) -> torch.Tensor:
    """Log-likelihood (B, L) of each full answer token sequence after each prompt (prefix + suffix).

    One forward pass: each answer's tokens but its last are appended to every row as a tree branch
    (``forward_hidden``); logits are computed only where an answer token is predicted.
    """
    tails = [list(a[:-1]) for a in answers]
    hidden, s_max = forward_hidden(model, prefix, prefix_len, suffixes, pad_id, tails)
    _, head = decoder_parts(model)
    b = len(suffixes)
    picked = hidden[:, s_max - 1 :]  # the last suffix column, then every tail column
    logp = torch.log_softmax(head(picked.reshape(-1, picked.shape[-1])).float(), dim=-1)
    logp = logp.view(b, picked.shape[1], -1)
    columns, targets, owner = [], [], []
    offset = 1
    for j, a in enumerate(answers):
        for k, token in enumerate(a):
            columns.append(0 if k == 0 else offset + k - 1)
            targets.append(token)
            owner.append(j)
        offset += len(a) - 1
    device = logp.device
    token_logp = logp[:, torch.tensor(columns, device=device), torch.tensor(targets, device=device)]
    scores = torch.zeros((b, len(answers)), dtype=token_logp.dtype, device=device)
    return scores.index_add_(1, torch.tensor(owner, device=device), token_logp)


def _batches(order: Sequence[int], size: int) -> list[list[int]]:
    return [list(order[i : i + size]) for i in range(0, len(order), size)]


@contextlib.contextmanager
def eval_mode(model: Any) -> Any:
    """While inside, ``model`` is in eval mode (no dropout); its training flag comes back on exit."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def score_examples(
    model: Any,
    examples: Sequence[Any],
    answers: Sequence[Sequence[int]],
    pad_id: int,
    batch_size: int = 16,
    dtype: str = "bf16",
    desc: str = "scoring",
    progress: bool = True,
    precision: str = DEFAULT_PRECISION,
    group_by_length: bool = True,
) -> np.ndarray:
    """Log-likelihood of every answer for every example (anything with ``prompt_ids``): array (N, L), in the
    order of ``examples``. The prompts' shared prefix runs once; batches hold prompts of similar length.

    ``precision`` is ``inference_context``'s (fp32 whatever the weights' ``dtype``, which changes nothing
    here); ``group_by_length`` off batches the examples in the order given (more padding;
    benchmarks/precision.py uses it to check that no score depends on its batch).
    """
    if not examples:
        return np.zeros((0, len(answers)))
    prompts = [e.prompt_ids for e in examples]
    p = common_prefix_length(prompts)
    order = list(range(len(prompts)))
    if group_by_length:
        order.sort(key=lambda i: len(prompts[i]))
    result = np.zeros((len(prompts), len(answers)), dtype=np.float64)
    with eval_mode(model), inference_context(model, precision):
        prefix = encode_prefix(model, prompts[0][:p])
        for batch in tqdm(_batches(order, batch_size), desc=desc, disable=not progress, leave=False):
            scores = score_answers(model, prefix, p, [prompts[i][p:] for i in batch], answers, pad_id)
            result[batch] = scores.double().cpu().numpy()
    return result


def score_options(
    model: Any,
    prompt_ids: Sequence[int],
    options: Sequence[Sequence[int]],
    pad_id: int,
    dtype: str = "fp32",
    precision: str = DEFAULT_PRECISION,
) -> np.ndarray:
    """Log-likelihood (summed over its tokens) of each of one prompt's own candidate continuations, shape
    (len(options),): the prompt runs once and every option continues it as a branch of ``score_answers``
    (the SECEU test's four options per item), computed in ``precision`` as label scoring is."""
    with eval_mode(model), inference_context(model, precision):
        scores = score_answers(model, None, 0, [list(prompt_ids)], options, pad_id)
    return scores[0].double().cpu().numpy()


def generate_texts(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    batch_size: int = 16,
    max_new_tokens: int = 8,
    dtype: str = "bf16",
    settings: Mapping[str, Any] | None = None,
    pad_id: int | None = None,
    stop_at_eos: bool = True,
    sort_by_length: bool = True,
    desc: str = "generating",
    progress: bool = True,
    precision: str = DEFAULT_PRECISION,
) -> list[str]:
    """The text ``model.generate`` continues each prompt (token ids) with, decoded without special tokens.

    Prompts are left-padded in batches (by length unless ``sort_by_length`` is off, which keeps the batches
    in the given order); ``settings`` go to ``generate`` (greedy by default). ``pad_id`` defaults to the
    tokenizer's; ``stop_at_eos`` passes the tokenizer's end-of-sequence token (else the model's generation
    config decides). ``precision`` as in label scoring (``inference_context``).
    """
    from dialoguellm.model.loading import contiguous_head_inputs

    contiguous_head_inputs(model)
    pad = tokenizer.pad_token_id if pad_id is None else pad_id
    stop = {"eos_token_id": tokenizer.eos_token_id} if stop_at_eos else {}
    settings = {"do_sample": False, **dict(settings or {})}
    device = next(model.parameters()).device
    texts: list[str] = [""] * len(prompts)
    order = (
        sorted(range(len(prompts)), key=lambda i: len(prompts[i])) if sort_by_length else range(len(prompts))
    )
    with eval_mode(model), inference_context(model, precision):
        for batch in tqdm(_batches(list(order), batch_size), desc=desc, disable=not progress, leave=False):
            seqs = [list(prompts[i]) for i in batch]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for r, seq in enumerate(seqs):
                ids[r, width - len(seq) :] = torch.tensor(seq)
                mask[r, width - len(seq) :] = 1
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                pad_token_id=pad,
                **stop,
                **settings,
            )
            for r, i in enumerate(batch):
                texts[i] = tokenizer.decode(out[r, width:], skip_special_tokens=True)
    return texts
