"""The seed noise measured from repeats of one configuration: its sd per epoch and at the end."""

import numpy as np
import pytest

from sentiment.search.noise import SeedNoise, measure


def test_two_repeats_give_the_sample_sd_per_epoch_and_of_their_values():
    noise = measure("val_loss", {0: (0.30, {1: 0.32, 2: 0.30}), 1: (0.28, {1: 0.36, 2: 0.28})}, widths=2.0)
    assert noise.per_epoch[1] == pytest.approx(np.std([0.32, 0.36], ddof=1))
    assert noise.per_epoch[2] == pytest.approx(abs(0.30 - 0.28) / np.sqrt(2))
    assert noise.final_sd == pytest.approx(np.std([0.30, 0.28], ddof=1))
    assert noise.pooled_sd == pytest.approx(np.sqrt((noise.per_epoch[1] ** 2 + noise.per_epoch[2] ** 2) / 2))
    # Epoch 1's sd (0.028) is above the pooled one: its own; epoch 2's (0.014) is below: the pooled.
    assert noise.band(1) == pytest.approx(2 * noise.per_epoch[1])
    assert noise.band(2) == pytest.approx(2 * noise.pooled_sd)
    assert noise.band(2) > 2 * noise.per_epoch[2]
    assert noise.final_band == pytest.approx(2 * noise.pooled_sd)
    assert noise.repeats == [0, 1]


def test_a_near_tie_of_two_repeats_does_not_shrink_the_band_to_nothing():
    noise = measure("val_loss", {0: (0.2585, {1: 0.2787, 2: 0.2585}), 1: (0.2586, {1: 0.2839, 2: 0.2586})}, widths=2.0)
    assert noise.per_epoch[2] == pytest.approx(0.0001 / np.sqrt(2))
    assert noise.band(2) == pytest.approx(2 * noise.pooled_sd) and noise.band(2) > 0.005


def test_an_epoch_only_one_repeat_reached_is_not_measured_and_later_epochs_use_the_last_measured():
    # Repeat 1 stopped after one epoch (the sweep's timeout): epoch 2 has one value only.
    noise = measure("val_loss", {0: (0.30, {1: 0.33, 2: 0.30}), 1: (0.31, {1: 0.31})}, widths=1.0)
    assert set(noise.per_epoch) == {1}
    assert noise.at(2) == noise.at(5) == noise.per_epoch[1] == noise.pooled_sd


def test_fewer_than_two_repeats_measure_nothing():
    assert measure("val_loss", {0: (0.3, {1: 0.3})}, widths=2.0) is None
    assert measure("val_loss", {}, widths=2.0) is None


def test_the_estimate_survives_the_study_storage_round_trip():
    noise = measure("val_auc", {3: (0.95, {1: 0.94, 2: 0.95}), 4: (0.96, {1: 0.95, 2: 0.96})}, widths=2.0)
    assert SeedNoise.from_dict(noise.to_dict()) == noise
    flat = noise.flat()
    assert flat["seed_noise_sd"] == noise.value_sd and flat["seed_noise_sd_epoch_2"] == noise.per_epoch[2]
    assert "trials 3, 4" in noise.describe() and "val_auc" in noise.describe()
