"""Command line: ``tune-app`` / ``python -m tune_app`` (also the ``ray job submit`` entry).

Bad input prints one line on stderr and exits with status 2; nothing is started.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml

# Keep these imports light: building the parser, --help, `strategies` and `spaces`
# import no Ray, torch, MLflow or Optuna (tests/test_cli.py checks); each command
# imports what it runs.
from tune_app.controller import cli as controller_cli
from tune_app.errors import ConfigError
from tune_app.spaces import parse_yaml

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line on stderr and exit 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _options(pairs: Sequence[str] | None, flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise SystemExit(_fail(f"{flag} takes KEY=VALUE, got {pair!r}"))
        try:
            out[key] = parse_yaml(raw)
        except yaml.YAMLError:
            out[key] = raw
    return out


def _fail(message: str) -> int:
    print(f"tune-app: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _search_args(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """The request's options as flags (:func:`tune_app.run.request.cli_fields`), plus
    the CLI's own ways to give searcher and scheduler options."""
    from tune_app.run.request import cli_fields

    for f in cli_fields():
        if f.name in skip:
            continue
        meta, help_text = f.metadata, f.metadata["help"]
        if f.default is not None and "default:" not in help_text:
            help_text += " (default: %(default)s)"
        p.add_argument(
            "--" + f.name.replace("_", "-"),
            type=meta["type"] or str,
            default=f.default,
            help=help_text,
        )
    p.add_argument(
        "--opt",
        action="append",
        metavar="KEY=VALUE",
        help="searcher option (repeatable); `tune-app strategies` lists each one's options",
    )
    p.add_argument(
        "--controller-checkpoint",
        metavar="DIR",
        help="dqn: load this Q-network checkpoint (from `tune-app controller train`)",
    )
    p.add_argument(
        "--scheduler-opt",
        action="append",
        metavar="KEY=VALUE",
        help="scheduler option (repeatable; also of a scheduler given as --strategy); "
        "`tune-app strategies` lists them",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def build_parser() -> argparse.ArgumentParser:
    """The ``tune-app`` argument parser."""
    from tune_app.strategies import REGISTRY

    parser = _Parser(prog="tune-app", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run one search")
    run.add_argument(
        "--strategy",
        required=True,
        choices=list(REGISTRY),
        help="searcher, or scheduler preset (random search under it); see `tune-app strategies`",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the newest unfinished run of this same search (else start one)",
    )
    _search_args(run)

    cmp = sub.add_parser("compare", help="run several strategies x seeds on one budget")
    cmp.add_argument(
        "--strategies",
        default=",".join(REGISTRY),
        help="comma-separated strategy names (default: all)",
    )
    cmp.add_argument("--seeds", type=int, default=1, help="number of seeds 0..N-1")
    _search_args(cmp, skip=("seed",))
    _report_args(cmp)
    cmp.add_argument("--report-dir", help="where to write the report (default: next to the runs)")
    cmp.add_argument(
        "--cv-top",
        type=int,
        default=0,
        metavar="K",
        help="cross-validate the K best configs of each strategy (default 0: off)",
    )
    cmp.add_argument("--folds", type=int, default=5, metavar="F", help="folds for --cv-top")
    cmp.add_argument(
        "--cv-epochs",
        type=int,
        metavar="E",
        help="epochs per cross-validation / with-without training (default: max_epochs)",
    )
    cmp.add_argument(
        "--with-without",
        type=int,
        default=0,
        metavar="N",
        help="train the best and the default config N times each and compare (default 0: off)",
    )

    rep = sub.add_parser("report", help="rebuild a comparison's report from MLflow alone")
    rep.add_argument("ref", help="comparison run id, or an experiment name (its latest comparison)")
    rep.add_argument("--tracking-uri", help="MLflow tracking URI (default: ./mlflow.db)")
    rep.add_argument("--out", default="report", help="output directory (default: ./report)")
    rep.add_argument("--log", action="store_true", help="also log the files to the run")
    _report_args(rep)

    res = sub.add_parser("resume", help="continue a search whose driver died")
    res.add_argument("target", help="run directory, or the search's MLflow parent run id")
    res.add_argument("--tracking-uri", help="MLflow URI (default: the run's own)")
    res.add_argument("--address", help="Ray address (default: $RAY_ADDRESS or embedded local)")
    res.add_argument("--quiet", action="store_true", help="no progress lines")
    syn = sub.add_parser("sync", help="send results MLflow missed (server was down) from a run dir")
    syn.add_argument("run_dir", help="run directory (holds run.json and journal.jsonl)")
    syn.add_argument("--tracking-uri", help="MLflow URI (default: the run's own)")

    sub.add_parser("strategies", help="list the strategies and their options")
    controller_cli.add_parser(sub)
    spaces = sub.add_parser(
        "spaces", help="list the built-in search spaces (or a folder's), or validate one"
    )
    spaces.add_argument("file", nargs="?", help="a space file or built-in name to validate")
    spaces.add_argument("--dir", help="list the *.yaml spaces under DIR instead of the built-in")
    return parser


def _search_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The request's options from the parsed flags."""
    from tune_app.run.request import cli_fields

    out = {f.name: getattr(args, f.name) for f in cli_fields() if hasattr(args, f.name)}
    out.update(
        strategy_options=_strategy_options(args),
        scheduler_options=_options(args.scheduler_opt, "--scheduler-opt"),
        verbose=not args.quiet,
    )
    return out


def _strategy_options(args: argparse.Namespace) -> dict[str, Any]:
    opts = _options(args.opt, "--opt")
    if args.controller_checkpoint is not None:  # the dqn searcher's `checkpoint` option
        opts["checkpoint"] = args.controller_checkpoint
    return opts


def _print_table(rows: Any) -> None:
    import pandas as pd

    with pd.option_context(
        "display.max_columns", None, "display.width", 160, "display.float_format", "{:.4g}".format
    ):
        print(rows.to_string(index=False))


def _mlflow_hint(uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """Where a person sees these runs: the MLflow UI page (model-training view) and,
    for a store without a server, the command that starts one. Never a password."""
    from tune_app.tracking.store import redact_uri, ui_url

    url = ui_url(uri, experiment_id, run_id)
    if uri.startswith(("http://", "https://")):
        return url
    start = f"{sys.executable} -m mlflow ui --host 127.0.0.1 --backend-store-uri {redact_uri(uri)}"
    return f"{url}\n  (start the UI first: {start})"


def _cmd_run(args: argparse.Namespace) -> int:
    from tune_app.api import run_search

    result = run_search(args.strategy, resume=args.resume, **_search_kwargs(args))
    print()
    cols = [c for c in result.trials.columns if c not in ("trial_id", "mlflow_run_id", "nodes")]
    _print_table(result.trials[cols])
    print(f"\nbest {result.metric}: {result.best_metric:.4f} with {result.best_config}")
    print(
        f"epochs spent: {result.epochs_spent}/{result.budget_epochs}; "
        f"run dir: {result.storage_path}"
    )
    hint = _mlflow_hint(result.tracking_uri, result.experiment_id, result.mlflow_run_id)
    print(f"MLflow parent run {result.mlflow_run_id}: {hint}")
    return 0


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baseline", default="random", help="strategy for paired stats (random)")
    p.add_argument("--heatmap", metavar="X,Y", help="two parameters for the metric heatmap")
    p.add_argument("--heatmap-epochs", metavar="E1,E2", help="epochs to show (default: 1,last)")
    p.add_argument("--optimum", type=float, help="known optimum of the metric, for regret")


def _report_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    heatmap = None
    if args.heatmap:
        parts = [s.strip() for s in args.heatmap.split(",") if s.strip()]
        if len(parts) != 2:
            raise ConfigError(f"--heatmap takes two parameter names X,Y, got {args.heatmap!r}")
        heatmap = (parts[0], parts[1])
    epochs = None
    if args.heatmap_epochs:
        try:
            epochs = [int(e) for e in args.heatmap_epochs.split(",") if e.strip()]
        except ValueError:
            raise ConfigError(
                f"--heatmap-epochs takes integers like 1,3, got {args.heatmap_epochs!r}"
            ) from None
        if not epochs or min(epochs) < 1:
            raise ConfigError(f"--heatmap-epochs must be >= 1, got {args.heatmap_epochs!r}")
    return {
        "baseline": args.baseline,
        "heatmap": heatmap,
        "heatmap_epochs": epochs,
        "optimum": args.optimum,
    }


def _cmd_report(args: argparse.Namespace) -> int:
    from tune_app.comparison import report
    from tune_app.comparison.html import write_html
    from tune_app.comparison.verdict import log_verdict, verdict
    from tune_app.comparison.writer import write_report
    from tune_app.tracking.store import Reader, redact_uri

    kw = _report_kwargs(args)
    # A missing or unreachable store is bad input: one line on stderr, no progress.
    uri = Reader(args.tracking_uri, must_exist=True).uri
    _progress(f"reading comparison {args.ref} from MLflow at {redact_uri(uri)}")
    study, run_id = report.from_mlflow(args.ref, uri, optimum=kw["optimum"])
    out = Path(args.out)
    _progress(f"computing tables and plotting {len(study.runs)} search run(s) into {out}")
    path = write_report(study, out, kw["baseline"], kw["heatmap"], kw["heatmap_epochs"])
    page = write_html(path)
    _progress(f"wrote report to {out}")
    result = verdict(study, kw["baseline"])
    if args.log:
        from tune_app.tracking.store import Tracker

        files = sorted(out.iterdir())
        _progress(f"logging its {len(files)} file(s) and the verdict to MLflow run {run_id}")
        tracker = Tracker.for_run(uri, run_id)
        for f in files:
            tracker.log_artifact(run_id, f, "report")
        log_verdict(tracker, run_id, result, study.title)
    print(f"Final results of comparison run {run_id} ({study.metric}, {study.mode}):")
    _print_table(report.final_table(study, kw["baseline"]))
    print(f"\nVerdict: {result.summary}")
    if "tune_app.paired_verdict" in result.tags:
        print(f"Paired {result.tags['tune_app.paired_verdict']}")
    print(f"full report: {page} ({path.name}, plots and CSV tables beside it)")
    return 0


def _progress(message: str) -> None:
    """A progress line on stderr (stdout keeps only the result)."""
    print(f"tune-app: {message}", file=sys.stderr, flush=True)


def _cmd_compare(args: argparse.Namespace) -> int:
    from tune_app.comparison.compare import compare

    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if args.seeds < 1:
        return _fail(f"--seeds must be >= 1, got {args.seeds}")
    for flag, value in (("--cv-top", args.cv_top), ("--with-without", args.with_without)):
        if value < 0:
            return _fail(f"{flag} must be >= 0, got {value}")
    if args.folds < 2:
        return _fail(f"--folds must be >= 2, got {args.folds}")
    if args.cv_epochs is not None and args.cv_epochs < 1:
        return _fail(f"--cv-epochs must be >= 1, got {args.cv_epochs}")
    comparison = compare(
        names,
        seeds=range(args.seeds),
        report_dir=args.report_dir,
        cv_top=args.cv_top,
        folds=args.folds,
        cv_epochs=args.cv_epochs,
        with_without=args.with_without,
        **_report_kwargs(args),
        **_search_kwargs(args),
    )
    print("\nHead-to-head (same task, space, seeds and epoch budget):")
    _print_table(comparison.table())
    uri = comparison.results[0].tracking_uri
    if comparison.verdict is not None:
        print(f"\nVerdict: {comparison.verdict.summary}")
    if comparison.report_path is not None:
        print(f"Report: {comparison.report_path}")
    print(f"MLflow runs: {_mlflow_hint(uri, comparison.experiment_id)}")
    hint = _mlflow_hint(uri, comparison.experiment_id, comparison.mlflow_run_id)
    print(f"MLflow comparison run (verdict, report): {hint.splitlines()[0]}")
    return 0


def _cmd_resume(args: argparse.Namespace) -> int:
    from tune_app.api import resume_search

    result = resume_search(
        args.target, tracking_uri=args.tracking_uri, address=args.address, verbose=not args.quiet
    )
    print(
        f"best {result.metric}: {result.best_metric:.4f} with {result.best_config}; epochs "
        f"spent: {result.epochs_spent}/{result.budget_epochs}; {len(result.trials)} trials; "
        f"MLflow parent run {result.mlflow_run_id}"
    )
    return 0


def _cmd_sync(args: argparse.Namespace) -> int:
    from tune_app.tracking.sync import sync

    report = sync(args.run_dir, tracking_uri=args.tracking_uri)
    print(report.describe())
    return 0 if report.complete else 1


def _cmd_strategies() -> int:
    from tune_app.strategies import REGISTRY
    from tune_app.strategies.options import specs

    for info in REGISTRY.values():
        print(f"{info.name:<10} {info.kind:<9} {info.description}")
        options = specs(info.options)
        for o in options:
            print(f"    {o.name:<24} {o.type:<11} {_yaml_value(o.default):<7} {o.help}")
        if not options:
            print("    (no options)")
    print(
        "\nSet a searcher's options with --opt KEY=VALUE and a scheduler's (also one "
        "given as --strategy) with --scheduler-opt KEY=VALUE; values are YAML "
        "(true, 0.1, null: unset)."
    )
    return 0


def _yaml_value(value: Any) -> str:
    """``value`` as it is written after ``--opt KEY=`` (None: unset)."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _cmd_spaces(args: argparse.Namespace) -> int:
    from tune_app import spaces

    if args.file:
        entries = [(args.file, spaces.locate(args.file))]
    elif args.dir:
        entries = [(str(p), p) for p in sorted(Path(args.dir).rglob("*.yaml"))]
        if not entries:
            return _fail(f"no *.yaml search spaces in {args.dir}; pass a folder that holds some")
    else:
        entries = list(spaces.builtin().items())
    for label, path in entries:
        sp = spaces.load(path)
        print(
            f"{label}: ok — task {sp.task}, {sp.mode} {sp.metric}, max_epochs "
            f"{sp.max_epochs}, {len(sp.params)} params ({', '.join(sp.names)}), "
            f"grid of {sp.grid_size}"
        )
    if not args.file and not args.dir:
        print("\nUse one with --space NAME (or pass --space FILE.yaml for your own).")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    from tune_app.errors import TuneAppError

    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "compare":
            return _cmd_compare(args)
        if args.command == "report":
            return _cmd_report(args)
        if args.command == "resume":
            return _cmd_resume(args)
        if args.command == "sync":
            return _cmd_sync(args)
        if args.command == "strategies":
            return _cmd_strategies()
        if args.command == "controller":
            return controller_cli.run(args)
        return _cmd_spaces(args)
    except TuneAppError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("tune-app: interrupted; finished trials are recorded", file=sys.stderr)
        return 130
