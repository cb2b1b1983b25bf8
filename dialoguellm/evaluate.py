"""Evaluation: label scoring (the default) and generate-and-parse (the paper's way, for comparison).

Label scoring reads the model's probability of every candidate answer: the log-likelihood of the label's
full token sequence (the word and the end-of-sequence token) after the prompt, or with ``eval.length_normalise``
its mean per token (how beam search ranks finished answers). The highest wins, so every prediction is a valid
label, and the normalised probabilities are saved with each prediction.

Speed on CPUs comes from three things, none of which changes a score:
- the tokens every prompt of a corpus shares (system message, instruction, demonstrations) are run once and
  their keys/values reused for every batch (``encode_prefix``);
- prompts are batched by length with left padding, so all end in the same column and each batch needs one
  forward pass over its distinct tokens;
- all candidate labels continue from the prompt's cached keys/values, so the prompt is read once, not once
  per label;
- on CPUs, frozen fp32 weights (the LoRA matrices beside a bf16 base) are cast to bf16 once per call, not
  once per matrix product (``bf16_weight_copies``), and attention reads the shared key/value heads in place
  (``grouped_query_attention``); benchmarks/inference_weights.py measures both side by side. Generation gets
  the same two, so benchmarks/eval_speed.py compares like with like.
The arithmetic is ``eval.precision`` (``inference_context``): fp32 by default, because bf16 rounding makes a
prediction depend on the other utterances of its batch (measured on dev in docs/PRECISION.md).
Generation mode decodes greedily and parses the text with the same PromptBuilder; text that names no label
is counted as wrong, never replaced by a random label (the released test script did that).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dialoguellm.config import DEFAULT_PRECISION, EVAL_PRECISIONS
from dialoguellm.metrics import classification_metrics, save_metrics  # noqa: F401 (re-exported)
from dialoguellm.progress import progress_bar as tqdm
from dialoguellm.prompts import PromptBuilder, PromptExample

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ forward machinery
def autocast_context(model: Any, dtype: str = "bf16") -> contextlib.AbstractContextManager:
    """Mixed-precision autocast for a 16-bit ``dtype``: bf16 on CPU (about 2x faster than fp32 on AVX-512
    machines), bf16 or fp16 on GPU (k-bit models keep norms and embeddings in fp32 after
    ``prepare_model_for_kbit_training``; autocast keeps their matmuls in 16 bits, as the QLoRA recipe does).
    Nothing for fp32."""
    device = next(model.parameters()).device
    if dtype not in ("bf16", "fp16"):
        return contextlib.nullcontext()
    if device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return torch.autocast(device.type, dtype=torch.bfloat16 if dtype == "bf16" else torch.float16)


@contextlib.contextmanager
def bf16_weight_copies(model: Any, dtype: str = "bf16", skip: Any = None) -> Any:
    """While inside, frozen fp32 ``nn.Linear`` weights are replaced by bf16 copies (CPU, bf16 only).

    CPU autocast casts a weight to bf16 at every call and keeps no cache for frozen weights (its cache holds
    only leaf tensors that require grad), so each scoring batch or generated token re-reads and re-writes
    them. On the embedded default these are the LoRA matrices, kept in fp32 beside the bf16 base (and, for a
    base loaded in fp32, every weight). A bf16 matmul sees the same bf16 values either way: scores are
    bit-identical (tests/test_inference_weights.py). The original parameters come back on exit, also after an
    error; a tied input embedding is never touched (only the output projection's reference to it is
    swapped). bitsandbytes layers (subclasses of ``nn.Linear``), trainable weights and other devices are left
    as they are, and so are modules ``skip(module)`` accepts. Costs a bf16 copy of the swapped weights in
    memory.
    """
    device = next(model.parameters()).device
    if dtype != "bf16" or device.type != "cpu":
        yield model
        return
    swapped: list[tuple[torch.nn.Module, torch.nn.Parameter]] = []
    copies: dict[int, torch.nn.Parameter] = {}
    try:
        for module in model.modules():
            if type(module) is not torch.nn.Linear or (skip is not None and skip(module)):
                continue
            weight = module.weight
            if weight.dtype != torch.float32 or weight.requires_grad:
                continue
            if id(weight) not in copies:
                copies[id(weight)] = torch.nn.Parameter(
                    weight.detach().to(torch.bfloat16), requires_grad=False
                )
            swapped.append((module, weight))
            module.weight = copies[id(weight)]
        yield model
    finally:
        for module, weight in swapped:
            module.weight = weight


GQA_SWITCH = "TRANSFORMERS_SDPA_FORCE_GQA"


@contextlib.contextmanager
def grouped_query_attention(model: Any) -> Any:
    """While inside, transformers' SDPA attention reads the shared key/value heads in place (``enable_gqa``)
    on CPU instead of first copying them once per query head (``repeat_kv``; SmolLM2 has 3 key/value heads
    for 9 query heads). The same kernel does the same arithmetic: scores are bit-identical
    (tests/test_inference_weights.py). transformers turns this on only without a mask, because CUDA kernels
    fall back to a slow path with one; label scoring always passes a mask, so GPUs keep the default.
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


# The precisions label scoring and generation can run in (``eval.precision``); docs/PRECISION.md measures them.
PRECISIONS = EVAL_PRECISIONS

# What benchmarks/precision.py measured for "autocast" (bf16 on CPU) against "fp32" compute, on the dev splits
# of MELD and EmoryNLP with an adapter of the CPU profile (benchmarks/results/precision_cpu.json; a test checks
# these numbers against that file). Printed whenever autocast scoring runs, so nobody takes its
# predictions for batch-invariant ones.
AUTOCAST_MEASURED = {
    "agreement_with_fp32": None,
    "agreement_across_batches": None,
    "source": "benchmarks/results/precision_cpu.json",
}
_AUTOCAST_NOTICE_SHOWN = False


def _autocast_notice(model: Any, dtype: str) -> None:
    """Say once per process what autocast scoring costs in agreement (only where it runs in 16 bits)."""
    global _AUTOCAST_NOTICE_SHOWN
    if _AUTOCAST_NOTICE_SHOWN or dtype not in ("bf16", "fp16"):
        return
    _AUTOCAST_NOTICE_SHOWN = True
    with_fp32 = AUTOCAST_MEASURED["agreement_with_fp32"]
    across = AUTOCAST_MEASURED["agreement_across_batches"]
    measured = (
        f"measured {100 * with_fp32:.1f}% of dev predictions equal to fp32 compute and "
        f"{100 * across:.1f}% equal across batch sizes and orders ({AUTOCAST_MEASURED['source']})"
        if with_fp32 is not None
        else f"not measured yet ({AUTOCAST_MEASURED['source']}: run benchmarks/precision.py)"
    )
    log.warning(
        "eval.precision=autocast: label scores in %s depend on which utterances share a batch; %s. "
        "eval.precision=fp32 (the default) gives predictions that do not depend on the batch.",
        dtype,
        measured,
    )


@contextlib.contextmanager
def fp32_parameters(model: Any, select: Any = None) -> Any:
    """While inside, 16-bit floating parameters (of the modules ``select(module)`` accepts; all when None)
    hold fp32 copies of their values, so the modules compute in fp32 on the same (16-bit) weights.

    The copy replaces the parameter's data in place, so a tied input embedding and output projection stay
    tied and peft's wrappers see it; the original data comes back on exit, also after an error. Integer
    (k-bit) weights are left as they are. Costs an fp32 copy of the selected weights in memory.
    """
    swapped: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
    seen: set[int] = set()
    try:
        with torch.no_grad():
            for module in model.modules():
                if select is not None and not select(module):
                    continue
                for param in module.parameters(recurse=False):
                    if id(param) in seen or param.dtype not in (torch.bfloat16, torch.float16):
                        continue
                    seen.add(id(param))
                    swapped.append((param, param.data))
                    param.data = param.data.float()
        yield model
    finally:
        for param, data in swapped:
            param.data = data


@contextlib.contextmanager
def half_linear_inputs(model: Any, skip: Any = None) -> Any:
    """While inside, every ``nn.Linear`` with 16-bit weights (but those ``skip(module)`` accepts) casts its
    input to its weights' type and returns its output as fp32: the matrix product runs in 16 bits, all that
    comes before and after it (residual stream, norms, rotary positions, attention, activations) in fp32.
    Linear layers with other weights (fp32, k-bit) get their input as it comes. Hooks removed on exit."""
    half = (torch.bfloat16, torch.float16)

    def cast_in(module: Any, args: tuple) -> tuple:
        weight = module.weight
        if weight.dtype in half and args and args[0].dtype != weight.dtype:
            return (args[0].to(weight.dtype), *args[1:])
        return args

    def cast_out(module: Any, args: tuple, output: Any) -> Any:
        return output.float() if torch.is_tensor(output) and output.dtype in half else output

    handles = []
    try:
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and not (skip is not None and skip(module)):
                handles.append(module.register_forward_pre_hook(cast_in))
                handles.append(module.register_forward_hook(cast_out))
        yield model
    finally:
        for handle in handles:
            handle.remove()


def _in_module(outer: Any) -> Any:
    """A predicate: is a module ``outer`` or inside it."""
    inside = {id(m) for m in outer.modules()}
    return lambda module: id(module) in inside


@contextlib.contextmanager
def inference_context(model: Any, dtype: str = "bf16", precision: str = DEFAULT_PRECISION) -> Any:
    """What label scoring and generation both run inside: no autograd and the arithmetic ``precision`` names.

    - ``"fp32"``: every weight computed in fp32 (16-bit weights upcast while inside), no autocast: the
      reference the other two are measured against.
    - ``"mixed"``: the decoder's linear layers multiply 16-bit inputs by 16-bit weights (``half_linear_inputs``;
      on CPU fp32 LoRA matrices get ``bf16_weight_copies``) and return fp32; everything else (embeddings,
      the residual stream, norms, rotary positions, attention, activations, the output projection) runs in
      fp32 on the same weights.
    - ``"autocast"``: ``dtype``'s autocast throughout, as training computes: the residual stream of a 16-bit
      model stays 16-bit, so scores move with the batch (its measured agreement is logged).
    On CPU all three read grouped key/value heads in place (``grouped_query_attention``), which changes no
    score.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"eval.precision must be one of {', '.join(PRECISIONS)}, not {precision!r}.")
    if precision == "fp32":
        contexts = [fp32_parameters(model), torch.inference_mode()]
    elif precision == "mixed":
        in_head = _in_module(decoder_parts(model)[1])
        contexts = [  # fp32: everything but the decoder's linear layers (the matrix products)
            bf16_weight_copies(model, dtype, skip=in_head),
            fp32_parameters(model, lambda m: in_head(m) or not isinstance(m, torch.nn.Linear)),
            half_linear_inputs(model, skip=in_head),
            torch.inference_mode(),
        ]
    else:
        _autocast_notice(model, dtype)
        contexts = [torch.inference_mode(), autocast_context(model, dtype), bf16_weight_copies(model, dtype)]
    with contextlib.ExitStack() as stack:
        for context in [*contexts, grouped_query_attention(model)]:
            stack.enter_context(context)
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
        attention_mask=attention_mask_4d(torch.ones(1, n, dtype=torch.bool, device=device), n),
        position_ids=torch.arange(n, device=device)[None],
        cache=cache,
        use_cache=True,
    )
    return _cache_layers(cache)


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
    s_max = int(lengths.max())
    flat_tail = [t for group in tails for t in group]
    n_tail = len(flat_tail)
    ids = torch.full((b, s_max + n_tail), pad_id, dtype=torch.long, device=device)
    valid = torch.zeros((b, s_max), dtype=torch.bool, device=device)
    for i, seq in enumerate(suffixes):
        ids[i, s_max - len(seq) : s_max] = torch.tensor(list(seq), device=device)
        valid[i, s_max - len(seq) :] = True
    positions = (prefix_len + valid.long().cumsum(-1) - 1).clamp(min=prefix_len)
    key_valid = torch.cat([torch.ones((b, prefix_len), dtype=torch.bool, device=device), valid], dim=1)
    if n_tail:
        ids[:, s_max:] = torch.tensor(flat_tail, device=device)
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
        attention_mask=mask,
        position_ids=positions,
        cache=_new_cache(prefix, b),
        use_cache=prefix is not None,
    )
    return out.last_hidden_state, s_max


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


def score_examples(
    model: Any,
    examples: Sequence[PromptExample],
    answers: Sequence[Sequence[int]],
    pad_id: int,
    batch_size: int = 16,
    dtype: str = "bf16",
    desc: str = "scoring",
    progress: bool = True,
    precision: str = DEFAULT_PRECISION,
    group_by_length: bool = True,
) -> np.ndarray:
    """Log-likelihood of every answer for every example: array (N, L), in the order of ``examples``.

    ``precision`` is ``inference_context``'s; ``group_by_length`` off batches the examples in the order
    given (more padding; benchmarks/precision.py uses it to check that no score depends on its batch).
    """
    if not examples:
        return np.zeros((0, len(answers)))
    prompts = [e.prompt_ids for e in examples]
    p = common_prefix_length(prompts)
    order = list(range(len(prompts)))
    if group_by_length:
        order.sort(key=lambda i: len(prompts[i]))
    result = np.zeros((len(prompts), len(answers)), dtype=np.float64)
    was_training = model.training
    model.eval()
    try:
        with inference_context(model, dtype, precision):
            prefix = encode_prefix(model, prompts[0][:p])
            for batch in tqdm(_batches(order, batch_size), desc=desc, disable=not progress, leave=False):
                scores = score_answers(model, prefix, p, [prompts[i][p:] for i in batch], answers, pad_id)
                result[batch] = scores.double().cpu().numpy()
    finally:
        model.train(was_training)
    return result


def length_normalised(loglik: np.ndarray, answers: Sequence[Sequence[int]]) -> np.ndarray:
    """Label log-likelihoods (N, L) divided by each answer's token count: the mean log-probability per token,
    the score beam search (length penalty 1.0) ranks finished answers by. Without it, a label of two tokens
    ("neutral" + end) starts ahead of one of four ("sad", "ness", ...) for no reason of meaning."""
    lengths = np.array([len(a) for a in answers], dtype=float)
    if (lengths <= 0).any():
        raise ValueError("Every answer needs at least one token to be length-normalised.")
    return loglik / lengths


def probabilities(loglik: np.ndarray) -> np.ndarray:
    """Normalise label log-likelihoods into probabilities over the candidate labels (rows sum to 1)."""
    shifted = loglik - loglik.max(axis=1, keepdims=True)
    expd = np.exp(shifted)
    return expd / expd.sum(axis=1, keepdims=True)


def predict_by_scoring(
    model: Any,
    tokenizer: Any,
    builder: PromptBuilder,
    examples: Sequence[PromptExample],
    batch_size: int = 16,
    dtype: str = "bf16",
    progress: bool = True,
    length_normalise: bool = False,
    precision: str = DEFAULT_PRECISION,
) -> pd.DataFrame:
    """Label-scoring predictions: one row per example with gold, prediction and per-label probabilities.

    ``ll_<label>`` holds the score each label was ranked by: its log-likelihood, or with ``length_normalise``
    that divided by its token count (``length_normalised``); ``p_<label>`` is the softmax of those scores.
    """
    loglik = score_examples(
        model,
        examples,
        builder.answer_ids,
        tokenizer.pad_token_id,
        batch_size,
        dtype,
        desc=f"{builder.dataset}: scoring",
        progress=progress,
        precision=precision,
    )
    if length_normalise:
        loglik = length_normalised(loglik, builder.answer_ids)
    probs = probabilities(loglik) if len(examples) else loglik
    pred = loglik.argmax(axis=1) if len(examples) else np.zeros(0, dtype=int)
    frame = pd.DataFrame(
        {
            "example_id": [e.example_id for e in examples],
            "dataset": builder.dataset,
            "gold_id": [e.label_id for e in examples],
            "pred_id": pred.astype(int),
            "gold": [builder.labels[e.label_id] for e in examples],
            "pred": [builder.labels[i] for i in pred],
            "parsed": True,
        }
    )
    for j, label in enumerate(builder.labels):
        frame[f"p_{label}"] = probs[:, j] if len(examples) else []
    for j, label in enumerate(builder.labels):
        frame[f"ll_{label}"] = loglik[:, j] if len(examples) else []
    return frame


def loglik_matrix(predictions: pd.DataFrame, labels: Sequence[str]) -> np.ndarray:
    """The (N, L) label log-likelihoods stored in a label-scoring prediction frame."""
    return predictions[[f"ll_{label}" for label in labels]].to_numpy(dtype=float)


def fit_label_bias(
    loglik: np.ndarray, gold: Sequence[int], labels: Sequence[str], rounds: int = 3, span: float = 4.0
) -> np.ndarray:
    """One additive bias per label maximising weighted F1 of ``argmax(loglik + bias)`` on these (dev) rows.

    Coordinate ascent over a grid; the first label's bias stays 0 (only differences matter). Fit on dev,
    applied unchanged to test: a prior correction, never tuned on the test split.
    """
    gold = np.asarray(gold, dtype=int)
    bias = np.zeros(loglik.shape[1])
    grid = np.linspace(-span, span, 81)

    def score(b: np.ndarray) -> float:
        return classification_metrics(gold, (loglik + b).argmax(axis=1), labels)["weighted_f1"]

    best = score(bias)
    for _ in range(rounds):
        improved = False
        for j in range(1, loglik.shape[1]):
            for value in grid:
                trial = bias.copy()
                trial[j] = value
                got = score(trial)
                if got > best + 1e-9:
                    best, bias, improved = got, trial, True
        if not improved:
            break
    return bias


def apply_label_bias(predictions: pd.DataFrame, labels: Sequence[str], bias: Sequence[float]) -> pd.DataFrame:
    """Predictions after adding ``bias`` to the log-likelihoods (the raw prediction kept as pred_id_raw)."""
    out = predictions.copy()
    adjusted = loglik_matrix(out, labels) + np.asarray(bias, dtype=float)
    out["pred_id_raw"] = out["pred_id"]
    out["pred_id"] = adjusted.argmax(axis=1)
    out["pred"] = [labels[i] for i in out["pred_id"]]
    probs = probabilities(adjusted)
    for j, label in enumerate(labels):
        out[f"p_{label}"] = probs[:, j]
    return out


# The paper's generation settings (its test script): 4 beams, repetition penalty 1.15. It also sets
# temperature 0.7 and top-p 0.95, which only act when sampling; the script does not sample, so neither do we
# (and sampling would make a prediction a draw).
PAPER_GENERATION: dict[str, Any] = {"num_beams": 4, "repetition_penalty": 1.15, "do_sample": False}


def predict_by_generation(
    model: Any,
    tokenizer: Any,
    builder: PromptBuilder,
    examples: Sequence[PromptExample],
    batch_size: int = 16,
    max_new_tokens: int = 8,
    dtype: str = "bf16",
    progress: bool = True,
    generation: Mapping[str, Any] | None = None,
    precision: str = DEFAULT_PRECISION,
) -> pd.DataFrame:
    """Generation then parsing; unparsed outputs get ``pred_id = -1`` and count as wrong.

    Greedy by default; ``generation`` passes other settings to ``model.generate`` (``PAPER_GENERATION``: the
    released test script's beam search). ``precision`` as in label scoring (``inference_context``).
    """
    from dialoguellm.modeling import contiguous_head_inputs

    contiguous_head_inputs(model)
    settings = {"do_sample": False, **dict(generation or {})}
    device = next(model.parameters()).device
    texts: list[str] = [""] * len(examples)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].prompt_ids))
    was_training = model.training
    model.eval()
    try:
        with inference_context(model, dtype, precision):
            for batch in tqdm(
                _batches(order, batch_size),
                desc=f"{builder.dataset}: generating",
                disable=not progress,
                leave=False,
            ):
                seqs = [examples[i].prompt_ids for i in batch]
                width = max(len(s) for s in seqs)
                ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
                mask = torch.zeros((len(seqs), width), dtype=torch.long)
                for r, s in enumerate(seqs):
                    ids[r, width - len(s) :] = torch.tensor(s)
                    mask[r, width - len(s) :] = 1
                out = model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    max_new_tokens=max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                    **settings,
                )
                for r, i in enumerate(batch):
                    texts[i] = tokenizer.decode(out[r, width:], skip_special_tokens=True)
    finally:
        model.train(was_training)
    parsed = [builder.parse(t) for t in texts]
    return pd.DataFrame(
        {
            "example_id": [e.example_id for e in examples],
            "dataset": builder.dataset,
            "gold_id": [e.label_id for e in examples],
            "pred_id": [-1 if p is None else p for p in parsed],
            "gold": [builder.labels[e.label_id] for e in examples],
            "pred": ["" if p is None else builder.labels[p] for p in parsed],
            "parsed": [p is not None for p in parsed],
            "output": texts,
        }
    )


def predict(
    model: Any,
    tokenizer: Any,
    builder: PromptBuilder,
    examples: Sequence[PromptExample],
    mode: str = "score",
    batch_size: int = 16,
    max_new_tokens: int = 8,
    dtype: str = "bf16",
    progress: bool = True,
    length_normalise: bool = False,
    precision: str = DEFAULT_PRECISION,
) -> pd.DataFrame:
    """Predictions in ``mode`` "score" (label scoring) or "generate" (greedy text, then parse), computed in
    ``precision`` (``inference_context``)."""
    if mode == "score":
        return predict_by_scoring(
            model, tokenizer, builder, examples, batch_size, dtype, progress, length_normalise, precision
        )
    if mode == "generate":
        return predict_by_generation(
            model, tokenizer, builder, examples, batch_size, max_new_tokens, dtype, progress,
            precision=precision,
        )  # fmt: skip
    raise ValueError(f"eval.mode must be score or generate, not {mode!r}.")


def metrics_of(predictions: pd.DataFrame, labels: Sequence[str]) -> dict[str, Any]:
    """Metrics of a prediction frame (unparsed rows, pred_id -1, count as wrong)."""
    result = classification_metrics(
        predictions["gold_id"].to_numpy(), predictions["pred_id"].to_numpy(), labels
    )
    result["unparsed"] = int((~predictions["parsed"].astype(bool)).sum())
    return result


def save_predictions(
    predictions: pd.DataFrame, metrics: Mapping[str, Any], folder: str | os.PathLike, name: str
) -> dict[str, Path]:
    """Write ``<name>_predictions.csv`` and ``<name>_metrics.json`` (+ per-class CSV) atomically."""
    from dialoguellm.io import atomic_path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / f"{name}_predictions.csv"
    with atomic_path(csv_path) as tmp:
        predictions.to_csv(tmp, index=False)
    paths = save_metrics(metrics, folder, name)
    paths["predictions"] = csv_path
    return paths


def nan_safe(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


# --------------------------------------------------------------------------------------------- runs
def load_calibration(adapter_dir: str | os.PathLike, config: Any) -> dict[str, list[float]]:
    """The per-label biases training fitted on dev (``<adapter>/calibration.json``), when ``eval.calibrate``
    is on and the file exists; else {}.

    The biases only fit scores on the scale they were fitted on, so evaluating with another
    ``eval.length_normalise`` than the training run (its ``config.yaml`` beside the adapter) is refused.
    """
    from dialoguellm.io import read_json

    folder = Path(adapter_dir)
    path = folder / "calibration.json"
    if not config.eval.calibrate:
        return {}
    if not path.is_file():
        log.warning(
            "eval.calibrate is on but %s has no calibration.json (trained without eval.calibrate, or "
            "training stopped before fitting it: resume it); reporting uncalibrated predictions.",
            folder,
        )
        return {}
    if (folder.parent / "config.yaml").is_file():
        trained = load_run_config(folder.parent).eval.length_normalise
        if bool(trained) != bool(config.eval.length_normalise):
            raise ValueError(
                f"{path} was fitted on {'length-normalised' if trained else 'summed'} label scores, but "
                f"this evaluation sets eval.length_normalise={config.eval.length_normalise}. Evaluate with "
                f"eval.length_normalise={trained} (the training run's value), or eval.calibrate=false."
            )
    calibration = read_json(path)
    problem = _calibration_problem(calibration)
    if problem:
        raise ValueError(
            f"{path} should map each corpus to a list of label biases ({problem}); retrain or delete it."
        )
    return calibration


def _calibration_problem(calibration: Any) -> str | None:
    """What is wrong with a parsed calibration.json, or None: one finite bias per label of a known corpus."""
    from dialoguellm.labels import LABELS

    if not isinstance(calibration, dict):
        return f"found a JSON {type(calibration).__name__}"
    for name, biases in calibration.items():
        if name not in LABELS:
            return f"{name!r} is not a corpus; expected {', '.join(LABELS)}"
        if not isinstance(biases, list) or len(biases) != len(LABELS[name]):
            return f"{name!r} needs a list of {len(LABELS[name])} numbers, one per label"
        for bias in biases:
            if isinstance(bias, bool) or not isinstance(bias, (int, float)):
                return f"{name!r} holds {bias!r}, not a number"
            try:
                if not math.isfinite(bias):
                    return f"{name!r} holds {bias!r}, not a finite number"
            except OverflowError:
                return f"{name!r} holds an integer too large for a bias"
    return None


def load_run_config(train_dir: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> Any:
    """The resolved config a training run saved (``<train_dir>/config.yaml``), with dotted overrides."""
    from dialoguellm.config import config_from_dict, read_config_file

    path = Path(train_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"No config.yaml in {train_dir}; is it a training run folder (notebook 03)?")
    raw = read_config_file(path) or {}
    if isinstance(raw, dict):
        raw.pop("source", None)
    return config_from_dict(raw, source=str(path), overrides=dict(overrides or {}))


def evaluate_run(
    corpora: Mapping[str, Any],
    out_dir: str | os.PathLike,
    train_dir: str | os.PathLike | None = None,
    config: Any = None,
    split: str = "test",
    descriptions: Mapping[str, Mapping[str, str]] | None = None,
    mode: str | None = None,
    loaded: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a trained adapter (``train_dir/adapter``), or the bare model when ``train_dir`` is None.

    Settings come from the run's saved config unless ``config`` is given. Writes, under ``out_dir``,
    ``<split>_<corpus>_predictions.csv``, ``_metrics.json``, ``_per_class.csv`` and ``summary.json``;
    returns the summary (per-corpus metrics, model, hardware, seconds).
    """
    import time

    from dialoguellm import modeling
    from dialoguellm.io import write_json
    from dialoguellm.train import environment, hardware_summary, prepare_examples

    start = time.time()
    if config is None:
        if train_dir is None:
            raise ValueError("Pass config= when evaluating a model without a training run.")
        config = load_run_config(train_dir)
    m = config.model
    modeling.set_threads(m.num_threads)
    if loaded is None:
        loaded = modeling.load_model(m.name, m.dtype, m.quantization, m.trust_remote_code)
    model = loaded.model
    if train_dir is not None:
        model = modeling.load_adapter(model, Path(train_dir) / "adapter")
    prepared = prepare_examples(config, loaded.tokenizer, corpora, (split,), descriptions)
    mode = mode or config.eval.mode
    out = Path(out_dir)
    calibration = (
        load_calibration(Path(train_dir) / "adapter", config)
        if train_dir is not None and mode == "score"
        else {}
    )
    results: dict[str, Any] = {}
    for name, examples in prepared.examples[split].items():
        builder = prepared.builders[name]
        preds = predict(
            model,
            loaded.tokenizer,
            builder,
            examples,
            mode,
            config.eval.batch_size,
            config.eval.max_new_tokens,
            m.dtype,
            progress,
            config.eval.length_normalise,
            config.eval.precision,
        )
        metrics = metrics_of(preds, builder.labels)
        bias = calibration.get(name) if mode == "score" else None
        if bias is not None:
            raw = {k: metrics[k] for k in ("accuracy", "weighted_f1", "macro_f1")}
            preds = apply_label_bias(preds, builder.labels, bias)
            metrics = metrics_of(preds, builder.labels)
            metrics["uncalibrated"] = raw
            metrics["label_bias"] = list(map(float, bias))
        save_predictions(preds, metrics, out, f"{split}_{name}")
        results[name] = metrics
    env = environment()
    summary = {
        "split": split,
        "mode": mode,
        "model": m.name,
        "adapter": str(Path(train_dir) / "adapter") if train_dir is not None else None,
        "hardware": hardware_summary(env),
        "environment": env,
        "seconds": time.time() - start,
        "calibrated": bool(calibration) and mode == "score",
        "length_normalised": bool(config.eval.length_normalise) and mode == "score",
        "precision": config.eval.precision,
        "results": results,
    }
    write_json(out / "summary.json", summary)
    return summary


def paper_results() -> pd.DataFrame:
    """The paper's Table 3 rows and peers (accuracy / weighted F1 in %), from the packaged data file."""
    from importlib import resources

    with resources.as_file(resources.files("dialoguellm") / "resources" / "paper_results.csv") as path:
        return pd.read_csv(path)


def comparison_table(
    summaries: Mapping[str, Mapping[str, Any]], datasets: Sequence[str] | None = None
) -> pd.DataFrame:
    """Our runs (``label -> evaluate_run summary``) above the paper's rows, in %, one row per system and corpus.

    Columns: system, dataset, accuracy, weighted_f1, ours, source (for ours: model and hardware).
    """
    rows = []
    for label, summary in summaries.items():
        for name, result in summary["results"].items():
            if "uncalibrated" in result:  # the raw argmax too, so the dev-fitted correction is visible
                raw = result["uncalibrated"]
                rows.append(
                    {
                        "system": f"{label}, uncalibrated",
                        "dataset": name,
                        "accuracy": round(100 * raw["accuracy"], 2),
                        "weighted_f1": round(100 * raw["weighted_f1"], 2),
                        "ours": True,
                        "source": f"{summary['model']} on {summary['hardware']}",
                    }
                )
            rows.append(
                {
                    "system": label,
                    "dataset": name,
                    "accuracy": round(100 * result["accuracy"], 2),
                    "weighted_f1": round(100 * result["weighted_f1"], 2),
                    "ours": True,
                    "source": f"{summary['model']} on {summary['hardware']}",
                }
            )
    ours = pd.DataFrame(rows)
    paper = paper_results().assign(ours=False)
    table = pd.concat([ours, paper], ignore_index=True)
    names = (
        list(datasets)
        if datasets is not None
        else list(dict.fromkeys(ours["dataset"]))
        if len(ours)
        else None
    )
    if names is not None:
        table = table[table["dataset"].isin(names)]
    return table.reset_index(drop=True)


def results_frame(summary: Mapping[str, Any]) -> pd.DataFrame:
    """Headline metrics of an ``evaluate_run`` summary, one row per corpus."""
    return pd.DataFrame(
        [
            {
                "dataset": name,
                "n": r["n"],
                "accuracy": r["accuracy"],
                "weighted_f1": r["weighted_f1"],
                "macro_f1": r["macro_f1"],
                "unparsed": r.get("unparsed", 0),
                "weighted_f1_uncalibrated": r.get("uncalibrated", {}).get("weighted_f1", r["weighted_f1"]),
                "accuracy_uncalibrated": r.get("uncalibrated", {}).get("accuracy", r["accuracy"]),
            }
            for name, r in summary["results"].items()
        ]
    ).set_index("dataset")
