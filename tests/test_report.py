"""What a sweep's report says: the markdown summary, the run description, the version description
and its headline, built from hand-made search outcomes and evaluations; and what log_outcome
leaves on the active run."""

import json
import math

import mlflow
import numpy as np
import pandas as pd
import pytest

from sentiment import tracking
from sentiment.config import load_config
from sentiment.final_model import FinalModel
from sentiment.metrics import METRICS, accuracy_by_length, classification_metrics
from sentiment.report import (
    Headline,
    description_markdown,
    headline_sentence,
    log_outcome,
    markdown_table,
    summary_markdown,
    version_description,
)
from sentiment.search.contract import BestTrial, SearchOutcome
from sentiment.search.noise import SeedNoise
from sentiment.sweep import Evaluation
from tests.conftest import tiny_overrides

BEST = BestTrial("7", "run-best", {"model.units": 8, "regularizer.dropout": 0.123456, "train.optimizer": "adam"},
                 {"val_loss": 0.3125, "val_accuracy": 0.875, "val_auc": 0.9375})
SECOND = BestTrial("2", "run-second", {"model.units": 4, "regularizer.dropout": 0.25, "train.optimizer": "adam"},
                   {"val_loss": 0.5, "val_accuracy": 0.75, "val_auc": 0.8})
COUNTS = {"complete": 2, "pruned": 1, "failed": 0, "epochs_trained": 9}

LABELS = np.array([0, 1, 0, 1, 1, 0, 1, 0])
FINAL_TEST = np.array([0.2, 0.9, 0.4, 0.7, 0.3, 0.1, 0.8, 0.6])
BASELINE_TEST = np.array([0.3, 0.6, 0.6, 0.8, 0.7, 0.2, 0.4, 0.3])
FINAL_VAL = np.array([0.1, 0.8, 0.3, 0.9, 0.6, 0.4])
VAL_LABELS = np.array([0, 1, 0, 1, 1, 0])
WORDS = np.array([12, 40, 7, 25, 90, 33, 5, 61])


def outcome(ranked=(BEST, SECOND), counts=None) -> SearchOutcome:
    table = pd.DataFrame({"number": [7, 2, 5], "value": [0.3125, 0.5, float("nan")],
                          "state": ["COMPLETE", "COMPLETE", "PRUNED"], "model.units": [8, 4, 8]})
    return SearchOutcome("optuna", table, list(ranked), dict(COUNTS if counts is None else counts))


def evaluation(members=(BEST,), refit=False, baseline=True) -> Evaluation:
    final = FinalModel(candidates=[BEST, SECOND], members=list(members), text_model=None,
                       val_probability=FINAL_VAL, test_probability=FINAL_TEST, test_labels=LABELS, refit=refit)
    probabilities = {"final model": FINAL_TEST, **({"baseline": BASELINE_TEST} if baseline else {})}
    return Evaluation(final=final, val_metrics=classification_metrics(VAL_LABELS, FINAL_VAL),
                      test_metrics=classification_metrics(LABELS, FINAL_TEST),
                      baseline_metrics=classification_metrics(LABELS, BASELINE_TEST) if baseline else {},
                      by_length=accuracy_by_length(LABELS, WORDS, **probabilities),
                      baseline_kind="tfidf" if baseline else None)


def version_tags(ev: Evaluation) -> dict[str, str]:
    """The version tags the headline reads, as the registry hands them back: strings."""
    tags = {"final_model": ev.final.kind, "member_run_ids": ",".join(m.run_id for m in ev.final.members),
            "test_samples": len(ev.final.test_probability), "trial_number": BEST.trial_id,
            **{f"val_{k}": v for k, v in ev.val_metrics.items()},
            **{f"test_{k}": v for k, v in ev.test_metrics.items()},
            **{f"baseline_test_{k}": v for k, v in ev.baseline_metrics.items()}, **ev.comparison_tags()}
    return {k: str(v) for k, v in tags.items()}


def table_rows(text: str, header: str) -> list[str]:
    """The lines of the markdown table whose header line starts with `header`, after its separator."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


# --- summary.md ---------------------------------------------------------------------------


def test_summary_names_the_study_the_counts_and_the_best_trial():
    text = summary_markdown(outcome(), "imdb-study", "val_loss")
    assert text.splitlines()[0] == "# Sweep `imdb-study` (optuna)"
    assert "Trials: 2 complete, 1 pruned, 0 failed, 9 epochs_trained." in text
    assert f"Best trial: **{BEST.trial_id}** (run `{BEST.run_id}`), val_loss = {BEST.val_metrics['val_loss']:.4f}" in text
    assert SECOND.run_id not in text  # only the best trial is named
    assert "## Final model" not in text
    assert text.endswith("```\n")


def test_summary_has_one_param_row_per_best_param():
    rows = table_rows(summary_markdown(outcome(), "s", "val_accuracy"), "| param | value |")
    assert rows == [f"| {k} | {v} |" for k, v in BEST.params.items()]


def test_summary_value_follows_the_objective():
    for objective in ("val_accuracy", "val_auc"):
        assert f"{objective} = {BEST.val_metrics[objective]:.4f}" in summary_markdown(outcome(), "s", objective)
    assert "val_f1 = nan" in summary_markdown(outcome(), "s", "val_f1")  # a metric the trial lacks


def test_summary_holds_the_whole_trials_table():
    search = outcome()
    text = summary_markdown(search, "s", "val_loss")
    assert "## Trials" in text
    block = text.split("## Trials", 1)[1].split("```")[1]
    assert block.strip("\n") == search.table.to_string(index=False)
    assert "PRUNED" in block and len(block.strip("\n").splitlines()) == len(search.table) + 1


def test_summary_without_completed_trials_names_no_best():
    text = summary_markdown(outcome(ranked=(), counts={"complete": 0, "failed": 3}), "s", "val_loss")
    assert "Best trial" not in text and "| param |" not in text
    assert "Trials: 0 complete, 3 failed." in text and "## Trials" in text


def test_summary_with_an_evaluation_tabulates_every_metric():
    ev = evaluation()
    text = summary_markdown(outcome(), "s", "val_loss", ev)
    assert f"## Final model: {ev.final.kind}" in text and ev.final.kind == "best trial (of 2 candidates)"
    assert f"Members: trial {BEST.trial_id} (`{BEST.run_id}`)." in text
    rows = table_rows(text, "| metric | final model (val) |")
    assert [row.split(" | ")[0] for row in rows] == [f"| {m}" for m in ev.test_metrics] == [f"| {m}" for m in METRICS]
    for row, metric in zip(rows, METRICS, strict=True):
        assert row == (f"| {metric} | {ev.val_metrics[metric]:.4f} | {ev.test_metrics[metric]:.4f} | "
                       f"{ev.baseline_metrics[metric]:.4f} |")
    assert f"Test accuracy by review length ({len(FINAL_TEST)} test reviews):" in text
    assert len(table_rows(text, "| bucket |")) == len(ev.by_length) == 4
    assert text.index("## Final model") < text.index("## Trials")


def test_summary_without_a_baseline_shows_a_dash():
    ev = evaluation(baseline=False)
    text = summary_markdown(outcome(), "s", "val_loss", ev)
    rows = table_rows(text, "| metric |")
    assert len(rows) == len(METRICS) and all(row.endswith("| - |") for row in rows)
    [by_length_header] = [line for line in text.splitlines() if line.startswith("| bucket |")]
    assert "final model" in by_length_header and "baseline" not in by_length_header


def test_a_refit_ensemble_labels_its_val_column_as_its_trial_models():
    ev = evaluation(members=(BEST, SECOND), refit=True)
    text = summary_markdown(outcome(), "s", "val_loss", ev)
    assert "| metric | trial models (val) | final model (test) | tfidf baseline (test) |" in text
    assert "final model (val)" not in text
    assert f"## Final model: {ev.final.kind}" in text and "refit on train+val" in ev.final.kind
    assert f"trial {SECOND.trial_id} (`{SECOND.run_id}`)" in text


# --- markdown_table ------------------------------------------------------------------------


def test_markdown_table_has_a_header_a_separator_and_one_row_per_frame_row():
    frame = pd.DataFrame({"bucket": ["short", "long", "mid"], "reviews": [3, 5, 4], "accuracy": [0.5, 2 / 3, 1.0]})
    lines = markdown_table(frame)
    assert lines[0] == "| bucket | reviews | accuracy |"
    assert lines[1] == "| --- | --- | --- |"
    assert lines[2:] == ["| short | 3 | 0.5000 |", "| long | 5 | 0.6667 |", "| mid | 4 | 1.0000 |"]
    assert all(line.count("|") == len(frame.columns) + 1 for line in lines)


def test_markdown_table_of_the_length_buckets():
    by_length = evaluation().by_length
    lines = markdown_table(by_length)
    assert len(lines) == len(by_length) + 2
    for line, row in zip(lines[2:], by_length.itertuples(index=False), strict=True):
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[0] == row.bucket and cells[2] == str(row.reviews)
        assert float(cells[3]) == pytest.approx(row[3], abs=5e-5)


# --- the run description -------------------------------------------------------------------


def test_description_without_a_headline_starts_with_the_best_trial():
    text = description_markdown(outcome(), "val_loss")
    assert text.startswith(f"Best trial {BEST.trial_id} (run `{BEST.run_id}`): val_loss 0.3125; ")
    assert "model.units 8, regularizer.dropout 0.1235, train.optimizer adam." in text  # floats to 4 significant digits
    assert "Trials: 2 complete, 1 pruned, 0 failed, 9 epochs trained." in text
    assert "Final model" not in text and "baseline" not in text


def test_description_puts_the_final_model_first_with_its_baseline():
    ev = evaluation(members=(BEST, SECOND))
    headline = Headline.from_evaluation(ev, "3")
    text = description_markdown(outcome(), "val_loss", headline)
    first = text.splitlines()[0]
    assert first.startswith(f"**Final model** ({ev.final.kind}): test accuracy **{ev.test_metrics['accuracy']:.4f}**")
    assert f"ROC AUC {ev.test_metrics['roc_auc']:.4f} on {len(FINAL_TEST)} test reviews" in first
    assert f"(validation {ev.val_metrics['accuracy']:.4f})" in first
    assert f"; tfidf baseline **{ev.baseline_metrics['accuracy']:.4f}** on the same reviews" in first
    assert f"Registered as version **3**; member trial runs: `{BEST.run_id}`, `{SECOND.run_id}`." in text
    assert text.index("**Final model**") < text.index("Best trial") < text.index("Trials:")


def test_description_names_no_baseline_when_there_is_none():
    headline = Headline.from_evaluation(evaluation(baseline=False), "1")
    text = description_markdown(outcome(), "val_loss", headline)
    assert text.startswith("**Final model**") and "baseline" not in text


def test_description_groups_thousands_of_test_reviews():
    headline = Headline.from_evaluation(evaluation(), "1")
    headline.test_reviews = 25000
    assert "on 25,000 test reviews" in description_markdown(outcome(), "val_loss", headline)


def test_a_headline_without_test_figures_is_left_out():
    headline = Headline.from_version_tags("4", {})
    text = description_markdown(outcome(), "val_loss", headline)
    assert "Final model" not in text and "version **4**" not in text
    assert text.startswith("Best trial")


# --- the headline and the version description ----------------------------------------------


def test_headline_from_version_tags_matches_the_fresh_evaluation():
    for ev in (evaluation(), evaluation(members=(BEST, SECOND), refit=True), evaluation(baseline=False)):
        fresh = Headline.from_evaluation(ev, "5")
        stored = Headline.from_version_tags("5", version_tags(ev))
        assert stored == fresh
        assert set(stored.test) == set(METRICS)  # test_samples is a count, not a test metric
        assert description_markdown(outcome(), "val_loss", stored) == description_markdown(outcome(), "val_loss", fresh)


def test_headline_from_sparse_version_tags_uses_defaults():
    headline = Headline.from_version_tags("2", {"test_accuracy": "0.8", "test_roc_auc": "0.9", "other": "x"})
    assert (headline.kind, headline.version, headline.test_reviews) == ("best trial", "2", 0)
    assert headline.test == {"accuracy": 0.8, "roc_auc": 0.9} and headline.baseline == {}
    assert math.isnan(headline.val_accuracy)


def test_version_description_names_the_study_members_and_test_figures():
    ev = evaluation(members=(BEST, SECOND))
    text = version_description("imdb-study", ev)
    assert text.startswith(f"{ev.final.kind.capitalize()} of sweep imdb-study: ")
    assert f"trials {BEST.trial_id} (run {BEST.run_id}), {SECOND.trial_id} (run {SECOND.run_id})." in text
    for metric, value in ev.test_metrics.items():
        assert f"test {metric} {value:.4f}" in text
    assert f"(tfidf baseline test accuracy {ev.baseline_metrics['accuracy']:.4f})" in text
    assert "\n" not in text


def test_version_description_without_a_baseline():
    text = version_description("s", evaluation(baseline=False))
    assert "baseline" not in text and text.endswith(".")


# --- log_outcome ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store_uri(imdb_dir, tmp_path_factory):
    """One tracking store for the module (creating one takes seconds)."""
    cfg = load_config(tiny_overrides(imdb_dir, tmp_path_factory.mktemp("report")))
    tracking.connect(cfg.tracking, write=True)
    return cfg.tracking.uri


@pytest.fixture
def store(store_uri):
    mlflow.set_tracking_uri(store_uri)
    return mlflow.MlflowClient()


def _text(run_id: str, path: str) -> str:
    return mlflow.artifacts.load_text(f"runs:/{run_id}/{path}")


def test_log_outcome_leaves_the_tables_summary_and_description_on_the_run(store):
    search, ev = outcome(), evaluation()
    headline = Headline.from_evaluation(ev, "1")
    with mlflow.start_run() as run:
        log_outcome(search, "imdb-study", "val_loss", ev, headline)
    run_id = run.info.run_id
    assert _text(run_id, "trials.csv") == search.table.to_csv(index=False)
    records = json.loads(_text(run_id, "trials.json"))
    assert [r["number"] for r in records] == search.table["number"].tolist()
    assert [r["state"] for r in records] == search.table["state"].tolist()
    assert records[2]["value"] is None  # a pruned trial has no objective value
    assert _text(run_id, "summary.md") == summary_markdown(search, "imdb-study", "val_loss", ev)
    assert "## Final model" in _text(run_id, "summary.md")
    assert json.loads(_text(run_id, "best_params.json")) == BEST.params
    data = store.get_run(run_id).data
    assert data.tags["mlflow.note.content"] == description_markdown(search, "val_loss", headline)
    assert data.tags["mlflow.note.content"].startswith("**Final model**")
    assert {k: data.metrics[f"trials_{k}"] for k in COUNTS} == COUNTS
    assert {k: data.metrics[f"best_{k}"] for k in BEST.val_metrics} == BEST.val_metrics


def test_log_outcome_without_completed_trials_logs_no_best(store):
    search = outcome(ranked=(), counts={"complete": 0, "failed": 2})
    with mlflow.start_run() as run:
        log_outcome(search, "s", "val_loss")
    artifacts = {a.path for a in store.list_artifacts(run.info.run_id)}
    assert artifacts == {"trials.csv", "trials.json", "summary.md"}
    data = store.get_run(run.info.run_id).data
    assert not any(name.startswith("best_") for name in data.metrics)
    assert data.metrics["trials_failed"] == 2
    assert data.tags["mlflow.note.content"] == "Trials: 0 complete, 2 failed. Details: `summary.md`, `evaluation/`, `plots/`.\n"


# --- seed noise, intervals and ties ----------------------------------------------------------

NOISE = SeedNoise("val_loss", {1: 0.005, 2: 0.005}, final_sd=0.005, repeats=[0, 1], widths=2.0)


def noisy_outcome() -> SearchOutcome:
    """Trial 2 trails the best by 0.008 (< the band 0.01): tied; trial 9 was cut with its margin."""
    table = pd.DataFrame({"number": [7, 2, 9], "value": [0.3125, 0.3205, 0.45], "state": ["COMPLETE", "COMPLETE", "PRUNED"],
                          "tied_with_best": [True, True, False], "cut_epoch": [float("nan"), 1.0, 1.0],
                          "cut_value": [float("nan"), 0.33, 0.45], "cut_cutoff": [float("nan"), 0.325, 0.325],
                          "cut_margin": [float("nan"), 0.005, 0.125], "cut_noise_band": [float("nan"), 0.02, 0.02]})
    return SearchOutcome("optuna", table, [BEST, SECOND], dict(COUNTS), NOISE)


def test_summary_gives_the_noise_the_best_value_with_its_interval_and_the_tied_trials():
    summary = summary_markdown(noisy_outcome(), "s", "val_loss")
    assert f"Seed noise: {NOISE.describe()}." in summary
    assert "val_loss = 0.3125 ± 0.0098; tied with it (within the noise): trials 2" in summary


def test_summary_tabulates_each_pruning_decision_cut_or_spared():
    rows = table_rows(summary_markdown(noisy_outcome(), "s", "val_loss"), "| trial | state | epoch |")
    assert rows == ["| 2 | COMPLETE | 1 | 0.3300 | 0.3250 | +0.0050 | 0.0200 |",
                    "| 9 | PRUNED | 1 | 0.4500 | 0.3250 | +0.1250 | 0.0200 |"]


def test_without_noise_the_summary_says_so_and_marks_no_ties():
    summary = summary_markdown(outcome(), "s", "val_loss")
    assert "Seed noise: not measured" in summary and "tied with it" not in summary and "±" not in summary


def test_test_accuracy_carries_its_interval_in_the_summary_the_description_and_the_version_tags():
    ev = evaluation()
    ev.test_interval, ev.baseline_interval = (0.41, 0.93), (0.22, 0.81)
    summary = summary_markdown(noisy_outcome(), "s", "val_loss", ev)
    accuracy_row = next(row for row in table_rows(summary, "| metric |") if row.startswith("| accuracy |"))
    assert "(95 % interval 0.4100-0.9300)" in accuracy_row and "(95 % interval 0.2200-0.8100)" in accuracy_row
    stored = Headline.from_version_tags("5", {**version_tags(ev), **{k: str(v) for k, v in ev.interval_tags().items()}})
    assert stored == Headline.from_evaluation(ev, "5")
    description = description_markdown(noisy_outcome(), "val_loss", stored)
    assert f"**{ev.test_metrics['accuracy']:.4f} (95 % interval 0.4100-0.9300)**" in description
    assert "Seed noise:" in description and "tied with it (within the noise): trials 2" in description
    assert headline_sentence(stored).startswith("Final model (best trial")


def test_a_version_without_member_tags_has_no_members():
    assert Headline.from_version_tags("3", {"test_accuracy": "0.9"}).member_run_ids == []


def test_a_stacked_headline_names_its_strongest_baseline_and_its_lstm_part_alone():
    ev = evaluation()
    ev.baseline_kind, ev.lstm_test_metrics = "nbsvm", {"accuracy": 0.625}
    for headline in (Headline.from_evaluation(ev, "4"), Headline.from_version_tags("4", version_tags(ev))):
        sentence = headline_sentence(headline)
        assert f"test accuracy {ev.test_metrics['accuracy']:.4f} (its LSTM part alone 0.6250)" in sentence
        assert f"; nbsvm baseline {ev.baseline_metrics['accuracy']:.4f} on the same reviews" in sentence
    text = summary_markdown(outcome(), "s", "val_loss", ev)
    assert "| metric | final model (val) | final model (test) | nbsvm baseline (test) |" in text
    assert "The LSTM part alone (test): accuracy 0.6250." in text
