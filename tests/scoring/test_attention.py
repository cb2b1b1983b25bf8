"""model.attention: eager attention gets the engine's masks as additive floats, so it attends where SDPA does
and gives the same label scores and training loss up to rounding; an unknown value is refused."""

from __future__ import annotations

import pytest
import torch
from tiny import synthetic_corpus

from dialoguellm.config import load_config
from dialoguellm.model import loading
from dialoguellm.prompts import PromptBuilder, select_demonstrations
from dialoguellm.scoring import engine
from dialoguellm.training import loss as training_loss


def _model(folder: str, attention: str):
    loaded = loading.load_model(folder, dtype="fp32", attention=attention)
    torch.manual_seed(0)  # the same LoRA A for both
    model = loading.add_lora(loaded.model, 4, 8, 0.0, ["q_proj", "v_proj", "down_proj"])
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # a non-zero update, so the adapter takes part
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return model, loaded.tokenizer


@pytest.fixture(scope="module")
def both(tiny_model_dir):
    return {a: _model(tiny_model_dir, a) for a in ("sdpa", "eager")}


def test_mask_for_gives_eager_attention_additive_floats_and_sdpa_the_booleans(both):
    allowed = engine.attention_mask_4d(torch.tensor([[False, True, True, True]]), 3)
    sdpa, _ = both["sdpa"]
    eager, _ = both["eager"]
    assert engine.mask_for(sdpa.base_model.model.model, allowed) is allowed
    additive = engine.mask_for(eager.base_model.model.model, allowed)
    assert additive.dtype == torch.float32 and additive.shape == allowed.shape
    assert torch.equal(additive == 0, allowed)  # 0 where a query may look
    assert (additive[~allowed] == torch.finfo(torch.float32).min).all()


def test_eager_and_sdpa_give_the_same_label_scores(both):
    _, tok = both["sdpa"]
    corpus = synthetic_corpus("meld", sizes=(2, 2, 12))
    builder = PromptBuilder(
        tok, "meld", context_turns=2, demonstrations=select_demonstrations(corpus["train"], 1, seed=0)
    )
    examples = builder.build_split(corpus["test"])
    assert len({len(e.prompt_ids) for e in examples}) >= 3  # padded batches, a shared prefix, answer tails
    scores = {
        a: engine.score_examples(
            m.eval(), examples, builder.answer_ids, t.pad_token_id, 4, "fp32", progress=False
        )
        for a, (m, t) in both.items()
    }
    assert scores["sdpa"].shape == (len(examples), len(builder.answer_ids))
    assert abs(scores["sdpa"] - scores["eager"]).max() < 1e-4
    # a boolean mask handed to eager attention as it is masks nothing: the scores would move
    spread = abs(scores["sdpa"] - scores["sdpa"].mean()).max()
    assert spread > 1e-2


def test_eager_and_sdpa_give_the_same_training_loss_and_gradients(both):
    prompts, answers = [[1, 5, 6, 7, 8], [1, 5, 6, 9]], [[3, 2], [4, 2]]
    out = {}
    for attention, (model, tok) in both.items():
        model.train()
        model.zero_grad(set_to_none=True)
        loss, _ = training_loss.answer_loss(model, prompts, answers, tok.pad_token_id)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
        out[attention] = (float(loss), grads)
    assert out["eager"][0] == pytest.approx(out["sdpa"][0], abs=1e-5)
    assert (out["eager"][1] - out["sdpa"][1]).abs().max() <= 1e-4 * out["sdpa"][1].abs().max()


def test_an_unknown_attention_is_refused_with_the_choices(tmp_path, tiny_model_dir):
    with pytest.raises(ValueError, match=r"model.attention is 'flash'; use sdpa or eager"):
        load_config("cpu", overrides={"model.attention": "flash"})
    with pytest.raises(ValueError, match=r"model.attention must be sdpa or eager, not 'flash'"):
        loading.load_model(tiny_model_dir, attention="flash")
