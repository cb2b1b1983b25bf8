"""The one experiment runner: every arm x seed of an experiment file, paired by construction, resumable.

    dialoguellm experiment run ablations_cpu [--set KEY=VALUE ...] [--run-dir runs]

How the arms are paired (``plan``): the test sample (and the dev sample that selects every adapter) is drawn
once per corpus with ``samples.sample_seed``; the training draw is made once per seed and corpus, from the
whole training split, with the seed. Every arm of that seed trains on that draw, minus what the arm itself
drops (the cross-corpus overlap removal of an arm with two or more corpora drops its matched ids, found on
the whole splits; a corpus the arm does not use is absent). Demonstrations come from what the arm trains on.
The unit record holds every id (trained on, removed, dev, test), so the pairing can be checked with pandas.

A scoring variant (``arm.reuses: base``) trains nothing: it scores the adapter the arm it names trained for
the same seed (trained first when its record came from elsewhere and the adapter is gone), with its own
prompt and eval settings; the spec refuses one that changes a training setting.

A learning curve (``samples.train_per_dataset`` a list of sizes) adds a size to every tuned unit: for one seed
the draws of the sizes are nested (prefixes of ``prompts.nested_sample_order``), so a larger size holds the
smaller ones; an arm of ``kind`` ``tfidf_lr`` (``analysis.baselines``) is fitted at every size and seed on the
same rows as the LoRA arms, its C chosen on the same dev sample.

Resumable after kill -9 at any point: the plan is written once (a later run with other settings is
refused), each finished arm x seed is one record written atomically, a training stopped midway continues
from its checkpoint, an adapter already trained is only scored.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from dialoguellm.analysis import baselines
from dialoguellm.analysis.ablation import Arm, predict_arm
from dialoguellm.config import Config
from dialoguellm.corpora import overlap
from dialoguellm.corpora.readers import load_corpora_for
from dialoguellm.experiments.record import (
    FORMAT,
    Predictions,
    RunIdentity,
    UnitRecord,
    config_hash,
    save_unit,
    size_slug,
    unit_name,
)
from dialoguellm.experiments.spec import Experiment, TrainSize, Unit
from dialoguellm.io import atomic_path, read_json, write_json
from dialoguellm.labels import normalised_label_names
from dialoguellm.metrics import classification_metrics
from dialoguellm.model import loading
from dialoguellm.model.card import invocation
from dialoguellm.progress import progress_bar
from dialoguellm.prompts import (
    VIDEO_DATASETS,
    demonstration_exclusions,
    nested_sample_order,
    rows_of,
    sample_positions,
)
from dialoguellm.runs import (
    ExperimentLayout,
    TrainingLayout,
    adapter_fingerprint,
    environment,
    hardware_description,
)
from dialoguellm.training import loop

log = logging.getLogger(__name__)
JOB_FILE = "experiment_unit.json"  # the settings a training folder belongs to


# ------------------------------------------------------------------------------------------- the plan


def _ids(rows: list[Mapping[str, Any]], positions: list[int]) -> dict[str, list]:
    return {
        "position": list(positions),
        "example_id": [str(rows[i].get("utterance_id", i)) for i in positions],
        "dialogue_id": [str(rows[i]["dialogue_id"]) for i in positions],
        "gold_id": [int(rows[i]["label_id"]) for i in positions],
    }


def draw_key(seed: int, size: TrainSize | None = None) -> str:
    """The key of a training draw in the plan: the seed (``1``); in a learning curve size and seed (``n100.seed1``)."""
    return str(seed) if size is None else f"{size_slug(size.label)}.seed{seed}"


def described_ids(
    experiment: Experiment, corpora: Mapping[str, Any], descriptions: Mapping[str, Mapping[str, str]] | None
) -> dict[str, set[str]]:
    """dataset -> ids of the scored split's lines whose clip has a video description (corpora of
    ``prompts.VIDEO_DATASETS`` only; empty without descriptions)."""
    split = experiment.samples.split
    clips = (descriptions or {}).get(split, {})
    return {
        d: {str(r.get("utterance_id")) for r in rows_of(corpora[d][split]) if r.get("clip_id") in clips}
        if d in VIDEO_DATASETS and clips
        else set()
        for d in experiment.datasets
    }


def marks_described(experiment: Experiment) -> bool:
    """Whether the plan marks the described test lines: the samples include them or an arm is scored on them."""
    return experiment.samples.include_described or any(a.score_on == "described" for a in experiment.arms)


def plan_samples(
    experiment: Experiment,
    corpora: Mapping[str, Any],
    descriptions: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """The draws every arm shares: ``test`` and ``dev`` (dataset -> positions and ids, ``sample_seed``) and
    ``train`` (``draw_key`` -> dataset -> positions and ids of that seed's training draw, from the whole
    split; in a learning curve one draw per size and seed, nested for one seed).
    With ``samples.include_overlap`` the training draws and the test sample also hold every line of the
    cross-corpus overlap, and each test entry says which lines overlap (``overlapping``); with
    ``samples.include_described`` the test sample also holds every line with a video description, and when
    that or an arm's ``score_on: described`` asks, each test entry says which lines have one (``described``)."""
    s = experiment.samples
    rows = {
        d: {split: rows_of(corpora[d][split]) for split in ("train", "dev", s.split)}
        for d in experiment.datasets
    }
    leaked: dict[str, dict[str, set[str]]] = {"train": {}, s.split: {}}
    if s.include_overlap:
        used = {d: corpora[d] for d in experiment.datasets}
        leaked = {"train": overlap.leaked_training_utterances(used),
                  s.split: overlap.leaked_evaluation_utterances(used, s.split)}  # fmt: skip
    described = described_ids(experiment, corpora, descriptions) if marks_described(experiment) else {}

    orders: dict[tuple[str, int], list[int]] = {}  # a learning curve's nested order per corpus and seed

    def draw(d: str, split: str, size: int | TrainSize, seed: int) -> dict[str, list]:
        part = rows[d][split]
        matched = leaked.get(split, {}).get(d, set())
        extra = described.get(d, set()) if s.include_described and split == s.split else set()
        must = matched | extra
        forced = {i for i, r in enumerate(part) if str(r.get("utterance_id")) in must}
        rest = [i for i in range(len(part)) if i not in forced]
        if isinstance(size, TrainSize):  # nested: the first n of one order per seed
            if (d, seed) not in orders:
                orders[d, seed] = nested_sample_order([part[j]["label_id"] for j in rest], seed)
            picked = orders[d, seed][: size.of(len(part))]
        else:
            picked = sample_positions([part[j] for j in rest], size, seed)
        chosen = sorted(forced | {rest[i] for i in picked})
        ids = _ids(part, chosen)
        if s.include_overlap and split == s.split:
            ids["overlapping"] = [str(part[i].get("utterance_id")) in matched for i in chosen]
        if described and split == s.split:
            ids["described"] = [e in described[d] for e in ids["example_id"]]
        return ids

    draws = {(u.seed, u.size) for u in experiment.units() if u.seed is not None}
    draws.add(experiment.untuned_draw())
    train = {
        draw_key(seed, size): {
            d: draw(d, "train", s.train_per_dataset if size is None else size, seed) for d in rows
        }
        for seed in experiment.seeds
        for size in experiment.sizes
        if size is None or (seed, size) in draws
    }
    return {
        "test": {d: draw(d, s.split, s.test_per_dataset, s.sample_seed) for d in rows},
        "dev": {d: _ids(r["dev"], sample_positions(r["dev"], s.dev_per_dataset, s.sample_seed)) for d, r in rows.items()},
        "train": train,
    }  # fmt: skip


def removed_by_arm(config: Config, corpora: Mapping[str, Any]) -> dict[str, set[str]]:
    """dataset -> training ids the arm drops: the cross-corpus overlap (``corpora.overlap.removed_ids``) of the
    arm's corpora, found on the whole splits (so a scene goes whole as in a full run); empty when the arm has
    one corpus or ``data.remove_cross_corpus_overlap`` is off."""
    if not config.data.remove_cross_corpus_overlap:
        return {d: set() for d in config.data.datasets}
    removed = overlap.removed_ids(corpora, list(config.data.datasets))
    return {d: set(removed.get(d, ())) for d in config.data.datasets}


def unit_config(arm: Arm, seed: int | None, experiment: Experiment) -> Config:
    """The arm's config for one seed: ``train.seed`` is the seed; the engine hands training exactly the rows
    of the plan, so training takes all it is given (``data.*_per_dataset`` 0)."""
    config = copy.deepcopy(arm.config)
    if seed is not None:
        config.train.seed = seed
    config.data.train_per_dataset = 0
    config.data.dev_per_dataset = 0
    config.data.test_per_dataset = experiment.samples.test_per_dataset
    return config


def unit_corpora(
    config: Config,
    plan: Mapping[str, Any],
    seed: int,
    corpora: Mapping[str, Any],
    removed: Mapping[str, set[str]],
    size: TrainSize | None = None,
) -> tuple[dict[str, dict[str, list]], dict[str, list[str]]]:
    """(dataset -> {train, dev, test rows} the unit uses, dataset -> ids of the draw the arm removed); ``size``:
    the unit's training size in a learning curve."""
    used, dropped = {}, {}
    for d in config.data.datasets:
        train = rows_of(corpora[d]["train"])
        draw = [train[i] for i in plan["train"][draw_key(seed, size)][d]["position"]]
        dev = rows_of(corpora[d]["dev"])
        used[d] = {
            "train": [r for r in draw if str(r["utterance_id"]) not in removed[d]],
            "dev": [dev[i] for i in plan["dev"][d]["position"]],
            "test": rows_of(corpora[d]["test"]),
        }
        dropped[d] = [str(r["utterance_id"]) for r in draw if str(r["utterance_id"]) in removed[d]]
    return used, dropped


def _settings(config: Config) -> dict[str, Any]:
    settings = config.to_dict()
    settings.pop("source", None)  # where it came from (an absolute path) is not a setting
    return json.loads(json.dumps(settings, default=str))


def open_plan(
    experiment: Experiment,
    layout: ExperimentLayout,
    samples: Mapping[str, Any],
    command: str,
    descriptions: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """The experiment's plan, written once; a folder planned with other settings, samples or video
    descriptions (the number of described clips per split) is refused."""
    identity = {
        "arms": {
            a.name: _settings(a.config) | {"tuned": a.tuned} | a.scoring() for a in experiment.arms
        },
        "seeds": experiment.seeds,
        "samples": {k: {d: v["example_id"] for d, v in part.items()} for k, part in samples.items() if k != "train"}
        | {"train": {s: {d: v["example_id"] for d, v in part.items()} for s, part in samples["train"].items()}},
    }  # fmt: skip
    described = {split: len(m) for split, m in sorted((descriptions or {}).items()) if m}
    if described:
        identity["descriptions"] = described
    if experiment.samples.train_sizes:  # a learning curve (one size: the identity is as before)
        identity["sizes"] = experiment.samples.as_plan()["train_per_dataset"]
    if layout.plan.is_file():
        plan = read_json(layout.plan)
        if not same_identity(plan.get("identity"), identity):
            raise ValueError(
                f"{layout.plan} was planned with other settings, arms, seeds or samples; pass another --run-dir "
                "(or move that folder away) to start afresh, or rerun with the settings it records."
            )
        plan["commands"].append(command)
    else:
        plan = {
            "format": FORMAT, "experiment": experiment.name, "file": str(experiment.path),
            "description": experiment.description, "profile": experiment.profile, "baseline": experiment.baseline,
            "seeds": experiment.seeds, "samples": experiment.samples.as_plan(), "set": experiment.overrides,
            "metrics": experiment.metrics, "commands": [command], "identity": identity,
            **({"corrections": experiment.corrections} if experiment.corrections else {}),
            "arms": {a.name: {"label": a.label, "group": a.group, "tuned": a.tuned, "paper": a.paper,
                              "datasets": list(a.config.data.datasets), **a.settings()}
                     | a.scoring() for a in experiment.arms},
            "units": [[u.arm.name, u.seed] + ([u.size.label] if u.size else []) for u in experiment.units()],
            "test": {d: {k: v for k, v in part.items() if k != "position"} for d, part in samples["test"].items()},
        }  # fmt: skip
        if experiment.samples.train_sizes:
            plan["sizes"] = [s.label for s in experiment.samples.train_sizes]
    write_json(layout.plan, plan)
    return plan


def same_identity(planned: Any, now: Any, defaults: Mapping[str, Any] | None = None) -> bool:
    """Whether a plan written earlier asks what ``now`` asks. A setting the package gained after the plan was
    written (absent from ``planned``) counts as the same when it holds its default, so a newer release can
    resume an experiment an older one started; any other difference (a value, an arm, a seed, a sample id)
    is a different experiment."""
    if defaults is None:
        defaults = {"arms": _settings(Config())}
    if isinstance(planned, Mapping) and isinstance(now, Mapping):
        for key, value in now.items():
            if key not in planned:
                if value != (defaults.get(key) if isinstance(defaults, Mapping) else None):
                    return False
            elif not same_identity(planned[key], value, _defaults_below(defaults, key)):
                return False
        return set(planned) <= set(now)
    return planned == now


def _defaults_below(defaults: Any, key: str) -> Any:
    """The defaults one level down; under "arms" every arm name shares the config's defaults."""
    if not isinstance(defaults, Mapping):
        return None
    if "arms" in defaults and key == "arms":
        return {"*": defaults["arms"]}
    return defaults.get(key, defaults.get("*"))


def resume_from(source: str | os.PathLike, layout: ExperimentLayout) -> list[str]:
    """Continue an experiment whose plan and records were copied elsewhere (committed partial results, another
    machine): copies the plan into ``layout`` when it has none, and every unit record it lacks; returns the
    units copied. A plan in ``layout`` that asks something else is refused, and the run itself then checks the
    plan against the experiment file, so records of other settings never mix in. Adapters are not copied: a
    scoring variant whose adapter is gone retrains it."""
    src = ExperimentLayout(Path(source))
    if not src.plan.is_file():
        raise FileNotFoundError(
            f"--resume-from {source}: no {src.plan.name} there; pass the folder that holds the experiment's "
            f"{src.plan.name} and units/ (e.g. results/cpu/in_progress/<name>)."
        )
    planned = read_json(src.plan)
    if layout.plan.is_file():
        if not same_identity(read_json(layout.plan).get("identity"), planned.get("identity")):
            raise ValueError(
                f"--resume-from {source}: {layout.plan} was planned with other settings than {src.plan}; pass "
                "another --run-dir to continue the copied records."
            )
    else:
        write_json(layout.plan, planned)
    copied = []
    for record_file in sorted(src.units.glob("*.json")) if src.units.is_dir() else []:
        target = layout.unit(record_file.stem)
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                tmp.write_bytes(record_file.read_bytes())
            copied.append(record_file.stem)
    return copied


# ------------------------------------------------------------------------------------- one arm x seed


def _claim(folder: Path, config: Config) -> None:
    """Mark ``folder`` as this unit's training, or refuse one made with other settings."""
    settings, marker = _settings(config), folder / JOB_FILE
    if marker.is_file():
        # a training started by an older release resumes when the settings added since hold their default
        if not same_identity(read_json(marker), settings, _settings(Config())):
            raise ValueError(
                f"{folder} holds a training with other settings ({marker}); pass another --run-dir or delete "
                "that folder to train afresh."
            )
        return
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(f"{folder} is not empty and has no {JOB_FILE}; pass another --run-dir.")
    write_json(marker, settings)


def train_unit(
    config: Config, used: Mapping[str, Any], folder: Path, progress: bool, descriptions: Mapping | None
) -> tuple[Path, float]:
    """Train (or finish, or reuse) one unit's adapter in ``folder``; (adapter, seconds of training)."""
    layout = TrainingLayout(folder)
    _claim(folder, config)
    if not layout.metrics.is_file():
        loop.train(
            config, folder, used, descriptions, resume=layout.checkpoint.exists(), progress=progress,
            one_of_seeds=True,
        )  # fmt: skip
    return layout.adapter, float(read_json(layout.metrics)["seconds"])


def selection_of(folder: Path, checkpoint: int) -> tuple[Path, dict[str, Any]]:
    """(adapter, its dev selection) of a finished training in ``folder``: ``checkpoint`` 0 = the adapter dev
    chose (metrics.json's ``best``), N = the one kept at the N-th dev evaluation (``train.keep_every_eval``)."""
    layout = TrainingLayout(folder)
    metrics = read_json(layout.metrics)
    if checkpoint == 0:
        return layout.adapter, {"checkpoint": 0, **(metrics.get("best") or {})}
    history, adapter = metrics.get("history", []), layout.kept_adapter(checkpoint)
    if checkpoint > len(history) or not adapter.is_dir():
        raise ValueError(
            f"eval.checkpoint {checkpoint}: {folder} has {len(history)} dev evaluation(s) and no kept adapter "
            f"{adapter}; set train.keep_every_eval: true for every arm (the experiment's `set:`) and an "
            "eval.checkpoint no larger than the number of dev evaluations (train.eval_every)."
        )
    return adapter, {"checkpoint": checkpoint, **history[checkpoint - 1]}


def score_unit(
    arm: Arm,
    config: Config,
    adapter: Path | None,
    used: Mapping[str, Any],
    corpora: Mapping[str, Any],
    plan: Mapping[str, Any],
    split: str,
    descriptions: Mapping | None,
) -> dict[str, Predictions]:
    """dataset -> the unit's predictions on the plan's test sample (demonstrations from what it trains on)."""
    m = config.model
    loaded = loading.load_configured(m)
    model = loading.load_adapter(loaded.model, adapter) if adapter is not None else loaded.model
    scored_arm = copy.copy(arm)
    scored_arm.config = config
    out = {}
    # as training drew them: from what the unit trains on, skipping any overlap its own removal would find
    exclude = demonstration_exclusions(config, used)
    shown = {} if arm.descriptions == "withheld" else descriptions
    for d in config.data.datasets:
        chosen = scored_sample(arm, plan["test"][d])
        if not chosen["example_id"]:
            continue  # scored on the described lines only, and this corpus has none
        splits = {"train": used[d]["train"], split: rows_of(corpora[d][split])}
        frame = predict_arm(
            scored_arm, d, splits, model, loaded.tokenizer, split=split, only=chosen["position"],
            descriptions=shown, batch_size=config.eval.batch_size, dtype=m.dtype, demo_seed=config.train.seed,
            exclude=exclude,
        )  # fmt: skip
        if list(frame["example_id"].astype(str)) != chosen["example_id"]:
            raise RuntimeError(f"{arm.name} on {d}: predictions are not in the test sample's order.")
        scores = [c for c in frame.columns if c.startswith("p_")]
        out[d] = Predictions(
            example_id=chosen["example_id"], dialogue_id=chosen["dialogue_id"], gold_id=chosen["gold_id"],
            pred_id=frame["pred_id"].astype(int).tolist(),
            label_scores=frame[scores].round(6).to_numpy().tolist() if scores else None,
            output=frame["output"].astype(str).tolist() if "output" in frame else None,
        )  # fmt: skip
    return out


def scored_sample(arm: Arm, test: Mapping[str, list]) -> dict[str, list]:
    """The part of a corpus's test sample that ``arm`` is scored on: all of it, or (``score_on: described``)
    the lines the plan marks as having a video description."""
    if arm.score_on == "all":
        return dict(test)
    keep = [i for i, flag in enumerate(test.get("described", [])) if flag]
    return {k: [v[i] for i in keep] for k, v in test.items()}


def metrics_of(predictions: Mapping[str, Predictions]) -> dict[str, dict[str, float]]:
    """dataset -> {n, accuracy, weighted_f1, macro_f1} (fractions) of a unit's predictions."""
    out = {}
    for d, p in predictions.items():
        m = classification_metrics(np.asarray(p.gold_id), np.asarray(p.pred_id), normalised_label_names(d))
        out[d] = {k: m[k] for k in ("n", "accuracy", "weighted_f1", "macro_f1")}
    return out


def identity_of(
    config: Config,
    adapter: Path | None,
    command: str,
    train_s: float,
    score_s: float,
    settings: Mapping[str, Any] | None = None,
) -> RunIdentity:
    """The run identity a unit record carries (``config_hash`` of ``settings``, default the config's)."""
    env = environment()
    return RunIdentity(
        commit=env.get("git_commit"), config_hash=config_hash(settings or _settings(config)),
        adapter=None if adapter is None else str(adapter), hardware=hardware_description(),
        python=str(env.get("python")), packages=dict(env.get("packages", {})), command=command,
        finished=datetime.now(UTC).isoformat(timespec="seconds"), train_seconds=round(train_s, 1),
        score_seconds=round(score_s, 1), adapter_sha256=adapter_fingerprint(adapter),
    )  # fmt: skip


# -------------------------------------------------------------------------------------------- the run


def fit_baseline_unit(
    arm: Arm, used: Mapping[str, Any], corpora: Mapping[str, Any], plan: Mapping[str, Any], split: str
) -> tuple[dict[str, Predictions], list[str]]:
    """An arm of ``kind`` ``tfidf_lr`` (or ``majority``): per corpus, ``analysis.baselines`` fitted on the rows
    the unit trains on, its C chosen on the unit's dev sample, scored on the plan's test sample; (dataset ->
    predictions, notes saying what it chose)."""
    out, notes = {}, []
    for d in arm.config.data.datasets:
        chosen = plan["test"][d]
        test = [rows_of(corpora[d][split])[i] for i in chosen["position"]]
        probs, fitted = baselines.fit_and_predict(arm.kind, d, used[d]["train"], used[d]["dev"], test)
        out[d] = Predictions(
            example_id=chosen["example_id"], dialogue_id=chosen["dialogue_id"], gold_id=chosen["gold_id"],
            pred_id=probs.argmax(axis=1).astype(int).tolist(), label_scores=probs.round(6).tolist(),
        )  # fmt: skip
        searched = ", ".join(
            f"C={r['C']:g}: {r['dev_weighted_f1']:.4f}" for r in fitted.get("dev_search", [])
        )
        chose = (
            f"C={fitted['C']:g} chosen on the dev sample (dev weighted F1 {searched})"
            if "C" in fitted
            else fitted
        )
        notes.append(f"{d}: analysis.baselines {arm.kind} fitted on the unit's training rows; {chose}")
    return out, notes


def run_experiment(
    experiment: Experiment,
    corpora: Mapping[str, Any],
    layout: ExperimentLayout,
    progress: bool = True,
    command: str | None = None,
    descriptions: Mapping[str, Mapping[str, str]] | None = None,
    on_saved: Callable[[str], None] | None = None,
    only_seeds: Sequence[int] | None = None,
) -> list[str]:
    """Train and score every arm x seed (x size) without a record in ``layout``; returns the units it ran.
    ``only_seeds``: only the units of these seeds (a grid split over machines: each runs its seeds on the
    same plan, and ``resume_from`` merges the records; the units scored once are left to a run without it).

    A progress bar counts the units (arm x seed), training shows its own bar per unit."""
    loading.set_threads(experiment.arms[0].config.model.num_threads)
    command = command or invocation()
    samples = plan_samples(experiment, corpora, descriptions)
    if any(a.score_on == "described" for a in experiment.arms) and not any(
        any(t.get("described", [])) for t in samples["test"].values()
    ):
        raise ValueError(
            f"{experiment.path}: an arm is scored on the described test lines (arm.score_on: described), but no "
            f"{experiment.samples.split} line of {', '.join(experiment.datasets)} has a video description here: "
            "pass them (`descriptions=`; the command passes those of `--corpora-run RUN`, which notebook 02 "
            "imports or writes, else the 191 packaged MELD test descriptions; docs/DATA.md)."
        )
    open_plan(experiment, layout, samples, command, descriptions)
    units = experiment.units()
    if only_seeds is not None:
        wanted = set(only_seeds)
        units = [u for u in units if u.seed in wanted]
    todo = [u for u in units if not layout.unit(_name(u)).is_file()]
    part = f" of seeds {', '.join(map(str, only_seeds))}" if only_seeds is not None else ""
    print(f"experiment {experiment.name}: {len(units)} arm x seed{part}, {len(units) - len(todo)} recorded in "
          f"{layout.units}, {len(todo)} to run", flush=True)  # fmt: skip
    bar = progress_bar(
        total=len(units), initial=len(units) - len(todo), desc="arm x seed", disable=not progress
    )
    removal_cache: dict[tuple, dict[str, set[str]]] = {}
    for unit in todo:
        name = _name(unit)
        bar.set_postfix_str(name)
        saved = run_unit(
            experiment, unit, corpora, samples, layout, removal_cache, progress, command, descriptions
        )
        bar.update(1)
        shown = ", ".join(f"{d} weighted F1 {100 * m['weighted_f1']:.1f}" for d, m in saved.metrics.items())
        took = saved.identity
        bar.write(f"{name}: {shown} (train {took.train_seconds:.0f} s, score {took.score_seconds:.0f} s)")
        if on_saved is not None:
            on_saved(name)
    bar.close()
    return [_name(u) for u in todo]


def _name(unit: Unit) -> str:
    return unit_name(unit.arm.name, unit.seed, unit.size.label if unit.size else None)


def run_unit(
    experiment: Experiment,
    unit: Unit,
    corpora: Mapping[str, Any],
    samples: Mapping[str, Any],
    layout: ExperimentLayout,
    removal_cache: dict[tuple, dict[str, set[str]]],
    progress: bool,
    command: str,
    descriptions: Mapping | None,
) -> UnitRecord:
    """Train (or fit) and score one unit, and write its record."""
    arm, seed, size = unit
    config = unit_config(arm, seed, experiment)
    # what an arm drops depends on its corpora AND on whether it removes the overlap at all (overlap_removal's
    # two arms share their corpora and differ in that alone)
    key = (*config.data.datasets, config.data.remove_cross_corpus_overlap)
    if key not in removal_cache:
        removal_cache[key] = removed_by_arm(config, corpora)
    # an untuned arm: the first seed's draw (in a learning curve at the largest size)
    draw_seed, draw_size = (seed, size) if seed is not None else experiment.untuned_draw()
    used, dropped = unit_corpora(config, samples, draw_seed, corpora, removal_cache[key], draw_size)
    adapter, train_s, notes, selection = None, 0.0, [], None
    start = time.time()
    if arm.kind != "llm":
        predictions, notes = fit_baseline_unit(arm, used, corpora, samples, experiment.samples.split)
        train_s, start = time.time() - start, time.time()
    else:
        slug = size_slug(size.label) if size else None
        if arm.reuses is not None:  # a scoring variant: the adapter its arm trained for this seed (and size)
            target = unit_config(experiment.arm(arm.reuses), seed, experiment)
            folder = layout.training(arm.reuses, seed, slug)
            train_unit(target, used, folder, progress, descriptions)
            adapter, selection = selection_of(folder, config.eval.checkpoint)  # eval.checkpoint: a kept one
        elif arm.tuned:
            folder = layout.training(arm.name, seed, slug)
            adapter, train_s = train_unit(config, used, folder, progress, descriptions)
            adapter, selection = selection_of(folder, config.eval.checkpoint)
        start = time.time()
        predictions = score_unit(
            arm, config, adapter, used, corpora, samples, experiment.samples.split, descriptions
        )
    settings = _settings(config) | ({"kind": arm.kind} if arm.kind != "llm" else {})  # a baseline says so
    record = UnitRecord(
        experiment=experiment.name, arm=arm.name, seed=seed,
        identity=identity_of(config, adapter, command, train_s, time.time() - start, settings), config=settings,
        samples={d: {"train": [str(r["utterance_id"]) for r in used[d]["train"]] if arm.tuned else [],
                     "dev": [str(r["utterance_id"]) for r in used[d]["dev"]] if arm.tuned else [],
                     "test": predictions[d].example_id if d in predictions else []} for d in used},
        removed=dropped if arm.tuned else {}, predictions=predictions, metrics=metrics_of(predictions),
        notes=notes, size=size.label if size else None, selection=selection,
    )  # fmt: skip
    save_unit(layout, record)
    return record


def experiment_corpora(
    experiment: Experiment,
    data_dir: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Every corpus an arm uses: notebook 01's curated copies in ``run_dir`` when present, else the vendored
    ones (or ``data_dir``; IEMOCAP from ``$IEMOCAP_DIR``)."""
    corpora: dict[str, Any] = {}
    for arm in experiment.arms:
        missing = [d for d in arm.config.data.datasets if d not in corpora]
        if missing:
            config = copy.deepcopy(arm.config)
            config.data.datasets = missing
            corpora |= load_corpora_for(config, run_dir, data_dir)
    return corpora


if __name__ == "__main__":  # pragma: no cover - the CLI is `dialoguellm experiment`
    sys.exit("Use `dialoguellm experiment run NAME`.")
