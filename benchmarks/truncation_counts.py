"""How many prompts a 256-token cutoff cuts, at each context size: the truncation row of the pitfalls table.

DialogueLLM's training scripts tokenise each training text (prompt and answer) with ``truncation=True,
max_length=256`` (docs/PITFALLS.md): a longer text loses its end, which is the answer. This package never cuts
a prompt: ``PromptBuilder.build`` drops the oldest context turns until prompt and answer fit
``prompt.cutoff_len``. This script builds every prompt of MELD and EmoryNLP (train, dev, test) with the
package's own builder and the paper profile (plain template, the paper's label order) for z = 0, 1, 2, 3 and
all previous turns, with no demonstration (DialogueLLM's training prompt has none) and with one (the paper's
headline rows; at z = all the demonstration brings all its own earlier turns), with the cutoff lifted so
nothing is trimmed, and counts the token sequences (prompt + answer + end of sequence) longer than 256
(``dialoguellm.analysis.pitfalls.truncation_counts``).

No MELD training clip has a video description here, so the prompts carry none (``prompt.use_video=false``):
the paper's prompts were longer by their descriptions, and its counts would be higher. Token counts use the
embedded model's tokenizer (SmolLM2, ``dialoguellm.model.loading.load_tokenizer``), not LLaMA 2's (a download
this machine cannot make); docs/SCALING.md says how the two compare. The official splits are counted (training
removes a few cross-corpus lines first; docs/DATA.md). Tokenizer only, no model: a few minutes on 2 cores.

    dialoguellm benchmark truncation_counts # writes benchmarks/results/truncation_counts.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
Z_VALUES: list[int | str] = [0, 1, 2, 3, "all"]
# DialogueLLM's training prompt has no demonstration (k = 0); the paper's headline rows are 1-shot (k = 1).
K_SHOTS = [0, 1]
CORPORA = ["meld", "emorynlp"]
SPLITS = ("train", "dev", "test")
UNCUT = 1_000_000  # a cutoff no prompt reaches: the builder trims nothing


def profile_overrides(z: int | str, k_shot: int) -> dict[str, Any]:
    """The paper profile with the embedded tokenizer, context size ``z``, ``k_shot`` demonstrations, no
    description and no trimming."""
    return {
        "model.name": "embedded",
        "data.datasets": CORPORA,
        "prompt.context_turns": z,
        "prompt.k_shot": k_shot,
        "prompt.use_video": False,
        "prompt.cutoff_len": UNCUT,
    }


def split_counts(
    tokenizer: Any, corpora: dict[str, Any], corpus: str, split: str, z: int | str, k_shot: int, cutoff: int
) -> dict[str, Any]:
    """``truncation_counts`` of every prompt of one corpus split, built untrimmed by the package's builder."""
    from dialoguellm.analysis.pitfalls import truncation_counts
    from dialoguellm.config import load_config
    from dialoguellm.prompts import builders_from_config, context_of, dialogue_index, rows_of

    config = load_config("paper", overrides=profile_overrides(z, k_shot))
    builder = builders_from_config(tokenizer, corpora, config)[corpus]
    rows = rows_of(corpora[corpus][split])
    index = dialogue_index(rows)
    examples = builder.build_split(rows)
    wanted = [len(context_of(r, index[str(r["dialogue_id"])], z)) for r in rows]
    if any(e.meta["context_turns"] < w for e, w in zip(examples, wanted, strict=True)):
        raise RuntimeError(f"{corpus}/{split} z={z}: the builder trimmed a prompt; raise UNCUT.")
    return truncation_counts(
        [len(e.prompt_ids) + len(builder.answer_ids[e.label_id]) for e in examples], cutoff
    )


def measure(cutoff: int) -> dict[str, Any]:
    """``k_shot -> z -> corpus -> split -> counts``."""
    from dialoguellm.config import load_config
    from dialoguellm.corpora.readers import load_corpora
    from dialoguellm.model.loading import load_tokenizer

    tokenizer = load_tokenizer(load_config("paper", overrides=profile_overrides(1, 0)))
    corpora = load_corpora(CORPORA)
    return {
        str(k): {
            str(z): {
                c: {s: split_counts(tokenizer, corpora, c, s, z, k, cutoff) for s in SPLITS} for c in CORPORA
            }
            for z in Z_VALUES
        }
        for k in K_SHOTS
    }


def table(by_k: dict[str, Any]) -> str:
    rows = []
    for k, by_z in by_k.items():
        rows.append(f"k_shot = {k}; z" + "".join(f"{c + '/' + s:>18}" for c in CORPORA for s in SPLITS))
        rows += [z_row(z, corpora) for z, corpora in by_z.items()]
    return "\n".join(rows)


def z_row(z: str, corpora: dict[str, Any]) -> str:
    cells = [
        f"{corpora[c][s]['cut']:>7} ({100 * corpora[c][s]['cut_share']:4.1f}%)"
        for c in CORPORA
        for s in SPLITS
    ]
    return f"{z:<14}" + "".join(f"{cell:>18}" for cell in cells)


K_SHOT_NOTES = {
    "0": "no demonstration, as DialogueLLM's training prompt",
    "1": "one demonstration, the paper's headline rows",
}


def markdown(by_k: dict[str, Any]) -> str:
    """The counts as the Markdown tables of docs/PITFALLS.md ("cut of n" per corpus split, one row per z)."""
    names = {"meld": "MELD", "emorynlp": "EmoryNLP"}
    lines = []
    for k, by_z in by_k.items():
        lines += [f"**k_shot = {k}** ({K_SHOT_NOTES.get(k, 'demonstrations')})", ""]
        lines.append("| z | " + " | ".join(f"{names[c]} {s}" for c in CORPORA for s in SPLITS) + " |")
        lines.append("|---" * (1 + len(CORPORA) * len(SPLITS)) + "|")
        for z, corpora in by_z.items():
            cells = [f"{corpora[c][s]['cut']:,} of {corpora[c][s]['n']:,}" for c in CORPORA for s in SPLITS]
            lines.append(f"| {z} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    from dialoguellm import runs
    from dialoguellm.io import write_json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cutoff", type=int, default=256, help="Tokens a sequence may have before it is cut."
    )
    parser.add_argument("--out", default=str(RESULTS / "truncation_counts.json"), help="JSON file to write.")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    by_k = measure(args.cutoff)
    result = {
        **runs.benchmark_header(
            "truncation_counts",
            argv,
            tokenizer="SmolLM2-135M-Instruct (embedded), 49,152-token BPE vocabulary",
            profile="paper (plain template, paper label order), prompt.use_video=false, prompt.k_shot 0 and 1, "
            "cutoff lifted",
            cutoff=args.cutoff,
            counted="prompt + answer + end-of-sequence tokens, longer than the cutoff",
        ),
        "by_k_shot_and_context_turns": by_k,
        "seconds": round(time.perf_counter() - start, 1),
    }
    out = write_json(Path(args.out), result)
    print(table(by_k))
    print(f"wrote {out} ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
