"""Command line: ``dialoguellm train --config cpu [--set key=value ...] [--resume]``,
``dialoguellm evaluate --run-dir DIR [--split test] [--mode score|generate]`` and
``dialoguellm predict (--run-dir DIR | --model NAME) [--labels meld|"calm,angry"] turns.csv`` and
``dialoguellm export --run-dir DIR --merge OUT`` and
``dialoguellm prompt --config cpu --corpus meld --split test --index 3`` (one prompt as the model sees it).

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
    ev.add_argument(
        "--model",
        default=None,
        help="zero-shot, no adapter: a local folder, a .gguf file, a hub id, or openai:NAME (a chat endpoint at "
        "$DIALOGUELLM_LLM_BASE_URL, key in $DIALOGUELLM_LLM_API_KEY); prompts from --config (default cpu)",
    )
    ev.add_argument("--config", default=None, help="profile for --no-adapter, or to override the run's")
    ev.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ev.add_argument("--split", default="test", choices=["train", "dev", "test"])
    ev.add_argument("--mode", default=None, choices=["score", "generate"])
    ev.add_argument("--out", default=None, help="output folder (default: RUN_DIR/evaluation[_<mode>])")
    ev.add_argument("--data-dir", default=None)
    pr = sub.add_parser(
        "predict", help="predict the emotion of every turn of your own conversation file (CSV or JSONL)"
    )
    pr.add_argument("turns", help="CSV (header: speaker,text[,dialogue_id,description,label]) or JSONL")
    pr.add_argument("--run-dir", default=None, help="a trained run: its adapter, settings and label biases")
    pr.add_argument(
        "--model", default=None, help="or a bare model: embedded, a folder, a .gguf file, a hub id"
    )
    pr.add_argument("--config", default=None, help="prompt settings for --model (default: the cpu profile)")
    pr.add_argument(
        "--labels",
        default=None,
        help="a corpus (meld, emorynlp, iemocap) or your own words: 'calm,angry,happy'",
    )
    pr.add_argument("--out", default=None, help="output file (default: standard output)")
    pr.add_argument("--format", default=None, choices=["csv", "json"], help="default: from --out, else csv")
    ex = sub.add_parser("export", help="export a run's adapter merged into its base model (safetensors)")
    ex.add_argument("--run-dir", required=True, help="the trained run whose adapter to export")
    ex.add_argument("--merge", required=True, metavar="OUT", help="new folder for the merged model")
    ex.add_argument(
        "--dev-sample", type=int, default=200, help="dev utterances per corpus checked before/after merging"
    )
    sp = sub.add_parser("prompt", help="print one utterance's prompt exactly as the model sees it")
    sp.add_argument("--config", default="cpu", help="profile name or a YAML path (its prompt settings)")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    sp.add_argument("--corpus", default="meld", help="a corpus of the profile's data.datasets")
    sp.add_argument("--split", default="test", choices=["train", "dev", "test"])
    sp.add_argument("--index", type=int, default=0, help="row of the split (0-based)")
    sp.add_argument("--data-dir", default=None, help="raw corpora folder (default: the vendored copies)")
    return parser


def _show_prompt(args: argparse.Namespace) -> int:
    """``prompt``: the rendered prompt of one utterance (the profile's template, context, demonstrations and
    cutoff; no video description, which needs notebook 02's cache) and its gold answer."""
    from dialoguellm.config import load_config, parse_overrides
    from dialoguellm.corpora.readers import load_corpora_for
    from dialoguellm.model.loading import load_tokenizer
    from dialoguellm.prompts.builder import builders_from_config

    config = load_config(args.config, parse_overrides(args.set))
    if args.corpus not in config.data.datasets:
        raise ValueError(
            f"--corpus {args.corpus!r} is not in the profile's data.datasets {list(config.data.datasets)}; "
            "pick one of those."
        )
    corpora = load_corpora_for(config, None, args.data_dir)
    builder = builders_from_config(load_tokenizer(config), corpora, config)[args.corpus]
    split = corpora[args.corpus][args.split]
    if not 0 <= args.index < len(split):
        raise ValueError(f"--index {args.index} is outside {args.corpus} {args.split} (0..{len(split) - 1}).")
    example = builder.build_split(split, only=[args.index])[0]
    print(example.prompt if example.prompt.endswith("\n") else example.prompt + "\n", end="")
    print(f"[gold answer: {builder.answer_text(example.label_id)}; {len(example.prompt_ids)} prompt tokens]")
    return 0


def _evaluate_model(args: argparse.Namespace, run: Path) -> int:
    """``evaluate --model``: a model without an adapter, zero-shot, with the profile's prompts; written under
    ``RUN_DIR/zero_shot/<model>`` (apart from notebook 04's evaluation) unless ``--out`` says otherwise."""
    from dialoguellm.config import load_config, parse_overrides
    from dialoguellm.corpora.readers import load_corpora_for
    from dialoguellm.corpora.video import load_descriptions
    from dialoguellm.evaluation.endpoint import PREFIX, evaluate_endpoint
    from dialoguellm.evaluation.run import evaluate_run

    config = load_config(args.config or "cpu", parse_overrides(args.set))
    config.model.name = args.model  # as given: a path, a hub id or openai:NAME is never parsed as YAML
    corpora = load_corpora_for(config, run, args.data_dir)
    descriptions = load_descriptions(run) if config.prompt.use_video else {}
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in args.model.rstrip("/").split("/")[-1])
    out = Path(args.out) if args.out else runs.RunLayout(run).root / "zero_shot" / safe
    if args.model.startswith(PREFIX):
        summary = evaluate_endpoint(args.model, config, corpora, out, args.split, descriptions)
    else:
        summary = evaluate_run(
            corpora, out, config=config, split=args.split, descriptions=descriptions, mode=args.mode
        )
    keys = ("n", "accuracy", "weighted_f1", "macro_f1", "unparsed")
    results = {n: {k: r.get(k, 0) for k in keys} for n, r in summary["results"].items()}
    print(json.dumps({"model": summary["model"], "out": str(out), "results": results}, indent=2))
    return 0


def _export(args: argparse.Namespace) -> int:
    from dialoguellm.evaluation.export import merge_adapter

    report = merge_adapter(args.run_dir, args.merge, args.dev_sample)
    print(json.dumps({"merged": args.merge, "merge_check": report}, indent=2))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from dialoguellm.evaluation.predict import predict, write_prediction

    fmt = args.format or ("json" if args.out and args.out.lower().endswith(".json") else "csv")
    result = predict(args.turns, args.run_dir, args.model, args.labels, args.config)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.out:
        path = write_prediction(result, args.out, fmt)
        print(f"{len(result.frame)} turns -> {path}", file=sys.stderr)
    elif fmt == "csv":
        result.frame.to_csv(sys.stdout, index=False, float_format="%.4f")
    else:
        print(json.dumps(result.to_dict(), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dialoguellm`` console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command in ("predict", "export", "prompt"):  # read a run folder, never create one
        handlers = {"predict": _predict, "export": _export, "prompt": _show_prompt}
        try:
            return handlers[args.command](args)
        except (ValueError, OSError) as err:  # OSError: files, and a model or hub id that cannot be loaded
            print(f"dialoguellm {args.command}: {err}", file=sys.stderr)
            return 2
    from dialoguellm.config import config_from_dict, load_config, parse_overrides
    from dialoguellm.corpora.readers import load_corpora_for
    from dialoguellm.corpora.video import load_descriptions
    from dialoguellm.evaluation.run import evaluate_run
    from dialoguellm.training.loop import train

    run = runs.run_dir(args.run_dir)
    try:
        if args.command == "train":
            config = load_config(args.config, parse_overrides(args.set))
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
        if args.model:
            return _evaluate_model(args, run)
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
    except (ValueError, OSError, RuntimeError) as err:
        print(f"dialoguellm {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
