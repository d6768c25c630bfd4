"""`somojax import-torch`: PyTorch EA-LSTM weights (SoMo.ml v1 / ealstm_regional) -> checkpoint.

The state-dict layout of ealstm_regional's `Model` (and SoMo.ml v1) is

    lstm.weight_ih [D, 3H]   lstm.weight_hh [H, 3H]   lstm.bias [3H]     (gate order f, o, g)
    lstm.weight_sh [S, H]    lstm.bias_s [H]          fc.weight [1, H]   fc.bias [1]

with row-vector inputs (`x @ W`), exactly somojax's equations (DESIGN.md §1), so the import is a
renaming plus `W_fc = fc.weightᵀ`: the imported model computes what the PyTorch model computes
(tests/test_import_torch.py compares with torch's own forward pass). Several state dicts become
the members of one ensemble.

Accepted files: `.pt`/`.pth` (needs PyTorch: `pip install 'somojax[torch]'`; a dict of tensors,
or a checkpoint dict holding one under `state_dict`/`model_state_dict`; a `module.` prefix from
DataParallel is dropped) or `.npz` with the same keys.

Normalisation statistics (the means and standard deviations the PyTorch model was trained with):
- JSON, either somojax's `NormStats` format ({"mean": {var: m}, "std": {var: s}, "target_mean":
  {layer: m}, "target_std": {layer: s}}) or {var: {"mean": m, "std": s}, ...} with the target
  under the layer name, `target` or `sm`;
- CSV with columns `variable,mean,std`, the target in a row named as above.
A JSON file may also give `dynamic_inputs` / `static_inputs`: the models' input order, when it is
not somojax's (`data.dynamic_inputs` + the upper-layer inputs, `data.static_inputs`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from somojax import constants as C
from somojax.checkpoint import STATE_DIR, BEST_DIR, Bundle, save_bundle
from somojax.config import Config, to_dict
from somojax.errors import CheckpointError, InputDataError
from somojax.models.ealstm import PARAM_NAMES
from somojax.normalization import NormStats
from somojax.utils.logging import get_logger

log = get_logger("import")

TORCH_KEYS = ("lstm.weight_ih", "lstm.weight_hh", "lstm.bias", "lstm.weight_sh", "lstm.bias_s", "fc.weight", "fc.bias")
TARGET_NAMES = ("target", C.SM)


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a PyTorch state dict (.pt/.pth) or of an .npz with the same keys, as float32."""
    path = Path(path)
    if not path.exists():
        raise InputDataError(f"state dict {path} does not exist")
    if path.suffix == ".npz":
        with np.load(path) as z:
            raw: Mapping[str, Any] = {k: z[k] for k in z.files}
    elif path.suffix in (".pt", ".pth"):
        try:
            import torch
        except ImportError:
            raise InputDataError(
                f"{path} is a PyTorch file: reading it needs PyTorch (pip install 'somojax[torch]'; CPU wheel: "
                "pip install torch). Or save the state dict as .npz: np.savez(f, **{k: v.numpy() for k, v in sd.items()})"
            ) from None
        obj = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
        if not isinstance(obj, Mapping):
            raise InputDataError(f"{path} holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors)")
        raw = {k: v.detach().cpu().numpy() for k, v in obj.items() if hasattr(v, "detach")}
    else:
        raise InputDataError(f"state dict {path}: unknown file type {path.suffix!r} (expected .pt, .pth or .npz)")
    return {(k[len("module.") :] if k.startswith("module.") else k): np.asarray(v) for k, v in raw.items()}


def convert(sd: Mapping[str, np.ndarray], source: str = "state dict") -> dict[str, np.ndarray]:
    """ealstm_regional keys -> one member's somojax params, checking every key and shape."""
    missing = [k for k in TORCH_KEYS if k not in sd]
    if missing:
        raise InputDataError(f"{source} lacks {missing}; expected the ealstm_regional / SoMo.ml v1 keys {list(TORCH_KEYS)} (found {sorted(sd)})")
    extra = sorted(set(sd) - set(TORCH_KEYS))
    if extra:
        raise InputDataError(f"{source} has keys {extra} that an ealstm_regional EA-LSTM does not have; is it another architecture?")
    w_hh = sd["lstm.weight_hh"]
    if w_hh.ndim != 2 or w_hh.shape[1] != 3 * w_hh.shape[0]:
        raise InputDataError(f"{source}: lstm.weight_hh has shape {list(w_hh.shape)}, expected [H, 3H]")
    h = w_hh.shape[0]
    d = sd["lstm.weight_ih"].shape[0] if sd["lstm.weight_ih"].ndim == 2 else -1
    s = sd["lstm.weight_sh"].shape[0] if sd["lstm.weight_sh"].ndim == 2 else -1
    want = {
        "lstm.weight_ih": (d, 3 * h),
        "lstm.weight_hh": (h, 3 * h),
        "lstm.bias": (3 * h,),
        "lstm.weight_sh": (s, h),
        "lstm.bias_s": (h,),
        "fc.weight": (1, h),
        "fc.bias": (1,),
    }
    for k, shape in want.items():
        if tuple(sd[k].shape) != shape:
            shown = [("D" if i == 0 and k == "lstm.weight_ih" else "S" if i == 0 and k == "lstm.weight_sh" else n) for i, n in enumerate(shape)]
            raise InputDataError(
                f"{source}: {k} has shape {list(sd[k].shape)}, expected {shown} with H={h} (from lstm.weight_hh {list(w_hh.shape)})"
            )
    f32 = lambda k: np.ascontiguousarray(sd[k], dtype=np.float32)  # noqa: E731
    return {
        "W_ih": f32("lstm.weight_ih"),
        "W_hh": f32("lstm.weight_hh"),
        "b": f32("lstm.bias"),
        "W_sh": f32("lstm.weight_sh"),
        "b_s": f32("lstm.bias_s"),
        "W_fc": np.ascontiguousarray(f32("fc.weight").T),
        "b_fc": f32("fc.bias"),
    }


def read_stats(path: str | Path, layer: str) -> tuple[NormStats, dict]:
    """(NormStats, {"dynamic_inputs": ..., "static_inputs": ...} given in the file) from JSON or CSV."""
    path = Path(path)
    if not path.exists():
        raise InputDataError(f"statistics file {path} does not exist")
    order: dict = {}
    table: dict[str, tuple[float, float]] = {}
    try:
        if path.suffix.lower() == ".csv":
            df = pd.read_csv(path)
            cols = {c.strip().lower(): c for c in df.columns}
            if not {"variable", "mean", "std"} <= set(cols):
                raise InputDataError(f"{path}: a statistics CSV needs the columns variable, mean, std (found {list(df.columns)})")
            for _, row in df.iterrows():
                table[str(row[cols["variable"]]).strip()] = (float(row[cols["mean"]]), float(row[cols["std"]]))
        else:
            d = json.loads(path.read_text())
            order = {k: tuple(d.pop(k)) for k in ("dynamic_inputs", "static_inputs") if k in d}
            if "mean" in d and "std" in d and isinstance(d["mean"], Mapping):
                st = NormStats.from_json(json.dumps(d), source=str(path))
                table = {k: (st.mean[k], st.std[k]) for k in st.mean}
                for lay in st.target_mean:
                    table[lay] = (st.target_mean[lay], st.target_std[lay])
            else:
                for k, v in d.items():
                    table[k] = (float(v["mean"]), float(v["std"]))
    except (ValueError, KeyError, TypeError) as e:
        raise InputDataError(f"{path} is not a statistics file somojax understands: {e!r} (see `somojax import-torch --help`)") from None
    target = next((table.pop(n) for n in (layer, *TARGET_NAMES) if n in table), None)
    if target is None:
        raise InputDataError(f"{path} has no statistics of the target: add a row/entry named {layer!r} (or 'target') with its mean and std")
    for k, (m, s) in table.items():
        if not (np.isfinite(m) and np.isfinite(s) and s > 0):
            raise InputDataError(f"{path}: variable {k!r} has mean {m} and std {s}; the std must be positive and both finite")
    stats = NormStats(
        mean={k: m for k, (m, _) in table.items()},
        std={k: s for k, (_, s) in table.items()},
        target_mean={layer: target[0]},
        target_std={layer: target[1]},
    )
    return stats, order


def import_torch(
    cfg: Config,
    *,
    state_dict: str | Path | Sequence[str | Path],
    stats: str | Path,
    layer: str,
    out: str | Path | None = None,
) -> Path:
    """Writes a somojax checkpoint (one member per state dict) that `load_bundle` reads.

    Args:
      cfg: run config; its `model` section supplies seq_length / predict_last_n / dropout (the
        hidden size comes from the weights), `data` the default input order.
      state_dict: one path, several paths, or several paths joined by commas.
      stats: normalisation statistics file (JSON or CSV, see the module docstring).
      layer: `L1`, `L2` or `L3`.
      out: checkpoint directory (default `<workdir>/checkpoints/<layer>`); must not hold one yet.

    Returns:
      The checkpoint directory.
    """
    if layer not in C.LAYERS:
        raise InputDataError(f"layer {layer!r}: expected one of {C.LAYERS}")
    paths = [state_dict] if isinstance(state_dict, (str, Path)) else list(state_dict)
    paths = [Path(p.strip()) for item in paths for p in str(item).split(",") if p.strip()]
    members = [convert(read_state_dict(p), source=str(p)) for p in paths]
    shapes = {k: members[0][k].shape for k in PARAM_NAMES}
    for p, m in zip(paths[1:], members[1:]):
        bad = [k for k in PARAM_NAMES if m[k].shape != shapes[k]]
        if bad:
            raise InputDataError(f"{p}: {bad[0]} has shape {list(m[bad[0]].shape)} but {paths[0]} has {list(shapes[bad[0]])}; members must have one architecture")
    norm, order = read_stats(stats, layer)
    dynamic = tuple(order.get("dynamic_inputs", tuple(cfg.data.dynamic_inputs) + C.UPPER_LAYER_INPUTS[layer]))
    static = tuple(order.get("static_inputs", tuple(cfg.data.static_inputs)))
    d, s, h = shapes["W_ih"][0], shapes["W_sh"][0], shapes["W_hh"][0]
    for what, names, n, key in (("dynamic", dynamic, d, "lstm.weight_ih"), ("static", static, s, "lstm.weight_sh")):
        if len(names) != n:
            raise InputDataError(
                f"{paths[0]}: {key} has {n} {what} inputs but layer {layer} uses {len(names)} ({', '.join(names)}); "
                f"give the model's {what} input order as `{what}_inputs` in {stats}"
            )
    missing = [v for v in dynamic + static if v not in norm.mean]
    if missing:
        raise InputDataError(f"{stats} has no mean/std for the model inputs {missing}")
    model = dataclasses.replace(cfg.model, hidden_size=int(h))
    params = {k: np.stack([m[k] for m in members]) for k in PARAM_NAMES}
    bundle = Bundle(layer=layer, params=params, model=model, stats=norm, dynamic_inputs=dynamic, static_inputs=static, config=to_dict(cfg))
    out = Path(out) if out else cfg.checkpoint_dir / layer
    if (out / STATE_DIR).exists() or (out / BEST_DIR).exists():
        raise CheckpointError(f"{out} already holds a checkpoint; choose another --out or delete it first")
    save_bundle(bundle, out, source="import-torch", state_dicts=[str(p) for p in paths], statistics=str(stats))
    log.info("imported %d member(s) of %s (H=%d, %d dynamic, %d static inputs) into %s", len(members), layer, h, d, s, out)
    return out
