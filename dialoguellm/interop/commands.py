"""The command-line side of ``dialoguellm.interop``: ``dialoguellm export-dataset``,
``dialoguellm lm-eval-command`` (prints, runs nothing) and ``dialoguellm book``. ``cli.py`` adds these subcommands with ``add_parsers`` and runs the handler
each sets as ``args.handler``; heavy imports wait until a handler runs."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_parsers(sub: Any) -> None:
    """Add the interop subcommands to ``cli``'s subparsers."""
    ed = sub.add_parser(
        "export-dataset",
        help="write the cleaned corpora as a Hugging Face dataset (parquet + save_to_disk + dataset card)",
    )
    ed.add_argument(
        "out", help="new folder (a previous export there is replaced once the new one is complete)"
    )
    ed.add_argument(
        "--data-dir", default=None, help="raw corpora folder (default: the vendored MELD, EmoryNLP)"
    )
    ed.add_argument(
        "--iemocap-dir", default=None, help="your IEMOCAP_full_release (default: $IEMOCAP_DIR; never pushed)"
    )
    ed.add_argument(
        "--push-to-hub",
        default=None,
        metavar="REPO",
        help="also upload the card and parquet files to the hub dataset REPO (private; token from $HF_TOKEN)",
    )
    ed.set_defaults(handler=_export_dataset)
    lm = sub.add_parser(
        "lm-eval-command",
        help="print the lm-evaluation-harness command that scores a model on the ERC tasks with this prompt",
    )
    lm.add_argument(
        "--model", default="embedded", help="embedded, a save_pretrained folder, a .gguf file or a hub id"
    )
    lm.add_argument("--corpora", default="meld,emorynlp", help="comma-separated: meld, emorynlp, iemocap")
    lm.add_argument("--split", default="test", choices=["test", "dev"], help="dev: the *_erc_dev tasks")
    lm.add_argument("--profile", default="cpu", help="the profile whose prompt settings the tasks use")
    lm.add_argument("--dtype", default="float32", help="lm-eval's dtype (float32 is what equals our scorer)")
    lm.add_argument("--batch-size", type=int, default=8)
    lm.add_argument("--device", default="cpu", help="cpu, cuda, cuda:0, mps")
    lm.add_argument("--limit", type=int, default=None, help="only the first N utterances of each task")
    lm.add_argument(
        "--output-path", default="lm_eval_results", help="where lm-eval writes results and samples"
    )
    lm.set_defaults(handler=_lm_eval_command)
    bk = sub.add_parser(
        "book", help="the README, docs/ and a run's executed notebooks as a static site (`make book`)"
    )
    bk.add_argument("--run-dir", default=None, help="a run of `make reproduce` (default: runs/latest)")
    bk.add_argument("--out", default=None, help="default: RUN_DIR/book")
    bk.set_defaults(handler=_book)


def _export_dataset(args: argparse.Namespace) -> int:
    from dialoguellm.interop.dataset import export_dataset

    return _run(
        "export-dataset",
        lambda: export_dataset(args.out, args.data_dir, args.iemocap_dir, args.push_to_hub),
        lambda r: {"out": str(r.folder), "counts": r.counts, "pushed_to": r.pushed_to, "notes": r.notes},
    )


def _book(args: argparse.Namespace) -> int:
    from dialoguellm.interop.book import main as book_main

    return book_main(
        [*(["--run-dir", args.run_dir] if args.run_dir else []), *(["--out", args.out] if args.out else [])]
    )


def _lm_eval_command(args: argparse.Namespace) -> int:
    from dialoguellm.interop.harness import command_line, lm_eval_command

    corpora = [c.strip() for c in args.corpora.split(",") if c.strip()]
    try:
        command = lm_eval_command(
            args.model, corpora, args.split, args.profile, args.dtype, args.batch_size, args.device, args.limit,
            args.output_path,
        )  # fmt: skip
    except (ValueError, OSError) as err:
        print(f"dialoguellm lm-eval-command: {err}", file=sys.stderr)
        return 2
    print(command_line(command))
    return 0


def _run(command: str, action: Any, summary: Any) -> int:
    """Run ``action``; print ``summary(result)`` as JSON, or the error on standard error (exit status 2)."""
    try:
        result = action()
    except (ValueError, OSError) as err:
        print(f"dialoguellm {command}: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary(result), indent=2))
    return 0
