"""Ablation arms: files in configs/ablations resolve on a base profile and change only their own setting;
arms are evaluated with one adapter (tiny random LLaMA), summarised over seeds and set beside the paper."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from tiny import shared_dir

from dialoguellm import config as config_mod
from dialoguellm import prompts
from dialoguellm.analysis import ablation
from dialoguellm.config import load_config
from dialoguellm.corpora.labels import LABELS
from dialoguellm.model import loading as modeling
from dialoguellm.runs import RunLayout, hardware_description
from dialoguellm.scoring import predictions

PROFILES = [p for p in ("cpu", "paper") if (config_mod.PROFILES_DIR / f"{p}.yaml").is_file()]


@pytest.mark.parametrize("profile", PROFILES)
def test_every_arm_changes_only_its_own_setting(profile):
    base = load_config(profile).to_dict()
    base.pop("source")
    for arm in ablation.load_arms(profile=profile):
        resolved = arm.config.to_dict()
        resolved.pop("source")
        changed = {
            f"{section}.{key}"
            for section, values in resolved.items()
            for key, value in values.items()
            if base[section][key] != value
        }
        declared = {f"{s}.{k}" for s, values in arm.overrides.items() for k in values}
        assert changed <= declared, f"{arm.name} changes {changed - declared} without declaring it"
        assert str(arm.path).endswith(f"{arm.name}.yaml")


def test_the_grid_covers_the_papers_comparisons():
    arms = ablation.load_arms(profile=PROFILES[0])
    by_group: dict[str, set] = {}
    for arm in arms:
        s = arm.settings()
        value = {
            "context": s["context_turns"],
            "video": s["use_video"],
            "lora": s["tuned"],
            "k_shot": s["k_shot"],
        }
        by_group.setdefault(arm.group, set()).add(value[arm.group])
    assert by_group == {
        "context": {"0", "1", "2", "3", "all"},
        "video": {True, False},
        "lora": {True, False},
        "k_shot": {0, 1, 5},
    }


def test_bad_arm_files_are_refused_with_the_file_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("arm: {name: x, group: colour}\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: arm.group is 'colour'"):
        ablation.load_arm(bad, "paper")
    bad.write_text("arm: {name: x, group: context, seeds: 3}\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) arm.seeds"):
        ablation.load_arm(bad, "paper")
    bad.write_text("arm: {name: x, group: context}\nprompt: {window: 2}\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*unknown key prompt.window"):
        ablation.load_arm(bad, "paper")
    with pytest.raises(FileNotFoundError, match="Known arms: .*context_z0"):
        ablation.load_arm("context_z9", "paper")


def test_base_settings_are_the_profile_without_any_arm():
    base = ablation.load_base("paper")
    assert ablation.base_settings_of(base) == {
        "context_turns": "1",
        "k_shot": 1,
        "use_video": True,
        "tuned": True,
    }
    assert ablation.base_settings_of(base) == ablation.load_arm("kshot_1", "paper").settings()


def test_video_arms_collapse_where_a_corpus_has_no_video():
    on, off = ablation.load_arms(["video_on", "video_off"], profile="paper")
    assert ablation.eval_key(on, "meld") != ablation.eval_key(off, "meld")
    assert ablation.eval_key(on, "emorynlp") == ablation.eval_key(off, "emorynlp")
    tuned, untuned = ablation.load_arms(["lora_tuned", "lora_untuned"], profile="paper")
    assert ablation.train_key(tuned) != ablation.train_key(untuned)
    assert ablation.train_key(tuned) == ablation.train_key(on)  # the same adapter is trained once


def test_paper_values_come_from_paper_md():
    paper = ablation.paper_ablations()
    assert set(paper["arm"]) >= {a.name for a in ablation.load_arms(profile="paper")}
    row = paper.set_index(["arm", "dataset"]).loc[("context_z0", "meld")]
    assert (row["accuracy"], row["weighted_f1"]) == (70.91, 67.94)
    root = shared_dir()
    if root is None:
        pytest.skip("../shared/PAPER.md not present")
    text = (root / "PAPER.md").read_text()
    for value in paper[["accuracy", "weighted_f1"]].stack().dropna():
        assert re.search(rf"\b{value:.2f}\b", text), f"{value:.2f} is not in PAPER.md"


def test_summary_and_table_put_each_arm_beside_the_paper():
    runs = pd.DataFrame(
        [
            {"arm": "context_z0", "group": "context", "label": "z = 0", "context_turns": "0", "k_shot": 1,
             "use_video": True, "tuned": True, "dataset": "meld", "split": "test", "seed": seed, "n": 50,
             "accuracy": acc, "weighted_f1": acc - 0.1, "macro_f1": 0.2, "same_predictions_as": ""}
            for seed, acc in ((1, 0.50), (2, 0.60))
        ]
    )  # fmt: skip
    base = {"arm": "context_z1", "label": "z = 1", "context_turns": "1"}
    runs = pd.concat([runs, runs.assign(**base, accuracy=runs["accuracy"] + [0.10, 0.05])], ignore_index=True)
    summary = ablation.summarise(
        runs, base={"context_turns": "1", "k_shot": 1, "use_video": True, "tuned": True}
    )
    assert summary.loc[0, "accuracy_mean"] == pytest.approx(55.0)
    # Paired per seed: z = 0 is 10 and 5 points below the base arm on the same utterances.
    assert summary.loc[0, "delta_accuracy_mean"] == pytest.approx(-7.5)
    assert summary.loc[0, "delta_accuracy_sd"] == pytest.approx(np.std([-10, -5], ddof=1))
    assert summary.loc[1, "delta_accuracy_mean"] == pytest.approx(0.0)
    assert summary.loc[0, "accuracy_sd"] == pytest.approx(np.std([50, 60], ddof=1))
    table = ablation.ablation_table(summary, model="tiny", hardware=hardware_description())
    row = table.iloc[0]
    assert row["ours_accuracy"] == "55.0 +- 7.1 (2 seeds)"
    assert row["paper_accuracy"] == 70.91 and row["paper_row"] == "- without context"
    assert row["paper_delta_weighted_f1"] == pytest.approx(67.94 - 71.90)
    assert row["model"] == "tiny" and ("CPU" in row["hardware"] or "CUDA" in row["hardware"])


# ------------------------------------------------------------------------------------ with a model


def _corpus(dataset: str, n_dialogues: int = 6) -> dict[str, pd.DataFrame]:
    labels = LABELS[dataset]
    out = {}
    for split in ("train", "dev", "test"):
        rows = []
        for d in range(n_dialogues):
            for t in range(3):
                i = len(rows)
                rows.append(
                    {"dataset": dataset, "split": split, "dialogue_id": f"{split}{d}", "turn": t,
                     "utterance_id": f"{split}_{d}_{t}", "speaker": "Ann" if t % 2 else "Bob",
                     "text": f"this is utterance {t} of scene {d}", "label": labels[i % len(labels)],
                     "label_id": i % len(labels), "clip_id": f"dia{d}_utt{t}" if dataset == "meld" else None}
                )  # fmt: skip
        out[split] = pd.DataFrame(rows)
    return out


@pytest.mark.slow
def test_arms_are_evaluated_with_one_adapter(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dialoguellm.prompts import make_builders

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = None
    model = modeling.add_lora(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), 4, 16, 0.0, ["q_proj", "v_proj"]
    )
    torch.manual_seed(1)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # a fresh adapter is the identity; make it change the model
            param.data.normal_(0, 0.5)
    corpora = {"meld": _corpus("meld"), "emorynlp": _corpus("emorynlp")}
    names = ["context_z0", "context_z1", "video_on", "video_off", "lora_tuned", "lora_untuned", "kshot_0"]
    arms = ablation.load_arms(names, profile="paper", overrides={"prompt.cutoff_len": 4096})
    descriptions = {
        "test": {f"dia{d}_utt{t}": "Two people talk in a kitchen." for d in range(6) for t in range(3)}
    }
    runs, frames = ablation.evaluate_arms(
        arms,
        corpora,
        model,
        tokenizer,
        per_dataset=9,
        seeds=[1, 2],
        descriptions=descriptions,
        progress=False,
    )
    assert len(runs) == len(names) * 2 * 2 and (runs["n"] == 9).all()
    # Every arm of a seed sees the same utterances; different seeds draw different ones.
    ids = {key: tuple(frame["example_id"]) for key, frame in frames.items()}
    assert len({ids[(a, "meld", 1)] for a in names}) == 1
    assert ids[("context_z0", "meld", 1)] != ids[("context_z0", "meld", 2)]
    shared = runs.set_index(["arm", "dataset", "seed"])["same_predictions_as"]
    assert shared[("video_off", "emorynlp", 1)] == "context_z1"  # no video in EmoryNLP: one evaluation
    assert shared[("video_off", "meld", 1)] == ""
    p_cols = [c for c in frames[("lora_tuned", "meld", 1)] if c.startswith("p_")]
    on, off = frames[("video_on", "meld", 1)][p_cols], frames[("video_off", "meld", 1)][p_cols]
    assert not np.allclose(on, off)  # the description is in the prompt
    # The untuned arm is the base model without the adapter.
    untuned = frames[("lora_untuned", "meld", 1)]
    assert not np.allclose(untuned[p_cols], frames[("lora_tuned", "meld", 1)][p_cols])
    bare = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    arm = arms[names.index("lora_untuned")]
    p = arm.config.prompt
    builder = make_builders(
        tokenizer, {"meld": corpora["meld"]}, template=p.template, style=p.style, context_turns=p.context_turns,
        k_shot=p.k_shot, seed=arm.config.train.seed, use_video=p.use_video, cutoff_len=p.cutoff_len,
    )["meld"]  # fmt: skip
    only = prompts.sample_positions(corpora["meld"]["test"], 9, 1)
    examples = builder.build_split(corpora["meld"]["test"], descriptions["test"], only=only)
    assert arm.config.eval.length_normalise  # from dialoguellm/profiles/cpu.yaml, the arms' base
    expected = predictions.predict_by_scoring(
        bare, tokenizer, builder, examples, progress=False, length_normalise=arm.config.eval.length_normalise
    )
    np.testing.assert_allclose(untuned[p_cols], expected[p_cols], atol=1e-4)
    summary = ablation.summarise(runs)
    assert (summary["seeds"] == 2).all() and len(summary) == len(names) * 2


def test_evaluating_on_the_training_split_is_refused():
    arm = ablation.load_arm("kshot_0", "paper")
    with pytest.raises(ValueError, match="never on the training split"):
        ablation.predict_arm(arm, "meld", _corpus("meld"), None, None, split="train", only=None)


@pytest.mark.slow
def test_train_mode_trains_each_arm_once_and_resumes(tiny_model_dir, tmp_path):
    from tiny import synthetic_corpus

    overrides = {
        "model.name": tiny_model_dir, "model.dtype": "fp32", "model.num_threads": 1,
        "data.datasets": ["meld"], "data.train_per_dataset": 8, "data.dev_per_dataset": 4,
        "data.test_per_dataset": 5, "train.batch_size": 4, "train.micro_batch_size": 4, "train.grad_accum": 1,
        "train.max_steps": 1, "train.eval_every": 1, "train.save_every": 1, "prompt.cutoff_len": 1024,
    }  # fmt: skip
    arms = ablation.load_arms(
        ["context_z0", "lora_tuned", "lora_untuned"], profile="cpu", overrides=overrides
    )
    corpora = {"meld": synthetic_corpus("meld")}
    runs = ablation.train_and_evaluate_arms(arms, corpora, tmp_path, seeds=[3], progress=False)
    assert list(runs["arm"]) == ["context_z0", "lora_tuned", "lora_untuned"] and (runs["n"] == 5).all()
    folder = RunLayout(tmp_path).ablations / "runs"
    adapters = sorted(p.parent.relative_to(folder).as_posix() for p in folder.rglob("adapter_config.json"))
    # lora_untuned trains nothing and evaluates the bare model; the other two arms differ in z: two adapters.
    assert adapters == ["context_z0/seed3/adapter", "lora_tuned/seed3/adapter"]
    stamp = (folder / "context_z0/seed3/adapter/adapter_model.safetensors").stat().st_mtime
    again = ablation.train_and_evaluate_arms(arms[:1], corpora, tmp_path, seeds=[3], progress=False)
    assert (folder / "context_z0/seed3/adapter/adapter_model.safetensors").stat().st_mtime == stamp  # reused
    assert again.iloc[0]["accuracy"] == runs.iloc[0]["accuracy"]


def test_results_are_saved_and_the_figure_redrawn_from_them(tmp_path, capsys):
    from dialoguellm.plots.registry import FIGURES

    runs = pd.DataFrame(
        [
            {"arm": arm, "group": group, "label": arm, "context_turns": z, "k_shot": 1, "use_video": False,
             "tuned": True, "dataset": "meld", "split": "test", "seed": seed, "n": 30, "accuracy": 0.4 + 0.01 * seed,
             "weighted_f1": 0.3, "macro_f1": 0.2, "same_predictions_as": ""}
            for arm, group, z in (("context_z0", "context", "0"), ("context_z1", "context", "1"))
            for seed in (1, 2)
        ]
    )  # fmt: skip
    table = ablation.ablation_table(ablation.summarise(runs), model="m", hardware="h")
    ablation.save_results(runs, table, tmp_path, {"mode": "evaluate"})
    assert (
        ablation.load_ablation_results(tmp_path).shape[0] == 2
        and ablation.load_settings(tmp_path)["mode"] == "evaluate"
    )
    out = tmp_path / "figures"
    out.mkdir()
    assert FIGURES["ablation_results"](tmp_path, out).stat().st_size > 10_000
    assert ablation.main(["--list", "--profile", "paper"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == len(ablation.arm_paths())
