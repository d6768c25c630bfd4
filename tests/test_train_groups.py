"""Stacked groups (cross-validation folds) train exactly as each group trained alone.

Each group has its own data (other cells, other σ scale, other number of samples), so its own
schedule decisions (plateau decays, early stop, paper-epoch budget); the stacked run must
reproduce every group's validation history, best step, stop reason and best parameters, and its
validation loss is checked against a NumPy float64 EA-LSTM.

"The same" is to float32 rounding: the batched kernels of a larger stack round differently in
the last bit (a few 1e-8 after one update), and training amplifies such differences (on these
tiny models about x2 every 5 updates at a rate of 1e-2), so the runs are short and the rates low
enough that they stay far below the tolerances.
"""

import dataclasses

import numpy as np
import pytest

from somojax.checkpoint import bundle_meta, load_bundle
from somojax.normalization import NormStats
from somojax.train.groups import Group, GroupTrainer
from somojax.train.loop import Trainer
from somojax.train.step import step_options
from tests.train_fixtures import array_data, learnable_arrays, tiny_config

pytestmark = pytest.mark.slow

STATS = NormStats(mean={}, std={}, target_mean={"L1": 0.0}, target_std={"L1": 1.0})
# (arrays seed, validation cells, σ scale, cells used): three differently sized groups
GROUPS = ((0, (10, 11), 1.0, 12), (1, (0, 1, 2), 0.5, 9), (2, (3,), 2.0, 5))


def _groups(cfg, tmp_path, tag):
    out = []
    for g, (seed, val, scale, n) in enumerate(GROUPS):
        a = learnable_arrays(seed=seed)
        a = dataclasses.replace(
            a, dynamic=a.dynamic[:n], static=a.static[:n], target=a.target[:n], sigma=a.sigma[:n], cells=a.cells[:n]
        )
        data = array_data(cfg, a, val_cells=val)
        meta = bundle_meta("L1", cfg.model, STATS, ("a", "b", "c"), ("s1", "s2"), None, train_cells=[g])
        out.append(Group(f"g{g}", data, tmp_path / tag / f"g{g}", meta, scale))
    return out


def _alone(cfg, tmp_path, group):
    """The group trained alone by the ordinary loop (σ scale through StepOptions, as training does)."""
    opts = dataclasses.replace(step_options(cfg.model, cfg.train), sigma_scale=group.sigma_scale)
    t = Trainer(
        cfg,
        group.data,
        n_dynamic=3,
        n_static=2,
        checkpoint_dir=tmp_path / "alone" / group.name,
        opts=opts,
        meta=group.meta,
    )
    return t.fit()


def _stacked(cfg, tmp_path):
    groups = _groups(cfg, tmp_path, "stacked")
    t = GroupTrainer(
        cfg,
        groups,
        n_dynamic=3,
        n_static=2,
        checkpoint_dir=tmp_path / "stack",
        opts=step_options(cfg.model, cfg.train),
        layer="L1",
    )
    return groups, t.fit()


def _compare(cfg, tmp_path):
    groups, loops = _stacked(cfg, tmp_path)
    for g, loop in zip(groups, loops):
        alone = _alone(cfg, tmp_path, g).loop
        assert loop.stop_reason == alone.stop_reason and loop.step == alone.step, g.name
        assert loop.tracker.best_step == alone.tracker.best_step and loop.tracker.lr == alone.tracker.lr
        assert [h["step"] for h in loop.history] == [h["step"] for h in alone.history]
        assert [h["lr"] for h in loop.history] == pytest.approx([h["lr"] for h in alone.history], rel=1e-7)
        np.testing.assert_allclose(
            [h["val_loss"] for h in loop.history], [h["val_loss"] for h in alone.history], rtol=1e-4
        )
        np.testing.assert_allclose(
            [h["val_loss_members"] for h in loop.history], [h["val_loss_members"] for h in alone.history], rtol=1e-4
        )
        a, b = load_bundle(g.checkpoint_dir), load_bundle(tmp_path / "alone" / g.name)
        for k in a.params:
            np.testing.assert_allclose(a.params[k], b.params[k], rtol=1e-4, atol=2e-6, err_msg=f"{g.name} {k}")
        assert (g.checkpoint_dir / "summary.json").exists()
    return groups, loops


def test_plateau_and_early_stopping_per_group(tmp_path):
    cfg = tiny_config(
        tmp_path,
        lr_schedule="plateau",
        learning_rate=1e-2,
        max_updates=32,
        validate_every_updates=4,
        patience=2,
        lr_patience=1,
        lr_decay=0.5,
        min_lr=1e-3,
        min_improvement=0.03,
        max_updates_per_epoch=None,
    )
    groups, loops = _compare(cfg, tmp_path)
    # the groups decided differently, or this test would not show that each has its own tracker
    assert len({(l.step, l.tracker.lr, l.tracker.best_step) for l in loops}) > 1, [
        (l.step, l.tracker.lr, l.tracker.best_step) for l in loops
    ]


def test_paper_epochs_of_different_length_per_group(tmp_path):
    cfg = tiny_config(
        tmp_path, epochs=3, batch_size=32, max_updates_per_epoch=None, learning_rates=((0, 5e-3), (2, 1e-3))
    )
    groups, loops = _compare(cfg, tmp_path)
    assert len({g.data.steps_per_epoch for g in groups}) == len(groups)
    assert [l.step for l in loops] == [3 * g.data.steps_per_epoch for g in groups]


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_member(p, x_d, x_s):
    """One EA-LSTM member on one window, float64: x_d [L, D], x_s [S] -> scalar."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    H = p["W_hh"].shape[0]
    i = _sig(x_s @ p["W_sh"] + p["b_s"])
    h, c = np.zeros(H), np.zeros(H)
    for t in range(x_d.shape[0]):
        z = h @ p["W_hh"] + x_d[t] @ p["W_ih"] + p["b"]
        c = _sig(z[:H]) * c + i * np.tanh(z[2 * H :])
        h = _sig(z[H : 2 * H]) * np.tanh(c)
    return float(h @ p["W_fc"][:, 0] + p["b_fc"][0])


def test_group_validation_loss_against_numpy(tmp_path):
    cfg = tiny_config(tmp_path, epochs=1, max_updates_per_epoch=3, loss="nse")
    groups, loops = _stacked(cfg, tmp_path)
    L = cfg.model.seq_length
    for g, loop in zip(groups, loops):
        b = load_bundle(g.checkpoint_dir)
        a = g.data.arrays
        num = den = 0.0
        for c, e in g.data.val_samples:
            x_d, x_s = np.asarray(a.dynamic[c, e - L + 1 : e + 1], np.float64), np.asarray(a.static[c], np.float64)
            pred = np.mean([np_member({k: v[m] for k, v in b.params.items()}, x_d, x_s) for m in range(b.n_members)])
            w = 1.0 / (float(a.sigma[c]) * g.sigma_scale + cfg.train.nse_eps) ** 2
            num, den = num + w * (pred - float(a.target[c, e])) ** 2, den + 1.0
        assert loop.tracker.best_val == pytest.approx(num / den, rel=1e-4), g.name


def test_a_stopped_stacked_run_resumes_to_the_same_result(tmp_path):
    """SIGTERM after update 6 (between validations), then the same run again: the groups' best
    parameters and histories are those of the run that was never stopped (bitwise)."""
    import signal

    from somojax.utils import signals

    cfg = tiny_config(
        tmp_path,
        lr_schedule="plateau",
        learning_rate=1e-2,
        max_updates=12,
        validate_every_updates=4,
        patience=None,
        max_updates_per_epoch=None,
    )
    _, whole = _stacked(cfg, tmp_path / "whole")
    groups = _groups(cfg, tmp_path / "stopped", "stacked")

    def trainer():
        return GroupTrainer(
            cfg,
            groups,
            n_dynamic=3,
            n_static=2,
            checkpoint_dir=tmp_path / "stopped" / "stack",
            opts=step_options(cfg.model, cfg.train),
            layer="L1",
        )

    t = trainer()

    class Counting:  # the train step, with a SIGTERM arriving during update 6
        def __init__(self, step):
            self.step, self.calls = step, 0

        def __getattr__(self, name):
            return getattr(self.step, name)

        def __call__(self, *a):
            self.calls += 1
            if self.calls == 6:
                signals._State.requested = signal.SIGTERM
            return self.step(*a)

    t.train_step = Counting(t.train_step)
    with pytest.raises(signals.Interrupted):
        t.fit()
    resumed = trainer().fit()
    for g, a, b in zip(groups, resumed, whole):
        assert [h["val_loss"] for h in a.history] == [h["val_loss"] for h in b.history]
        x, y = load_bundle(g.checkpoint_dir), load_bundle(tmp_path / "whole" / "stacked" / g.name)
        assert all(np.array_equal(x.params[k], y.params[k]) for k in x.params), g.name
