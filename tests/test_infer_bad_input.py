"""`somojax predict` / `export` on bad input: NaN outputs counted by reason, cells files, damaged
checkpoints, unfinished stores, unwritable outputs."""

import errno
import json
import logging

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from somojax import constants as C
from somojax import grid, stores
from somojax.checkpoint import save_bundle
from somojax.config import load_config
from somojax.errors import CheckpointError, ConfigError, OutputError, StoreError
from somojax.infer import engine, export, predict
from somojax.infer import rollout
from somojax.infer import store as pstore
from tests.test_infer import PERIOD_AND_LAYOUT, L, _bundle, _stores

OVERRIDES = PERIOD_AND_LAYOUT
NAN_FORCING = ("q", 100, 2, 3)  # variable, day, lat index, lon index
NAN_STATIC = ("clay", 1, 4)


def _cfg(root, *more):
    return load_config("tiny", [f"workdir={root}/run", *OVERRIDES, *more])


@pytest.fixture(scope="module")
def nan_world(tmp_path_factory):
    """Stores with one NaN forcing value and one NaN static (on land), checkpoints, a finished rollout."""
    root = tmp_path_factory.mktemp("infer_nan")
    cfg = _cfg(root)
    f, s = _stores(cfg.store_dir)
    var, day, y, x = NAN_FORCING
    f[var].values[day, y, x] = np.nan
    sv, sy, sx = NAN_STATIC
    s[sv].values[sy, sx] = np.nan
    stores.write_store(f, stores.store_path(cfg.store_dir, "forcings"), "forcings")
    stores.write_store(s, stores.store_path(cfg.store_dir, "statics"), "statics")
    bundles = {l: _bundle(l, 20 + i) for i, l in enumerate(C.LAYERS)}
    for l, b in bundles.items():
        save_bundle(b, cfg.checkpoint_dir / l)
    summary = predict(cfg)
    return cfg, f, s, summary


def expected_reasons(f: xr.Dataset, s: xr.Dataset, start: str, end: str) -> dict[str, np.ndarray]:
    """NumPy reference of each stored value's reason code [time, lat, lon] per layer (0: a value,
    -1: not predicted), window by window: a layer's window is complete when every input of its L
    days is finite, and a layer's output feeds the layers below it (the cascade)."""
    days = pd.DatetimeIndex(f[C.TIME].values)
    stored = np.flatnonzero((days >= pd.Timestamp(start)) & (days <= pd.Timestamp(end)))
    land = s[C.LAND_MASK].values > 0
    dyn_finite = np.all([np.isfinite(f[v].values) for v in C.DYNAMIC_INPUTS], axis=0)  # [T, y, x]
    static_finite = np.all([np.isfinite(s[v].values) for v in C.STATIC_INPUTS], axis=0)
    code = {k: 1 + engine.NAN_REASONS.index(k) for k in engine.NAN_REASONS}
    out, upper_ok = {}, np.ones_like(dyn_finite)
    for layer in C.LAYERS:
        inputs_ok = dyn_finite & upper_ok  # sm_L1 (and sm_L2) are inputs of the lower layers
        ok = np.zeros_like(inputs_ok)
        for t in range(L - 1, len(days)):
            ok[t] = inputs_ok[t - L + 1 : t + 1].all(axis=0) & static_finite
        reason = np.where(ok, 0, code["nonfinite_dynamic_input"])
        reason = np.where(static_finite, reason, code["nonfinite_static_input"])
        reason[: L - 1] = np.where(static_finite, code["incomplete_window"], code["nonfinite_static_input"])
        out[layer] = np.where(land, reason, -1)[stored]
        upper_ok = upper_ok & ok
    return out


def test_nan_outputs_are_counted_per_layer_and_reason(nan_world):
    cfg, f, s, summary = nan_world
    want = expected_reasons(f, s, cfg.infer.start, cfg.infer.end)
    ds = xr.open_zarr(cfg.predictions_path)
    attrs = json.loads(ds.attrs["somojax_nan_counts"])
    assert attrs == summary["nan_counts"]
    for li, layer in enumerate(C.LAYERS):
        w = want[layer]
        counts = {r: int((w == 1 + i).sum()) for i, r in enumerate(engine.NAN_REASONS)}
        assert attrs[layer] == {"values": int((w >= 0).sum()), **counts}, layer
        # the placement: NaN exactly where a reason applies, a value everywhere else predicted
        got_nan = np.isnan(ds[C.SM].values[li])
        np.testing.assert_array_equal(got_nan[w >= 0], w[w >= 0] > 0)
    # both injected faults are seen, and the cascade spreads the forcing NaN downwards
    assert attrs["L1"]["nonfinite_static_input"] == ds.sizes[C.TIME]  # one cell, every day
    n_dyn = [attrs[l]["nonfinite_dynamic_input"] for l in C.LAYERS]
    assert 0 < n_dyn[0] < n_dyn[1] < n_dyn[2]
    assert attrs["L1"]["incomplete_window"] == 0 and attrs["L1"]["nonfinite_model_output"] == 0


def test_incomplete_windows_and_non_finite_model_outputs_are_counted(nan_world):
    _, f, s, _ = nan_world
    b = _bundle("L1", 3)
    rows, cols = np.array([0, 2]), np.array([1, 3])
    columns = {v: f[v].values[:50, rows, cols].T.astype(np.float64) for v in C.DYNAMIC_INPUTS}
    statics = {v: s[v].values[rows, cols].astype(np.float64) for v in C.STATIC_INPUTS}
    statics["clay"][1] = np.inf
    counts = engine.count_nan_reasons(engine.layer_predictions(b, columns, statics).nan_reason)
    assert counts == {
        "values": 100,
        "nonfinite_static_input": 50,  # the second cell, every day
        "incomplete_window": L - 1,  # the first cell's first L - 1 days
        "nonfinite_dynamic_input": 0,
        "nonfinite_model_output": 0,
    }
    broken = _bundle("L1", 3)
    broken.params["b_fc"][:] = np.inf  # finite inputs, infinite outputs
    statics["clay"][1] = 0.0
    counts = engine.count_nan_reasons(engine.layer_predictions(broken, columns, statics).nan_reason)
    assert counts["nonfinite_model_output"] == 2 * (50 - L + 1) and counts["incomplete_window"] == 2 * (L - 1)


def test_store_is_complete_only_when_every_block_is(nan_world, tmp_path, monkeypatch, caplog):
    cfg, *_ = nan_world
    assert xr.open_zarr(cfg.predictions_path).attrs["somojax_complete"] is True
    part = load_config("tiny", [f"workdir={cfg.workdir}", *OVERRIDES, f"infer.output={tmp_path}/part.zarr"])
    real, calls = rollout._write_and_mark, []

    def dying(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(rollout, "_write_and_mark", dying)
    with pytest.raises(KeyboardInterrupt):
        predict(part)
    with pytest.raises(StoreError, match=r"part\.zarr is incomplete \(2 \(tile, block\) pairs finished\).*resumes"):
        export(part)
    monkeypatch.setattr(rollout, "_write_and_mark", real)
    logger = logging.getLogger("somojax")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="somojax")
    try:
        summary = predict(part)
    finally:
        logger.removeHandler(caplog.handler)
    n = summary["nan_counts"]["L3"]
    assert (
        f"L3: {sum(v for k, v in n.items() if k != 'values')} of {n['values']} predicted values NaN (non-finite static input"
        in caplog.text
    )
    assert (
        len(
            export(
                load_config(
                    "tiny",
                    [
                        f"workdir={cfg.workdir}",
                        *OVERRIDES,
                        f"infer.output={tmp_path}/part.zarr",
                        f"infer.export_dir={tmp_path}/nc",
                    ],
                )
            )
        )
        == 3
    )


def test_export_of_a_missing_store_and_of_another_store(nan_world, tmp_path):
    cfg, *_ = nan_world
    with pytest.raises(StoreError, match=r"predictions store .*none\.zarr does not exist; run the stage"):
        export(_cfg(tmp_path, f"infer.output={tmp_path}/none.zarr"))
    forcings = stores.store_path(cfg.store_dir, "forcings")
    with pytest.raises(StoreError, match=r"is a 'forcings' store, expected a 'predictions' store"):
        export(_cfg(tmp_path, f"infer.output={forcings}"))


def test_a_failed_netcdf_write_leaves_no_file(nan_world, tmp_path, monkeypatch):
    cfg, *_ = nan_world
    out = load_config("tiny", [f"workdir={cfg.workdir}", *OVERRIDES, f"infer.export_dir={tmp_path}/nc"])

    def full_disk(self, path, *a, **k):
        open(path, "wb").write(b"half")  # what a write cut short leaves
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", full_disk)
    with pytest.raises(
        OutputError,
        match=r"cannot write the NetCDF export .*somojax_L1_2000\.nc: No space left on device; the disk is full",
    ):
        export(out)
    assert list((tmp_path / "nc").iterdir()) == []  # no partial file under any name


def test_unwritable_prediction_store_names_its_path(nan_world, tmp_path, monkeypatch):
    import zarr

    cfg, *_ = nan_world
    out = load_config("tiny", [f"workdir={cfg.workdir}", *OVERRIDES, f"infer.output={tmp_path}/p.zarr"])

    def denied(self, *a):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "p.zarr" / "sm" / "c"))

    monkeypatch.setattr(zarr.Array, "__setitem__", denied)
    with pytest.raises(
        OutputError, match=r"cannot write the prediction store .*p\.zarr \(.*p\.zarr/sm/c\): Permission denied"
    ):
        predict(out)
    assert not pstore.finished(tmp_path / "p.zarr")  # nothing marked as done


# ----------------------------------------------------------------------------------------
# cells files and checkpoints
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "rows, message",
    [
        (
            "latitude,longitude\n40.125,-97.375\nforty,-97.125\n",
            r"1 latitude values are not numbers in -90\.\.90 \(line 3: 'forty'\)",
        ),
        (
            "latitude,longitude\n40.125,-97.375\n95.0,-97.125\n",
            r"latitude values are not numbers in -90\.\.90 \(line 3: '95\.0'\)",
        ),
        (
            "latitude,longitude\n40.125,-97.375\n40.125,400\n",
            r"longitude values are not numbers in -180\.\.360 \(line 3: '400'\)",
        ),
        (
            "latitude,longitude\n40.125,-97.375\n40.2,-97.3\n",
            r"lines 2, 3 name the same 0\.25° cell \(40\.125, -97\.375\)",
        ),
        (
            "latitude,longitude\n40.125,-97.375\n10.125,20.125\n",
            r"1 of its 2 cells lie outside the statics store .*\(10\.125, 20\.125\)",
        ),
        ("lat,lon\n40.125,-97.375\n", r"needs columns latitude and longitude \(found \['lat', 'lon'\]\)"),
        ("latitude,longitude\n", "lists no row"),
        ("", "is not a readable CSV"),
    ],
)
def test_bad_cells_files_are_named_by_line(nan_world, tmp_path, rows, message):
    cfg, f, s, _ = nan_world
    path = tmp_path / "cells.csv"
    path.write_text(rows)
    bad = load_config("tiny", [f"workdir={cfg.workdir}", *OVERRIDES, "infer.region=cells", f"infer.cells_file={path}"])
    with pytest.raises(ConfigError, match=message):
        rollout.region_mask(bad, s)


def test_a_good_cells_file_selects_its_cells(nan_world, tmp_path):
    cfg, f, s, _ = nan_world
    path = tmp_path / "cells.csv"
    path.write_text("Latitude, Longitude\n40.125,-97.375\n40.6,262.7\n")  # 0..360 longitudes are wrapped
    good = load_config("tiny", [f"workdir={cfg.workdir}", *OVERRIDES, "infer.region=cells", f"infer.cells_file={path}"])
    lat, lon, mask = rollout.region_mask(good, s)
    ids = grid.cell_id(lat[:, None], lon[None, :])[mask]
    assert sorted(ids.tolist()) == sorted(
        grid.cell_id(np.array([40.125, 40.625]), np.array([-97.375, -97.375])).tolist()
    )


def test_damaged_and_misplaced_checkpoints_are_refused(nan_world, tmp_path):
    cfg, *_ = nan_world
    base = [*OVERRIDES, f"data.store_dir={cfg.store_dir}"]
    broken = load_config("tiny", [f"workdir={tmp_path}/a", *base])
    (broken.checkpoint_dir / "L1" / "best" / "0").mkdir(parents=True)  # a step directory without contents
    with pytest.raises(
        CheckpointError,
        match=r"checkpoint .*L1 cannot be read .*damaged or not a somojax checkpoint.*--fresh --layers L1",
    ):
        predict(broken, layers=["L1"])
    other = load_config("tiny", [f"workdir={tmp_path}/b", *base])
    save_bundle(_bundle("L1", 1), other.checkpoint_dir / "L1")
    save_bundle(_bundle("L1", 2), other.checkpoint_dir / "L2")  # the L1 model copied into L2's place
    with pytest.raises(CheckpointError, match=r"holds a model of layer L1, not L2"):
        rollout.load_bundles(other, ["L2"])
    nan = load_config("tiny", [f"workdir={tmp_path}/c", *base])
    b = _bundle("L1", 1)
    b.params["W_hh"][0, 0, 0] = np.nan
    save_bundle(b, nan.checkpoint_dir / "L1")
    with pytest.raises(CheckpointError, match=r"the weights \['W_hh'\] hold NaN or Inf"):
        predict(nan, layers=["L1"])
