"""The model card of an adapter folder: ``README.md`` in the Hugging Face layout (YAML front matter, then
Markdown), so the folder can be handed on as it is and loaded with ``peft.PeftModel.from_pretrained``.

Training writes it when it ends (``training.loop``), from the run's resolved ``config.yaml`` and
``metrics.json``; evaluation rewrites it with the test metrics and their dialogue-bootstrap intervals
(``dialoguellm.stats``). What only those moments know (the commands, the test results) is kept beside it in
``card.json``, so every rewrite renders the whole card again from its sources.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dialoguellm.io import atomic_path, read_json, write_json

CARD = "README.md"
CARD_DATA = "card.json"
# The hub id of the embedded default, so the card's base_model links to the model it was trained on.
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
CORPUS_SOURCES = {"meld": "meld", "emorynlp": "emorynlp", "iemocap": None}
PAPER = "DialogueLLM (Zhang et al., arXiv:2310.11374)"


def invocation() -> str:
    """The command line of this process as a user would type it (a notebook kernel says so instead)."""
    argv = list(sys.argv)
    if "ipykernel" in sys.modules or "ipykernel_launcher" in " ".join(argv[:1]):
        return "a notebook (papermill / Jupyter): notebooks/03_training.ipynb or 04_evaluation.ipynb"
    head = Path(argv[0]).name if argv else "python"
    if head in ("cli.py", "__main__.py") or head.endswith("dialoguellm"):
        head = "dialoguellm"
    return shlex.join([head, *argv[1:]])


def _licence(corpus: str) -> str:
    """The licence line of a vendored corpus's SOURCE.md ('not shipped' for a licensed corpus)."""
    folder = CORPUS_SOURCES.get(corpus)
    if folder is None:
        return "licensed by its owners, never shipped with the package; you need your own copy and licence"
    source = resources.files("dialoguellm.corpora") / "raw" / folder / "SOURCE.md"
    for line in source.read_text(encoding="utf-8").splitlines():
        if line.startswith("- License:"):  # "GPL v3 (the repository's LICENSE ...)": the name only
            name = line.removeprefix("- License:").split(" (")[0].strip().rstrip(".")
            return f"{name} (dialoguellm/corpora/raw/{folder}/LICENSE)"
    return "see its SOURCE.md"


def base_model_id(name: str) -> str:
    """What ``base_model`` names: the embedded model's hub id, else the name as configured."""
    return EMBEDDED_HUB_ID if name == "embedded" else name


def _front_matter(config: Mapping[str, Any]) -> str:
    datasets = list(config["data"]["datasets"])
    meta = {
        "base_model": base_model_id(config["model"]["name"]),
        "library_name": "peft",
        "license": "other",
        "tags": ["lora", "peft", "emotion-recognition", "emotion-recognition-in-conversation", "dialoguellm"],
        "datasets": datasets,
        "pipeline_tag": "text-generation",
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _test_section(test: Mapping[str, Any] | None) -> list[str]:
    if not test:
        return [
            "## Test results",
            "",
            "Not evaluated yet: `dialoguellm evaluate --run-dir RUN` (or notebook 04) writes them here.",
            "",
        ]
    lines = [
        "## Test results",
        "",
        "Percent, with 95% intervals from a bootstrap over whole dialogues (`dialoguellm.stats`).",
        "",
        "| corpus | utterances | dialogues | accuracy | weighted F1 | macro F1 | label biases |",
        "|---|---|---|---|---|---|---|",
    ]
    for corpus, r in test["results"].items():
        cells = [r.get(m, {}).get("text", "-") for m in ("accuracy", "weighted_f1", "macro_f1")]
        lines.append(
            f"| {corpus} | {r['n']} | {r.get('dialogues', '-')} | {' | '.join(cells)} | "
            f"{'applied (fitted on dev)' if r.get('calibrated') else 'none'} |"
        )
    lines += ["", f"Evaluated with: `{test.get('command', '')}` ({test.get('hardware', '')}).", ""]
    return lines


def render_card(config: Mapping[str, Any], metrics: Mapping[str, Any] | None, data: Mapping[str, Any]) -> str:
    """The card's text from the resolved config, training's ``metrics.json`` and ``card.json``."""
    m, lora, datasets = config["model"], config["lora"], list(config["data"]["datasets"])
    best = (metrics or {}).get("best") or {}
    lines = [
        _front_matter(config),
        f"# LoRA adapter for emotion recognition in conversations ({', '.join(datasets)})",
        "",
        f"A LoRA adapter (rank {lora['r']}, alpha {lora['alpha']}, on {', '.join(lora['target_modules'])}) "
        f"for `{base_model_id(m['name'])}`, trained with the `dialoguellm` package, a reproduction of {PAPER}. "
        "Given a conversation, it answers the emotion of the last turn with one label word.",
        "",
        "## How to use",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM",
        f'base = AutoModelForCausalLM.from_pretrained("{base_model_id(m["name"])}")',
        'model = PeftModel.from_pretrained(base, "path/to/this/folder")',
        "```",
        "",
        "Or, with the prompts it was trained on: `dialoguellm predict --run-dir RUN turns.csv`.",
        "",
        "## Training data and licences",
        "",
    ]
    lines += [f"- **{name}**: {_licence(name)}." for name in datasets]
    lines += [
        "",
        "The adapter is derived from these corpora and from the base model; its use is bound by their "
        "licences and the base model's (hence `license: other`).",
        "",
        "## Training",
        "",
    ]
    if best:
        lines.append(
            f"Best dev weighted F1 {100 * best.get('dev_weighted_f1', float('nan')):.1f}% at step "
            f"{best.get('step')} of {metrics.get('steps')} ({metrics.get('hardware', '')}, "
            f"{metrics.get('seconds', 0) / 60:.1f} min); training examples per corpus: "
            f"{', '.join(f'{k} {v}' for k, v in (metrics.get('train_examples') or {}).items())}."
        )
    else:
        lines.append("No training metrics found (metrics.json).")
    lines += ["", f"Trained with: `{data.get('train_command', 'unknown')}`", ""]
    lines += _test_section(data.get("test"))
    lines += [
        "## Intended use and limits",
        "",
        "- For research on emotion recognition in conversations in English, in the label sets above. It "
        "answers with one of those labels even when no emotion fits.",
        "- The corpora are TV-series (MELD, EmoryNLP: *Friends*) and acted (IEMOCAP) dialogues; scores on "
        "other kinds of conversation are unmeasured, and small models lean towards the frequent labels.",
        "- Not for decisions about people (hiring, health, policing): the labels are noisy, the scores "
        "are probabilities over a fixed list, not evidence of what anyone feels.",
        "",
        "## Settings (resolved config)",
        "",
        "```yaml",
        yaml.safe_dump(dict(config), sort_keys=False).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def write_model_card(
    adapter_dir: str | os.PathLike,
    train_command: str | None = None,
    test: Mapping[str, Any] | None = None,
) -> Path:
    """(Re)write ``<adapter>/README.md`` from the training run's ``config.yaml`` and ``metrics.json`` (the
    folder above the adapter) and ``card.json``; ``train_command`` or ``test`` update ``card.json`` first."""
    adapter = Path(adapter_dir)
    root = adapter.parent
    config_path = adapter / "config.yaml" if (adapter / "config.yaml").is_file() else root / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"No config.yaml beside the adapter {adapter}; cannot write its model card.")
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    config.pop("source", None)
    metrics = read_json(root / "metrics.json") if (root / "metrics.json").is_file() else None
    data_path = adapter / CARD_DATA
    data = read_json(data_path) if data_path.is_file() else {}
    if train_command is not None:
        data["train_command"] = train_command
    if test is not None:
        data["test"] = dict(test)
    write_json(data_path, data)
    path = adapter / CARD
    with atomic_path(path) as tmp:
        tmp.write_text(render_card(config, metrics, data), encoding="utf-8")
    return path
