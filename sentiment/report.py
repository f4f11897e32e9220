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


def log_evaluation(evaluation) -> None:
    """The final model's val and test metrics, the baseline's beside them, and the test-set plots."""
    mlflow.log_metrics({f"final_val_{k}": v for k, v in evaluation.val_metrics.items()})
    mlflow.log_metrics({f"test_{k}": v for k, v in evaluation.test_metrics.items()})
    mlflow.log_metrics({f"baseline_test_{k}": v for k, v in evaluation.baseline_metrics.items()})
    mlflow.log_text(evaluation.by_length.to_csv(index=False), "evaluation/accuracy_by_length.csv")
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
        mlflow.log_figure(figure, f"evaluation/{name}.png")
        plt.close(figure)


def _plot_by_length(by_length: pd.DataFrame, ax) -> None:
    models = [c for c in by_length.columns if c not in ("bucket", "words", "reviews")]
    by_length.plot.bar(x="words", y=models, ax=ax, rot=0)
    ax.set_xlabel("review length (words), by quarter")
    ax.set_ylabel("accuracy")
    ax.set_ylim(max(0.0, by_length[models].to_numpy().min() - 0.05), 1.0)


def summary_markdown(outcome: SearchOutcome, study_name: str, objective: str, evaluation=None) -> str:
    counts = ", ".join(f"{v} {k}" for k, v in outcome.counts.items())
    lines = [f"# Sweep `{study_name}` ({outcome.engine})", "", f"Trials: {counts}.", ""]
    if outcome.best is not None:
        best = outcome.best
        lines += [f"Best trial: **{best.trial_id}** (run `{best.run_id}`), "
                  f"{objective} = {best.val_metrics.get(objective, float('nan')):.4f}", "",
                  "| param | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in best.params.items()]
        lines.append("")
    if evaluation is not None:
        lines += evaluation_markdown(evaluation)
    lines += ["## Trials", "", "```", outcome.table.to_string(index=False), "```"]
    return "\n".join(lines) + "\n"


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

    @classmethod
    def from_evaluation(cls, evaluation, version: str) -> Headline:
        final = evaluation.final
        return cls(final.kind, version, [m.run_id for m in final.members], len(final.test_probability),
                   evaluation.val_metrics["accuracy"], evaluation.test_metrics, evaluation.baseline_metrics)

    @classmethod
    def from_version_tags(cls, version: str, tags: dict[str, str]) -> Headline:
        def pick(prefix: str) -> dict[str, float]:
            return {m: float(tags[prefix + m]) for m in METRICS if prefix + m in tags}

        return cls(tags.get("final_model", "best trial"), version, tags.get("member_run_ids", "").split(","),
                   int(tags.get("test_samples", 0)), float(tags.get("val_accuracy", "nan")),
                   pick("test_"), pick("baseline_test_"))


def description_markdown(outcome: SearchOutcome, objective: str, headline: Headline | None = None) -> str:
    """The parent run's description: the result first, then where it came from."""
    counts = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in outcome.counts.items())
    lines = []
    if headline is not None and headline.test:
        test, base = headline.test, headline.baseline
        versus = f"; tf-idf baseline **{base['accuracy']:.4f}** on the same reviews" if base else ""
        lines += [f"**Final model** ({headline.kind}): test accuracy **{test['accuracy']:.4f}**, "
                  f"ROC AUC {test['roc_auc']:.4f} on {headline.test_reviews:,} test reviews "
                  f"(validation {headline.val_accuracy:.4f}){versus}.", "",
                  f"Registered as version **{headline.version}**; member trial runs: "
                  + ", ".join(f"`{run_id}`" for run_id in headline.member_run_ids) + ".", ""]
    if outcome.best is not None:
        best = outcome.best
        params = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in best.params.items())
        lines += [f"Best trial {best.trial_id} (run `{best.run_id}`): {objective} "
                  f"{best.val_metrics.get(objective, float('nan')):.4f}; {params}.", ""]
    lines += [f"Trials: {counts}. Details: `summary.md`, `evaluation/`, `plots/`."]
    return "\n".join(lines) + "\n"


def evaluation_markdown(evaluation) -> list[str]:
    final = evaluation.final
    runs = ", ".join(f"trial {m.trial_id} (`{m.run_id}`)" for m in final.members)
    # A refit model has seen the validation reviews: its val column is its trial models' score.
    val_header = "trial models (val)" if final.refit else "final model (val)"
    lines = [f"## Final model: {final.kind}", "", f"Members: {runs}.", "",
             f"| metric | {val_header} | final model (test) | baseline (test) |", "|---|---:|---:|---:|"]
    for metric, test_value in evaluation.test_metrics.items():
        baseline = evaluation.baseline_metrics.get(metric)
        lines.append(f"| {metric} | {evaluation.val_metrics[metric]:.4f} | {test_value:.4f} | "
                     + (f"{baseline:.4f} |" if baseline is not None else "- |"))
    lines += ["", f"Test accuracy by review length ({len(final.test_probability)} test reviews):", "",
              *markdown_table(evaluation.by_length), ""]
    return lines


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
    versus = f" (baseline test accuracy {baseline:.4f})" if baseline is not None else ""
    trials = ", ".join(f"{m.trial_id} (run {m.run_id})" for m in final.members)
    return f"{final.kind.capitalize()} of sweep {study}: trials {trials}. {test}{versus}."
