"""`make bench`: data, throughput and memory numbers (bench.throughput), and a time-to-accuracy
race of search engines on one wall-clock budget each.

A benchmark, not a test: it prints a table and writes JSON under bench/results/.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import mlflow
from omegaconf import DictConfig, OmegaConf

from sentiment import tracking
from sentiment.bench.results import machine_info, peak_memory_mb, write_results
from sentiment.bench.throughput import THROUGHPUT_CASES, time_data, time_epoch
from sentiment.config import load_config
from sentiment.errors import ConfigError
from sentiment.final_model import build_final_model, select_candidates
from sentiment.metrics import classification_metrics
from sentiment.search.implementations import engine_for
from sentiment.tokens import load_data
from sentiment.train import initial_embeddings

log = logging.getLogger(__name__)


@dataclass
class Preset:
    train_samples: int | None
    sequence_length: int
    vocab_size: int
    budget_s: float              # wall clock per engine in the race
    targets: tuple[float, ...]   # val accuracy levels to time
    throughput_samples: int = 4000


PRESETS = {
    "small": Preset(train_samples=4000, sequence_length=200, vocab_size=10000, budget_s=120,
                    targets=(0.78, 0.80, 0.82)),
    # The default sweep's data (all 25,000 training reviews) and a default sweep's budget each.
    "full": Preset(train_samples=None, sequence_length=400, vocab_size=30000, budget_s=1800,
                   targets=(0.88, 0.89, 0.90)),
}
# name -> config overrides: same space, data, training and seeds; only the search differs (for
# Hyperband that includes its epoch range, below).
CONTESTANTS = {
    "default": [],  # the sampler and pruner conf/sweep/default.yaml chooses
    "optuna_tpe_no_pruning": ["sweep.pruner.kind=none"],
    # Hyperband's own resource range stays 1-3 epochs: with train.max_epochs=2 it would have a single
    # bracket of 2-epoch trials (a random search), without the 1-epoch trials that are its strength.
    "keras_tuner_hyperband": ["sweep.engine=keras_tuner", "sweep.algorithm=hyperband", "train.max_epochs=3"],
    "random_search": ["sweep.algorithm=random", "sweep.pruner.kind=none"],
}
REFERENCE = ("default", "keras_tuner_hyperband")  # the race's headline: time to a target, as a ratio


def race(base: list[str], preset: Preset, workdir: Path, contestants: list[str]) -> dict:
    """Each contestant gets the same wall-clock budget on the same data and space."""
    results = {}
    for name in contestants:
        overrides = CONTESTANTS[name]
        cfg = load_config(base + overrides + [
            f"data.cache_dir={workdir / 'cache'}", f"tracking.uri=sqlite:///{workdir / 'race.db'}",
            f"tracking.artifact_location={workdir / 'artifacts'}", f"sweep.storage=sqlite:///{workdir / 'race-optuna.db'}",
            f"sweep.keras_tuner_dir={workdir / 'kt'}", f"sweep.study_name=race-{name}",
            "sweep.final=best", "sweep.refit=false",  # what each search found, as it trained it
            "sweep.n_trials=1000", f"sweep.timeout={preset.budget_s}"])
        log.info("race: %s for %.0f s", name, preset.budget_s)
        results[name] = _race_one(cfg, preset)
    return results


def _race_one(cfg: DictConfig, preset: Preset) -> dict:
    """One contestant's search, its best-so-far curve read back from the finished trial runs,
    and the test accuracy of the model it would register (scored once, after the race)."""
    experiment_id = tracking.connect(cfg.tracking)
    data = load_data(cfg)
    initial_embeddings(cfg, data)  # word2vec is trained once, before the clock, not in the first budget
    start_ms = time.time() * 1000
    with mlflow.start_run(run_name=f"race-{cfg.sweep.study_name}") as parent:
        outcome = engine_for(cfg).search(cfg, data)
        wall_s = round(time.time() - start_ms / 1000, 1)
        candidates = select_candidates(cfg, outcome)
        final = build_final_model(cfg, candidates, data) if candidates else None
    trials = tracking.find_runs(tracking.TRIAL, experiment_ids=[experiment_id], parent_run_id=parent.info.run_id,
                                finished=True, order_by=["attributes.end_time ASC"])
    best, curve = 0.0, []
    for run in trials:
        best = max(best, run.data.metrics["best_val_accuracy"])
        curve.append([round((run.info.end_time - start_ms) / 1000, 1), round(best, 4)])
    test = classification_metrics(final.test_labels, final.test_probability)["accuracy"] if final else None
    return {"trials": outcome.counts, "wall_s": wall_s, "best_val_accuracy": best,
            "test_accuracy_of_registered": test, "best_so_far": curve,
            "time_to": {f"{t:.2f}": next((s for s, acc in curve if acc >= t), None) for t in preset.targets}}


def headline(race_results: dict, target: str) -> dict:
    """default's time to target over Keras Tuner Hyperband's (< 1: the default got there sooner).
    When only the default got there, Hyperband needed longer than its whole search: the default's
    time over that search's wall time bounds the ratio from above (`at_most`)."""
    ours, theirs = (race_results.get(name, {}) for name in REFERENCE)
    mine, their = (result.get("time_to", {}).get(target) for result in (ours, theirs))
    head = {"target": target, "of": "/".join(REFERENCE), "ratio": round(mine / their, 2) if mine and their else None}
    if mine and not their and theirs.get("wall_s"):
        head["at_most"] = round(mine / theirs["wall_s"], 2)
    return head


def plot_race(race_results: dict, preset: Preset, path: Path) -> Path:
    """Best val accuracy over wall-clock time, one step line per contestant, targets dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for (name, result), style in zip(race_results.items(), ["-", "--", "-.", ":"] * 2, strict=False):
        if result["best_so_far"]:  # from its first finished trial on; a trial may end past the budget
            seconds, best = zip(*result["best_so_far"], strict=True)
            ax.step([*seconds, max(preset.budget_s, seconds[-1])], [*best, best[-1]], where="post", label=name,
                    linestyle=style, marker="o", markevery=list(range(len(seconds))))
    for target in preset.targets:
        ax.axhline(target, color="grey", linestyle=":", linewidth=0.8)
    ax.set(xlabel="seconds", ylabel="best val accuracy so far", title="search engines on one budget")
    ax.legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def log_race(report: dict, json_path: Path, plot_path: Path) -> str:
    """One run in the configured tracking store's `<experiment>-bench` experiment: the race's
    numbers as metrics, its JSON and plot as artifacts."""
    cfg = load_config()
    tracking.connect(OmegaConf.merge(cfg.tracking, {"experiment": f"{cfg.tracking.experiment}-bench"}), write=True)
    with mlflow.start_run(run_name=f"race-{report['preset']}") as run:
        mlflow.log_params({"preset": report["preset"], "budget_s": report["settings"]["budget_s"]})
        for name, result in report["race"].items():
            mlflow.log_metric(f"{name}.best_val_accuracy", result["best_val_accuracy"])
            if result["test_accuracy_of_registered"] is not None:
                mlflow.log_metric(f"{name}.test_accuracy", result["test_accuracy_of_registered"])
            mlflow.log_metric(f"{name}.epochs_trained", result["trials"].get("epochs_trained", 0))
            for target, seconds in result["time_to"].items():
                if seconds is not None:
                    mlflow.log_metric(f"{name}.seconds_to_{target}", seconds)
        mlflow.log_artifact(str(json_path), "race")
        mlflow.log_artifact(str(plot_path), "race")
    return run.info.run_id


def run_bench(preset_name: str = "small", budget_s: float | None = None, skip_race: bool = False,
              contestants: list[str] | None = None) -> dict:
    """contestants: a subset of CONTESTANTS to race (default: all), e.g. to try a new default
    against Keras Tuner Hyperband in half the time; unknown names are refused before any work."""
    contestants = list(contestants or CONTESTANTS)
    unknown = [name for name in contestants if name not in CONTESTANTS]
    if unknown:
        raise ConfigError(f"unknown race contestant {unknown[0]!r}: choose from {', '.join(CONTESTANTS)}")
    preset = dataclasses.replace(PRESETS[preset_name], budget_s=budget_s or PRESETS[preset_name].budget_s)
    base = [f"data.train_samples={preset.train_samples}" if preset.train_samples else "data.train_samples=null",
            f"data.sequence_length={preset.sequence_length}", f"data.vocab_size={preset.vocab_size}"]
    report = {"preset": preset_name, "settings": preset.__dict__, "machine": machine_info(),
              "started": datetime.now(UTC).isoformat(timespec="seconds")}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        report["data"], cfg = time_data(base, workdir)
        data = load_data(cfg)
        n = min(preset.throughput_samples, len(data.y_train))
        report["throughput"] = [time_epoch(cfg, data, n, **case) for case in THROUGHPUT_CASES]
        if not skip_race:
            report["race"] = race(base, preset, workdir, contestants)
            middle = f"{preset.targets[len(preset.targets) // 2]:.2f}"
            report["headline"] = headline(report["race"], middle)
    report["peak_memory_mb"] = round(peak_memory_mb(), 1)
    report = write_results(report, preset_name)
    if "race" in report:
        json_path = Path(report["path"])
        report["plot"] = str(plot_race(report["race"], preset, json_path.with_suffix(".png")))
        report["mlflow_run_id"] = log_race(report, json_path, Path(report["plot"]))
    return report


def format_report(report: dict) -> str:
    lines = [f"machine: {report['machine']['cpus']} CPUs, TF {report['machine']['tensorflow']}, "
             f"{report['machine']['platform']}",
             f"data: load+tokenize cold {report['data']['load_tokenize_cold_s']} s, "
             f"cached {report['data']['load_cached_s']} s", "", "throughput (one training epoch):"]
    for row in report["throughput"]:
        case = ", ".join(f"{k}={v}" for k, v in row.items() if "." in k)
        lines.append(f"  {case:75s} {row['reviews_per_s']:8.1f} reviews/s {row['tokens_per_s']:9d} tokens/s")
    for name, result in report.get("race", {}).items():
        times = ", ".join(f"{t}: {'-' if s is None else f'{s:.0f} s'}" for t, s in result["time_to"].items())
        test = result["test_accuracy_of_registered"]
        lines.append(f"race {name:24s} best val acc {result['best_val_accuracy']:.4f}  test acc "
                     f"{'-' if test is None else f'{test:.4f}'}  trials {result['trials']}  time to {times}")
    if "headline" in report:
        head = report["headline"]
        if head["ratio"] is not None:
            ratio = f"{head['ratio']}x"
        elif "at_most" in head:
            ratio = f"<= {head['at_most']}x ({REFERENCE[1]} did not get there in its whole search)"
        else:
            ratio = "-"
        lines.append(f"time to {head['target']} val accuracy, {head['of']}: {ratio}")
        lines.append(f"plot: {report['plot']}  (also on MLflow run {report['mlflow_run_id']})")
    lines += [f"peak memory: {report['peak_memory_mb']} MB", f"written to {report['path']}"]
    return "\n".join(lines)
