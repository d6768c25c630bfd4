"""Static maps: ETOPO1 cell statistics against NumPy, GLDAS, land masks, missing variables."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from somojax import constants as C
from somojax.errors import InputDataError
from somojax.prepare.statics import read_etopo, read_gldas, read_land_mask

from test_prepare_factory import write_statics

ETOPO = "etopo1_1arcmin_32N-45N_120E-135E.nc"


def test_etopo_mean_std_match_numpy_blocks(shared_data):
    path = shared_data / "static" / ETOPO
    out, screen = read_etopo(path, (32.0, 45.0), (120.0, 135.0))
    z = xr.open_dataset(path)["Band1"].values.astype(np.float64)
    assert z.shape == (781, 901)
    blocks = z[1:, 1:].reshape(52, 15, 60, 15)  # drop the first row and column: 15 x 15 points per cell
    np.testing.assert_allclose(out["ETOPOavg"].values, blocks.mean(axis=(1, 3)), rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(out["ETOPOsd"].values, blocks.std(axis=(1, 3)), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(out["ETOPOavg"][C.LAT].values, 32.125 + 0.25 * np.arange(52))
    np.testing.assert_allclose(out["ETOPOavg"][C.LON].values, 120.125 + 0.25 * np.arange(60))
    assert out["ETOPOavg"].attrs["units"] == "m" and out["ETOPOavg"].attrs["points_per_cell"] == 225
    # every point read was checked against the elevation bounds; the sample has no units attribute (NOAA's grids have none)
    assert screen.values == 52 * 15 * 60 * 15 and screen.n_dropped == 0
    assert (screen.min, screen.max) == (float(blocks.min()), float(blocks.max()))
    assert screen.extra["units_attribute"].startswith("none")


def test_etopo_subregion_and_uncovered_cells(shared_data):
    path = shared_data / "static" / ETOPO
    full = read_etopo(path, (32.0, 45.0), (120.0, 135.0))[0]["ETOPOavg"]
    sub = read_etopo(path, (40.0, 41.0), (130.0, 131.5))[0]["ETOPOavg"]
    np.testing.assert_array_equal(sub.values, full.sel(latitude=slice(40, 41), longitude=slice(130, 131.5)).values)
    wider = read_etopo(path, (44.0, 46.0), (134.0, 136.0))[0]["ETOPOsd"]
    assert wider.shape == (8, 8)
    assert np.isnan(wider.values[4:, :]).all() and np.isnan(wider.values[:, 4:]).all()
    assert np.isfinite(wider.values[:4, :4]).all()


def test_gldas_soil_fractions_real_sample(shared_data):
    path = shared_data / "static" / "GLDASp4_soilfraction_025d.nc4"
    out = read_gldas(path, ["clay", "sand", "silt"], (38.0, 44.0), (-100.0, -94.0))
    raw = xr.open_dataset(path)
    assert out["clay"].shape == (24, 24)
    np.testing.assert_array_equal(
        out["sand"].values,
        raw["GLDAS_soilfraction_sand"].isel(time=0).sel(lat=slice(38, 44), lon=slice(-100, -94)).values,
    )
    total = out["clay"] + out["sand"] + out["silt"]
    np.testing.assert_allclose(total.values, 1.0, atol=0.02)


def test_gldas_missing_variable_names_what_is_there(shared_data):
    path = shared_data / "static" / "GLDASp4_soilfraction_025d.nc4"
    with pytest.raises(
        InputDataError,
        match=r"GLDASp4_soilfraction_025d\.nc4: no variable for 'poro_top' \(data\.gldas_porosity\); expected one of \['GLDAS_porosity_top', .*found \['GLDAS_soilfraction_clay', 'GLDAS_soilfraction_sand', 'GLDAS_soilfraction_silt', 'time_bnds'\]",
    ):
        read_gldas(path, ["poro_top"], (38.0, 44.0), (-100.0, -94.0), "data.gldas_porosity")


def test_porosity_vegetation_and_mask_files(tmp_path):
    p = write_statics(tmp_path, (40.0, 41.0), (-98.0, -97.0), seed=1)
    poro = read_gldas(p["gldas_porosity"], ["poro_top", "poro_mid"], (40.0, 41.0), (-98.0, -97.0))
    raw = xr.open_dataset(p["gldas_porosity"])
    np.testing.assert_array_equal(poro["poro_top"].values, raw["GLDAS_porosity_top"].values[0])
    veg = read_gldas(p["gldas_vegetation"], ["domveg"], (40.0, 41.0), (-98.0, -97.0))["domveg"]
    assert set(np.unique(veg.values)) <= set(range(1, 14))
    land = read_land_mask(p["land_mask"], (40.0, 41.0), (-98.0, -97.0))
    assert land.shape == (4, 4) and float(land.sum()) == 16.0


def test_era5_and_gldas_land_masks_agree(shared_data):
    g = read_land_mask(shared_data / "static" / "GLDASp4_landmask_025d.nc4", (-60.0, 90.0), (-180.0, 180.0))
    e = read_land_mask(shared_data / "era5" / "era5_landmask_0.25.nc", (-60.0, 90.0), (-180.0, 180.0))
    assert g.shape == e.shape == (600, 1440)
    assert int(g.sum()) == 243_883  # SoMo.ml's land cells (docs/design.md#product)
    assert float((g == e).mean()) > 0.98
    # ERA5 lsm points -> cells: the mean of the four points around the cell, land where >= 0.5
    raw = xr.open_dataset(shared_data / "era5" / "era5_landmask_0.25.nc")["land"]
    pts = raw.sel(latitude=[45.25, 45.0], longitude=[7.0, 7.25]).values
    assert e.sel(latitude=45.125, longitude=7.125).item() == float(pts.mean() >= 0.5)


def test_fraction_in_percent_is_refused(tmp_path):
    from somojax.prepare.bounds import check_screen
    from somojax.prepare.statics import screen_static

    p = write_statics(tmp_path, (40.0, 41.0), (-98.0, -97.0))
    ds = xr.open_dataset(p["gldas_soil"], mask_and_scale=False).load()
    ds["GLDAS_soilfraction_clay"] = (ds["GLDAS_soilfraction_clay"] * 100).assign_attrs(
        ds["GLDAS_soilfraction_clay"].attrs
    )
    ds.to_netcdf(tmp_path / "pct.nc4")
    clay = read_gldas(tmp_path / "pct.nc4", ["clay"], (40.0, 41.0), (-98.0, -97.0))["clay"]
    land = read_land_mask(p["land_mask"], (40.0, 41.0), (-98.0, -97.0))
    _, s = screen_static(clay, "clay", land)
    with pytest.raises(
        InputDataError,
        match=r"pct\.nc4 \(GLDAS_soilfraction_clay\): 'clay' is implausible as a whole: 100\.0% of its 16 values on land lie outside 0\.\.1 1 .*Likely values in percent \(divide by 100\)",
    ):
        check_screen(s, "static", where="on land")
