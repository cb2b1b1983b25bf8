"""Prompt probes (dialoguellm.analysis.probes) on the tiny random LLaMA: the probes change only their own
setting, every probe scores the same sampled utterances, the base arm's scores read from notebook 04's
predictions equal the rescored ones (fp32 scoring does not depend on the batch), reuse is refused when the
settings differ, and the summary, files and figure come out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tiny import save_random_adapter, save_synthetic_corpus, synthetic_corpus, tiny_settings

from dialoguellm.analysis import probes
from dialoguellm.config import config_from_dict, load_config, save_config
from dialoguellm.corpora.readers import load_corpora_for
from dialoguellm.evaluation.run import evaluate_run
from dialoguellm.model import loading
from dialoguellm.plots.probes import FIGURE, probe_differences_from_run
from dialoguellm.runs import RunLayout


def tiny_run(tmp_path: Path, model_dir: str) -> Path:
    """A run folder as notebooks 01, 03 and 04 leave it: curated MELD and EmoryNLP (synthetic), the settings
    and a LoRA adapter (random B, so switching it off changes scores), and notebook 04's test predictions."""
    run = tmp_path / "run"
    save_synthetic_corpus(run, synthetic_corpus("meld", sizes=(4, 2, 4), turns=5))
    save_synthetic_corpus(run, synthetic_corpus("emorynlp", sizes=(4, 2, 4), turns=5, seed=7))
    raw = tiny_settings(model_dir)
    raw["prompt"].update({"context_turns": 1, "k_shot": 1})
    raw["data"]["datasets"] = ["meld", "emorynlp"]
    raw["eval"].update({"calibrate": False, "precision": "fp32", "length_normalise": True})
    config = config_from_dict(raw)
    layout = RunLayout(run)
    save_config(config, layout.training / "config.yaml")
    save_random_adapter(model_dir, layout.adapter)
    corpora = load_corpora_for(config, run)
    evaluate_run(corpora, layout.evaluation(), train_dir=layout.training, config=config, progress=False)
    return run


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, tiny_model_dir) -> Path:
    return tiny_run(tmp_path_factory.mktemp("probes"), tiny_model_dir)


@pytest.fixture(scope="module")
def adapter_model(run_folder, tiny_model_dir):
    loaded = loading.load_model(tiny_model_dir, dtype="fp32")
    return loading.load_adapter(loaded.model, RunLayout(run_folder).adapter), loaded.tokenizer


def test_every_probe_changes_one_setting_of_the_base():
    base = load_config("cpu")
    found = probes.all_probes(base)
    assert found[0].name == probes.BASE and not found[0].prompt
    names = [p.name for p in found]
    assert names == [
        "base", "context_z0", "context_z2", "context_z3", "context_zall", "kshot_0", "kshot_5",
        "descriptions_on", "adapter_off",
    ]  # fmt: skip
    for probe in found[1:]:
        settings = probe.settings(base).prompt
        changed = {k for k in vars(settings) if getattr(settings, k) != getattr(base.prompt, k)}
        assert changed == set(probe.prompt), probe.name
    assert dict(found[names.index("kshot_5")].prompt) == {"k_shot": 5, "cutoff_len": 512}
    assert dict(found[names.index("descriptions_on")].prompt) == {"use_video": True, "cutoff_len": 512}
    assert not found[-1].tuned
    assert [p.name for p in probes.applicable(found, "emorynlp")] == [
        n for n in names if n != "descriptions_on"
    ]
    with pytest.raises(ValueError, match="Unknown probe.*context_z9"):
        probes.select_probes(base, ["context_z9"])


def test_the_sample_is_fixed_by_rule_and_the_full_split_is_one_parameter_away(run_folder):
    plan = probes.plan_probes(run_folder, per_dataset=12)
    again = probes.plan_probes(run_folder, per_dataset=12)
    assert plan.positions == again.positions and len(plan.positions["meld"]) == 12
    other = probes.plan_probes(run_folder, per_dataset=12, sample_seed=1)
    assert other.positions != plan.positions
    full = probes.plan_probes(run_folder, per_dataset=0)
    assert len(full.positions["meld"]) == 20  # 4 test dialogues x 5 turns


def test_reused_base_scores_equal_rescored_ones(run_folder, adapter_model):
    model, tokenizer = adapter_model
    plan = probes.plan_probes(run_folder, probes=["context_z0"], per_dataset=12)
    assert set(probes.base_source(plan)) == {"meld", "emorynlp"}
    reused = probes.run_probes(plan, model, tokenizer, progress=False)
    rescored = probes.run_probes(plan, model, tokenizer, reuse_base=False, batch_size=3, progress=False)
    assert reused.scored["base/meld"] == 0 and rescored.scored["base/meld"] == 12
    assert reused.base_from["meld"].endswith("test_meld_predictions.csv") and rescored.base_from["meld"] == ""
    for frame in (reused.predictions, rescored.predictions):
        assert frame.groupby(["dataset", "probe"]).size().eq(12).all()
    a = reused.predictions.sort_values(["dataset", "probe", "example_id"]).reset_index(drop=True)
    b = rescored.predictions.sort_values(["dataset", "probe", "example_id"]).reset_index(drop=True)
    scores = [c for c in a.columns if c.startswith("ll_") and a[c].notna().all()]
    assert scores and (a["pred_id"] == b["pred_id"]).all()
    np.testing.assert_allclose(a[scores].to_numpy(), b[scores].to_numpy(), rtol=0, atol=1e-5)
    # every probe scored the same utterances as the base arm
    for _, part in a.groupby("dataset"):
        ids = [tuple(sorted(g["example_id"])) for _, g in part.groupby("probe")]
        assert len(set(ids)) == 1


def test_reuse_is_refused_when_notebook_04_scored_other_prompts(run_folder, tmp_path):
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(run_folder, copy)
    summary_path = RunLayout(copy).evaluation() / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["scoring_settings"]["prompt"]["context_turns"] = 2
    summary_path.write_text(json.dumps(summary))
    assert probes.base_source(probes.plan_probes(copy, per_dataset=12)) == {}
    # and a sample notebook 04 did not score is rescored, not half reused
    assert probes.base_source(probes.plan_probes(run_folder, per_dataset=0, split="dev")) == {}


def test_stage_outputs_summary_files_and_figure(run_folder, adapter_model, tmp_path):
    model, tokenizer = adapter_model
    plan = probes.plan_probes(
        run_folder, probes=["context_z0", "descriptions_on", "adapter_off"], per_dataset=12
    )
    result = probes.run_probes(plan, model, tokenizer, progress=False)
    summary = probes.summarise(result.predictions, n_resamples=200)
    assert set(summary[summary["dataset"] == "emorynlp"]["probe"]) == {"base", "context_z0", "adapter_off"}
    base = summary[summary["probe"] == probes.BASE]
    assert base["diff_weighted_f1"].isna().all()
    others = summary[summary["probe"] != probes.BASE]
    assert (others["diff_weighted_f1_low"] <= others["diff_weighted_f1_high"]).all()
    covers = (others["diff_weighted_f1_low"] <= 0) & (others["diff_weighted_f1_high"] >= 0)
    assert (others.loc[covers, "verdict_weighted_f1"] == probes.NO_DIFFERENCE).all()
    assert (others.loc[~covers, "verdict_weighted_f1"] != probes.NO_DIFFERENCE).all()
    # the descriptions probe on a corpus without them would be the base prompt: MELD's row only
    assert result.scored["adapter_off/meld"] == 12
    folder = probes.save_probes(plan, result, summary)
    saved = pd.read_csv(folder / "predictions.csv")
    assert len(saved) == len(result.predictions) and {"p_neutral", "ll_neutral", "dialogue_id"} <= set(saved)
    assert json.loads((folder / "settings.json").read_text())["per_dataset"] == 12
    shown = probes.readable(summary)
    assert shown["verdict"].iloc[0] == "(base)"
    figure = probe_differences_from_run(run_folder, tmp_path)
    assert figure == tmp_path / FIGURE and figure.stat().st_size > 10_000
    records = probes.probe_records(plan, result, summary)
    assert records["probes"]["base/meld"]["n"] == 12


def test_prompt_costs_count_tokens_without_a_model(run_folder, tiny_model_dir):
    plan = probes.plan_probes(run_folder, per_dataset=12)
    costs = probes.prompt_costs(plan, loading.load_model(tiny_model_dir, dtype="fp32").tokenizer)
    meld = costs[costs["dataset"] == "meld"].set_index("probe")
    assert meld.loc["base", "to_score"] == 0 and meld.loc["base", "relative_cost"] == 1.0
    assert meld.loc["context_z0", "relative_cost"] < 1.0 < meld.loc["context_zall", "relative_cost"]
    assert meld.loc["adapter_off", "to_score"] == 12  # the same prompts, but the other adapter state
    assert "descriptions_on" not in set(costs[costs["dataset"] == "emorynlp"]["probe"])


def test_each_probes_prompts_are_built_once_per_plan_and_tokenizer(run_folder, tiny_model_dir):
    """The cost table (a tokenizer-only load) and the scoring (the model's tokenizer) share the prompts."""
    plan = probes.plan_probes(run_folder, per_dataset=12)
    tokenizer = loading.load_model(tiny_model_dir, dtype="fp32").tokenizer
    probes.prompt_costs(plan, tokenizer)
    n_built = len(plan.built)
    assert n_built == sum(len(probes.applicable(plan.probes, d)) for d in plan.corpora)
    base = next(p for p in plan.probes if p.name == probes.BASE)
    again = loading.load_model(tiny_model_dir, dtype="fp32").tokenizer  # the same files, another object
    first = probes.build_examples(plan, base, "meld", tokenizer)
    assert probes.build_examples(plan, base, "meld", again) is first and len(plan.built) == n_built
    again.add_tokens(["<another-vocabulary>"])  # a different tokenizer builds its own prompts
    other = probes.build_examples(plan, base, "meld", again)
    assert other is not first and len(plan.built) == n_built + 1
    assert [e.prompt_ids for e in other[1]] == [e.prompt_ids for e in first[1]]
