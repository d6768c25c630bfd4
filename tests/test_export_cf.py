"""The exported NetCDF files are what CF tools accept: cfchecks (CF-1.8) finds no error and no
warning, CDO, netCDF4 and xarray open them, and they carry cell_methods, ACDD attributes, valid
ranges and chunks that serve maps and series, without coordinate fill values or run bookkeeping."""

from __future__ import annotations

import importlib.resources
import shutil
import subprocess
import sys
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr

from somojax import constants as C
from somojax.checkpoint import save_bundle
from somojax.config import load_config
from somojax.infer import export, predict
from somojax.infer.export import NETCDF_CHUNKS
from tests.test_infer import _bundle, _stores

DATA = Path(__file__).parent / "data"
OVERRIDES = [
    "infer.start=2000-10-01",
    "infer.end=2001-01-31",
    "layout.shard_time=30",
    "layout.time_block_days=240",
    "layout.shard_lat=2",
    "layout.shard_lon=2",
    "layout.chunk_lat=2",
    "layout.chunk_lon=2",
    "layout.chunk_time=30",
    "infer.institution=Test Institute",
    "infer.export_dir={root}/nc",
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One layer predicted over a period that spans two years: two files."""
    root = tmp_path_factory.mktemp("export_cf")
    cfg = load_config("tiny", [f"workdir={root}/run", *(o.format(root=root) for o in OVERRIDES)])
    _stores(cfg.store_dir, n_days=400)
    save_bundle(_bundle("L1", 3), cfg.checkpoint_dir / "L1")
    predict(cfg, layers=["L1"])
    return cfg, export(cfg)


def cf_checker_command() -> list[str]:
    """cfchecks with the CF standard-name table of the compliance-checker package (no network)."""
    exe = shutil.which("cfchecks") or str(Path(sys.executable).parent / "cfchecks")
    if not Path(exe).exists():
        pytest.skip(
            "cfchecks is not installed (pip install cfchecker; it needs the udunits2 C library: apt-get install libudunits2-dev)"
        )
    try:
        import cfunits  # noqa: F401  (loads the udunits2 C library)
    except (ImportError, OSError) as e:
        pytest.skip(f"cfchecks cannot run: cfunits does not load ({e}); apt-get install libudunits2-dev")
    try:
        table = importlib.resources.files("compliance_checker") / "data" / "cf-standard-name-table.xml"
    except ModuleNotFoundError:
        pytest.skip(
            "the CF standard-name table comes from the compliance-checker package: pip install compliance-checker"
        )
    return [
        exe,
        "-v",
        "1.8",
        "-s",
        str(table),
        "-a",
        str(DATA / "cf-area-type-table-empty.xml"),
        "-r",
        str(DATA / "cf-standardized-region-list-empty.xml"),
    ]


def run_cf_checker(files) -> str:
    out = subprocess.run([*cf_checker_command(), *map(str, files)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_cfchecks_finds_no_error_and_no_warning(exported):
    _, files = exported
    report = run_cf_checker(files)
    assert report.count("ERRORS detected: 0") == len(files), report
    assert report.count("WARNINGS given: 0") == len(files), report
    assert "ERROR" not in report.replace("ERRORS detected: 0", "") and "WARN" not in report.replace(
        "WARNINGS given: 0", ""
    )


def test_cdo_reads_every_file_without_a_warning(exported):
    if shutil.which("cdo") is None:
        pytest.skip("CDO is not installed (Debian: apt-get install cdo)")
    for f in exported[1]:
        out = subprocess.run(["cdo", "sinfon", str(f)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "Warning" not in out.stderr and "Error" not in out.stderr, out.stderr
        assert " sm " in out.stdout + " " and "sm_spread" in out.stdout and "lonlat" in out.stdout
        assert "layer_depth : 0.05 m" in out.stdout and "bounds : 0-0.1 m" in out.stdout


def test_attributes_users_and_catalogues_need(exported):
    cfg, files = exported
    assert [f.name for f in files] == ["somojax_L1_2000.nc", "somojax_L1_2001.nc"]
    with netCDF4.Dataset(files[0]) as nc:
        g = {k: nc.getncattr(k) for k in nc.ncattrs()}
        assert (
            g["Conventions"] == "CF-1.8, ACDD-1.3"
            and g["institution"] == "Test Institute"
            and g["license"] == "CC-BY-4.0"
        )
        assert (g["time_coverage_start"], g["time_coverage_end"], g["time_coverage_resolution"]) == (
            "2000-10-01T00:00:00Z",
            "2001-01-01T00:00:00Z",
            "P1D",
        )
        assert (
            g["geospatial_lat_min"] == 40.0 and g["geospatial_lon_max"] == -96.5 and g["geospatial_vertical_max"] == 0.1
        )
        for key in ("title", "summary", "source", "references", "history", "date_created", "keywords"):
            assert g[key]
        assert "exact rollout: every day predicted from its own 30-day window" in g["source"]
        sm, spread = nc["sm"], nc["sm_spread"]
        assert (
            sm.cell_methods == "time: mean realization: mean"
            and spread.cell_methods == "time: mean realization: standard_deviation"
        )
        assert (sm.valid_min, sm.valid_max) == (
            0.0,
            1.0,
        ) and sm.standard_name == "volume_fraction_of_condensed_water_in_soil"
        for name, var in nc.variables.items():  # fill values only where data may be missing
            assert ("_FillValue" in var.ncattrs()) == (name in ("sm", "sm_spread")), name
        assert nc["time"].bounds == "time_bounds" and nc["layer_depth"].bounds == "layer_depth_bounds"
        np.testing.assert_array_equal(nc["layer_depth_bounds"][:], [0.0, 0.1])
        assert sm.chunking() == [min(n, c) for n, c in zip(sm.shape, NETCDF_CHUNKS)]
        text = " ".join(str(v) for v in g.values()) + " ".join(
            str(var.getncattr(a)) for var in nc.variables.values() for a in var.ncattrs()
        )
        assert (
            "somojax_" not in " ".join(g)
            and "fingerprint" not in text
            and str(cfg.checkpoint_dir) not in text
            and "{" not in text
        )


def test_xarray_reads_the_values_of_the_store(exported):
    cfg, files = exported
    z = xr.open_zarr(cfg.predictions_path)
    both = xr.open_mfdataset(files, combine="by_coords")
    for v in (C.SM, C.SM_SPREAD):
        np.testing.assert_array_equal(both[v].values, z[v].sel(layer="L1").values)
    assert np.isfinite(both[C.SM].values).any() and float(both["layer_depth"]) == pytest.approx(0.05)
    assert both["time_bounds"].values[0, 1] - both["time_bounds"].values[0, 0] == np.timedelta64(1, "D")


def test_store_standard_names_are_in_the_cf_table_with_convertible_units():
    import xml.etree.ElementTree as ET

    from somojax import stores

    try:
        table = importlib.resources.files("compliance_checker") / "data" / "cf-standard-name-table.xml"
    except ModuleNotFoundError:
        pytest.skip(
            "the CF standard-name table comes from the compliance-checker package: pip install compliance-checker"
        )
    canonical = {e.get("id"): e.findtext("canonical_units") for e in ET.parse(str(table)).getroot().iter("entry")}
    try:
        from cfunits import Units
    except (ImportError, OSError):
        Units = None
    for var, name in stores.STANDARD_NAMES.items():
        assert name in canonical, (var, name)
        units = C.UNITS.get(var, "1")
        if Units is not None:
            assert Units(units).equivalent(Units(canonical[name])), (var, units, canonical[name])
        assert stores.cf_attrs(var).get("standard_name", name) == name


def test_analysis_ready_stores_are_consolidated(tmp_path):
    import warnings

    from somojax import stores
    from somojax.grid import lat_centres, lon_centres

    lat, lon = lat_centres(40, 41), lon_centres(-98, -97)
    ds = xr.Dataset(
        {
            v: ((C.LAT, C.LON), np.ones((lat.size, lon.size), np.float32), stores.cf_attrs(v))
            for v in (*C.STATIC_INPUTS, C.LAND_MASK)
        },
        coords={C.LAT: lat, C.LON: lon},
    )
    path = stores.write_store(ds, tmp_path / "statics.zarr", "statics")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "consolidated metadata not found" fallback
        back = xr.open_zarr(path)
    assert (
        back["clay"].attrs["standard_name"] == "mass_fraction_of_clay_in_soil"
        and "standard_name" not in back["ETOPOsd"].attrs
    )
    assert set(back.data_vars) == set(ds.data_vars)
