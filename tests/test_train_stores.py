"""`somojax.train.train` on stores written in the test: the cascade L1 -> L2 -> L3 learns."""

from __future__ import annotations


import jax
import numpy as np
import pytest

from somojax import constants as C
from somojax.checkpoint import load_bundle
from somojax.errors import CheckpointError
from somojax.train import train
from somojax.data.samples import valid_windows
from somojax.utils.logging import read_metrics
from tests.train_fixtures import store_config, write_learnable_stores


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    cells = write_learnable_stores(tmp / "stores")
    cfg = store_config(tmp)
    bundles = train(cfg)
    return cfg, cells, bundles


def test_cascade_trains_every_layer_and_lowers_validation_loss(trained):
    cfg, cells, bundles = trained
    assert list(bundles) == ["L1", "L2", "L3"]
    assert bundles["L2"].dynamic_inputs == tuple(C.DYNAMIC_INPUTS) + ("sm_L1",)
    assert bundles["L3"].dynamic_inputs == tuple(C.DYNAMIC_INPUTS) + ("sm_L1", "sm_L2")
    for layer, b in bundles.items():
        assert b.n_members == 2
        assert set(b.stats.cells) <= set(int(c) for c in cells)
        val = [
            r["val/val_loss"]
            for r in read_metrics(cfg.run_dir / "metrics" / layer / "metrics.jsonl")
            if "val/val_loss" in r
        ]
        assert len(val) == cfg.train.epochs
        assert min(val[1:]) < val[0], (layer, val)
    # upper-layer input statistics are those of the upper layer's predictions, not of its targets
    s2 = bundles["L2"].stats
    assert s2.mean["sm_L1"] != pytest.approx(s2.target_mean.get("L1", np.nan))


def test_rerun_of_a_finished_layer_changes_nothing(trained):
    cfg, _, bundles = trained
    again = train(cfg, layers=["L2"])  # finished: loads L1, does not retrain L2
    np.testing.assert_array_equal(again["L2"].params["W_hh"], bundles["L2"].params["W_hh"])


def test_layer_2_alone_needs_layer_1(tmp_path):
    write_learnable_stores(tmp_path / "stores")
    cfg = store_config(tmp_path)
    with pytest.raises(CheckpointError, match="needs the trained L1 model"):
        train(cfg, layers=["L2"])


def test_training_cells_restrict_the_data(trained, tmp_path):
    cfg, cells, _ = trained
    import dataclasses

    sub = [int(c) for c in cells[: len(cells) // 2 + 1]]
    cfg2 = dataclasses.replace(
        cfg, workdir=str(tmp_path / "fold"), data=dataclasses.replace(cfg.data, store_dir=str(cfg.store_dir))
    )
    cfg2 = dataclasses.replace(cfg2, train=dataclasses.replace(cfg2.train, epochs=1, max_updates_per_epoch=2))
    b = train(cfg2, layers=["L1"], cells=sub)["L1"]
    meta_cells = set(b.stats.cells)
    assert meta_cells and meta_cells <= set(sub)


def test_cli_train_resumes_the_finished_run(trained):
    from somojax.cli import main

    cfg, _, bundles = trained
    t = cfg.train
    args = [
        "train",
        "-c",
        "tiny",
        f"workdir={cfg.workdir}",
        f"data.forcing_start={cfg.data.forcing_start}",
        f"data.forcing_end={cfg.data.forcing_end}",
        f"data.target_start={cfg.data.target_start}",
        f"data.target_end={cfg.data.target_end}",
        f"data.val_fraction={cfg.data.val_fraction}",
        "model.hidden_size=8",
        "model.seq_length=20",
        "model.dropout=0.0",
        f"train.members={t.members}",
        f"train.batch_size={t.batch_size}",
        f"train.epochs={t.epochs}",
        f"train.max_updates_per_epoch={t.max_updates_per_epoch}",
        "train.learning_rates=[[0, 0.02]]",
        "train.lr_schedule=paper",
        "train.max_updates=null",
        "--layers",
        "L1",
    ]
    assert main(args) == 0
    assert (cfg.run_dir / "config.yaml").exists()
    np.testing.assert_array_equal(load_bundle(cfg.checkpoint_dir / "L1").params["W_ih"], bundles["L1"].params["W_ih"])


def per_window_mean(bundle, x_d: np.ndarray, x_s: np.ndarray) -> np.ndarray:
    """The exact mode by its definition: day e from its own window e−L+1..e, run alone from a
    zero state by the model's forward; each member de-normalised and clipped at 0, then the
    member mean. NaN where the window is incomplete or has a non-finite input."""
    from somojax.models import ealstm

    L = bundle.model.seq_length
    mean, std = bundle.stats.target_mean[bundle.layer], bundle.stats.target_std[bundle.layer]
    fwd = jax.jit(lambda p, x, s: ealstm.forward(p, x, s))
    members = [{k: v[m] for k, v in bundle.params.items()} for m in range(bundle.n_members)]
    want = np.full(x_d.shape[:2], np.nan)
    for e in range(L - 1, x_d.shape[1]):
        window = x_d[:, e - L + 1 : e + 1]
        preds = [np.asarray(fwd(p, np.nan_to_num(window), x_s), np.float64)[:, 0] for p in members]
        value = np.mean([np.maximum(p * std + mean, 0.0) for p in preds], axis=0)
        want[:, e] = np.where(np.isfinite(window).all(axis=(1, 2)), value, np.nan)
    return want


def test_cascade_inputs_come_from_the_rollout_engine(trained):
    """The upper-layer inputs used in training are the exact per-window predictions, L2's fed by
    L1's, NaN exactly where a window is incomplete or touches a missing input."""
    from somojax.train.cascade import upper_predictions

    _, _, bundles = trained
    rng = np.random.default_rng(3)
    d, s = len(C.DYNAMIC_INPUTS), len(C.STATIC_INPUTS)
    raw_d = rng.standard_normal((3, 60, d)).astype(np.float32)
    raw_d[1, 30, 0] = np.nan
    raw_s = rng.standard_normal((3, s)).astype(np.float32)
    got = upper_predictions("L3", bundles, raw_d, raw_s, C.DYNAMIC_INPUTS, C.STATIC_INPUTS)
    b1, b2 = bundles["L1"], bundles["L2"]
    norm = lambda b, cols, stat: (  # noqa: E731
        np.stack([(cols[v] - b.stats.mean[v]) / b.stats.std[v] for v in b.dynamic_inputs], -1).astype(np.float32),
        np.stack([(stat[v] - b.stats.mean[v]) / b.stats.std[v] for v in b.static_inputs], -1).astype(np.float32),
    )
    cols = {n: raw_d[..., k] for k, n in enumerate(C.DYNAMIC_INPUTS)}
    stat = {n: raw_s[:, k] for k, n in enumerate(C.STATIC_INPUTS)}
    l1 = per_window_mean(b1, *norm(b1, cols, stat))
    np.testing.assert_allclose(got["sm_L1"], l1, atol=1e-5, equal_nan=True)
    assert np.array_equal(np.isfinite(got["sm_L1"]), valid_windows(norm(b1, cols, stat)[0], b1.model.seq_length))
    l2 = per_window_mean(b2, *norm(b2, {**cols, "sm_L1": l1.astype(np.float32)}, stat))
    np.testing.assert_allclose(got["sm_L2"], l2, atol=1e-5, equal_nan=True)
    assert np.isnan(got["sm_L2"][:, : 2 * (b1.model.seq_length - 1)]).all()  # the cascade's spin-up
