"""The synthetic Earth: deterministic, physically consistent, and written in the real raw formats."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from somojax import constants as C
from somojax import stores
from somojax.config import load_config
from somojax.synth import earth, simulate, soil, stations


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory):
    return load_config("tiny", [f"workdir={tmp_path_factory.mktemp('synth')}/run"])


@pytest.fixture(scope="module")
def sim(tiny_cfg):
    return simulate(tiny_cfg)


@pytest.fixture(scope="module")
def written(tiny_cfg):
    earth.generate(tiny_cfg)
    return tiny_cfg


def test_deterministic_for_a_seed(tiny_cfg, sim):
    again = simulate(tiny_cfg)
    np.testing.assert_array_equal(again["truth"], sim["truth"])
    np.testing.assert_array_equal(again["swvl"]["swvl2"], sim["swvl"]["swvl2"])
    assert [len(s.times) for s in again["sensors"]] == [len(s.times) for s in sim["sensors"]]
    other = simulate(load_config("tiny", ["synth.seed=1"]))
    assert not np.allclose(np.nan_to_num(other["truth"]), np.nan_to_num(sim["truth"]))


def _rand_params(rng, n_layers=3, n_cells=5):
    poro = rng.uniform(0.35, 0.5, (n_layers, n_cells))
    return soil.SoilParams(
        thickness=np.array([100.0, 200.0, 300.0][:n_layers]),
        porosity=poro,
        field_capacity=poro * 0.7,
        wilting_point=poro * 0.25,
        drainage=rng.uniform(0.05, 0.4, (n_layers, n_cells)),
        roots=np.full((n_layers, n_cells), 1.0 / n_layers),
    )


def test_bucket_model_conserves_water_and_stays_bounded():
    rng = np.random.default_rng(0)
    nd, nc = 400, 5
    p = _rand_params(rng)
    precip = np.where(rng.random((nd, nc)) < 0.3, rng.gamma(0.8, 20.0, (nd, nc)), 0.0)
    t2m = 270.0 + 20 * rng.random((nd, nc))
    rn = rng.uniform(-2.0, 15.0, (nd, nc))
    out = soil.run(p, precip, t2m, rn)
    s = np.concatenate([out.initial[None], out.storage]).astype(np.float64)
    delta = np.diff(s, axis=0)
    np.testing.assert_allclose(delta, out.inflow - out.outflow - out.et, atol=1e-9)
    np.testing.assert_allclose(out.inflow[:, 1:], out.outflow[:, :-1], atol=0)
    np.testing.assert_allclose(out.inflow[:, 0], out.infiltration)
    assert np.all(out.theta >= 0) and np.all(out.theta <= p.porosity[None] + 1e-12)
    assert np.all(out.et >= 0) and np.all(out.runoff >= 0) and np.all(out.outflow >= 0)


def test_bucket_model_one_day_by_hand():
    # one layer of 100 mm, porosity 0.4 (40 mm), fc 0.3 (30 mm), wp 0.1 (10 mm), k = 0.5 / day,
    # start at 35 mm; 10 mm of rain at 283.15 K, Rn = 4.9 MJ -> PET = 0.8 * 4.9 / 2.45 * 1 = 1.6 mm
    p = soil.SoilParams(
        thickness=np.array([100.0]),
        porosity=np.array([[0.4]]),
        field_capacity=np.array([[0.3]]),
        wilting_point=np.array([[0.1]]),
        drainage=np.array([[0.5]]),
        roots=np.array([[1.0]]),
    )
    out = soil.run(p, np.array([[10.0]]), np.array([[283.15]]), np.array([[4.9]]), initial=np.array([[35.0]]))
    runoff = 10.0 * (35.0 / 40.0) ** 3  # saturation excess
    s = 35.0 + 10.0 - runoff  # 44.33 > 40: overflow leaves the column
    over = max(s - 40.0, 0.0)
    s -= over
    q = 0.5 * (s - 30.0)
    s -= q
    beta = min(max((s - 10.0) / 20.0, 0.0), 1.0)
    e = 0.8 * 4.9 / 2.45 * 1.0 * beta
    s -= e
    assert out.runoff[0, 0] == pytest.approx(runoff)
    assert out.outflow[0, 0, 0] == pytest.approx(over + q)
    assert out.storage[0, 0, 0] == pytest.approx(s)


def test_sensor_depth_weights():
    np.testing.assert_allclose(stations.sensor_truth_weights(0.05, 0.05), [1, 0, 0])
    np.testing.assert_allclose(stations.sensor_truth_weights(0.10, 0.10), [1, 0, 0])  # boundary: upper
    np.testing.assert_allclose(stations.sensor_truth_weights(0.30, 0.30), [0, 1, 0])
    np.testing.assert_allclose(stations.sensor_truth_weights(0.50, 0.50), [0, 0, 1])
    np.testing.assert_allclose(stations.sensor_truth_weights(0.0, 0.19), [10 / 19, 9 / 19, 0])


def test_stations_observe_the_truth_through_their_calibration(sim):
    truth, days = sim["truth"], sim["days"]
    for s in sim["sensors"][:8]:
        w = stations.sensor_truth_weights(s.depth_from, s.depth_to)
        d = days.get_indexer(s.times.normalize())
        want = s.offset + s.scale * (truth[d, :, s.cell_row, s.cell_col] @ w)
        np.testing.assert_allclose(s.clean, want, atol=1e-12)
        good = s.flags == "G"
        assert np.all(np.abs(s.values[good] - s.clean[good]) < 0.035)  # noise 0.006 + diurnal 0.002
        assert np.all(s.values[s.flags == "C01"] < 0)
        poro = sim["statics"].poro_top[s.cell_row, s.cell_col]
        assert np.all(s.values[s.flags == "C03"] > poro)
        assert np.all(s.values[s.flags == "D03"] > s.clean[s.flags == "D03"] + 0.05)
    flags = np.concatenate([s.flags for s in sim["sensors"]])
    assert {"G", "C01", "C03", "D03", "U"} <= set(flags)


def test_reanalysis_is_a_degraded_truth(sim):
    """ERA5-like L1 (depth-weighted swvl1/2) follows the truth but misses part of its day-to-day dynamics."""
    land = sim["statics"].land
    era_l1 = (7 * sim["swvl"]["swvl1"] + 3 * sim["swvl"]["swvl2"]) / 10
    true_l1 = sim["truth"][:, 0]

    def anomalies(x):
        return x - pd.Series(x).rolling(35, center=True, min_periods=10).mean().values

    r = [np.corrcoef(anomalies(era_l1[:, i, j]), anomalies(true_l1[:, i, j]))[0, 1] for i, j in np.argwhere(land)]
    med = np.nanmedian(r)
    assert 0.3 < med < 0.9, med


def test_era5_files_have_the_cds_layout(written, sim):
    ds = xr.open_dataset(written.raw_dir / "era5" / "era5_2000.nc")
    assert ds["tp"].dims == ("valid_time", "latitude", "longitude")
    assert np.all(np.diff(ds.latitude) < 0)  # descending, as the CDS delivers
    assert ds.longitude.min() >= 0 and ds.longitude.max() < 360
    assert np.allclose(np.mod(ds.latitude * 4, 1), 0) and np.allclose(np.mod(ds.longitude * 4, 1), 0)  # native points
    units = {v: ds[v].attrs["units"] for v in ("tp", "t2m", "d2m", "sp", "ssr", "str", "ssrd", "skt", "swvl1")}
    assert units == {
        "tp": "m",
        "t2m": "K",
        "d2m": "K",
        "sp": "Pa",
        "ssr": "J m**-2",
        "str": "J m**-2",
        "ssrd": "J m**-2",
        "skt": "K",
        "swvl1": "m**3 m**-3",
    }
    assert ds["tp"].attrs["cell_methods"] == "valid_time: sum"
    # the mean of a cell's four corners is the [1 2 1]/4-smoothed cell field of the reanalysis weather
    w = sim["era5_weather"]
    sel = w.days.year == 2000
    cell = w.tp[sel] / 1000.0
    corners = ds["tp"].values[:, ::-1, :]  # latitude ascending again
    lon_order = np.argsort(np.mod(sim["region"].west + 0.25 * np.arange(corners.shape[2]), 360.0))
    corners = corners[:, :, np.argsort(lon_order)]
    four = 0.25 * (corners[:, :-1, :-1] + corners[:, 1:, :-1] + corners[:, :-1, 1:] + corners[:, 1:, 1:])
    p = np.pad(cell, [(0, 0), (1, 1), (1, 1)], mode="edge")
    k = np.array([1.0, 2.0, 1.0]) / 4
    sm = sum(k[a] * k[b] * p[:, a : a + cell.shape[1], b : b + cell.shape[2]] for a in range(3) for b in range(3))
    np.testing.assert_allclose(four, sm, rtol=1e-5, atol=1e-9)


def test_ismn_package_reads_the_archive(written, sim):
    from ismn.filehandlers import DataFile

    files = sorted((written.raw_dir / "ismn").rglob("*.stm"))
    assert len(files) == len([s for s in sim["sensors"] if len(s.times)])
    by_name = {stations.ismn_filename(s): s for s in sim["sensors"]}
    for f in files[:4]:
        df = DataFile(f.parent, f.name)
        s = by_name[f.name]
        meta = {m.name: m for m in df.metadata}
        assert meta["latitude"].val == pytest.approx(s.lat, abs=1e-5)
        assert meta["longitude"].val == pytest.approx(s.lon, abs=1e-5)
        assert meta["instrument"].depth.start == pytest.approx(s.depth_from)
        assert meta["instrument"].depth.end == pytest.approx(s.depth_to)
        data = df.read_data()
        np.testing.assert_allclose(data["soil_moisture"].values, np.round(s.values, 4), atol=1e-9)
        assert list(data["soil_moisture_flag"].values) == list(s.flags)
        assert (data.index == s.times).all()


def test_truth_store_and_statics(written, sim):
    t = stores.open_store(written.store_dir, "truth")
    land = sim["statics"].land
    v = t[C.SM_TRUE].values
    assert np.isnan(v[:, :, ~land]).all() and np.isfinite(v[:, :, land]).all()
    assert t[C.SM_TRUE].attrs["units"] == "m3 m-3"
    etopo = xr.open_dataset(written.raw_dir / "static" / "etopo1_1arcmin.nc")
    ny, nx = land.shape
    assert etopo["Band1"].shape == (ny * 15 + 1, nx * 15 + 1)
    mask = xr.open_dataset(written.raw_dir / "static" / "GLDASp4_landmask_025d.nc4")["GLDAS_mask"].values[0]
    np.testing.assert_array_equal(mask == 1, land)
    assert (~land).sum() > 0  # water cells exist, so land masking matters


@pytest.mark.parametrize(
    "override, message",
    [
        ("synth.hours_per_obs=5", "must divide 24"),
        ("synth.lat_range=[42.0, 40.0]", "first edge must be smaller"),
        ("synth.lat_range=[40.1, 42.0]", "not on the 0.25° grid"),
        ("synth.station_start=1990-01-01", "must lie within"),
    ],
)
def test_bad_synth_settings_are_clear_errors(override, message):
    from somojax.errors import SomojaxError

    with pytest.raises(SomojaxError, match=message):
        simulate(load_config("tiny", [override]))
