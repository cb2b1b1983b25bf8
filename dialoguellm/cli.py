"""The one command line, ``dialoguellm SUBCOMMAND``:

  train --config cpu [--set key=value ...] [--resume] [--all-seeds]
  evaluate --run-dir DIR [--split test] [--mode score|generate] [--all-seeds] [--model NAME]
  predict (--run-dir DIR | --model NAME) [--labels meld|"calm,angry"] turns.csv
  export --run-dir DIR --merge OUT
  prompt --config cpu --corpus meld --split test --index 3   (one prompt as the model sees it)
  reproduce [--run-dir runs/NAME] [--fresh] [--only 01 03]    (every notebook: `make reproduce`)
  figures [--run-dir results/cpu] [--out DIR]                 (redraw figures/: `make figures`)
  summary [--run-dir runs/NAME]                               (a run's headline numbers, Markdown)
  export-results [--run-dir runs/NAME] [--out results/cpu]
  export-seeds --run-dir DIR [--out results/cpu/seeds]
  stats interval|paired PREDICTIONS.csv ...                   (dialogue-cluster bootstrap intervals)
  benchmark NAME [ARGS ...]                                   (a measurement of benchmarks/)
  experiment run|report NAME [--set ...] [--run-dir runs]    (an experiment file: docs/EXPERIMENTS.md)
  tables                                                      (the generated blocks of README and docs/: `make tables`)
  export-dataset OUT [--push-to-hub REPO]                     (the cleaned corpora as a Hugging Face dataset)
  lm-eval-command [--model M]                                 (the lm-evaluation-harness line for a model)
  book [--run-dir runs/NAME]                                  (README, docs/ and executed notebooks as a site: `make book`)

``--all-seeds`` is the paper's protocol: one adapter per seed of ``eval.seeds``, evaluated each, reported as
mean and sd over the seeds.

train and evaluate read the same YAML profiles as the notebooks (the packaged ``cpu``, ``paper``,
``paper_r8``, or a YAML path) and write the same run folders (``runs.RunLayout``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from dialoguellm import runs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dialoguellm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


# One function per subcommand: it adds the subcommand's parser and names its handler (``handler``, taking the
# parsed arguments, returning the exit status). A new subcommand is one such function and one line in
# SUBCOMMANDS.
def _add_train(sub) -> None:
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
    tr.add_argument(
        "--all-seeds",
        action="store_true",
        help="train one adapter per seed of eval.seeds (the paper's 5) into <name>_seed<S>; with --resume a "
        "finished seed is skipped and an interrupted one continues",
    )
    tr.set_defaults(handler=_train)


def _add_evaluate(sub) -> None:
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
    ev.add_argument(
        "--all-seeds",
        action="store_true",
        help="evaluate every <name>_seed<S> that train --all-seeds wrote (into <out>/seed<S>) and write the mean "
        "and sd over the seeds to <out>/seeds_summary.json",
    )
    ev.set_defaults(handler=_evaluate)


def _add_predict(sub) -> None:
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
    pr.set_defaults(handler=_predict)


def _add_export(sub) -> None:
    ex = sub.add_parser("export", help="export a run's adapter merged into its base model (safetensors)")
    ex.add_argument("--run-dir", required=True, help="the trained run whose adapter to export")
    ex.add_argument("--merge", required=True, metavar="OUT", help="new folder for the merged model")
    ex.add_argument(
        "--dev-sample", type=int, default=200, help="dev utterances per corpus checked before/after merging"
    )
    ex.set_defaults(handler=_export)


def _add_prompt(sub) -> None:
    sp = sub.add_parser("prompt", help="print one utterance's prompt exactly as the model sees it")
    sp.add_argument("--config", default="cpu", help="profile name or a YAML path (its prompt settings)")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    sp.add_argument("--corpus", default="meld", help="a corpus of the profile's data.datasets")
    sp.add_argument("--split", default="test", choices=["train", "dev", "test"])
    sp.add_argument("--index", type=int, default=0, help="row of the split (0-based)")
    sp.add_argument("--data-dir", default=None, help="raw corpora folder (default: the vendored copies)")
    sp.set_defaults(handler=_show_prompt)


def _add_reproduce(sub) -> None:
    rep = sub.add_parser(
        "reproduce", help="run all notebooks in order on the embedded default (`make reproduce`)"
    )
    rep.add_argument(
        "--run-dir",
        help="run folder (default: continue runs/latest if it did not finish, else a new runs/<timestamp>)",
    )
    rep.add_argument("--fresh", action="store_true", help="always start a new run folder")
    rep.add_argument("--only", nargs="*", help="notebook name prefixes to run, e.g. 01 03")
    rep.set_defaults(handler=_reproduce)


def _add_figures(sub) -> None:
    fig = sub.add_parser(
        "figures",
        help="redraw the tracked figures/ from saved results (`make figures`; no model, no training)",
    )
    fig.add_argument(
        "--run-dir", help="run folder or results copy (default: results/cpu, the committed run outputs)"
    )
    fig.add_argument("--out", help="folder for the figures (default: the repository's figures/)")
    fig.set_defaults(handler=_figures)


def _add_summary(sub) -> None:
    summ = sub.add_parser("summary", help="print a finished run's headline numbers as Markdown")
    summ.add_argument("--run-dir", help="run folder (default: runs/latest)")
    summ.set_defaults(handler=_summary)


def _add_export_results(sub) -> None:
    exp = sub.add_parser(
        "export-results",
        help="copy a finished run's small outputs (predictions, metrics, records) to results/",
    )
    exp.add_argument("--run-dir", help="run folder (default: runs/latest)")
    exp.add_argument("--out", default=str(runs.REPO_DIR / "results" / "cpu"), help="default: results/cpu")
    exp.set_defaults(handler=_export_results)


def _add_export_seeds(sub) -> None:
    seeds = sub.add_parser(
        "export-seeds",
        help="copy the test predictions of `dialoguellm train/evaluate --all-seeds` to results/cpu/seeds",
    )
    seeds.add_argument("--run-dir", required=True, help="the --run-dir given to train/evaluate --all-seeds")
    seeds.add_argument(
        "--out", default=str(runs.REPO_DIR / "results" / "cpu" / "seeds"), help="default: results/cpu/seeds"
    )
    seeds.set_defaults(handler=_export_seeds)


def _add_stats(sub) -> None:
    st = sub.add_parser(
        "stats",
        help="dialogue-cluster bootstrap interval of a prediction file, or a paired difference of two "
        "(`dialoguellm stats interval|paired ... --help`)",
    )
    st.add_argument("arguments", nargs=argparse.REMAINDER, help="passed on to the stats command")
    st.set_defaults(handler=_stats)


def _add_experiment(sub) -> None:
    xp = sub.add_parser(
        "experiment", help="run or report an experiment file (dialoguellm/experiments/NAME.yaml)"
    )
    xp.add_argument(
        "action", choices=["run", "report"], help="run: train and score every arm x seed (resumable)"
    )
    xp.add_argument(
        "name", help="an experiment of dialoguellm/experiments (ablations_cpu, ...) or a YAML path"
    )
    xp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every arm")
    xp.add_argument(
        "--run-dir", default=None, help="records go to RUN_DIR/experiments/NAME (default: runs; report: the "
        "run's own records, else the committed results/cpu)",
    )  # fmt: skip
    xp.add_argument("--data-dir", default=None, help="raw corpora folder (default: the vendored copies)")
    xp.add_argument(
        "--corpora-run", default=None, help="a run folder with notebook 01's corpora and 02's descriptions"
    )
    xp.add_argument(
        "--resume-from", default=None, metavar="FOLDER", help="run: first copy the plan and unit records of an "
        "experiment stopped elsewhere (e.g. the committed results/cpu/in_progress/NAME) into RUN_DIR, then go on",
    )  # fmt: skip
    xp.add_argument(
        "--seeds", default=None, metavar="S,S", help="run: only the units of these seeds (to split a grid over "
        "machines; the units scored once are left to a run without --seeds); merge with --resume-from",
    )  # fmt: skip
    xp.set_defaults(handler=_experiment)


def _seed_list(text: str, experiment) -> list[int]:
    """``--seeds 2,3``: seeds the experiment has, else a clear error."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(
            f"dialoguellm experiment: --seeds {text}: give seeds as integers, e.g. --seeds 2,3"
        ) from None
    unknown = sorted(set(seeds) - set(experiment.seeds))
    if unknown or not seeds:
        raise SystemExit(
            f"dialoguellm experiment: --seeds {text}: {experiment.name} has seeds {experiment.seeds}; "
            f"{unknown or 'none given'} not among them."
        )
    return seeds


def _add_tables(sub) -> None:
    tb = sub.add_parser(
        "tables", help="rewrite the generated blocks of README.md and docs/ from results/ (`make tables`)"
    )
    tb.add_argument("--results", default=str(runs.REPO_DIR / "results" / "cpu"), help="default: results/cpu")
    tb.set_defaults(handler=_tables)


def _add_interop(sub) -> None:
    """``export-dataset``, ``lm-eval-command`` and ``book`` (``dialoguellm.interop.commands``)."""
    from dialoguellm.interop import commands as interop

    interop.add_parsers(sub)


def _add_benchmark(sub) -> None:
    names = benchmark_names()
    bench = sub.add_parser(
        "benchmark",
        help=f"run a measurement of benchmarks/ ({', '.join(names) or 'none in this checkout'}); "
        "the arguments after NAME go to it (`dialoguellm benchmark NAME --help`)",
    )
    bench.add_argument("name", metavar="NAME", help=f"one of: {', '.join(names)}")
    bench.add_argument("arguments", nargs=argparse.REMAINDER, help="passed on to benchmarks/NAME.py")
    bench.set_defaults(handler=_benchmark)


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
    """Entry point of the ``dialoguellm`` console script. Run as the script (no ``argv``), it first starts
    again on mimalloc as notebook kernels do (``runs.reexec_with_allocator``; ``DIALOGUELLM_ALLOCATOR=system``
    keeps the C library's malloc)."""
    if argv is None:
        runs.reexec_with_allocator()
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except (ValueError, OSError, RuntimeError) as err:  # OSError: files, and a model or hub id not loadable
        print(f"dialoguellm {args.command}: {err}", file=sys.stderr)
        return 2


def _train(args: argparse.Namespace) -> int:
    """``train``: one adapter (or one per seed with ``--all-seeds``) into the run folder."""
    from dialoguellm.config import load_config, parse_overrides
    from dialoguellm.corpora.readers import load_corpora_for, resolve_datasets
    from dialoguellm.corpora.video import load_descriptions
    from dialoguellm.training.loop import train

    run = runs.run_dir(args.run_dir)
    config = resolve_datasets(load_config(args.config, parse_overrides(args.set)), run)
    corpora = load_corpora_for(config, run, args.data_dir)
    descriptions = load_descriptions(run) if config.prompt.use_video else {}
    if not args.all_seeds:
        result = train(config, run / args.name, corpora, descriptions, resume=args.resume)
        print(json.dumps(_train_line(result), indent=2))
        return 0
    print(json.dumps(_train_seeds(config, run, args, corpora, descriptions), indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    """``evaluate``: a run's adapter (each seed's with ``--all-seeds``), the bare model, or ``--model``."""
    from dialoguellm.corpora.readers import load_corpora_for
    from dialoguellm.corpora.video import load_descriptions
    from dialoguellm.evaluation.run import evaluate_run

    run = runs.run_dir(args.run_dir)
    if args.model:
        return _evaluate_model(args, run)
    train_dir = None if args.no_adapter else run / args.name
    if args.all_seeds:
        if train_dir is None:
            raise ValueError("--all-seeds evaluates trained adapters; it cannot go with --no-adapter.")
        train_dir = run / f"{args.name}_seed{_run_seeds(run, args.name)[0]}"
    config = _evaluation_config(args, train_dir)
    corpora = load_corpora_for(config, run, args.data_dir)
    out = Path(args.out) if args.out else runs.RunLayout(run).evaluation(train_dir is not None)
    descriptions = load_descriptions(run) if config.prompt.use_video else {}
    if args.all_seeds:
        print(json.dumps(_evaluate_seeds(run, args, corpora, descriptions, out), indent=2))
        return 0
    summary = evaluate_run(
        corpora, out, train_dir=train_dir, config=config, split=args.split, descriptions=descriptions,
        mode=args.mode,
    )  # fmt: skip
    print(json.dumps({n: _headline(r) for n, r in summary["results"].items()}, indent=2))
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from dialoguellm.pipeline import reproduce

    run_dir, report = reproduce(args.run_dir, fresh=args.fresh, only=args.only)
    print(
        f"Done: {report['total_minutes']} min, peak memory {report['peak_memory_gb']} GB. "
        f"Executed notebooks, results and figures in {run_dir}."
    )
    return 0


def _figures(args: argparse.Namespace) -> int:
    from dialoguellm.pipeline import draw_figures

    written, missing = draw_figures(args.run_dir, args.out)
    for path in written:
        print(path)
    for name, patterns in missing.items():
        print(f"not redrawn: {name} ({args.run_dir or 'results/cpu'} has no {', '.join(patterns)})")
    return 0


def _summary(args: argparse.Namespace) -> int:
    from dialoguellm.report import run_report

    print(run_report(Path(args.run_dir) if args.run_dir else runs.REPO_DIR / "runs" / "latest"))
    return 0


def _export_results(args: argparse.Namespace) -> int:
    from dialoguellm.report import export_results

    source = Path(args.run_dir) if args.run_dir else runs.REPO_DIR / "runs" / "latest"
    written = export_results(source, args.out)
    print(f"{len(written)} files in {args.out}")
    return 0


def _export_seeds(args: argparse.Namespace) -> int:
    from dialoguellm.report import export_seeds

    written = export_seeds(Path(args.run_dir), args.out)
    print(f"{len(written)} files in {args.out}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from dialoguellm.stats import main as stats_main

    return stats_main(args.arguments)


def _experiment(args: argparse.Namespace) -> int:
    """``experiment run``: ``experiments.runner.run_experiment``; ``experiment report``: the table of its records."""
    from dialoguellm.config import parse_overrides
    from dialoguellm.experiments import runner, spec, summary
    from dialoguellm.report import experiment_table

    experiment = spec.load_experiment(
        args.name, overrides=parse_overrides(args.set), run_dir=args.corpora_run
    )
    own = runs.RunLayout(Path(args.run_dir or runs.REPO_DIR / "runs")).experiment(experiment.name)
    if args.action == "run":
        from dialoguellm.corpora.video import load_descriptions, vendored_descriptions

        corpora = runner.experiment_corpora(experiment, args.data_dir, args.corpora_run)
        descriptions = load_descriptions(args.corpora_run) if args.corpora_run else None
        if runner.marks_described(experiment) and not any((descriptions or {}).values()):
            descriptions = vendored_descriptions()  # an arm scored on described lines: the packaged 191
        if args.resume_from:
            copied = runner.resume_from(args.resume_from, own)
            print(f"{len(copied)} unit record(s) copied from {args.resume_from} into {own.units}")
        seeds = _seed_list(args.seeds, experiment) if args.seeds else None
        runner.run_experiment(experiment, corpora, own, descriptions=descriptions, only_seeds=seeds)
    folder = own.root if own.plan.is_file() else summary.committed_folder(experiment.name)
    print(experiment_table(folder))
    if experiment.name.startswith(
        "pitfalls"
    ):  # the field's practices: their own table (experiments.pitfalls)
        from dialoguellm.report import pitfalls_table

        print("\n" + pitfalls_table(folder))
    return 0


def _tables(args: argparse.Namespace) -> int:
    from dialoguellm.report import GENERATED_DOCUMENTS, update_generated_blocks

    for document in GENERATED_DOCUMENTS:
        changed = update_generated_blocks(runs.REPO_DIR / document, args.results)
        print(
            f"{document}: " + (f"regenerated {', '.join(changed)}" if changed else "every block up to date")
        )
    return 0


BENCHMARKS_DIR = runs.REPO_DIR / "benchmarks"


def benchmark_names() -> list[str]:
    """The measurements ``dialoguellm benchmark`` runs: the scripts of the checkout's benchmarks/ folder."""
    return sorted(p.stem for p in BENCHMARKS_DIR.glob("*.py") if not p.name.startswith("_"))


def _benchmark(args: argparse.Namespace) -> int:
    """``benchmark NAME ...``: runs benchmarks/NAME.py as its own script would run, arguments passed through."""
    import runpy

    script = BENCHMARKS_DIR / f"{args.name}.py"
    if not script.is_file():
        raise ValueError(
            f"no benchmark {args.name!r} in {BENCHMARKS_DIR} (benchmarks ship with a checkout, not the package); "
            f"pick one of: {', '.join(benchmark_names()) or 'none found'}."
        )
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [f"dialoguellm benchmark {args.name}", *args.arguments]
    sys.path.insert(0, str(BENCHMARKS_DIR))  # as `python benchmarks/NAME.py` would have it
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as done:  # the script's own sys.exit(...)
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    return 0


SUBCOMMANDS = [
    _add_train,
    _add_evaluate,
    _add_predict,
    _add_export,
    _add_prompt,
    _add_reproduce,
    _add_figures,
    _add_summary,
    _add_export_results,
    _add_export_seeds,
    _add_stats,
    _add_benchmark,
    _add_experiment,
    _add_tables,
    _add_interop,
]


def _headline(result: dict) -> dict:
    return {k: result[k] for k in ("accuracy", "weighted_f1", "macro_f1", "unparsed")}


def _train_line(result) -> dict:
    return {"adapter": str(result.adapter_dir), "best": result.best, "seconds": round(result.seconds, 1)}


def _train_seeds(config, run: Path, args: argparse.Namespace, corpora: dict, descriptions: dict) -> dict:
    """One adapter per seed of ``eval.seeds`` into ``<name>_seed<S>`` (the paper averages 5 seeds)."""
    import copy

    from dialoguellm.training.loop import train

    done = {}
    for seed in config.eval.seeds:
        folder = runs.TrainingLayout(run / f"{args.name}_seed{seed}")
        if args.resume and folder.metrics.is_file():
            done[seed] = {"adapter": str(folder.adapter), "skipped": "finished earlier"}
            continue
        seeded = copy.deepcopy(config)
        seeded.train.seed = seed
        resume = args.resume and folder.checkpoint.exists()
        result = train(seeded, folder.root, corpora, descriptions, resume=resume, one_of_seeds=True)
        done[seed] = _train_line(result)
    return done


def _run_seeds(run: Path, name: str) -> list[int]:
    """The seeds whose ``<name>_seed<S>`` folders ``train --all-seeds`` wrote, in eval.seeds order."""
    found = sorted(p for p in run.glob(f"{name}_seed*") if p.is_dir())
    if not found:
        raise FileNotFoundError(
            f"No {name}_seed<S> folders in {run}; run `dialoguellm train --all-seeds` with this --run-dir first."
        )
    seeds = runs.load_run_config(found[0]).eval.seeds
    missing = [s for s in seeds if not (run / f"{name}_seed{s}").is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{run}: eval.seeds lists {seeds} but {', '.join(f'{name}_seed{s}' for s in missing)} is missing; "
            "finish them with `dialoguellm train --all-seeds --resume`."
        )
    return list(seeds)


def _evaluation_config(args: argparse.Namespace, train_dir: Path | None):
    """The config to evaluate with: --config, else the training run's own (with --set applied)."""
    from dialoguellm.config import config_from_dict, load_config, parse_overrides
    from dialoguellm.corpora.readers import resolve_datasets

    run = runs.run_dir(args.run_dir)
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
    return resolve_datasets(config, run)


def _evaluate_seeds(
    run: Path, args: argparse.Namespace, corpora: dict, descriptions: dict, out: Path
) -> dict:
    """Evaluate each seed's adapter into ``out/seed<S>``; mean and sd per corpus in ``out/seeds_summary.json``.
    Each seed is scored with its own training run's settings: its ``train.seed`` draws the demonstration its
    adapter was trained with."""
    from dialoguellm.evaluation.run import evaluate_run
    from dialoguellm.io import write_json
    from dialoguellm.metrics import mean_sd

    per_seed = {}
    for seed in _run_seeds(run, args.name):
        train_dir = run / f"{args.name}_seed{seed}"
        own = _evaluation_config(args, train_dir)
        summary = evaluate_run(
            corpora, out / f"seed{seed}", train_dir=train_dir, config=own,
            split=args.split, descriptions=descriptions, mode=args.mode,
        )  # fmt: skip
        per_seed[seed] = summary["results"]
    corpora_names = list(next(iter(per_seed.values())))
    summary = {
        "seeds": list(per_seed),
        "split": args.split,
        "results": {name: mean_sd([per_seed[s][name] for s in per_seed]) for name in corpora_names},
    }
    write_json(out / "seeds_summary.json", summary)
    return summary


if __name__ == "__main__":
    sys.exit(main())
