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
        help="searcher option (repeatable); see `tune-app strategies`",
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
        help="scheduler option (repeatable)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def build_parser() -> argparse.ArgumentParser:
    """The ``tune-app`` argument parser."""
    from tune_app.strategies import REGISTRY

    parser = _Parser(prog="tune-app", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run one search")
    run.add_argument("--strategy", required=True, choices=list(REGISTRY))
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

    sub.add_parser("strategies", help="list the strategies")
    controller_cli.add_parser(sub)
    spaces = sub.add_parser("spaces", help="list search spaces, or validate one file")
    spaces.add_argument("file", nargs="?", help="a space file to validate")
    spaces.add_argument("--dir", default="search_spaces")
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


def _mlflow_hint(uri: str) -> str:
    from tune_app.tracking.store import redact_uri

    uri = redact_uri(uri)
    if uri.startswith("sqlite:"):
        return f"mlflow ui --host 127.0.0.1 --backend-store-uri {uri}"
    return f"open {uri} in a browser" if uri.startswith("http") else f"mlflow ui ({uri})"


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
    print(
        f"MLflow parent run {result.mlflow_run_id}; view it with: "
        f"{_mlflow_hint(result.tracking_uri)}"
    )
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

    kw = _report_kwargs(args)
    study, run_id = report.from_mlflow(args.ref, args.tracking_uri, optimum=kw["optimum"])
    out = Path(args.out)
    path = report.write_report(study, out, kw["baseline"], kw["heatmap"], kw["heatmap_epochs"])
    if args.log:
        from tune_app.tracking.store import Tracker, resolve_tracking_uri

        tracker = Tracker.for_run(resolve_tracking_uri(args.tracking_uri), run_id)
        for f in sorted(out.iterdir()):
            tracker.log_artifact(run_id, f, "report")
    print(path.read_text())
    print(f"\nreport of comparison run {run_id} written to {path}")
    return 0


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
    print(f"\nMLflow comparison run {comparison.mlflow_run_id}; view it with: {_mlflow_hint(uri)}")
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

    for info in REGISTRY.values():
        print(f"{info.name:<10} {info.kind:<9} {info.description}")
    return 0


def _cmd_spaces(args: argparse.Namespace) -> int:
    from tune_app import spaces

    files = [Path(args.file)] if args.file else sorted(Path(args.dir).rglob("*.yaml"))
    if not files:
        return _fail(f"no *.yaml search spaces in {args.dir}")
    for path in files:
        sp = spaces.load(path)
        print(
            f"{path}: ok — task {sp.task}, {sp.mode} {sp.metric}, max_epochs "
            f"{sp.max_epochs}, {len(sp.params)} params ({', '.join(sp.names)}), "
            f"grid of {sp.grid_size}"
        )
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
