"""The evaluation's steps alone, on a tiny hand-made dataset: scoring (`runner.score`) and the
tables (`runner.write_tables`), without stores, figures or the report.

Six cells in Europe, 120 days. The targets are a season plus smooth short-term variations; the
cross-validated series and ERA5 are the targets plus white noise of a chosen size per layer and
cell, so which dataset wins in which cell is known:

- L1: somojax* is close to the targets in every cell (it beats ERA5); cell 5 has no L1 target;
- L2: somojax* is close in 2 of 6 cells only, much noisier than ERA5 in the others (no verdict of
  a win: lower median, better in a minority of cells);
- L3: no somojax* values (no common cell, no verdict).
"""

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from somojax import constants as C
from somojax.config import EvaluateConfig
from somojax.evaluate import runner

N_CELLS, N_DAYS = 6, 120
CELLS = np.arange(1000, 1000 + N_CELLS)
DAYS = pd.date_range("2001-03-01", periods=N_DAYS, freq="D")
OURS_NOISE = {"L1": [0.002] * N_CELLS, "L2": [0.002, 0.002, 0.04, 0.04, 0.04, 0.04]}
ERA5_NOISE = 0.015


def _da(values: np.ndarray) -> xr.DataArray:
    return xr.DataArray(
        values.astype(np.float32),
        dims=(C.LAYER, C.CELL, C.TIME),
        coords={C.LAYER: list(C.LAYERS), C.CELL: CELLS, C.TIME: DAYS},
    )


def _aligned() -> runner.Aligned:
    rng = np.random.default_rng(3)
    shape = (len(C.LAYERS), N_CELLS, N_DAYS)
    walk = np.cumsum(rng.normal(0, 1, shape), -1).reshape(-1, N_DAYS)
    # short-term variations: a random walk less its 15-day running mean
    short = (walk - np.stack([np.convolve(x, np.ones(15) / 15, "same") for x in walk])).reshape(shape)
    signal = 0.25 + 0.05 * np.sin(2 * np.pi * np.arange(N_DAYS) / 365.25) + 0.02 * short / short.std()
    obs = np.where(rng.random(shape) < 0.2, np.nan, signal)
    obs[0, 5] = np.nan  # cell 5 has no L1 target
    ours = np.full(shape, np.nan)
    for k, layer in enumerate(("L1", "L2")):
        ours[k] = signal[k] + rng.normal(0, 1, (N_CELLS, N_DAYS)) * np.array(OURS_NOISE[layer])[:, None]
    ours[:2, :, 50:60] = np.nan  # a gap of somojax* only
    era = np.where(rng.random(shape) < 0.1, np.nan, signal + rng.normal(0, ERA5_NOISE, shape))
    series = {runner.OURS: _da(ours), runner.BASELINE: _da(era)}
    lat = 48.125 + 0.25 * np.arange(N_CELLS)
    lon = np.full(N_CELLS, 2.125)
    return runner.Aligned((DAYS[0], DAYS[-1]), CELLS, lat, lon, _da(obs), series, [], [], ours=series[runner.OURS])


def _np_anomalies(x: np.ndarray, half: int = 17, min_count: int = 10) -> np.ndarray:
    out = np.full(x.shape, np.nan)
    for d in range(x.size):
        w = x[max(0, d - half) : d + half + 1]
        w = w[np.isfinite(w)]
        if np.isfinite(x[d]) and w.size >= min_count:
            out[d] = x[d] - w.mean()
    return out


def _np_metrics(o: np.ndarray, s: np.ndarray) -> dict[str, float]:
    """The metrics of one series in plain NumPy float64, on the pair-wise complete days."""
    o, s = np.asarray(o, np.float64), np.asarray(s, np.float64)
    ok = np.isfinite(o) & np.isfinite(s)
    ao, as_ = _np_anomalies(np.where(ok, o, np.nan)), _np_anomalies(np.where(ok, s, np.nan))
    both = np.isfinite(ao) & np.isfinite(as_)
    return {
        "n_days": int(ok.sum()),
        "r": float(np.corrcoef(o[ok], s[ok])[0, 1]),
        "nrmse": float(np.sqrt(np.mean((s[ok] - o[ok]) ** 2)) / np.mean(o[ok])),
        "rel_bias": float((s[ok].mean() - o[ok].mean()) / o[ok].mean()),
        "anomaly_r": float(np.corrcoef(ao[both], as_[both])[0, 1]),
    }


@pytest.fixture(scope="module")
def scored():
    al = _aligned()
    return al, runner.score(EvaluateConfig(), al, None, None)


def test_score_matches_numpy_per_cell(scored):
    al, sc = scored
    t = sc.table.set_index(["dataset", C.LAYER, C.CELL])
    for name in (runner.OURS, runner.BASELINE):
        for layer in ("L1", "L2"):
            for c in CELLS[:5]:
                o = al.obs.sel({C.LAYER: layer, C.CELL: c}).values
                want = _np_metrics(o, al.series[name].sel({C.LAYER: layer, C.CELL: c}).values)
                row = t.loc[(name, layer, c)]
                assert row["n_days"] == want["n_days"]
                for m in ("r", "nrmse", "rel_bias", "anomaly_r"):
                    assert row[m] == pytest.approx(want[m], rel=1e-9), (name, layer, c, m)
    # rows only where the layer has a target: not cell 5 in L1
    assert (runner.OURS, "L1", CELLS[5]) not in t.index and (runner.OURS, "L2", CELLS[5]) in t.index
    assert len(sc.table) == 2 * (3 * N_CELLS - 1)
    assert set(sc.table["continent"]) == {"Europe"}
    n_obs = np.isfinite(al.obs.values).sum(-1)
    np.testing.assert_array_equal(sc.obs_days.values, n_obs)


def test_common_days_scores_every_dataset_on_the_days_all_have(scored):
    al, _ = scored
    sc = runner.score(EvaluateConfig(common_days=True), al, None, None)
    o = al.obs.sel({C.LAYER: "L2", C.CELL: CELLS[0]}).values
    s = [al.series[n].sel({C.LAYER: "L2", C.CELL: CELLS[0]}).values for n in (runner.OURS, runner.BASELINE)]
    common = np.isfinite(o) & np.isfinite(s[0]) & np.isfinite(s[1])
    n = sc.scores["n_days"].sel({C.LAYER: "L2", C.CELL: CELLS[0]})
    assert n.sel(dataset=runner.OURS) == n.sel(dataset=runner.BASELINE) == common.sum()
    want = _np_metrics(np.where(common, o, np.nan), s[1])
    assert float(sc.scores["r"].sel(dataset=runner.BASELINE, layer="L2", cell=CELLS[0])) == pytest.approx(
        want["r"], rel=1e-9
    )


def test_verdicts_follow_the_cells_where_somojax_is_better(scored):
    al, sc = scored
    v = {x["layer"]: x for x in sc.verdicts}
    assert list(v) == list(C.LAYERS)
    for layer, n_cells in (("L1", 5), ("L2", N_CELLS)):
        a, b = (
            np.array(
                [
                    _np_metrics(
                        al.obs.sel({C.LAYER: layer, C.CELL: c}).values,
                        al.series[name].sel({C.LAYER: layer, C.CELL: c}).values,
                    )["anomaly_r"]
                    for c in CELLS[:n_cells]
                ]
            )
            for name in (runner.OURS, runner.BASELINE)
        )
        assert v[layer]["n_cells"] == n_cells
        assert v[layer]["median_ours"] == pytest.approx(np.median(a), rel=1e-9)
        assert v[layer]["median_baseline"] == pytest.approx(np.median(b), rel=1e-9)
        assert v[layer]["share_better"] == pytest.approx(np.mean(a > b))
    assert v["L1"]["beats"] is True and v["L1"]["share_better"] == 1.0
    assert v["L2"]["beats"] is False and v["L2"]["median_better"] is False
    assert v["L2"]["share_better"] == pytest.approx(2 / 6)
    assert v["L3"]["beats"] is None and v["L3"]["n_cells"] == 0 and "no verdict" in v["L3"]["sentence"]
    # without the cross-validated series there is nothing to judge
    al_without = _aligned()
    al_without.ours = None
    assert runner.score(EvaluateConfig(), al_without, None, None).verdicts == []


def test_write_tables_writes_what_was_scored(scored, tmp_path):
    al, sc = scored
    runner.write_tables(tmp_path, al, sc)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "metrics_cells.csv",
        "metrics_cells.nc",
        "summary.csv",
        "summary_by_group.csv",
        "verdicts.json",
    ]
    table = pd.read_csv(tmp_path / "metrics_cells.csv")
    pd.testing.assert_frame_equal(table, sc.table, check_dtype=False)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "summary.csv"), sc.summaries["all"], check_dtype=False)
    groups = pd.read_csv(tmp_path / "summary_by_group.csv")
    assert set(groups["group_by"]) == {"continent", "aridity", "temperature", "climate"}
    assert set(groups[groups.group_by == "continent"]["group"]) == {"Europe"}
    assert set(groups[groups.group_by == "aridity"]["group"]) == {"unknown"}  # no statics given
    verdicts = json.loads((tmp_path / "verdicts.json").read_text())
    assert [(x["layer"], x["beats"]) for x in verdicts] == [("L1", True), ("L2", False), ("L3", None)]
    assert verdicts[0]["median_ours"] == sc.verdicts[0]["median_ours"]
    with xr.open_dataset(tmp_path / "metrics_cells.nc") as nc:
        assert nc["anomaly_r"].dims == ("dataset", C.LAYER, C.CELL)
        np.testing.assert_array_equal(nc["anomaly_r"].values, sc.scores["anomaly_r"].values)
        np.testing.assert_array_equal(nc["n_obs_days"].values, sc.obs_days.values)
        assert list(nc["continent"].values) == ["Europe"] * N_CELLS
        assert nc.attrs["period"] == f"{DAYS[0].date()}..{DAYS[-1].date()}"
        assert nc.attrs["datasets"] == "somojax*, ERA5"
