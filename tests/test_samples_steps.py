"""The steps of `layer_inputs` (somojax/data/samples.py) on their own: the day masks of the
train/validation split and the training period the statistics come from."""

import numpy as np
import pandas as pd

from somojax.config import load_config
from somojax.data import samples

DAYS = pd.date_range("2000-01-01", "2001-12-31", freq="D")


def _split(*overrides):
    cfg = load_config("tiny", ["data.target_start=2000-04-01", "data.target_end=2001-06-30", *overrides])
    return samples._split_days(cfg, DAYS)


def test_cell_split_trains_and_validates_on_the_whole_target_period():
    s = _split("data.split=cell")
    in_target = (DAYS >= "2000-04-01") & (DAYS <= "2001-06-30")
    np.testing.assert_array_equal(s.in_target, in_target)
    np.testing.assert_array_equal(s.train, in_target)
    np.testing.assert_array_equal(s.val, in_target)
    assert s.period == ("2000-04-01", "2001-06-30")
    np.testing.assert_array_equal(s.in_period, in_target)


def test_period_split_holds_the_validation_period_out_of_training_and_statistics():
    s = _split("data.split=period", "data.val_start=2000-04-01", "data.val_end=2000-06-30")
    assert DAYS[s.val][0] == pd.Timestamp("2000-04-01") and DAYS[s.val][-1] == pd.Timestamp("2000-06-30")
    assert DAYS[s.train][0] == pd.Timestamp("2000-07-01") and DAYS[s.train][-1] == pd.Timestamp("2001-06-30")
    assert not (s.train & s.val).any() and ((s.train | s.val) == s.in_target).all()
    assert s.period == ("2000-07-01", "2001-06-30")
    np.testing.assert_array_equal(s.in_period, s.train)


def test_period_split_without_training_days_takes_statistics_over_the_target_period():
    s = _split("data.split=period", "data.val_start=2000-04-01", "data.val_end=2001-06-30")
    assert not s.train.any() and (s.val == s.in_target).all()
    assert s.period == ("2000-04-01", "2001-06-30")
    np.testing.assert_array_equal(s.in_period, s.in_target)
