"""Several independent trainings of one layer in one stacked ensemble: the folds of a
cross-validation (docs/training.md, "Stacked folds").

G groups of M members each: the train state holds G·M members, group g at positions
g·M .. g·M + M − 1. Every member already has its own parameters, Adam state, dropout key and
(per-member) batch, so one jitted step (`somojax.train.step`) trains all groups at once; what a
group owns besides is:

- its data: its own samples, normalisation and batches (`GroupedData` puts the groups' batches
  side by side on the member axis; a group's σ is scaled by its own target std on the host);
- its schedule: its own `schedule.Tracker` (best loss and step, patience, plateau rate) and
  budget; the step gets a learning rate per member, group g's rate for its members;
- its validation: the ensemble-mean loss over its own M members on its own validation samples
  (one evaluation of all members, each on its group's batch; a group that has run out of
  batches gets a padding batch, whose loss terms are exactly zero);
- its outputs: best/<step> and summary.json in its own checkpoint directory, its own metrics.

A group that stops (patience, plateau, its budget) keeps its place in the stack with rate 0, so
its parameters no longer change, and its later validations are not recorded; training ends
when every group has stopped. Each group therefore computes what it computes trained alone
with the same settings and seeds (initialisation: every group starts from the M-member
initialisation of `train.seed`; tests/test_train_groups.py), up to float32 rounding of the
batched kernels.

The stacked train state (params, Adam, keys of all groups, with every group's loop counters
and data position in its metadata) is checkpointed in the trainer's own directory at every
validation; a killed run resumes from it.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from somojax.checkpoint import TrainCheckpointer, discard_checkpoints
from somojax.config import Config
from somojax.data.pipeline import ArrayTrainData
from somojax.errors import CheckpointError, TrainingError
from somojax.train import schedule
from somojax.train.compile import JitOnce
from somojax.train.loop import LoopState, Trainer, _NoMetrics, record_validation, to_host, write_summary
from somojax.models import ealstm, losses
from somojax.train.step import BATCH_KEYS, StepOptions, init_state
from somojax.utils import signals
from somojax.utils.logging import MetricsWriter, get_logger

log = get_logger("train")


@dataclass(frozen=True)
class Group:
    """One training of the stack (a cross-validation fold's layer).

    Attributes:
      name: for logs ("fold 0").
      data: its batches (`members` = the config's members).
      checkpoint_dir: where its best/ params and summary.json go.
      meta: the JSON metadata of its checkpoints (`checkpoint.bundle_meta`: its statistics).
      sigma_scale: its `StepOptions.sigma_scale` (1 / its target std for normalised σ units).
      metrics_dir: its metrics.jsonl (None: none).
    """

    name: str
    data: ArrayTrainData
    checkpoint_dir: Path
    meta: Mapping[str, Any]
    sigma_scale: float = 1.0
    metrics_dir: Path | None = None


class GroupedData:
    """The groups' training batches side by side on the member axis ([G·M, B, ...]), and their
    validation batches stacked on a group axis ([G, B, ...])."""

    def __init__(self, groups: Sequence[Group], members: int):
        self.groups, self.members = list(groups), members
        self.steps_per_epoch = min(g.data.steps_per_epoch for g in groups)
        self.n_train = sum(g.data.n_train for g in groups)
        self.n_val = sum(g.data.n_val for g in groups)

    def _member_batch(self, g: Group, batch: Mapping[str, np.ndarray]) -> dict:
        out = {}
        for k in BATCH_KEYS:
            v = np.asarray(batch[k], np.float32)
            if k == "sigma":
                v = v * np.float32(g.sigma_scale)
            out[k] = v if not g.data.shared else np.broadcast_to(v, (self.members,) + v.shape)
        return out

    def train_iterator(self) -> "_GroupedIterator":
        return _GroupedIterator(self, [g.data.train_iterator() for g in self.groups])

    def val_batches(self) -> Iterator[dict]:
        """[G·M, B, ...] batches (group g's batch for each of its members); a group without more
        batches gets one whose targets are NaN."""
        pad = None
        for parts in itertools.zip_longest(*(g.data.val_batches() for g in self.groups)):
            pad = pad or _padding(next(p for p in parts if p is not None))
            parts = [pad if p is None else p for p in parts]
            scaled = [
                {**p, "sigma": np.asarray(p["sigma"], np.float32) * np.float32(g.sigma_scale)}
                for p, g in zip(parts, self.groups)
            ]
            yield {
                k: np.repeat(np.stack([np.asarray(p[k], np.float32) for p in scaled]), self.members, axis=0)
                for k in BATCH_KEYS
            }


def _padding(batch: Mapping[str, np.ndarray]) -> dict:
    """A validation batch shaped like `batch` that adds nothing to any loss sum."""
    return {k: np.full(np.shape(batch[k]), np.nan if k in ("y", "sigma") else 0.0, np.float32) for k in BATCH_KEYS}


class _GroupedIterator:
    """Next batch of every group, concatenated; the state is the list of the groups' states."""

    def __init__(self, data: GroupedData, its: list):
        self.data, self.its = data, its

    def __iter__(self) -> "_GroupedIterator":
        return self

    def __next__(self) -> dict:
        parts = [self.data._member_batch(g, next(it)) for g, it in zip(self.data.groups, self.its)]
        return {k: np.concatenate([p[k] for p in parts]) for k in BATCH_KEYS}

    def get_state(self) -> list:
        return [it.get_state() for it in self.its]

    def set_state(self, state: Sequence) -> None:
        for it, s in zip(self.its, state):
            it.set_state(s)


def make_group_eval_step(opts: StepOptions, n_groups: int):
    """fn(params [G·M, ...], batch [G·M, B, ...]) -> the sums of `make_eval_step` per group:
    {"sum": [G, M], "count": [G, M], "mean_sum": [G], "mean_count": [G]}.

    Member m reads its group's batch (repeated per member, so each device evaluates the members
    it holds); the ensemble mean of group g is the mean over its M members' predictions.
    """

    def step(params: dict, batch: dict) -> dict:
        pred = jax.vmap(lambda p, x_d, x_s: ealstm.forward(p, x_d, x_s, deterministic=True, **opts.model_kwargs()))(
            params, batch["x_d"], batch["x_s"]
        )  # [G·M, B, n]

        def grouped(a):
            return a.reshape((n_groups, -1) + a.shape[1:])

        y = grouped(batch["y"])[:, 0]
        if opts.loss == "nse":
            weight = jax.vmap(lambda sg: losses.nse_weight(sg * opts.sigma_scale, opts.nse_eps))(batch["sigma"])
            s, n = jax.vmap(losses.masked_sums)(pred, batch["y"], weight)
            ms, mn = jax.vmap(losses.masked_sums)(jnp.mean(grouped(pred), axis=1), y, grouped(weight)[:, 0])
        else:
            s, n = jax.vmap(losses.masked_sums)(pred, batch["y"])
            ms, mn = jax.vmap(losses.masked_sums)(jnp.mean(grouped(pred), axis=1), y)
        return {"sum": grouped(s), "count": grouped(n), "mean_sum": ms, "mean_count": mn}

    return step


def tile_state(state: dict, n_groups: int) -> dict:
    """Every member-axis leaf of a train state repeated `n_groups` times (group-major)."""
    return jax.tree.map(lambda x: jnp.tile(x, (n_groups,) + (1,) * (x.ndim - 1)) if x.ndim else x, state)


class GroupTrainer(Trainer):
    """Trains `groups` (one layer, the same model and settings, `train.members` members each) as
    one stacked ensemble; the stacked train state is checkpointed in `checkpoint_dir`.

    `opts` are the step options of the groups but for `sigma_scale`, which each group brings.
    `fit` returns every group's `LoopState`.
    """

    def __init__(
        self,
        cfg: Config,
        groups: Sequence[Group],
        *,
        n_dynamic: int,
        n_static: int,
        checkpoint_dir: str | Path,
        opts: StepOptions,
        layer: str = "",
        resume_extra: Mapping[str, Any] | None = None,
        devices: list | None = None,
    ):
        self.groups, self.group_members = list(groups), cfg.train.members
        n = len(self.groups) * self.group_members
        stacked = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, members=n, shared_batches=False))
        extra = {
            **(resume_extra or {}),
            "groups": [g.name for g in self.groups],
            "group_members": self.group_members,
            "group_shared_batches": cfg.train.shared_batches,
            "sigma_scales": [g.sigma_scale for g in self.groups],
        }
        super().__init__(
            stacked,
            GroupedData(self.groups, self.group_members),
            n_dynamic=n_dynamic,
            n_static=n_static,
            checkpoint_dir=checkpoint_dir,
            opts=dataclasses.replace(opts, sigma_scale=1.0),
            meta={"layer": layer, "groups": [g.name for g in self.groups]},
            devices=devices,
            resume_extra=extra,
        )
        self.budgets = [schedule.budget(cfg.train, g.data.steps_per_epoch) for g in self.groups]

    def _build(self) -> None:
        super()._build()
        tc, m = self.tc, self.group_members
        key = jax.random.key(tc.seed)
        # the M-member initialisation of a group trained alone, computed as it computes it
        self._init_group = jax.jit(lambda: init_state(key, m, self.n_dynamic, self.n_static, self.cfg.model, self.tx))
        self.group_val_sharding = self.batch_sharding  # [G·M, B, ...] over (member, data)
        self.group_eval = JitOnce(
            make_group_eval_step(self.opts, len(self.groups)),
            name="group_eval_step",
            sync=self.train_step.sync,
            in_shardings=(self.state_sharding["params"], self._batch_shardings(self.group_val_sharding)),
            out_shardings=NamedSharding(self.mesh, P()),
        )

    def _slice(self, tree: Any, g: int) -> Any:
        m = self.group_members
        return to_host(jax.tree.map(lambda a: a[g * m : (g + 1) * m], tree))

    # --- validation -----------------------------------------------------------------------
    def validate_groups(self, params: dict) -> list[dict | None]:
        """Every group's validation loss (ensemble mean of its members) and its members' losses."""
        acc = None
        for batch in self.data.val_batches():
            out = self.group_eval(params, self.put_batch(batch, self.group_val_sharding))
            acc = out if acc is None else jax.tree.map(jnp.add, acc, out)
        if acc is None:
            return [None] * len(self.groups)
        acc = to_host(acc)
        vals: list[dict | None] = []
        for g, grp in enumerate(self.groups):
            count = float(np.max(acc["count"][g]))
            if grp.data.n_val == 0 or count == 0:
                vals.append(None)
                continue
            members = np.asarray(acc["sum"][g], np.float64) / np.maximum(np.asarray(acc["count"][g], np.float64), 1.0)
            vals.append(
                {
                    "val_loss": float(acc["mean_sum"][g]) / max(float(acc["mean_count"][g]), 1.0),
                    "val_loss_members": members.tolist(),
                    "val_targets": int(count),
                }
            )
        return vals

    # --- the loop -------------------------------------------------------------------------
    def fit(self, fresh: bool = False) -> list[LoopState]:
        """Runs (or resumes) the stacked training until every group has stopped."""
        with signals.deferred():
            if fresh:
                for d in [self.dir] + [g.checkpoint_dir for g in self.groups]:
                    discard_checkpoints(d)
            ckpt = TrainCheckpointer(self.dir, keep=self.tc.keep_checkpoints)
            bests = [TrainCheckpointer(g.checkpoint_dir, keep=1) for g in self.groups]
            first = jax.process_index() == 0
            writers = [
                MetricsWriter(g.metrics_dir, tensorboard=False) if g.metrics_dir and first else _NoMetrics()
                for g in self.groups
            ]
            try:
                state, loops, it, step = self._start(fresh, ckpt)
                self._reconcile_groups(bests, writers, state, loops, step if step else None)
                if all(loop.finished for loop in loops):
                    log.info(
                        "%s: training already finished (%s)",
                        self.dir,
                        ", ".join(f"{g.name}: {l.stop_reason}" for g, l in zip(self.groups, loops)),
                    )
                else:
                    self._run_groups(state, loops, it, step, ckpt, bests, writers)
                return loops
            finally:
                for c in (ckpt, *bests):
                    c.wait()
                    c.close()
                for w in writers:
                    w.close()

    def _start(self, fresh: bool, ckpt: TrainCheckpointer) -> tuple[dict, list[LoopState], Any, int]:
        """(stacked state, every group's loop counters, data iterator, updates done)."""
        it = self.data.train_iterator()
        step = None if fresh else ckpt.latest_step()
        if step is None:
            state = jax.device_put(tile_state(self._init_group(), len(self.groups)), self.state_sharding)
            return (
                jax.block_until_ready(state),
                [LoopState(schedule.Tracker(lr=b.learning_rate)) for b in self.budgets],
                it,
                0,
            )
        if ckpt.read_meta(step).get("fingerprint") != self.fp:
            raise CheckpointError(
                f"the stacked checkpoint in {self.dir} was written for other groups or settings; "
                "delete it (or start over with fresh=True)"
            )
        state, meta = ckpt.restore(self.abstract_state, step)
        it.set_state(meta["data_state"])
        loops = [LoopState.from_json(x) for x in meta["group_loops"]]
        log.info("resumed %s at update %d", self.dir, step)
        return state, loops, it, int(step)

    def _reconcile_groups(self, bests, writers, state, loops, resumed: int | None) -> None:
        """Every group's best/ and metrics agree with the restored step (as `Trainer._reconcile`)."""
        for g, (best, w, loop) in enumerate(zip(bests, writers, loops)):
            w.truncate(resumed)
            for s in best.best_steps():
                if resumed is None or s > resumed:
                    best.delete_best(s)
            b = loop.tracker.best_step
            if resumed is not None and b == resumed and b not in best.best_steps():
                best.save_best(b, self._slice(state["params"], g), self._group_best_meta(g, loop))
            if b in best.best_steps():
                best.prune_best(b)

    def _group_best_meta(self, g: int, loop: LoopState) -> dict:
        t = loop.tracker
        v = t.best_val if np.isfinite(t.best_val) else None
        epoch = max(t.best_step - 1, 0) // self.groups[g].data.steps_per_epoch
        return {**self.groups[g].meta, "global_step": t.best_step, "epoch": epoch, "val_loss": v}

    def _stacked_meta(self, step: int, loops: list[LoopState], it: Any) -> dict:
        return {
            **self.meta,
            "fingerprint": self.fp,
            "global_step": int(step),
            "data_state": it.get_state(),
            "group_loops": [loop.to_json() for loop in loops],
        }

    def _rates(self, loops: list[LoopState], step: int) -> np.ndarray:
        """[G·M] float32: group g's scheduled rate for its members, 0 once it stopped."""
        per_group = [
            0.0 if loop.finished else schedule.rate(b, loop.tracker, step) for b, loop in zip(self.budgets, loops)
        ]
        return np.repeat(np.asarray(per_group, np.float32), self.group_members)

    def _run_groups(self, state, loops: list[LoopState], it, step: int, ckpt, bests, writers) -> dict:
        m, layer = self.group_members, self.meta.get("layer", "")
        window = _join_windows(loops, m)  # training metrics not yet logged (restored on resume)
        lr = self._rates(loops, step)
        while not all(loop.finished for loop in loops):
            end = min(b.next_validation(step) for b, loop in zip(self.budgets, loops) if not loop.finished)
            pending: list[tuple[int, dict]] = []
            while step < end:
                lr = self._rates(loops, step)
                first = self.train_step.compilations == 0
                state, out = self.train_step(state, self.put_batch(next(it), self.batch_sharding), jnp.asarray(lr))
                step += 1
                for loop in loops:
                    loop.step = step if not loop.finished else loop.step
                pending.append((step, out))
                if first:
                    log.info(
                        "%s: stacked train step (%d groups x %d members) compiled and run once in %.1f s",
                        layer,
                        len(self.groups),
                        m,
                        self.train_step.compile_seconds,
                    )
                if step % max(self.tc.log_every_steps, 1) == 0:
                    window += self._check(pending)
                    pending = []
                    self._log_groups(writers, loops, step, lr, window)
                    window = []
                stop = self._stop_requested(True) if step < end else None
                if stop:
                    window += self._check(pending)
                    _split_windows(loops, window, m)
                    ckpt.save(step, state, self._stacked_meta(step, loops, it), wait=True)
                    self._interrupted(stop, step)
            window += self._check(pending)
            if window:
                self._log_groups(writers, loops, step, lr, window)
                window = []
            _split_windows(loops, [], m)
            self._validate_step(state, loops, it, step, lr, ckpt, bests, writers)
            stop = self._stop_requested(True)
            if stop and not all(loop.finished for loop in loops):
                self._interrupted(stop, step)
        return state

    def _validate_step(self, state, loops, it, step: int, lr: np.ndarray, ckpt, bests, writers) -> None:
        """The validations due at `step`, then the stacked state, then best/ pruned (loop.py order)."""
        vals = self.validate_groups(state["params"])
        for g, (b, loop) in enumerate(zip(self.budgets, loops)):
            if not loop.finished and b.next_validation(step - 1) == step:
                self._group_validation(
                    g, loop, step, vals[g], float(lr[g * self.group_members]), state, bests[g], writers[g]
                )
        ckpt.save(step, state, self._stacked_meta(step, loops, it), wait=True)
        for best, loop in zip(bests, loops):
            best.prune_best(loop.tracker.best_step)

    def _group_validation(self, g: int, loop: LoopState, step: int, val, lr: float, state, best, writer) -> None:
        """One group's validation: `schedule.observe` with its own tracker, its best/, its summary."""
        grp, b = self.groups[g], self.budgets[g]
        name = f"{self.meta.get('layer', '')} {grp.name}".strip()
        if val is not None and not np.all(np.isfinite([val["val_loss"], *val["val_loss_members"]])):
            raise TrainingError(
                f"{name}: non-finite validation loss after update {step}; the last good checkpoint in {self.dir} is intact"
            )
        d = schedule.observe(b, loop.tracker, step, None if val is None else val["val_loss"])
        epoch = (step - 1) // grp.data.steps_per_epoch
        loop.history.append(
            {"step": step, "epoch": epoch, "lr": lr, **(val or {}), "best": d.new_best, "lr_next": d.tracker.lr}
        )
        if val is not None:
            record_validation(writer, name, step, epoch, lr, val, d.new_best)
        loop.tracker = d.tracker
        if d.new_best:
            best.save_best(step, self._slice(state["params"], g), self._group_best_meta(g, loop))
        if d.stop:
            loop.finished, loop.stop_reason = True, d.stop
            log.info("%s", schedule.stop_message(b, loop.tracker, d.stop, name))
            summary = write_summary(grp.checkpoint_dir, b, loop, self.meta.get("layer"))
            if summary["warning"]:
                log.warning("%s: %s", grp.name, summary["warning"])

    def _log_groups(self, writers, loops, step: int, lr: np.ndarray, window: list[dict]) -> None:
        """Mean training loss since the last log line, per group (metrics.jsonl and one log line)."""
        m = self.group_members
        loss = np.mean([w["loss"] for w in window], axis=0)
        gnorm = np.mean([w["grad_norm"] for w in window], axis=0)
        for g, (w, loop) in enumerate(zip(writers, loops)):
            if loop.finished and loop.step < window[0]["step"]:
                continue
            sl = slice(g * m, (g + 1) * m)
            rec = {
                "epoch": (step - 1) // self.groups[g].data.steps_per_epoch,
                "lr": float(lr[g * m]),
                "loss": float(np.mean(loss[sl])),
                "grad_norm": float(np.mean(gnorm[sl])),
            }
            rec.update({f"loss_member{k}": float(v) for k, v in enumerate(loss[sl])})
            w.write(step, rec, prefix="train/")
        log.info(
            "%s step %d: loss %s",
            self.meta.get("layer", ""),
            step,
            ", ".join(f"{g.name} {np.mean(loss[i * m : (i + 1) * m]):.4g}" for i, g in enumerate(self.groups)),
        )


def _split_windows(loops: list[LoopState], window: list[dict], m: int) -> None:
    """Keeps the unlogged training metrics in each group's loop counters (checkpointed)."""
    for g, loop in enumerate(loops):
        sl = slice(g * m, (g + 1) * m)
        loop.log_window = [
            {"step": w["step"], "loss": w["loss"][sl].tolist(), "grad_norm": w["grad_norm"][sl].tolist()}
            for w in window
        ]


def _join_windows(loops: list[LoopState], m: int) -> list[dict]:
    """The inverse of `_split_windows`."""
    out = []
    for i, w in enumerate(loops[0].log_window if loops else []):
        parts = [loop.log_window[i] for loop in loops]
        out.append(
            {
                "step": w["step"],
                "loss": np.concatenate([np.asarray(p["loss"], np.float64) for p in parts]),
                "grad_norm": np.concatenate([np.asarray(p["grad_norm"], np.float64) for p in parts]),
            }
        )
    return out
