"""What an Optuna study shows people: its trials as a table, and Optuna's own plots."""

from __future__ import annotations

import logging
import warnings

import mlflow
import numpy as np
import optuna
import pandas as pd

from sentiment.search.noise import SeedNoise

log = logging.getLogger(__name__)

OPTUNA_PLOTS = {
    "optimization_history": (optuna.visualization.plot_optimization_history,
                             optuna.visualization.matplotlib.plot_optimization_history),
    "param_importances": (optuna.visualization.plot_param_importances,
                          optuna.visualization.matplotlib.plot_param_importances),
    "parallel_coordinate": (optuna.visualization.plot_parallel_coordinate,
                            optuna.visualization.matplotlib.plot_parallel_coordinate),
}


def optuna_trials_table(study: optuna.Study, noise: SeedNoise | None = None) -> pd.DataFrame:
    """One row per trial, best objective first (unfinished trials last). With the study's seed
    noise: each value's 95 % interval over seeds, and whether it is tied with the best (within
    the noise band of it)."""
    frame = study.trials_dataframe(attrs=("number", "value", "state", "params", "duration", "user_attrs"))
    if frame.empty:
        return frame
    frame = frame.rename(columns=lambda c: c.replace("params_", "").replace("user_attrs_", ""))
    frame = frame.drop(columns=[c for c in ("mlflow_run_id",) if c in frame.columns])
    # Trials still running have no duration yet: the column is then not a timedelta one.
    frame["duration"] = pd.to_timedelta(frame["duration"]).dt.total_seconds().round(1)
    ascending = study.direction == optuna.study.StudyDirection.MINIMIZE
    frame = frame.sort_values("value", ascending=ascending, na_position="last").reset_index(drop=True)
    complete = frame["state"] == "COMPLETE"  # a pruned trial's value is its last epoch's, not its end
    if noise is not None and complete.any():
        values = frame.loc[complete, "value"]
        best = values.min() if ascending else values.max()
        frame.insert(2, "interval", np.where(complete, f"±{noise.interval:.4f}", ""))
        frame.insert(3, "tied_with_best", complete & ((frame["value"] - best).abs() <= noise.final_band))
    return frame


def log_optuna_plots(study: optuna.Study) -> None:
    """Optuna's plots as interactive HTML and as PNG, under plots/ of the active run."""
    finished = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    if len(finished) < 2:
        log.info("fewer than 2 finished trials: skipping Optuna plots")
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, (plotly_plot, matplotlib_plot) in OPTUNA_PLOTS.items():
        try:
            mlflow.log_figure(plotly_plot(study), f"plots/{name}.html")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the matplotlib backend is marked experimental
                axes = matplotlib_plot(study)
            figure = getattr(axes, "figure", None) or axes.flat[0].figure
            figure.tight_layout()
            mlflow.log_figure(figure, f"plots/{name}.png")
            plt.close(figure)
        except Exception as err:  # a plot that cannot be drawn must not cost the sweep its results
            log.warning("could not draw %s: %s", name, err)
