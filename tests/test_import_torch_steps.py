"""The steps of `import_torch` (somojax/train/import_torch.py) on their own: the model settings
taken from the weights and the told window length, and the input order."""

import logging

import numpy as np
import pytest

from somojax.config import load_config
from somojax.errors import InputDataError
from somojax.train import import_torch as it


def _weights(d=6, s=10, h=12):
    return {"W_ih": np.zeros((d, 3 * h)), "W_hh": np.zeros((h, 3 * h)), "W_sh": np.zeros((s, h))}


@pytest.fixture
def cfg():
    return load_config("tiny", ["model.hidden_size=8", "model.seq_length=30"])


def test_model_config_takes_the_hidden_size_from_the_weights_and_warns(cfg, caplog):
    logger = logging.getLogger("somojax")
    logger.addHandler(caplog.handler)
    try:
        model = it._model_config(cfg, _weights(h=12), None)
    finally:
        logger.removeHandler(caplog.handler)
    assert model.hidden_size == 12 and model.seq_length == 30 and model.dropout == cfg.model.dropout
    assert "the weights have H=12 hidden units, the config says model.hidden_size=8" in caplog.text
    assert it._model_config(cfg, _weights(h=8), 365).seq_length == 365


def test_model_config_refuses_a_window_shorter_than_a_day(cfg):
    with pytest.raises(InputDataError, match=r"--seq-length 0: the model's window length must be at least 1 day"):
        it._model_config(cfg, _weights(), 0)


def test_input_order_from_the_statistics_file_else_the_config(cfg):
    dyn, sta = it._input_order(cfg, "L2", {}, _weights(d=len(cfg.data.dynamic_inputs) + 1), "m.npz")
    assert dyn == tuple(cfg.data.dynamic_inputs) + ("sm_L1",) and sta == tuple(cfg.data.static_inputs)
    order = {"dynamic_inputs": ["b", "a"], "static_inputs": ["z"]}
    assert it._input_order(cfg, "L1", order, _weights(d=2, s=1), "m.npz") == (("b", "a"), ("z",))
    with pytest.raises(InputDataError, match=r"m\.npz: lstm\.weight_sh has 3 static inputs but layer L1 uses 1 \(z\)"):
        it._input_order(cfg, "L1", order, _weights(d=2, s=3), "m.npz")
