"""The optimisation loop of one layer: updates, validation, stopping, checkpoints, resume.

How long a layer trains and at which rate: `somojax.train.schedule` (a budget in updates,
validations every `train.validate_every_updates`, early stopping, the learning-rate schedule).

Resume order (what a restarted run does before its first step; big_vision `train.py` style):
  1. Build the mesh and the shardings of the train state from the config and the device set
     (which may differ from the run that wrote the checkpoint).
  2. If the layer's checkpoint directory has a finished train state and `fresh` is False:
     a. read its metadata and check that it was written by a compatible run (model, optimiser,
        batches, data split and input order: `fingerprint`); else stop with `CheckpointError`;
     b. restore params, optimizer state, dropout keys and step onto the current shardings;
     c. restore the data iterator's position (`set_state`);
     d. restore the loop counters: step, the schedule's tracker (best validation loss and its
        step, validations without improvement, the plateau rate), history, and the training
        metrics of the unfinished log window.
     Otherwise initialise the state from `train.seed`.
  3. Make the other files agree with the restored step r: metrics.jsonl keeps only records of
     steps <= r (the steps after r are recomputed and logged again); best/ keeps only steps <= r
     (a later one was written by a run that died before its train state, and is redone), and
     when it lacks the best step the state names, it is rewritten from the state (step r).
  4. Continue where the counters point. Learning rate, dropout keys and batches depend only on
     (step, tracker, iterator position), all restored, so the resumed run computes exactly what the
     uninterrupted run computes (bitwise on CPU; tests/test_train_kill.py).

Order of the writes at a validation, each finished before the next starts:
  train and validation records to metrics.jsonl -> best/<step> (if the loss is the lowest) ->
  state/<step> (its metadata names the best step) -> best/ pruned to that best step
  (-> summary.json when training stopped).
A kill between any two leaves a run that resumes from the previous state and redoes them.
Checkpoints between validations (`train.checkpoint_every_steps`) are written asynchronously.

SIGINT/SIGTERM (`somojax.utils.signals`): the loop finishes the current step, writes a state at
that step (or finishes the validation's writes), and raises `Interrupted` (exit 130/143).

A non-finite training or validation loss stops the run with `TrainingError` naming the step and
the member; checkpoints are written only after the losses since the previous check were found
finite, so the last checkpoint on disk is always a good one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from somojax import constants as C
from somojax import sharding as shd
from somojax.checkpoint import TrainCheckpointer, abstract_like, discard_checkpoints, state_shardings
from somojax.config import Config, to_dict
from somojax.errors import CheckpointError, ConfigError, TrainingError
from somojax.train.compile import JitOnce
from somojax.utils.devices import needs_blocking_dispatch
from somojax.data.pipeline import TrainData
from somojax.train.step import (
    BATCH_KEYS,
    StepOptions,
    init_state,
    make_eval_step,
    make_optimizer,
    make_train_step,
    resolve_ensemble_mode,
)
from somojax.train import schedule
from somojax.utils import faults, signals
from somojax.utils.logging import MetricsWriter, Progress, get_logger

log = get_logger("train")
SUMMARY_FILE = "summary.json"  # next to the checkpoints: why and where training stopped

# settings that must match for a checkpoint to be resumed: what the updates compute, and what the
# learning rate of every update depends on. Free to change: the budget where it does not shape
# the rate (max_updates and epochs of plateau/paper), min_updates, patience, logging, checkpoints.
_RESUME_KEYS = {
    "model": None,  # all of it
    "train": (
        "members",
        "shared_batches",
        "batch_size",
        "clip_norm",
        "loss",
        "nse_eps",
        "nse_sigma_units",
        "seed",
        "lr_schedule",
    ),
    "data": ("split", "val_fraction", "val_start", "val_end", "split_seed", "target_start", "target_end"),
}
_SCHEDULE_RESUME_KEYS = {
    "paper": ("learning_rates", "max_updates_per_epoch"),  # the rate of an update follows its epoch
    "plateau": ("learning_rate", "lr_decay", "lr_patience", "min_lr", "min_improvement", "validate_every_updates"),
    "cosine": ("learning_rate", "min_lr", "max_updates", "warmup_updates"),
}


def record_validation(metrics: Any, name: str, step: int, epoch: int, lr: float, val: Mapping, new_best: bool) -> None:
    """Writes a validation's losses (ensemble mean and members) to the metrics file, prefix
    `val/`, and logs them; the single and the stacked trainers both record them so."""
    members = {f"val_loss_member{m}": x for m, x in enumerate(val["val_loss_members"])}
    metrics.write(step, {"val_loss": val["val_loss"], **members, "epoch": epoch, "lr": lr}, prefix="val/")
    log.info(
        "%s update %d: validation loss %.4g (ensemble mean; members %s)%s",
        name,
        step,
        val["val_loss"],
        " ".join(f"{x:.3g}" for x in val["val_loss_members"]),
        " *best*" if new_best else "",
    )


def to_host(tree: Any) -> Any:
    """Device arrays -> NumPy on this process (replicated arrays of a multi-host mesh included)."""

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_shards[0].data)
        return np.asarray(x)

    return jax.tree.map(one, tree)


class _NoMetrics:
    """Stands in for `MetricsWriter` on processes other than the first."""

    def write(self, *a: Any, **k: Any) -> None:
        pass

    def truncate(self, *a: Any) -> int:
        return 0

    def close(self) -> None:
        pass


def fingerprint(cfg: Config, extra: Mapping[str, Any]) -> str:
    """Hash of everything a resumed run must share with the run that wrote the checkpoint."""
    d = to_dict(cfg)
    sub: dict[str, Any] = {}
    for section, keys in _RESUME_KEYS.items():
        sub[section] = d[section] if keys is None else {k: d[section][k] for k in keys}
    sub["train"].update({k: d["train"][k] for k in _SCHEDULE_RESUME_KEYS[cfg.train.lr_schedule]})
    sub["extra"] = dict(extra)
    return hashlib.sha256(json.dumps(sub, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class LoopState:
    """Host-side counters of the loop (saved in every checkpoint's metadata)."""

    tracker: schedule.Tracker  # best loss and step, validations without improvement, plateau rate
    step: int = 0  # updates done
    finished: bool = False
    stop_reason: str = ""  # "" or one of schedule.STOP_REASONS
    history: list[dict] = field(default_factory=list)  # one record per validation
    # training metrics of the steps since the last `train/` record ({"step", "loss": [M],
    # "grad_norm": [M]}): a resumed run logs the same windows as an uninterrupted one
    log_window: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["tracker"] = {
            k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in d["tracker"].items()
        }
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "LoopState":
        t = {k: (math.inf if k == "best_val" else math.nan) if v is None else v for k, v in d["tracker"].items()}
        return cls(
            **{
                **{k: d[k] for k in ("step", "finished", "stop_reason", "history", "log_window")},
                "tracker": schedule.Tracker(**t),
            }
        )


@dataclass
class TrainResult:
    """What `fit` returns."""

    state: dict  # the final train state (device arrays)
    loop: LoopState
    checkpoint_dir: Path
    resumed_from: int | None  # the step the run resumed from, None for a fresh start


class Trainer:
    """Trains one layer's ensemble on a `TrainData`, with checkpoints in `checkpoint_dir`.

    Args:
      cfg: the run config (model, train sections are used).
      data: training and validation batches.
      n_dynamic, n_static: number of model inputs.
      checkpoint_dir: the layer's checkpoint directory.
      opts: resolved step options (see `step.step_options`).
      meta: JSON metadata stored with every checkpoint (layer, stats, input order, config:
        see `checkpoint.bundle_meta`), so each checkpoint is self-contained for inference.
      devices: devices of the mesh (default: all).
      resume_extra: extra values that must match for a checkpoint to be resumed (input order,
        number of samples ...).
    """

    def __init__(
        self,
        cfg: Config,
        data: TrainData,
        *,
        n_dynamic: int,
        n_static: int,
        checkpoint_dir: str | Path,
        opts: StepOptions,
        meta: Mapping[str, Any],
        devices: list | None = None,
        resume_extra: Mapping[str, Any] | None = None,
        metrics_dir: str | Path | None = None,
    ):
        self.cfg, self.data, self.opts = cfg, data, opts
        self.n_dynamic, self.n_static = n_dynamic, n_static
        self.dir = Path(checkpoint_dir)
        self.meta = dict(meta)
        self.tc = cfg.train
        self.mesh: Mesh = shd.make_mesh(self.tc.members, cfg.layout.mesh_member_size, devices)
        self.fp = fingerprint(cfg, {"n_dynamic": n_dynamic, "n_static": n_static, **(resume_extra or {})})
        self.metrics_dir = Path(metrics_dir) if metrics_dir else self.dir
        data_size = self.mesh.shape[C.DATA_AXIS]
        if self.tc.batch_size % data_size:
            raise ConfigError(
                f"train.batch_size={self.tc.batch_size} must be a multiple of the mesh's data axis "
                f"({data_size} of {self.mesh.devices.size} devices; mesh {dict(self.mesh.shape)}); "
                f"use e.g. train.batch_size={data_size * max(1, round(self.tc.batch_size / data_size))} "
                "or set layout.mesh_member_size"
            )
        self.budget = schedule.budget(self.tc, data.steps_per_epoch)
        self.tx = make_optimizer(self.tc.clip_norm)
        self._build()

    # --- compiled functions -------------------------------------------------------------
    def _build(self) -> None:
        tc = self.tc
        key = jax.random.key(tc.seed)
        shapes = jax.eval_shape(
            lambda: init_state(key, tc.members, self.n_dynamic, self.n_static, self.cfg.model, self.tx)
        )
        self.state_sharding = state_shardings(shapes, self.mesh)
        self.abstract_state = abstract_like(shapes, self.state_sharding)
        self._init = jax.jit(
            lambda: init_state(key, tc.members, self.n_dynamic, self.n_static, self.cfg.model, self.tx),
            out_shardings=self.state_sharding,
        )
        self.batch_sharding = shd.batch_sharding(self.mesh, per_member=not tc.shared_batches)
        self.val_sharding = shd.batch_sharding(self.mesh, per_member=False)
        metric_sharding = NamedSharding(self.mesh, P())
        mode = resolve_ensemble_mode(
            self.cfg.kernel.ensemble_mode,
            tc.members,
            self.mesh.shape[C.MEMBER_AXIS],
            self.opts,
            self.mesh.shape[C.DATA_AXIS],
        )
        self.ensemble_mode = mode
        sync = needs_blocking_dispatch(self.mesh.devices.flat)  # see utils/devices.py: CPU collectives
        self.train_step = JitOnce(
            make_train_step(self.opts, self.tx, tc.shared_batches, mode, self.mesh),
            name="train_step",
            sync=sync,
            in_shardings=(self.state_sharding, self._batch_shardings(self.batch_sharding), metric_sharding),
            out_shardings=(self.state_sharding, metric_sharding),
            donate_argnums=(0,),
        )
        self.eval_step = JitOnce(
            make_eval_step(self.opts),
            name="eval_step",
            sync=sync,
            in_shardings=(self.state_sharding["params"], self._batch_shardings(self.val_sharding)),
            out_shardings=metric_sharding,
        )

    @staticmethod
    def _batch_shardings(s: NamedSharding) -> dict:
        spec = tuple(s.spec)
        # sigma is [M, B] / [B]: the same leading axes as the others
        return {k: NamedSharding(s.mesh, P(*spec)) for k in BATCH_KEYS}

    def put_batch(self, batch: Mapping[str, np.ndarray], sharding: NamedSharding) -> dict:
        """Host batch -> global device arrays.

        Every process holds the same global batch (the data iterators are deterministic for a
        seed); each process transfers only the shards of its own devices, so the same code is
        correct for one process and for a multi-host job.
        """
        out = {}
        for k in BATCH_KEYS:
            v = np.asarray(batch[k], np.float32)
            out[k] = jax.make_array_from_callback(v.shape, sharding, lambda idx, v=v: v[idx])
        return out

    # --- state ----------------------------------------------------------------------------
    def initial_state(self, fresh: bool, ckpt: TrainCheckpointer) -> tuple[dict, LoopState, Any, int | None]:
        """(state, loop counters, data iterator, resumed step) following the resume order above."""
        it = self.data.train_iterator()
        step = None if fresh else ckpt.latest_step()
        if step is None:
            return (
                jax.block_until_ready(self._init()),
                LoopState(schedule.Tracker(lr=self.budget.learning_rate)),
                it,
                None,
            )
        if ckpt.read_meta(step).get("fingerprint") != self.fp:
            raise CheckpointError(
                f"the checkpoint in {self.dir} was written with different model, training, data-split, input or "
                "learning-rate settings than this run; resume with the same settings, or start over with "
                "`somojax train --fresh` (or another workdir)"
            )
        state, meta = ckpt.restore(self.abstract_state, step)
        it.set_state(meta["data_state"])
        loop = LoopState.from_json(meta["loop"])
        log.info("resumed %s at update %d (%d validations done)", self.dir, step, loop.tracker.validations)
        return state, loop, it, step

    def _reconcile(
        self, ckpt: TrainCheckpointer, metrics: Any, state: dict, loop: LoopState, resumed: int | None
    ) -> None:
        """Makes metrics.jsonl and best/ agree with the restored step (resume order, step 3)."""
        dropped = metrics.truncate(resumed)
        if dropped:
            log.info("%s: %d metric records after step %s removed (they are recomputed)", self.dir, dropped, resumed)
        for s in ckpt.best_steps():
            if resumed is None or s > resumed:
                log.info("%s: best/%d was written after the restored state; it is redone", self.dir, s)
                ckpt.delete_best(s)
        best = loop.tracker.best_step
        if resumed is not None and best >= 0 and best not in ckpt.best_steps():
            if best == resumed:
                ckpt.save_best(resumed, state["params"], self._best_meta(loop))
            else:
                log.warning(
                    "%s: best/%d, the best params of this run, is missing; best/ holds the next improvement",
                    self.dir,
                    best,
                )
        if best in ckpt.best_steps():
            ckpt.prune_best(best)  # an older best left by a kill before the pruning

    def _meta(self, loop: LoopState, it: Any) -> dict:
        return {
            **self.meta,
            "fingerprint": self.fp,
            "global_step": int(loop.step),
            "data_state": it.get_state(),
            "loop": loop.to_json(),
        }

    def _best_meta(self, loop: LoopState) -> dict:
        t = loop.tracker
        v = t.best_val if math.isfinite(t.best_val) else None
        return {**self.meta, "global_step": t.best_step, "epoch": self._epoch(t.best_step - 1), "val_loss": v}

    # --- validation -----------------------------------------------------------------------
    def validate(self, params: dict) -> dict | None:
        """Validation loss of every member and of the ensemble mean (dropout off)."""
        if self.data.n_val == 0:
            return None
        acc = None
        for batch in self.data.val_batches():
            out = self.eval_step(params, self.put_batch(batch, self.val_sharding))
            acc = out if acc is None else jax.tree.map(jnp.add, acc, out)
        acc = to_host(acc)
        count = float(np.max(acc["count"]))
        if count == 0:
            return None
        members = np.asarray(acc["sum"], np.float64) / np.maximum(np.asarray(acc["count"], np.float64), 1.0)
        return {
            "val_loss": float(acc["mean_sum"]) / max(float(acc["mean_count"]), 1.0),
            "val_loss_members": members.tolist(),
            "val_targets": int(count),
        }

    # --- the loop -------------------------------------------------------------------------
    def fit(self, fresh: bool = False) -> TrainResult:
        """Runs (or resumes) training until the budget is spent, early stopping, or an error.

        SIGINT/SIGTERM stop it after the current step with a complete checkpoint
        (`signals.Interrupted`); see the module docstring.
        """
        tc = self.tc
        with signals.deferred():
            if fresh:
                discard_checkpoints(self.dir)
            ckpt = TrainCheckpointer(self.dir, keep=tc.keep_checkpoints)
            metrics = MetricsWriter(self.metrics_dir, tensorboard=False) if jax.process_index() == 0 else _NoMetrics()
            try:
                state, loop, it, resumed = self.initial_state(fresh, ckpt)
                self._reconcile(ckpt, metrics, state, loop, resumed)
                if loop.finished and not (loop.stop_reason == "budget" and loop.step < self.budget.max_updates):
                    log.info("%s: training already finished (%s)", self.dir, loop.stop_reason)
                    if not (self.dir / SUMMARY_FILE).exists():  # killed after the last state, before the summary
                        self.write_summary(loop)
                    return TrainResult(state, loop, self.dir, resumed)
                loop.finished = False  # a larger budget was given since it finished
                state = self._run(state, loop, it, ckpt, metrics)
                return TrainResult(state, loop, self.dir, resumed)
            finally:
                ckpt.wait()
                ckpt.close()
                metrics.close()

    def _stop_requested(self, sync_point: bool) -> int | None:
        """The signal of a pending SIGINT/SIGTERM. With several processes every process must stop
        at the same step, so the flags are combined at sync points (log/checkpoint steps) only."""
        if jax.process_count() == 1:
            return signals.requested()
        if not sync_point:
            return None
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.int32(signals.requested() or 0))
        return int(np.max(flags)) or None

    def _interrupted(self, signum: int, step: int) -> None:
        msg = (
            f"{self.meta.get('layer', '')}: stopped by {signals.signal_name(signum)} after update {step}; "
            f"checkpoint {self.dir / 'state' / str(step)} is complete, the same command resumes here"
        )
        log.warning(msg)
        signals.clear()
        raise signals.Interrupted(signum, msg)

    def _run(self, state: dict, loop: LoopState, it: Any, ckpt: TrainCheckpointer, metrics: MetricsWriter) -> dict:
        tc, b = self.tc, self.budget
        samples_per_step = tc.batch_size * (1 if tc.shared_batches else tc.members)
        pending: list[tuple[int, dict]] = []  # (step, device metrics) not yet checked
        progress = Progress(
            total=b.max_updates - loop.step, desc=f"train {self.meta.get('layer', '')}", unit="step", logger=log
        )
        window = [
            {
                "step": w["step"],
                "loss": np.asarray(w["loss"], np.float64),
                "grad_norm": np.asarray(w["grad_norm"], np.float64),
            }
            for w in loop.log_window
        ]
        lr_cache: tuple[float, Any] = (math.nan, None)  # (rate, the same as a device scalar)
        lr = math.nan
        try:
            if loop.step >= b.max_updates:  # resumed with a smaller budget than it has done
                self._finish(loop, "budget", ckpt, it, state)
            while not loop.finished:
                end = b.next_validation(loop.step)
                while loop.step < end:
                    lr = schedule.rate(b, loop.tracker, loop.step)
                    if lr != lr_cache[0]:
                        lr_cache = (lr, jnp.asarray(lr, jnp.float32))
                    batch = self.put_batch(next(it), self.batch_sharding)
                    first = self.train_step.compilations == 0
                    state, m = self.train_step(state, batch, lr_cache[1])
                    loop.step += 1
                    pending.append((loop.step, m))
                    if first:  # rates and ETA without the compilation
                        log.info(
                            "%s: train step compiled and run once in %.1f s",
                            self.meta.get("layer", ""),
                            self.train_step.compile_seconds,
                        )
                        progress.t0, progress.total = time.perf_counter(), (progress.total or 0) - 1
                    else:
                        progress.update(1, samples=samples_per_step)
                    faults.point("after_step", loop.step)
                    pending, window = self._after_step(
                        state, loop, it, ckpt, metrics, progress, end, lr, pending, window
                    )
                window += self._check(pending)
                pending = []
                if window:
                    self._log_train(metrics, loop.step, lr, window, progress)
                    window = []
                loop.log_window = []
                self._validation(state, loop, it, ckpt, metrics, self.validate(state["params"]), lr)
                stop = self._stop_requested(True)
                if stop and not loop.finished:
                    self._interrupted(stop, loop.step)
        finally:
            progress.close()
        return state

    def _after_step(
        self,
        state: dict,
        loop: LoopState,
        it: Any,
        ckpt: TrainCheckpointer,
        metrics: MetricsWriter,
        progress: Progress,
        end: int,
        lr: float,
        pending: list[tuple[int, dict]],
        window: list[dict],
    ) -> tuple[list[tuple[int, dict]], list[dict]]:
        """The bookkeeping after update `loop.step` of a run of updates up to `end` (a validation).

        On the steps it is due: checks the `pending` device metrics into the `window` of checked
        ones, writes the train log line, saves a checkpoint (not at `end`: the validation saves
        one), and stops for a pending signal. Returns (pending, window) as they are left.
        """
        tc = self.tc
        due_log = loop.step % max(tc.log_every_steps, 1) == 0
        due_ckpt = bool(tc.checkpoint_every_steps) and loop.step % tc.checkpoint_every_steps == 0
        stop = self._stop_requested(due_log or due_ckpt) if loop.step < end else None
        if due_log or due_ckpt or stop:
            window += self._check(pending)
            pending = []
        if due_log and window:
            self._log_train(metrics, loop.step, lr, window, progress)
            window = []
        if (due_ckpt or stop) and loop.step < end:
            loop.log_window = [
                {"step": w["step"], "loss": w["loss"].tolist(), "grad_norm": w["grad_norm"].tolist()} for w in window
            ]
            ckpt.save(loop.step, state, self._meta(loop, it), wait=bool(stop))
        if stop:
            self._interrupted(stop, loop.step)
        return pending, window

    def _check(self, pending: list[tuple[int, dict]]) -> list[dict]:
        """Fetches pending step metrics; raises TrainingError at the first non-finite loss."""
        out = []
        for step, m in pending:
            loss = np.asarray(to_host(m["loss"]), np.float64)
            gnorm = np.asarray(to_host(m["grad_norm"]), np.float64)
            bad = np.nonzero(~np.isfinite(loss) | ~np.isfinite(gnorm))[0]
            if bad.size:
                mem = int(bad[0])
                raise TrainingError(
                    f"non-finite training loss at step {step} (epoch {self._epoch(step - 1)}), member {mem}: loss {loss[mem]}, "
                    f"gradient norm {gnorm[mem]}. The last good checkpoint in {self.dir} is intact; lower "
                    f"train.{'learning_rates' if self.budget.schedule == 'paper' else 'learning_rate'} or check the inputs for extreme values"
                )
            out.append({"step": step, "loss": loss, "grad_norm": gnorm})
        return out

    def _epoch(self, step: int) -> int:
        """The epoch (pass of `steps_per_epoch` updates, from 0) that update `step + 1` is in."""
        return step // self.data.steps_per_epoch

    def _log_train(self, metrics: MetricsWriter, step: int, lr: float, window: list[dict], progress: Progress) -> None:
        loss = np.mean([w["loss"] for w in window], axis=0)
        gnorm = np.mean([w["grad_norm"] for w in window], axis=0)
        rates = progress.rates()
        epoch = self._epoch(step - 1)
        rec = {
            "epoch": epoch,
            "lr": lr,
            "loss": float(np.mean(loss)),
            "grad_norm": float(np.mean(gnorm)),
            "steps_per_s": rates.get("step/s", 0.0),
            "samples_per_s": rates.get("samples/s", 0.0),
        }
        rec.update({f"loss_member{m}": float(v) for m, v in enumerate(loss)})
        metrics.write(step, rec, prefix="train/")
        log.info(
            "%s step %d epoch %d: loss %.4g (members %s), lr %.3g, %.3g steps/s, %.3g samples/s, ETA %s",
            self.meta.get("layer", ""),
            step,
            epoch,
            rec["loss"],
            " ".join(f"{v:.3g}" for v in loss),
            lr,
            rec["steps_per_s"],
            rec["samples_per_s"],
            progress.status().rsplit("ETA ", 1)[-1],
        )

    def _validation(
        self, state, loop: LoopState, it, ckpt: TrainCheckpointer, metrics: MetricsWriter, val, lr: float
    ) -> None:
        """A validation's bookkeeping (schedule.observe), then its writes in the documented order."""
        step, layer = loop.step, self.meta.get("layer", "")
        if val is not None and not all(math.isfinite(x) for x in [val["val_loss"], *val["val_loss_members"]]):
            bad = [m for m, x in enumerate(val["val_loss_members"]) if not math.isfinite(x)]
            raise TrainingError(
                f"non-finite validation loss after update {step}, members {bad or 'ensemble mean'}; "
                f"the last good checkpoint in {self.dir} is intact"
            )
        d = schedule.observe(self.budget, loop.tracker, step, None if val is None else val["val_loss"])
        rec: dict[str, Any] = {
            "step": step,
            "epoch": self._epoch(step - 1),
            "lr": lr,
            **(val or {}),
            "best": d.new_best,
            "lr_next": d.tracker.lr,
        }
        if val is not None:
            record_validation(metrics, layer, step, rec["epoch"], lr, val, d.new_best)
        if d.decayed:
            n = self.budget.lr_patience
            log.info(
                "%s: no improvement in %d validation%s: learning rate %.3g -> %.3g",
                layer,
                n,
                "s" * (n != 1),
                loop.tracker.lr,
                d.tracker.lr,
            )
        faults.point("after_val_metrics", step)
        loop.tracker = d.tracker
        loop.history.append(rec)
        if d.new_best:
            ckpt.save_best(step, state["params"], self._best_meta(loop))
        faults.point("between_saves", step)
        if d.stop:
            self._finish(loop, d.stop, ckpt, it, state)
        else:
            ckpt.save(step, state, self._meta(loop, it), wait=True)
            faults.point("after_state_save", step)
            ckpt.prune_best(loop.tracker.best_step)

    def _finish(self, loop: LoopState, reason: str, ckpt: TrainCheckpointer, it, state) -> None:
        """Marks training stopped, saves the final state, reports why (log and summary.json)."""
        b, t, layer = self.budget, loop.tracker, self.meta.get("layer", "")
        loop.finished, loop.stop_reason = True, reason
        ckpt.save(loop.step, state, self._meta(loop, it), wait=True)
        faults.point("after_state_save", loop.step)
        ckpt.prune_best(t.best_step)
        log.info("%s", schedule.stop_message(b, t, reason, layer))
        summary = self.write_summary(loop)
        if summary["warning"]:
            log.warning("%s", summary["warning"])

    def write_summary(self, loop: LoopState) -> dict:
        """`<checkpoint dir>/summary.json`: why and where training stopped (written atomically)."""
        return write_summary(self.dir, self.budget, loop, self.meta.get("layer"))


def write_summary(directory: Path, b: schedule.Budget, loop: LoopState, layer: str | None) -> dict:
    """Writes `<directory>/summary.json` (why and where training stopped) and returns it."""
    t = loop.tracker
    warning = schedule.warning_message(b, t, layer or "") if schedule.still_improving(b, t, loop.stop_reason) else None
    vals = [h["val_loss"] for h in loop.history if "val_loss" in h]
    summary = {
        "layer": layer,
        "stop_reason": loop.stop_reason,
        "updates": loop.step,
        "max_updates": b.max_updates,
        "validations": t.validations,
        "best_step": t.best_step,
        "best_val_loss": t.best_val if math.isfinite(t.best_val) else None,
        "first_val_loss": vals[0] if vals else None,
        "last_val_loss": vals[-1] if vals else None,
        "validations_without_improvement": t.bad,
        "last_improvement": t.last_gain if math.isfinite(t.last_gain) else None,
        "final_learning_rate": loop.history[-1]["lr"] if loop.history else None,
        "still_improving": warning is not None,
        "warning": warning,
        "schedule": b.describe(),
    }
    path = Path(directory) / SUMMARY_FILE
    if jax.process_index() == 0:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(summary, indent=1) + "\n")
        tmp.replace(path)
    return summary
