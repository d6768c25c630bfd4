"""`somojax train`: the layers of the cascade, in order, each with its own checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from somojax import constants as C
from somojax.checkpoint import Bundle, bundle_meta, discard_checkpoints, load_bundle
from somojax.config import Config, to_dict
from somojax.errors import CheckpointError, ConfigError
from somojax.train.cascade import upper_predictions
from somojax.data.pipeline import ArrayTrainData
from somojax.train.groups import Group, GroupTrainer
from somojax.train.loop import Trainer, TrainResult
from somojax.train.step import step_options
from somojax.data.samples import LayerInputs, layer_inputs, open_stores
from somojax.utils import signals
from somojax.utils.logging import get_logger
from somojax.utils.malloc import keep_freed_memory

log = get_logger("train")


def train(
    cfg: Config,
    layers: Sequence[str] | None = None,
    fresh: bool = False,
    cells: Sequence[int] | None = None,
) -> dict[str, Bundle]:
    """Trains (or resumes) the ensemble of each layer, upper layers first.

    Args:
      cfg: the run config; stores are read from `cfg.store_dir`, checkpoints written to
        `cfg.checkpoint_dir/<layer>` (resumed when present, unless `fresh`).
      layers: layers to train (default `train.layers`), run in the order L1, L2, L3. A layer whose
        upper layers are not in the list uses their existing checkpoints.
      fresh: discard existing checkpoints of these layers and start over.
      cells: train only on these global cell ids (a cross-validation fold's training cells).

    Returns:
      {layer: Bundle} of the trained layers (best validation checkpoint).
    """
    keep_freed_memory()  # before JAX starts its CPU threads (see somojax.utils.malloc)
    todo = [l for l in C.LAYERS if l in (layers or cfg.train.layers)]
    unknown = sorted(set(layers or cfg.train.layers) - set(C.LAYERS))
    if unknown:
        raise ConfigError(f"unknown layers {unknown}; expected some of {C.LAYERS}")
    if fresh:  # every layer's old checkpoints go before anything trains: an interrupted
        # `--fresh` run then resumes as a whole, never with some layers of the old run left
        with signals.deferred():  # a Ctrl-C waits for the (atomic) renames
            for layer in todo:
                discard_checkpoints(cfg.checkpoint_dir / layer)
    datasets = open_stores(cfg)
    bundles: dict[str, Bundle] = {}
    for layer in todo:
        li = layer_inputs(cfg, layer, cells=cells, upper=_upper(cfg, layer, bundles), datasets=datasets)
        train_layer(cfg, layer, li)
        bundles[layer] = load_bundle(cfg.checkpoint_dir / layer)
    return {l: bundles[l] for l in todo}


def _upper(cfg: Config, layer: str, bundles: dict[str, Bundle]):
    """The `upper` argument of `layer_inputs` for `layer`: the upper layers' predictions from
    `bundles` (missing ones loaded from `cfg.checkpoint_dir` into it); None for L1."""
    uppers = {u.removeprefix("sm_") for u in C.UPPER_LAYER_INPUTS[layer]}
    for u in sorted(uppers - set(bundles)):
        try:
            bundles[u] = load_bundle(cfg.checkpoint_dir / u)
        except CheckpointError as e:
            raise CheckpointError(f"training {layer} needs the trained {u} model (the cascade): {e}") from None
    if not uppers:
        return None
    d = cfg.data

    def upper(dyn, stat):
        return upper_predictions(
            layer, bundles, dyn, stat, tuple(d.dynamic_inputs), tuple(d.static_inputs), cfg.infer.mode
        )

    return upper


def train_folds(
    cfgs: Mapping[int, Config],
    cells: Mapping[int, Sequence[int]],
    stack_dir: str | Path,
    layers: Sequence[str] | None = None,
    fresh: bool = False,
) -> dict[int, dict[str, Bundle]]:
    """Trains the cascades of several cross-validation folds, each layer of all folds as one
    stacked ensemble (`somojax.train.groups`); the same result as `train(cfgs[k], cells=cells[k])`
    for each fold k, in one compiled step per layer.

    Args:
      cfgs: fold -> its run config (the same settings; fold k's checkpoints, best/ and
        summary.json, go to `cfgs[k].checkpoint_dir/<layer>`).
      cells: fold -> its training cells.
      stack_dir: the stacked train states, `<stack_dir>/<layer>` (resumed unless `fresh`).
      layers, fresh: as `train`.

    Returns:
      {fold: {layer: Bundle}} (each fold's best validation checkpoint).
    """
    keep_freed_memory()
    first = next(iter(cfgs.values()))
    todo = [l for l in C.LAYERS if l in (layers or first.train.layers)]
    if fresh:
        with signals.deferred():
            for layer in todo:
                for d in [Path(stack_dir)] + [Path(c.checkpoint_dir) for c in cfgs.values()]:
                    discard_checkpoints(d / layer)
    datasets = open_stores(first)
    bundles: dict[int, dict[str, Bundle]] = {k: {} for k in cfgs}
    for layer in todo:
        lis = {
            k: layer_inputs(c, layer, cells=cells[k], upper=_upper(c, layer, bundles[k]), datasets=datasets)
            for k, c in cfgs.items()
        }
        train_layer_groups(cfgs, layer, lis, Path(stack_dir) / layer)
        for k, c in cfgs.items():
            bundles[k][layer] = load_bundle(c.checkpoint_dir / layer)
    return {k: {l: b[l] for l in todo} for k, b in bundles.items()}


def _layer_data(cfg: Config, layer: str, li: LayerInputs) -> ArrayTrainData:
    m, t = cfg.model, cfg.train
    return ArrayTrainData(
        li.arrays,
        li.train_samples,
        li.val_samples,
        seq_length=m.seq_length,
        predict_last_n=m.predict_last_n,
        batch_size=t.batch_size,
        members=t.members,
        shared_batches=t.shared_batches,
        seed=t.seed + C.LAYERS.index(layer),
        max_updates_per_epoch=t.max_updates_per_epoch,
    )


def _layer_meta(cfg: Config, layer: str, li: LayerInputs, data: ArrayTrainData) -> dict:
    return bundle_meta(
        layer,
        cfg.model,
        li.stats,
        li.dynamic_inputs,
        li.static_inputs,
        to_dict(cfg),
        train_cells=[int(c) for c in li.train_cells],
        val_cells=[int(c) for c in li.val_cells],
        samples={"train": data.n_train, "val": data.n_val},
    )


def _resume_extra(layer: str, li: LayerInputs, data: ArrayTrainData) -> dict:
    return {
        "layer": layer,
        "inputs": list(li.dynamic_inputs) + list(li.static_inputs),
        "train_cells": _digest(li.train_cells),
        "samples": [data.n_train, data.n_val],
    }


def train_layer(
    cfg: Config, layer: str, li: LayerInputs, fresh: bool = False, devices: list | None = None
) -> TrainResult:
    """Trains one layer from prepared `LayerInputs` into `cfg.checkpoint_dir/<layer>`."""
    m, t = cfg.model, cfg.train
    data = _layer_data(cfg, layer, li)
    trainer = Trainer(
        cfg,
        data,
        n_dynamic=len(li.dynamic_inputs),
        n_static=len(li.static_inputs),
        checkpoint_dir=Path(cfg.checkpoint_dir) / layer,
        opts=step_options(m, t, target_std=li.stats.target_std[layer], kernel=cfg.kernel),
        meta=_layer_meta(cfg, layer, li, data),
        devices=devices,
        resume_extra=_resume_extra(layer, li, data),
        metrics_dir=Path(cfg.run_dir) / "metrics" / layer,
    )
    log.info(
        "%s: %d members, updates of %d samples (%d training samples, %d updates per epoch), %s; mesh %s over %d %s device(s), ensemble mode %s",
        layer,
        t.members,
        t.batch_size * (1 if t.shared_batches else t.members),
        data.n_train,
        data.steps_per_epoch,
        trainer.budget.describe(),
        dict(trainer.mesh.shape),
        trainer.mesh.devices.size,
        trainer.mesh.devices.flat[0].platform,
        trainer.ensemble_mode,
    )
    return trainer.fit(fresh=fresh)


def train_layer_groups(
    cfgs: Mapping[int, Config], layer: str, lis: Mapping[int, LayerInputs], stack_dir: Path, devices: list | None = None
) -> list:
    """Trains one layer of every fold in `cfgs` (inputs `lis`) as one stacked ensemble; returns
    every fold's `LoopState`."""
    first = next(iter(cfgs.values()))
    m, t = first.model, first.train
    groups, extra = [], []
    for k, c in cfgs.items():
        li = lis[k]
        data = _layer_data(c, layer, li)
        scale = step_options(m, t, target_std=li.stats.target_std[layer]).sigma_scale
        groups.append(
            Group(
                f"fold {k}",
                data,
                Path(c.checkpoint_dir) / layer,
                _layer_meta(c, layer, li, data),
                scale,
                Path(c.run_dir) / "metrics" / layer,
            )
        )
        extra.append(_resume_extra(layer, li, data))
    li = next(iter(lis.values()))
    trainer = GroupTrainer(
        first,
        groups,
        n_dynamic=len(li.dynamic_inputs),
        n_static=len(li.static_inputs),
        checkpoint_dir=stack_dir,
        opts=step_options(m, t, kernel=first.kernel),
        layer=layer,
        resume_extra={"groups_extra": extra},
        devices=devices,
    )
    log.info(
        "%s: %d folds x %d members stacked (%s training samples), %s; mesh %s, ensemble mode %s",
        layer,
        len(groups),
        t.members,
        "/".join(str(g.data.n_train) for g in groups),
        trainer.budgets[0].describe(),
        dict(trainer.mesh.shape),
        trainer.ensemble_mode,
    )
    return trainer.fit()


def _digest(cells: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.asarray(cells, np.int64).tobytes()).hexdigest()[:16]
