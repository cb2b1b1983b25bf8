"""model.attention: eager attention (and eager_fp32, model/attention.py) gets the engine's masks as additive
floats, so it attends where SDPA does and gives the same label scores and training loss up to rounding; in bf16,
eager_fp32 keeps the scores eager attention rounds; an unknown value is refused."""

from __future__ import annotations

import pytest
import torch
from tiny import synthetic_corpus

from dialoguellm.config import ATTENTION, load_config
from dialoguellm.model import loading
from dialoguellm.model.attention import NAME, fp32_score_attention
from dialoguellm.prompts import PromptBuilder, select_demonstrations
from dialoguellm.scoring import engine
from dialoguellm.training import loss as training_loss


def _model(folder: str, attention: str, dtype: str = "fp32"):
    loaded = loading.load_model(folder, dtype=dtype, attention=attention)
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
    return {a: _model(tiny_model_dir, a) for a in ATTENTION}


def test_mask_for_gives_eager_attention_additive_floats_and_sdpa_the_booleans(both):
    allowed = engine.attention_mask_4d(torch.tensor([[False, True, True, True]]), 3)
    sdpa, _ = both["sdpa"]
    assert engine.mask_for(sdpa.base_model.model.model, allowed) is allowed
    for name in ("eager", NAME):
        additive = engine.mask_for(both[name][0].base_model.model.model, allowed)
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
    assert abs(scores["sdpa"] - scores[NAME]).max() < 1e-4
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
    for name in ("eager", NAME):
        assert out[name][0] == pytest.approx(out["sdpa"][0], abs=1e-5)
        assert (out[name][1] - out["sdpa"][1]).abs().max() <= 1e-4 * out["sdpa"][1].abs().max()


def test_eager_fp32_rounds_only_its_output_where_eager_attention_rounds_scores_and_weights():
    """The function alone on bf16 inputs against the same attention in fp64: off by the output's bf16
    rounding only, where eager attention on the bf16 inputs is further off."""
    from transformers.models.llama.modeling_llama import eager_attention_forward

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 33, 16, generator=gen).mul(3).bfloat16() for _ in range(3))
    k, v = k[:, :2], v[:, :2]  # 2 key/value heads for 4 query heads, as grouped-query attention
    module = torch.nn.Module()
    module.num_key_value_groups = 2
    module.eval()
    causal = torch.full((33, 33), torch.finfo(torch.float32).min).triu(1)[None, None].expand(2, 1, 33, 33)
    out, weights = fp32_score_attention(module, q, k, v, causal, 0.25)
    assert out.shape == (2, 33, 4, 16) and out.dtype == torch.bfloat16 and weights.dtype == torch.float32
    assert torch.equal(weights.triu(1), torch.zeros_like(weights))  # causal: no weight on a later key
    exact, exact_weights = eager_attention_forward(
        module, q.double(), k.double(), v.double(), causal.double(), 0.25
    )
    # each query head meets its own key/value head (the grouped products keep transformers' head order)
    assert torch.allclose(weights.double(), exact_weights, atol=1e-5)
    rounded, _ = eager_attention_forward(module, q, k, v, causal, 0.25)
    assert (
        torch.equal(out, exact.to(torch.bfloat16))
        or (out.double() - exact).abs().max() <= 2**-8 * exact.abs().max()
    )
    assert (out.double() - exact).abs().max() < (rounded.double() - exact).abs().max()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the trainer's autocast changes nothing
        again, _ = fp32_score_attention(module, q, k, v, causal, 0.25)
    assert torch.equal(again, out)


def test_eager_fp32_takes_a_mask_per_head_as_well_as_one_for_all_heads():
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, 6, 5, 8, generator=gen)
    k, v = torch.randn(2, 2, 7, 8, generator=gen), torch.randn(2, 2, 7, 8, generator=gen)
    module = torch.nn.Module()
    module.eval()
    lowest = torch.finfo(torch.float32).min
    shared = torch.zeros(2, 1, 5, 7).masked_fill_(torch.rand(2, 1, 5, 7, generator=gen) < 0.3, lowest)
    shared[..., -1] = 0.0  # every query sees at least one key
    per_head = shared.expand(2, 6, 5, 7).clone()
    per_head[:, 3:, :, 0] = lowest  # the second key/value head's queries may not see key 0
    out_shared, _ = fp32_score_attention(module, q, k, v, shared, 0.5)
    out_heads, weights = fp32_score_attention(module, q, k, v, per_head, 0.5)
    assert torch.equal(out_heads[:, :, :3], out_shared[:, :, :3])  # heads 0-2: the same mask
    assert torch.equal(weights[:, 3:, :, 0], torch.zeros(2, 3, 5))
    assert not torch.equal(out_heads[:, :, 3:], out_shared[:, :, 3:])


def test_an_unknown_attention_is_refused_with_the_choices(tmp_path, tiny_model_dir):
    with pytest.raises(ValueError, match=r"model.attention is 'flash'; use sdpa, eager or eager_fp32"):
        load_config("cpu", overrides={"model.attention": "flash"})
    with pytest.raises(ValueError, match=r"model.attention must be sdpa, eager or eager_fp32, not 'flash'"):
        loading.load_model(tiny_model_dir, attention="flash")
