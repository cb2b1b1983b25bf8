"""benchmarks/train_peak.py on the tiny model, its FLOP count by hand, and the training path it measures:
``training.loss.training_precision`` gives the loss of plain autocast (issue 30)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from bench import TINY, assert_provenance, load

from dialoguellm.model import loading
from dialoguellm.scoring import engine
from dialoguellm.training import loss as training_loss
from dialoguellm.training.loop import set_seed


def test_train_flops_by_hand():
    config = SimpleNamespace(
        hidden_size=4, intermediate_size=8, num_attention_heads=2, num_key_value_heads=1, head_dim=2,
        num_hidden_layers=3, vocab_size=10,
    )  # fmt: skip
    flops = load("train_peak").train_flops(config, 1, ["q_proj", "down_proj"], 2, [1, 3], 2)
    # per layer: q 4x4, k 4x2, v 4x2, o 4x4, gate 4x8, up 4x8, down 8x4 = 16+8+8+16+32+32+32 = 144
    tokens = 2 + 1 + 3
    assert flops["tokens"] == tokens
    assert flops["base_forward"] == flops["base_backward_activations"] == 2 * 3 * 144 * tokens
    assert flops["lora"] == 6 * 3 * (1 * (4 + 4) + 1 * (8 + 4)) * tokens
    contexts = (1 + 2) + (3) + (3 + 4 + 5)  # prefix 1, 2; row of 1: 3; row of 3: 3, 4, 5
    assert flops["attention"] == 12 * 3 * 4 * contexts
    assert flops["output_projection"] == 4 * 10 * 4 * 2
    assert flops["recomputation"] == 0
    parts = [v for k, v in flops.items() if k not in ("total", "tokens")]
    assert flops["total"] == sum(parts)


def test_a_lora_product_is_one_with_a_side_of_the_rank():
    is_lora = load("train_profile").is_lora_product
    assert is_lora([[40, 576], [576, 8]], 8) and is_lora([[8, 40], [40, 576]], 8)
    assert not is_lora([[40, 576], [576, 1536]], 8) and not is_lora([[], [40, 576]], 8)


def test_the_bound_times_every_frozen_linear_forward_and_backward_at_the_batch_shapes(
    tiny_model_dir, monkeypatch
):
    loaded = loading.load_model(tiny_model_dir, "bf16")
    targets = ["q_proj", "v_proj", "up_proj"]
    model = loading.add_lora(loaded.model, 4, 8, 0.0, targets)
    seen = []
    linear, mm = torch.nn.functional.linear, torch.mm
    monkeypatch.setattr(
        torch.nn.functional, "linear", lambda x, w: seen.append(("f", *x.shape)) or linear(x, w)
    )
    monkeypatch.setattr(torch, "mm", lambda y, w: seen.append(("b", *y.shape)) or mm(y, w))
    seconds = load("train_peak").base_matmul_seconds(model, [3, 10])
    layers = model.config.num_hidden_layers
    # every linear layer of every decoder layer (7), LoRA-wrapped or not; each pass, forward and backward
    assert seconds > 0 and len(seen) == 2 * 2 * layers * 7 and len(targets) < 7
    assert {shape[1] for shape in seen} == {3, 10}  # the tokens of each pass
    assert sum(1 for kind, *_ in seen if kind == "b") == len(seen) // 2


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_training_precision_gives_the_loss_of_plain_autocast(tiny_model_dir, dropout):
    """LoRA inputs kept in bf16 instead of peft's fp32 copies: the same loss, bit for bit, and gradients that
    differ by bf16 rounding only."""
    losses, grads = {}, {}
    for name, context in (("autocast", engine.autocast_context), ("now", training_loss.training_precision)):
        loaded = loading.load_model(tiny_model_dir, "bf16")
        set_seed(0)
        model = loading.add_lora(loaded.model, 4, 8, dropout, ["q_proj", "v_proj", "up_proj"])
        with torch.no_grad():  # a non-zero B, so the adapter takes part in the loss
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.1)
        model.train()
        torch.manual_seed(1)
        prompts = [[1, 5, 6, 7, 8], [1, 5, 6, 9]]
        with context(model, "bf16"):
            loss, _ = training_loss.answer_loss(
                model, prompts, [[3, 2], [4, 2]], loaded.tokenizer.pad_token_id
            )
            loss.backward()
        losses[name] = float(loss.detach())
        grads[name] = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
        assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    assert losses["now"] == losses["autocast"]
    scale = grads["autocast"].abs().max()
    assert (grads["now"] - grads["autocast"]).abs().max() <= 0.02 * scale


@pytest.mark.slow
def test_train_peak_interleaves_both_paths_and_the_peak(tiny_model_dir, tmp_path):
    out = tmp_path / "peak.json"
    tiny = [a if a != "model.dtype=fp32" else "model.dtype=bf16" for a in TINY]
    args = ["--set", f"model.name={tiny_model_dir}", *tiny, "--set", "data.train_per_dataset=48"]
    argv = [*args, "--micro-batches", "3", "--threads", "1", "--matmul-tokens", "16", "--out", str(out)]
    result = load("train_peak").main(argv)
    assert_provenance(result, "train_peak", argv)
    assert [r["round"] for r in result["rounds"]] == [0, 1, 2]
    assert len(result["rounds"][0]["peak"]) == 8  # bf16/fp32 x 1/2 threads x 2 shapes
    summary = result["summary"]
    # the peak: the fastest 2-thread matmul of either dtype (fp32 on a CPU without bf16 units), the bf16 one beside
    counted = result["rounds"][1:]
    two_threads = {k: sum(r["peak"][k] for r in counted) for k in counted[0]["peak"] if k.split()[1] == "2t"}
    assert summary["peak"] == max(two_threads, key=two_threads.get) and summary["peak_gflops"] > 0
    assert summary["bf16_2t_peak"] == max(
        (k for k in two_threads if k.startswith("bf16")), key=two_threads.get
    )
    # the paths multiply in what the trainer would on this machine (train.precision auto), and say so
    assert (result["settings"]["training_dtype"], result["settings"]["training_dtype_reason"]) == (
        loading.training_dtype("auto", "bf16")
    )
    for path in ("before", "torch_dropout", "sdpa", "eager", "now", "now_halves", "packed", "fused", "norms"):
        assert 0 < summary[path]["fraction_of_peak"]
        key = "flops_in_2_passes" if path in ("now_halves", "packed", "fused", "norms") else "flops"
        flops = sum(r[key]["total"] for r in result["rounds"][1:])
        seconds = sum(r[path]["seconds"] for r in result["rounds"][1:])
        assert summary[path]["gflops"] == pytest.approx(flops / seconds / 1e9, abs=0.051)  # one decimal
    # two passes run the prefix twice: more FLOPs for the same utterances, never fewer
    for r in result["rounds"]:
        assert r["flops_in_2_passes"]["total"] >= r["flops"]["total"]
        assert r["flops_in_2_passes"]["output_projection"] == r["flops"]["output_projection"]  # same answers
    # The first loss is the same on every path (LoRA's B starts at 0, so no mask matters yet); once the
    # adapters have moved, the sparse sampler's other masks give other losses.
    assert result["rounds"][0]["before"]["loss"] == result["rounds"][0]["torch_dropout"]["loss"]
    assert any(r["torch_dropout"]["loss"] != r["sdpa"]["loss"] for r in result["rounds"][1:])
    assert summary["sparse_dropout_speedup"] > 0 and result["sparse_dropout_loss_difference_mean"] > 0
    assert summary["eager_attention_speedup"] > 0 and result["eager_loss_difference_max"] < 0.05  # rounding
    assert summary["eager_fp32_speedup"] > 0 and result["eager_fp32_loss_difference_max"] < 0.05
    assert summary["one_pass_speedup"] > 0 and result["halves_loss_difference_mean"] >= 0
    assert result["dropout_noise_mean"] >= 0 and "before_other_dropout_loss" in result["rounds"][0]
    # one packed pass: the loss function of 8 x 2 with other masks; fused layers: the same masks, rounding
    assert summary["packed_speedup"] > 0 and summary["fused_lora_speedup"] > 0
    assert result["rounds"][0]["packed"]["loss"] == pytest.approx(result["rounds"][0]["now_halves"]["loss"])
    assert result["fused_loss_difference_max"] < 0.05 and result["packed_loss_difference_mean"] >= 0
    # fused norms: the same forward operations, the same masks
    assert summary["fused_norms_speedup"] > 0 and result["norms_loss_difference_max"] < 0.05
    assert result["rounds"][0]["norms"]["loss"] == result["rounds"][0]["fused"]["loss"]
    bound = summary["base_matmuls"]  # the base's products alone take part of a step: a bound above it
    assert (
        bound["path"] == "norms"
        and 0 < bound["share_of_profile"] < 1
        and bound["ceiling_fraction_of_peak"] > summary["norms"]["fraction_of_peak"]
    )
    assert bound["ceiling_fraction_of_peak"] > bound["fraction_of_peak"] > 0  # the bound counts every FLOP
    # the trainer's own steps, spread over the epoch, by the profile's path on a model of its own
    epoch = summary["epoch"]
    assert epoch["path"] == "norms" and epoch["fraction_of_peak"] > 0
    flops = sum(r["epoch_flops"]["total"] for r in result["rounds"][1:])
    seconds = sum(r["epoch"]["seconds"] for r in result["rounds"][1:])
    assert epoch["gflops"] == pytest.approx(flops / seconds / 1e9, abs=0.051)
    steps = [r["epoch_step"] for r in result["rounds"]]
    assert all(len(step) == 2 and all(len(idx) <= 8 for _, idx in step) for step in steps)  # 8 x 2
    assert len({str(step) for step in steps}) == 3  # three different steps
    assert out.is_file()


def test_epoch_steps_are_the_trainers_spread_over_the_epoch():
    examples = {
        name: [SimpleNamespace(prompt_ids=[1] * (3 + i % 5)) for i in range(n)]
        for name, n in (("a", 13), ("b", 7))
    }
    config = SimpleNamespace(
        train=SimpleNamespace(micro_batch_size=2, grad_accum=2, seed=3, group_by_length=True)
    )
    micro = training_loss.micro_batches(examples, 2, 3, True)
    steps = [
        micro[i : i + 2] for i in range(0, len(micro), 2)
    ]  # as loop pairs them: 11 micro-batches, 6 steps
    chosen = load("train_peak").epoch_steps(SimpleNamespace(examples={"train": examples}), config, 3)
    assert chosen == [steps[0], steps[2], steps[5]]  # the first, the middle and the last (a short one)


@pytest.mark.slow
def test_train_profile_gives_each_paths_operator_shares(tiny_model_dir, tmp_path):
    out = tmp_path / "profile.json"
    tiny = [a if a != "model.dtype=fp32" else "model.dtype=bf16" for a in TINY]
    args = ["--set", f"model.name={tiny_model_dir}", *tiny, "--set", "data.train_per_dataset=48"]
    # bf16 on any CPU (the tiny model is fast either way): the copies below are bf16 autocast's
    args += ["--set", "train.precision=bf16"]
    argv = [*args, "--micro-batches", "2", "--threads", "1", "--out", str(out)]
    result = load("train_profile").main(argv)
    assert_provenance(result, "train_profile", argv)
    for path in ("before", "now"):
        shares = result["paths"][path]["self_cpu_share"]
        assert "aten::mm" in shares and 0 < sum(shares.values()) <= 1.0001
        split = result["paths"][path]["mm_share"]  # the products, split by operand shape
        assert split["lora"] > 0 and split["other"] > 0
        assert split["lora"] + split["other"] == pytest.approx(shares["aten::mm"], abs=2e-4)
    # peft's fp32 copies of the LoRA inputs are gone: fewer dtype conversions at today's precision than
    # before, with the same attention (the cpu profile's fp32 attention adds copies of its own)
    calls = {
        path: result["paths"][path]["calls"].get("aten::_to_copy", 0) for path in ("before", "torch_dropout")
    }
    assert calls["torch_dropout"] < calls["before"]


def test_the_benchmarks_now_path_is_what_the_cpu_profile_runs():
    from dialoguellm.config import load_config

    module = load("train_peak")
    cpu = load_config("cpu")
    spec = module.PATHS[module.PROFILE]
    assert (spec.attention, spec.sparse, spec.fused, spec.norms) == (cpu.model.attention, True, True, True)
    assert spec.passes == cpu.train.grad_accum and cpu.train.batch_size == 16
    assert spec.packed == (cpu.train.micro_batches_per_pass == spec.passes)  # one packed pass per step
    assert spec.context is module.training_loss.training_precision
    assert module.in_passes(list(range(16)), 2) == [list(range(8)), list(range(8, 16))]
    assert module.in_passes(list(range(5)), 2) == [[0, 1, 2], [3, 4]]
    assert module.in_passes([7], 1) == [[7]]
