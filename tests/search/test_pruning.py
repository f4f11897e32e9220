"""Pruning only beyond the seed noise: a planted noise level decides which trials are cut."""

import optuna
import pytest
from optuna.trial import create_trial

from sentiment.config import load_config
from sentiment.search.noise import SeedNoise
from sentiment.search.pruning import (
    NOISE_ATTR,
    REPEAT_ATTR,
    EpochPruningCallback,
    NoiseAwarePruner,
    PrunedBeyondNoise,
    make_pruner,
    pruner_name,
    study_noise,
)
from tests.conftest import tiny_overrides

PLANTED = SeedNoise("val_loss", {1: 0.01, 2: 0.008}, final_sd=0.008, repeats=[0, 1], widths=2.0)  # band 0.02 after epoch 1


def _halving():
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)


def _finish(study, values):
    """Trials that report one epoch each, as a sweep's would (the pruner records its rungs)."""
    for value in values:
        trial = study.ask()
        trial.report(value, step=1)
        trial.should_prune()
        study.tell(trial, value)


def _study(first_epochs=(0.27, 0.28, 0.29), noise=PLANTED, pruner=None):
    study = optuna.create_study(pruner=pruner or NoiseAwarePruner(_halving(), 1 / 3, "val_loss", widths=2.0))
    if noise is not None:
        study.set_user_attr(NOISE_ATTR, noise.to_dict())
    _finish(study, first_epochs)
    return study


def _verdict(study, first_epoch, **user_attrs):
    trial = study.ask()
    for name, value in user_attrs.items():
        trial.set_user_attr(name, value)
    trial.report(first_epoch, step=1)
    return trial.should_prune(), study.pruner.decisions.get((trial.number, 1))


def test_a_trial_within_the_noise_band_is_kept_where_plain_halving_cuts_it():
    study = _study()
    # The cutoff is the best third of [0.27, 0.28, 0.29]: 0.2767. 0.285 trails it by 0.0083 < 0.02.
    pruned, cut = _verdict(study, 0.285)
    assert not pruned
    assert cut.cutoff == pytest.approx(0.27667, abs=1e-4) and cut.margin == pytest.approx(0.0083, abs=1e-4)
    assert cut.band == pytest.approx(0.02)
    plain = _study(noise=None, pruner=_halving())
    ask = plain.ask()
    ask.report(0.285, step=1)
    assert ask.should_prune(), "successive halving alone cuts it: the noise band is what keeps it"


def test_a_trial_far_below_the_noise_band_is_cut_with_its_margin():
    pruned, cut = _verdict(_study(), 0.40)
    assert pruned and cut.prunes
    assert cut.margin == pytest.approx(0.40 - cut.cutoff) and cut.margin > cut.band
    assert "cut" in cut.reason("val_loss") and "beyond the noise band 0.0200" in cut.reason("val_loss")


def test_maximized_objectives_cut_below_the_cutoff():
    study = optuna.create_study(direction="maximize",
                                pruner=NoiseAwarePruner(_halving(), 1 / 3, "val_auc", widths=2.0))
    study.set_user_attr(NOISE_ATTR, PLANTED.to_dict())
    _finish(study, (0.95, 0.94, 0.93))
    assert not _verdict(study, 0.935)[0]   # 0.0083 below the cutoff 0.9433: within 0.02
    assert _verdict(study, 0.80)[0]


def test_nothing_is_cut_before_the_repeats_have_measured_the_noise_and_repeats_are_never_cut():
    study = _study(noise=None)
    running_repeat = study.ask()
    running_repeat.set_user_attr(REPEAT_ATTR, 1)  # a repeat still training: the noise is unknown
    assert not _verdict(study, 0.60)[0]
    assert not _verdict(_study(), 0.60, **{REPEAT_ATTR: 0})[0]


def test_the_noise_is_measured_from_the_finished_repeats_and_kept_on_the_study():
    study = optuna.create_study()
    for number, (value, curve) in enumerate([(0.30, {1: 0.32, 2: 0.30}), (0.28, {1: 0.35, 2: 0.28})]):
        study.add_trial(create_trial(value=value, intermediate_values=curve, user_attrs={REPEAT_ATTR: number}))
    noise = study_noise(study, "val_loss", widths=2.0)
    assert noise.repeats == [0, 1] and noise.per_epoch[1] == pytest.approx(0.03 / 2 ** 0.5)
    assert SeedNoise.from_dict(study.user_attrs[NOISE_ATTR]) == noise


def test_the_keras_callback_keeps_the_decision_on_the_trial_and_raises_with_the_margin():
    study = _study()
    trial = study.ask()
    callback = EpochPruningCallback(trial, "val_loss")
    with pytest.raises(PrunedBeyondNoise) as raised:
        callback.on_epoch_end(0, {"val_loss": 0.41})
    stored = study.trials[trial.number].user_attrs
    assert stored["cut_epoch"] == 1 and stored["cut_value"] == pytest.approx(0.41)
    assert float(raised.value.tags["cut_margin"]) == pytest.approx(stored["cut_margin"])
    assert stored["cut_margin"] > stored["cut_noise_band"] == pytest.approx(0.02)
    with pytest.raises(KeyError, match="val_auc is not among"):
        EpochPruningCallback(study.ask(), "val_auc").on_epoch_end(0, {"val_loss": 0.3})


@pytest.mark.parametrize("kind, pruner", [("median", "MedianPruner"), ("successive_halving", "SuccessiveHalvingPruner"),
                                          ("hyperband", "HyperbandPruner"), ("none", "NopPruner")])
def test_pruner_kind_picks_the_optuna_pruner(imdb_dir, tmp_path, kind, pruner):
    cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + [f"sweep.pruner.kind={kind}"])
    assert type(make_pruner(cfg)).__name__ == pruner
    noisy = make_pruner(load_config(tiny_overrides(imdb_dir, tmp_path) + [f"sweep.pruner.kind={kind}",
                                                                          "sweep.noise_repeats=2"]))
    # With the noise measured, every kind that cuts is wrapped; one that never cuts stays as it is.
    assert pruner_name(noisy) == (pruner if kind == "none" else f"NoiseAwarePruner({pruner})")


def test_the_repeats_count_in_the_rungs_a_later_trial_is_compared_with():
    """Successive halving records a trial's rung value when it is asked about it: the repeats,
    never cut, must still be asked, or a later trial would compete with no one."""
    study = optuna.create_study(pruner=NoiseAwarePruner(_halving(), 1 / 3, "val_loss", widths=2.0))
    for number, value in enumerate((0.2959, 0.2852)):
        trial = study.ask()
        trial.set_user_attr(REPEAT_ATTR, number)
        trial.report(value, step=1)
        assert not trial.should_prune()
        study.tell(trial, value)
    study.set_user_attr(NOISE_ATTR, SeedNoise("val_loss", {1: 0.001}, 0.001, [0, 1], 2.0).to_dict())
    pruned, cut = _verdict(study, 0.2977)  # trails the best third (0.2888) by 0.0089 > the band 0.002
    assert pruned and cut.cutoff == pytest.approx(0.2852 + (0.2959 - 0.2852) / 3, abs=1e-4)
