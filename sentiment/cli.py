"""Command line: `sentiment {sweep,train} [--experiment NAME] [key=value ...]`."""

from __future__ import annotations

import argparse
import logging
import sys

from sentiment.errors import UserError

log = logging.getLogger("sentiment")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sentiment", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("sweep", "run (or resume) the Optuna sweep and register its best model"),
                            ("train", "train the configured model once and log it as an MLflow run")):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--experiment", "-e", help="a file name from experiments/ (without .yaml)")
        cmd.add_argument("--show-config", action="store_true", help="print the composed config and exit")
        cmd.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. sweep.n_trials=3")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        return COMMANDS[args.command](args)
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


def cmd_sweep(args) -> int:
    cfg = _config(args)
    if args.show_config:
        return 0
    from sentiment import report, tracking
    from sentiment.sweep import run_sweep

    result = run_sweep(cfg)
    print(report.trials_table(result.study).to_string(index=False))
    if result.registered_version:
        print(f"\nregistered {cfg.tracking.model_name} version {result.registered_version}")
    print(f"runs: {tracking.runs_table_url(cfg.tracking.uri, result.experiment_id)}  (make ui)")
    return 0


def cmd_train(args) -> int:
    cfg = _config(args)
    if args.show_config:
        return 0
    import mlflow

    from sentiment import tracking
    from sentiment.data import load_data
    from sentiment.train import train

    experiment_id = tracking.connect(cfg.tracking)
    data = load_data(cfg)
    with mlflow.start_run(run_name="train", tags={"role": "train"}):
        mlflow.log_params(tracking.config_params(cfg))
        result = train(cfg, data, callbacks=[tracking.EpochMetricsCallback()], verbose=cfg.train.verbose)
        mlflow.log_metrics({f"best_{k}" if k.startswith("val_") else k: v for k, v in result.metrics.items()})
        tracking.log_keras_model(result.model)
        mlflow.flush_async_logging()
    for name, value in result.metrics.items():
        print(f"{name}: {value:.4f}" if isinstance(value, float) else f"{name}: {value}")
    print(f"runs: {tracking.runs_table_url(cfg.tracking.uri, experiment_id)}  (make ui)")
    return 0


COMMANDS = {"sweep": cmd_sweep, "train": cmd_train}

if __name__ == "__main__":
    sys.exit(main())
