"""train.micro_batches_per_pass: several micro-batches in one forward pass (``training.loss.packed_answer_loss``,
packed by ``scoring.engine.packed_hidden``) give the loss and gradients of one pass per micro-batch accumulated
with the same weights: each micro-batch keeps its own prefix, its own rows and its own mean."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import synthetic_corpus, tiny_settings

from dialoguellm.config import config_from_dict
from dialoguellm.model import loading
from dialoguellm.model.attention import NAME
from dialoguellm.scoring import engine
from dialoguellm.training import loop
from dialoguellm.training import loss as training_loss

# Two micro-batches with different prefixes (two corpora), rows of different lengths (padding), answers of
# one and two tokens; a third whose prompts share nothing but the first token.
BATCHES = [
    ([[1, 5, 6, 7, 8, 11], [1, 5, 6, 7, 9], [1, 5, 6, 7, 10, 12, 13]], [[3, 2], [4, 2], [3]]),
    ([[1, 8, 8, 9, 14], [1, 8, 8, 9, 15, 16]], [[4, 2], [3, 2]]),
    ([[1, 17], [1, 18, 19]], [[3], [4, 2]]),
]
WEIGHTS = [0.5, 0.25, 1.5]


def _model(folder: str, attention: str = NAME):
    loaded = loading.load_model(folder, dtype="fp32", attention=attention)
    torch.manual_seed(0)
    model = loading.add_lora(loaded.model, 4, 8, 0.0, ["q_proj", "k_proj", "v_proj", "down_proj"])
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # a non-zero update, so gradients reach A as well
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return model.train(), loaded.tokenizer


def _grads(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])


@pytest.mark.parametrize("share_prefix", [True, False])
def test_one_packed_pass_gives_the_accumulated_loss_and_gradients(tiny_model_dir, share_prefix):
    model, tok = _model(tiny_model_dir)
    pad = tok.pad_token_id
    model.zero_grad(set_to_none=True)
    expected = 0.0
    for (prompts, answers), w in zip(BATCHES, WEIGHTS, strict=True):
        loss, _ = training_loss.answer_loss(model, prompts, answers, pad, share_prefix)
        (loss * w).backward()
        expected += float(loss.detach()) * w
    separate = _grads(model)
    model.zero_grad(set_to_none=True)
    stats: dict[str, int] = {}
    total, each = training_loss.packed_answer_loss(model, BATCHES, WEIGHTS, pad, share_prefix, stats)
    total.backward()
    assert float(total) == pytest.approx(expected, abs=1e-5)
    assert float(sum(e * w for e, w in zip(each, WEIGHTS, strict=True))) == pytest.approx(expected, abs=1e-5)
    assert (_grads(model) - separate).abs().max() <= 1e-5 * separate.abs().max()
    assert separate.abs().max() > 0
    # the same token counts as the per-micro-batch passes report
    counted: dict[str, int] = {}
    for prompts, answers in BATCHES:
        training_loss.answer_loss(model, prompts, answers, pad, share_prefix, counted)
    assert stats == counted


def test_packed_hidden_matches_the_cached_prefix_pass_row_by_row(tiny_model_dir):
    model, tok = _model(tiny_model_dir)
    prompts = BATCHES[0][0]
    p = engine.common_prefix_length(prompts)
    suffixes = [q[p:] for q in prompts]
    with torch.no_grad():
        prefix = engine.encode_prefix(model, prompts[0][:p])
        cached, width = engine.forward_hidden(model, prefix, p, suffixes, tok.pad_token_id)
        packed = engine.packed_hidden(model, [(prompts[0][:p], suffixes), ([], [[1, 9]])], tok.pad_token_id)
    assert packed[0].shape == cached.shape and packed[1].shape[:2] == (1, 2)
    for row, seq in enumerate(suffixes):  # real tokens only: padding columns differ harmlessly
        real = slice(width - len(seq), width)
        assert torch.allclose(packed[0][row, real], cached[row, real], atol=1e-5)


def test_a_packed_pass_without_eager_fp32_attention_is_refused_with_the_fix(tiny_model_dir):
    model, tok = _model(tiny_model_dir, attention="sdpa")
    with pytest.raises(ValueError, match="model.attention: eager_fp32 or train.micro_batches_per_pass: 1"):
        training_loss.packed_answer_loss(model, BATCHES[:1], [1.0], tok.pad_token_id)


@pytest.mark.parametrize("grad_accum, epochs", [(2, 1), (3, 1.5)])
def test_training_in_packed_passes_follows_the_same_losses(tiny_model_dir, tmp_path, grad_accum, epochs):
    """Two corpora (mixed steps), 1-shot prompts (a prefix per micro-batch), 9 micro-batches of 2 per epoch:
    grad_accum 2 over one epoch ends in a short step (one micro-batch and its weight-0 repeat, which a packed
    pass leaves out); grad_accum 3 over 1.5 epochs (14 micro-batches) runs a pass of two and a pass of one per
    step and ends in a step of two."""
    corpora = {
        "meld": synthetic_corpus("meld", sizes=(10, 2, 2), turns=4, seed=3),
        "emorynlp": synthetic_corpus("emorynlp", sizes=(8, 2, 2), turns=4, seed=4),
    }
    losses, tokens = {}, {}
    for per_pass in (1, 2):
        settings = tiny_settings(
            tiny_model_dir,
            epochs=epochs,
            batch_size=2 * grad_accum,
            micro_batch_size=2,
            grad_accum=grad_accum,
            micro_batches_per_pass=per_pass,
            lr=1e-2,
        )
        settings["model"]["attention"] = NAME
        settings["prompt"] = {"k_shot": 1, "context_turns": 1, "use_video": False}
        settings["data"] = {"datasets": ["meld", "emorynlp"]}
        config = config_from_dict(settings, source="test")
        result = loop.train(config, tmp_path / f"run{per_pass}", corpora, progress=False)
        metrics = json.loads((result.run_dir / "metrics.json").read_text())
        losses[per_pass] = [x["loss"] for x in metrics["losses"]]
        tokens[per_pass] = metrics["throughput"]["tokens"]
    assert len(losses[1]) == len(losses[2]) >= 5
    assert tokens[2] == tokens[1] > 0  # the same tokens counted, repeats left out
    assert losses[2] == pytest.approx(losses[1], rel=1e-4)
    assert losses[1][-1] < losses[1][0]


def test_packed_passes_need_eager_fp32_attention(tiny_model_dir):
    settings = tiny_settings(tiny_model_dir, micro_batches_per_pass=2)
    with pytest.raises(ValueError, match="train.micro_batches_per_pass.*model.attention: eager_fp32"):
        config_from_dict(settings, source="test")
