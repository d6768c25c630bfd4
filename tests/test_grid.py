"""The grid module: which cell, which index, inside or not — against brute-force NumPy float64.

Stated semantics: a point belongs to the nearest grid point when it lies within half a grid step
of it (plus 1e-6° of rounding slack). A point farther away — e.g. outside the region by more than
half a cell — is outside: `nearest_index` flags it, `indices` and `select_cells` raise naming it,
`sample_points` (and the evaluation's sampling built on it) give NaN, never the edge cell's value.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from somojax import constants as C
from somojax import grid
from somojax.errors import InputDataError, StoreError


def brute_nearest(coord, x, periodic=False):
    """Nearest index by exhaustive search in float64, and its distance (longitude: on the circle)."""
    coord = np.asarray(coord, np.float64)[None, :]
    x = np.asarray(x, np.float64).reshape(-1, 1)
    d = np.abs(coord - x)
    if periodic:
        d = np.minimum(d, 360.0 - d)
    return d.argmin(axis=1), d.min(axis=1)


def test_cell_id_and_centre_round_trip():
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-90, 90, 500), rng.uniform(-180, 180, 500)
    lat_c, lon_c = grid.cell_centre(grid.cell_id(lat, lon))
    assert np.all(np.abs(lat_c - lat) <= 0.125 + 1e-12) and np.all(np.abs(lon_c - lon) <= 0.125 + 1e-12)
    assert np.array_equal(grid.cell_id(lat, lon), grid.cell_id(lat, lon % 360.0))  # 0..360 is the same cell
    assert np.array_equal(grid.cell_id(lat_c, lon_c), grid.cell_id(lat, lon))
    assert int(grid.cell_id(-89.875, -179.875)) == 0
    assert int(grid.cell_id(90.0, 179.999)) == C.N_LAT_GLOBAL * C.N_LON_GLOBAL - 1  # the pole is in the top row


@pytest.mark.parametrize("lat, lon", [(90.2, 0.0), (-91.0, 10.0), (np.nan, 0.0), (10.0, np.inf)])
def test_cell_id_refuses_points_off_the_globe(lat, lon):
    with pytest.raises(ValueError, match="off the globe"):
        grid.cell_id(lat, lon)


def test_nearest_index_matches_brute_force_on_a_regional_grid():
    coord = grid.lat_centres(30.0, 35.0)  # 20 centres, 30.125 .. 34.875
    rng = np.random.default_rng(1)
    x = rng.uniform(29.0, 36.0, 2000)
    idx, inside = grid.nearest_index(coord, x)
    ref_idx, dist = brute_nearest(coord, x)
    far = dist > 0.125 + 1e-6
    assert np.array_equal(idx[~far], ref_idx[~far])
    assert np.array_equal(inside, ~far)
    assert far.any() and (~far).any()  # both kinds were drawn


def test_nearest_index_across_the_dateline():
    coord = np.concatenate([grid.lon_centres(-180.0, -178.0), grid.lon_centres(178.0, 180.0)])
    x = np.array([179.99, -179.99, 180.0, 180.1, 178.2, 0.0, -177.7])
    idx, inside = grid.nearest_index(coord, x, periodic=True)
    ref_idx, dist = brute_nearest(coord, grid.wrap_lon(x), periodic=True)
    assert np.array_equal(inside, dist <= 0.125 + 1e-6)
    assert np.array_equal(idx[inside], ref_idx[inside])
    assert list(inside) == [True, True, True, True, True, False, False]


def test_a_regional_grid_that_skips_cells_uses_half_its_step():
    coord = np.array([10.125, 10.625, 11.125])  # every second cell: step 0.5
    idx, inside = grid.nearest_index(coord, np.array([10.37, 11.37, 11.4]))
    assert list(idx) == [0, 2, 2] and list(inside) == [True, True, False]
    idx, inside = grid.nearest_index(np.array([5.125]), np.array([5.2, 5.3]))  # one point: half a cell
    assert list(inside) == [True, False]
    _, inside = grid.nearest_index(np.array([]), np.array([1.0]))
    assert not inside.any()


def _region(n_lat=4, n_lon=5):
    lat, lon = grid.lat_centres(40.0, 40.0 + n_lat / 4), grid.lon_centres(-100.0, -100.0 + n_lon / 4)
    vals = np.arange(lat.size * lon.size, dtype=np.float64).reshape(lat.size, lon.size)
    return xr.DataArray(vals, dims=(C.LAT, C.LON), coords={C.LAT: lat, C.LON: lon}, name="v")


def test_outside_by_more_than_half_a_cell_is_an_error_or_nan():
    da = _region()
    edge = float(da[C.LAT].values[-1])  # 40.875: the region's top edge is 41.0
    lat = np.array([edge + 0.12, edge + 0.13, 40.55])
    lon = np.full(3, float(da[C.LON].values[0]))
    # sample_points: NaN outside, the nearest value inside (not the edge value for the far point)
    got = grid.sample_points(da, lat, lon).values
    assert got[0] == da.values[-1, 0] and np.isnan(got[1]) and got[2] == da.sel({C.LAT: 40.625, C.LON: -99.875}).item()
    # indices: an error naming the point
    with pytest.raises(InputDataError, match=r"latitude does not cover 1 point\(s\) \(41.005\)"):
        grid.indices(da[C.LAT].values, lat, "latitude")
    # select_cells: a cell one row above the region is outside
    inside_cell = grid.cell_id(40.875, -99.875)
    above = grid.cell_id(41.125, -99.875)
    assert float(grid.select_cells(da, [inside_cell]).item()) == da.values[-1, 0]
    with pytest.raises(StoreError, match=rf"cells \[{above}\] lie outside the store's region"):
        grid.select_cells(da, [inside_cell, above])


def test_select_cells_picks_every_cell_as_numpy_does():
    da = _region(6, 7)
    rng = np.random.default_rng(2)
    lat = rng.choice(da[C.LAT].values, 30)
    lon = rng.choice(da[C.LON].values, 30)
    got = grid.select_cells(da, grid.cell_id(lat, lon)).values
    ilat = np.rint((lat - 40.125) / 0.25).astype(int)
    ilon = np.rint((lon + 99.875) / 0.25).astype(int)
    assert np.array_equal(got, da.values[ilat, ilon])


def test_evaluation_samples_no_edge_value_outside_the_statics():
    from somojax.evaluate.scoring import cell_climate

    da = _region()
    statics = da.rename("arid").to_dataset()
    lat = np.array([40.625, 45.0])  # inside; far north of the region
    lon = np.array([-99.625, -99.625])
    got = cell_climate(np.array([1, 2]), lat, lon, statics=statics)["arid"].values
    assert got[0] == da.sel({C.LAT: 40.625, C.LON: -99.625}).item() and np.isnan(got[1])
