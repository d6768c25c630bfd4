"""Named steps of the readers and the preparation report, tested directly."""

import numpy as np
import pytest
import xarray as xr

from somojax.errors import InputDataError
from somojax.prepare import era5, statics
from somojax.prepare.report import _dropped_keys, _values_dropped


def test_fold_expver_prefers_era5_and_fills_from_era5t():
    t = np.arange("2024-01-01", "2024-01-04", dtype="datetime64[D]").astype("datetime64[ns]")
    # ERA5 (1) valid for the first two days; ERA5T (5) everywhere, used only where ERA5 is NaN
    v = np.array([[1.0, 2.0, np.nan], [10.0, 20.0, 30.0]])
    ds = xr.Dataset({"t2m": (("expver", "time"), v)}, coords={"expver": ["0001", "0005"], "time": t})
    out = era5._fold_expver(ds)
    assert "expver" not in out.dims and "expver" not in out.coords
    np.testing.assert_array_equal(out["t2m"].values, [1.0, 2.0, 30.0])


def test_time_dim_promotes_a_scalar_valid_time_and_drops_the_others():
    ds = xr.Dataset(
        {"t2m": (("latitude",), np.zeros(2))},
        coords={"valid_time": np.datetime64("2020-05-01T06", "ns"), "time": np.datetime64("2020-05-01T00", "ns")},
    )
    out = era5._time_dim(ds)
    assert out["t2m"].dims == ("time", "latitude")
    assert out["time"].values.tolist() == [np.datetime64("2020-05-01T06", "ns").astype(int)]
    assert "valid_time" not in out.coords


def test_cmip_amount_converts_fluxes_over_the_time_step():
    pr = xr.DataArray(np.array([1e-4]), attrs={"units": "kg m-2 s-1"})
    amount = era5._cmip_amount(pr, "pr", "precip_flux", 86400.0, "f.nc")
    assert amount.attrs == {"units": "m"} and amount.values[0] == pytest.approx(8.64e-3)
    rss = xr.DataArray(np.array([100.0]), attrs={"units": "W m**-2"})
    assert era5._cmip_amount(rss, "rss", "energy_flux", 3600.0, "f.nc").values[0] == pytest.approx(3.6e5)
    with pytest.raises(InputDataError, match=r"f\.nc: variable 'rss' has units 'K', expected 'W m-2'"):
        era5._cmip_amount(rss.assign_attrs(units="K"), "rss", "energy_flux", 3600.0, "f.nc")
    with pytest.raises(InputDataError, match="without a time axis"):
        era5._cmip_amount(pr, "pr", "precip_flux", None, "f.nc")


def test_whole_cells_crops_to_cell_edges():
    # 1' points from 40.0083 (just above the 40.0 edge) minus 3 points: the crop starts at the edge
    step = 1 / 60
    lat = 40.0 + step / 2 + np.arange(-3, 40) * step
    lon = 10.0 + step / 2 + np.arange(35) * step
    da = xr.DataArray(np.ones((lat.size, lon.size)), coords={"latitude": lat, "longitude": lon})
    blk, n_lat, n_lon = statics._whole_cells(da, statics._grid_spacing(da, "e.nc"), "e.nc")
    assert (n_lat, n_lon) == (15, 15)
    assert blk.sizes == {"latitude": 30, "longitude": 30} and blk.dtype == np.float64
    assert blk["latitude"].values[0] == pytest.approx(40.0 + step / 2)
    mean, std = statics._cell_mean_std(blk, n_lat, n_lon)
    np.testing.assert_allclose(mean["latitude"].values, [40.125, 40.375])
    np.testing.assert_array_equal(std.values, 0.0)


def test_values_dropped_records_a_bookkeeping_difference():
    assert _values_dropped(10, 7, {"flag": 3, "none": 0}) == {"flag": 3}
    assert _values_dropped(10, 5, {"flag": 3}) == {"flag": 3, "other (bookkeeping difference)": 2}


def test_dropped_keys_count_categories_and_list_details():
    why, entries = _dropped_keys(
        "flags", "sensors", {("n", "a", 1), ("n", "b", 2)}, {("n", "a", 1): ("flag", "flag D01 on 90%")}, {}
    )
    assert why == {"flag": 1, "no values left": 1}
    assert entries[0] == {"step": "flags", "what": "sensor", "id": "('n', 'a', 1)", "reason": "flag D01 on 90%"}
    assert entries[1]["reason"] == "no values left"
