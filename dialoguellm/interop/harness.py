"""lm-evaluation-harness tasks for emotion recognition in conversation, with this package's prompt.

The task files live in ``dialoguellm/interop/harness_tasks`` (``task_folder()``): ``meld_erc``,
``emorynlp_erc`` and ``iemocap_erc`` score the test splits, ``*_erc_dev`` the dev splits (choose settings on
these), group ``erc`` runs MELD and EmoryNLP. Each is a ``multiple_choice`` task whose documents this module
builds (``erc_docs``, the tasks' ``custom_dataset``): every utterance's prompt exactly as
``prompts.builder.PromptBuilder`` renders it for the model being scored (its chat template or the plain
template, the profile's context turns, demonstration and cutoff), and one choice per label: the label word
and the tokenizer's end-of-sequence token, the token sequence this package scores (``PromptBuilder.answer_ids``).

The tokenizer comes from the model lm-eval loads: lm-eval passes ``--model_args`` (``pretrained=...``,
``tokenizer=...``) and ``--metadata`` to ``custom_dataset``; ``profile`` in ``--metadata`` picks the prompt
settings (default ``cpu``). IEMOCAP is read from ``iemocap_dir`` in ``--metadata`` or ``$IEMOCAP_DIR``.

What lm-eval's numbers equal: ``acc`` ranks the labels by their summed log-likelihood, which is this
package's label scoring with ``eval.length_normalise=false`` and no calibration
(tests/interop/test_harness.py checks the predictions are equal). lm-eval moves the prompt's trailing newline into
every continuation, so its log-likelihoods are the package's plus one constant per utterance (the newline's),
which changes no ranking by the sum; it does change a ranking by the mean per token, so the package's default
(``eval.length_normalise=true``, then the dev-fitted label biases) has no lm-eval metric, and lm-eval's
``acc_norm`` (per byte of the choice) is neither. ``weighted_f1`` is ``metrics.classification_metrics``'s.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

TASKS = {"meld": "meld_erc", "emorynlp": "emorynlp_erc", "iemocap": "iemocap_erc"}
PACKAGE_SPLITS = {"test": "test", "dev": "dev"}


def task_folder() -> Path:
    """The folder to pass to ``lm_eval --include_path`` (inside the installed package)."""
    return Path(str(resources.files("dialoguellm.interop") / "harness_tasks"))


def _tokenizer_for(tokenizer: str | None, pretrained: str | None, model: str | None, gguf_file: str | None):
    """The tokenizer of the model lm-eval scores, through the package's loader (folders, .gguf, hub ids)."""
    from dialoguellm.config import load_config
    from dialoguellm.model.loading import load_tokenizer

    name = tokenizer or pretrained or model
    if not name:
        raise ValueError(
            "The ERC tasks render this package's prompt with the scored model's tokenizer, and lm-eval passed "
            "none: give pretrained=... (or tokenizer=...) in --model_args, or tokenizer in --metadata."
        )
    config = load_config("cpu")
    config.model.name = str(Path(name) / gguf_file) if gguf_file else str(name)
    return load_tokenizer(config)


def erc_docs(
    corpus: str,
    splits: Sequence[str] = ("test",),
    profile: str = "cpu",
    tokenizer: str | None = None,
    pretrained: str | None = None,
    model: str | None = None,
    gguf_file: str | None = None,
    data_dir: str | None = None,
    iemocap_dir: str | None = None,
    **_other_model_args: Any,
):
    """The task documents of ``corpus`` (lm-eval's ``custom_dataset``): a ``DatasetDict`` of ``splits`` whose
    rows hold ``prompt`` (the rendered prompt), ``choices`` (label word + end-of-sequence text), ``gold``
    (label id), ``answer_tokens`` (each choice's token count in this package) and the utterance's ids."""
    from datasets import Dataset, DatasetDict

    from dialoguellm.config import load_config
    from dialoguellm.corpora.readers import IEMOCAP_ENV, load_corpora
    from dialoguellm.prompts.builder import builders_from_config, dialogue_index, rows_of

    iemocap_dir = iemocap_dir or os.environ.get(IEMOCAP_ENV) or None
    if corpus == "iemocap" and not iemocap_dir:
        raise ValueError(
            f"iemocap_erc reads your own IEMOCAP_full_release: set ${IEMOCAP_ENV} or pass "
            '--metadata \'{"iemocap_dir": "/path/to/IEMOCAP_full_release"}\'.'
        )
    config = load_config(profile)
    tok = _tokenizer_for(tokenizer, pretrained, model, gguf_file)
    corpora = load_corpora([corpus], data_dir, iemocap_dir)
    builder = builders_from_config(tok, corpora, config)[corpus]
    choices = [builder.answer_text(i) + tok.eos_token for i in range(len(builder.labels))]
    answer_tokens = [len(a) for a in builder.answer_ids]
    docs = {}
    for split in splits:
        rows = rows_of(corpora[corpus][PACKAGE_SPLITS[split]])
        index = dialogue_index(rows)
        docs[split] = Dataset.from_list(
            [
                {
                    "utterance_id": row["utterance_id"],
                    "dialogue_id": row["dialogue_id"],
                    "prompt": builder.build(row, index[str(row["dialogue_id"])]).prompt,
                    "choices": choices,
                    "answer_tokens": answer_tokens,
                    "gold": int(row["label_id"]),
                }
                for row in rows
            ]
        )
    return DatasetDict(docs)


def process_results(doc: dict, results: Sequence[tuple[float, bool]]) -> dict[str, Any]:
    """lm-eval's per-document metrics: ``acc`` (the label with the highest summed log-likelihood is the
    gold one) and the ``(gold, prediction, labels)`` item ``weighted_f1`` aggregates."""
    scores = [float(ll) for ll, _ in results]
    pred = max(range(len(scores)), key=scores.__getitem__)
    return {"acc": float(pred == doc["gold"]), "weighted_f1": (doc["gold"], pred, len(scores))}


def weighted_f1(items: Sequence[tuple[int, int, int]]) -> float:
    """Weighted F1 over a task's documents (``metrics.classification_metrics``, the package's headline)."""
    from dialoguellm.metrics import classification_metrics

    gold, pred, sizes = zip(*items, strict=True)
    return classification_metrics(gold, pred, [str(i) for i in range(max(sizes))])["weighted_f1"]


def model_args(model: str, dtype: str = "float32") -> str:
    """lm-eval's ``--model_args`` for a model name this package accepts (``embedded``, a folder written by
    save_pretrained, a ``.gguf`` file, a hub id), checked as ``model.loading`` checks it: the embedded GGUF
    becomes its dequantised safetensors folder, a local path an absolute one."""
    from dialoguellm.model.loading import resolve_model_path

    folder, gguf_file = resolve_model_path(model)
    local = Path(folder).expanduser()
    args = f"pretrained={local.resolve() if local.exists() else folder}"
    return args + (f",gguf_file={gguf_file}" if gguf_file else "") + f",dtype={dtype}"


def lm_eval_command(
    model: str = "embedded",
    corpora: Sequence[str] = ("meld", "emorynlp"),
    split: str = "test",
    profile: str = "cpu",
    dtype: str = "float32",
    batch_size: int = 8,
    device: str = "cpu",
    limit: int | None = None,
    output_path: str = "lm_eval_results",
) -> list[str]:
    """The ``lm_eval`` command line that scores ``model`` on the ERC tasks (as a list of arguments)."""
    unknown = [c for c in corpora if c not in TASKS]
    if unknown:
        raise ValueError(f"Unknown corpus {', '.join(unknown)}; the ERC tasks are {', '.join(TASKS)}.")
    if split not in PACKAGE_SPLITS:
        raise ValueError(f"split must be test or dev, not {split!r}.")
    tasks = ",".join(TASKS[c] + ("_dev" if split == "dev" else "") for c in corpora)
    command = [
        "lm_eval", "--model", "hf", "--model_args", model_args(model, dtype),
        "--include_path", str(task_folder()), "--tasks", tasks,
        "--batch_size", str(batch_size), "--device", device,
        "--output_path", output_path, "--log_samples",
    ]  # fmt: skip
    if profile != "cpu":
        command += ["--metadata", json.dumps({"profile": profile})]
    if limit:
        command += ["--limit", str(limit)]
    return command


def command_line(command: Sequence[str]) -> str:
    """A command as one line a shell runs as given."""
    return shlex.join(command)


# ------------------------------------------------------------------------- the two scorers side by side
def read_samples(output_path: str | os.PathLike, task: str):
    """lm-eval's ``--log_samples`` file of ``task`` under ``output_path`` as a frame: one row per document
    (``doc_id``, ``utterance_id``, ``gold``, ``pred``, ``acc``, ``ll`` = the choices' log-likelihoods)."""
    import pandas as pd

    files = sorted(Path(output_path).rglob(f"samples_{task}_*.jsonl"))
    if not files:
        raise FileNotFoundError(
            f"No lm-eval samples of {task} under {output_path}; run lm_eval with --log_samples."
        )
    rows = []
    for line in files[-1].read_text(encoding="utf-8").splitlines():
        sample = json.loads(line)
        ll = [float(score) for score, _ in sample["filtered_resps"]]
        pred = max(range(len(ll)), key=ll.__getitem__)
        doc = sample["doc"]
        rows.append(
            {"doc_id": sample["doc_id"], "utterance_id": doc["utterance_id"], "gold": doc["gold"], "pred": pred,
             "acc": float(sample["acc"]), "ll": ll}
        )  # fmt: skip
    return pd.DataFrame(rows).sort_values("doc_id").reset_index(drop=True)


def package_scores(model: str, corpus: str, split: str = "dev", limit: int = 16, profile: str = "cpu"):
    """This package's label scoring of the first ``limit`` utterances of ``corpus``'s ``split`` (what
    ``lm_eval --limit`` scores), in fp32 and ranked by the summed log-likelihood (``eval.length_normalise``
    off, no calibration): a frame with ``utterance_id``, ``gold``, ``pred`` and ``ll`` per row."""
    from dialoguellm.config import load_config
    from dialoguellm.corpora.readers import load_corpora
    from dialoguellm.model.loading import load_model
    from dialoguellm.prompts.builder import builders_from_config
    from dialoguellm.scoring.predictions import predict_by_scoring

    config = load_config(profile)
    loaded = load_model(model, dtype="fp32")
    corpora = load_corpora([corpus])
    builder = builders_from_config(loaded.tokenizer, corpora, config)[corpus]
    rows = corpora[corpus][PACKAGE_SPLITS[split]]
    examples = builder.build_split(rows, only=range(min(limit, len(rows))))
    frame = predict_by_scoring(
        loaded.model, loaded.tokenizer, builder, examples, dtype="fp32", progress=False,
        length_normalise=False, precision="fp32",
    )  # fmt: skip
    ll = frame[[f"ll_{w}" for w in builder.labels]].to_numpy().tolist()
    return frame.assign(
        utterance_id=frame["example_id"], gold=frame["gold_id"], pred=frame["pred_id"], ll=ll
    )[["utterance_id", "gold", "pred", "ll"]]


def agreement(harness, package) -> dict[str, Any]:
    """How ``read_samples`` and ``package_scores`` of the same utterances agree: the share of equal
    predictions, and the largest difference of log-likelihoods once each row's constant (the newline lm-eval
    scores in every continuation) is taken out."""
    import numpy as np

    if list(harness["utterance_id"]) != list(package["utterance_id"]):
        raise ValueError(
            "lm-eval and the package scored different utterances; compare the same --limit and split."
        )
    a, b = np.array(harness["ll"].tolist()), np.array(package["ll"].tolist())
    centred = (a - a.mean(axis=1, keepdims=True)) - (b - b.mean(axis=1, keepdims=True))
    return {
        "n": len(harness),
        "equal_predictions": float((harness["pred"].to_numpy() == package["pred"].to_numpy()).mean()),
        "max_abs_ll_difference_centred": float(np.abs(centred).max()),
        "row_constant_mean": float((a - b).mean()),
        "accuracy_lm_eval": float(harness["acc"].mean()),
        "accuracy_package": float((package["pred"] == package["gold"]).mean()),
    }
