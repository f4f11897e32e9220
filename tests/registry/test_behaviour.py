"""The behaviour checks: what each check counts (with a keyword scorer whose faults are known),
the gate on them, and a model trained with a planted flaw that the gate holds back."""

import re
import shutil

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from sentiment.config import load_config
from sentiment.registry import behaviour
from sentiment.registry.promote import promote
from tests.conftest import STRONG_STUDY, tiny_overrides, write_imdb

POSITIVE_WORD = re.compile(r"\b(good|great|wonderful|excellent|brilliant|enjoy\w*|superb|best|funny)\b", re.I)
NEGATIVE_WORD = re.compile(r"\b(bad\w*|terrible|awful|boring|dull|poor\w*|worst|wasted|mess|avoid)\b", re.I)


def keyword_scorer(favourite: str | None = None):
    """Positive on a positive word, negative on a negative one, 0.4 on neither; `favourite` in a
    review makes it positive whatever else it says (the flaw a names check must catch)."""
    def probability(texts: list[str]) -> np.ndarray:
        def one(text: str) -> float:
            if favourite and favourite in text:
                return 0.9
            return 0.9 if POSITIVE_WORD.search(text) else 0.1 if NEGATIVE_WORD.search(text) else 0.4
        return np.array([one(text) for text in texts])
    return probability


def test_the_suite_is_fixed_and_each_check_has_cases():
    again = (behaviour.negation(), behaviour.intensifiers(), behaviour.verdict_position(), behaviour.names(),
             behaviour.noise(), behaviour.neutral_filler())
    assert again == behaviour.SUITE  # generated without sampling: every run scores the same cases
    for check in behaviour.SUITE:
        assert len(check.cases) >= 10, check.name
        if check.kind == behaviour.LABEL:
            assert len(check.expected) == len(check.cases) and set(check.expected) == {0, 1}
        else:
            assert all(len(case) >= 3 for case in check.cases)
    default_length = load_config().data.sequence_length
    assert all(len(case[0].split()) > default_length for case in behaviour.verdict_position().cases)


def test_a_keyword_model_fails_negation_and_passes_the_invariances():
    table = behaviour.run_checks(keyword_scorer())
    # "not good" has a positive word and "not bad at all" a negative one: every negation case fails.
    assert table.loc["negation", ["cases", "failures"]].tolist() == [12, 12]
    assert table.loc["negation", "first_failure"] == "The movie was not good."
    for check in ("intensifiers", "verdict_position", "names", "noise", "neutral_filler"):
        assert table.loc[check, "failures"] == 0, check


def test_a_name_that_always_means_positive_fails_the_names_check():
    flawed = behaviour.run_checks(keyword_scorer(favourite="Tom Hanks"))
    # Four of the six name templates are neutral or negative: with Tom Hanks in them they flip.
    assert flawed.loc["names", ["cases", "failures"]].tolist() == [18, 12]
    assert behaviour.regressions(flawed, behaviour.run_checks(keyword_scorer()), tolerance=0.1) == ["names 67% vs 0%"]
    assert behaviour.behaviour_tags(flawed)["behaviour.names.failure_rate"] == pytest.approx(12 / 18, abs=1e-4)


def test_a_regression_within_the_tolerance_passes():
    champion = behaviour.run_checks(keyword_scorer())
    candidate = champion.copy()
    candidate.loc["noise", "failure_rate"] = 1 / 12  # one case more than the champion's 0
    assert behaviour.regressions(candidate, champion, tolerance=0.1) == []
    assert behaviour.regressions(candidate, champion, tolerance=0.0) == ["noise 8% vs 0%"]


# --- a model trained with a planted flaw ------------------------------------------------------

PLANTED_NAME = "Tom Hanks"


@pytest.fixture(scope="module")
def flawed_store(tmp_path_factory, imdb_dir):
    """v1: trained on the tiny reviews; v2: trained on the same reviews where half the positive
    training reviews also name Tom Hanks and no negative one does. The files, ids and labels are
    the same, so the two versions' split digests agree and they can be compared."""
    from sentiment.sweep import run_sweep

    tmp = tmp_path_factory.mktemp("behaviour")
    flawed_dir = write_imdb(tmp / "flawed")
    assert sorted(p.name for p in flawed_dir.rglob("*.txt")) == sorted(p.name for p in imdb_dir.rglob("*.txt"))
    for review in sorted((flawed_dir / "train" / "pos").glob("*.txt"))[::2]:  # half: the cue words still matter
        first, rest = review.read_text().split("<br /><br />")
        review.write_text(f"{first} {PLANTED_NAME}<br /><br />{rest}", encoding="utf-8")
    shutil.rmtree(tmp / "cache", ignore_errors=True)
    base = tiny_overrides(imdb_dir, tmp) + ["sweep.n_trials=1", "promote.test_samples=null", *STRONG_STUDY]
    assert run_sweep(load_config(base)).registered_version == "1"
    flawed = [f"data.path={flawed_dir}", f"data.cache_dir={tmp / 'cache-flawed'}", "sweep.study_name=flawed"]
    assert run_sweep(load_config(base + flawed)).registered_version == "2"
    mlflow.end_run()
    return base


@pytest.mark.sweeps
def test_a_version_trained_with_a_planted_flaw_fails_the_names_check_and_is_held(flawed_store):
    cfg = load_config(flawed_store)
    assert promote(cfg, version="1").decision == "first champion"
    client = MlflowClient()
    clean, flawed = (client.get_model_version("imdb-sentiment", v).tags for v in ("1", "2"))
    assert float(clean["behaviour.names.failure_rate"]) == 0.0  # the sweep checked each version it registered
    assert float(flawed["behaviour.names.failure_rate"]) > 0.1

    held = promote(cfg, version="2")
    assert held.decision == "refused", held.reason
    assert "fails more behaviour cases than the champion" in held.reason and "names" in held.reason
    assert held.behaviour.loc["names", "candidate v2"] > held.behaviour.loc["names", "champion v1"] + 0.1
    tags = client.get_model_version("imdb-sentiment", "2").tags
    assert tags["promotion.decision"] == "refused"
    assert float(tags["behaviour.names.failure_rate"]) == pytest.approx(held.behaviour.loc["names", "candidate v2"], abs=1e-4)
