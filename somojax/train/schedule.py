"""The training budget, the learning-rate schedule and the stopping rule: pure functions of the
update count and of the validation losses seen (docs/training.md, "Training budget").

An *update* is one optimiser step; an *epoch* (a pass over the training samples, or
`train.max_updates_per_epoch` updates) is only the unit of sampling, except for the paper's
schedule. `train.lr_schedule`:

  plateau  start at `train.learning_rate`; after `lr_patience` validations without improvement
           multiply the rate by `lr_decay`, never below `min_lr`. A decay that is due at `min_lr`
           stops training ("plateau": the rate can go no lower and the loss does not move).
  cosine   linear warm-up over `warmup_updates`, then half a cosine from `learning_rate` down to
           `min_lr` at `max_updates` (big_vision style: the schedule spans the budget).
  paper    SoMo.ml / ealstm_regional: `train.learning_rates` by epoch ([[first epoch, rate]...]),
           `train.epochs` epochs, a validation after each.

The budget is `max_updates` (paper: `epochs` x updates per epoch, capped by `max_updates` when
set). The validation loss is computed every `validate_every_updates` updates (paper: every epoch)
and at the end of the budget. Training stops early after `patience` validations without
improvement ("patience"; None: never), but not before `min_updates`. An improvement is a decrease
of the ensemble-mean validation loss by more than `min_improvement` (relative) below the best so
far; every new lowest loss, however small the decrease, is saved as the best checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

STOP_REASONS = ("budget", "patience", "plateau")


@dataclass(frozen=True)
class Budget:
    """The resolved budget and schedule of one layer (`budget(train_config, steps_per_epoch)`)."""

    schedule: str
    max_updates: int
    validate_every: int
    min_updates: int
    patience: int | None
    learning_rate: float
    learning_rates: tuple[tuple[int, float], ...]
    steps_per_epoch: int
    lr_decay: float
    lr_patience: int
    min_lr: float
    min_improvement: float
    warmup_updates: int

    def next_validation(self, step: int) -> int:
        """The update count of the first validation after `step` updates."""
        return min((step // self.validate_every + 1) * self.validate_every, self.max_updates)

    def describe(self) -> str:
        if self.schedule == "paper":
            rates = ", ".join(f"{r:g} from epoch {e}" for e, r in self.learning_rates)
            return f"paper schedule ({rates}), {self.max_updates // self.steps_per_epoch} epochs x {self.steps_per_epoch} updates"
        stop = f", early stop after {self.patience} validations without improvement" if self.patience else ""
        if self.schedule == "plateau":
            lr = f"rate {self.learning_rate:g}, x{self.lr_decay:g} after {self.lr_patience} validations without improvement (min {self.min_lr:g})"
        else:
            lr = f"cosine rate {self.learning_rate:g} -> {self.min_lr:g}" + (
                f" after {self.warmup_updates} warm-up updates" if self.warmup_updates else ""
            )
        return f"up to {self.max_updates} updates, validation every {self.validate_every}{stop}, {lr}"


def budget(tc, steps_per_epoch: int) -> Budget:
    """The `Budget` of a `TrainConfig` for data of `steps_per_epoch` updates per epoch."""
    paper = tc.lr_schedule == "paper"
    total = tc.epochs * steps_per_epoch if paper else tc.max_updates
    if paper and tc.max_updates:
        total = min(total, tc.max_updates)
    every = steps_per_epoch if paper or not tc.validate_every_updates else tc.validate_every_updates
    return Budget(
        schedule=tc.lr_schedule,
        max_updates=int(total),
        validate_every=int(every),
        min_updates=int(tc.min_updates),
        patience=tc.patience,
        learning_rate=float(tc.learning_rates[0][1] if paper else tc.learning_rate),
        learning_rates=tuple(tc.learning_rates),
        steps_per_epoch=int(steps_per_epoch),
        lr_decay=float(tc.lr_decay),
        lr_patience=int(tc.lr_patience),
        min_lr=float(tc.min_lr),
        min_improvement=float(tc.min_improvement),
        warmup_updates=int(tc.warmup_updates),
    )


def paper_rate(schedule: tuple[tuple[int, float], ...], epoch: int) -> float:
    """The rate of the last schedule entry whose first epoch is <= `epoch` (epochs count from 0)."""
    rate = None
    for first, lr in sorted(schedule):
        if epoch >= first:
            rate = lr
    if rate is None:
        raise ValueError(f"train.learning_rates {schedule} has no rate for epoch {epoch} (start it at epoch 0)")
    return float(rate)


def cosine_rate(step: int, peak: float, floor: float, total: int, warmup: int = 0) -> float:
    """Linear warm-up to `peak` over `warmup` updates, then half a cosine down to `floor` at `total`."""
    if warmup and step < warmup:
        return peak * (step + 1) / warmup
    frac = min(max(step - warmup, 0) / max(total - warmup, 1), 1.0)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * frac))


@dataclass(frozen=True)
class Tracker:
    """What the schedule and the stopping rule remember between validations (checkpointed)."""

    lr: float  # the plateau schedule's current rate
    best_val: float = math.inf  # the lowest validation loss so far
    best_step: int = -1  # its update count (the params in best/)
    bad: int = 0  # validations since the last improvement (early stopping)
    lr_bad: int = 0  # validations since the last improvement or rate decay
    last_gain: float = math.nan  # relative decrease of the loss at the last new best
    validations: int = 0


def rate(b: Budget, t: Tracker, step: int) -> float:
    """The learning rate of the update after `step` updates."""
    if b.schedule == "paper":
        return paper_rate(b.learning_rates, step // b.steps_per_epoch)
    if b.schedule == "cosine":
        return cosine_rate(step, b.learning_rate, b.min_lr, b.max_updates, b.warmup_updates)
    return t.lr


@dataclass(frozen=True)
class Decision:
    """The outcome of one validation."""

    tracker: Tracker
    new_best: bool  # the lowest loss so far: save best/
    decayed: bool  # the plateau rate was lowered
    stop: str  # "" or one of STOP_REASONS


def observe(b: Budget, t: Tracker, step: int, val_loss: float | None) -> Decision:
    """Updates the tracker with the validation loss after `step` updates (None: no validation
    data; then the latest params are the best and only the budget stops training)."""
    if val_loss is None:
        new_best, improved, gain = True, True, math.nan
    else:
        new_best = val_loss < t.best_val
        improved = not math.isfinite(t.best_val) or t.best_val - val_loss > b.min_improvement * abs(t.best_val)
        gain = (
            (t.best_val - val_loss) / abs(t.best_val)
            if new_best and math.isfinite(t.best_val) and t.best_val
            else math.nan
        )
    t = replace(
        t,
        best_val=val_loss if new_best and val_loss is not None else t.best_val,
        best_step=step if new_best else t.best_step,
        bad=0 if improved else t.bad + 1,
        lr_bad=0 if improved else t.lr_bad + 1,
        last_gain=gain if new_best else t.last_gain,
        validations=t.validations + 1,
    )
    decayed, flat = False, False
    if b.schedule == "plateau" and t.lr_bad >= b.lr_patience:
        if t.lr <= b.min_lr * (1 + 1e-9):
            flat = True
        else:
            t, decayed = replace(t, lr=max(t.lr * b.lr_decay, b.min_lr), lr_bad=0), True
    stop = ""
    if step >= b.min_updates and b.patience is not None and t.bad >= b.patience:
        stop = "patience"
    elif step >= b.min_updates and flat:
        stop = "plateau"
    elif step >= b.max_updates:
        stop = "budget"
    return Decision(t, new_best, decayed, stop)


def still_improving(b: Budget, t: Tracker, stop: str) -> bool:
    """Whether training stopped on its budget while the validation loss was still improving: an
    improvement within the last half of the patience window (at least the last validation; the
    last one when early stopping is off)."""
    return stop == "budget" and t.validations > 1 and t.bad < max(1, (b.patience or 0) // 2)


def stop_message(b: Budget, t: Tracker, stop: str, layer: str = "") -> str:
    """One line on why training stopped, with the best validation and its update."""
    best = f"best validation loss {t.best_val:.5g} at update {t.best_step} of {b.max_updates}"
    if stop == "patience":
        why = f"no improvement of more than {b.min_improvement:.2%} in {b.patience} validations"
    elif stop == "plateau":
        why = f"the learning rate is at its minimum {b.min_lr:g} and the loss stopped improving"
    else:
        why = f"the budget of {b.max_updates} updates is spent"
    return f"{layer + ': ' if layer else ''}stopped ({stop}): {why}; {best}"


def warning_message(b: Budget, t: Tracker, layer: str = "") -> str:
    """The warning for a run that `still_improving` says was cut by its budget."""
    gain = f"{100 * t.last_gain:.2g}%" if math.isfinite(t.last_gain) else "n/a"
    more = "train.epochs" if b.schedule == "paper" else "train.max_updates"
    return (
        f"{layer + ': ' if layer else ''}stopped on the budget while validation was still improving "
        f"(best at update {t.best_step} of {b.max_updates}, last improvement {gain}); raise {more} to train longer"
    )
