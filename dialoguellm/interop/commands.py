"""The command-line side of ``dialoguellm.interop``: ``dialoguellm export-dataset`` and
``dialoguellm lm-eval-command``. ``cli.py`` adds these subcommands with ``add_parsers`` and runs the handler
each sets as ``args.interop``; heavy imports wait until a handler runs."""

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
    ed.set_defaults(interop=_export_dataset)


def _export_dataset(args: argparse.Namespace) -> int:
    from dialoguellm.interop.dataset import export_dataset

    return _run(
        "export-dataset",
        lambda: export_dataset(args.out, args.data_dir, args.iemocap_dir, args.push_to_hub),
        lambda r: {"out": str(r.folder), "counts": r.counts, "pushed_to": r.pushed_to, "notes": r.notes},
    )


def _run(command: str, action: Any, summary: Any) -> int:
    """Run ``action``; print ``summary(result)`` as JSON, or the error on standard error (exit status 2)."""
    try:
        result = action()
    except (ValueError, OSError) as err:
        print(f"dialoguellm {command}: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary(result), indent=2))
    return 0
