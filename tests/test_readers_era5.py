"""ERA5 readers: real samples (NetCDF, GRIB), CMIP-style names, ARCO Zarr, bad units/variables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from somojax import constants as C
from somojax.errors import InputDataError
from somojax.prepare.era5 import LONG_NAMES, read_era5, require
from somojax.prepare.forcings import build_forcings
from somojax.prepare.units import normalize_units

from test_prepare_factory import era5_dataset, era5_points


def test_units_spellings():
    assert normalize_units("J m**-2") == "J m-2"
    assert normalize_units("m**3 m**-3") == "m3 m-3"
    assert normalize_units("J/m^2") == "J m-2"
    assert normalize_units("kg m**-2 s**-1") == "kg m-2 s-1"
    assert normalize_units("K") == "K"


def test_cds_classic_netcdf_sample(shared_data):
    era5 = read_era5([shared_data / "era5" / "era5_swvl1_lsm_5deg_2010-01-01.nc"])
    raw = xr.open_dataset(shared_data / "era5" / "era5_swvl1_lsm_5deg_2010-01-01.nc")
    sw = era5["swvl1"]
    assert sw.dims == (C.TIME, C.LAT, C.LON)
    assert (
        np.all(np.diff(sw[C.LAT].values) > 0) and sw[C.LON].values.min() == -180.0 and sw[C.LON].values.max() == 175.0
    )
    # the point (lat 45, lon 10) is the same value after flipping latitude and wrapping longitude
    np.testing.assert_array_equal(
        sw.sel(latitude=45.0, longitude=10.0).values, raw["swvl1"].sel(latitude=45.0, longitude=10.0).values
    )
    np.testing.assert_array_equal(
        sw.sel(latitude=-30.0, longitude=-60.0).values, raw["swvl1"].sel(latitude=-30.0, longitude=300.0).values
    )


def test_five_degree_sample_cannot_make_forcings(shared_data):
    era5 = read_era5([shared_data / "era5" / "era5_swvl1_lsm_5deg_2010-01-01.nc"])
    # give it every variable (copies of swvl1 with the right units) so only the grid is wrong
    full = {}
    for v, u in {
        "tp": "m",
        "t2m": "K",
        "d2m": "K",
        "sp": "Pa",
        "ssr": "J m-2",
        "str": "J m-2",
        "ssrd": "J m-2",
        "skt": "K",
        "swvl1": "m3 m-3",
        "swvl2": "m3 m-3",
        "swvl3": "m3 m-3",
    }.items():
        full[v] = era5["swvl1"].assign_attrs(units=u)
    with pytest.raises(InputDataError, match=r"era5_swvl1_lsm_5deg_2010-01-01\.nc.*grid is not 0\.25°"):
        build_forcings(full, "2010-01-01", "2010-01-01", (40.0, 41.0), (10.0, 11.0), ("t2m",), with_sm=False)


def test_small_netcdf_and_landmask_samples(shared_data):
    t2m = read_era5([shared_data / "era5" / "era5_2t_small.nc"])["t2m"]
    assert t2m.sizes == {C.TIME: 1, C.LAT: 9, C.LON: 18} and t2m.attrs["units"] == "K"


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_grib_samples(shared_data):
    pytest.importorskip("cfgrib")
    era5 = read_era5([shared_data / "era5" / "soil-surface-level-mix.grib"])
    assert {"swvl1", "swvl2", "swvl3", "t2m"} <= set(era5)
    for v in ("swvl1", "swvl2", "swvl3"):
        assert era5[v].dims == (C.TIME, C.LAT, C.LON) and era5[v].sizes[C.LAT] == 6
        assert np.all(np.diff(era5[v][C.LAT].values) > 0)
    import cfgrib

    raw = {
        k: d
        for d in cfgrib.open_datasets(str(shared_data / "era5" / "soil-surface-level-mix.grib"), indexpath="")
        for k in d.data_vars
    }
    np.testing.assert_array_equal(era5["swvl2"].isel(time=0).values, raw["swvl2"]["swvl2"].values[::-1])
    t2m = read_era5([shared_data / "era5" / "era5-single-level-scalar-time.grib"])["t2m"]
    assert t2m.sizes == {C.TIME: 1, C.LAT: 121, C.LON: 201}


def test_cmip_style_daily_names_are_mapped_and_skt_is_reported_missing(shared_data):
    path = shared_data / "era5" / "daily_surface_cancities_1990-1993.nc"
    era5 = read_era5([path])
    raw = xr.open_dataset(path)
    assert set(era5) == {"t2m", "d2m", "sp", "tp", "ssr", "str", "ssrd"}
    # daily mean fluxes times one day: kg m-2 s-1 -> m of water; W m-2 -> J m-2
    np.testing.assert_allclose(era5["tp"].values, raw["pr"].values * 86400 / 1000, rtol=1e-6)
    np.testing.assert_allclose(era5["ssr"].values, raw["rss"].values * 86400.0, rtol=1e-6)
    np.testing.assert_allclose(era5["str"].values, raw["rls"].values * 86400.0, rtol=1e-6)
    np.testing.assert_array_equal(era5["t2m"].values, raw["tas"].values)
    assert era5["tp"].attrs["units"] == "m"
    with pytest.raises(
        InputDataError,
        match=r"ERA5 variable\(s\) missing: skt \(skin_temperature, CMIP ts\)\. Found \['d2m', 'sp', 'ssr', 'ssrd', 'str', 't2m', 'tp'\]",
    ):
        require(era5, ["tp", "t2m", "d2m", "sp", "ssr", "str", "ssrd", "skt"], [str(path)])
    # with a skin temperature it would still not be a grid
    era5["skt"] = era5["t2m"]
    era5.update({k: era5["t2m"].assign_attrs(units="m3 m-3") for k in C.ERA5_SM_VARS})
    with pytest.raises(InputDataError, match=r"has dims \('location', 'time'\), not a latitude/longitude grid"):
        build_forcings(era5, "1990-01-01", "1990-01-31", (44.0, 45.0), (-64.0, -63.0))


def test_arco_zarr_long_names(tmp_path):
    lats, lons = era5_points((40.0, 40.5), (-98.0, -97.5))
    ds = era5_dataset(pd.date_range("2001-06-01", periods=49, freq="h"), lats, lons, daily=False)
    ds = ds.drop_vars(["expver", "number"]).rename(valid_time="time")
    arco = ds.rename({v: k for k, v in LONG_NAMES.items() if v in ds.data_vars and "_" in k})
    assert "2m_temperature" in arco and "total_precipitation" in arco
    arco.chunk({"time": 1}).to_zarr(tmp_path / "arco.zarr", zarr_format=3, consolidated=False)
    a = read_era5([tmp_path / "arco.zarr"])
    b = read_era5([_nc(ds, tmp_path / "same.nc")])
    assert set(a) == set(b) == set(ds.data_vars)
    for v in a:
        np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=v)


def _nc(ds, path):
    ds.to_netcdf(path)
    return path


def test_wrong_units_are_errors(tmp_path):
    lats, lons = era5_points((40.0, 40.5), (-98.0, -97.5))
    ds = era5_dataset(pd.date_range("2001-06-01", periods=3, freq="D"), lats, lons)
    bad = ds.copy()
    bad["t2m"] = (bad["t2m"] - 273.15).assign_attrs(units="degC")
    with pytest.raises(
        InputDataError, match=r"t_degc\.nc: variable 't2m' has units 'degC', expected 'K' \(convert with \+273\.15\)"
    ):
        read_era5([_nc(bad, tmp_path / "t_degc.nc")])
    bad = ds.copy()
    bad["tp"] = (bad["tp"] * 1000).assign_attrs(units="mm")
    with pytest.raises(
        InputDataError,
        match=r"tp_mm\.nc: variable 'tp' has units 'mm', expected 'm' \(ERA5 writes precipitation in metres",
    ):
        read_era5([_nc(bad, tmp_path / "tp_mm.nc")])


def test_missing_variable_is_named(tmp_path):
    lats, lons = era5_points((40.0, 40.5), (-98.0, -97.5))
    ds = era5_dataset(pd.date_range("2001-06-01", periods=3, freq="D"), lats, lons).drop_vars("d2m")
    p = _nc(ds, tmp_path / "no_d2m.nc")
    era5 = read_era5([p])
    with pytest.raises(
        InputDataError,
        match=r"ERA5 variable\(s\) missing: d2m \(2m_dewpoint_temperature, CMIP tdps\)\. Found \[.*\] in data\.era5 = \[.*no_d2m\.nc",
    ):
        require(era5, ["tp", "t2m", "d2m", "sp"], [str(p)])


def test_files_split_by_variable_and_year_are_combined(tmp_path):
    lats, lons = era5_points((40.0, 40.5), (-98.0, -97.5))
    ds = era5_dataset(pd.date_range("2000-12-30", "2001-01-02", freq="D"), lats, lons)
    paths = []
    for year in ("2000", "2001"):
        for group in (["t2m", "tp"], ["d2m", "sp"]):
            paths.append(_nc(ds[group].sel(valid_time=year), tmp_path / f"{'_'.join(group)}_{year}.nc"))
    era5 = read_era5([str(tmp_path / "*.nc")])
    assert set(era5) == {"t2m", "tp", "d2m", "sp"}
    assert era5["t2m"].sizes[C.TIME] == 4
    np.testing.assert_array_equal(
        era5["tp"].values, ds["tp"].values[:, ::-1, :][:, :, np.argsort(((lons + 180) % 360) - 180)]
    )
    # overlapping files are an error naming the files
    _nc(ds[["t2m"]].sel(valid_time="2001"), tmp_path / "dup.nc")
    with pytest.raises(InputDataError, match="overlap in time"):
        read_era5([str(tmp_path / "*.nc")])
    with pytest.raises(InputDataError, match="matches no file"):
        read_era5([str(tmp_path / "nothing_*.nc")])


def test_forecast_time_step_axes_are_put_on_validity_time():
    # cfgrib's view of CDS GRIB accumulations: forecasts from 06 and 18 UTC with steps 1..12 h
    init = pd.to_datetime(["2001-06-01 06:00", "2001-06-01 18:00"]).values
    step = (np.arange(1, 13) * np.timedelta64(1, "h")).astype("timedelta64[ns]")
    vt = init[:, None] + step[None, :]
    vals = np.arange(24, dtype=np.float32).reshape(2, 12, 1, 1) * np.ones((1, 1, 2, 2), np.float32)
    ds = xr.Dataset(
        {"tp": (("time", "step", "latitude", "longitude"), vals, {"units": "m"})},
        coords={
            "time": init,
            "step": step,
            "valid_time": (("time", "step"), vt),
            "latitude": [40.25, 40.0],
            "longitude": [262.0, 262.25],
            "surface": 0.0,
        },
    )
    from somojax.prepare.era5 import standardize

    out = standardize(ds, "fc.grib")["tp"]
    assert out.dims == (C.TIME, C.LAT, C.LON)
    np.testing.assert_array_equal(out[C.TIME].values, np.sort(vt.ravel()))
    assert out[C.TIME].values[0] == np.datetime64("2001-06-01T07:00", "ns")
    np.testing.assert_array_equal(out.values[:, 0, 0], np.arange(24))


@pytest.mark.parametrize("frac", [0.3, 0.6])
def test_truncated_real_netcdf3_is_named(shared_data, tmp_path, frac):
    # a download cut off: NetCDF-3 reads the missing time stamps as 0 (1900-01-01)
    raw = (shared_data / "era5" / "era5_swvl1_lsm_5deg_2010-01-01.nc").read_bytes()
    p = tmp_path / "cut.nc"
    p.write_bytes(raw[: int(len(raw) * frac)])
    with pytest.raises(
        InputDataError,
        match=r"cut\.nc: time stamps within this file do not increase \(1900-01-01T00 follows .*\): the file may be truncated or damaged",
    ):
        read_era5([p])


def test_truncated_and_damaged_netcdf4_are_named(tmp_path):
    from somojax.prepare.era5 import screen_era5

    lats, lons = era5_points((40.0, 42.0), (-98.0, -96.0))
    ds = era5_dataset(pd.date_range("2001-01-01", periods=2000, freq="h"), lats, lons, daily=False)
    good = tmp_path / "good.nc"
    ds.to_netcdf(good, encoding={v: {"zlib": True, "chunksizes": (100, 9, 9)} for v in ds.data_vars})
    raw = bytearray(good.read_bytes())
    (tmp_path / "cut.nc").write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(InputDataError, match=r"cut\.nc: cannot open as NetCDF, GRIB or Zarr \(OSError: .*HDF error"):
        read_era5([tmp_path / "cut.nc"])
    raw[len(raw) // 2 : len(raw) // 2 + 2000] = bytes(2000)  # damaged compressed chunks: the header still opens
    (tmp_path / "damaged.nc").write_bytes(bytes(raw))
    era5 = read_era5([tmp_path / "damaged.nc"])
    with pytest.raises(
        InputDataError,
        match=r"damaged\.nc: cannot read \w+ \(RuntimeError: NetCDF: HDF error\); the file may be truncated or damaged",
    ):
        screen_era5(era5)


def test_netcdf_chunk_cache_is_limited_for_files_read(shared_data, tmp_path, monkeypatch):
    """netCDF-C keeps a 64 MiB chunk cache per variable of every open file by default: ERA5 in
    per-year files of 11 variables held gigabytes in prepare; reading ERA5 limits it."""
    import netCDF4

    from somojax.prepare import era5

    monkeypatch.setattr(era5, "NETCDF_CHUNK_CACHE_BYTES", 3 << 20)  # not the value set by a test before
    path = tmp_path / "era5_swvl1.nc"  # the CDS sample as chunked NetCDF-4 (the sample is classic)
    with xr.open_dataset(shared_data / "era5" / "era5_swvl1_lsm_5deg_2010-01-01.nc") as ds:
        ds.to_netcdf(path, format="NETCDF4", encoding={"swvl1": {"chunksizes": (1, 6, 72)}})
    netCDF4.set_chunk_cache(64 << 20, 1000, 0.75)
    try:
        read_era5([path])
        assert netCDF4.get_chunk_cache()[0] == 3 << 20
        with netCDF4.Dataset(path) as f:  # what xarray's netCDF4 backend gets for a file it opens
            assert f["swvl1"].get_var_chunk_cache()[0] <= 3 << 20
    finally:
        netCDF4.set_chunk_cache(64 << 20, 1000, 0.75)
