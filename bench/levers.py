"""What each choice of a finished study moved: validation and test accuracy per trial, grouped by
the searched categorical settings, and the final-model levers (best trial, mean of the top k,
refit), all on the full test set.

An analysis for the record, run after the study registered its final model: selection never
sees these test numbers. Usage (the same experiment and overrides as the sweep):

    .venv/bin/python bench/levers.py --experiment accuracy [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from sentiment.quiet import import_tensorflow_quietly

import_tensorflow_quietly()  # before anything below imports TensorFlow

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sentiment import registry, tracking  # noqa: E402
from sentiment.config import load_config  # noqa: E402
from sentiment.data import load_data  # noqa: E402
from sentiment.engines import engine_module  # noqa: E402
from sentiment.final_model import final_model_identity, member_config, select_candidates  # noqa: E402
from sentiment.metrics import classification_metrics  # noqa: E402
from sentiment.train import predict_proba  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def trial_scores(cfg, outcome) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Val (as the trial recorded it) and test accuracy of every completed trial's model."""
    rows, test_probability = [], {}
    for trial in outcome.ranked:
        trial_cfg = member_config(cfg, trial)
        data = load_data(trial_cfg)
        model = tracking.load_keras_model(trial.run_id)
        test_probability[trial.run_id] = predict_proba(model, data.x_test, trial_cfg.data.bucket_boundaries)
        test = classification_metrics(data.y_test, test_probability[trial.run_id])["accuracy"]
        rows.append({"trial": trial.trial_id, "val_accuracy": trial.val_metrics.get("val_accuracy"),
                     "test_accuracy": test, **trial.params})
        logging.info("trial %s: val %.4f test %.4f", trial.trial_id, rows[-1]["val_accuracy"], test)
    return pd.DataFrame(rows), test_probability


def by_choice(trials: pd.DataFrame, space) -> pd.DataFrame:
    """Mean val and test accuracy per choice of each categorical dimension."""
    parts = []
    for name, spec in space.items():
        if spec.type == "categorical" and name in trials:
            grouped = trials.groupby(name)[["val_accuracy", "test_accuracy"]].agg(["mean", "count"])
            for choice, row in grouped.iterrows():
                parts.append({"lever": name, "choice": choice, "trials": int(row[("val_accuracy", "count")]),
                              "val_accuracy": row[("val_accuracy", "mean")],
                              "test_accuracy": row[("test_accuracy", "mean")]})
    return pd.DataFrame(parts)


def final_levers(cfg, outcome, test_probability: dict[str, np.ndarray], labels: np.ndarray) -> list[dict]:
    """Best trial alone, the mean of the trial models (all candidates, and the members the sweep
    chose), and the registered final model (refit or not)."""
    candidates = select_candidates(cfg, outcome)
    version = registry.find_version(cfg.tracking.model_name, **final_model_identity(cfg, candidates))
    chosen = version.tags["member_run_ids"].split(",") if version is not None else []
    accuracy = lambda run_ids: classification_metrics(  # noqa: E731
        labels, np.mean([test_probability[run_id] for run_id in run_ids], axis=0))["accuracy"]
    rows = [{"model": "best trial", "test_accuracy": accuracy([candidates[0].run_id])},
            {"model": f"mean of the top {len(candidates)} trial models (all candidates)",
             "test_accuracy": accuracy([c.run_id for c in candidates])}]
    if chosen:
        rows.append({"model": f"mean of the {len(chosen)} chosen trial models, not refit",
                     "test_accuracy": accuracy(chosen)})
    if version is not None:
        rows.append({"model": f"registered v{version.version}: {version.tags.get('final_model')}",
                     "val_accuracy": float(version.tags["val_accuracy"]),
                     "test_accuracy": float(version.tags["test_accuracy"])})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", "-e")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    cfg = load_config(args.overrides, experiment=args.experiment)
    tracking.connect(cfg.tracking)
    outcome = engine_module(cfg).finished_outcome(cfg)
    if outcome is None:
        raise SystemExit(f"study {cfg.sweep.study_name} is not finished: run its sweep first")
    trials, test_probability = trial_scores(cfg, outcome)
    labels = load_data(cfg).y_test
    levers = by_choice(trials, cfg.sweep.space)
    finals = final_levers(cfg, outcome, test_probability, labels)
    pd.set_option("display.width", 200)
    print(trials.round(4).to_string(index=False), "\n")
    print(levers.round(4).to_string(index=False), "\n")
    print(pd.DataFrame(finals).round(4).to_string(index=False))
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"levers-{cfg.sweep.study_name}.json"
    path.write_text(json.dumps({"trials": trials.to_dict("records"), "by_choice": levers.to_dict("records"),
                                "final": finals}, indent=1, default=str))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
