"""The baselines: what the tf-idf one fits on, the one nested run each logs (tags, metrics, test
probabilities), how a later sweep finds them and which one the final model is compared with."""

import mlflow
import numpy as np
import pytest

from sentiment import baseline, baseline_models, nbsvm, tracking
from sentiment.baseline import TEST_PROBABILITY, find_baseline_run, log_baseline, log_baselines, ngram_model, strongest_baseline
from sentiment.config import load_config
from sentiment.data import ReviewSplits
from sentiment.metrics import METRICS, classification_metrics
from tests.conftest import TEST_ONLY, tiny_overrides


@pytest.fixture(scope="module")
def store(imdb_dir, tmp_path_factory):
    """One tracking store for the module (creating one takes seconds), with log_baseline run
    once under a parent run, its pipeline and its scoring calls kept."""
    cfg = load_config(tiny_overrides(imdb_dir, tmp_path_factory.mktemp("baseline")))
    pipelines, scored = [], []
    make_pipeline, score = baseline_models.make_pipeline, baseline.classification_metrics

    def keep_pipeline(*steps):
        pipelines.append(make_pipeline(*steps))
        return pipelines[-1]

    def keep_score(labels, probability):
        scored.append((np.array(labels), np.array(probability)))
        return score(labels, probability)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(baseline_models, "make_pipeline", keep_pipeline)
        patch.setattr(baseline, "classification_metrics", keep_score)
        experiment_id = tracking.connect(cfg.tracking, write=True)
        reviews = ReviewSplits(cfg)
        with mlflow.start_run() as parent:
            probability = log_baseline(cfg, reviews, "tfidf")
    runs = tracking.find_runs(tracking.BASELINE, {tracking.STUDY_TAG: cfg.sweep.study_name}, [experiment_id])
    return {"cfg": cfg, "experiment_id": experiment_id, "splits": reviews.get(), "probability": probability,
            "parent": parent.info.run_id, "runs": runs, "pipelines": pipelines, "scored": scored}


@pytest.fixture
def logged(store):
    mlflow.set_tracking_uri(store["cfg"].tracking.uri)
    return store


def test_it_fits_on_the_training_split_only(logged):
    train, val, test, _ = logged["splits"]
    [pipeline] = logged["pipelines"]
    vocabulary = pipeline[0].vocabulary_
    assert TEST_ONLY not in vocabulary and not any(TEST_ONLY in term for term in vocabulary)
    assert "great" in vocabulary and "awful" in vocabulary  # the training cues
    assert "br" not in vocabulary  # <br /> is cleaned away before tokenizing
    assert pipeline.predict_proba(test.texts)[:, 1] == pytest.approx(logged["probability"])
    assert len(logged["probability"]) == len(test.labels)


def test_it_logs_one_nested_run_tagged_with_its_study(logged):
    cfg = logged["cfg"]
    [run] = logged["runs"]
    tags = run.data.tags
    assert tags[tracking.ROLE_TAG] == tracking.BASELINE
    assert tags[tracking.STUDY_TAG] == cfg.sweep.study_name
    assert tags["mlflow.parentRunId"] == logged["parent"]
    assert run.info.status == "FINISHED"
    assert run.data.params["C"] == "4.0" and run.data.params["seed"] == str(cfg.seed)
    children = mlflow.search_runs([logged["experiment_id"]], output_format="list",
                                  filter_string=f"tags.mlflow.parentRunId = '{logged['parent']}'")
    assert [child.info.run_id for child in children] == [run.info.run_id]


def test_its_metrics_are_the_shared_metrics_of_its_own_probabilities(logged):
    _, val, test, _ = logged["splits"]
    [run] = logged["runs"]
    metrics = run.data.metrics
    (val_labels, val_probability), (test_labels, test_probability) = logged["scored"]
    np.testing.assert_array_equal(val_labels, val.labels)
    np.testing.assert_array_equal(test_labels, test.labels)
    np.testing.assert_array_equal(test_probability, logged["probability"])
    for name, labels, probability in (("val", val.labels, val_probability), ("test", test.labels, test_probability)):
        expected = classification_metrics(labels, probability)
        assert {k: metrics[f"{name}_{k}"] for k in METRICS} == pytest.approx(expected)
    assert metrics["fit_seconds"] >= 0
    assert metrics["val_accuracy"] > 0.8  # the generated reviews carry clear word cues


def test_its_artifact_is_the_returned_test_probability(logged):
    [run] = logged["runs"]
    path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=TEST_PROBABILITY)
    np.testing.assert_array_equal(np.load(path), logged["probability"])


def test_find_baseline_run_matches_the_study(logged):
    study = logged["cfg"].sweep.study_name
    found = find_baseline_run(logged["experiment_id"], study)
    assert found is not None and found.info.run_id == logged["runs"][0].info.run_id
    assert find_baseline_run(logged["experiment_id"], study + "-other") is None


def test_strongest_baseline_only_when_it_fits_the_test_reviews(logged):
    experiment_id, study, n_test = logged["experiment_id"], logged["cfg"].sweep.study_name, len(logged["probability"])
    found = strongest_baseline(experiment_id, study, n_test)
    np.testing.assert_array_equal(found.test_probability, logged["probability"])
    assert found.kind == "tfidf" and found.val_accuracy == logged["runs"][0].data.metrics["val_accuracy"]
    assert strongest_baseline(experiment_id, study, n_test + 1) is None
    assert strongest_baseline(experiment_id, study, n_test - 1) is None
    assert strongest_baseline(experiment_id, study + "-other", n_test) is None


def test_a_baseline_run_without_its_artifact_gives_no_probability(logged, caplog):
    experiment_id = logged["experiment_id"]
    tags = {tracking.ROLE_TAG: tracking.BASELINE, tracking.STUDY_TAG: "old"}  # a study of its own in the shared store
    with mlflow.start_run(tags=tags) as run:
        pass
    assert find_baseline_run(experiment_id, "old").info.run_id == run.info.run_id  # untagged: a tf-idf run
    assert strongest_baseline(experiment_id, "old", 40) is None
    assert run.info.run_id in caplog.text and TEST_PROBABILITY in caplog.text


def _planted_baseline(study: str, kind: str, val_accuracy: float, probability: np.ndarray, tmp_path) -> None:
    tags = {tracking.ROLE_TAG: tracking.BASELINE, tracking.STUDY_TAG: study, baseline.KIND_TAG: kind}
    with mlflow.start_run(tags=tags):
        mlflow.log_metric("val_accuracy", val_accuracy)
        np.save(tmp_path / TEST_PROBABILITY, probability)
        mlflow.log_artifact(str(tmp_path / TEST_PROBABILITY))


def test_the_strongest_baseline_is_chosen_on_validation_not_test(logged, tmp_path):
    labels = np.array([1, 0, 1, 0])
    _planted_baseline("planted", "tfidf", 0.80, labels.astype(float), tmp_path)  # perfect on test
    _planted_baseline("planted", "nbsvm", 0.85, 1 - labels.astype(float), tmp_path)  # all wrong on test
    found = strongest_baseline(logged["experiment_id"], "planted", len(labels))
    assert found.kind == "nbsvm" and found.val_accuracy == 0.85
    np.testing.assert_array_equal(found.test_probability, 1 - labels)


def test_log_baselines_logs_each_configured_kind_once_with_the_nbsvm_model_on_its_run(logged):
    cfg, experiment_id = logged["cfg"], logged["experiment_id"]
    reviews = ReviewSplits(cfg)
    with mlflow.start_run():
        log_baselines(cfg, reviews, experiment_id)  # tf-idf is logged already: only NBSVM is new
        log_baselines(cfg, reviews, experiment_id)  # nothing left to log
    runs = baseline.baseline_runs(experiment_id, cfg.sweep.study_name)
    assert sorted(baseline.kind_of(run) for run in runs) == ["nbsvm", "tfidf"]
    nbsvm_run = find_baseline_run(experiment_id, cfg.sweep.study_name, "nbsvm")
    assert nbsvm_run.data.params["ngrams"] == str(cfg.baseline.nbsvm.ngrams)
    assert nbsvm_run.data.metrics["val_accuracy"] > 0.8  # the generated reviews carry clear word cues
    _, val, test, _ = reviews.get()
    stored = np.load(mlflow.artifacts.download_artifacts(run_id=nbsvm_run.info.run_id, artifact_path=TEST_PROBABILITY))
    logits = nbsvm.ngram_logit(ngram_model(experiment_id, cfg.sweep.study_name), test.texts)
    np.testing.assert_allclose(stored, 1 / (1 + np.exp(-logits)), rtol=1e-6)


def test_a_stack_without_an_nbsvm_run_is_refused_in_one_line(logged):
    with pytest.raises(LookupError, match="has no nbsvm baseline run: add it to baseline.models"):
        ngram_model(logged["experiment_id"], "a-study-without-baselines")
