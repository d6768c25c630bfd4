"""How the EA-LSTM recurrence runs: one options object for training and inference.

`KernelOptions` says how the steps are computed, never what: every choice in it gives the same
values (equal to float32 rounding where a sum is reordered), except `precision` and
`compute_dtype`, which are the model's numerics (`model.matmul_precision`, `model.dtype`). The
training step (`somojax.train.step`), the model's functional form (`somojax.models.ealstm`),
the hand-written backward pass (`somojax.models.recurrence`) and the inference kernels
(`somojax.infer.kernels`) all take it as one hashable value, part of what `jit` compiles.

The choices that exist only because of how XLA:CPU schedules small kernels are kept apart in
`CpuSchedule`; each is on for the CPU backend and off elsewhere (`CpuSchedule.for_backend`), and
the benchmarks in benchmarks/ measure them (docs/design.md, "Measured decisions").

`train_kernel` and `infer_kernel` turn the config's `kernel:` section (and the model's numerics)
into these options.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax

from somojax.config import KernelConfig, ModelConfig

# Exact inference steps about this many state values per pass (~0.75 MB per [rows, H] float32
# array at any H): the recurrent state and the step's gates stay in the CPU's cache.
_STATE_VALUES_PER_STEP = 196608


@dataclass(frozen=True)
class CpuSchedule:
    """XLA:CPU scheduling choices. Same values either way; on the CPU each is faster.

    split_barrier: training recurrence: materialise the three gate slices of [B, 3H] before
      their activations (XLA:CPU fuses strided column reads of one wide array poorly).
    transpose_rows: training recurrence, one member: materialise the transposed row operand of
      the weight-gradient products so that they are plain (NN) GEMMs.
    member_map: inference: run the ensemble members one after another (`lax.map`; less memory)
      instead of vectorised (`vmap`; batched products, better on accelerators).
    """

    split_barrier: bool = False
    transpose_rows: bool = False
    member_map: bool = False

    @classmethod
    def for_backend(cls, backend: str | None = None) -> CpuSchedule:
        on = (backend or jax.default_backend()) == "cpu"
        return cls(split_barrier=on, transpose_rows=on, member_map=on)


_SCHEDULE_FIELDS = tuple(f.name for f in dataclasses.fields(CpuSchedule))


@dataclass(frozen=True)
class KernelOptions:
    """How the recurrence runs (hashable: a static argument of the jitted functions).

    hoist: compute x W_ih + b for all days in one product before the loop (True) or inside each
      step (False); None: per backend, inside on the CPU (less memory traffic per step).
    precision, compute_dtype: of the products (`somojax.models.cell.matmul`); the model's numerics.
    custom_vjp: training gradients from the hand-written backward pass (`models/recurrence.py`)
      instead of `jax.grad` through `lax.scan`; `remat` and `unroll` apply to the latter.
    rows_per_step: exact inference: cells x windows stepped together; 0: automatic (`rows`).
    backward_block: custom backward: steps per weight-gradient product; None: 8 for one member,
      4 for a stack (fastest measured, benchmarks/bench_train_step.py).
    cpu: the XLA:CPU scheduling choices; None: `CpuSchedule.for_backend()` where it is used.
    """

    hoist: bool | None = None
    precision: str | None = "highest"
    compute_dtype: str | None = None
    custom_vjp: bool = False
    remat: bool = False
    unroll: int = 1
    rows_per_step: int = 0
    backward_block: int | None = None
    cpu: CpuSchedule | None = None

    def resolved_hoist(self, backend: str | None = None) -> bool:
        if self.hoist is not None:
            return self.hoist
        return (backend or jax.default_backend()) != "cpu"

    def schedule(self) -> CpuSchedule:
        return self.cpu if self.cpu is not None else CpuSchedule.for_backend()

    def rows(self, hidden_size: int) -> int:
        """Rows stepped together by exact inference (1536 at H = 128)."""
        return self.rows_per_step or max(64, _STATE_VALUES_PER_STEP // hidden_size)

    def replace(self, **changes) -> KernelOptions:
        """A copy with `changes`; the `CpuSchedule` fields (`member_map`, ...) may be given here too."""
        sched = {k: changes.pop(k) for k in list(changes) if k in _SCHEDULE_FIELDS}
        if sched:
            changes["cpu"] = dataclasses.replace(self.schedule(), **sched)
        return dataclasses.replace(self, **changes) if changes else self


# The model's own formulation (`somojax.models.ealstm`): hoisted projection, plain autodiff.
REFERENCE = KernelOptions(hoist=True)
# The training step's defaults when no config is given (`somojax.train.step.StepOptions`).
TRAINING = KernelOptions(hoist=False, custom_vjp=True, remat=True)


# `kernel.hoist` (auto/yes/no) as `KernelOptions.hoist`: auto is None, resolved by `resolved_hoist`
_HOIST = {"yes": True, "no": False, "auto": None}


def train_kernel(kernel: KernelConfig, model: ModelConfig, backend: str | None = None) -> KernelOptions:
    """The training step's options: `kernel:` with the model's numerics (`model.dtype`,
    `model.matmul_precision`); `kernel.hoist: auto` resolved for `backend` (default: JAX's)."""
    options = KernelOptions(
        hoist=_HOIST[kernel.hoist],
        precision=model.matmul_precision,
        compute_dtype=None if model.dtype == "float32" else model.dtype,
        custom_vjp=kernel.backward in ("auto", "custom"),
        remat=kernel.remat,
        unroll=kernel.unroll,
    )
    return options.replace(hoist=options.resolved_hoist(backend))


def infer_kernel(kernel: KernelConfig) -> KernelOptions:
    """The rollout's options from `kernel:`, at float32 and the highest precision whatever the
    model was trained at: predictions are the reference semantics (docs/inference.md, "Precision")."""
    return KernelOptions(hoist=_HOIST[kernel.hoist], rows_per_step=kernel.rows_per_step, unroll=kernel.unroll)
