"""Cross-validation bookkeeping: folds per cell across layers, no leakage, resumability.

The training and prediction steps are injected here (recording what they were given), so these
tests check the protocol itself; the end-to-end test on `tiny` runs the real cascade.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from somojax import constants as C
from somojax.checkpoint import Bundle
from somojax.config import ModelConfig, load_config
from somojax.errors import CheckpointError, ConfigError
from somojax.evaluate import crossval as CV
from tests import evaluate_mock as mock
from somojax.normalization import NormStats


def _targets(n_cells=23, seed=1):
    m = mock.mock_stores(n_lat=8, n_lon=8, days=60, n_cells=n_cells, seed=seed)
    return m.targets


def test_every_target_cell_in_exactly_one_fold_and_layers_balanced():
    t = _targets()
    pres = CV.layer_presence(t)
    # one cell without any target is left out of the folds
    sm = t[C.SM].values.copy()
    sm[:, 0, :] = np.nan
    t2 = t.assign({C.SM: (t[C.SM].dims, sm)})
    folds = CV.assign_folds(CV.layer_presence(t2), 5, seed=3)
    cells = set(t[C.CELL].values.tolist())
    assert set(folds.index) == cells - {int(t[C.CELL].values[0])}
    assert folds.index.is_unique and set(folds["fold"]) == set(range(5))
    # per layer, fold sizes differ by at most the number of layer patterns
    n_patterns = len(set(map(tuple, folds[[f"has_{l}" for l in C.LAYERS]].to_numpy())))
    for l in C.LAYERS:
        sizes = folds[folds[f"has_{l}"]].groupby("fold").size().reindex(range(5), fill_value=0)
        assert sizes.max() - sizes.min() <= n_patterns
    # deterministic in the seed, different for another seed
    again = CV.assign_folds(pres, 5, seed=3)
    np.testing.assert_array_equal(again["fold"], CV.assign_folds(pres, 5, seed=3)["fold"])
    assert not np.array_equal(CV.assign_folds(pres, 5, seed=4)["fold"], again["fold"])
    with pytest.raises(ConfigError, match="at least 2"):
        CV.assign_folds(pres, 1, 0)
    with pytest.raises(ConfigError, match="at most"):
        CV.assign_folds(pres, 100, 0)


class Recorder:
    """Fake cascade: 'trains' the folds it is given together by recording their cells, predicts
    fold-tagged values."""

    def __init__(self, leak=False):
        self.trained: list[tuple[int, list[int], tuple[str, ...], bool]] = []  # (fold, cells, layers, fresh)
        self.calls: list[list[int]] = []  # the folds of each (stacked) training
        self.leak = leak

    def train(self, cfgs, cells, layers, fresh, stack_dir):
        assert stack_dir == Path(next(iter(cfgs.values())).workdir).parent / "stacked"
        self.calls.append(sorted(cfgs))
        out = {}
        for k, cfg in cfgs.items():
            assert int(str(cfg.workdir).rstrip("/").split("/")[-1]) == k
            c = [int(x) for x in cells[k]]
            self.trained.append((k, c, tuple(layers), fresh))
            stats = NormStats(mean={}, std={}, cells=tuple(c + ([self.extra] if self.leak else [])))
            params = {"W_hh": np.zeros((1, 1, 3))}
            out[k] = {l: Bundle(l, params, ModelConfig(), stats, (), ()) for l in layers}
        return out

    def predict(self, cfg, bundles, cells, start, end):
        k = int(str(cfg.workdir).rstrip("/").split("/")[-1])
        t = pd.date_range(start, end)
        v = (
            np.full((len(bundles), len(cells), len(t)), float(k), np.float32)
            + 0.001 * np.arange(len(bundles))[:, None, None]
        )
        return xr.DataArray(
            v, dims=(C.LAYER, C.CELL, C.TIME), coords={C.LAYER: list(bundles), C.CELL: cells, C.TIME: t}
        )


def _cfg(tmp_path, *extra):
    return load_config("tiny", [f"workdir={tmp_path}/run", "evaluate.folds=3", "evaluate.fold_seed=7", *extra])


def test_cross_validate_no_fold_model_saw_its_test_cells(tmp_path):
    t = _targets()
    cfg = _cfg(tmp_path)
    rec = Recorder()
    cv = CV.cross_validate(cfg, t, rec.train, rec.predict)
    out = cfg.evaluation_dir
    folds = pd.read_csv(out / "folds.csv").set_index("cell")
    js = json.loads((out / "folds.json").read_text())
    assert js["folds"] == 3 and js["fold_seed"] == 7
    assert sorted(c for v in js["cells"].values() for c in v) == sorted(folds.index)
    for k in range(3):
        done = json.loads((out / "folds" / str(k) / "done.json").read_text())
        test = set(done["test_cells"])
        assert test == set(folds.index[folds["fold"] == k])
        for layer, seen in done["train_cells"].items():
            assert not (set(seen) & test), (k, layer)  # the stats' cells of every layer's model
            assert set(seen) | test == set(folds.index)
    # what training was actually given: the three folds in one stacked training, from scratch
    assert rec.calls == [[0, 1, 2]]
    for k, cells, layers, fresh in rec.trained:
        assert layers == cfg.train.layers and fresh
        assert not set(cells) & set(folds.index[folds["fold"] == k])
    # every cell's series comes from its own fold's models (values tag the fold)
    fold_of = folds.loc[cv[C.CELL].values, "fold"].to_numpy()
    np.testing.assert_allclose(cv.sel(layer="L1").values[:, 0], fold_of)
    store = xr.open_zarr(out / "cv_predictions.zarr", consolidated=False)
    assert store[C.SM].dims == (C.LAYER, C.CELL, C.TIME)
    np.testing.assert_array_equal(store["fold"].values, fold_of)
    # the target period (tiny: from 2000-04-01) within the targets store (mock: from 2001-01-01)
    assert pd.Timestamp(store[C.TIME].values[0]) == pd.Timestamp(t[C.TIME].values[0])
    assert pd.Timestamp(store[C.TIME].values[-1]) == pd.Timestamp(t[C.TIME].values[-1])


def test_cross_validate_resumes_finished_folds_and_retrains_changed_ones(tmp_path, monkeypatch):
    t = _targets()
    rec = Recorder()
    CV.cross_validate(_cfg(tmp_path), t, rec.train, rec.predict)
    assert rec.calls == [[0, 1, 2]]
    CV.cross_validate(_cfg(tmp_path), t, rec.train, rec.predict)
    assert rec.calls == [[0, 1, 2]]  # nothing retrained
    folds_dir = tmp_path / "run" / "evaluation" / "folds"
    # fold 1 trained but not predicted (its done.json is missing): predicted from its checkpoints only
    (folds_dir / "1" / "done.json").unlink()
    loaded = []
    monkeypatch.setattr(
        CV,
        "load_fold_bundles",
        lambda cfg, k: (
            loaded.append(k)
            or rec.train({k: CV.fold_config(cfg, k)}, {k: [0]}, cfg.train.layers, False, CV.stack_dir(cfg))[k]
        ),
    )
    CV.cross_validate(_cfg(tmp_path), t, rec.train, rec.predict)
    assert loaded == [1] and (folds_dir / "1" / "done.json").exists()
    # a stacked training interrupted (no fold finished): the same folds resume it, not fresh
    for k in range(3):
        (folds_dir / str(k) / "done.json").unlink()
        (folds_dir / str(k) / "trained.json").unlink()
    n = len(rec.trained)
    CV.cross_validate(_cfg(tmp_path), t, rec.train, rec.predict)
    assert rec.calls[-1] == [0, 1, 2] and not any(fresh for *_, fresh in rec.trained[n:])
    # new folds: every fold trained again, together, from scratch
    n = len(rec.trained)
    CV.cross_validate(_cfg(tmp_path, "evaluate.fold_seed=8"), t, rec.train, rec.predict)
    assert rec.calls[-1] == [0, 1, 2] and all(fresh for *_, fresh in rec.trained[n:])


def test_leaked_test_cell_is_an_error(tmp_path):
    t = _targets()
    cfg = _cfg(tmp_path)
    folds = CV.assign_folds(CV.layer_presence(t), 3, 7)
    rec = Recorder(leak=True)
    rec.extra = int(folds.index[folds["fold"] == 0][0])
    with pytest.raises(CheckpointError, match="trained on test cells"):
        CV.cross_validate(cfg, t, rec.train, rec.predict)
