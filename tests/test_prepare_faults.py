"""`prepare` under bad input and write failures, end to end on small raw files: implausible ERA5,
GLDAS and ISMN values, missing units, a damaged ISMN zip, a full disk, a store directory that
cannot be made. Each case checks the message, the report and that no store was half-written."""

from __future__ import annotations

import errno
import json
import logging
import shutil
import zipfile

import numpy as np
import pytest
import xarray as xr

from somojax import constants as C
from somojax import grid, stores
from somojax.errors import InputDataError, OutputError
from somojax.prepare import prepare

from test_prepare_stores import _cfg, _raw


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Raw files and the stores of one complete preparation (the 'previous run')."""
    root = tmp_path_factory.mktemp("faults")
    raw, _ = _raw(root)
    prepare(_cfg(root, raw, _statics(raw)))
    return root


def _statics(raw):
    s = raw / "static"
    return {
        "etopo": s / "etopo1_1arcmin.nc",
        "gldas_soil": s / "GLDASp4_soilfraction_025d.nc4",
        "gldas_porosity": s / "GLDASp4_porosity_025d.nc4",
        "gldas_vegetation": s / "GLDASp4_domveg_025d.nc4",
        "land_mask": s / "GLDASp4_landmask_025d.nc4",
    }


def _copy(base, tmp_path, with_stores=True):
    shutil.copytree(base / "raw", tmp_path / "raw")
    if with_stores:
        shutil.copytree(base / "stores", tmp_path / "stores")
    return tmp_path / "raw"


def _cfg_at(root, *extra):
    raw = root / "raw"
    return _cfg(root, raw, _statics(raw), *extra)


def _edit_nc(path, change):
    with xr.open_dataset(path, mask_and_scale=False) as src:
        ds = src.load()
    change(ds)
    for v in ds.variables:
        ds[v].encoding = {}
    ds.to_netcdf(path)


def _snapshot(store_dir):
    """The metadata files of the stores (a rewrite changes them: new ids, new timestamps)."""
    return {p.relative_to(store_dir): p.stat().st_mtime_ns for p in store_dir.rglob("zarr.json")} | {
        C.STATS_FILE: (store_dir / C.STATS_FILE).stat().st_mtime_ns
    }


def _no_staging_left(store_dir):
    return not list(store_dir.glob(".prepare-*")) and not list(store_dir.rglob("*.tmp"))


def test_celsius_labelled_kelvin_stops_before_writing_and_keeps_the_previous_stores(base, tmp_path):
    raw = _copy(base, tmp_path)
    before = _snapshot(tmp_path / "stores")

    def to_celsius(ds):
        ds["t2m"].values = ds["t2m"].values - 273.15  # the attribute still says K

    _edit_nc(raw / "era5" / "era5_2001.nc", to_celsius)
    with pytest.raises(
        InputDataError,
        match=r"era5_2001\.nc: 't2m' is implausible as a whole: 100\.0% of its 9,125 values lie outside 160\.\.340 K \(below 160 K: 9,125; min -3\.49\d*, mean 9\.86.*convert with \+273\.15\) .*Nothing was written",
    ):
        prepare(_cfg_at(tmp_path))
    assert _snapshot(tmp_path / "stores") == before and _no_staging_left(tmp_path / "stores")
    rep = json.loads((tmp_path / "stores" / C.PREPARE_REPORT).read_text())
    assert "t2m" in rep["error"]
    by_file = {(s["file"].rsplit("/", 1)[-1], s["variable"]): s for s in rep["plausibility"]["era5"]}
    assert by_file[("era5_2000.nc", "t2m")]["dropped"] == {} and by_file[("era5_2001.nc", "t2m")]["dropped"] == {
        "below 160 K": 9125
    }


def test_era5_without_units_needs_data_units(base, tmp_path):
    raw = _copy(base, tmp_path, with_stores=False)
    for p in sorted((raw / "era5").glob("*.nc")):
        _edit_nc(p, lambda ds: ds["tp"].attrs.pop("units"))
    with pytest.raises(
        InputDataError, match=r"era5_2000\.nc: variable 'tp' has no 'units' attribute; .*data\.units: \{tp: m\}"
    ):
        prepare(_cfg_at(tmp_path))
    assert not (tmp_path / "stores" / C.FORCINGS_STORE).exists()
    report = prepare(_cfg_at(tmp_path, "data.units={tp: m}"))
    assert report["settings"]["units"] == (("tp", "m"),)
    assert stores.open_store(tmp_path / "stores", "targets").sizes[C.CELL] == 2


def test_precipitation_rounding_noise_is_zero_and_negative_totals_stop(base, tmp_path):
    raw = _copy(base, tmp_path, with_stores=False)
    p = raw / "era5" / "era5_2000.nc"

    def noise(ds):  # GRIB-packing noise on day 2000-01-05 at every point
        ds["tp"].values[4] = -3e-6

    _edit_nc(p, noise)
    report = prepare(_cfg_at(tmp_path))
    tp = {s["file"]: s for s in report["plausibility"]["era5"] if s["variable"] == "tp"}
    assert tp[str(p)]["set_to_bound"] == 25 and tp[str(p)]["dropped"] == {}
    f = stores.open_store(tmp_path / "stores", "forcings")
    assert float(abs(f["log_tp"].sel(time="2000-01-05")).max()) == 0.0  # ln(1 + 0 mm)

    def negative(ds):  # a tenth of the days at -1 cm: beyond any rounding
        ds["tp"].values[::10] = -0.01

    _edit_nc(p, negative)
    with pytest.raises(
        InputDataError,
        match=r"era5_2000\.nc: 'tp' is implausible as a whole: 10\.1% of its 9,150 values lie outside 0\.\.2 m \(below 0 m: 925",
    ):
        prepare(_cfg_at(tmp_path))


def test_gldas_fill_value_without_fillvalue_on_land_stops_off_land_is_counted(base, tmp_path):
    raw = _copy(base, tmp_path, with_stores=False)
    soil, mask = raw / "static" / "GLDASp4_soilfraction_025d.nc4", raw / "static" / "GLDASp4_landmask_025d.nc4"
    water = dict(lat=40.375, lon=-97.625)  # a cell without a station

    def fill_all(ds):
        ds["GLDAS_soilfraction_clay"].attrs.pop("missing_value", None)
        ds["GLDAS_soilfraction_clay"].values[:] = -9999.0

    with xr.open_dataset(soil, mask_and_scale=False) as src:
        original = src.load()
    _edit_nc(soil, fill_all)
    with pytest.raises(
        InputDataError,
        match=r"GLDASp4_soilfraction_025d\.nc4 \(GLDAS_soilfraction_clay\): 'clay' is implausible as a whole: 100\.0% of its 16 values on the 16 land cells lie outside 0\.\.1 1 \(fill value .*: 16; min -9999.*fill value such as −9999 over land",
    ):
        prepare(_cfg_at(tmp_path))

    def fill_water_cell(ds):
        ds["GLDAS_soilfraction_clay"].values[:] = original["GLDAS_soilfraction_clay"].values
        ds["GLDAS_soilfraction_clay"].attrs.pop("missing_value", None)
        ds["GLDAS_soilfraction_clay"].loc[dict(time=ds.time[0], **water)] = -9999.0

    def water_there(ds):
        ds["GLDAS_mask"].loc[dict(time=ds.time[0], **water)] = 0.0

    _edit_nc(soil, fill_water_cell)
    _edit_nc(mask, water_there)
    report = prepare(_cfg_at(tmp_path))
    clay = next(s for s in report["plausibility"]["statics"] if s["variable"] == "clay")
    assert clay["values"] == 15 and clay["dropped"] == {} and clay["dropped off land"] == 1
    s = stores.open_store(tmp_path / "stores", "statics")
    assert np.isnan(float(s["clay"].sel(latitude=water["lat"], longitude=water["lon"])))  # not -9999
    assert float(s["clay"].min()) > 0


def test_truncated_ismn_zip_stops_before_any_store_is_written(base, tmp_path):
    raw = _copy(base, tmp_path, with_stores=False)
    zp = raw / "ismn.zip"
    with zipfile.ZipFile(zp, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted((raw / "ismn").rglob("*.stm")):
            z.write(f, f.relative_to(raw / "ismn"))
    zp.write_bytes(zp.read_bytes()[: zp.stat().st_size * 2 // 3])
    with pytest.raises(InputDataError, match=r"ismn\.zip: not a readable zip archive .*download it again"):
        prepare(_cfg_at(tmp_path, f"data.ismn={zp}"))
    assert not any(
        (tmp_path / "stores" / n).exists() for n in (C.FORCINGS_STORE, C.STATICS_STORE, C.TARGETS_STORE, C.STATS_FILE)
    )
    assert _no_staging_left(tmp_path / "stores")


def test_bad_ismn_values_and_lines_are_reported_per_file(base, tmp_path, caplog):
    raw = _copy(base, tmp_path, with_stores=False)
    f = next((raw / "ismn" / "NET" / "ST1").glob("*.stm"))
    lines = f.read_bytes().decode().split("\r\n")
    for i, v in ((100, "-9999.0000"), (200, "1.7000"), (300, "-0.5000")):
        parts = lines[i].split()
        lines[i] = " ".join(parts[:2] + [v, "G", parts[4]])
    lines.insert(400, "### an editor's stray line")
    f.write_bytes("\r\n".join(lines).encode())
    caplog.set_level(logging.INFO, logger="somojax")
    report = prepare(_cfg_at(tmp_path))
    steps = {s["step"]: s for s in report["targets"]["steps"]}
    assert steps["read"]["values_dropped"] == {"unparseable line": 1}
    assert steps["physical bounds"]["values_dropped"] == {
        "fill value (-9999, ±1e20, ...)": 1,
        "above 0.8 m3 m-3": 1,
        "below 0 m3 m-3": 1,
    }
    (rec,) = report["targets"]["implausible_values"]
    assert rec["file"] == str(f) and rec["min"] == -9999.0 and rec["max"] == 1.7
    assert any(
        p["file"] == str(f) and "1 of" in p["reason"] and "an editor's stray line" in p["reason"]
        for p in report["targets"]["file_problems"]
    )
    md = (tmp_path / "stores" / "prepare_report.md").read_text()
    assert (
        "## ISMN files with values outside the physical bounds (1)" in md
        and str(f) in md
        and "an editor's stray line" in md
    )
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert (
        "ISMN files: 8 of soil moisture, 0 unreadable (skipped), 0 outside the region, 8 read (1 unparseable lines skipped in 1 files)"
        in log
    )
    assert "sensors: 8 -> 5 kept (dropped:" in log and "stations: 4 -> 3 with targets" in log
    assert "outside the physical bounds: ISMN 3 values in 1 files" in log
    t = stores.open_store(tmp_path / "stores", "targets")
    assert float(t[C.SM].max()) < 0.8 and int(grid.cell_id(40.15, -97.95)) in t[C.CELL].values.tolist()


def test_disk_full_while_writing_names_the_store_and_keeps_the_previous_ones(base, tmp_path, monkeypatch):
    _copy(base, tmp_path)
    before = _snapshot(tmp_path / "stores")
    real = xr.Dataset.to_zarr

    def full_disk(self, store, *a, **k):
        if "targets" in str(store):
            real(self.isel({C.CELL: slice(0, 1)}), store, *a, **k)  # part of it lands on disk first
            raise OSError(errno.ENOSPC, "No space left on device", str(store))
        return real(self, store, *a, **k)

    monkeypatch.setattr(xr.Dataset, "to_zarr", full_disk)
    with pytest.raises(
        OutputError,
        match=r"cannot write the targets store .*stores/targets\.zarr \(.*\.prepare-.*targets\.zarr.*\.tmp\): No space left on device; the disk is full",
    ):
        prepare(_cfg_at(tmp_path))
    assert _snapshot(tmp_path / "stores") == before and _no_staging_left(tmp_path / "stores")
    stores.open_store(tmp_path / "stores", "targets")  # the previous run's stores are still whole


def test_store_dir_that_cannot_be_made_is_one_line_with_exit_2(base, tmp_path, capsys):
    from somojax.cli import main

    raw = _copy(base, tmp_path, with_stores=False)
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the store directory should be")
    cfg = _cfg_at(tmp_path, f"data.store_dir={blocker / 'stores'}")
    with pytest.raises(
        OutputError,
        match=r"cannot write the store directory .*not_a_dir/stores.*: Not a directory; a part of the path is a file",
    ):
        prepare(cfg)
    args = [
        "prepare",
        "-c",
        "tiny",
        f"workdir={tmp_path}",
        "data.source=files",
        f"data.ismn={raw / 'ismn'}",
        f"data.era5=[{raw / 'era5' / 'era5_*.nc'}]",
    ]
    args += [f"data.{k}={v}" for k, v in _statics(raw).items()]
    args += ["data.lat_range=[40.0,41.0]", "data.lon_range=[-98.0,-97.0]", f"data.store_dir={blocker / 'stores'}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "somojax prepare: error: cannot write the store directory" in err and "Traceback" not in err


def test_leftovers_of_an_interrupted_run_are_removed(base, tmp_path):
    _copy(base, tmp_path)
    dead = tmp_path / "stores" / ".prepare-deadbeef" / C.FORCINGS_STORE
    dead.mkdir(parents=True)
    prepare(_cfg_at(tmp_path))
    assert _no_staging_left(tmp_path / "stores")
    for kind in ("forcings", "statics", "targets"):
        stores.open_store(tmp_path / "stores", kind)


def test_damaged_era5_chunk_read_while_writing_is_named(tmp_path):
    # what happens when a sampled check (data.era5_check_steps) did not read the damaged chunk
    import pandas as pd

    from somojax.config import load_config
    from somojax.prepare.core import _Staging, _write_forcings
    from somojax.prepare.era5 import clean_era5, read_era5
    from somojax.prepare.forcings import build_forcings

    from test_prepare_factory import era5_dataset, era5_points

    lats, lons = era5_points((40.0, 42.0), (-98.0, -96.0))
    ds = era5_dataset(pd.date_range("2001-01-01", periods=2000, freq="h"), lats, lons, daily=False)
    p = tmp_path / "era5.nc"
    ds.to_netcdf(p, encoding={v: {"zlib": True, "chunksizes": (100, 9, 9)} for v in ds.data_vars})
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 2000] = bytes(2000)
    p.write_bytes(bytes(raw))
    era5 = read_era5([p])
    forc = build_forcings(clean_era5(era5), "2001-01-01", "2001-03-01", (40.0, 42.0), (-98.0, -96.0))
    cfg = load_config("tiny")
    with pytest.raises(
        InputDataError,
        match=r"reading ERA5 failed while the forcings were written \(NetCDF: HDF error\): a file is damaged; data\.era5_check_steps=0",
    ):
        with _Staging(tmp_path / "stores") as stage:
            _write_forcings(forc, stage, cfg.data, cfg.layout, [str(p)], {})
    assert _no_staging_left(tmp_path / "stores") and not (tmp_path / "stores" / C.FORCINGS_STORE).exists()
