"""The ensemble training engine on small in-memory data: learning, one compilation, ensemble
equivalence, kill-and-resume, non-finite losses, checkpoints across device counts."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from somojax.checkpoint import TrainCheckpointer, bundle_meta, load_bundle
from somojax.errors import CheckpointError, TrainingError
from somojax.normalization import NormStats
from somojax.train.compile import JitOnce, RecompilationError
from somojax.train.loop import Trainer
from somojax.train.schedule import paper_rate
from somojax.train.step import make_optimizer, make_train_step, step_options
from tests.train_fixtures import array_data, assert_close_after_adam, tiny_config

STATS = NormStats(mean={"a": 0.0}, std={"a": 1.0}, target_mean={"L1": 0.3}, target_std={"L1": 0.1})


def make_trainer(cfg, tmp_path, data=None, name="L1", devices=None):
    data = data or array_data(cfg)
    meta = bundle_meta("L1", cfg.model, STATS, ("a", "b", "c"), ("s1", "s2"), None)
    return Trainer(
        cfg,
        data,
        n_dynamic=3,
        n_static=2,
        checkpoint_dir=tmp_path / "ckpt" / name,
        opts=step_options(cfg.model, cfg.train),
        meta=meta,
        devices=devices,
    )


def leaves_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


class StopAfter:
    """Wraps TrainData; its training iterator raises after `n` batches (a crash mid-run)."""

    class Crash(Exception):
        pass

    def __init__(self, data, n, poison_member=None):
        self.data, self.n, self.poison = data, n, poison_member
        self.steps_per_epoch, self.n_train, self.n_val = data.steps_per_epoch, data.n_train, data.n_val

    def val_batches(self):
        return self.data.val_batches()

    def train_iterator(self):
        outer = self

        class It:
            def __init__(self):
                self.it, self.k = outer.data.train_iterator(), 0

            def __next__(self):
                self.k += 1
                b = next(self.it)
                if outer.poison is not None and self.k == outer.n:
                    b = dict(b)
                    b["x_d"] = b["x_d"].copy()
                    b["x_d"][outer.poison] = np.nan
                    return b
                if outer.poison is None and self.k > outer.n:
                    raise StopAfter.Crash()
                return b

            def get_state(self):
                return self.it.get_state()

            def set_state(self, s):
                self.it.set_state(s)

        return It()


def test_training_lowers_validation_loss_and_compiles_once(tmp_path):
    cfg = tiny_config(tmp_path, epochs=4, max_updates_per_epoch=8, learning_rates=((0, 2e-2), (2, 1e-2)))
    tr = make_trainer(cfg, tmp_path)
    before = tr.validate(tr._init()["params"])["val_loss"]
    res = tr.fit()
    losses = [h["val_loss"] for h in res.loop.history]
    assert len(losses) == 4 and res.loop.finished
    assert losses[-1] < 0.8 * before, (before, losses)
    assert tr.train_step.compilations == 1 and tr.eval_step.compilations == 1
    assert [h["lr"] for h in res.loop.history] == [2e-2, 2e-2, 1e-2, 1e-2]
    b = load_bundle(tmp_path / "ckpt" / "L1")  # best = lowest validation loss
    assert b.n_members == 2 and b.params["W_hh"].shape == (2, 8, 24)
    assert b.stats == STATS and b.dynamic_inputs == ("a", "b", "c")
    best = min(range(4), key=lambda e: losses[e])
    if best == 3:
        assert leaves_equal(b.params, res.state["params"])


def test_jit_once_rejects_a_new_signature():
    f = JitOnce(lambda x: x * 2, name="double")
    f(jnp.ones(3))
    f(jnp.zeros(3))
    assert f.compilations == 1
    with pytest.raises(RecompilationError, match=r"double would compile again.*\(3,\).*\(4,\)"):
        f(jnp.ones(4))


def test_learning_rate_schedule_by_epoch():
    sched = ((0, 1e-3), (10, 5e-4), (25, 1e-4))
    assert [paper_rate(sched, e) for e in (0, 9, 10, 24, 25, 40)] == [1e-3, 1e-3, 5e-4, 5e-4, 1e-4, 1e-4]
    with pytest.raises(ValueError, match="epoch 0"):
        paper_rate(((3, 1e-3),), 0)


@pytest.mark.parametrize("mode", ["stacked", "loop", pytest.param("vmap", marks=pytest.mark.slow)])
def test_five_member_step_on_8_devices_equals_five_one_member_runs(tmp_path, mode):
    cfg = tiny_config(tmp_path, members=5, batch_size=16)
    cfg5 = tiny_config(tmp_path, kernel={"ensemble_mode": mode}, members=5, batch_size=16)
    tr = make_trainer(cfg5, tmp_path)
    assert tr.mesh.devices.size == 8 and tr.ensemble_mode == mode
    data = tr.data
    it = data.train_iterator()
    batches = [next(it) for _ in range(3)]  # per-member: x_d [5, 16, 20, 3]
    state = tr._init()
    init = jax.device_get(state)
    for b in batches:
        state, _ = tr.train_step(state, tr.put_batch(b, tr.batch_sharding), jnp.float32(1e-2))
    ens = jax.device_get(state["params"])

    opts = step_options(cfg.model, cfg.train)
    tx = make_optimizer(cfg.train.clip_norm)
    one = jax.jit(make_train_step(opts, tx, shared_batches=False, mode="vmap"))
    for m in range(5):
        s = jax.tree.map(lambda x: x[m : m + 1] if np.ndim(x) else x, init)
        for b in batches:
            bm = {k: v[m : m + 1] for k, v in b.items()}
            s, _ = one(s, bm, jnp.float32(1e-2))
        for k, v in s["params"].items():
            assert_close_after_adam(
                v[0], ens[k][m], rtol=1e-5, atol=2e-6, lr=1e-2, updates=3, err_msg=f"member {m} {k}"
            )
    # members really differ (independent init and batches)
    assert not np.allclose(ens["W_ih"][0], ens["W_ih"][1])


def test_kill_and_resume_is_bitwise_identical(tmp_path):
    cfg = tiny_config(tmp_path, epochs=2, max_updates_per_epoch=5, checkpoint_every_steps=3, keep_checkpoints=2)
    straight = make_trainer(cfg, tmp_path, name="straight").fit()
    assert straight.state["step"] == 10

    crashed = make_trainer(cfg, tmp_path, data=StopAfter(array_data(cfg), 8), name="resumed")
    with pytest.raises(StopAfter.Crash):
        crashed.fit()  # dies during step 9, after the checkpoint at step 6 (and epoch end at 5)
    resumed = make_trainer(cfg, tmp_path, name="resumed").fit()
    assert resumed.resumed_from == 6
    assert leaves_equal(straight.state, resumed.state)
    assert [h["val_loss"] for h in straight.loop.history] == [h["val_loss"] for h in resumed.loop.history]
    with TrainCheckpointer(tmp_path / "ckpt" / "resumed", keep=2) as ck:
        assert len(ck.all_steps()) == 2  # keep-last-N
    # a finished run is not trained again
    again = make_trainer(cfg, tmp_path, name="resumed").fit()
    assert again.resumed_from == 10 and leaves_equal(again.state, straight.state)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = tiny_config(tmp_path, epochs=3, max_updates_per_epoch=4, checkpoint_every_steps=2, log_every_steps=1)
    tr = make_trainer(cfg, tmp_path, data=StopAfter(array_data(cfg), 7, poison_member=1))
    with pytest.raises(TrainingError, match=r"step 7 \(epoch 1\), member 1"):
        tr.fit()
    with TrainCheckpointer(tmp_path / "ckpt" / "L1") as ck:
        assert ck.latest_step() == 6
        state, meta = ck.restore(tr.abstract_state)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state["params"]))
    assert meta["global_step"] == 6


@pytest.mark.slow
def test_restore_onto_fewer_devices_and_continue(tmp_path):
    cfg = tiny_config(tmp_path, members=4, epochs=2, max_updates_per_epoch=3)
    big = make_trainer(cfg, tmp_path)
    assert dict(big.mesh.shape) == {"member": 4, "data": 2}
    first = big.fit()
    cfg3 = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=3))
    for devs in (jax.devices()[:1], jax.devices()[:2]):
        small = make_trainer(cfg3, tmp_path, devices=devs)
        with TrainCheckpointer(small.dir) as ck:
            state, loop, _, step = small.initial_state(False, ck)
        assert step == 6 and loop.step == 6 and loop.tracker.validations == 2
        assert leaves_equal(jax.device_get(state), jax.device_get(first.state))
        assert state["params"]["W_hh"].sharding.mesh.devices.size == len(devs)
    res = small.fit()  # one more epoch on 2 devices
    assert res.resumed_from == 6 and int(res.state["step"]) == 9


def test_resume_with_other_model_settings_is_refused(tmp_path):
    cfg = tiny_config(tmp_path, epochs=1, max_updates_per_epoch=2)
    make_trainer(cfg, tmp_path).fit()
    other = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, dropout=0.3))
    with pytest.raises(CheckpointError, match="--fresh"):
        make_trainer(other, tmp_path).fit()
    wider = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, hidden_size=6))
    with pytest.raises(CheckpointError, match="different model"):  # refused before reading arrays
        make_trainer(wider, tmp_path).fit()
    res = make_trainer(other, tmp_path).fit(fresh=True)
    assert res.resumed_from is None and res.loop.step == 2 and int(res.state["step"]) == 2


def test_early_stopping(tmp_path):
    cfg = tiny_config(tmp_path, epochs=6, max_updates_per_epoch=2, learning_rates=((0, 0.0),), patience=2)
    res = make_trainer(cfg, tmp_path).fit()
    assert res.loop.finished and res.loop.step == 6 and res.loop.stop_reason == "patience"
    assert res.loop.tracker.best_step == 2 and res.loop.tracker.validations == 3
    assert math.isfinite(res.loop.tracker.best_val)


@pytest.mark.slow
def test_any_device_count_gives_the_same_training(tmp_path):
    """1, 2, 3 and 8 devices: meshes (1,1), (2,1), (1,3), (2,4); same parameters after 3 steps."""
    cfg = tiny_config(tmp_path, members=2, batch_size=24)
    results = {}
    for n in (1, 2, 3, 8):
        tr = make_trainer(cfg, tmp_path, name=f"dev{n}", devices=jax.devices()[:n])
        it = tr.data.train_iterator()
        state = tr._init()
        for _ in range(3):
            state, _ = tr.train_step(state, tr.put_batch(next(it), tr.batch_sharding), jnp.float32(1e-2))
        results[n] = (dict(tr.mesh.shape), jax.device_get(state["params"]))
    assert [results[n][0] for n in (1, 2, 3, 8)] == [
        {"member": 1, "data": 1},
        {"member": 2, "data": 1},
        {"member": 1, "data": 3},
        {"member": 2, "data": 4},
    ]
    for n in (2, 3, 8):
        for k, v in results[n][1].items():
            np.testing.assert_allclose(v, results[1][1][k], rtol=1e-4, atol=1e-5, err_msg=f"{n} devices, {k}")


def test_batch_must_divide_the_data_axis(tmp_path):
    from somojax.errors import ConfigError

    cfg = tiny_config(tmp_path, members=2, batch_size=20)
    with pytest.raises(ConfigError, match=r"train.batch_size=20 must be a multiple of the mesh's data axis \(3"):
        make_trainer(cfg, tmp_path, devices=jax.devices()[:3])


def test_shared_batches_train_all_members_on_the_same_samples(tmp_path):
    cfg = tiny_config(
        tmp_path, members=3, shared_batches=True, epochs=1, max_updates_per_epoch=3, learning_rates=((0, 0.0),)
    )
    tr = make_trainer(cfg, tmp_path)
    batch = next(tr.data.train_iterator())
    assert batch["x_d"].shape == (16, 20, 3)  # one batch for all members
    state = tr._init()
    state, m = tr.train_step(state, tr.put_batch(batch, tr.batch_sharding), jnp.float32(0.0))
    # with lr 0 and no dropout difference in the data, members differ only by their init
    loss = np.asarray(m["loss"])
    assert loss.shape == (3,) and len(set(loss.tolist())) == 3
    params = jax.device_get(state["params"])
    init = jax.device_get(tr._init()["params"])
    assert leaves_equal(params, init)


def test_validation_loss_matches_numpy_float64(tmp_path):
    from somojax.data.pipeline import window
    from tests.test_ealstm import numpy_ealstm

    cfg = tiny_config(tmp_path, members=3)
    tr = make_trainer(cfg, tmp_path)
    params = jax.device_get(tr._init()["params"])
    got = tr.validate(params)
    d = tr.data
    ws = [window(d.arrays, int(c), int(e), d.seq, d.last_n) for c, e in d.val_samples]
    x_d = np.stack([w["x_d"] for w in ws])
    x_s = np.stack([w["x_s"] for w in ws])
    y = np.stack([w["y"] for w in ws])[:, 0]
    sig = np.stack([w["sigma"] for w in ws])
    preds = np.stack([numpy_ealstm(jax.tree.map(lambda a: a[m], params), x_d, x_s, 1)[:, 0] for m in range(3)])
    w = 1.0 / (sig + 0.1) ** 2
    members = [np.mean(w * (p - y) ** 2) for p in preds]
    mean = np.mean(w * (preds.mean(0) - y) ** 2)
    assert got["val_targets"] == len(ws) and len(ws) % cfg.train.batch_size != 0  # a padded last batch
    np.testing.assert_allclose(got["val_loss_members"], members, rtol=2e-5)
    np.testing.assert_allclose(got["val_loss"], mean, rtol=2e-5)
