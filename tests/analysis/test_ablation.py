"""Ablation arms (analysis.ablation): the files in dialoguellm/experiments/arms resolve on a base
profile and change only their own setting, together they ask the paper's questions, their paper rows exist,
and one arm's predictions (tiny random LLaMA) follow its prompt settings. The grids that train them are
tested in tests/experiments/test_experiments.py."""

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
from dialoguellm.labels import LABELS
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


def test_paper_values_come_from_paper_md():
    paper = ablation.paper_ablations()
    arms = ablation.load_arms(profile="paper")
    assert set(paper["arm"]) >= {a.paper for a in arms if a.paper}
    assert [a.name for a in arms if not a.paper] == ["meld_only"]  # the paper trains on every corpus
    row = paper.set_index(["arm", "dataset"]).loc[("context_z0", "meld")]
    assert (row["accuracy"], row["weighted_f1"]) == (70.91, 67.94)
    root = shared_dir()
    if root is None:
        pytest.skip("../shared/PAPER.md not present")
    text = (root / "PAPER.md").read_text()
    for value in paper[["accuracy", "weighted_f1"]].stack().dropna():
        assert re.search(rf"\b{value:.2f}\b", text), f"{value:.2f} is not in PAPER.md"


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
def test_an_arms_predictions_follow_its_prompt_settings(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dialoguellm.prompts import make_builders

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = None
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    corpora = {"meld": _corpus("meld"), "emorynlp": _corpus("emorynlp")}
    base, off = ablation.load_arms(
        ["base", "video_off"], profile="paper", overrides={"prompt.cutoff_len": 4096}
    )
    descriptions = {
        "test": {f"dia{d}_utt{t}": "Two people talk in a kitchen." for d in range(6) for t in range(3)}
    }
    only = prompts.sample_positions(corpora["meld"]["test"], 9, 1)

    def predict(arm, dataset):
        return ablation.predict_arm(
            arm,
            dataset,
            corpora[dataset],
            model,
            tokenizer,
            split="test",
            only=only,
            descriptions=descriptions,
            exclude=prompts.demonstration_exclusions(arm.config, corpora),
        )

    frames = {(a.name, d): predict(a, d) for a in (base, off) for d in corpora}
    p_cols = [c for c in frames[("base", "meld")] if c.startswith("p_")]
    assert len(frames[("base", "meld")]) == 9
    # The description is in the base arm's MELD prompts only; EmoryNLP has none, so both arms agree there.
    assert not np.allclose(frames[("base", "meld")][p_cols], frames[("video_off", "meld")][p_cols])
    e_cols = [c for c in frames[("base", "emorynlp")] if c.startswith("p_")]
    np.testing.assert_allclose(
        frames[("base", "emorynlp")][e_cols], frames[("video_off", "emorynlp")][e_cols]
    )
    # The same as scoring the arm's own prompts directly (demonstrations drawn with its train.seed).
    p = base.config.prompt
    builder = make_builders(
        tokenizer, {"meld": corpora["meld"]}, template=p.template, style=p.style, context_turns=p.context_turns,
        k_shot=p.k_shot, seed=base.config.train.seed, use_video=p.use_video, cutoff_len=p.cutoff_len,
        label_order=p.label_order,
    )["meld"]  # fmt: skip
    examples = builder.build_split(corpora["meld"]["test"], descriptions["test"], only=only)
    expected = predictions.predict_by_scoring(
        model, tokenizer, builder, examples, progress=False, length_normalise=base.config.eval.length_normalise,
        precision=base.config.eval.precision,
    )  # fmt: skip
    np.testing.assert_allclose(frames[("base", "meld")][p_cols], expected[p_cols], atol=1e-4)


def test_evaluating_on_the_training_split_is_refused():
    arm = ablation.load_arm("kshot_0", "paper")
    with pytest.raises(ValueError, match="never on the training split"):
        ablation.predict_arm(arm, "meld", _corpus("meld"), None, None, split="train", only=None, exclude={})


def test_the_cli_lists_every_arm(capsys):
    assert ablation.main(["--list", "--profile", "paper"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == len(ablation.arm_paths())
    assert ablation.main(["--show", "context_z0"]) == 0
    assert "context_turns: 0" in capsys.readouterr().out
