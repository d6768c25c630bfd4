"""Reference readers: real ESA CCI samples, per-layer yearly NetCDF files, Zarr stores; cell sampling."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from somojax import constants as C
from somojax import stores
from somojax.errors import ConfigError, InputDataError
from tests import evaluate_mock as mock
from somojax.evaluate import references as R

CCI_DAYS = ("2016-06-07", "2016-06-08")


def _cci_raw(shared_data, day):
    f = shared_data / "esa_cci" / f"ESACCI-SOILMOISTURE-L3S-SSMV-COMBINED-{day.replace('-', '')}000000-fv05.2.nc"
    with xr.open_dataset(f) as ds:
        return ds["sm"].isel(time=0).load()


def test_esa_cci_folder_is_lazy_l1_with_increasing_latitude(shared_data):
    ref = R.open_reference(str(shared_data / "esa_cci"))
    assert ref.name == "ESA CCI" and ref.layers == ("L1",) and ref.kind == "esa_cci"
    assert ref.data.dims == (C.LAYER, C.TIME, C.LAT, C.LON)
    assert ref.data.chunks is not None  # dask: nothing read yet
    lat = ref.data[C.LAT].values
    assert lat[0] == pytest.approx(-89.875) and np.all(np.diff(lat) > 0)
    assert list(pd.DatetimeIndex(ref.data[C.TIME].values).strftime("%Y-%m-%d")) == list(CCI_DAYS)


def test_esa_cci_sampled_at_cells_equals_the_raw_file(shared_data):
    raw = _cci_raw(shared_data, CCI_DAYS[1])  # lat descending 89.875 .. -89.875
    vals = raw.values
    # pick cells with data and without, by raw array index
    rows, cols = np.nonzero(np.isfinite(vals))
    pick = [0, len(rows) // 3, len(rows) // 2, len(rows) - 1]
    lat = 89.875 - 0.25 * rows[pick]
    lon = -179.875 + 0.25 * cols[pick]
    lat = np.r_[lat, 0.125, -89.875]  # ocean at the equator (0.125, 0.125): NaN; and the south-most row
    lon = np.r_[lon, -25.125, 179.875]
    ref = R.open_reference(f"CCI-test={shared_data / 'esa_cci' / 'ESACCI-*.nc'}")
    assert ref.name == "CCI-test"
    days = pd.date_range("2016-06-06", "2016-06-09")
    s = R.sample_cells(ref.data, lat, lon, days).load()
    assert s.dims == (C.LAYER, C.CELL, C.TIME) and s.shape == (1, 6, 4)
    # expected: raw value at (row, col) computed from the coordinates in plain arithmetic
    exp_rows = np.round((89.875 - lat) / 0.25).astype(int)
    exp_cols = np.round((lon + 179.875) / 0.25).astype(int)
    want = vals[exp_rows, exp_cols]
    np.testing.assert_array_equal(s.sel(time="2016-06-08").values[0], want)
    assert np.isfinite(want[:4]).all()
    # days outside the files are NaN; the other sample day is read from its own file
    assert np.isnan(s.sel(time="2016-06-06").values).all() and np.isnan(s.sel(time="2016-06-09").values).all()
    raw7 = _cci_raw(shared_data, CCI_DAYS[0]).values
    np.testing.assert_array_equal(s.sel(time="2016-06-07").values[0], raw7[exp_rows, exp_cols])


def test_esa_cci_period_filter_and_missing_files(shared_data, tmp_path):
    ref = R.open_reference(str(shared_data / "esa_cci"), "2016-06-08", "2016-12-31")
    assert ref.data.sizes[C.TIME] == 1
    with pytest.raises(InputDataError, match="evaluation period"):
        R.open_reference(str(shared_data / "esa_cci"), "2001-01-01", "2001-12-31")
    with pytest.raises(ConfigError, match="no such file"):
        R.open_reference(str(tmp_path / "nothing_here"))


def _write_layer_files(folder, prefix, layer_names, var, years=(2001, 2002), lat_desc=False):
    folder.mkdir(parents=True, exist_ok=True)
    lat = np.arange(40.125, 41.0, 0.25)
    lon = np.arange(-97.875, -97.0, 0.25)
    out = {}
    for k, lname in enumerate(layer_names):
        for y in years:
            t = pd.date_range(f"{y}-01-01", f"{y}-12-31")
            v = (0.1 * (k + 1) + 0.001 * np.arange(len(t)))[:, None, None] + 0.01 * lat[None, :, None] + 0.0 * lon
            la = lat[::-1] if lat_desc else lat
            vv = v[:, ::-1, :] if lat_desc else v
            ds = xr.Dataset(
                {var: (("time", "lat", "lon"), vv.astype(np.float32))}, coords={"time": t, "lat": la, "lon": lon}
            )
            ds.to_netcdf(folder / f"{prefix}_{lname}_{y}.nc")
            out[(k, y)] = v
    return lat, lon, out


def test_somoml_and_somojax_layer_files(tmp_path):
    lat, lon, vals = _write_layer_files(
        tmp_path / "somoml", "SoMo.ml_v1", ["layer1", "layer2", "layer3"], "layer_sm", lat_desc=True
    )
    ref = R.open_reference(str(tmp_path / "somoml"), "2002-01-01", "2002-12-31")
    assert ref.name == "SoMo.ml" and ref.layers == ("L1", "L2", "L3") and ref.kind == "layer_files"
    assert ref.data.sizes[C.TIME] == 365  # only the 2002 files were opened
    s = R.sample_cells(
        ref.data, np.array([40.375, 40.875]), np.array([-97.625, -97.125]), pd.date_range("2002-03-01", periods=3)
    ).load()
    doy = np.arange(59, 62)  # 2002-03-01 is day index 59
    for k in range(3):
        want = 0.1 * (k + 1) + 0.001 * doy + 0.01 * 40.375
        np.testing.assert_allclose(s.values[k, 0], want, rtol=1e-6)
    _write_layer_files(tmp_path / "export", "somojax", ["L1", "L2"], "sm")
    ref2 = R.open_reference(str(tmp_path / "export" / "*.nc"))
    assert ref2.name == "somojax (export)" and ref2.layers == ("L1", "L2")
    ref3 = R.open_reference(f"mine@L2={tmp_path / 'export'}")
    assert ref3.name == "mine" and ref3.layers == ("L2",) and list(ref3.data[C.LAYER].values) == ["L2"]


def test_prediction_store_reference_and_generic_products(tmp_path):
    m = mock.mock_stores(n_lat=4, n_lon=4, days=30)
    path = stores.write_store(m.predictions, tmp_path / "predictions.zarr", "predictions")
    ref = R.open_reference(str(path))
    assert ref.name == "somojax" and ref.layers == C.LAYERS and ref.kind == "store"
    s = R.sample_cells(ref.data, m.targets[C.LAT].values, m.targets[C.LON].values, m.predictions[C.TIME].values).load()
    # the prediction at a target cell is the store's value at that grid cell
    i = 0
    want = m.predictions[C.SM].sel({C.LAT: float(m.targets[C.LAT][i]), C.LON: float(m.targets[C.LON][i])})
    np.testing.assert_array_equal(s.isel(cell=i).values, want.values)
    # a single-layer product without layer information needs @layers
    g = tmp_path / "gleam"
    g.mkdir()
    t = pd.date_range("2001-01-01", periods=5)
    xr.Dataset(
        {"SMroot": (("time", "lat", "lon"), np.ones((5, 2, 2), np.float32))},
        coords={"time": t, "lat": [40.125, 40.375], "lon": [262.125, 262.375]},
    ).to_netcdf(g / "SMroot_2001_GLEAM_v3.5a.nc")
    with pytest.raises(ConfigError, match="which layers"):
        R.open_reference(str(g))
    ref = R.open_reference(f"GLEAM@L2,L3:SMroot={g}")
    assert ref.name == "GLEAM" and ref.layers == ("L2", "L3")
    assert float(ref.data[C.LON].min()) == pytest.approx(-97.875)  # 0..360 longitudes normalised
    with pytest.raises(ConfigError, match="unknown layers"):
        R.parse_spec("x@L4=/tmp/a.nc")


def test_parse_spec_forms():
    assert R.parse_spec("/data/cci") == R.RefSpec(path="/data/cci")
    assert R.parse_spec("ESA CCI=/data/cci/*.nc") == R.RefSpec(path="/data/cci/*.nc", name="ESA CCI")
    s = R.parse_spec("GLEAM@L2,L3:SMroot=/g/*.nc")
    assert (s.name, s.layers, s.variable, s.path) == ("GLEAM", ("L2", "L3"), "SMroot", "/g/*.nc")


def test_sample_cells_outside_coverage_and_across_dateline():
    lat = np.array([10.125, 10.375])
    lon = np.array([-179.875, 179.875])
    da = xr.DataArray(
        np.arange(4.0).reshape(1, 1, 2, 2),
        dims=(C.LAYER, C.TIME, C.LAT, C.LON),
        coords={C.LAYER: ["L1"], C.TIME: pd.date_range("2001-01-01", periods=1), C.LAT: lat, C.LON: lon},
    )
    s = R.sample_cells(
        da, np.array([10.125, 10.375, 30.125, 10.125]), np.array([179.875, -179.875, 179.875, 0.125]), da[C.TIME].values
    ).values[0, :, 0]
    np.testing.assert_array_equal(s[:2], [1.0, 2.0])
    assert np.isnan(s[2]) and np.isnan(s[3])  # outside the product's grid
