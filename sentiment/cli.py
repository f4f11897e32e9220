"""Command line: `sentiment <command> [options] [key=value ...]`; `sentiment --help` lists the commands.

Each command imports what it runs inside its own function, so `--help`, a config error and
`make server` answer without loading TensorFlow."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import shutil
import sys

from sentiment.bench.hosts import HOSTS_MODES
from sentiment.errors import UserError
from sentiment.quiet import import_tensorflow_quietly
from sentiment.stores import create_database_if_missing, is_journal, is_postgresql, is_server, journal_file
from sentiment.tracking_server import ROLES, add_user, run_server, server_launch

log = logging.getLogger("sentiment")


COMMANDS_HELP = {
    "sweep": "run (or resume) the Optuna sweep and register its best model",
    "train": "train the configured model once and log it as an MLflow run",
    "promote": "score the newest (or --version) candidate against @champion; move it if better",
    "rollback": "swap @champion and @previous",
    "reproduce": "retrain a registered version (--version, default @champion) from its runs and compare the rebuild",
    "predict": "label reviews with models:/<model_name>@champion",
    "bench": "throughput, memory and a time-to-accuracy race of search engines",
    "distil": "train one model on a registered version's probabilities (distil.teacher, default @champion); register it",
    "bench-serve": "latency and throughput of `make serve` on @champion (serve.alias) over HTTP",
    "soak": "the whole system under faults for --minutes: workers, a server with logins, serve, promotions",
    "levers": "val and test accuracy per searched choice and final-model lever of a finished study",
    "ui": "print the runs-table URL and start the MLflow UI on the configured store",
    "serve": "serve models:/<model_name>@champion (or serve.alias) over REST (mlflow models serve)",
    "dashboard": "start optuna-dashboard on the configured study storage",
    "server": "MLflow tracking server; authentication on for any address beyond 127.0.0.1",
    "user": "add a user to the tracking server (as its admin): reader or trainer",
}
OWN_SETTINGS = ("bench", "server")  # commands that compose no config: no experiment, no overrides


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sentiment", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    cmds = {name: sub.add_parser(name, help=text, description=text) for name, text in COMMANDS_HELP.items()}
    configured = [cmd for name, cmd in cmds.items() if name not in OWN_SETTINGS]
    for cmd in configured:
        cmd.add_argument("--experiment", "-e", help="a file name from experiments/ (without .yaml)")
        cmd.add_argument("--show-config", action="store_true", help="print the composed config and exit")
    _command_options(cmds)
    _server_options(cmds["server"])
    for name, port in (("ui", 5000), ("serve", 5001), ("dashboard", 8080), ("server", 5005)):
        cmds[name].add_argument("--port", type=int, default=port, help=f"port on 127.0.0.1 (default {port})")
    for cmd in configured:
        cmd.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. sweep.n_trials=3")
    return parser


def _command_options(cmds: dict[str, argparse.ArgumentParser]) -> None:
    cmds["sweep"].add_argument("--workers", type=int, default=1, help="worker processes on one study")
    cmds["promote"].add_argument("--version", help="registered version to consider (default: newest)")
    cmds["promote"].add_argument("--force", action="store_true", help="promote even if not better")
    cmds["reproduce"].add_argument("--version", help="registered version to rebuild (default: @champion)")
    cmds["predict"].add_argument("--text", action="append", default=[], help="a review (repeatable)")
    cmds["predict"].add_argument("--file", help="a UTF-8 file with one review per line")
    cmds["bench"].add_argument("--preset", choices=("small", "full"), default="small")
    cmds["bench"].add_argument("--budget", type=float, help="seconds per engine in the race")
    cmds["bench"].add_argument("--no-race", action="store_true", help="only data and throughput numbers")
    cmds["bench"].add_argument("--contestants", nargs="+", metavar="NAME",
                               help="race only these searches (default: all four), e.g. default keras_tuner_hyperband")
    cmds["soak"].add_argument("--minutes", type=float, default=10.0, help="how long (default 10)")
    cmds["soak"].add_argument("--hosts", choices=HOSTS_MODES, default="auto",
                              help="workers as hosts of their own (network namespaces, root only): "
                                   "auto (where root allows), namespaces (or fail), loopback")
    cmds["bench-serve"].add_argument("--seconds", type=float, default=60.0, help="per scenario (default 60)")
    cmds["user"].add_argument("--name", required=True, help="the new user's name")
    cmds["user"].add_argument("--role", choices=tuple(ROLES), default="reader",
                              help="reader: browse and predict; trainer: also log runs, register, promote")


def _server_options(server: argparse.ArgumentParser) -> None:
    server.add_argument("--host", default="127.0.0.1", help="address to bind (beyond loopback: auth on)")
    server.add_argument("--backend-store-uri", required=True, help="PostgreSQL (or SQLite) tracking store")
    server.add_argument("--artifacts-destination", required=True, help="where the server keeps artifacts")
    server.add_argument("--auth", action="store_true", help="authentication on 127.0.0.1 too")
    server.add_argument("--workers", type=int, default=2, help="server processes (default 2)")
    server.add_argument("--name", action="append", default=[], dest="names",
                        help="another name clients reach the server by (repeatable)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    # Schema set-up notes from MLflow's SQL store say nothing a user can act on.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("gensim").setLevel(logging.WARNING)  # per-second word2vec progress
    try:
        if args.command == "bench":  # measures its own configs
            import_tensorflow_quietly()
            return cmd_bench(args)
        if args.command == "server":  # serves whichever store it is given
            return cmd_server(args)
        cfg = _config(args)
        if args.show_config:
            return 0
        import_tensorflow_quietly()  # every command reaches Keras (MLflow's Keras callback, the layers)
        return COMMANDS[args.command](args, cfg)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished trials are kept; re-run the same command to resume", file=sys.stderr)
        return 130


def _config(args):
    from omegaconf import OmegaConf

    from sentiment.config import load_config

    cfg = load_config(args.overrides, experiment=args.experiment)
    if args.show_config:
        print(OmegaConf.to_yaml(cfg))
    return cfg


def cmd_sweep(args, cfg) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from sentiment import report, tracking
    from sentiment.sweep import run_sweep

    with logging_redirect_tqdm():  # log lines print above the trial progress bar, not through it
        result = run_sweep(cfg, workers=args.workers)
    print(result.outcome.table.to_string(index=False))
    print(f"\n{report.noise_line(result.outcome)}")
    if result.registered_version:
        print(f"\nregistered {cfg.tracking.model_name} version {result.registered_version}")
        if result.headline is not None and result.headline.test:
            print(report.headline_sentence(result.headline))
    print(f"runs: {tracking.runs_table_url(cfg.tracking.uri, result.experiment_id)}  (make ui)")
    return 0


def cmd_train(args, cfg) -> int:
    from sentiment import tracking
    from sentiment.search.trial import run_tracked_trial
    from sentiment.tokens import load_data

    experiment_id = tracking.connect(cfg.tracking, write=True)
    result, _ = run_tracked_trial(cfg, load_data(cfg), {}, "train", {tracking.ROLE_TAG: tracking.TRAIN})
    for name, value in result.metrics.items():
        print(f"{name}: {value:.4f}" if isinstance(value, float) else f"{name}: {value}")
    print(f"runs: {tracking.runs_table_url(cfg.tracking.uri, experiment_id)}  (make ui)")
    return 0


def cmd_promote(args, cfg) -> int:
    from sentiment.registry.promote import promote

    result = promote(cfg, version=args.version, force=args.force)
    if not result.table.empty:
        print(result.table.to_string(float_format=lambda v: f"{v:.4f}"))
        print("source runs: " + ", ".join(f"v{v} {run}" for v, run in result.source_runs.items()))
    if not result.behaviour.empty:
        print("behaviour checks, failure rate per check:")
        print(result.behaviour.to_string(float_format=lambda v: f"{v:.0%}"))
    if result.comparison is not None:
        print(result.comparison.describe())
    messages = {
        "first champion": f"v{result.candidate} is the first @champion",
        "promoted": f"PROMOTE v{result.candidate} over v{result.champion} ({result.reason}): "
                    f"@champion -> v{result.candidate}, @previous -> v{result.champion}",
        "forced": f"FORCE: HOLD overridden for v{result.candidate} ({result.reason}), promoted anyway: "
                  f"@champion -> v{result.candidate}, @previous -> v{result.champion}",
        "refused": f"HOLD: v{result.candidate} stays behind @champion v{result.champion} ({result.reason}): "
                   "nothing moved (FORCE=1 promotes anyway)",
        "already champion": f"v{result.candidate} is already @champion: nothing to do",
    }
    print(f"{result.model_name}: {messages[result.decision]}")
    return 0


def cmd_rollback(args, cfg) -> int:
    from sentiment.registry.promote import rollback

    swapped = rollback(cfg)
    name = cfg.tracking.model_name
    if swapped is None:
        print(f"{name} has no @previous (or no @champion): nothing changed")
    else:
        demoted, restored = swapped
        print(f"{name}: @champion v{demoted} -> v{restored}; @previous -> v{demoted}")
    return 0


def cmd_reproduce(args, cfg) -> int:
    import pandas as pd

    from sentiment.registry.reproduce import reproduce

    result = reproduce(cfg, version=args.version)
    kind = "refit on train+val" if result.refit else "trained as its trial"
    print(f"{result.model_name} v{result.version}: {len(result.members)} member(s) retrained ({kind}); "
          f"head: {result.head}; {result.seconds:.0f} s")
    table = pd.DataFrame({"registered": result.registered, "reproduced": result.reproduced})
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"prediction agreement {result.agreement:.2%}; rebuild minus registered: "
          f"{result.comparison.describe('the rebuild', 'the registered model')}")
    return 0


def cmd_predict(args, cfg) -> int:
    from sentiment.registry.predict import collect_reviews, predict

    stdin = None if args.text or args.file or sys.stdin.isatty() else sys.stdin.buffer.read()
    reviews = collect_reviews(args.text, args.file, stdin)
    for row in predict(cfg, reviews).itertuples():
        snippet = row.text if len(row.text) <= 60 else row.text[:57] + "..."
        print(f"{row.label:8s} {row.probability:.3f}  {snippet}")
    return 0


def cmd_distil(args, cfg) -> int:
    from sentiment import tracking
    from sentiment.distil import describe, distil

    result = distil(cfg)
    done = "found (registered earlier)" if result.reused else f"registered in {result.seconds / 60:.1f} min"
    print(f"{result.model_name} version {result.student}: the student of version {result.teacher}, {done}, "
          f"@{cfg.distil.alias}")
    print(describe(result))
    print(f"runs: {tracking.runs_table_url(cfg.tracking.uri, tracking.connect(cfg.tracking))}  (make ui)")
    return 0


def cmd_bench(args) -> int:
    from sentiment.bench.race import format_report, run_bench

    print(format_report(run_bench(args.preset, args.budget, skip_race=args.no_race, contestants=args.contestants)))
    return 0


def cmd_bench_serve(args, cfg) -> int:
    from sentiment.bench.serve import bench_serve, format_serve_report

    print(format_serve_report(bench_serve(cfg, args.overrides, seconds=args.seconds)))
    return 0


def cmd_soak(args, cfg) -> int:
    from sentiment.bench.soak import Soak, format_soak_report

    report = Soak(args.minutes, args.overrides, hosts=args.hosts).run()
    print(format_soak_report(report))
    return 0 if report["passed"] else 1


def cmd_levers(args, cfg) -> int:
    from sentiment.bench.levers import levers

    print(levers(cfg))
    return 0


def cmd_ui(args, cfg) -> int:
    from sentiment import tracking

    experiment_id = tracking.connect(cfg.tracking)
    url = tracking.runs_table_url(cfg.tracking.uri, experiment_id, ui=f"http://127.0.0.1:{args.port}")
    print(f"runs table: {url}", flush=True)
    if is_server(cfg.tracking.uri):
        return 0  # the tracking server is the UI
    return _exec("mlflow", "ui", "--backend-store-uri", cfg.tracking.uri, "--host", "127.0.0.1", "--port", str(args.port))


def cmd_serve(args, cfg) -> int:
    """MLflow's scoring server (what `mlflow models serve` runs) behind registry.server's guard."""
    import mlflow
    from mlflow.pyfunc import scoring_server

    from sentiment import tracking
    from sentiment.registry import server, versions
    from sentiment.registry.predict import alias_uri

    alias = cfg.serve.alias
    model = alias_uri(cfg, alias)
    version = versions.alias_version(cfg.tracking.model_name, alias).version
    with tracking.artifacts_of(f"{model} (version {version})", tracking.REGISTERED_GONE_FIX):
        local = mlflow.artifacts.download_artifacts(f"models:/{cfg.tracking.model_name}/{version}")
    reload = cfg.serve.reload_seconds
    os.environ.update({scoring_server._SERVER_MODEL_PATH: local, server.MODEL_ENV: cfg.tracking.model_name,
                       server.VERSION_ENV: str(version), server.RELOAD_ENV: "" if reload is None else str(reload),
                       server.ALIAS_ENV: alias,
                       "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()})
    follows = f", following @{alias} every {reload} s" if reload is not None else ""
    print(f"serving {model} (version {version}{follows}) on http://127.0.0.1:{args.port}/invocations", flush=True)
    return _exec("uvicorn", "--factory", "sentiment.registry.server:create_app", "--host", "127.0.0.1",
                 "--port", str(args.port), "--workers", "1", "--no-access-log")


def cmd_dashboard(args, cfg) -> int:
    storage = journal_file(cfg.sweep.storage) if is_journal(cfg.sweep.storage) else str(cfg.sweep.storage)
    return _exec("optuna-dashboard", storage, "--host", "127.0.0.1", "--port", str(args.port))


def cmd_server(args) -> int:
    if is_postgresql(args.backend_store_uri):
        create_database_if_missing(args.backend_store_uri)
    launch = server_launch(args.host, args.port, args.backend_store_uri, args.artifacts_destination,
                           auth=args.auth, workers=args.workers, names=tuple(args.names))
    auth = "on" if "--app-name" in launch.argv else "off (loopback only)"
    print(f"tracking server on http://{args.host}:{args.port}, authentication {auth}", flush=True)
    launch.argv[0] = _tool(launch.argv[0])
    launch.env["PATH"] = os.environ["PATH"]  # the server finds its workers' tools here too
    return run_server(launch)


def cmd_user(args, cfg) -> int:
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise UserError("the two passwords differ: nothing was changed")
    else:  # scripted: the first line of standard input, so it never shows in a process list
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        raise UserError(f"no password given for {args.name}: type one, or pipe it on standard input")
    grants = add_user(cfg.tracking, args.name, password, args.role)
    print(f"added {args.role} {args.name}: " + "; ".join(grants))
    return 0


def _exec(tool: str, *arguments: str) -> int:
    """Replace this process with a tool from the same environment."""
    os.execv(_tool(tool), [tool, *arguments])


def _tool(tool: str) -> str:
    """The tool's path, found with this environment's bin/ first on PATH (kept for what it starts)."""
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    path = shutil.which(tool)
    if path is None:
        raise UserError(f"{tool} is not installed in this environment: run `make install`")
    return path


COMMANDS = {"sweep": cmd_sweep, "train": cmd_train, "promote": cmd_promote, "rollback": cmd_rollback,
            "reproduce": cmd_reproduce, "distil": cmd_distil,
            "predict": cmd_predict, "ui": cmd_ui, "serve": cmd_serve, "dashboard": cmd_dashboard,
            "bench-serve": cmd_bench_serve, "soak": cmd_soak, "levers": cmd_levers, "user": cmd_user}

if __name__ == "__main__":
    sys.exit(main())
