"""Daily forcing builder: formulas, UTC days, accumulations, cell centres, laziness."""

from __future__ import annotations

import math

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from somojax import constants as C
from somojax.errors import InputDataError
from somojax.prepare.forcings import (
    aridity,
    build_forcings,
    daily,
    era5_layer_weights,
    log_precip,
    long_term_statics,
    net_radiation_mj,
    specific_humidity,
    to_cell_centres,
    vapour_pressure,
)

from test_prepare_factory import era5_dataset, era5_points


# ---------------------------------------------------------------------------- formulas
def test_vapour_pressure_and_specific_humidity_hand_computed():
    assert vapour_pressure(273.16) == pytest.approx(611.21, rel=1e-12)  # exp(0) = 1
    # Td = 293.16 K: e = 611.21 exp(17.502 * 20 / 260.97)
    e = 611.21 * math.exp(17.502 * 20.0 / (293.16 - 32.19))
    assert e == pytest.approx(2336.9, abs=0.5)  # ~23.4 hPa at a 20 °C dew point
    assert vapour_pressure(293.16) == pytest.approx(e, rel=1e-12)
    q = 0.622 * e / (100000.0 - 0.378 * e)
    assert q == pytest.approx(0.014667, abs=5e-6)  # 0.622·2336.9 / (100000 − 0.378·2336.9)
    assert specific_humidity(293.16, 100000.0) == pytest.approx(q, rel=1e-12)
    assert specific_humidity(273.16, 85000.0) == pytest.approx(0.622 * 611.21 / (85000.0 - 0.378 * 611.21), rel=1e-12)


def test_precip_radiation_aridity_hand_computed():
    assert log_precip(4.0) == pytest.approx(math.log(5.0))
    assert log_precip(0.0) == 0.0
    # 20 MJ of net shortwave, -6 MJ of net longwave (J m-2) -> 14 MJ m-2 day-1
    assert net_radiation_mj(20e6, -6e6) == pytest.approx(14.0)
    # 4.9 MJ m-2 day-1 = 2 mm day-1 of evaporation; over 4 mm day-1 of rain -> 0.5
    assert aridity(4.9, 4.0, 0.01) == pytest.approx(0.5)
    # below the floor the floor is used
    assert aridity(4.9, 0.0, 0.1) == pytest.approx(20.0)


def test_era5_layer_weights():
    w = era5_layer_weights()
    assert w == {"L1": {"swvl1": 0.7, "swvl2": 0.3}, "L2": {"swvl2": 0.9, "swvl3": 0.1}, "L3": {"swvl3": 1.0}}


# ---------------------------------------------------------------------------- time
def _hourly(values, start="2001-03-01 00:00"):
    t = pd.date_range(start, periods=len(values), freq="h")
    return xr.DataArray(np.asarray(values, float), dims=C.TIME, coords={C.TIME: t})


def test_hourly_accumulation_day_is_01_to_next_00():
    # 3 days + 1 step of hourly values 0, 1, 2, ...: day D (index d) total = sum of the values
    # stamped D 01:00 ... D+1 00:00 = values 24d+1 ... 24d+24
    da = _hourly(np.arange(73))
    out = daily(da, "tp", "2001-03-01", "2001-03-03", accumulated=True)
    expected = [sum(range(24 * d + 1, 24 * d + 25)) for d in range(3)]
    assert expected == [300, 876, 1452]
    np.testing.assert_allclose(out.values, expected)
    np.testing.assert_array_equal(
        out[C.TIME].values, pd.date_range("2001-03-01", periods=3).values.astype("datetime64[ns]")
    )


def test_hourly_state_day_is_00_to_23():
    da = _hourly(np.arange(72))
    out = daily(da, "t2m", "2001-03-01", "2001-03-03", accumulated=False)
    np.testing.assert_allclose(out.values, [11.5, 35.5, 59.5])


def test_missing_last_hour_is_an_error_naming_it():
    da = _hourly(np.arange(72))  # ends 2001-03-03 23:00: the accumulation of that hour is stamped 03-04 00:00
    with pytest.raises(
        InputDataError, match=r"tp: 1 of 72 time steps needed are missing \(2001-03-04T00\).*D\+1 00:00"
    ):
        daily(da, "tp", "2001-03-01", "2001-03-03", accumulated=True)
    gap = da.drop_sel({C.TIME: [np.datetime64("2001-03-02T05:00")]})
    with pytest.raises(InputDataError, match="2001-03-02T05"):
        daily(gap, "t2m", "2001-03-01", "2001-03-03", accumulated=False)


def test_since_00utc_accumulation():
    # ERA5-Land: running total since 00 UTC; the D+1 00:00 value is the total of day D
    v = np.zeros(49)
    v[24] = 7.0  # stamped 03-02 00:00: total of 03-01
    v[48] = 9.0
    v[30] = 123.0  # an intermediate running total: ignored
    out = daily(_hourly(v), "tp", "2001-03-01", "2001-03-02", accumulated=True, accumulation="since_00utc")
    np.testing.assert_allclose(out.values, [7.0, 9.0])


def test_daily_files_pass_through_and_sub_daily_accumulations_are_refused():
    t = pd.date_range("2001-01-01 12:00", periods=5, freq="D")  # stamped at noon
    da = xr.DataArray(np.arange(5.0), dims=C.TIME, coords={C.TIME: t})
    out = daily(da, "tp", "2001-01-02", "2001-01-04", accumulated=True)
    np.testing.assert_allclose(out.values, [1.0, 2.0, 3.0])
    assert out[C.TIME].values[0] == np.datetime64("2001-01-02T00:00", "ns")
    with pytest.raises(InputDataError, match="2001-01-06"):
        daily(da, "tp", "2001-01-02", "2001-01-06", accumulated=True)
    six = xr.DataArray(np.arange(8.0), dims=C.TIME, coords={C.TIME: pd.date_range("2001-01-01", periods=8, freq="6h")})
    np.testing.assert_allclose(daily(six, "t2m", "2001-01-01", "2001-01-02", accumulated=False).values, [1.5, 5.5])
    with pytest.raises(InputDataError, match="accumulated variables need hourly data"):
        daily(six, "tp", "2001-01-01", "2001-01-01", accumulated=True)


# ---------------------------------------------------------------------------- space
def test_points_to_cell_centres_is_mean_of_four_points():
    lat = np.array([40.0, 40.25, 40.5])
    lon = np.array([-98.0, -97.75, -97.5])
    v = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, np.nan]])
    da = xr.DataArray(v, dims=(C.LAT, C.LON), coords={C.LAT: lat, C.LON: lon})
    out = to_cell_centres(da, np.array([40.125, 40.375]), np.array([-97.875, -97.625]))
    # (1+2+4+5)/4 = 3, (2+3+5+6)/4 = 4, (4+5+7+8)/4 = 6, NaN-aware: (5+6+8)/3 = 19/3
    np.testing.assert_allclose(out.values, [[3.0, 4.0], [6.0, 19.0 / 3.0]])
    np.testing.assert_allclose(out[C.LAT].values, [40.125, 40.375])


def test_cell_centres_wrap_the_dateline_and_pass_through():
    lat = np.array([0.0, 0.25])
    lon = np.arange(-180.0, 180.0, 0.25)  # global: -180 .. 179.75
    v = np.tile(np.arange(lon.size, dtype=float), (2, 1))
    da = xr.DataArray(v, dims=(C.LAT, C.LON), coords={C.LAT: lat, C.LON: lon})
    out = to_cell_centres(da, np.array([0.125]), np.array([179.875, -179.875]))
    # cell 179.875 lies between 179.75 (index 1439) and 180 == -180 (index 0)
    np.testing.assert_allclose(out.values, [[(1439 + 0) / 2, 0.5]])
    centres = xr.DataArray(
        np.arange(4.0).reshape(2, 2), dims=(C.LAT, C.LON), coords={C.LAT: [0.125, 0.375], C.LON: [10.125, 10.375]}
    )
    np.testing.assert_array_equal(
        to_cell_centres(centres, np.array([0.375]), np.array([10.125, 10.375])).values, [[2.0, 3.0]]
    )


def test_grid_not_quarter_degree(shared_data):
    from somojax.prepare.era5 import read_era5

    era5 = read_era5([shared_data / "era5" / "era5_swvl1_lsm_5deg_2010-01-01.nc"])
    assert era5["swvl1"].sizes == {C.TIME: 4, C.LAT: 37, C.LON: 72}
    with pytest.raises(
        InputDataError, match=r"era5_swvl1_lsm_5deg_2010-01-01\.nc.*the grid is not 0\.25° \(latitude steps \[5\.\]"
    ):
        to_cell_centres(
            era5["swvl1"].isel(time=0),
            np.array([40.125]),
            np.array([10.125]),
            "ERA5 swvl1 (era5_swvl1_lsm_5deg_2010-01-01.nc)",
        )


# ---------------------------------------------------------------------------- the builder
def _era5_dict(ds):
    from somojax.prepare.era5 import standardize

    s = standardize(ds, "test.nc")
    return {v: s[v].chunk({C.TIME: 48}).assign_attrs(source_files=["test.nc"]) for v in s.data_vars}


def _reference(ds_hourly, lat_range, lon_range):
    """Plain NumPy float64 forcings from an hourly dataset (latitude descending, lon 0..360)."""
    lat = ds_hourly["latitude"].values[::-1]
    lon = ((ds_hourly["longitude"].values + 180) % 360) - 180
    order = np.argsort(lon)
    lon = lon[order]

    def arr(v):
        return ds_hourly[v].values.astype(np.float64)[:, ::-1, :][:, :, order]

    nt = ds_hourly.sizes["valid_time"]
    nd = (nt - 1) // 24

    def acc(v):  # day d = steps 24d+1 .. 24d+24
        a = arr(v)
        return np.stack([a[24 * d + 1 : 24 * d + 25].sum(0) for d in range(nd)])

    def inst(x):
        return np.stack([x[24 * d : 24 * d + 24].mean(0) for d in range(nd)])

    def cells(x):
        return 0.25 * (x[:, :-1, :-1] + x[:, 1:, :-1] + x[:, :-1, 1:] + x[:, 1:, 1:])

    d2m, sp = arr("d2m"), arr("sp")
    e = 611.21 * np.exp(17.502 * (d2m - 273.16) / (d2m - 32.19))
    q = 0.622 * e / (sp - 0.378 * e)
    ref = {
        "log_tp": np.log(1 + cells(acc("tp")) * 1000),
        "t2m": cells(inst(arr("t2m"))),
        "snr": cells(acc("ssr") + acc("str")) / 1e6,
        "ssrd": cells(acc("ssrd")) / 1e6,
        "q": cells(inst(q)),
        "skt": cells(inst(arr("skt"))),
    }
    sw = {k: cells(inst(arr(k))) for k in ("swvl1", "swvl2", "swvl3")}
    ref["sm_era5"] = np.stack(
        [(7 * sw["swvl1"] + 3 * sw["swvl2"]) / 10, (18 * sw["swvl2"] + 2 * sw["swvl3"]) / 20, sw["swvl3"]]
    )
    return ref, lat, lon


def test_build_forcings_hourly_matches_numpy():
    lat_range, lon_range = (40.0, 40.75), (-98.0, -97.5)
    lats, lons = era5_points(lat_range, lon_range)
    times = pd.date_range("2001-06-01", periods=3 * 24 + 1, freq="h")
    ds = era5_dataset(times, lats, lons, seed=3, daily=False)
    f = build_forcings(_era5_dict(ds), "2001-06-01", "2001-06-03", lat_range, lon_range)
    ref, _, _ = _reference(ds, lat_range, lon_range)
    assert f["t2m"].dims == (C.TIME, C.LAT, C.LON) and f[C.SM_ERA5].dims == (C.LAYER, C.TIME, C.LAT, C.LON)
    np.testing.assert_allclose(f[C.LAT].values, [40.125, 40.375, 40.625])
    np.testing.assert_allclose(f[C.LON].values, [-97.875, -97.625])
    for v, r in ref.items():
        np.testing.assert_allclose(f[v].values.astype(np.float64), r, rtol=2e-6, atol=1e-9, err_msg=v)
        assert f[v].dtype == np.float32
    assert f["snr"].attrs["units"] == "MJ m-2 day-1" and f["q"].attrs["units"] == "kg kg-1"


def test_build_forcings_is_lazy():
    lat_range, lon_range = (40.0, 40.5), (-98.0, -97.5)
    lats, lons = era5_points(lat_range, lon_range)
    ds = era5_dataset(pd.date_range("2001-06-01", periods=49, freq="h"), lats, lons, daily=False)
    era5 = _era5_dict(ds)

    def refuse(*a, **k):
        raise AssertionError("build_forcings computed data")

    with dask.config.set(scheduler=refuse):
        f = build_forcings(era5, "2001-06-01", "2001-06-02", lat_range, lon_range)
    assert all(hasattr(f[v].data, "dask") for v in f.data_vars)


def test_layouts_and_coordinate_conventions_give_the_same_forcings():
    lat_range, lon_range = (40.0, 40.5), (-98.0, -97.5)
    lats, lons = era5_points(lat_range, lon_range)
    new = era5_dataset(pd.date_range("2001-06-01", periods=2 * 24 + 1, freq="h"), lats, lons, seed=5, daily=False)
    base = build_forcings(_era5_dict(new), "2001-06-01", "2001-06-02", lat_range, lon_range).compute()
    # old layout: `time`, latitude ascending, longitude -180..180, ERA5/ERA5T in an expver dim
    old = new.rename(valid_time="time").drop_vars(["expver", "number"]).isel(latitude=slice(None, None, -1))
    old = old.assign_coords(longitude=((old.longitude + 180) % 360) - 180)
    half = old.sizes["time"] // 2
    era5 = old.where(old.time < old.time[half])
    era5t = old.where(old.time >= old.time[half])
    stacked = xr.concat([era5, era5t], dim=pd.Index([1, 5], name="expver"))
    got = build_forcings(_era5_dict(stacked), "2001-06-01", "2001-06-02", lat_range, lon_range).compute()
    for v in base.data_vars:
        np.testing.assert_array_equal(got[v].values, base[v].values, err_msg=v)


def test_long_term_statics_hand_computed():
    t = pd.date_range("2001-01-01", periods=3, freq="D")
    p = np.array([[[1.0, 0.0]], [[3.0, 0.0]], [[50.0, 0.0]]])  # mm/day; the 3rd day lies outside the period
    snr = np.array([[[4.9, 2.45]], [[4.9, 2.45]], [[0.0, 0.0]]])
    f = xr.Dataset(
        {
            "log_tp": ((C.TIME, C.LAT, C.LON), np.log1p(p).astype(np.float32)),
            "snr": ((C.TIME, C.LAT, C.LON), snr.astype(np.float32)),
        },
        coords={C.TIME: t, C.LAT: [40.125], C.LON: [-97.875, -97.625]},
    )
    out, info = long_term_statics(f, "2001-01-01", "2001-01-02", p_min_mm_year=365.25 * 0.5)
    # cell 1: P = 2 mm/day -> 730.5 mm/year; arid = (4.9/2.45) / 2 = 1
    # cell 2: P = 0 -> floored at 0.5 mm/day; arid = (2.45/2.45) / 0.5 = 2
    np.testing.assert_allclose(out["tp"].values, [[730.5, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(out["arid"].values, [[1.0, 2.0]], rtol=1e-6)
    assert info["cells_at_precipitation_floor"] == 1 and info["days"] == 2


def test_region_at_the_dateline_uses_wrapped_points(tmp_path):
    from somojax.prepare.era5 import read_era5

    lats = np.array([0.5, 0.25, 0.0])
    lons = np.arange(0.0, 360.0, 0.25)  # global, 0..359.75: 180 is the point -180 after wrapping
    ds = era5_dataset(pd.date_range("2001-06-01", periods=2, freq="D"), lats, lons, seed=1)
    ds[["t2m"]].to_netcdf(tmp_path / "g.nc")
    era5 = read_era5([tmp_path / "g.nc"], bbox=(0.0, 0.5, 179.5, 180.0))
    out = daily(era5["t2m"], "t2m", "2001-06-01", "2001-06-02", accumulated=False)
    cells = to_cell_centres(out, np.array([0.125]), np.array([179.625, 179.875])).values
    raw = ds["t2m"].values.astype(np.float64)  # (time, lat descending, lon)
    j = {x: int(np.argmin(np.abs(lons - x))) for x in (179.75, 180.0)}
    ref = 0.25 * (raw[:, 1, j[179.75]] + raw[:, 2, j[179.75]] + raw[:, 1, j[180.0]] + raw[:, 2, j[180.0]])
    np.testing.assert_allclose(cells[:, 0, 1], ref, rtol=1e-6)
