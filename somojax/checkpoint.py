"""Checkpoints: everything inference needs lives next to the weights (docs/design.md#conventions).

A layer's checkpoint directory (`<workdir>/checkpoints/<layer>/`) is written by training (orbax)
or by `somojax import-torch`. `Bundle` is what the rollout engine and evaluation consume: the
ensemble parameters, the model settings, the normalisation statistics and the exact input order.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec as P, SingleDeviceSharding

from somojax import constants as C
from somojax.config import ModelConfig, from_dict
from somojax.errors import CheckpointError
from somojax.normalization import NormStats
from somojax.utils import faults


@dataclass(frozen=True)
class Bundle:
    """A trained (or imported) layer model, ready for inference.

    Attributes:
      layer: `L1`, `L2` or `L3`.
      params: ensemble parameters, each leaf [member, ...] (see `somojax.models.ealstm`).
      model: the model settings it was trained with (hidden size, seq_length, predict_last_n ...).
      stats: normalisation statistics (inputs and this layer's target).
      dynamic_inputs: column order of the dynamic inputs, upper-layer inputs (`sm_L1`...) last.
      static_inputs: column order of the static inputs.
      config: the resolved run config (as a dict) the model was trained with, for provenance.
    """

    layer: str
    params: Mapping[str, Any]
    model: ModelConfig
    stats: NormStats
    dynamic_inputs: tuple[str, ...]
    static_inputs: tuple[str, ...]
    config: Mapping[str, Any] | None = None

    @property
    def n_members(self) -> int:
        return int(self.params["W_hh"].shape[0])


# ----------------------------------------------------------------------------------------
# on-disk layout (orbax, V0 `CheckpointManager` API; docs/training.md#checkpoints)
# ----------------------------------------------------------------------------------------
# <checkpoint_dir>/<layer>/
#   state/<step>/state   params, optimizer state, dropout keys, step      (keep-last-N, resume)
#   state/<step>/meta    JSON: epoch, data-iterator state, loop counters, config, stats, inputs
#   best/<step>/params   params of the best validation loss so far          (inference)
#   best/<step>/meta     JSON: as above, with the validation loss
# `load_bundle` reads best/ when it exists, else the latest state/ (import-torch writes best/).

STATE_DIR = "state"
BEST_DIR = "best"


TRASH_DIR = ".trash"  # orbax moves deleted steps here (an atomic rename); emptied by us


def _manager(
    directory: Path, items: tuple[str, str], keep: int | None, read_only: bool = False
) -> ocp.CheckpointManager:
    """An orbax manager of (arrays item, JSON item) checkpoints.

    Each manager gets its own barrier prefix: the state/ and best/ managers save the same step
    number at the end of an epoch, and in a multi-process job orbax's barriers are named by step.
    A step directory appears only complete (orbax writes `<step>.orbax-checkpoint-tmp-*` and
    renames it); old steps are deleted by renaming them into `.trash/` first, so a kill during a
    deletion never leaves a half-deleted step that looks complete; leftover temporary
    directories of killed saves are removed when a writable manager opens.
    """
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        create=not read_only,
        cleanup_tmp_directories=not read_only,
        todelete_subdir=None if read_only else TRASH_DIR,
        multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=directory.name),
    )
    handlers = {items[0]: ocp.StandardCheckpointHandler(), items[1]: ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(directory.absolute(), options=options, item_handlers=handlers)


def _empty_trash(directory: Path) -> None:
    """Deletes what orbax moved to `<directory>/.trash` (never a step: not resumable data)."""
    trash = directory / TRASH_DIR
    if jax.process_index() == 0 and trash.is_dir():
        for p in trash.iterdir():
            shutil.rmtree(p, ignore_errors=True)


class TrainCheckpointer:
    """Checkpoints of one layer's training run: the last `keep` train states and the best params.

    `save` is asynchronous unless `wait=True` (orbax writes in the background and renames the
    step directory only when complete, so a run killed mid-save leaves the previous checkpoint
    as the latest); `wait()` blocks until pending saves are on disk. Saving a step that is
    already on disk is a no-op: a finished orbax step is complete, and the loop only saves a
    step twice when a resumed run recomputes bitwise what an interrupted one saved.

    best/ keeps every step until `prune_best` (the loop calls it once the train state that
    names the new best step is on disk), so the best params a train state refers to exist as
    long as that state does.
    """

    def __init__(self, directory: str | Path, keep: int = 3):
        faults.arm_checkpoint_points()
        self.dir = Path(directory)
        self._state = _manager(self.dir / STATE_DIR, ("state", "meta"), keep)
        self._best = _manager(self.dir / BEST_DIR, ("params", "meta"), None)
        self._empty_trash()

    def latest_step(self) -> int | None:
        return self._state.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._state.all_steps())

    def best_steps(self) -> list[int]:
        return sorted(self._best.all_steps())

    def save(self, step: int, state: Any, meta: Mapping[str, Any], wait: bool = False) -> None:
        """Saves a train state (pytree of arrays) and its JSON metadata under `step`."""
        if int(step) not in self._state.all_steps():
            self._state.save(
                int(step),
                args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta))),
                force=True,
            )
        if wait:
            self._state.wait_until_finished()
            self._empty_trash()

    def save_best(self, step: int, params: Any, meta: Mapping[str, Any]) -> None:
        """Saves the parameters with the best validation loss so far and waits until they are on
        disk (the train state saved next records that they are)."""
        if int(step) not in self._best.all_steps():
            self._best.save(
                int(step),
                args=ocp.args.Composite(params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(dict(meta))),
                force=True,
            )
        self._best.wait_until_finished()

    def delete_best(self, step: int) -> None:
        """Removes one best/ step (moved to .trash atomically, then deleted)."""
        self._best.delete(int(step))
        self._empty_trash()

    def prune_best(self, keep_step: int) -> None:
        """Deletes every best/ step but `keep_step`."""
        for s in self.best_steps():
            if s != keep_step:
                self._best.delete(s)
        self._empty_trash()

    def _empty_trash(self) -> None:
        _empty_trash(self.dir / STATE_DIR)
        _empty_trash(self.dir / BEST_DIR)

    def read_meta(self, step: int) -> dict:
        """The JSON metadata of a saved train state (without reading its arrays)."""
        return dict(self._state.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta)

    def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restores (state, meta) of `step` (default: the latest) onto the shardings of `target`.

        `target` is a pytree of `jax.ShapeDtypeStruct` with shardings (see `abstract_like`); the
        mesh may differ from the one the checkpoint was written from.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.dir / STATE_DIR}")
        try:
            r = self._state.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
            )
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(
                f"checkpoint {self.dir / STATE_DIR / str(step)} does not match the model being trained ({e}); "
                "start over with `somojax train --fresh` or use another workdir"
            ) from None
        return r.state, dict(r.meta)

    def wait(self) -> None:
        self._state.wait_until_finished()
        self._best.wait_until_finished()
        self._empty_trash()

    def close(self) -> None:
        self._state.close()
        self._best.close()

    def __enter__(self) -> "TrainCheckpointer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def discard_checkpoints(directory: str | Path) -> None:
    """Deletes a layer's train states and best params (`train --fresh`).

    Each part is renamed away first (atomic), so a kill during the deletion leaves either the
    old checkpoints or none, never a partly deleted step that looks complete.
    """
    for part in (STATE_DIR, BEST_DIR):
        p = Path(directory) / part
        if p.exists():
            gone = p.with_name(f".{part}.discarded-{uuid.uuid4().hex[:8]}")
            p.rename(gone)
            shutil.rmtree(gone, ignore_errors=True)
    for old in Path(directory).glob(".*.discarded-*") if Path(directory).is_dir() else ():
        shutil.rmtree(old, ignore_errors=True)


def abstract_like(tree: Any, shardings: Any) -> Any:
    """`jax.ShapeDtypeStruct`s of `tree`'s leaves with the given shardings (a matching tree)."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s), tree, shardings)


def _single_device_target(metadata: Any) -> Any:
    dev = SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=dev), metadata)


def bundle_meta(
    layer: str,
    model: ModelConfig,
    stats: NormStats,
    dynamic_inputs: tuple[str, ...],
    static_inputs: tuple[str, ...],
    config: Mapping[str, Any] | None,
    **extra: Any,
) -> dict:
    """The JSON metadata that makes a checkpoint self-contained for inference (docs/design.md#conventions)."""
    return {
        "layer": layer,
        "model": dataclasses.asdict(model),
        "stats": json.loads(stats.to_json()),
        "dynamic_inputs": list(dynamic_inputs),
        "static_inputs": list(static_inputs),
        "config": dict(config) if config is not None else None,
        **extra,
    }


def bundle_from(params: Mapping[str, Any], meta: Mapping[str, Any], source: str = "checkpoint") -> Bundle:
    """A `Bundle` from parameters and the metadata written with them."""
    try:
        model = from_dict({"model": meta["model"]}, source=f"{source} (model settings)").model
        stats = NormStats.from_json(json.dumps(meta["stats"]), source=f"{source} (normalisation statistics)")
        return Bundle(
            layer=str(meta["layer"]),
            params={k: np.asarray(v) for k, v in params.items()},
            model=model,
            stats=stats,
            dynamic_inputs=tuple(meta["dynamic_inputs"]),
            static_inputs=tuple(meta["static_inputs"]),
            config=meta.get("config"),
        )
    except KeyError as e:
        raise CheckpointError(f"{source} lacks {e} in its metadata; it was not written by somojax") from None


def save_bundle(bundle: Bundle, directory: str | Path, step: int = 0, **extra: Any) -> Path:
    """Writes a `Bundle` as a checkpoint directory that `load_bundle` reads (its best/ part).

    Used by `somojax import-torch`; training writes the same layout through `TrainCheckpointer`.
    """
    directory = Path(directory)
    meta = bundle_meta(
        bundle.layer, bundle.model, bundle.stats, bundle.dynamic_inputs, bundle.static_inputs, bundle.config, **extra
    )
    mngr = _manager(directory / BEST_DIR, ("params", "meta"), 1)
    with mngr:
        params = {k: np.asarray(v) for k, v in bundle.params.items()}
        mngr.save(
            step,
            args=ocp.args.Composite(params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)),
            force=True,
        )
        mngr.wait_until_finished()
    _empty_trash(directory / BEST_DIR)
    return directory


def load_bundle(checkpoint_dir: str | Path, which: str = "auto") -> Bundle:
    """The model of a layer's checkpoint directory, ready for inference.

    Args:
      checkpoint_dir: `<workdir>/checkpoints/<layer>` (written by training or import-torch).
      which: "best" (lowest validation loss), "latest" (the last saved train state), or "auto":
        best when it exists, else latest.

    Returns:
      `Bundle` with NumPy parameters [member, ...] on the host.
    """
    d = Path(checkpoint_dir)
    if not d.is_dir():
        raise CheckpointError(f"checkpoint directory {d} does not exist; train the layer or import weights first")
    order = {"auto": (BEST_DIR, STATE_DIR), "best": (BEST_DIR,), "latest": (STATE_DIR,)}.get(which)
    if order is None:
        raise ValueError(f"which={which!r}: expected 'auto', 'best' or 'latest'")
    for part in order:
        if not (d / part).is_dir():
            continue
        item = "params" if part == BEST_DIR else "state"
        mngr = _manager(d / part, (item, "meta"), None, read_only=True)
        with mngr:
            step = mngr.latest_step()
            if step is None:
                continue
            meta_tree = mngr.item_metadata(step)[item]
            if part == STATE_DIR:  # the whole train state (small), then its params
                target = _single_device_target(meta_tree)
                r = mngr.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
                )
                params = r.state["params"]
            else:
                target = _single_device_target(meta_tree)
                r = mngr.restore(
                    step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
                )
                params = r.params
            return bundle_from(params, r.meta, source=str(d / part / str(step)))
    raise CheckpointError(f"no finished checkpoint in {d} (looked for {', '.join(order)}/)")


def member_spec(x: Any) -> P:
    """Partition spec of a train-state leaf: leading member axis, scalars replicated."""
    return P(C.MEMBER_AXIS) if np.ndim(x) else P()


def state_shardings(state: Any, mesh: Any) -> Any:
    """NamedShardings for every leaf of a train state on `mesh` (see `member_spec`)."""
    return jax.tree.map(lambda x: NamedSharding(mesh, member_spec(x)), state)
