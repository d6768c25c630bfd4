"""`somojax predict` at points (infer.region=points): station-shaped CF timeSeries files from a
list of sites or an ISMN archive, with inputs from SoMo.ml's own tables or from stores that lack
what prediction does not read; values against NumPy float64."""

from __future__ import annotations

import shutil
import subprocess

import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from somojax import constants as C
from somojax import grid
from somojax.checkpoint import save_bundle
from somojax.cli import main
from somojax.config import load_config
from somojax.errors import ConfigError, InputDataError
from somojax.infer import predict
from somojax.infer.points import read_ismn_stations, read_points_csv
from tests.test_export_cf import run_cf_checker
from tests.test_import_torch import random_state_dict
from tests.test_infer import LAT, LON, _bundle, _stores, numpy_layer
from tests.test_somo_v1 import (
    FORCING_COLUMNS,
    SCALER_COLUMNS,
    authors_prediction,
    long_memory_state_dict,
    scaler_stats,
    synthetic_forcing,
    write_scaler,
)

L = 365
TABLE_CELLS = ((-0.625, -50.625), (-0.625, 101.875), (45.125, 7.375))  # lat_lon as the authors name them
OUT_START, OUT_DAYS = pd.Timestamp("1998-01-01"), 20


def write_authors_tables(root, stats, seed=0):
    """forcing/features_<lat>_<lon>.dat and attri/global_attri.dat as the authors write them."""
    first = OUT_START - pd.Timedelta(days=L - 1 + 5)  # 5 days more than the spin-up needs
    days = pd.date_range(first, periods=L + OUT_DAYS + 10, freq="D")
    forcing, statics = {}, {}
    (root / "forcing").mkdir(parents=True)
    (root / "attri").mkdir()
    for k, (lat, lon) in enumerate(TABLE_CELLS):
        x = synthetic_forcing(len(days), stats, seed + k)  # model input order
        table = pd.DataFrame(
            {
                v: x[:, C.DYNAMIC_INPUTS.index(v)] if v in C.DYNAMIC_INPUTS else np.expm1(x[:, 0])
                for v in FORCING_COLUMNS
            },
            index=days,
        )
        if k == 1:
            table.iloc[L + 8, FORCING_COLUMNS.index("q")] = -9999.0  # missing: the next 365 outputs are NaN
        table.round(6).to_csv(root / "forcing" / f"features_{lat:g}_{lon:g}.dat", sep=",")
        forcing[(lat, lon)] = table[list(C.DYNAMIC_INPUTS)].replace(-9999.0, np.nan).round(6).to_numpy(np.float64)
        statics[(lat, lon)] = np.array([stats[v][0] + (k - 1) * 0.5 * stats[v][1] for v in C.STATIC_INPUTS])
    attri = pd.DataFrame(
        [statics[c] for c in TABLE_CELLS], index=[f"{a:g}_{b:g}" for a, b in TABLE_CELLS], columns=list(C.STATIC_INPUTS)
    )
    attri.to_csv(root / "attri" / "global_attri.dat", sep=",")
    return days, forcing, statics


@pytest.fixture(scope="module")
def from_tables(tmp_path_factory):
    """The three SoMo.ml commands: import the bundle, point to the tables, predict."""
    root = tmp_path_factory.mktemp("points_tables")
    sd, stats = long_memory_state_dict(7), scaler_stats(7)
    np.savez(root / "model_epoch15.npz", **{k: v.astype(np.float32) for k, v in sd.items()})
    write_scaler(root / "scaler_ALL_layer0.dat", stats, SCALER_COLUMNS)
    write_scaler(root / "scaler_ALL_statics.dat", stats, C.STATIC_INPUTS)
    days, forcing, statics = write_authors_tables(root / "ismn", stats)
    run = [f"workdir={root}/run"]
    assert (
        main(
            [
                "import-torch",
                "-c",
                "somo-v1",
                *run,
                "--layer",
                "L1",
                "--state-dict",
                str(root / "model_epoch15.npz"),
                "--stats",
                f"{root}/scaler_ALL_layer0.dat,{root}/scaler_ALL_statics.dat",
            ]
        )
        == 0
    )
    end = OUT_START + pd.Timedelta(days=OUT_DAYS - 1)
    assert (
        main(
            [
                "predict",
                "-c",
                "somo-v1",
                *run,
                "infer.region=points",
                f"infer.forcing_tables={root}/ismn/forcing",
                f"infer.statics_table={root}/ismn/attri/global_attri.dat",
                f"infer.start={OUT_START.date()}",
                f"infer.end={end.date()}",
            ]
        )
        == 0
    )
    return root, sd, stats, days, forcing, statics


def test_points_from_the_authors_tables_equal_numpy_float64(from_tables):
    root, sd, stats, days, forcing, statics = from_tables
    ds = xr.open_dataset(root / "run" / "points" / "somojax_points_L1.nc")
    assert ds.attrs["featureType"] == "timeSeries" and ds[C.SM].dims == (C.TIME, "station")
    assert ds.sizes == {C.TIME: OUT_DAYS, "station": 3, "nv": 2} and str(ds[C.TIME].values[0])[:10] == str(
        OUT_START.date()
    )
    first = int(np.searchsorted(days, OUT_START))
    for k, cell in enumerate(sorted(TABLE_CELLS, key=lambda c: grid.cell_id(*c))):
        i = list(ds["station_name"].values).index(f"{cell[0]:g}_{cell[1]:g}")
        x = forcing[cell][first - L + 1 : first + OUT_DAYS]
        want = np.full(OUT_DAYS, np.nan)
        ok = np.array([np.isfinite(x[t : t + L]).all() for t in range(OUT_DAYS)])
        want[ok] = authors_prediction(sd, stats, np.nan_to_num(x), statics[cell])[ok]
        np.testing.assert_allclose(ds[C.SM].values[:, i], want, atol=2e-6, rtol=0, equal_nan=True)
        assert (float(ds["latitude"][i]), float(ds["longitude"][i])) == cell
    assert (
        np.isnan(ds[C.SM].values).sum() == OUT_DAYS - 4
    )  # table 2: -9999 on day L + 8, in the windows of outputs 4..19


def test_the_points_file_is_cf_and_read_by_cdo_and_netcdf4(from_tables):
    path = from_tables[0] / "run" / "points" / "somojax_points_L1.nc"
    report = run_cf_checker([path])
    assert "ERRORS detected: 0" in report and "WARNINGS given: 0" in report, report
    with netCDF4.Dataset(path) as nc:
        assert nc["station_name"].cf_role == "timeseries_id" and nc["station_name"].dtype == "S1"
        assert nc["sm"].coordinates == "time latitude longitude station_name layer_depth"
        assert "_FillValue" not in nc["latitude"].ncattrs() and nc.getncattr("Conventions") == "CF-1.8, ACDD-1.3"
    if shutil.which("cdo") is None:
        pytest.skip("CDO is not installed (Debian: apt-get install cdo)")
    out = subprocess.run(["cdo", "sinfon", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "Warning" not in out.stderr, out.stderr
    assert "unstructured             : points=3" in out.stdout and f"{OUT_DAYS} steps" in out.stdout


@pytest.fixture(scope="module")
def bare_stores(tmp_path_factory):
    """Stores made by hand: no sm_era5 in the forcings, no land mask in the statics."""
    root = tmp_path_factory.mktemp("points_stores")
    f, s = _stores(root / "full")
    store_dir = root / "stores"
    f.drop_vars([C.SM_ERA5, C.LAYER]).to_zarr(store_dir / C.FORCINGS_STORE, zarr_format=3, consolidated=False)
    s.drop_vars(C.LAND_MASK).to_zarr(store_dir / C.STATICS_STORE, zarr_format=3, consolidated=False)
    cfg = load_config("tiny", [f"workdir={root}/run", f"data.store_dir={store_dir}"])
    save_bundle(_bundle("L1", 5), cfg.checkpoint_dir / "L1")
    return root, cfg, f, s


def test_points_from_stores_without_sm_era5_or_land(bare_stores):
    root, cfg, f, s = bare_stores
    lat, lon = f[C.LAT].values, f[C.LON].values
    (root / "sites.csv").write_text(
        "name,latitude,longitude\n"
        f"A,{lat[1]},{lon[2]}\nB,{lat[1] + 0.1},{lon[2] - 0.1}\nC,{lat[3]},{lon[4] + 360}\n"  # B shares A's cell; C given 0..360
    )
    pts = [
        *(
            f"{k}={v}"
            for k, v in {
                "infer.region": "points",
                "infer.points_file": root / "sites.csv",
                "infer.start": "2000-03-01",
                "infer.end": "2000-05-31",
            }.items()
        )
    ]
    summary = predict(
        load_config("tiny", [f"workdir={root}/run", f"data.store_dir={cfg.store_dir}", *pts]), layers=["L1"]
    )
    assert summary["points"] == 3 and summary["cells"] == 2 and summary["days"] == 92
    ds = xr.open_dataset(root / "run" / "points" / "somojax_points_L1.nc")
    assert list(ds["station_name"].values) == ["A", "B", "C"]
    np.testing.assert_array_equal(ds[C.SM].values[:, 0], ds[C.SM].values[:, 1])
    b = _bundle("L1", 5)
    for i, (y, x) in ((0, (1, 2)), (2, (3, 4))):
        columns = {v: f[v].values[:, y, x][None].astype(np.float64) for v in C.DYNAMIC_INPUTS}
        statics = {v: s[v].values[y, x][None].astype(np.float64) for v in C.STATIC_INPUTS}
        want_m, want_s = numpy_layer(b, columns, statics)
        d0 = (pd.Timestamp("2000-03-01") - pd.Timestamp(f[C.TIME].values[0])).days
        np.testing.assert_allclose(ds[C.SM].values[:, i], want_m[0, d0 : d0 + 92], atol=1e-5, equal_nan=True)
        np.testing.assert_allclose(ds[C.SM_SPREAD].values[:, i], want_s[0, d0 : d0 + 92], atol=1e-5, equal_nan=True)
    assert float(ds["longitude"][2]) == pytest.approx(lon[4]) and float(ds["cell_latitude"][1]) == pytest.approx(lat[1])


def test_gridded_predict_of_a_bbox_needs_no_land_mask(bare_stores):
    root, cfg, _, _ = bare_stores
    grid_cfg = load_config(
        "tiny",
        [
            f"workdir={root}/run",
            f"data.store_dir={cfg.store_dir}",
            "infer.region=bbox",
            f"infer.bbox=[{LAT[0]},{LAT[1]},{LON[0]},{LON[1]}]",
            "infer.start=2000-03-01",
            "infer.end=2000-04-30",
            "layout.shard_time=30",
            "layout.chunk_time=30",
            f"infer.output={root}/grid.zarr",
        ],
    )
    summary = predict(grid_cfg, layers=["L1"])
    assert summary["cells"] == 24


def test_an_ismn_archive_is_a_station_list(shared_data):
    p = read_ismn_stations(
        shared_data / "ismn" / "zip_archives" / "multinetwork" / "header_values" / "Data_header_values.zip"
    )
    assert p.names[:3] == ("MAQU/CST_01", "MAQU/CST_02", "SCAN/AAMU-jtg") and len(p.names) == 8
    assert (p.lat[2], p.lon[2]) == (34.783, -86.55)


def test_bad_points_are_named(tmp_path, bare_stores):
    root, cfg, f, _ = bare_stores
    (tmp_path / "dup.csv").write_text("station,latitude,longitude\nX,40.1,-97.6\nX,40.4,-97.1\n")
    with pytest.raises(ConfigError, match=r"lines \[2, 3\] name the same point 'X'"):
        read_points_csv(tmp_path / "dup.csv")
    (tmp_path / "far.csv").write_text("latitude,longitude\n40.1,-97.6\n-33.9,18.4\n")
    far = load_config(
        "tiny",
        [
            f"workdir={root}/run",
            f"data.store_dir={cfg.store_dir}",
            "infer.region=points",
            f"infer.points_file={tmp_path}/far.csv",
            "infer.start=2000-03-01",
            "infer.end=2000-03-31",
        ],
    )
    with pytest.raises(
        ConfigError, match=r"1 of 2 points' cells are not in the statics store .*-33\.9_18\.4 \(-33\.875, 18\.375\)"
    ):
        predict(far, layers=["L1"])
    with pytest.raises(ConfigError, match=r"infer\.region=points needs infer\.points_file"):
        load_config("tiny", ["infer.region=points"])
    with pytest.raises(ConfigError, match=r"infer\.forcing_tables needs infer\.statics_table"):
        load_config("tiny", ["infer.region=points", f"infer.forcing_tables={tmp_path}"])


def test_a_point_without_a_table_is_named(tmp_path):
    (tmp_path / "forcing").mkdir()
    pd.DataFrame({"t2m": [1.0]}, index=pd.DatetimeIndex(["2000-01-01"])).to_csv(
        tmp_path / "forcing" / "features_-0.625_-50.625.dat"
    )
    (tmp_path / "sites.csv").write_text("latitude,longitude\n-0.6,-50.6\n10.1,10.1\n")
    np.savez(tmp_path / "m.npz", **random_state_dict(0))
    stats = scaler_stats(0)
    write_scaler(tmp_path / "a.dat", stats, SCALER_COLUMNS)
    write_scaler(tmp_path / "b.dat", stats, C.STATIC_INPUTS)
    assert (
        main(
            [
                "import-torch",
                "-c",
                "somo-v1",
                f"workdir={tmp_path}",
                "--layer",
                "L1",
                "--state-dict",
                str(tmp_path / "m.npz"),
                "--stats",
                f"{tmp_path}/a.dat,{tmp_path}/b.dat",
            ]
        )
        == 0
    )
    cfg = load_config(
        "somo-v1",
        [
            f"workdir={tmp_path}",
            "infer.region=points",
            f"infer.points_file={tmp_path}/sites.csv",
            f"infer.forcing_tables={tmp_path}/forcing",
            f"infer.statics_table={tmp_path}/attri.dat",
        ],
    )
    with pytest.raises(
        ConfigError, match=r"has no table for 1 points' cells, e\.g\. features_10\.125_10\.125\.dat \(1 tables there\)"
    ):
        predict(cfg)
    cfg = load_config(
        "somo-v1",
        [
            f"workdir={tmp_path}",
            "infer.region=points",
            f"infer.forcing_tables={tmp_path}/forcing",
            f"infer.statics_table={tmp_path}/attri.dat",
        ],
    )
    with pytest.raises(
        InputDataError,
        match=r"features_-0\.625_-50\.625\.dat lacks the model inputs \['log_tp', 'snr', 'ssrd', 'q', 'skt'\]",
    ):
        predict(cfg)
