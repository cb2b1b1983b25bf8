"""A learning curve (samples.train_per_dataset as a list of sizes): nested, deterministic draws; the packaged
curve files; the ablation grid's plan unchanged by it; a tiny 2-size x 1-seed curve run end to end (killed in a
training and resumed) with its TF-IDF and untuned baselines; the table and figure on synthetic records."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_experiments import TINY, _corpora, _spy, kill_the_second_training

from dialoguellm.experiments import record, runner, spec, summary
from dialoguellm.prompts import nested_sample_order
from dialoguellm.runs import ExperimentLayout

SIZES = (spec.TrainSize(4), spec.TrainSize(8), spec.TrainSize(0))


def _curve(sizes=SIZES, seeds=(1, 2)) -> spec.Experiment:
    experiment = spec.load_experiment("learning_curve_cpu", overrides={"model.name": "unused"})
    experiment.samples = spec.Samples(0, 4, 6, "test", 0, train_sizes=tuple(sizes))
    experiment.seeds = list(seeds)
    return experiment


# ------------------------------------------------------------------------------------------- the draws


def test_every_prefix_of_the_nested_order_is_stratified_and_the_order_is_fixed_by_the_seed():
    rng = np.random.default_rng(0)
    labels = rng.choice(5, size=300, p=[0.5, 0.2, 0.15, 0.1, 0.05]).tolist()
    order = nested_sample_order(labels, 7)
    assert sorted(order) == list(range(300)) and order == nested_sample_order(labels, 7)
    assert order != nested_sample_order(labels, 8)
    share = Counter(labels)
    for k in (10, 50, 100, 200):
        taken = Counter(labels[i] for i in order[:k])
        for label, count in share.items():
            assert abs(taken[label] - k * count / 300) <= 1, (k, label)


def test_for_one_seed_each_size_holds_the_smaller_ones_and_the_same_seed_draws_the_same():
    corpora, experiment = _corpora(), _curve()
    plan = runner.plan_samples(experiment, corpora)
    again = runner.plan_samples(_curve(), _corpora())
    assert plan["train"] == again["train"]
    for seed in (1, 2):
        for d in ("meld", "emorynlp"):
            draws = [set(plan["train"][runner.draw_key(seed, s)][d]["example_id"]) for s in SIZES]
            assert [len(x) for x in draws] == [4, 8, len(corpora[d]["train"])]
            assert draws[0] < draws[1] < draws[2]
    small = {s: plan["train"][runner.draw_key(s, SIZES[1])]["meld"]["example_id"] for s in (1, 2)}
    assert small[1] != small[2]  # each seed draws its own
    # the dev and test samples do not depend on the sizes
    single = _curve()
    single.samples = spec.Samples(8, 4, 6, "test", 0)
    one = runner.plan_samples(single, corpora)
    assert (one["dev"], one["test"]) == (plan["dev"], plan["test"])


def test_every_arm_of_a_size_and_seed_trains_on_the_same_rows():
    corpora, experiment = _corpora(), _curve()
    plan = runner.plan_samples(experiment, corpora)
    trained = {}
    for arm in ("base", "tfidf_lr"):
        config = runner.unit_config(experiment.arm(arm), 1, experiment)
        used, dropped = runner.unit_corpora(
            config, plan, 1, corpora, runner.removed_by_arm(config, corpora), SIZES[1]
        )
        trained[arm] = {d: [r["utterance_id"] for r in u["train"]] for d, u in used.items()}
        draw = plan["train"]["n8.seed1"]["meld"]["example_id"]
        assert sorted(trained[arm]["meld"] + dropped["meld"]) == sorted(draw)
    assert trained["base"] == trained["tfidf_lr"]


# --------------------------------------------------------------------------------- the curve files


@pytest.mark.filterwarnings("ignore:.*IEMOCAP_DIR is not set")
def test_the_packaged_curves_read_as_sizes_with_unique_units():
    cpu = spec.load_experiment("learning_curve_cpu")
    assert [s.label for s in cpu.sizes] == [
        "100",
        "200",
        "400",
        "800",
        "1600",
        "3200",
        "all",
    ] and cpu.seeds == [
        1,
        2,
        3,
    ]
    assert cpu.sizes[-1].seeds == (1,) and cpu.baseline == "tfidf_lr"
    assert {a.name: (a.kind, a.tuned) for a in cpu.arms} == {
        "base": ("llm", True), "tfidf_lr": ("tfidf_lr", True), "no_lora": ("llm", False),
    }  # fmt: skip
    names = [record.unit_name(u.arm.name, u.seed, u.size.label if u.size else None) for u in cpu.units()]
    assert len(names) == len(set(names)) == 1 + 2 * (6 * 3 + 1)
    assert names[:3] == ["no_lora.untrained", "base.n100.seed1", "tfidf_lr.n100.seed1"]
    assert "base.n3200.seed3" in names and "base.all.seed1" in names and "base.all.seed2" not in names
    assert cpu.untuned_draw() == (1, cpu.sizes[-1])

    paper = spec.load_experiment("learning_curve_paper")
    labels = [s.label for s in paper.sizes]
    assert labels == ["1/64", "1/32", "1/16", "1/8", "1/4", "1/2", "all"] and paper.sizes[-1].seeds == (42,)
    assert paper.arm("base").config.model.name == "meta-llama/Llama-2-7b-hf"
    assert [paper.sizes[k].of(9989) for k in (2, 3)] == [624, 1249]  # InstructERC's 1/16 and 1/8 of MELD
    assert record.unit_name("base", 42, "1/16") == "base.f1of16.seed42"


def test_a_bad_size_list_is_refused_with_the_file_and_the_fix(tmp_path):
    bad = tmp_path / "curve.yaml"
    good = {"profile": "cpu", "arms": ["base"], "seeds": [1, 2], "samples": {"test_per_dataset": 5}}
    for sizes, message in (
        ([200, 100], "not growing"),
        ([100, "1/4"], "mixes counts and fractions"),
        ([100, 100], "repeats a size"),
        ([100, "many"], "is not a size"),
        ([100, {"size": 200, "seeds": [9]}], "seeds must be a non-empty list of the experiment's seeds"),
        ([{"size": 100, "each": 2}], "has keys other than size, seeds"),
        (["3/2"], "is not a size"),
    ):
        bad.write_text(yaml.safe_dump({**good, "samples": {"train_per_dataset": sizes}}))
        with pytest.raises(ValueError, match=f"curve.yaml: .*{message}"):
            spec.load_experiment(bad)
    bad.write_text(yaml.safe_dump({**good, "samples": {"train_per_dataset": ["1/4", 0.5, "all"]}}))
    sizes = spec.load_experiment(bad).samples.train_sizes
    assert [s.fraction for s in sizes] == [Fraction(1, 4), Fraction(1, 2), None] and sizes[2].label == "all"


# ----------------------------------------------- the running ablation grid resumes on this code

# The packaged ablations_cpu and overlap_removal on the vendored corpora: sha256 of the sorted JSON of their
# training/dev/test ids (as the code before learning curves drew them), and their unit names. Their committed
# plans (results/cpu/in_progress or results/cpu/experiments) were written by older code: this code must accept
# them as the same experiment (runner.same_identity), or the grids they started could not resume here.
FROZEN = {
    "ablations_cpu": ("d46610ac5b251404", 26, ["no_lora.untrained", "base.seed1"]),
    "overlap_removal": ("921603eb02bcd4e7", 6, ["removed.seed1", "kept.seed1"]),
}


def _committed_plan(name: str) -> dict:
    results = Path(__file__).resolve().parents[2] / "results" / "cpu"
    for folder in (results / "in_progress" / name, summary.committed_folder(name, results)):
        plan = folder / "experiment.json"
        if plan.is_file() and "identity" in (found := json.loads(plan.read_text(encoding="utf-8"))):
            return found  # (a plan converted from the retired runner has no identity)
    pytest.skip(f"no committed plan of {name} in {results}/experiments or in_progress yet: no grid to resume")


@pytest.mark.parametrize("name", sorted(FROZEN))
def test_one_size_experiments_keep_their_plan_identity_and_unit_names(name, tmp_path):
    samples_hash, n_units, first = FROZEN[name]
    committed = _committed_plan(name)["identity"]
    # the grids run with --set model.num_threads=1 beside other work: the plan records that setting too
    threads = next(iter(committed["arms"].values()))["model"]["num_threads"]
    experiment = spec.load_experiment(name, overrides={"model.num_threads": threads})
    corpora = runner.experiment_corpora(experiment)
    plan = runner.open_plan(
        experiment, ExperimentLayout(tmp_path), runner.plan_samples(experiment, corpora), "test"
    )

    def digest(value) -> str:
        return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]

    identity = plan["identity"]
    assert set(identity) == {"arms", "seeds", "samples"}
    assert digest(identity["samples"]) == samples_hash, "the training, dev or test draws changed"
    assert runner.same_identity(committed, identity), (
        "the resolved arm settings changed (a new config key away from its default?): the committed grid "
        "would refuse to resume"
    )
    names = [record.unit_name(*u) for u in plan["units"]]
    assert len(names) == n_units and names[:2] == first and all(len(u) == 2 for u in plan["units"])
    assert (
        "sizes" not in plan and plan["samples"]["train_per_dataset"] == experiment.samples.train_per_dataset
    )


# ----------------------------------------------------------------------------- a tiny curve, end to end


@pytest.mark.slow
def test_a_tiny_curve_runs_is_killed_resumes_and_records_its_baselines(tiny_model_dir, tmp_path, monkeypatch):
    from dialoguellm.plots.learning_curve import plot_learning_curve
    from dialoguellm.report import experiment_table
    from dialoguellm.training import loop

    experiment = spec.load_experiment("learning_curve_cpu", overrides={**TINY, "model.name": tiny_model_dir})
    experiment.samples = spec.Samples(0, 4, 6, "test", 0, train_sizes=(spec.TrainSize(4), spec.TrainSize(8)))
    experiment.seeds = [1]
    corpora, layout = _corpora(), ExperimentLayout(tmp_path / "experiments" / "learning_curve_cpu")

    real = kill_the_second_training(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        runner.run_experiment(experiment, corpora, layout, progress=False, command="run 1")
    done = sorted(p.name for p in layout.units.iterdir())
    assert done == ["base.n4.seed1.json", "no_lora.untrained.json", "tfidf_lr.n4.seed1.json"]
    assert (layout.training("base", 1, "n8") / "checkpoint").is_dir()

    monkeypatch.setattr(loop, "_evaluate_dev", real)
    resumed: list = []
    monkeypatch.setattr(loop, "train", _spy(loop.train, resumed))
    ran = runner.run_experiment(experiment, corpora, layout, progress=False, command="run 2")
    assert ran == ["base.n8.seed1", "tfidf_lr.n8.seed1"] and resumed == [True]
    assert runner.run_experiment(experiment, corpora, layout, progress=False, command="run 3") == []

    plan = record.load_plan(layout.root)
    assert plan["sizes"] == ["4", "8"] and plan["units"][1] == ["base", 1, "4"]
    units = {(u.arm, u.size): u for u in record.load_units(layout.root)}
    assert sorted(units, key=str) == sorted(
        [("no_lora", None), ("base", "4"), ("tfidf_lr", "4"), ("base", "8"), ("tfidf_lr", "8")], key=str
    )
    for d in ("meld", "emorynlp"):
        small, large = (
            set(units["base", s].samples[d]["train"]) | set(units["base", s].removed[d]) for s in "48"
        )
        assert small < large and len(small) == 4 and len(large) == 8  # nested, per corpus
        for size in "48":
            base, tfidf = units["base", size], units["tfidf_lr", size]
            assert tfidf.samples[d] == base.samples[d] and tfidf.seed == base.seed == 1
            assert (
                tfidf.config["kind"] == "tfidf_lr" and tfidf.identity.config_hash != base.identity.config_hash
            )
            assert tfidf.identity.adapter is None and any(
                n.startswith(f"{d}: ") and "chosen on the dev sample" in n for n in tfidf.notes
            )
            assert np.allclose(np.sum(tfidf.predictions[d].label_scores, axis=1), 1, atol=1e-4)
            assert 0 <= tfidf.metrics[d]["weighted_f1"] <= 1
        assert units["no_lora", None].samples[d]["train"] == []
    assert units["base", "8"].identity.adapter.startswith(str(layout.training("base", 1, "n8")))

    table = summary.curve_table(layout.root, n_resamples=200).set_index(["arm", "dataset"])
    rows = table.loc[("base", "meld")]
    assert list(rows["size"]) == ["4", "8"] and list(rows["runs"]) == [1, 1]
    assert rows["delta_weighted_f1"].notna().all() and np.isnan(rows["gain_weighted_f1"].iloc[0])
    assert rows["gain_weighted_f1"].iloc[1] == pytest.approx(
        rows["weighted_f1"].iloc[1] - rows["weighted_f1"].iloc[0]
    )
    assert table.loc[("no_lora", "meld"), "runs"] == 1
    text = experiment_table(layout.root, n_resamples=200)
    assert "Learning curve" in text and "| meld | base (z = 1, k = 1) | 8 |" in text
    assert plot_learning_curve(
        summary.curve_table(layout.root, n_resamples=200), tmp_path / "c.png"
    ).is_file()
    with pytest.raises(ValueError, match="learning curve"):
        summary.summary_table(layout.root)

    # the checks every committed experiment folder passes (test_experiment_records.py) hold for a curve
    import test_experiment_records as committed

    folder = (record.load_plan(layout.root), record.load_units(layout.root))
    committed.test_every_unit_is_scored_on_the_plans_test_sample(folder)
    committed.test_the_arms_of_a_seed_train_on_the_same_draw_except_what_they_drop(folder)
    committed.test_metrics_are_fractions_recomputed_from_the_predictions(folder)
    committed.test_a_learning_curves_draws_are_nested_per_seed(folder)


# ------------------------------------------------------------------ table and figure, synthetic records


def test_the_curve_table_and_figure_read_synthetic_records(tmp_path):
    from tiny import synthetic_experiment_records

    from dialoguellm.plots import registry
    from dialoguellm.plots.learning_curve import FIGURE
    from dialoguellm.report import learning_curve_table

    assert "learning_curve" in registry.missing_inputs(tmp_path)  # absent until records exist
    assert registry.FIGURES["learning_curve"](tmp_path, tmp_path) is None
    folder = synthetic_experiment_records(
        tmp_path / "experiments" / "learning_curve_cpu", experiment="learning_curve_cpu"
    )
    table = summary.curve_table(folder, n_resamples=200)
    base = table[(table["arm"] == "base") & (table["dataset"] == "meld")]
    assert list(base["size"]) == ["100", "200", "400", "800", "1600", "3200", "all"]
    assert list(base["train_utterances"])[:6] == [100, 200, 400, 800, 1600, 3200]
    assert base["train_utterances"].iloc[-1] > 3200  # the whole split
    assert list(base["runs"]) == [3, 3, 3, 3, 3, 3, 1]
    last = base.iloc[-1]
    assert (
        last["weighted_f1_covers"] == "test dialogues" and last["gain_weighted_f1_covers"] == "test dialogues"
    )
    assert (base["weighted_f1_low"] <= base["weighted_f1"]).all() and (
        base["weighted_f1"] <= base["weighted_f1_high"]
    ).all()
    once = table[table["arm"] == "no_lora"]
    assert len(once) == 2 and once["size"].isna().all() and once["train_utterances"].isna().all()
    text = learning_curve_table(folder, n_resamples=200)
    assert "| meld | no LoRA (untuned) | - | - | once (trains nothing) |" in text
    assert (
        "minus TF-IDF + logistic regression [95% CI]" in text
        and "| meld | base (z = 1, k = 1) | 3200 | 3,200 | 3 |" in text
    )
    assert "learning_curve" not in registry.missing_inputs(tmp_path)
    drawn = registry.FIGURES["learning_curve"](tmp_path, tmp_path / "out")
    assert drawn == tmp_path / "out" / FIGURE and drawn.stat().st_size > 10_000


def _curve_rows(
    verdicts, gain=(0.012, -0.008, 0.031, "no measurable difference", "test dialogues")
) -> pd.DataFrame:
    sizes = ["100", "200", "400", "800"]
    rows = [
        {
            "arm": "tfidf_lr",
            "label": "TF-IDF",
            "tuned": True,
            "dataset": "meld",
            "size": s,
            "seeds": [1, 2, 3],
        }
        for s in sizes
    ]
    for i, (size, verdict) in enumerate(zip(sizes, verdicts, strict=True)):
        rows.append({
            "arm": "base", "label": "LoRA", "tuned": True, "dataset": "meld", "size": size,
            "seeds": [1] if size == "800" else [1, 2, 3], "delta_weighted_f1": 0.01 * (i + 1),
            "delta_weighted_f1_low": 0.005 * (i + 1), "delta_weighted_f1_high": 0.02 * (i + 1),
            "delta_weighted_f1_verdict": verdict, "gain_weighted_f1": gain[0] if i else float("nan"),
            "gain_weighted_f1_low": gain[1], "gain_weighted_f1_high": gain[2],
            "gain_weighted_f1_verdict": gain[3], "gain_weighted_f1_covers": gain[4],
        })  # fmt: skip
    rows.append(
        {"arm": "no_lora", "label": "untuned", "tuned": False, "dataset": "meld", "size": None, "seeds": []}
    )
    return pd.DataFrame(rows)


def test_the_readme_sentences_say_where_lora_passes_the_baseline_and_the_last_steps_gain(tmp_path):
    from dialoguellm.report import learning_curve_summary

    (tmp_path / "experiment.json").write_text(json.dumps({"baseline": "tfidf_lr"}))
    higher, none = "A higher", "no measurable difference"
    text = learning_curve_summary(tmp_path, table=_curve_rows([none, higher, higher, higher]))
    assert text == (
        "- meld: LoRA is above TF-IDF from 200 utterances on (+2.0 [+1.0, +4.0] points there); from 400 to 800 "
        "it gains +1.2 [-0.8, +3.1] (no measurable difference; 1 seed, interval over test dialogues)."
    )
    text = learning_curve_summary(tmp_path, table=_curve_rows([higher, none, higher, none]))
    assert "above TF-IDF at 100, 400 utterances, but not at every larger size" in text
    text = learning_curve_summary(tmp_path, table=_curve_rows([none, none, none, higher]))
    assert "LoRA is above TF-IDF only at the largest size, 800 utterances (+4.0 [+2.0, +8.0] points)" in text
    all_sizes = _curve_rows([none, none, none, higher]).replace({"size": {"800": "all"}})
    assert "at the largest size, the whole training split (" in learning_curve_summary(
        tmp_path, table=all_sizes
    )
    gain = (0.05, 0.01, 0.09, "A higher", "training seeds, test dialogues")
    text = learning_curve_summary(tmp_path, table=_curve_rows([none] * 4, gain))
    assert "at no size above TF-IDF (up to 800" in text and "+5.0 [+1.0, +9.0] (a measurable gain" in text


def test_the_readme_block_of_a_synthetic_curve(tmp_path):
    from tiny import synthetic_experiment_records

    from dialoguellm.report import readme_block

    assert readme_block("learning_curve", tmp_path) == ""  # no committed curve: an empty block
    synthetic_experiment_records(
        tmp_path / "experiments" / "learning_curve_cpu", experiment="learning_curve_cpu"
    )
    text = readme_block("learning_curve", tmp_path)
    assert text.startswith(
        "Learning curve (`make learning-curve`, [docs/EXPERIMENTS.md](docs/EXPERIMENTS.md)): LoRA on 100, 200, "
        "400, 800, 1600, 3200, all training utterances per corpus against"
    )
    assert [line.split(":")[0] for line in text.splitlines()[2:]] == ["- meld", "- emorynlp"]
    assert all("from 3200 to all it gains" in line for line in text.splitlines()[2:])
