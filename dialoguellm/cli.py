"""Command line: ``dialoguellm train --config cpu [--set key=value ...] [--resume]`` and
``dialoguellm evaluate --run-dir DIR [--split test] [--mode score|generate]``.

Both read the same YAML profiles as the notebooks (the packaged ``cpu``, ``paper``, ``paper_r8``, or a YAML
path) and write the same run folders (``runs.RunLayout``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from dialoguellm import runs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dialoguellm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="LoRA-tune a model (keeps the adapter with the best dev weighted F1)")
    tr.add_argument("--config", default="cpu", help="profile name (cpu, paper, paper_r8) or a YAML path")
    tr.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.lr=1e-4"
    )
    tr.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    tr.add_argument(
        "--run-dir", default=None, help="pipeline run folder (default: $DIALOGUELLM_RUN_DIR or runs/manual)"
    )
    tr.add_argument("--data-dir", default=None, help="raw corpora folder when RUN_DIR holds no curated data")
    tr.add_argument("--name", default="training", help="sub-folder of the run folder for this training run")
    ev = sub.add_parser("evaluate", help="evaluate a trained adapter (or the bare model) on a split")
    ev.add_argument("--run-dir", default=None, help="pipeline run folder")
    ev.add_argument("--name", default="training", help="training sub-folder to evaluate")
    ev.add_argument("--no-adapter", action="store_true", help="evaluate the bare model (needs --config)")
    ev.add_argument("--config", default=None, help="profile for --no-adapter, or to override the run's")
    ev.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ev.add_argument("--split", default="test", choices=["train", "dev", "test"])
    ev.add_argument("--mode", default=None, choices=["score", "generate"])
    ev.add_argument("--out", default=None, help="output folder (default: RUN_DIR/evaluation[_<mode>])")
    ev.add_argument("--data-dir", default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dialoguellm`` console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from dialoguellm.config import config_from_dict, load_config, parse_overrides
    from dialoguellm.corpora.readers import load_corpora_for, resolve_datasets
    from dialoguellm.corpora.video import load_descriptions
    from dialoguellm.evaluation.run import evaluate_run
    from dialoguellm.training.loop import train

    run = runs.run_dir(args.run_dir)
    try:
        if args.command == "train":
            config = resolve_datasets(load_config(args.config, parse_overrides(args.set)), run)
            corpora = load_corpora_for(config, run, args.data_dir)
            descriptions = load_descriptions(run) if config.prompt.use_video else {}
            result = train(config, run / args.name, corpora, descriptions, resume=args.resume)
            print(
                json.dumps(
                    {
                        "adapter": str(result.adapter_dir),
                        "best": result.best,
                        "seconds": round(result.seconds, 1),
                    },
                    indent=2,
                )
            )
            return 0
        train_dir = None if args.no_adapter else run / args.name
        if args.config:
            config = load_config(args.config, parse_overrides(args.set))
        elif train_dir is not None:
            config = runs.load_run_config(train_dir)
            if args.set:
                raw = config.to_dict()
                raw.pop("source")
                config = config_from_dict(raw, config.source, parse_overrides(args.set))
        else:
            raise ValueError("--no-adapter needs --config (which model and prompt settings to use).")
        config = resolve_datasets(config, run)
        corpora = load_corpora_for(config, run, args.data_dir)
        out = Path(args.out) if args.out else runs.RunLayout(run).evaluation(train_dir is not None)
        summary = evaluate_run(
            corpora,
            out,
            train_dir=train_dir,
            config=config,
            split=args.split,
            descriptions=load_descriptions(run) if config.prompt.use_video else {},
            mode=args.mode,
        )
        print(
            json.dumps(
                {
                    n: {k: r[k] for k in ("accuracy", "weighted_f1", "macro_f1", "unparsed")}
                    for n, r in summary["results"].items()
                },
                indent=2,
            )
        )
        return 0
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as err:
        print(f"dialoguellm {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
