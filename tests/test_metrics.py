"""Skill metrics against values computed by hand / in plain Python float64."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from somojax.errors import ConfigError
from somojax.evaluate import metrics as M


def _da(values, start="2001-01-01"):
    v = np.asarray(values, np.float64)
    t = pd.date_range(start, periods=v.shape[-1], freq="D")
    return xr.DataArray(v, dims=("time",), coords={"time": t})


# --- plain Python references (lists of floats, no numpy) --------------------------------
def _pairs(o, s):
    return [(a, b) for a, b in zip(o, s) if not (math.isnan(a) or math.isnan(b))]


def _py_mean(x):
    return sum(x) / len(x)


def _py_r(o, s):
    p = _pairs(o, s)
    oo, ss = [a for a, _ in p], [b for _, b in p]
    mo, ms = _py_mean(oo), _py_mean(ss)
    cov = sum((a - mo) * (b - ms) for a, b in p)
    return cov / math.sqrt(sum((a - mo) ** 2 for a in oo) * sum((b - ms) ** 2 for b in ss))


def _py_anom(x, half, min_count):
    out = []
    for d, xd in enumerate(x):
        win = [v for v in x[max(0, d - half) : d + half + 1] if not math.isnan(v)]
        out.append(xd - sum(win) / len(win) if (not math.isnan(xd) and len(win) >= min_count) else math.nan)
    return out


# --- hand-computed values ----------------------------------------------------------------
def test_basic_metrics_hand_computed():
    o = _da([1.0, 2.0, 3.0, np.nan, 4.0])
    s = _da([2.0, 2.0, 4.0, 9.0, np.nan])
    # pair-wise complete days: (1,2), (2,2), (3,4); ō = 2, s̄ = 8/3
    # errors 1, 0, 1 -> RMSE = sqrt(2/3)
    assert M.n_days(o, s).item() == 3
    assert M.rmse(o, s).item() == pytest.approx(math.sqrt(2 / 3), rel=1e-14)
    assert M.nrmse(o, s).item() == pytest.approx(math.sqrt(2 / 3) / 2, rel=1e-14)
    assert M.rel_bias(o, s).item() == pytest.approx((8 / 3 - 2) / 2, rel=1e-14)
    # r: do = (-1, 0, 1), ds = (-2/3, -2/3, 4/3); cov sum = 2/3 + 4/3 = 2; Σdo² = 2; Σds² = 4/9+4/9+16/9 = 24/9
    assert M.pearson_r(o, s).item() == pytest.approx(2 / math.sqrt(2 * 24 / 9), rel=1e-14)
    # ubRMSE: d = (1, 0, 1), mean 2/3 -> centred (1/3, -2/3, 1/3), mean square = (1+4+1)/27 = 2/9
    assert M.ubrmse(o, s).item() == pytest.approx(math.sqrt(2 / 9), rel=1e-14)
    # identity RMSE² = bias² + ubRMSE²
    assert M.rmse(o, s).item() ** 2 == pytest.approx((2 / 3) ** 2 + 2 / 9, rel=1e-14)
    # KGE: r as above, α = sqrt(24/27)/sqrt(2/3) = sqrt(4/3), β = (8/3)/2 = 4/3
    r = 2 / math.sqrt(2 * 24 / 9)
    alpha, beta = math.sqrt((24 / 27) / (2 / 3)), 4 / 3
    assert M.kge(o, s).item() == pytest.approx(
        1 - math.sqrt((r - 1) ** 2 + (alpha - 1) ** 2 + (beta - 1) ** 2), rel=1e-14
    )


def test_perfect_and_random_series_against_python():
    rng = np.random.default_rng(3)
    o = rng.uniform(0.1, 0.4, 200)
    s = o + rng.normal(0, 0.05, 200)
    o[rng.random(200) < 0.2] = np.nan
    s[rng.random(200) < 0.1] = np.nan
    oo, ss = _da(o), _da(s)
    p = _pairs(list(o), list(s))
    mo, ms = _py_mean([a for a, _ in p]), _py_mean([b for _, b in p])
    rm = math.sqrt(_py_mean([(b - a) ** 2 for a, b in p]))
    assert M.nrmse(oo, ss).item() == pytest.approx(rm / mo, rel=1e-12)
    assert M.rel_bias(oo, ss).item() == pytest.approx((ms - mo) / mo, rel=1e-12)
    assert M.pearson_r(oo, ss).item() == pytest.approx(_py_r(list(o), list(s)), rel=1e-12)
    assert M.pearson_r(oo, oo).item() == pytest.approx(1.0, abs=1e-14)
    assert M.kge(oo, oo).item() == pytest.approx(1.0, abs=1e-14)
    assert M.ubrmse(oo, oo + 0.1).item() == pytest.approx(0.0, abs=1e-12)


def test_metrics_broadcast_over_cells_and_layers():
    rng = np.random.default_rng(0)
    o = xr.DataArray(rng.uniform(0.1, 0.4, (2, 3, 50)), dims=("layer", "cell", "time"))
    s = o + xr.DataArray(rng.normal(0, 0.03, (2, 3, 50)), dims=("layer", "cell", "time"))
    r = M.pearson_r(o, s)
    assert r.dims == ("layer", "cell")
    for i in range(2):
        for j in range(3):
            assert r[i, j].item() == pytest.approx(_py_r(list(o[i, j].values), list(s[i, j].values)), rel=1e-12)


def test_all_nan_and_degenerate_cases_give_nan_without_warnings():
    o_nan = _da([np.nan] * 40)
    s = _da(np.linspace(0.1, 0.3, 40))
    const = _da([0.2] * 40)
    one = _da([0.2] + [np.nan] * 39)
    zeros = _da([0.0] * 40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = M.score(o_nan, s)
        for k in M.METRICS:
            assert np.isnan(ds[k].item()), k
        assert ds["n_days"].item() == 0
        assert np.isnan(M.pearson_r(const, s).item())  # constant observations
        assert np.isnan(M.kge(const, s).item())
        assert np.isnan(M.pearson_r(one, s).item())  # one day only
        assert M.nrmse(one, s).item() == pytest.approx(abs(0.1 - 0.2) / 0.2)
        assert np.isnan(M.nrmse(zeros, s).item())  # mean of observations is 0
        assert np.isnan(M.rel_bias(zeros, s).item())
        assert np.isnan(M.anomaly_correlation(o_nan, s).item())
        assert np.all(np.isnan(M.anomalies(o_nan).values))


# --- anomalies ---------------------------------------------------------------------------
def test_anomalies_match_python_including_edges_and_gaps():
    rng = np.random.default_rng(1)
    x = rng.uniform(0.1, 0.4, 120)
    x[rng.random(120) < 0.45] = np.nan
    got = M.anomalies(_da(x), 35, 10).values
    want = np.array(_py_anom(list(x), 17, 10))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=0, atol=1e-14)
    assert np.isfinite(got).sum() > 20  # the test would be empty otherwise


def test_anomaly_window_edges_hand_computed():
    x = np.arange(1.0, 41.0)  # 40 complete days, values 1..40
    a = M.anomalies(_da(x), 35, 10).values
    # day 0: window days 0..17 (18 values 1..18, mean 9.5) -> 1 − 9.5
    assert a[0] == pytest.approx(1 - 9.5, abs=1e-13)
    # day 17: window 0..34 (values 1..35, mean 18) -> 0
    assert a[17] == pytest.approx(0.0, abs=1e-13)
    # day 39 (last): window 22..39 (values 23..40, mean 31.5) -> 40 − 31.5
    assert a[39] == pytest.approx(40 - 31.5, abs=1e-13)
    # day 20: window 3..37, full 35 days, values 4..38, mean 21 -> 0
    assert a[20] == pytest.approx(0.0, abs=1e-13)


def test_anomaly_window_with_exactly_9_and_10_values():
    # 60 days; only 10 values inside the window of day 30 (days 13..47): days 20..29 and day 30 itself ...
    x = np.full(60, np.nan)
    x[[21, 23, 25, 27, 29, 30, 33, 36, 40, 47]] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    a = M.anomalies(_da(x), 35, 10).values
    # window of day 30 = days 13..47 holds all 10 values (mean 5.5) -> 6 − 5.5
    assert a[30] == pytest.approx(0.5, abs=1e-14)
    # day 29: window 12..46 holds 9 values (day 47 falls out) -> NaN
    assert np.isnan(a[29])
    # day 21: window 4..38 holds 8 values -> NaN; day 33: window 16..50 holds 10 -> mean 5.5
    assert np.isnan(a[21])
    assert a[33] == pytest.approx(7 - 5.5, abs=1e-14)
    # with min_count 9, day 29 is defined: values 1..9 mean 5 -> 5 − 5 = 0
    assert M.anomalies(_da(x), 35, 9).values[29] == pytest.approx(0.0, abs=1e-14)
    # missing day itself -> NaN even with a full window
    assert np.isnan(a[31])


def test_anomaly_window_at_the_first_days_with_9_and_10_values():
    # day 0's window is days 0..17 only; 10 values there define it, 9 do not
    x = np.full(30, np.nan)
    x[:10] = np.arange(10.0)
    a = M.anomalies(_da(x), 35, 10).values
    assert a[0] == pytest.approx(0 - 4.5, abs=1e-14)
    x9 = x.copy()
    x9[9] = np.nan
    assert np.isnan(M.anomalies(_da(x9), 35, 10).values[0])


def test_anomaly_window_configurable():
    x = np.arange(1.0, 21.0)
    a = M.anomalies(_da(x), 5, 3).values  # window [d−2, d+2]
    assert a[0] == pytest.approx(1 - 2.0)  # days 0..2 -> 3 values, mean 2
    assert a[10] == pytest.approx(0.0)
    with pytest.raises(ConfigError, match="odd"):
        M.anomalies(_da(x), 34, 10)
    with pytest.raises(ConfigError, match="anomaly_min_count"):
        M.anomalies(_da(x), 5, 6)


def test_anomaly_correlation_uses_pairwise_days_for_both_series():
    rng = np.random.default_rng(2)
    n = 150
    o = rng.uniform(0.1, 0.4, n)
    s = 0.8 * o + rng.normal(0, 0.03, n) + 0.05
    o[rng.random(n) < 0.3] = np.nan  # observation gaps
    s[rng.random(n) < 0.05] = np.nan
    oo, ss = list(o), list(s)
    both = [not (math.isnan(a) or math.isnan(b)) for a, b in zip(oo, ss)]
    om = [a if k else math.nan for a, k in zip(oo, both)]
    sm = [b if k else math.nan for b, k in zip(ss, both)]
    want = _py_r(_py_anom(om, 17, 10), _py_anom(sm, 17, 10))
    assert M.anomaly_correlation(_da(o), _da(s), 35, 10).item() == pytest.approx(want, rel=1e-12)
    # the result differs from computing the simulation's anomalies on all its days
    s_all = _py_anom(ss, 17, 10)
    assert not math.isclose(_py_r(_py_anom(om, 17, 10), s_all), want, rel_tol=1e-9)


def test_anomalies_reject_irregular_time_axis():
    x = _da(np.arange(10.0)).isel(time=[0, 1, 2, 4, 5])
    with pytest.raises(ValueError, match="consecutive days"):
        M.anomalies(x)


def test_anomalies_lazy_with_dask_chunks():
    rng = np.random.default_rng(5)
    x = xr.DataArray(rng.uniform(size=(4, 90)), dims=("cell", "time")).chunk({"cell": 2, "time": 30})
    got = M.anomalies(x).compute().values
    want = np.array([_py_anom(list(row), 17, 10) for row in x.values])
    np.testing.assert_allclose(got, want, atol=1e-13)


def test_score_dataset_has_all_metrics_with_attrs():
    o = _da(np.linspace(0.1, 0.3, 60))
    s = o * 1.1
    ds = M.score(o, s)
    assert set(M.METRICS) | {"n_days"} == set(ds.data_vars)
    assert ds["rel_bias"].item() == pytest.approx(0.1, rel=1e-12)
    assert ds["r"].item() == pytest.approx(1.0, abs=1e-12)
    assert ds["nrmse"].attrs["long_name"] == "NRMSE"
