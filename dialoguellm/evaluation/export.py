"""Exporting a trained adapter merged into its base model (``dialoguellm export --run-dir RUN --merge OUT``),
for serving it where peft is not at hand: one safetensors model folder with its tokenizer and a card.

Merging adds the LoRA product into the base weights and rounds the sum to the weights' precision. In fp32
nothing measurable changes; in bf16 the rounding moves some label scores enough to change predictions. The
export therefore scores a dev sample before and after the merge and records (and warns about) how many
predictions changed, so nobody serves a merged model that silently differs from the evaluated adapter.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from dialoguellm.corpora.readers import load_corpora_for
from dialoguellm.io import atomic_folder, write_json
from dialoguellm.model import loading
from dialoguellm.model.card import CARD, base_model_id
from dialoguellm.prompts import prepare_split
from dialoguellm.runs import adapter_settings, find_adapter, load_run_config
from dialoguellm.scoring.predictions import score_prepared

log = logging.getLogger(__name__)
CHECK = "merge_check.json"


def merge_adapter(
    run_dir: str | os.PathLike, out_dir: str | os.PathLike, dev_sample: int = 200, progress: bool = True
) -> dict[str, Any]:
    """Merge the run's adapter into its base model and save it (safetensors) with its tokenizer in
    ``out_dir``, which must not exist yet. ``dev_sample`` dev utterances per corpus are scored with the
    adapter and with the merged model; the counts of changed predictions go to ``merge_check.json`` and the
    returned report."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} already exists and is not empty; choose a new folder for the export.")
    adapter = find_adapter(run_dir)
    config = load_run_config(adapter_settings(adapter).parent)
    m = config.model
    loading.set_threads(m.num_threads)
    loaded = loading.load_configured(m)
    model = loading.load_adapter(loaded.model, adapter)
    corpora = load_corpora_for(config, run_dir)
    dev = prepare_split(config, loaded.tokenizer, corpora, "dev", dev_sample)
    before = score_prepared(model, loaded.tokenizer, dev, config, "dev", progress)
    merged = model.merge_and_unload()
    after = score_prepared(merged, loaded.tokenizer, dev, config, "dev", progress)
    corpora_report = {
        name: {
            "dev_utterances": len(before[name]),
            "changed": int((before[name]["pred_id"] != after[name]["pred_id"]).sum()),
        }
        for name in before
    }
    report = {
        "adapter": str(adapter),
        "base_model": base_model_id(m.name),
        "dtype": m.dtype,
        "dev_utterances": sum(r["dev_utterances"] for r in corpora_report.values()),
        "changed": sum(r["changed"] for r in corpora_report.values()),
        "corpora": corpora_report,
    }
    if report["changed"]:
        log.warning(
            "Merging changes %d of %d dev predictions (%s weights round the merged sum); the merged model "
            "is not the evaluated adapter. Serve the adapter with peft for the evaluated predictions.",
            report["changed"],
            report["dev_utterances"],
            m.dtype,
        )
    with atomic_folder(out) as tmp:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        loaded.tokenizer.save_pretrained(str(tmp))
        write_json(tmp / CHECK, report)
        (tmp / CARD).write_text(_merged_card(adapter, report), encoding="utf-8")
    return report


def _merged_card(adapter: Path, report: dict[str, Any]) -> str:
    """The adapter's card with a merged model's front matter and the merge check on top."""
    card = (adapter / CARD).read_text(encoding="utf-8") if (adapter / CARD).is_file() else ""
    body = card.split("---\n", 2)[2] if card.startswith("---\n") and card.count("---\n") >= 2 else card
    check = (
        f"Merging changed {report['changed']} of {report['dev_utterances']} dev predictions "
        f"({report['dtype']} weights) compared with the adapter on the base model."
    )
    return (
        "---\n"
        f"base_model: {report['base_model']}\n"
        "library_name: transformers\n"
        "license: other\n"
        "tags: [merged-lora, emotion-recognition, dialoguellm]\n"
        "---\n"
        "# Merged model\n\n"
        f"The LoRA adapter `{adapter}` merged into `{report['base_model']}`. {check}\n\n"
        "The adapter's own card follows.\n\n" + body
    )
