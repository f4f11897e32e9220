"""What a sweep leaves for people: plots, a trials table and a summary on the parent run."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import mlflow
import pandas as pd

from sentiment.metrics import METRICS
from sentiment.search.contract import SearchOutcome

log = logging.getLogger(__name__)


def log_outcome(outcome: SearchOutcome, study_name: str, objective: str, evaluation=None,
                headline: Headline | None = None) -> None:
    """All trials as CSV/JSON, counts, the best params and a markdown summary on the active run,
    and a short description at the top of its page in the UI."""
    mlflow.log_text(outcome.table.to_csv(index=False), "trials.csv")
    mlflow.log_text(outcome.table.to_json(orient="records", indent=1, default_handler=str), "trials.json")
    mlflow.log_metrics({f"trials_{k}": v for k, v in outcome.counts.items()})
    if outcome.best is not None:
        mlflow.log_dict(outcome.best.params, "best_params.json")
        mlflow.log_metrics({f"best_{k}": v for k, v in outcome.best.val_metrics.items()})
    mlflow.log_text(summary_markdown(outcome, study_name, objective, evaluation), "summary.md")
    mlflow.set_tag("mlflow.note.content", description_markdown(outcome, objective, headline))


def evaluation_folder(version: str) -> str:
    """Where a registered version's evaluation artifacts live on its sweep run: one folder per
    version, so a study re-run with another final model (say refit) keeps the earlier one's."""
    return f"evaluation/version-{version}"


def log_evaluation(evaluation, version: str) -> None:
    """The final model's val and test metrics, the baseline's beside them, and the test-set plots
    (as CSV and PNG under evaluation_folder(version))."""
    mlflow.log_metrics({f"final_val_{k}": v for k, v in evaluation.val_metrics.items()})
    mlflow.log_metrics({f"test_{k}": v for k, v in evaluation.test_metrics.items()})
    mlflow.log_metrics({f"baseline_test_{k}": v for k, v in evaluation.baseline_metrics.items()})
    folder = evaluation_folder(version)
    mlflow.log_text(evaluation.by_length.to_csv(index=False), f"{folder}/accuracy_by_length.csv")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

    labels, probability = evaluation.final.test_labels, evaluation.final.test_probability
    predicted = (probability >= 0.5).astype(int)
    for name, draw in (
        ("confusion_matrix", lambda ax: ConfusionMatrixDisplay.from_predictions(
            labels, predicted, display_labels=["negative", "positive"], ax=ax, colorbar=False)),
        ("roc_curve", lambda ax: RocCurveDisplay.from_predictions(labels, probability, ax=ax, name="final model")),
        ("accuracy_by_length", lambda ax: _plot_by_length(evaluation.by_length, ax)),
    ):
        figure, ax = plt.subplots(figsize=(5, 4))
        draw(ax)
        ax.set_title(f"{name.replace('_', ' ')} (test set, {len(labels)} reviews)")
        figure.tight_layout()
        mlflow.log_figure(figure, f"{folder}/{name}.png")
        plt.close(figure)


def _plot_by_length(by_length: pd.DataFrame, ax) -> None:
    models = [c for c in by_length.columns if c not in ("bucket", "words", "reviews")]
    by_length.plot.bar(x="words", y=models, ax=ax, rot=0)
    ax.set_xlabel("review length (words), by quarter")
    ax.set_ylabel("accuracy")
    ax.set_ylim(max(0.0, by_length[models].to_numpy().min() - 0.05), 1.0)


def summary_markdown(outcome: SearchOutcome, study_name: str, objective: str, evaluation=None) -> str:
    counts = ", ".join(f"{v} {k}" for k, v in outcome.counts.items())
    lines = [f"# Sweep `{study_name}` ({outcome.engine})", "", f"Trials: {counts}.", "", noise_line(outcome), ""]
    if outcome.best is not None:
        best = outcome.best
        lines += [f"Best trial: **{best.trial_id}** (run `{best.run_id}`), {objective} = "
                  f"{_with_noise(best.val_metrics.get(objective, float('nan')), outcome)}{_ties(outcome)}", "",
                  "| param | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in best.params.items()]
        lines.append("")
    lines += pruning_markdown(outcome.table)
    if evaluation is not None:
        lines += evaluation_markdown(evaluation)
    lines += ["## Trials", "", "```", outcome.table.to_string(index=False), "```"]
    return "\n".join(lines) + "\n"


def noise_line(outcome: SearchOutcome) -> str:
    if outcome.noise is None:
        return "Seed noise: not measured (sweep.noise_repeats=1, or an engine that does not repeat trials)."
    return f"Seed noise: {outcome.noise.describe()}."


def _with_noise(value: float, outcome: SearchOutcome) -> str:
    """A trial's objective with its 95 % interval over seeds, where the search measured it."""
    return f"{value:.4f}" if outcome.noise is None else f"{value:.4f} ± {outcome.noise.interval:.4f}"


def tied_trials(outcome: SearchOutcome) -> list[str]:
    """The trials other than the best whose value is within the noise band of the best's."""
    table = outcome.table
    if "tied_with_best" not in table.columns or outcome.best is None:
        return []
    return [str(n) for n in table.loc[table["tied_with_best"].astype(bool), "number"] if str(n) != outcome.best.trial_id]


def _ties(outcome: SearchOutcome) -> str:
    if outcome.noise is None:
        return ""
    tied = tied_trials(outcome)
    return f"; tied with it (within the noise): trials {', '.join(tied)}" if tied else "; no other trial within the noise"


PRUNING_COLUMNS = ("cut_epoch", "cut_value", "cut_cutoff", "cut_margin", "cut_noise_band")


def pruning_markdown(table: pd.DataFrame) -> list[str]:
    """Each pruning decision of a noise-aware pruner: the trials it cut and those it spared."""
    if not set(PRUNING_COLUMNS) <= set(table.columns):
        return []
    decided = table[table["cut_margin"].notna()].sort_values("number")
    if decided.empty:
        return []
    lines = ["## Pruning decisions", "", "A trial is cut when it trails the rung's cutoff by more than the noise band.", "",
             "| trial | state | epoch | value | cutoff | margin | band |", "|---:|---|---:|---:|---:|---:|---:|"]
    for row in decided.itertuples(index=False):
        lines.append(f"| {row.number} | {row.state} | {int(row.cut_epoch)} | {row.cut_value:.4f} | "
                     f"{row.cut_cutoff:.4f} | {row.cut_margin:+.4f} | {row.cut_noise_band:.4f} |")
    return [*lines, ""]


def with_interval(value: float, interval: tuple[float, float] | None) -> str:
    if interval is None:
        return f"{value:.4f}"
    return f"{value:.4f} (95 % interval {interval[0]:.4f}-{interval[1]:.4f})"


@dataclass
class Headline:
    """The final model's result in brief: from a fresh evaluation, or from the tags of the
    version an earlier invocation registered (when the final model has not changed)."""

    kind: str
    version: str
    member_run_ids: list[str]
    test_reviews: int
    val_accuracy: float
    test: dict[str, float]
    baseline: dict[str, float]
    test_interval: tuple[float, float] | None = None
    baseline_interval: tuple[float, float] | None = None
    baseline_kind: str = "tfidf"        # which baseline (versions before there were several: tf-idf)
    lstm_test_accuracy: float | None = None  # a stacked model's LSTM part alone

    @classmethod
    def from_evaluation(cls, evaluation, version: str) -> Headline:
        final = evaluation.final
        return cls(final.kind, version, [m.run_id for m in final.members], len(final.test_probability),
                   evaluation.val_metrics["accuracy"], evaluation.test_metrics, evaluation.baseline_metrics,
                   evaluation.test_interval, evaluation.baseline_interval, evaluation.baseline_kind or "tfidf",
                   evaluation.lstm_test_metrics.get("accuracy"))

    @classmethod
    def from_version_tags(cls, version: str, tags: dict[str, str]) -> Headline:
        def pick(prefix: str) -> dict[str, float]:
            return {m: float(tags[prefix + m]) for m in METRICS if prefix + m in tags}

        def interval(prefix: str) -> tuple[float, float] | None:
            low, high = tags.get(f"{prefix}accuracy_low"), tags.get(f"{prefix}accuracy_high")
            return (float(low), float(high)) if low is not None and high is not None else None

        members = [run_id for run_id in tags.get("member_run_ids", "").split(",") if run_id]
        return cls(tags.get("final_model", "best trial"), version, members,
                   int(tags.get("test_samples", 0)), float(tags.get("val_accuracy", "nan")),
                   pick("test_"), pick("baseline_test_"), interval("test_"), interval("baseline_test_"),
                   tags.get("baseline_model", "tfidf"), pick("lstm_test_").get("accuracy"))


def headline_sentence(headline: Headline, bold: str = "") -> str:
    """The final model's test result beside the baseline's, each with its 95 % interval."""
    test, base = headline.test, headline.baseline
    versus = (f"; {headline.baseline_kind} baseline {bold}{with_interval(base['accuracy'], headline.baseline_interval)}"
              f"{bold} on the same reviews") if base else ""
    lstm = f" (its LSTM part alone {headline.lstm_test_accuracy:.4f})" if headline.lstm_test_accuracy is not None else ""
    auc = f", ROC AUC {test['roc_auc']:.4f}" if "roc_auc" in test else ""
    return (f"{bold}Final model{bold} ({headline.kind}): test accuracy "
            f"{bold}{with_interval(test['accuracy'], headline.test_interval)}{bold}{lstm}{auc} on {headline.test_reviews:,} "
            f"test reviews (validation {headline.val_accuracy:.4f}){versus}.")


def description_markdown(outcome: SearchOutcome, objective: str, headline: Headline | None = None) -> str:
    """The parent run's description: the result first, then where it came from."""
    counts = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in outcome.counts.items())
    lines = []
    if headline is not None and headline.test:
        lines += [headline_sentence(headline, bold="**"), "",
                  f"Registered as version **{headline.version}**; member trial runs: "
                  + ", ".join(f"`{run_id}`" for run_id in headline.member_run_ids) + ".", ""]
    if outcome.best is not None:
        best = outcome.best
        params = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in best.params.items())
        lines += [f"Best trial {best.trial_id} (run `{best.run_id}`): {objective} "
                  f"{_with_noise(best.val_metrics.get(objective, float('nan')), outcome)}{_ties(outcome)}; "
                  f"{params}.", ""]
    if outcome.noise is not None:
        lines += [noise_line(outcome), ""]
    lines += [f"Trials: {counts}. Details: `summary.md`, `evaluation/`, `plots/`."]
    return "\n".join(lines) + "\n"


def evaluation_markdown(evaluation) -> list[str]:
    final = evaluation.final
    runs = ", ".join(f"trial {m.trial_id} (`{m.run_id}`)" for m in final.members)
    # A refit model has seen the validation reviews: its val column is its trial models' score.
    val_header = "trial models (val)" if final.refit else "final model (val)"
    choice = f" Chosen on validation: {final.choice}." if final.choice else ""
    lines = [f"## Final model: {final.kind}", "", f"Members: {runs}.{choice}", "",
             f"| metric | {val_header} | final model (test) | {_baseline_name(evaluation)} (test) |",
             "|---|---:|---:|---:|"]
    for metric, test_value in evaluation.test_metrics.items():
        baseline = evaluation.baseline_metrics.get(metric)
        accuracy = metric == "accuracy"  # the one figure with an interval: 95 % Wilson over the test reviews
        test_cell = with_interval(test_value, evaluation.test_interval if accuracy else None)
        base_cell = "-" if baseline is None else with_interval(baseline, evaluation.baseline_interval if accuracy else None)
        lines.append(f"| {metric} | {evaluation.val_metrics[metric]:.4f} | {test_cell} | {base_cell} |")
    if evaluation.lstm_test_metrics:
        lines += ["", f"The LSTM part alone (test): accuracy {evaluation.lstm_test_metrics['accuracy']:.4f}."]
    lines += ["", f"Test accuracy by review length ({len(final.test_probability)} test reviews):", "",
              *markdown_table(evaluation.by_length), ""]
    return lines


def _baseline_name(evaluation) -> str:
    return f"{evaluation.baseline_kind} baseline" if evaluation.baseline_kind else "baseline"


def markdown_table(frame: pd.DataFrame) -> list[str]:
    def cell(value) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    rows = [" | ".join(map(str, frame.columns)), " | ".join("---" for _ in frame.columns)]
    rows += [" | ".join(cell(v) for v in row) for row in frame.itertuples(index=False)]
    return [f"| {row} |" for row in rows]


def version_description(study: str, evaluation) -> str:
    final = evaluation.final
    test = ", ".join(f"test {k} {v:.4f}" for k, v in evaluation.test_metrics.items())
    baseline = evaluation.baseline_metrics.get("accuracy")
    versus = f" ({_baseline_name(evaluation)} test accuracy {baseline:.4f})" if baseline is not None else ""
    trials = ", ".join(f"{m.trial_id} (run {m.run_id})" for m in final.members)
    return f"{final.kind.capitalize()} of sweep {study}: trials {trials}. {test}{versus}."
