"""The tiled synthetic Earth (`synth.band_deg`, `synth.land_mask`): files `prepare` accepts, the
real land mask kept exactly, the grid independent of the banding, the demo untouched."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from somojax import constants as C
from somojax.config import load_config
from somojax.errors import ConfigError
from somojax.prepare import prepare
from somojax.prepare.statics import read_land_mask
from somojax.synth import earth, fields, globe, weather, writers

MASK = Path("/work/shared/data/era5/era5_landmask_0.25.nc")
needs_mask = pytest.mark.skipif(not MASK.exists(), reason=f"{MASK} (the ERA5 land mask sample) is not here")
# a coast (the southern North Sea): land and water in every band
LAT, LON = [50.0, 53.0], [-2.0, 3.0]


def _cfg(tmp_path: Path, band_deg: float, name: str = "w"):
    region = [f"synth.lat_range={LAT}", f"synth.lon_range={LON}", f"data.lat_range={LAT}", f"data.lon_range={LON}"]
    return load_config(
        "tiny",
        [f"workdir={tmp_path / name}", f"synth.land_mask={MASK}", f"synth.band_deg={band_deg}", *region],
    )


@pytest.fixture(scope="module")
def banded(tmp_path_factory):
    """The window in 1.5° bands and tiles (2 bands x 4 tiles, the last ones 0.5° wide), prepared."""
    cfg = _cfg(tmp_path_factory.mktemp("globe"), 1.5)
    globe.generate(cfg)
    prepare(cfg)
    return cfg


@needs_mask
def test_prepare_accepts_the_banded_files_and_keeps_the_mask(banded):
    cfg = banded
    mask = read_land_mask(MASK, LAT, LON).values > 0.5
    manifest = json.loads((cfg.raw_dir / "synth_manifest.json").read_text())
    assert manifest["bands"] == 2 and manifest["tiles"] == 2 * 4
    assert manifest["cells"]["land"] == int(mask.sum()) > 0 and (~mask).sum() > 0
    statics = xr.open_zarr(cfg.store_dir / "statics.zarr")
    np.testing.assert_array_equal(statics["land"].values > 0.5, mask)
    forcings = xr.open_zarr(cfg.store_dir / "forcings.zarr")
    assert forcings.sizes[C.TIME] == pd.date_range(cfg.synth.start, cfg.synth.end).size
    for v in ("t2m", "q", "snr", "log_tp", "sm_era5"):
        assert not forcings[v].isnull().any(), v  # every cell has its four ERA5 corners
    truth = xr.open_zarr(cfg.store_dir / C.TRUTH_STORE)[C.SM_TRUE].values
    assert np.isfinite(truth[:, :, mask]).all() and np.isnan(truth[:, :, ~mask]).all()
    targets = xr.open_zarr(cfg.store_dir / "targets.zarr")
    assert targets.sizes[C.CELL] > 0


@needs_mask
def test_prepare_cell_elevation_is_the_simulated_one(banded):
    """Each band writes its points so that `prepare`'s cell means (points on an edge belong to
    the cell below) are the elevation the tile's weather was simulated with."""
    cfg = banded
    g = globe._grid(cfg.synth)
    b, t = 1, 2  # a tile away from the region's south and west edges
    sim = globe._tile(cfg.synth, g, read_land_mask(MASK, LAT, LON).values > 0.5, b, t, 0)
    etopo = xr.open_zarr(cfg.store_dir / "statics.zarr")["ETOPOavg"].values
    (r0, r1), (c0, c1) = g["bands"][b], g["cols"][t]
    np.testing.assert_allclose(etopo[r0:r1, c0:c1], sim["statics"].elevation, rtol=1e-5)


@needs_mask
def test_banding_changes_neither_grid_nor_mask(banded, tmp_path):
    one = _cfg(tmp_path, 0.0, "one")  # the mask alone: the window as one tile
    globe.generate(one)
    assert json.loads((one.raw_dir / "synth_manifest.json").read_text())["tiles"] == 1
    for name in ("era5/era5_2000.nc", "static/etopo1_1arcmin.nc", "static/GLDASp4_landmask_025d.nc4"):
        a, b = xr.open_dataset(banded.raw_dir / name), xr.open_dataset(one.raw_dir / name)
        assert dict(a.sizes) == dict(b.sizes), name
        for c in a.coords:
            np.testing.assert_allclose(a[c].values.astype(float), b[c].values.astype(float), err_msg=f"{name} {c}")
    la, lb = (xr.open_dataset(c.raw_dir / "static/GLDASp4_landmask_025d.nc4")["GLDAS_mask"] for c in (banded, one))
    np.testing.assert_array_equal(la.values, lb.values)


def test_default_synth_takes_the_one_piece_path(tmp_path):
    cfg = load_config("tiny", [f"workdir={tmp_path}"])
    assert not globe.enabled(cfg.synth)
    s = cfg.synth
    region = fields.Region.from_edges(s.lat_range, s.lon_range)
    a = earth.simulate(cfg)
    b = earth.simulate_region(s, np.random.default_rng(s.seed), region, land=None, n_stations=s.n_stations)
    np.testing.assert_array_equal(a["era5_weather"].tp, b["era5_weather"].tp)
    np.testing.assert_array_equal(a["truth"], b["truth"])


def test_wrapped_corners_join_the_dateline():
    cells = np.arange(12.0).reshape(1, 3, 4)
    plain, wrapped = writers.to_corners(cells), writers.to_corners(cells, wrap_lon=True)
    np.testing.assert_array_equal(plain[..., 1:-1], wrapped[..., 1:-1])
    # the corner on -180 (= +180) averages the westmost and eastmost cells
    np.testing.assert_allclose(wrapped[0, 1, 0], cells[0, :2, [0, 3]].mean())
    np.testing.assert_array_equal(wrapped[..., 0], wrapped[..., -1])


def test_global_climate_is_plausible_everywhere():
    region = fields.Region.from_edges((-60.0, 90.0), (0.0, 0.25))
    t_mean, amp = weather.global_climate(region, np.zeros(region.shape))
    assert (t_mean > 240).all() and (t_mean < 305).all()
    assert (amp[region.lat < 0] < 0).all() and (amp[region.lat > 0] > 0).all()  # seasons flip
    rso = weather.extraterrestrial_radiation(region.lat, np.arange(1, 366))
    assert (rso == 0).any()  # polar night: the long-wave formula must not divide by it


def test_pieces_and_station_shares():
    assert globe.edges(50.0, 53.0, 1.5) == [(50.0, 51.5), (51.5, 53.0)]
    assert globe.edges(-2.0, 3.0, 1.5) == [(-2.0, -0.5), (-0.5, 1.0), (1.0, 2.5), (2.5, 3.0)]
    assert globe.edges(0.0, 1.0, 0.0) == [(0.0, 1.0)]
    shares = globe.share_stations(10, [0, 5, 15, 0, 20])
    assert sum(shares) == 10 and shares[0] == shares[3] == 0 and shares[4] > shares[1]


def test_bad_band_deg_is_refused_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"synth\.band_deg"):
        load_config("tiny", [f"workdir={tmp_path}", "synth.band_deg=0.3"])


def test_missing_land_mask_is_refused_naming_the_key(tmp_path):
    cfg = load_config("tiny", [f"workdir={tmp_path}", "synth.land_mask=/nowhere/mask.nc"])
    with pytest.raises(ConfigError, match=r"synth\.land_mask=/nowhere/mask\.nc"):
        globe.generate(cfg)
