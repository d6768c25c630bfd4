"""Training on the `tiny` synthetic Earth (synth -> prepare -> train) lowers the validation loss."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from somojax.config import load_config
from somojax.data.samples import layer_inputs
from somojax.errors import ConfigError
from somojax.train.run import train_layer


@pytest.fixture(scope="module")
def tiny_stores(tmp_path_factory):
    synth = pytest.importorskip("somojax.synth")
    if not hasattr(synth, "generate"):
        pytest.skip("somojax.synth.generate is not available yet")
    from somojax.prepare import prepare

    cfg = load_config("tiny", [f"workdir={tmp_path_factory.mktemp('tiny')}"])
    synth.generate(cfg)
    prepare(cfg)
    return cfg


def test_tiny_l1_validation_loss_decreases(tiny_stores):
    cfg = tiny_stores
    cfg = dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, max_updates=40, validate_every_updates=10, patience=None)
    )
    li = layer_inputs(cfg, "L1")
    assert len(li.train_samples) > 0 and len(li.val_samples) > 0
    assert not set(li.train_cells) & set(li.val_cells)
    res = train_layer(cfg, "L1", li)
    val = [h["val_loss"] for h in res.loop.history]
    assert len(val) == 4 and all(np.isfinite(val))
    assert val[-1] < val[0] and min(val) < 0.9 * val[0], val


@pytest.mark.parametrize("shared", [False, True])
def test_too_few_samples_for_one_step_is_a_config_error(tiny_stores, shared):
    """More samples per step than the region has: a ConfigError (exit code 2) naming the keys
    that fix it, not an internal error."""
    li = layer_inputs(tiny_stores, "L1")
    batch = len(li.train_samples) + 1 if shared else len(li.train_samples) // 2 + 1
    t = dataclasses.replace(tiny_stores.train, batch_size=batch, members=2, shared_batches=shared)
    with pytest.raises(ConfigError, match=f"do not fill one step.*train.batch_size={batch}") as e:
        train_layer(dataclasses.replace(tiny_stores, train=t), "L1", li)
    assert ("train.shared_batches=true" in str(e.value)) is not shared
