"""From raw inputs of a batch of cells to de-normalised ensemble predictions, layer by layer.

`layer_predictions` runs one layer's ensemble on raw inputs (normalisation with the bundle's
statistics, missing-input masking, the kernel, de-normalisation, clipping, ensemble mean and
spread). `cascade` runs several layers in one pass: layer k's upper-layer inputs (`sm_L1`,
`sm_L2`) are the ensemble-mean predictions of the layers above, computed on the same cells.

Conventions (documented in docs/inference.md):
- Output day t uses input days t−L+1 .. t. Days whose window is not complete within the given
  input period, or touches a missing (non-finite) input, are NaN — checked explicitly from the
  inputs, never left to NaN propagation through the network. Why each output is NaN is kept
  (`LayerOutput.nan_reason`, codes of `NAN_REASONS`) so that the rollout can count them.
- Each member's prediction is de-normalised with the layer's target statistics and clipped at 0
  (SoMo.ml); the product is the member mean, the spread the member standard deviation
  (population, ddof=0). Clipped member values are counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from somojax import constants as C
from somojax.checkpoint import Bundle
from somojax.errors import CheckpointError, ConfigError
from somojax.infer import kernels
from somojax.models.kernel import KernelOptions  # how the kernels run (shared with training)


def resolve_mode(bundle: Bundle, mode: str) -> str:
    """`auto` follows the model: seq-to-one -> exact, predict_last_n > 1 -> chunked.

    Asking `chunked` for a sequence-to-one model is an error: its windows of stride k would start
    with a different state than the model was trained on (docs/design.md#inference-semantics), and nothing falls back.
    """
    k = bundle.model.predict_last_n
    if mode == "auto":
        return "exact" if k == 1 else "chunked"
    if mode == "chunked" and k == 1:
        raise ConfigError(
            f"infer.mode=chunked needs a model trained with predict_last_n > 1, but the {bundle.layer} model is "
            "sequence-to-one (predict_last_n = 1): its outputs are only exact with one window per day. "
            "Use infer.mode=exact (or auto)."
        )
    if mode not in ("exact", "chunked"):
        raise ConfigError(f"infer.mode={mode!r}: expected auto, exact or chunked")
    return mode


def complete_windows(finite: np.ndarray, seq_length: int) -> np.ndarray:
    """Whether each day's window of L days lies inside the period with every input finite.

    Args:
      finite: [C, T] True where all inputs of a day are finite.

    Returns:
      [C, T] bool; the first L − 1 days are always False.
    """
    bad = np.concatenate([np.zeros((finite.shape[0], 1), np.int64), np.cumsum(~finite, axis=1)], axis=1)
    t = finite.shape[1]
    ok = np.zeros_like(finite)
    if t >= seq_length:
        ok[:, seq_length - 1 :] = (bad[:, seq_length:] - bad[:, : t - seq_length + 1]) == 0
    return ok


def normalise_inputs(
    bundle: Bundle, columns: Mapping[str, np.ndarray], statics: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Stacks and z-scores a bundle's inputs in its order: ([C, T, D], [C, S]) float32."""
    missing = [v for v in bundle.dynamic_inputs if v not in columns] + [
        v for v in bundle.static_inputs if v not in statics
    ]
    if missing:
        raise CheckpointError(
            f"the {bundle.layer} model needs inputs {missing} that are not available "
            f"(have dynamic {sorted(columns)}, static {sorted(statics)})"
        )
    st = bundle.stats
    x_d = np.stack(
        [(np.asarray(columns[v], np.float64) - st.mean[v]) / st.std[v] for v in bundle.dynamic_inputs], axis=-1
    )
    x_s = np.stack(
        [(np.asarray(statics[v], np.float64) - st.mean[v]) / st.std[v] for v in bundle.static_inputs], axis=-1
    )
    return x_d.astype(np.float32), x_s.astype(np.float32)


# why an output is NaN; `nan_reason` holds 0 (a value) or 1 + the index of the first reason that applies
NAN_REASONS = ("nonfinite_static_input", "incomplete_window", "nonfinite_dynamic_input", "nonfinite_model_output")
NAN_REASON_TEXT = {
    "nonfinite_static_input": "non-finite static input",
    "incomplete_window": "incomplete window",
    "nonfinite_dynamic_input": "non-finite dynamic input (an upper layer's NaN included)",
    "nonfinite_model_output": "non-finite model output from finite inputs",
}


def nan_reasons(finite_dynamic: np.ndarray, finite_static: np.ndarray, seq_length: int) -> np.ndarray:
    """Why each output is undefined, from the inputs: [C, T] uint8 codes (0: defined; see NAN_REASONS).

    Args:
      finite_dynamic: [C, T] True where every dynamic input of the day is finite.
      finite_static: [C] True where every static input of the cell is finite.
    """
    code = np.zeros(finite_dynamic.shape, np.uint8)
    code[~complete_windows(finite_dynamic, seq_length)] = 1 + NAN_REASONS.index("nonfinite_dynamic_input")
    code[:, : seq_length - 1] = 1 + NAN_REASONS.index("incomplete_window")
    code[~finite_static] = 1 + NAN_REASONS.index("nonfinite_static_input")
    return code


def count_nan_reasons(code: np.ndarray) -> dict[str, int]:
    """{"values": outputs, reason: NaN outputs for that reason} of `nan_reason` codes."""
    n = np.bincount(code.ravel(), minlength=len(NAN_REASONS) + 1)
    return {"values": int(code.size), **{r: int(n[i + 1]) for i, r in enumerate(NAN_REASONS)}}


@dataclass
class LayerOutput:
    """One layer's predictions on the input period: [C, T] arrays, NaN where undefined."""

    mean: np.ndarray
    spread: np.ndarray
    clipped: int  # member values clipped at 0
    cell_steps: int  # recurrent cell-steps computed (all members)
    nan_reason: np.ndarray | None = None  # [C, T] uint8: 0 where defined, else 1 + index in NAN_REASONS


def layer_predictions(
    bundle: Bundle,
    columns: Mapping[str, np.ndarray],
    statics: Mapping[str, np.ndarray],
    mode: str = "auto",
    options: KernelOptions = KernelOptions(),
    sharding: jax.sharding.Sharding | None = None,
    n_real: int | None = None,
) -> LayerOutput:
    """One layer's ensemble on raw inputs.

    Args:
      bundle: the layer's model.
      columns: raw dynamic inputs by name, each [C, T] (upper-layer inputs `sm_L1`... included).
      statics: raw statics by name, each [C].
      mode: auto, exact or chunked (`resolve_mode`).
      sharding: optional sharding of the cell axis of the inputs (e.g. over the `data` mesh axis).
      n_real: cells that count in the clipping and cost figures (the rest is padding); default all.
    """
    mode = resolve_mode(bundle, mode)
    L, k = bundle.model.seq_length, bundle.model.predict_last_n
    x_d, x_s = normalise_inputs(bundle, columns, statics)
    n_cells, t = x_d.shape[:2]
    mean = np.full((n_cells, t), np.nan, np.float32)
    spread = np.full((n_cells, t), np.nan, np.float32)
    reason = nan_reasons(np.isfinite(x_d).all(axis=-1), np.isfinite(x_s).all(axis=-1), L)
    if t < L:
        return LayerOutput(mean, spread, 0, 0, reason)
    ok = reason == 0
    y = _member_predictions(bundle, x_d, x_s, mode, options, sharding)  # [M, C, T − L + 1]
    mu, sd = bundle.stats.target_mean[bundle.layer], bundle.stats.target_std[bundle.layer]
    raw = y * sd + mu
    valid = ok[:, L - 1 :]
    n_real = n_cells if n_real is None else n_real
    clipped = int(np.sum((raw[:, :n_real] < 0) & valid[None, :n_real]))
    raw = np.maximum(raw, 0.0)
    with np.errstate(invalid="ignore"):  # a non-finite member output: its day is counted below
        m = raw.mean(axis=0)
        s = raw.std(axis=0)
    mean[:, L - 1 :] = np.where(valid, m, np.nan)
    spread[:, L - 1 :] = np.where(valid, s, np.nan)
    reason[ok & ~np.isfinite(mean)] = 1 + NAN_REASONS.index("nonfinite_model_output")
    n_members = y.shape[0]
    steps = int(n_members * n_real * (t - L + 1) * kernels.cost_per_output(mode, L, k))
    return LayerOutput(mean, spread, clipped, steps, reason)


def _member_predictions(
    bundle: Bundle,
    x_d: np.ndarray,
    x_s: np.ndarray,
    mode: str,
    options: KernelOptions,
    sharding: jax.sharding.Sharding | None,
) -> np.ndarray:
    """Every member's normalised predictions [M, C, T − L + 1] (float64) from normalised inputs.

    Non-finite inputs are read as 0 (`layer_predictions` marks their outputs with a NaN reason).
    """
    x_d = np.where(np.isfinite(x_d), x_d, 0.0).astype(np.float32)
    x_s = np.where(np.isfinite(x_s), x_s, 0.0).astype(np.float32)
    xd, xs = jnp.asarray(x_d), jnp.asarray(x_s)
    if sharding is not None:
        xd, xs = jax.device_put(xd, sharding), jax.device_put(xs, sharding)
    y = kernels.predict_normalised(
        dict(bundle.params),
        xd,
        xs,
        seq_length=bundle.model.seq_length,
        mode=mode,
        last_n=bundle.model.predict_last_n,
        kernel=options,
    )
    return np.asarray(y, np.float64)


def cascade(
    bundles: Mapping[str, Bundle],
    columns: Mapping[str, np.ndarray],
    statics: Mapping[str, np.ndarray],
    layers: Sequence[str] | None = None,
    mode: str = "auto",
    options: KernelOptions = KernelOptions(),
    sharding: jax.sharding.Sharding | None = None,
    n_real: int | None = None,
) -> dict[str, LayerOutput]:
    """Predictions of `layers` (default: all bundles), upper layers first, on one input period.

    Layer k's `sm_L1`/`sm_L2` inputs are the ensemble means of the layers above on the same
    days (NaN during their spin-up, so layer k's first valid day is later again).
    """
    layers = [l for l in C.LAYERS if l in (layers or bundles)]
    needed = sorted(
        {u.removeprefix("sm_") for l in layers for u in C.UPPER_LAYER_INPUTS[l]} | set(layers), key=C.LAYERS.index
    )
    absent = [l for l in needed if l not in bundles]
    if absent:
        raise CheckpointError(
            f"predicting {layers} needs the models of {absent} (the cascade above them); train or import them first"
        )
    cols = dict(columns)
    out: dict[str, LayerOutput] = {}
    for layer in needed:
        out[layer] = layer_predictions(bundles[layer], cols, statics, mode, options, sharding, n_real)
        cols[f"sm_{layer}"] = out[layer].mean
    return {l: out[l] for l in needed}


def cascade_means(
    bundles: Mapping[str, Bundle],
    raw_dynamic: np.ndarray,
    raw_static: np.ndarray,
    dynamic_names: Sequence[str],
    static_names: Sequence[str],
    layers: Sequence[str],
    mode: str = "auto",
) -> dict[str, np.ndarray]:
    """`cascade` on stacked raw arrays: {layer: ensemble mean [C, days] float32, m3 m-3}.

    What the training cascade and cross-validation need (`somojax.train.cascade`,
    `somojax.evaluate.cascade`): raw_dynamic [C, days, D] named `dynamic_names`, raw_static [C, S]
    named `static_names`; a model's input missing from those is a `CheckpointError`.
    """
    columns = {n: np.asarray(raw_dynamic[..., k], np.float32) for k, n in enumerate(dynamic_names)}
    statics = {n: np.asarray(raw_static[:, k], np.float32) for k, n in enumerate(static_names)}
    for b in bundles.values():
        missing = [v for v in b.dynamic_inputs if v not in columns and not v.startswith("sm_")]
        missing += [v for v in b.static_inputs if v not in statics]
        if missing:
            raise CheckpointError(f"the {b.layer} model needs inputs {missing}, which the stores do not give")
    out = cascade(bundles, columns, statics, layers=layers, mode=mode)
    return {l: np.asarray(o.mean, np.float32) for l, o in out.items()}


def spinup_days(bundles: Mapping[str, Bundle], layer: str) -> int:
    """Input days needed before the first output day of `layer` (its own and the cascade's)."""
    total = bundles[layer].model.seq_length - 1
    uppers = [u.removeprefix("sm_") for u in C.UPPER_LAYER_INPUTS[layer]]
    if uppers:
        total += max(spinup_days(bundles, u) for u in uppers)
    return total
