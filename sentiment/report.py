"""What a sweep leaves for people: Optuna plots, a trials table and a summary on the parent run."""

from __future__ import annotations

import logging
import warnings

import mlflow
import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)

PLOTS = {
    "optimization_history": (optuna.visualization.plot_optimization_history,
                             optuna.visualization.matplotlib.plot_optimization_history),
    "param_importances": (optuna.visualization.plot_param_importances,
                          optuna.visualization.matplotlib.plot_param_importances),
    "parallel_coordinate": (optuna.visualization.plot_parallel_coordinate,
                            optuna.visualization.matplotlib.plot_parallel_coordinate),
}


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial, best objective first (unfinished trials last)."""
    frame = study.trials_dataframe(attrs=("number", "value", "state", "params", "duration", "user_attrs"))
    if frame.empty:
        return frame
    frame = frame.rename(columns=lambda c: c.replace("params_", "").replace("user_attrs_", ""))
    frame = frame.drop(columns=[c for c in ("mlflow_run_id",) if c in frame.columns])
    ascending = study.direction == optuna.study.StudyDirection.MINIMIZE
    return frame.sort_values("value", ascending=ascending, na_position="last").reset_index(drop=True)


def log_study(study: optuna.Study) -> None:
    """Plots (HTML and PNG), all trials as CSV, the best params and a markdown summary."""
    table = trials_table(study)
    mlflow.log_text(table.to_csv(index=False), "trials.csv")
    counts = {state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState}
    mlflow.log_metrics({f"trials_{k}": v for k, v in counts.items() if k in ("complete", "pruned", "fail")})
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if completed:
        mlflow.log_dict(study.best_params, "best_params.json")
        mlflow.log_metric(f"best_{_objective_name(study)}", study.best_value)
    mlflow.log_text(summary_markdown(study, table), "summary.md")
    _log_plots(study, n_completed=len(completed))


def _objective_name(study: optuna.Study) -> str:
    return study.user_attrs.get("config", {}).get("sweep", {}).get("objective", "value")


def _log_plots(study: optuna.Study, n_completed: int) -> None:
    if n_completed < 2:
        log.info("fewer than 2 completed trials: skipping Optuna plots")
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, (plotly_plot, matplotlib_plot) in PLOTS.items():
        try:
            mlflow.log_figure(plotly_plot(study), f"plots/{name}.html")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                axes = matplotlib_plot(study)
            figure = getattr(axes, "figure", None) or axes.flat[0].figure
            figure.tight_layout()
            mlflow.log_figure(figure, f"plots/{name}.png")
            plt.close(figure)
        except Exception as err:  # a plot that cannot be drawn must not cost the sweep its results
            log.warning("could not draw %s: %s", name, err)


def summary_markdown(study: optuna.Study, table: pd.DataFrame) -> str:
    lines = [f"# Study `{study.study_name}`", ""]
    if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        best = study.best_trial
        lines += [f"Best trial: **{best.number}**, {_objective_name(study)} = {best.value:.4f}", "",
                  "| param | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in best.params.items()]
        lines.append("")
    lines += ["## Trials", "", "```", table.to_string(index=False), "```"]
    return "\n".join(lines) + "\n"


def version_description(study: optuna.Study, best: FrozenTrial, test_metrics: dict[str, float]) -> str:
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in {**{k: best.user_attrs.get(k) for k in
                       ("val_loss", "val_accuracy")}, **test_metrics}.items() if v is not None)
    return (f"Best trial {best.number} of study {study.study_name} (trial run "
            f"{best.user_attrs.get('mlflow_run_id')}). {metrics}. Params: {best.params}.")
