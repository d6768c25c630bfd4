"""The rollout engine: exact and chunked modes against NumPy float64, the cascade, the store,
resuming, sharding, export, and the errors raised before any compute."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from somojax import constants as C
from somojax import grid, stores
from somojax.checkpoint import Bundle, save_bundle
from somojax.config import ModelConfig, load_config
from somojax.errors import CheckpointError, ConfigError, InputDataError, StoreError
from somojax.infer import engine, export, predict, predict_cells
from somojax.infer import rollout
from somojax.infer import store as pstore
from somojax.normalization import NormStats
from tests.test_ealstm import numpy_ealstm

LAT = (40.0, 41.0)  # 4 x 6 cells
LON = (-98.0, -96.5)
START, N_DAYS = "2000-01-01", 330
L, H, M = 30, 8, 2


def _stores(store_dir, seed=0, n_days=N_DAYS):
    rng = np.random.default_rng(seed)
    lat, lon = grid.lat_centres(*LAT), grid.lon_centres(*LON)
    times = pd.date_range(START, periods=n_days, freq="D")
    shape = (n_days, lat.size, lon.size)
    dyn = {
        v: (v_i + 1.0) * (rng.standard_normal(shape).cumsum(0) * 0.1 + rng.standard_normal(shape))
        for v_i, v in enumerate(C.DYNAMIC_INPUTS)
    }
    dyn["t2m"][40, 1, 2] = np.nan  # a missing forcing day in one cell
    sm = rng.uniform(0.1, 0.4, (3,) + shape)
    coords = {C.TIME: times.values.astype("datetime64[ns]"), C.LAT: lat, C.LON: lon}
    f = xr.Dataset({v: ((C.TIME, C.LAT, C.LON), a.astype(np.float32)) for v, a in dyn.items()}, coords=coords)
    f[C.SM_ERA5] = ((C.LAYER, C.TIME, C.LAT, C.LON), sm.astype(np.float32))
    f = f.assign_coords({C.LAYER: list(C.LAYERS)})
    stores.write_store(f, stores.store_path(store_dir, "forcings"), "forcings")
    land = np.ones((lat.size, lon.size), np.int8)
    land[0, 0] = land[3, 5] = 0
    s = xr.Dataset(
        {v: ((C.LAT, C.LON), rng.standard_normal((lat.size, lon.size)).astype(np.float32)) for v in C.STATIC_INPUTS},
        coords={C.LAT: lat, C.LON: lon},
    )
    s[C.LAND_MASK] = ((C.LAT, C.LON), land)
    stores.write_store(s, stores.store_path(store_dir, "statics"), "statics")
    return f, s


def _bundle(layer, seed, last_n=1, members=M):
    rng = np.random.default_rng(seed)
    dyn = C.DYNAMIC_INPUTS + C.UPPER_LAYER_INPUTS[layer]
    d, s = len(dyn), len(C.STATIC_INPUTS)
    from somojax.models.ealstm import param_shapes

    params = {
        k: (rng.standard_normal((members,) + shp) * 0.4).astype(np.float32) for k, shp in param_shapes(d, s, H).items()
    }
    mean = {v: float(rng.normal(0, 0.1)) for v in dyn + C.STATIC_INPUTS}
    std = {v: float(rng.uniform(0.8, 2.0)) for v in dyn + C.STATIC_INPUTS}
    for u in ("sm_L1", "sm_L2"):
        mean[u], std[u] = 0.25, 0.08
    stats = NormStats(mean, std, {layer: 0.22}, {layer: 0.07})
    model = ModelConfig(hidden_size=H, seq_length=L, predict_last_n=last_n)
    return Bundle(layer, params, model, stats, tuple(dyn), tuple(C.STATIC_INPUTS))


# a short prediction period over several tiles, time blocks and chunks of the small test grid
PERIOD_AND_LAYOUT = [
    "infer.start=2000-04-01",
    "infer.end=2000-11-25",
    "layout.shard_time=60",
    "layout.time_block_days=120",
    "layout.shard_lat=2",
    "layout.shard_lon=4",
    "layout.chunk_lat=2",
    "layout.chunk_lon=2",
    "layout.chunk_time=30",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer")
    cfg = load_config(
        "tiny",
        [
            f"workdir={root}/run",
            *PERIOD_AND_LAYOUT,
            "layout.tile_cells=5",
        ],
    )
    f, s = _stores(cfg.store_dir)
    bundles = {l: _bundle(l, 10 + i) for i, l in enumerate(C.LAYERS)}
    for l, b in bundles.items():
        save_bundle(b, cfg.checkpoint_dir / l)
    return cfg, f, s, bundles


def numpy_layer(b: Bundle, columns: dict, statics: dict, mode="exact"):
    """Float64 reference of one layer: windows of L days per output day (or stride k)."""
    st = b.stats
    x_d = np.stack([(columns[v] - st.mean[v]) / st.std[v] for v in b.dynamic_inputs], -1)
    x_s = np.stack([(statics[v] - st.mean[v]) / st.std[v] for v in b.static_inputs], -1)
    n_c, t, _ = x_d.shape
    k = b.model.predict_last_n
    out = np.full((b.n_members, n_c, t), np.nan)
    for m in range(b.n_members):
        p = {kk: np.asarray(v[m], np.float64) for kk, v in b.params.items()}
        if mode == "exact":
            for day in range(L - 1, t):
                out[m, :, day] = numpy_ealstm(p, x_d[:, day - L + 1 : day + 1], x_s, 1)[:, 0]
        else:  # window j ends on day L - 1 + j*k + k - 1 and gives its last k days
            for end in range(L - 1 + k - 1, t + k - 1, k):
                xx = x_d[:, end - L + 1 : end + 1]
                if end >= t:
                    xx = np.concatenate([xx, np.zeros((n_c, end - t + 1, xx.shape[2]))], 1)
                y = numpy_ealstm(p, np.nan_to_num(xx), x_s, k)
                for r in range(k):
                    day = end - k + 1 + r
                    if L - 1 <= day < t:
                        out[m, :, day] = y[:, r]
    raw = np.maximum(out * st.target_std[b.layer] + st.target_mean[b.layer], 0.0)
    finite = np.isfinite(x_d).all(-1)
    for c in range(n_c):
        for day in range(t):
            if day < L - 1 or not finite[c, max(0, day - L + 1) : day + 1].all():
                raw[:, c, day] = np.nan
    return raw.mean(0), raw.std(0)


def _columns(f, s, cells_rc, t0=None, t1=None):
    rows, cols = cells_rc
    sel = f.sel(time=slice(t0, t1)) if t0 else f
    columns = {v: sel[v].values[:, rows, cols].T.astype(np.float64) for v in C.DYNAMIC_INPUTS}
    statics = {v: s[v].values[rows, cols].astype(np.float64) for v in C.STATIC_INPUTS}
    return columns, statics


@pytest.mark.parametrize("hoist", [False, True])
def test_exact_equals_numpy_float64_with_nan_forcing(setup, hoist):
    _, f, s, bundles = setup
    rc = (np.array([1, 2, 0]), np.array([2, 3, 1]))  # cell (1, 2) has a NaN on day 40
    columns, statics = _columns(f, s, rc)
    got = engine.layer_predictions(
        bundles["L1"], columns, statics, "exact", engine.KernelOptions(rows_per_step=37 * 3, hoist=hoist)
    )
    want_m, want_s = numpy_layer(bundles["L1"], columns, statics)
    np.testing.assert_array_equal(np.isnan(got.mean), np.isnan(want_m))
    np.testing.assert_allclose(got.mean, want_m, atol=1e-5, equal_nan=True)
    np.testing.assert_allclose(got.spread, want_s, atol=1e-5, equal_nan=True)
    assert np.isnan(got.mean[0, 40 : 40 + L]).all() and np.isfinite(got.mean[0, 40 + L])
    assert got.cell_steps == M * 3 * (N_DAYS - L + 1) * L


@pytest.mark.parametrize("hoist", [False, True])
def test_chunked_equals_numpy_where_it_should_and_differs_from_exact(setup, hoist):
    _, f, s, _ = setup
    b = _bundle("L1", 3, last_n=7)
    rc = (np.array([2, 3]), np.array([1, 4]))
    columns, statics = _columns(f, s, rc)
    got = engine.layer_predictions(
        b, columns, statics, "auto", engine.KernelOptions(hoist=hoist)
    )  # auto -> chunked for k > 1
    want_m, _ = numpy_layer(b, columns, statics, mode="chunked")
    np.testing.assert_allclose(got.mean, want_m, atol=1e-5, equal_nan=True)
    exact = engine.layer_predictions(b, columns, statics, "exact")
    assert np.nanmax(np.abs(exact.mean - got.mean)) > 1e-4  # the mode matters
    assert got.cell_steps == pytest.approx(M * 2 * (N_DAYS - L + 1) * (L + 6) / 7, rel=1e-6)


def test_chunked_is_refused_for_a_seq_to_one_model(setup):
    _, _, _, bundles = setup
    with pytest.raises(ConfigError, match="sequence-to-one"):
        engine.resolve_mode(bundles["L1"], "chunked")


def test_cascade_equals_numpy_reference(setup):
    _, f, s, bundles = setup
    rc = (np.array([1, 2]), np.array([1, 4]))
    columns, statics = _columns(f, s, rc)
    got = engine.cascade(bundles, columns, statics)
    cols = dict(columns)
    for l in C.LAYERS:
        want_m, want_s = numpy_layer(bundles[l], cols, statics)
        np.testing.assert_allclose(got[l].mean, want_m, atol=2e-5, equal_nan=True)
        np.testing.assert_allclose(got[l].spread, want_s, atol=2e-5, equal_nan=True)
        cols[f"sm_{l}"] = want_m
    # layer k starts k*(L-1) days after the first input day
    assert np.isnan(got["L3"].mean[:, : 3 * (L - 1)]).all() and np.isfinite(got["L3"].mean[0, 3 * (L - 1) :]).all()


def test_predict_cells_matches_the_engine(setup):
    cfg, f, s, bundles = setup
    cells = grid.cell_id(
        np.array([f.latitude.values[1], f.latitude.values[2]]), np.array([f.longitude.values[1], f.longitude.values[4]])
    )
    ds = predict_cells(bundles, f, s, cells, "2000-04-01", "2000-06-30")
    assert ds[C.SM].dims == (C.LAYER, C.CELL, C.TIME) and ds.sizes[C.TIME] == 91
    columns, statics = _columns(f, s, (np.array([1, 2]), np.array([1, 4])))
    full = engine.cascade(bundles, columns, statics)
    day0 = (pd.Timestamp("2000-04-01") - pd.Timestamp(START)).days
    np.testing.assert_allclose(ds[C.SM].sel(layer="L3").values, full["L3"].mean[:, day0 : day0 + 91], atol=1e-6)


def _uninterrupted(setup, tmp_path):
    cfg = setup[0]
    ref = load_config("tiny", [f"{k}={v}" for k, v in _overrides(cfg).items()] + [f"infer.output={tmp_path}/ref.zarr"])
    summary = predict(ref)
    return ref, summary


def _overrides(cfg):
    i, lay = cfg.infer, cfg.layout
    return {
        "workdir": cfg.workdir,
        "infer.start": i.start,
        "infer.end": i.end,
        **{f"layout.{k}": getattr(lay, k) for k in ("shard_time", "time_block_days", "shard_lat", "shard_lon")},
        **{f"layout.{k}": getattr(lay, k) for k in ("chunk_lat", "chunk_lon", "chunk_time", "tile_cells")},
    }


def test_store_matches_the_engine_and_is_cf(setup, tmp_path):
    cfg, f, s, bundles = setup
    ref, summary = _uninterrupted(setup, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # consolidated metadata: a plain open_zarr, no fallback warning
        ds = xr.open_zarr(ref.predictions_path)
    assert ds[C.SM].dims == (C.LAYER, C.TIME, C.LAT, C.LON)
    assert ds[C.SM].attrs["units"] == "m3 m-3" and ds[C.SM].attrs["grid_mapping"] == "crs"
    assert ds["crs"].attrs["grid_mapping_name"] == "latitude_longitude"
    assert json.loads(ds.attrs["somojax_mode"]) == {"L1": "exact", "L2": "exact", "L3": "exact"}
    assert json.loads(ds.attrs["somojax_cost_cell_steps_per_output"])["L1"] == L
    assert list(ds[C.LAYER].values) == list(C.LAYERS)
    np.testing.assert_allclose(ds["layer_depth_bounds"].values, [[0, 0.1], [0.1, 0.3], [0.3, 0.5]])
    # water cells are NaN, land cells equal the engine run on the whole forcing period
    assert np.isnan(ds[C.SM].values[:, :, 0, 0]).all()
    columns, statics = _columns(f, s, (np.array([2]), np.array([3])))
    full = engine.cascade(bundles, columns, statics)
    d0 = (pd.Timestamp(cfg.infer.start) - pd.Timestamp(START)).days
    n = ds.sizes[C.TIME]
    for li, l in enumerate(C.LAYERS):
        np.testing.assert_allclose(ds[C.SM].values[li, :, 2, 3], full[l].mean[0, d0 : d0 + n], atol=1e-6)
        np.testing.assert_allclose(ds[C.SM_SPREAD].values[li, :, 2, 3], full[l].spread[0, d0 : d0 + n], atol=1e-6)
    assert summary["cells"] == 22 and summary["blocks_total"] == 4 * 2  # 2x2 tiles of 2x4 cells, 2 blocks of 120 days


def test_killed_rollout_resumes_to_an_identical_store(setup, tmp_path, monkeypatch):
    ref, _ = _uninterrupted(setup, tmp_path)
    cfg = load_config(
        "tiny", [f"{k}={v}" for k, v in _overrides(setup[0]).items()] + [f"infer.output={tmp_path}/killed.zarr"]
    )
    calls = []
    real = rollout._write_and_mark

    def dying(*args):
        calls.append(args[-3:-1])
        if len(calls) == 5:
            raise KeyboardInterrupt("killed")  # dies before block 5 is written
        return real(*args)

    monkeypatch.setattr(rollout, "_write_and_mark", dying)
    with pytest.raises(KeyboardInterrupt):
        predict(cfg)
    assert len(pstore.finished(cfg.predictions_path)) == 4
    monkeypatch.setattr(rollout, "_write_and_mark", lambda *a: (calls.append(a[-3:-1]), real(*a)))
    summary = predict(cfg)
    assert summary["blocks_this_run"] == 8 - 4  # nothing recomputed that was finished
    assert len(calls) == 5 + 4 and len(set(map(tuple, calls))) == 8  # each block written once, the killed one again
    a = xr.open_zarr(ref.predictions_path, consolidated=False)
    b = xr.open_zarr(cfg.predictions_path, consolidated=False)
    for v in (C.SM, C.SM_SPREAD):
        np.testing.assert_array_equal(a[v].values, b[v].values)


def test_other_runs_store_is_refused_before_compute(setup, tmp_path):
    cfg = load_config(
        "tiny", [f"{k}={v}" for k, v in _overrides(setup[0]).items()] + [f"infer.output={tmp_path}/p.zarr"]
    )
    predict(cfg, layers=["L1"])
    other = load_config(
        "tiny",
        [f"{k}={v}" for k, v in _overrides(setup[0]).items()]
        + [f"infer.output={tmp_path}/p.zarr", "infer.end=2000-10-31"],
    )
    with pytest.raises(StoreError, match="another run"):
        predict(other, layers=["L1"])
    predict(other, layers=["L1"], fresh=True)


def test_sharded_over_8_devices_equals_1_device(setup):
    import jax
    from jax.sharding import NamedSharding, PartitionSpec as P

    from somojax.sharding import make_mesh

    assert jax.device_count() == 8
    _, f, s, bundles = setup
    rows, cols = np.nonzero(s[C.LAND_MASK].values > 0)
    rows, cols = rows[:16], cols[:16]
    columns, statics = _columns(f, s, (rows, cols))
    one = engine.cascade(bundles, columns, statics)
    sh = NamedSharding(make_mesh(1), P(C.DATA_AXIS))
    eight = engine.cascade(bundles, columns, statics, sharding=sh)
    for l in C.LAYERS:
        np.testing.assert_allclose(eight[l].mean, one[l].mean, atol=1e-6, equal_nan=True)


def test_export_round_trips(setup, tmp_path):
    ref, _ = _uninterrupted(setup, tmp_path)
    ref = load_config(
        "tiny",
        [f"{k}={v}" for k, v in _overrides(setup[0]).items()]
        + [f"infer.output={ref.predictions_path}", f"infer.export_dir={tmp_path}/nc"],
    )
    files = export(ref)
    assert sorted(p.name for p in files) == ["somojax_L1_2000.nc", "somojax_L2_2000.nc", "somojax_L3_2000.nc"]
    ds = xr.open_dataset(files[1])
    z = xr.open_zarr(ref.predictions_path, consolidated=False)
    np.testing.assert_array_equal(ds[C.SM].values, z[C.SM].sel(layer="L2").values)
    assert ds.attrs["Conventions"] == "CF-1.8, ACDD-1.3" and ds[C.SM].attrs["units"] == "m3 m-3"
    assert ds[C.SM].encoding["zlib"]


def test_bad_input_fails_before_compute(setup, tmp_path, monkeypatch):
    cfg, f, s, bundles = setup
    monkeypatch.setattr(engine, "layer_predictions", lambda *a, **k: pytest.fail("computed"))
    base = [f"{k}={v}" for k, v in _overrides(cfg).items()] + [f"infer.output={tmp_path}/x.zarr"]
    # spin-up: L3 needs 3 * 29 days before the start
    with pytest.raises(InputDataError, match=r"L3 needs 87 days of forcing.*\d+ days are missing"):
        predict(load_config("tiny", base + ["infer.start=2000-02-01"]))
    # a model whose inputs are not in the stores
    bad = Bundle(
        "L1",
        bundles["L1"].params,
        bundles["L1"].model,
        bundles["L1"].stats,
        ("log_tp", "t2m", "snr", "ssrd", "q", "swe"),
        C.STATIC_INPUTS,
    )
    with pytest.raises(CheckpointError, match=r"needs \['swe'\]"):
        rollout.check_inputs({"L1": bad}, f, s, "stores")
    # an L2 model that reads another layer than the cascade gives it (inputs go by name, so
    # only the set matters, not the column order)
    b2 = bundles["L2"]
    with pytest.raises(CheckpointError, match="upper-layer inputs"):
        rollout.check_inputs(
            {"L2": Bundle("L2", b2.params, b2.model, b2.stats, C.DYNAMIC_INPUTS + ("sm_L2",), C.STATIC_INPUTS)},
            f,
            s,
            "stores",
        )
    # a missing checkpoint
    with pytest.raises(CheckpointError, match="does not exist"):
        predict(
            load_config("tiny", base + [f"workdir={tmp_path}/empty", f"data.store_dir={cfg.store_dir}"]), layers=["L2"]
        )
