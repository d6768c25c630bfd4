"""The training budget (somojax/train/schedule.py): rates against NumPy, the stopping rule on
synthetic validation curves, the budget warning, and resume of a plateau-decayed run."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal

import jax
import numpy as np
import pytest

from somojax.config import load_config
from somojax.errors import CheckpointError
from somojax.train import schedule
from somojax.utils import faults, signals
from tests.test_train_engine import leaves_equal, make_trainer
from tests.train_fixtures import metric_records, tiny_config


def make_budget(**kw) -> schedule.Budget:
    base = dict(
        schedule="plateau",
        max_updates=10_000,
        validate_every=100,
        min_updates=0,
        patience=None,
        learning_rate=1e-2,
        learning_rates=((0, 1e-3), (10, 5e-4), (25, 1e-4)),
        steps_per_epoch=37,
        lr_decay=0.5,
        lr_patience=2,
        min_lr=2.5e-3,
        min_improvement=0.01,
        warmup_updates=0,
    )
    base.update(kw)
    return schedule.Budget(**base)


def run_curve(b: schedule.Budget, losses):
    """Feeds one validation loss every `validate_every` updates; [(step, rate after, decision)]."""
    t = schedule.Tracker(lr=b.learning_rate)
    out = []
    for k, v in enumerate(losses, start=1):
        step = min(k * b.validate_every, b.max_updates)
        d = schedule.observe(b, t, step, v)
        t = d.tracker
        out.append((step, t.lr, d))
        if d.stop:
            break
    return out


def test_cosine_schedule_matches_numpy():
    peak, floor, total, warm = 3e-3, 1e-5, 1000, 50
    steps = np.arange(total + 20)
    frac = np.clip((steps - warm) / (total - warm), 0.0, 1.0)
    want = np.where(steps < warm, peak * (steps + 1) / warm, floor + (peak - floor) * 0.5 * (1 + np.cos(np.pi * frac)))
    b = make_budget(schedule="cosine", learning_rate=peak, min_lr=floor, max_updates=total, warmup_updates=warm)
    got = np.array([schedule.rate(b, schedule.Tracker(lr=0.0), int(s)) for s in steps])
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)
    assert got[warm - 1] == peak and got[total] == pytest.approx(floor, rel=1e-12) and got[-1] == got[total]


def test_paper_schedule_follows_the_epoch_of_the_update():
    b = make_budget(schedule="paper", steps_per_epoch=37)
    steps = np.arange(30 * 37)
    epoch = steps // 37
    want = np.select([epoch >= 25, epoch >= 10], [1e-4, 5e-4], 1e-3)
    got = np.array([schedule.rate(b, schedule.Tracker(lr=0.0), int(s)) for s in steps])
    np.testing.assert_array_equal(got, want)


def test_plateau_decays_then_stops_on_a_synthetic_curve():
    # significant improvements (> 1%) at validations 1-3 and 6; 6.99 and 6.98 are new bests
    # below the threshold: saved as best, counted as no improvement
    curve = [10.0, 8.0, 7.0, 6.99, 6.98, 6.5, 6.6, 6.7, 6.6, 6.6, 6.6, 6.6]
    got = run_curve(make_budget(lr_patience=2, min_lr=2.5e-3), curve)
    steps = [s for s, _, _ in got]
    rates = [lr for _, lr, _ in got]
    best = [d.new_best for _, _, d in got]
    assert best == [True, True, True, True, True, True, False, False, False, False]
    #        no improvement for 2 validations at 5 (decay), at 8 (decay to the floor), at 10 (stop)
    assert rates == [1e-2, 1e-2, 1e-2, 1e-2, 5e-3, 5e-3, 5e-3, 2.5e-3, 2.5e-3, 2.5e-3]
    assert [d.decayed for _, _, d in got] == [False] * 4 + [True, False, False, True, False, False]
    last = got[-1][2]
    assert last.stop == "plateau" and steps[-1] == 1000
    assert last.tracker.best_step == 600 and last.tracker.best_val == 6.5
    assert last.tracker.last_gain == pytest.approx((6.98 - 6.5) / 6.98)


def test_patience_stops_and_min_updates_delays_it():
    curve = [5.0, 4.0, 4.1, 4.2, 4.0, 4.3, 3.9, 4.5, 4.5, 4.5]
    b = make_budget(schedule="cosine", patience=3)
    got = run_curve(b, curve)
    assert [s for s, _, _ in got][-1] == 500 and got[-1][2].stop == "patience"  # 3 validations after the best at 200
    got = run_curve(dataclasses.replace(b, min_updates=650), curve)
    assert got[-1][0] == 1000 and got[-1][2].stop == "patience"  # 3.9 at 700 restarted the count
    assert got[-1][2].tracker.best_step == 700


def test_budget_stop_while_improving_is_reported_with_the_numbers():
    b = make_budget(max_updates=450, patience=4)
    got = run_curve(b, [10.0, 9.0, 9.5, 8.0, 7.6])  # the last validation is at the budget, 450
    step, _, d = got[-1]
    assert step == 450 and d.stop == "budget"
    assert schedule.still_improving(b, d.tracker, d.stop)
    msg = schedule.warning_message(b, d.tracker, "L1")
    assert msg == (
        "L1: stopped on the budget while validation was still improving (best at update 450 of 450, "
        "last improvement 5%); raise train.max_updates to train longer"
    )
    flat = run_curve(b, [10.0, 9.0, 9.5, 9.6, 9.7])  # the last improvement 3 validations ago: > patience / 2
    assert flat[-1][2].stop == "budget" and not schedule.still_improving(b, flat[-1][2].tracker, "budget")
    assert not schedule.still_improving(b, got[-1][2].tracker, "patience")


def test_the_shipped_configs_budgets():
    paper = load_config("paper")
    b = schedule.budget(paper.train, 1000)
    assert (b.schedule, b.max_updates, b.validate_every, b.patience) == ("paper", 30_000, 1000, None)
    assert schedule.rate(b, schedule.Tracker(lr=0.0), 10 * 1000) == 5e-4
    demo = load_config("demo")
    b = schedule.budget(demo.train, 35)  # a small world: 35 updates per pass over its samples
    assert (
        b.schedule == "plateau"
        and b.max_updates == demo.train.max_updates
        and b.validate_every == demo.train.validate_every_updates
    )
    tiny = load_config("tiny")
    assert schedule.budget(tiny.train, 7).max_updates <= 20


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_a_budget_that_cuts_an_improving_run_warns_then_a_larger_budget_goes_on(tmp_path):
    kw = dict(lr_schedule="plateau", learning_rate=5e-3, validate_every_updates=4)
    h = _Lines()
    logging.getLogger("somojax.train").addHandler(h)
    try:
        res = make_trainer(tiny_config(tmp_path, max_updates=8, patience=3, **kw), tmp_path).fit()
    finally:
        logging.getLogger("somojax.train").removeHandler(h)
    losses = [r["val_loss"] for r in res.loop.history]
    assert len(losses) == 2 and losses[1] < losses[0] * 0.99, losses  # still improving at the budget
    summary = json.loads((tmp_path / "ckpt" / "L1" / "summary.json").read_text())
    assert summary["stop_reason"] == "budget" and summary["still_improving"] is True
    assert summary["best_step"] == 8 and summary["max_updates"] == 8 and summary["best_val_loss"] == losses[1]
    assert summary["last_improvement"] == pytest.approx((losses[0] - losses[1]) / losses[0])
    warning = [line for line in h.lines if "still improving" in line]
    assert warning == [summary["warning"]] and "best at update 8 of 8" in warning[0]

    # the budget and the patience may change on resume; the rate's settings may not
    res = make_trainer(tiny_config(tmp_path, max_updates=12, patience=4, **kw), tmp_path).fit()
    assert res.resumed_from == 8 and res.loop.step == 12 and res.loop.tracker.validations == 3
    assert json.loads((tmp_path / "ckpt" / "L1" / "summary.json").read_text())["updates"] == 12
    with pytest.raises(CheckpointError, match="learning-rate settings"):
        make_trainer(tiny_config(tmp_path, max_updates=16, lr_decay=0.3, **kw), tmp_path).fit()


def test_a_plateau_decayed_run_interrupted_resumes_bitwise(tmp_path):
    # every validation is "no improvement" (min_improvement 0.9), so the rate halves at each one
    kw = dict(
        lr_schedule="plateau",
        learning_rate=2e-2,
        lr_patience=1,
        lr_decay=0.5,
        min_lr=1e-4,
        min_improvement=0.9,
        max_updates=12,
        validate_every_updates=3,
        checkpoint_every_steps=4,
        log_every_steps=2,
    )
    ref = make_trainer(tiny_config(tmp_path / "a", **kw), tmp_path / "a").fit()
    assert [h["lr"] for h in ref.loop.history] == [2e-2, 2e-2, 1e-2, 5e-3]  # each the rate of the updates before it
    cfg = tiny_config(tmp_path / "b", **kw)

    def hook(point, step):
        if point == "after_step" and step == 8:  # after two decays, between the checkpoint at 8 and validation 9
            os.kill(os.getpid(), signal.SIGTERM)

    faults.hook = hook
    try:
        with pytest.raises(signals.Interrupted) as e:
            make_trainer(cfg, tmp_path / "b").fit()
    finally:
        faults.hook = None
    assert e.value.exit_code == 143
    res = make_trainer(cfg, tmp_path / "b").fit()
    assert res.resumed_from == 8
    assert leaves_equal(jax.device_get(res.state), jax.device_get(ref.state))
    assert res.loop.history == ref.loop.history and res.loop.to_json() == ref.loop.to_json()
    a, b = tmp_path / "a" / "ckpt" / "L1", tmp_path / "b" / "ckpt" / "L1"
    assert metric_records(a / "metrics.jsonl") == metric_records(b / "metrics.jsonl")
    assert json.loads((a / "summary.json").read_text()) == json.loads((b / "summary.json").read_text())
    assert math.isclose(res.loop.tracker.lr, 2.5e-3)
