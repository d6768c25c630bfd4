"""`prepare` end to end on small raw files: stores, report, statistics, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from somojax import constants as C
from somojax import grid, stores
from somojax.config import load_config
from somojax.errors import ConfigError, InputDataError, StoreError
from somojax.normalization import NormStats, compute_stats
from somojax.prepare import prepare
from somojax.prepare.checks import check_spinup, spinup_days
from somojax.prepare.ismn import read_ismn_file

from test_prepare_factory import hourly_station, write_era5_daily, write_ismn_file, write_statics

STATIONS = [  # (station, lat, lon, [(depth_from, depth_to)])
    ("ST0", 40.10, -97.90, [(0.05, 0.05), (0.10, 0.10), (0.20, 0.20), (0.40, 0.40), (0.60, 0.60)]),
    ("ST1", 40.15, -97.95, [(0.05, 0.05)]),  # same cell as ST0: L1 averages two series
    ("ST2", 40.60, -97.30, [(0.0, 0.19)]),  # a cosmic-ray-like range sensor -> L1
    ("ST3", 40.90, -97.10, [(0.05, 0.05)]),  # too short: dropped by the 60-day rule
]


def _raw(root, nan_cell_sm: bool = False):
    raw = root / "raw"
    era = write_era5_daily(raw / "era5", "2000-01-01", "2001-12-31")
    if nan_cell_sm:  # ERA5 soil moisture missing around ST2 -> no overlap for its rescaling
        for p in era:
            with xr.open_dataset(p) as src:
                ds = src.load()
            for v in C.ERA5_SM_VARS:
                ds[v].loc[dict(latitude=[40.75, 40.5], longitude=[262.5, 262.75])] = np.nan
            ds.to_netcdf(p)
    st = write_statics(raw / "static")
    for i, (name, lat, lon, depths) in enumerate(STATIONS):
        for j, (d0, d1) in enumerate(depths):
            end = "2000-05-15" if name == "ST3" else "2001-10-31"
            t, v, f = hourly_station("2000-03-01", end, seed=10 * i + j, base=0.2 + 0.02 * j)
            write_ismn_file(raw / "ismn", "NET", name, lat, lon, d0, d1, "Probe", t, v, f)
    return raw, st


def _cfg(root, raw, st, *extra):
    return load_config(
        "tiny",
        [
            f"workdir={root}",
            "data.source=files",
            f"data.ismn={raw / 'ismn'}",
            f"data.era5=[{raw / 'era5' / 'era5_*.nc'}]",
            f"data.etopo={st['etopo']}",
            f"data.gldas_soil={st['gldas_soil']}",
            f"data.gldas_porosity={st['gldas_porosity']}",
            f"data.gldas_vegetation={st['gldas_vegetation']}",
            f"data.land_mask={st['land_mask']}",
            "data.lat_range=[40.0,41.0]",
            "data.lon_range=[-98.0,-97.0]",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prep")
    raw, st = _raw(root)
    cfg = _cfg(root, raw, st)
    report = prepare(cfg)
    return cfg, report, raw


def test_stores_are_written_and_valid(prepared):
    cfg, report, _ = prepared
    d = cfg.store_dir
    f = stores.open_store(d, "forcings")
    s = stores.open_store(d, "statics")
    t = stores.open_store(d, "targets")
    assert f.sizes == {C.TIME: 731, C.LAT: 4, C.LON: 4, C.LAYER: 3}
    assert f[C.TIME].values[0] == np.datetime64("2000-01-01", "ns") and f[C.TIME].values[-1] == np.datetime64(
        "2001-12-31", "ns"
    )
    assert s.sizes == {C.LAT: 4, C.LON: 4} and float(s[C.LAND_MASK].sum()) == 16
    assert t.sizes[C.TIME] == len(pd.date_range(cfg.data.target_start, cfg.data.target_end))
    assert t[C.LAYER].values.tolist() == list(C.LAYERS)
    for v in C.DYNAMIC_INPUTS + (C.SM_ERA5,):
        assert np.isfinite(f[v].values).all(), v
        assert f[v].attrs["units"] == C.UNITS[v]
    for v in C.STATIC_INPUTS:
        assert np.isfinite(s[v].values).all(), v
    assert (d / C.STATS_FILE).exists() and (d / C.PREPARE_REPORT).exists() and (d / "prepare_report.md").exists()
    # chunks: whole cells x chunk_days of time for the forcings; one layer x cells x all days for targets
    assert f["t2m"].encoding["chunks"] == (731, 4, 4)
    assert t[C.SM].encoding["chunks"] == (1, t.sizes[C.CELL], t.sizes[C.TIME])


def test_targets_equal_a_hand_pipeline(prepared):
    cfg, _, raw = prepared
    t = stores.open_store(cfg.store_dir, "targets")
    f = stores.open_store(cfg.store_dir, "forcings")
    days = pd.date_range(cfg.data.target_start, cfg.data.target_end)

    def daily(name, depth):
        p = next((raw / "ismn" / "NET" / name).glob(f"*_sm_{depth:.6f}_*"))
        ds = read_ismn_file(p)
        v = pd.Series(ds["sm"].values, index=pd.DatetimeIndex(ds["time"].values))
        v = v[ds["ismn_flag"].values == "G"]
        g = v.groupby(v.index.floor("D"))
        m = g.mean()[g.size() >= 6]
        return m[(m.index >= days[0]) & (m.index <= days[-1])]

    def rescaled(x, e):
        both = pd.concat([x, e], axis=1, join="inner").dropna()
        mx, sx = both.iloc[:, 0].mean(), both.iloc[:, 0].std(ddof=0)
        me, se = both.iloc[:, 1].mean(), both.iloc[:, 1].std(ddof=0)
        return me + (x - mx) * se / sx

    cell = int(grid.cell_id(40.10, -97.90))
    lat, lon = grid.cell_centre(cell)
    e1 = pd.Series(
        f[C.SM_ERA5]
        .sel(layer="L1", latitude=lat, longitude=lon, time=slice(days[0], days[-1]))
        .values.astype(np.float64),
        index=days,
    )
    a = rescaled(daily("ST0", 0.05), e1).reindex(days)
    b = rescaled(daily("ST1", 0.05), e1).reindex(days)
    expected = pd.concat([a, b], axis=1).mean(axis=1, skipna=True).to_numpy()
    got = t[C.SM].sel(layer="L1", cell=cell).values
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert int(t["n_series"].sel(layer="L1", cell=cell)) == 2
    assert (
        t["provenance"].sel(layer="L1", cell=cell).values.item() == "NET/ST0/Probe@0.05-0.05m; NET/ST1/Probe@0.05-0.05m"
    )
    assert t["provenance"].sel(layer="L2", cell=cell).values.item() == "NET/ST0/Probe@0.2-0.2m"
    assert t["provenance"].sel(layer="L3", cell=cell).values.item() == "NET/ST0/Probe@0.4-0.4m"
    c2 = int(grid.cell_id(40.60, -97.30))
    assert t["provenance"].sel(layer="L1", cell=c2).values.item() == "NET/ST2/Probe@0-0.19m"
    assert int(t["n_series"].sel(layer="L2", cell=c2)) == 0 and np.isnan(t[C.SM].sel(layer="L2", cell=c2).values).all()


def test_report_counts_every_step(prepared):
    cfg, report, _ = prepared
    steps = {s["step"]: s for s in report["targets"]["steps"]}
    assert list(steps) == [
        "region",
        "read",
        "quality flag",
        "physical bounds",
        "daily mean",
        "target period",
        "sensor length",
        "layer selection",
        "rescaling",
        "gridding",
        "inputs complete",
    ]
    for s in report["targets"]["steps"]:
        assert s["values_in"] - s["values_kept"] == sum(s["values_dropped"].values())
    assert steps["read"]["sensors_in"] == 8 and steps["read"]["stations_in"] == 4
    assert steps["quality flag"]["values_dropped"].keys() == {"flag D03,D05"}
    # ST3 observes until 2000-05-15: 1 April .. 15 May = 30 + 15 days in the target period
    assert steps["sensor length"]["sensors_dropped"] == {"fewer than 60 daily values": 1}
    assert steps["sensor length"]["stations_dropped"] == 1
    assert steps["layer selection"]["sensors_kept"] == 5
    dropped = {d["id"]: d["reason"] for d in report["targets"]["dropped"]}
    assert "below the deepest layer" in dropped["NET/ST0/Probe@0.6-0.6m"]
    assert "not selected for L1" in dropped["NET/ST0/Probe@0.1-0.1m"]
    assert dropped["NET/ST3/Probe@0.05-0.05m"] == "45 daily values < 60"
    assert steps["layer selection"]["sensors_dropped"] == {
        "deeper than the deepest layer (50 cm)": 1,
        "not selected for L1 (another sensor of the station is closer to 5 cm or has more days)": 1,
    }
    on_disk = json.loads((cfg.store_dir / C.PREPARE_REPORT).read_text())
    assert (
        on_disk["targets"]["cells"]
        == report["targets"]["cells"]
        == {
            "L1": {"cells": 2, "series": 3, "values": on_disk["targets"]["cells"]["L1"]["values"]},
            "L2": {"cells": 1, "series": 1, "values": on_disk["targets"]["cells"]["L2"]["values"]},
            "L3": {"cells": 1, "series": 1, "values": on_disk["targets"]["cells"]["L3"]["values"]},
        }
    )
    md = (cfg.store_dir / "prepare_report.md").read_text()
    assert "| quality flag | values |" in md and "fewer than 60 daily values: 1" in md and "45 daily values < 60" in md


def test_normalization_file_matches_numpy(prepared):
    cfg, _, _ = prepared
    st = NormStats.load(cfg.store_dir / C.STATS_FILE)
    f = stores.open_store(cfg.store_dir, "forcings")
    s = stores.open_store(cfg.store_dir, "statics")
    t = stores.open_store(cfg.store_dir, "targets")
    cells = t[C.CELL].values
    assert st.cells == tuple(int(c) for c in sorted(cells))
    assert st.period == (cfg.data.target_start, cfg.data.target_end)
    lat, lon = grid.cell_centre(cells)
    sel = dict(time=slice(cfg.data.target_start, cfg.data.target_end))
    for v in C.DYNAMIC_INPUTS:
        x = np.stack([f[v].sel(latitude=a, longitude=b, **sel).values for a, b in zip(lat, lon)]).astype(np.float64)
        assert st.mean[v] == pytest.approx(x.mean(), rel=1e-9) and st.std[v] == pytest.approx(x.std(), rel=1e-9)
    for v in C.STATIC_INPUTS:
        x = np.array([s[v].sel(latitude=a, longitude=b).values.item() for a, b in zip(lat, lon)], np.float64)
        assert st.mean[v] == pytest.approx(x.mean(), rel=1e-9)
    for layer in C.LAYERS:
        y = t[C.SM].sel(layer=layer, **sel).values.astype(np.float64)
        assert st.target_mean[layer] == pytest.approx(np.nanmean(y), rel=1e-9)
        assert st.target_std[layer] == pytest.approx(np.nanstd(y), rel=1e-9)
    assert st.mean["sm_L1"] == st.target_mean["L1"]
    # a subset of cells and a shorter period (a training split)
    one = compute_stats(f, s, t, [int(cells[0])], ("2001-01-01", "2001-06-30"))
    x = (
        f["t2m"]
        .sel(latitude=lat[0], longitude=lon[0], time=slice("2001-01-01", "2001-06-30"))
        .values.astype(np.float64)
    )
    assert one.mean["t2m"] == pytest.approx(x.mean(), rel=1e-9) and one.cells == (int(cells[0]),)


def test_cli_end_to_end(tmp_path):
    from somojax.cli import main

    raw, st = _raw(tmp_path)
    cfg = _cfg(tmp_path, raw, st)
    args = [
        "prepare",
        "-c",
        "tiny",
        f"workdir={tmp_path}",
        "data.source=files",
        f"data.ismn={cfg.data.ismn}",
        f"data.era5=[{cfg.data.era5[0]}]",
    ]
    args += [
        f"data.{k}={getattr(cfg.data, k)}"
        for k in ("etopo", "gldas_soil", "gldas_porosity", "gldas_vegetation", "land_mask")
    ]
    args += ["data.lat_range=[40.0,41.0]", "data.lon_range=[-98.0,-97.0]"]
    assert main(args) == 0
    assert stores.open_store(tmp_path / "stores", "targets").sizes[C.CELL] == 2


def test_no_overlap_series_is_skipped_with_reason(tmp_path):
    raw, st = _raw(tmp_path, nan_cell_sm=True)
    report = prepare(_cfg(tmp_path, raw, st))
    steps = {s["step"]: s for s in report["targets"]["steps"]}
    assert steps["rescaling"]["series_dropped"] == {"no overlap with ERA5 soil moisture of the cell": 1}
    detail = [d for d in report["targets"]["dropped"] if d["step"] == "rescaling"]
    assert detail == [
        {
            "step": "rescaling",
            "what": "series",
            "id": "NET/ST2/Probe@0-0.19m (L1)",
            "reason": "no overlap with ERA5 soil moisture of the cell (no common day)",
        }
    ]
    t = stores.open_store(tmp_path / "stores", "targets")
    assert int(grid.cell_id(40.60, -97.30)) not in t[C.CELL].values.tolist()


def test_wrong_store_fails_with_message(prepared, tmp_path):
    cfg, _, _ = prepared
    with pytest.raises(StoreError, match="is a 'statics' store, expected a 'forcings' store"):
        stores.open_store(cfg.store_dir / C.STATICS_STORE, "forcings")
    t = stores.open_store(cfg.store_dir, "targets").load()
    bad = t.drop_vars("n_series")
    bad.attrs = {}
    bad.to_zarr(tmp_path / "t.zarr", zarr_format=3, consolidated=False)
    with pytest.raises(StoreError, match=r"t\.zarr: variable 'n_series' is missing"):
        stores.open_store(tmp_path / "t.zarr", "targets")
    moved = t.assign_coords(latitude=t[C.LAT] + 1.0)
    moved.attrs = {}
    moved.to_zarr(tmp_path / "m.zarr", zarr_format=3, consolidated=False)
    with pytest.raises(StoreError, match=r"m\.zarr: cell \d+ has latitude/longitude .* which lie in cell \d+"):
        stores.open_store(tmp_path / "m.zarr", "targets")
    f = stores.open_store(cfg.store_dir, "forcings")[["t2m", C.SM_ERA5]].isel(time=slice(0, 3)).load()
    shifted = f.assign_coords(latitude=f[C.LAT] - 0.125)
    shifted.attrs = {}
    shifted.to_zarr(tmp_path / "f.zarr", zarr_format=3, consolidated=False)
    with pytest.raises(StoreError, match=r"f\.zarr: latitude values are not 0\.25° cell centres"):
        stores.open_store(tmp_path / "f.zarr", "forcings", ["t2m"])


def test_spinup_check_says_how_many_days_are_missing():
    assert spinup_days("L1", 365) == 364 and spinup_days("L3", 365) == 1092
    check_spinup("1997-01-01", "2000-01-01", C.LAYERS, 365)  # SoMo.ml v1: exactly enough (1095 >= 1092)
    with pytest.raises(
        ConfigError,
        match=r"layer L3 needs 1092 days of forcing before .* 2000-01-01 .* \(730 days before\): 362 days are missing\. Set data\.forcing_start to 1997-01-04 or earlier",
    ):
        check_spinup("1998-01-01", "2000-01-01", C.LAYERS, 365)
    check_spinup("1998-01-01", "2000-01-01", ("L1",), 365)  # layer 1 alone needs 364 days


def test_prepare_refuses_short_spinup_before_reading(tmp_path):
    cfg = load_config("tiny", [f"workdir={tmp_path}", "data.target_start=2000-02-01"])
    with pytest.raises(ConfigError, match=r"layer L3 needs 87 days .* 56 days are missing"):
        prepare(cfg)


def test_bad_era5_units_fail_prepare_and_keep_a_report(tmp_path):
    raw, st = _raw(tmp_path)
    for p in sorted((raw / "era5").glob("*.nc")):
        with xr.open_dataset(p) as src:
            ds = src.load()
        ds["t2m"] = (ds["t2m"] - 273.15).assign_attrs(units="degC")
        ds.to_netcdf(p)
    with pytest.raises(InputDataError, match=r"era5_2000\.nc: variable 't2m' has units 'degC', expected 'K'"):
        prepare(_cfg(tmp_path, raw, st))
    rep = json.loads((tmp_path / "stores" / C.PREPARE_REPORT).read_text())
    assert "degC" in rep["error"]


def test_missing_inputs_and_short_era5_are_named(tmp_path):
    raw, st = _raw(tmp_path)
    cfg = _cfg(tmp_path, raw, st, "data.etopo=")
    with pytest.raises(InputDataError, match=r"data\.etopo is not set"):
        prepare(cfg)
    cfg = _cfg(tmp_path, raw, st, "data.forcing_end=2002-01-31")
    with pytest.raises(InputDataError, match=r"31 of 762 time steps needed are missing \(2002-01-01T00"):
        prepare(cfg)
    shutil.rmtree(raw / "ismn")
    with pytest.raises(InputDataError, match=r"ISMN archive .*ismn does not exist"):
        prepare(_cfg(tmp_path, raw, st))


def test_era5_outside_the_forcing_period_is_named(tmp_path):
    raw, st = _raw(tmp_path)
    cfg = _cfg(
        tmp_path,
        raw,
        st,
        "data.forcing_start=1990-01-01",
        "data.forcing_end=1991-12-31",
        "data.target_start=1990-06-01",
        "data.target_end=1991-12-31",
    )
    with pytest.raises(
        InputDataError,
        match=r"tp: no time step in 1990-01-01\.\.1991-12-31 in .*era5_2000\.nc.*none of the forcing period",
    ):
        prepare(cfg)


def test_parallel_reading_gives_the_same_targets(prepared):
    from somojax.prepare.ismn import scan_ismn
    from somojax.prepare.report import Ledger
    from somojax.prepare.targets import TargetRules, daily_series

    cfg, _, raw = prepared
    d = cfg.data
    rules = TargetRules(
        d.target_start,
        d.target_end,
        d.lat_range,
        d.lon_range,
        d.quality_flags,
        d.min_values_per_day,
        d.min_days_per_sensor,
    )
    scan = scan_ismn(raw / "ismn")
    a_led, b_led = Ledger(), Ledger()
    a, _, _ = daily_series(scan, rules, a_led, workers=1)
    b, _, _ = daily_series(scan, rules, b_led, workers=2)
    assert [s.key for s in a] == [s.key for s in b]
    for x, y in zip(a, b):
        pd.testing.assert_series_equal(x.daily, y.daily)
    assert a_led.steps == b_led.steps


def test_compute_stats_rejects_cells_outside_the_store(prepared):
    cfg, _, _ = prepared
    f, s, t = (stores.open_store(cfg.store_dir, k) for k in ("forcings", "statics", "targets"))
    far = int(grid.cell_id(-30.1, 20.1))
    with pytest.raises(StoreError, match=rf"cells \[{far}\] lie outside the store's region"):
        compute_stats(f, s, t, [far], (cfg.data.target_start, cfg.data.target_end))


def test_statics_from_multi_chunk_inputs_are_written_in_one_chunk(prepared, tmp_path):
    from somojax.prepare.core import _encoding, _rechunk

    cfg, _, _ = prepared
    s = stores.open_store(cfg.store_dir, "statics").load().chunk({C.LAT: 1, C.LON: 3})  # e.g. ETOPO blocks
    s.attrs = {}
    stores.write_store(_rechunk(s, {}), tmp_path / "s.zarr", "statics", _encoding(s, {}))
    back = stores.open_store(tmp_path / "s.zarr", "statics")
    assert back["clay"].encoding["chunks"] == (4, 4)
    np.testing.assert_array_equal(back["clay"].values, s["clay"].values)
