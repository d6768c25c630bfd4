"""Checkpoint layout: save/load bundles, best vs latest, restore onto other shardings, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from somojax import sharding as shd
from somojax.checkpoint import (
    Bundle,
    TrainCheckpointer,
    abstract_like,
    bundle_meta,
    load_bundle,
    save_bundle,
    state_shardings,
)
from somojax.config import load_config
from somojax.errors import CheckpointError
from somojax.models import ensemble
from somojax.normalization import NormStats

STATS = NormStats(
    mean={"x": 1.5},
    std={"x": 2.0},
    target_mean={"L1": 0.3},
    target_std={"L1": 0.1},
    cells=(5, 7),
    period=("2000-01-01", "2000-12-31"),
)


def _params(m=3, seed=0):
    return jax.device_get(ensemble.init_ensemble(jax.random.key(seed), m, 2, 3, 4))


def test_save_and_load_bundle_round_trip(tmp_path):
    cfg = load_config("tiny")
    b = Bundle("L2", _params(), cfg.model, STATS, ("a", "b"), ("s1", "s2", "s3"), {"name": "x"})
    save_bundle(b, tmp_path / "ck")
    got = load_bundle(tmp_path / "ck")
    assert got.layer == "L2" and got.model == cfg.model and got.stats == STATS
    assert got.dynamic_inputs == ("a", "b") and got.static_inputs == ("s1", "s2", "s3") and got.config == {"name": "x"}
    for k, v in b.params.items():
        np.testing.assert_array_equal(got.params[k], v)
    with pytest.raises(CheckpointError, match="no finished checkpoint"):
        load_bundle(tmp_path / "ck", which="latest")


def test_best_and_latest(tmp_path):
    cfg = load_config("tiny")
    mesh = shd.make_mesh(2)  # 8 fake devices: (2, 4)
    state = {"params": ensemble.init_ensemble(jax.random.key(1), 2, 2, 3, 4), "step": jnp.int32(7)}
    state = jax.device_put(state, state_shardings(state, mesh))
    meta = bundle_meta("L1", cfg.model, STATS, ("a", "b"), ("s1", "s2", "s3"), None)
    with TrainCheckpointer(tmp_path / "L1", keep=2) as ck:
        ck.save_best(3, _params(2, seed=9), {**meta, "val_loss": 0.5})
        ck.save(7, state, meta)
        ck.wait()
    latest = load_bundle(tmp_path / "L1", which="latest")
    best = load_bundle(tmp_path / "L1")  # auto: best
    np.testing.assert_array_equal(latest.params["W_hh"], np.asarray(state["params"]["W_hh"]))
    np.testing.assert_array_equal(best.params["W_hh"], _params(2, seed=9)["W_hh"])
    # restore the train state onto a 1-device mesh
    small = shd.make_mesh(2, devices=jax.devices()[:1])
    with TrainCheckpointer(tmp_path / "L1") as ck:
        target = abstract_like(jax.device_get(state), state_shardings(state, small))
        restored, m = ck.restore(target)
    assert m["layer"] == "L1" and int(restored["step"]) == 7
    assert restored["params"]["W_ih"].sharding.mesh.devices.size == 1
    np.testing.assert_array_equal(np.asarray(restored["params"]["W_ih"]), np.asarray(state["params"]["W_ih"]))


def test_missing_or_foreign_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_bundle(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no finished checkpoint"):
        load_bundle(tmp_path / "empty")
    with pytest.raises(ValueError, match="which"):
        load_bundle(tmp_path / "empty", which="newest")
    with TrainCheckpointer(tmp_path / "t") as ck:
        with pytest.raises(CheckpointError, match="no checkpoint"):
            ck.restore({"x": jax.ShapeDtypeStruct((1,), jnp.float32, sharding=NamedSharding(shd.make_mesh(1), P()))})
