"""Tokens per prompt of the real corpora, as the package builds them: the input to every cost estimate.

For the paper profile (dialoguellm/profiles/paper.yaml: plain instruction template, 1-shot, cutoff 256) it measures,
per corpus and split, the mean/median/95th-percentile/max prompt length, the answer length, the shared
prefix that every prompt of a corpus has in common (instruction + demonstration: run once per micro-batch
by the training loop and once per corpus by label scoring) and the distinct rest; then the same for the
context window z = 0, 1, 2, 3, all on the MELD training split (how the window drives cost).

Token counts use the embedded model's tokenizer (SmolLM2, 49k BPE vocabulary; the LLaMA 2 tokenizer is a
download this machine cannot make), so they are a measurement of *this* tokenizer; docs/SCALING.md says
how they carry over to LLaMA 2. About 1-2 minutes on 2 CPU cores.

    dialoguellm benchmark prompt_lengths            # writes benchmarks/results/prompt_lengths.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
Z_VALUES: list[int | str] = [0, 1, 2, 3, "all"]


def length_stats(examples: list[Any], answer_ids: list[list[int]], trimmed: int) -> dict[str, Any]:
    """Prompt-length statistics of one corpus split (tokens), with its shared prefix and answer length;
    ``trimmed`` counts the prompts that lost context turns to the cutoff."""
    from dialoguellm.scoring.engine import common_prefix_length

    lengths = sorted(len(e.prompt_ids) for e in examples)
    prefix = common_prefix_length([e.prompt_ids for e in examples])
    answer = statistics.fmean(len(answer_ids[e.label_id]) for e in examples)
    mean = statistics.fmean(lengths)
    return {
        "n": len(lengths),
        "mean_prompt": round(mean, 1),
        "median_prompt": lengths[len(lengths) // 2],
        "p95_prompt": lengths[int(0.95 * (len(lengths) - 1))],
        "max_prompt": lengths[-1],
        "mean_answer": round(answer, 2),
        "mean_tokens_per_example": round(mean + answer, 1),
        "shared_prefix": prefix,
        "mean_distinct": round(mean - prefix, 1),
        "context_trimmed": trimmed,
    }


def measure(splits: tuple[str, ...] = ("train", "dev", "test"), z_values=Z_VALUES) -> dict[str, Any]:
    """Build every prompt of MELD and EmoryNLP with the paper profile, then MELD train for each z."""
    from dialoguellm.config import load_config
    from dialoguellm.corpora.readers import load_corpora, resolve_datasets
    from dialoguellm.model import loading
    from dialoguellm.prompts import builders_from_config, context_of, dialogue_index, make_builders, rows_of

    config = resolve_datasets(load_config("paper"))
    tokenizer = loading.load_model("embedded").tokenizer
    corpora = load_corpora(config.data.datasets)

    def run(builder, rows):
        index = dialogue_index(rows)
        examples = builder.build_split(rows)
        # The builder trims context oldest-first to fit the cutoff; count the prompts that lost turns.
        wanted = [len(context_of(r, index[str(r["dialogue_id"])], builder.context_turns)) for r in rows]
        trimmed = sum(e.meta["context_turns"] < w for e, w in zip(examples, wanted, strict=True))
        return length_stats(examples, builder.answer_ids, trimmed)

    builders = builders_from_config(tokenizer, corpora, config)
    profile: dict[str, dict[str, Any]] = {}
    for name, builder in builders.items():
        profile[name] = {split: run(builder, rows_of(corpora[name][split])) for split in splits}
    window: dict[str, Any] = {}
    meld_train = rows_of(corpora["meld"]["train"])
    p = config.prompt
    # The last arm lifts the cutoff: what z = all would cost if nothing were trimmed.
    for z, cutoff in [(z, p.cutoff_len) for z in z_values] + [("all", 100_000)]:
        (builder,) = make_builders(
            tokenizer,
            {"meld": corpora["meld"]},
            template=p.template,
            style=p.style,
            context_turns=z,
            k_shot=p.k_shot,
            seed=config.train.seed,
            use_video=p.use_video,
            cutoff_len=cutoff,
        ).values()
        window[str(z) if cutoff == p.cutoff_len else f"{z}, no cutoff"] = run(builder, meld_train)
    train = [profile[n]["train"] for n in profile]
    n_train = sum(s["n"] for s in train)
    return {
        "command": "dialoguellm benchmark prompt_lengths",
        "tokenizer": "SmolLM2-135M-Instruct (embedded), 49,152-token BPE vocabulary",
        "profile": "dialoguellm/profiles/paper.yaml (plain template, 1-shot, z = 1, cutoff 256; no video descriptions exist "
        "for training clips)",
        "paper_profile": profile,
        "meld_train_by_context_turns": window,
        # What the 7B benchmark uses: the mean over all training examples of MELD and EmoryNLP.
        "train_mean_tokens_per_example": round(
            sum(s["mean_tokens_per_example"] * s["n"] for s in train) / n_train, 1
        ),
        "train_mean_shared_prefix": round(sum(s["shared_prefix"] * s["n"] for s in train) / n_train, 1),
        "train_mean_distinct": round(sum(s["mean_distinct"] * s["n"] for s in train) / n_train, 1),
    }


def table(result: dict[str, Any]) -> str:
    rows = ["corpus/split      n     mean  median  p95  max  prefix  distinct  answer  trimmed"]
    for name, splits in result["paper_profile"].items():
        for split, s in splits.items():
            rows.append(
                f"{name + '/' + split:<14}{s['n']:>6}{s['mean_prompt']:>8}{s['median_prompt']:>7}"
                f"{s['p95_prompt']:>6}{s['max_prompt']:>5}{s['shared_prefix']:>8}{s['mean_distinct']:>10}"
                f"{s['mean_answer']:>8}{s['context_trimmed']:>9}"
            )
    rows.append("")
    rows.append("MELD train, context window z:")
    for z, s in result["meld_train_by_context_turns"].items():
        rows.append(
            f"  z={z:<13} mean {s['mean_prompt']:>6}  p95 {s['p95_prompt']:>4}  max {s['max_prompt']:>4}  "
            f"distinct {s['mean_distinct']:>6}  trimmed to fit 256: {s['context_trimmed']}"
        )
    rows.append(
        f"training mean tokens/example (prompt + answer): {result['train_mean_tokens_per_example']} "
        f"(shared prefix {result['train_mean_shared_prefix']}, distinct {result['train_mean_distinct']})"
    )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(RESULTS / "prompt_lengths.json"), help="JSON file to write.")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    from dialoguellm import runs

    result = {**runs.benchmark_header("prompt_lengths", argv), **measure()}
    result["seconds"] = round(time.perf_counter() - start, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(table(result))
    print(f"wrote {out} ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
