"""Training: a tiny random LLaMA learns 16 examples; selection uses dev only; resume continues exactly."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
from tiny import synthetic_corpus, tiny_settings

from dialoguellm import calibration, prompts
from dialoguellm.config import config_from_dict
from dialoguellm.evaluation import run as evaluation
from dialoguellm.model import loading
from dialoguellm.plots import evaluation as evaluation_plots
from dialoguellm.plots import training as training_plots
from dialoguellm.training import checkpoints, loop
from dialoguellm.training import loss as training_loss


def _config(model_dir, **train_kw):
    return config_from_dict(tiny_settings(model_dir, **train_kw), source="test")


class NoTestSplit(dict):
    """A corpus whose test split raises when touched: training must never read it."""

    def __getitem__(self, split):
        if split == "test":
            raise AssertionError("the test split was read during training")
        return super().__getitem__(split)


def _memorise_corpus():
    corpus = synthetic_corpus("meld", sizes=(4, 2, 2), turns=4, seed=3)
    # dev = the training rows, so that selecting on dev picks the adapter that fits them best
    corpus["dev"] = [dict(r, split="dev") for r in corpus["train"]]
    return NoTestSplit(corpus)


@pytest.mark.slow
def test_tiny_llama_learns_sixteen_examples(tiny_model_dir, tmp_path):
    corpus = _memorise_corpus()
    assert len(corpus["train"]) == 16
    config = _config(tiny_model_dir, epochs=40, eval_every=40)
    result = loop.train(config, tmp_path / "run", {"meld": corpus}, progress=False)
    run = result.run_dir
    for name in (
        "adapter/adapter_model.safetensors",
        "config.yaml",
        "metrics.json",
        "environment.json",
        "train.log",
        "checkpoint/state.json",
    ):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").iterdir())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["losses"][-1]["loss"] < metrics["losses"][0]["loss"] / 10
    summary = evaluation.evaluate_run(
        {"meld": dict(corpus)}, tmp_path / "eval", train_dir=run, split="train", progress=False
    )
    assert summary["results"]["meld"]["accuracy"] == 1.0
    assert (tmp_path / "eval" / "train_meld_predictions.csv").is_file()


@pytest.mark.slow
def test_resume_continues_where_it_stopped(tiny_model_dir, tmp_path, monkeypatch):
    corpus = {"meld": _memorise_corpus()}
    config = _config(tiny_model_dir, epochs=2, save_every=2, eval_every=4)  # 8 steps
    full = loop.train(config, tmp_path / "full", corpus, progress=False)

    real_save = checkpoints.save_checkpoint

    def interrupted(model, optimizer, state, folder):
        real_save(model, optimizer, state, folder)
        if state["step"] == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        loop.train(config, tmp_path / "cut", corpus, progress=False)
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    with pytest.raises(FileExistsError, match="resume"):
        loop.train(config, tmp_path / "cut", corpus, progress=False)
    resumed = loop.train(config, tmp_path / "cut", corpus, resume=True, progress=False)
    assert [h["step"] for h in resumed.history] == [h["step"] for h in full.history]
    from safetensors.torch import load_file

    a = load_file(str(full.run_dir / "checkpoint" / "weights.safetensors"))
    b = load_file(str(resumed.run_dir / "checkpoint" / "weights.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), atol=1e-6)


@pytest.mark.slow
def test_deepspeed_runs_write_no_checkpoint_and_refuse_resume(tiny_model_dir, tmp_path, monkeypatch):
    """Under DeepSpeed ZeRO the optimizer state is partitioned: no one-process checkpoint pretends to resume it
    (DeepSpeed itself is not installed here; accelerate's plugin is what the branch reads)."""
    monkeypatch.setattr(loop, "deepspeed_active", lambda accelerator: True)
    corpus = {"meld": _memorise_corpus()}
    config = _config(tiny_model_dir, epochs=1, save_every=1, eval_every=2)
    result = loop.train(config, tmp_path / "run", corpus, progress=False)
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert (result.run_dir / "metrics.json").is_file()
    assert not (result.run_dir / "checkpoint").exists()
    with pytest.raises(ValueError, match=r"--resume is not supported under DeepSpeed.*ddp\.yaml"):
        loop.train(config, tmp_path / "run", corpus, resume=True, progress=False)
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()  # nothing lost by the refusal


def test_sample_indices_are_stratified_and_deterministic():
    labels = [0] * 80 + [1] * 20
    chosen = prompts.sample_indices(100, 10, seed=1, labels=labels)
    assert chosen == prompts.sample_indices(100, 10, seed=1, labels=labels)
    assert sum(labels[i] for i in chosen) == 2
    assert prompts.sample_indices(5, 0, seed=1) == list(range(5))


def test_cosine_schedule_reaches_the_floor():
    assert training_loss.lr_factor(0, 100, 0, "cosine", 0.1) == pytest.approx(1.0)
    assert training_loss.lr_factor(100, 100, 0, "cosine", 0.1) == pytest.approx(0.1)
    assert training_loss.lr_factor(0, 100, 10, "cosine", 0.1) == pytest.approx(0.1)  # warm-up
    assert training_loss.lr_factor(50, 100, 0, "constant", 0.1) == 1.0


def test_micro_batches_keep_one_corpus_each():
    class E:
        def __init__(self, n):
            self.prompt_ids = [0] * n

    examples = {"meld": [E(i) for i in range(10)], "emorynlp": [E(i) for i in range(7)]}
    batches = training_loss.micro_batches(examples, 4, seed=0)
    assert sorted(i for name, b in batches if name == "meld" for i in b) == list(range(10))
    assert len(batches) == 3 + 2
    assert batches == training_loss.micro_batches(copy.deepcopy(examples), 4, seed=0)


@pytest.mark.slow
def test_cli_train_then_evaluate(tiny_model_dir, tmp_path, capsys):
    import yaml
    from tiny import save_synthetic_corpus

    from dialoguellm import cli

    run = tmp_path / "run"
    save_synthetic_corpus(run, synthetic_corpus("meld"))
    config = _config(tiny_model_dir, epochs=1, eval_every=0).to_dict()
    config.pop("source")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    args = ["--run-dir", str(run)]
    # Model selection on 4 dev rows; the biases on the whole dev split (eval.calibration_per_dataset = 0).
    overrides = ["--set", "train.seed=1", "--set", "eval.calibrate=true", "--set", "data.dev_per_dataset=4"]
    assert cli.main(["train", "--config", str(tmp_path / "tiny.yaml"), *overrides, *args]) == 0
    adapter = run / "training" / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()
    assert len(pd.read_csv(adapter / "dev_meld_predictions.csv")) == 4
    bias = json.loads((adapter / "calibration.json").read_text())["meld"]
    assert len(bias) == 7 and bias[0] == 0
    fitted = json.loads((adapter / "calibration_dev.json").read_text())["corpora"]["meld"]
    n_dev = len(synthetic_corpus("meld")["dev"])
    assert fitted["dev_utterances"] == n_dev > 4
    assert fitted["weighted_f1_calibrated_in_sample"] >= fitted["weighted_f1_raw"]
    assert cli.main(["evaluate", "--set", "data.test_per_dataset=4", *args]) == 0
    out = capsys.readouterr().out
    assert '"weighted_f1"' in out
    assert (run / "evaluation" / "test_meld_predictions.csv").is_file()
    result = json.loads((run / "evaluation" / "test_meld_metrics.json").read_text())
    assert result["label_bias"] == bias and "weighted_f1" in result["uncalibrated"]

    for producer in (
        training_plots.loss_curve_from_run,
        evaluation_plots.confusion_from_run,
        evaluation_plots.comparison_from_run,
    ):
        assert producer(run, tmp_path / "figures").is_file()
        assert producer(tmp_path / "empty", tmp_path / "figures") is None
    # A second plain `train` into the same folder refuses instead of mixing runs.
    assert cli.main(["train", "--config", str(tmp_path / "tiny.yaml"), *args]) == 2
    assert "resume" in capsys.readouterr().err


def test_loss_is_the_same_with_and_without_the_shared_prefix(tiny_loaded, meld_corpus):
    from dialoguellm.prompts import PromptBuilder, select_demonstrations

    model, tok = tiny_loaded.model.eval(), tiny_loaded.tokenizer
    demos = select_demonstrations(meld_corpus["train"], 1, seed=0)
    builder = PromptBuilder(tok, "meld", context_turns=2, demonstrations=demos)
    examples = builder.build_split(meld_corpus["dev"])
    prompts = [e.prompt_ids for e in examples]
    answers = [builder.answer_ids[e.label_id] for e in examples]
    shared, n = training_loss.answer_loss(model, prompts, answers, tok.pad_token_id, share_prefix=True)
    full, n_full = training_loss.answer_loss(model, prompts, answers, tok.pad_token_id, share_prefix=False)
    assert n == n_full == sum(len(a) for a in answers)
    assert shared.item() == pytest.approx(full.item(), abs=1e-5)
    import torch

    with torch.no_grad():  # and both equal the plain per-example cross-entropy
        total = 0.0
        for p, a in zip(prompts, answers, strict=True):
            logp = torch.log_softmax(model(input_ids=torch.tensor([p + a])).logits[0], -1)
            total -= sum(float(logp[len(p) - 1 + k, a[k]]) for k in range(len(a)))
    assert shared.item() == pytest.approx(total / n, abs=1e-4)


@pytest.mark.slow
def test_calibration_is_fitted_with_the_selected_adapter_and_refitted_on_resume(tiny_model_dir, tmp_path):
    """The biases come from the adapter training kept (not the last step's weights), on the whole dev split;
    a run stopped between the last step and the fit gets its calibration on --resume."""
    from safetensors.torch import load_file

    corpus = {"meld": NoTestSplit(synthetic_corpus("meld", sizes=(4, 2, 2), seed=5))}
    settings = tiny_settings(tiny_model_dir, epochs=4, eval_every=1)
    settings["eval"].update(calibrate=True)
    settings["data"].update(dev_per_dataset=4)
    config = config_from_dict(settings, source="test")
    result = loop.train(config, tmp_path / "run", corpus, progress=False)
    adapter = result.adapter_dir
    first = json.loads((adapter / "calibration.json").read_text())
    report = json.loads((adapter / "calibration_dev.json").read_text())
    assert report["corpora"]["meld"]["dev_utterances"] == len(corpus["meld"]["dev"]) == 8
    assert report["length_normalise"] is False

    # fit_calibration loads the kept adapter into the model before scoring, whatever the model holds now.

    loaded = loading.load_model(str(tiny_model_dir), "fp32")
    model = loading.load_adapter(loaded.model, adapter)
    saved = load_file(str(adapter / "adapter_model.safetensors"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.add_(0.5)
    dev = prompts.prepare_split(config, loaded.tokenizer, corpus, "dev", config.eval.calibration_per_dataset)
    again = calibration.fit_calibration(model, loaded.tokenizer, dev, config, adapter, progress=False)
    assert again == first
    state = {k.replace(".default", ""): v for k, v in model.state_dict().items() if "lora_" in k}
    for name, tensor in saved.items():
        torch.testing.assert_close(state[name], tensor)

    (adapter / "calibration.json").unlink()  # as if killed after the last step, before the fit
    loop.train(config, tmp_path / "run", corpus, resume=True, progress=False)
    assert json.loads((adapter / "calibration.json").read_text()) == first
