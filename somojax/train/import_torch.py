"""`somojax import-torch`: PyTorch EA-LSTM weights (SoMo.ml v1 / ealstm_regional) -> checkpoint.

The state-dict layout of ealstm_regional's `Model` (and SoMo.ml v1) is

    lstm.weight_ih [D, 3H]   lstm.weight_hh [H, 3H]   lstm.bias [3H]     (gate order f, o, g)
    lstm.weight_sh [S, H]    lstm.bias_s [H]          fc.weight [1, H]   fc.bias [1]

with row-vector inputs (`x @ W`), exactly somojax's equations (docs/design.md#model), so the import is a
renaming plus `W_fc = fc.weightᵀ`: the imported model computes what the PyTorch model computes
(tests/test_import_torch.py compares with torch's own forward pass). Several state dicts become
the members of one ensemble.

Accepted files: `.pt`/`.pth` (needs PyTorch: `pip install 'somojax[torch]'`; a dict of tensors,
or a checkpoint dict holding one under `state_dict`/`model_state_dict`; a `module.` prefix from
DataParallel is dropped) or `.npz` with the same keys.

Normalisation statistics (the means and standard deviations the PyTorch model was trained with),
one file or several whose variables are merged, in any of `STATS_FORMATS` (recognised from the
content): somojax's JSON, a JSON of {var: {mean, std}}, a CSV `variable,mean,std`, or SoMo.ml's own
scaler tables as the authors publish them (`scaler_ALL_layer0.dat`: dynamic inputs and the target
`sm`; `scaler_ALL_statics.dat`: the statics; rows `aveK`/`stdK`, a column per variable). A JSON file
may also give `dynamic_inputs` / `static_inputs`: the models' input order, when it is not the
config's (`data.dynamic_inputs` + the upper-layer inputs, `data.static_inputs`).

A state dict does not record the window length or the input order: they are told (the config's
`model.seq_length` and `data.*_inputs`, or `--seq-length`), logged, and recorded in the checkpoint.
`configs/somo-v1.yaml` is SoMo.ml v1's preset (L = 365, H = 128, its input order; docs/somo-v1.md).
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
import zipfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from somojax import constants as C
from somojax.checkpoint import STATE_DIR, BEST_DIR, Bundle, discard_checkpoints, save_bundle
from somojax.config import Config, ModelConfig, to_dict
from somojax.errors import CheckpointError, InputDataError, writing
from somojax.models.ealstm import PARAM_NAMES
from somojax.normalization import NormStats
from somojax.utils.logging import get_logger

log = get_logger("import")

TORCH_KEYS = ("lstm.weight_ih", "lstm.weight_hh", "lstm.bias", "lstm.weight_sh", "lstm.bias_s", "fc.weight", "fc.bias")
TARGET_NAMES = ("target", C.SM)


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a PyTorch state dict (.pt/.pth) or of an .npz with the same keys, as float32."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"state dict {path} does not exist" + (" (it is a directory)" if path.is_dir() else ""))
    if path.suffix == ".npz":
        raw = _read_npz(path)
    elif path.suffix in (".pt", ".pth"):
        raw = _read_torch(path)
    else:
        raise InputDataError(f"state dict {path}: unknown file type {path.suffix!r} (expected .pt, .pth or .npz)")
    return {(k[len("module.") :] if k.startswith("module.") else k): np.asarray(v) for k, v in raw.items()}


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        z = np.load(path)
        if isinstance(z, np.ndarray):  # a plain .npy renamed
            raise InputDataError(
                f"{path} holds one array, not an .npz archive of named arrays (np.savez(f, **state_dict))"
            )
        with z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as e:  # truncated, not a zip, pickled objects
        why = str(e).split(". ")[0]
        raise InputDataError(
            f"{path} is not a readable .npz archive of arrays ({type(e).__name__}: {why}); save it again with np.savez"
        ) from None


def _read_torch(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise InputDataError(
            f"{path} is a PyTorch file: reading it needs PyTorch (pip install 'somojax[torch]'; CPU wheel: "
            "pip install torch). Or save the state dict as .npz: np.savez(f, **{k: v.numpy() for k, v in sd.items()})"
        ) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError ... for a file it cannot read
        raise InputDataError(
            f"{path} is not a readable PyTorch file ({type(e).__name__}: {textwrap.shorten(str(e), 200)}); "
            "save the state dict again with torch.save(model.state_dict(), path)"
        ) from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise InputDataError(f"{path} holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors)")
    return {k: v.detach().cpu().numpy() for k, v in obj.items() if hasattr(v, "detach")}


def convert(sd: Mapping[str, np.ndarray], source: str = "state dict") -> dict[str, np.ndarray]:
    """ealstm_regional keys -> one member's somojax params, checking every key and shape."""
    missing = [k for k in TORCH_KEYS if k not in sd]
    if missing:
        raise InputDataError(
            f"{source} lacks {missing}; expected the ealstm_regional / SoMo.ml v1 keys {list(TORCH_KEYS)} (found {sorted(sd)})"
        )
    extra = sorted(set(sd) - set(TORCH_KEYS))
    if extra:
        raise InputDataError(
            f"{source} has keys {extra} that an ealstm_regional EA-LSTM does not have; is it another architecture?"
        )
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
        if not (np.issubdtype(sd[k].dtype, np.floating) or np.issubdtype(sd[k].dtype, np.integer)):
            raise InputDataError(f"{source}: {k} has dtype {sd[k].dtype}, expected floating-point weights")
        if tuple(sd[k].shape) != shape:
            shown = [
                ("D" if i == 0 and k == "lstm.weight_ih" else "S" if i == 0 and k == "lstm.weight_sh" else n)
                for i, n in enumerate(shape)
            ]
            raise InputDataError(
                f"{source}: {k} has shape {list(sd[k].shape)}, expected {shown} with H={h} (from lstm.weight_hh {list(w_hh.shape)})"
            )
    _check_finite(sd, source)
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


def _check_finite(sd: Mapping[str, np.ndarray], source: str) -> None:
    """Every weight finite in float32 (NaN/Inf would turn every prediction into NaN)."""
    for k in TORCH_KEYS:
        with np.errstate(over="ignore"):
            bad = ~np.isfinite(np.asarray(sd[k], np.float32))
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InputDataError(
                f"{source}: {k} has {int(bad.sum())} of {bad.size} values that are NaN or Inf in float32 (first at index "
                f"{list(first)}: {np.asarray(sd[k]).ravel()[np.ravel_multi_index(first, bad.shape)]!r}); these weights cannot "
                "predict anything: export them again from a model whose training did not diverge"
            )


STATS_FORMATS = (
    'somojax JSON (normalization.json): {"mean": {var: m}, "std": {var: s}, "target_mean": {layer: m}, "target_std": {layer: s}}',
    'JSON {var: {"mean": m, "std": s}, ..., "target": {...}}',
    "CSV with the columns variable,mean,std (one row per variable)",
    "SoMo.ml scaler table (scaler_ALL_layer0.dat, scaler_ALL_statics.dat): a CSV whose header names one column "
    "per variable, with a row aveK (or mean) and a row stdK (or std)",
)
MEAN_ROWS, STD_ROWS = ("avek", "ave", "mean"), ("stdk", "std")


def _formats_text() -> str:
    return "; ".join(f"({k}) {f}" for k, f in enumerate(STATS_FORMATS, 1))


def read_stats(paths: str | Path | Sequence[str | Path], layer: str) -> tuple[NormStats, dict]:
    """(NormStats, {"dynamic_inputs": ..., "static_inputs": ...} given in the files).

    `paths`: one file, several, or several joined by commas, each in one of `STATS_FORMATS` (found
    from the content, not the name: the authors' tables end in `.dat`). Their variables are merged:
    SoMo.ml keeps the dynamic inputs and the target in one table and the statics in another.
    """
    files = _split_paths(paths)
    if not files:
        raise InputDataError(f"--stats {paths!r} names no file; give one or more statistics files, comma-separated")
    order: dict = {}
    table: dict[str, tuple[float, float]] = {}
    seen_in: dict[str, Path] = {}
    for path in files:
        part, part_order = _read_stats_file(path)
        for k, v in part.items():
            if k in table and table[k] != v:
                raise InputDataError(
                    f"{path} and {seen_in[k]} give {k!r} different statistics ({v} and {table[k]}); keep one"
                )
            table[k], seen_in[k] = v, path
        order.update(part_order)
    return _norm_stats(table, layer, ", ".join(map(str, files))), order


def _split_paths(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    return [Path(p.strip()) for item in items for p in str(item).split(",") if p.strip()]


def _read_stats_file(path: Path) -> tuple[dict[str, tuple[float, float]], dict]:
    """{variable: (mean, std)} and the input order given in one statistics file."""
    if not path.is_file():
        raise InputDataError(
            f"statistics file {path} does not exist" + (" (it is a directory)" if path.is_dir() else "")
        )
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise InputDataError(f"{path} is not a text file; accepted statistics formats: {_formats_text()}") from None
    try:
        if path.suffix.lower() == ".json" or text.lstrip()[:1] in ("{", "["):
            return _read_stats_json(path, text)
        return _read_stats_csv(path)
    except (ValueError, KeyError, TypeError) as e:
        raise InputDataError(
            f"{path} is not a statistics file somojax understands ({type(e).__name__}: {textwrap.shorten(str(e), 160)}); "
            f"accepted formats: {_formats_text()}"
        ) from None


def _read_stats_json(path: Path, text: str) -> tuple[dict[str, tuple[float, float]], dict]:
    d = json.loads(text)
    if not isinstance(d, dict):
        raise InputDataError(
            f"{path} holds a JSON {type(d).__name__}, not a mapping of variables to their mean and std"
        )
    order = {k: tuple(d.pop(k)) for k in ("dynamic_inputs", "static_inputs") if k in d}
    if "mean" in d and "std" in d and isinstance(d["mean"], Mapping):
        st = NormStats.from_json(json.dumps(d), source=str(path))
        table = {k: (st.mean[k], st.std[k]) for k in st.mean}
        table.update({lay: (st.target_mean[lay], st.target_std[lay]) for lay in st.target_mean})
        return table, order
    return {k: (float(v["mean"]), float(v["std"])) for k, v in d.items()}, order


def _read_stats_csv(path: Path) -> tuple[dict[str, tuple[float, float]], dict]:
    """A long table (variable,mean,std) or SoMo.ml's wide one (rows aveK/stdK, a column per variable)."""
    df = pd.read_csv(path, index_col=None)
    cols = {str(c).strip().lower(): c for c in df.columns}
    if {"variable", "mean", "std"} <= set(cols):
        names = df[cols["variable"]].astype(str).str.strip()
        if names.duplicated().any():
            raise InputDataError(
                f"{path}: variables {sorted(set(names[names.duplicated()]))} have more than one row; keep one each"
            )
        return {n: (float(row[cols["mean"]]), float(row[cols["std"]])) for n, (_, row) in zip(names, df.iterrows())}, {}
    rows = {str(r).strip().lower(): i for i, r in enumerate(df.iloc[:, 0])} if df.shape[1] > 1 else {}
    mean_row = next((rows[r] for r in MEAN_ROWS if r in rows), None)
    std_row = next((rows[r] for r in STD_ROWS if r in rows), None)
    if mean_row is None or std_row is None:
        raise InputDataError(
            f"{path}: neither columns variable,mean,std (found {[str(c) for c in df.columns][:8]}) nor rows aveK and stdK "
            f"(first column: {[str(r) for r in df.iloc[:, 0]][:4] if df.shape[1] else []}); accepted formats: {_formats_text()}"
        )
    variables = [str(c).strip() for c in df.columns[1:]]
    dup = sorted({v for v in variables if variables.count(v) > 1})
    if dup:
        raise InputDataError(f"{path}: variables {dup} have more than one column; keep one each")
    return {v: (float(df.iloc[mean_row, k + 1]), float(df.iloc[std_row, k + 1])) for k, v in enumerate(variables)}, {}


def _norm_stats(table: dict[str, tuple[float, float]], layer: str, source: str) -> NormStats:
    """The target (under the layer's name, `target` or `sm`) split off; every std positive and finite."""
    table = dict(table)
    name = next((n for n in (layer, *TARGET_NAMES) if n in table), None)
    if name is None:
        raise InputDataError(
            f"{source} has no statistics of the target: add a row/entry named {layer!r} (or 'target', 'sm') with its mean and std"
        )
    target = table.pop(name)
    for k, (m, s) in [*table.items(), (name, target)]:
        if not (np.isfinite(m) and np.isfinite(s) and s > 0):
            what = "the target" if k == name else "variable"
            raise InputDataError(
                f"{source}: {what} {k!r} has mean {m} and std {s}; the std must be positive and both finite "
                "(a zero std would divide by zero when normalising): give the statistics the model was trained with"
            )
    return NormStats(
        mean={k: m for k, (m, _) in table.items()},
        std={k: s for k, (_, s) in table.items()},
        target_mean={layer: target[0]},
        target_std={layer: target[1]},
    )


def _make_room(out: Path) -> None:
    """Refuses a directory holding a finished checkpoint; clears the leftovers of an unfinished one.

    Orbax writes a step into a temporary directory and renames it to its step number when
    complete, so a numbered step directory is a finished checkpoint and anything else is not.
    """
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"--out {out} is a file, not a directory; choose another --out")
    parts = [out / p for p in (STATE_DIR, BEST_DIR) if (out / p).is_dir()]
    if any(step.name.isdigit() for p in parts for step in p.iterdir()):
        raise CheckpointError(f"{out} already holds a checkpoint; choose another --out or delete it first")
    if parts:
        log.warning("%s holds an unfinished checkpoint (an interrupted import or training); replacing it", out)
        discard_checkpoints(out)


def import_torch(
    cfg: Config,
    *,
    state_dict: str | Path | Sequence[str | Path],
    stats: str | Path | Sequence[str | Path],
    layer: str,
    out: str | Path | None = None,
    seq_length: int | None = None,
    told: str = "",
) -> Path:
    """Writes a somojax checkpoint (one member per state dict) that `load_bundle` reads.

    A state dict holds weights only: the hidden size comes from them, everything else the model
    needs — the sequence length, the input order, the statistics — is told, and recorded in
    the checkpoint (`somojax predict` refuses a config that disagrees with it).

    Args:
      cfg: run config; `model` gives seq_length (unless `seq_length` is given), predict_last_n and
        dropout, `data` the input order (unless the statistics file gives it; configs/somo-v1.yaml
        is SoMo.ml v1's).
      state_dict: one path, several paths, or several paths joined by commas.
      stats: statistics files (one or several, or joined by commas; formats: `STATS_FORMATS`).
      layer: `L1`, `L2` or `L3`.
      out: checkpoint directory (default `<workdir>/checkpoints/<layer>`); must not hold one yet.
      seq_length: the model's window length in days; default `cfg.model.seq_length`.
      told: where the settings came from, for the log (e.g. "config somo-v1").

    Returns:
      The checkpoint directory.
    """
    if layer not in C.LAYERS:
        raise InputDataError(f"layer {layer!r}: expected one of {C.LAYERS}")
    paths, members = _read_members(state_dict)
    norm, order = read_stats(stats, layer)
    dynamic, static = _input_order(cfg, layer, order, members[0], paths[0])
    missing = [v for v in dynamic + static if v not in norm.mean]
    if missing:
        raise InputDataError(
            f"{_show(stats)} has no mean/std for the model inputs {missing} (it has {sorted(norm.mean)})"
        )
    model = _model_config(cfg, members[0], seq_length)
    params = {k: np.stack([m[k] for m in members]) for k in PARAM_NAMES}
    bundle = Bundle(layer, params, model, norm, dynamic, static, config=to_dict(cfg))
    out = Path(out) if out else cfg.checkpoint_dir / layer
    _make_room(out)
    told = told or f"config {cfg.name}"
    _save(bundle, out, paths, stats, told)
    _log_import(bundle, len(members), out, told, stats)
    return out


def _read_members(state_dict: str | Path | Sequence[str | Path]) -> tuple[list[Path], list[dict[str, np.ndarray]]]:
    """(paths, converted weights) of the members named by `state_dict` (as `import_torch`
    takes it); every member must have the first one's architecture."""
    paths = _split_paths(state_dict)
    if not paths:
        raise InputDataError(
            f"--state-dict {state_dict!r} names no file; give one or more .pt/.pth/.npz paths, comma-separated"
        )
    members = [convert(read_state_dict(p), source=str(p)) for p in paths]
    shapes = {k: members[0][k].shape for k in PARAM_NAMES}
    for p, m in zip(paths[1:], members[1:]):
        bad = [k for k in PARAM_NAMES if m[k].shape != shapes[k]]
        if bad:
            raise InputDataError(
                f"{p}: {bad[0]} has shape {list(m[bad[0]].shape)} but {paths[0]} has {list(shapes[bad[0]])}; members must have one architecture"
            )
    return paths, members


def _input_order(
    cfg: Config, layer: str, order: Mapping[str, Sequence[str]], weights: Mapping[str, np.ndarray], source: Path
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(dynamic, static) input names of the model, in its order: the statistics file's `order`
    (`read_stats`) where it gives one, else the config's; as many as `weights` (of `source`) take."""
    dynamic = tuple(order.get("dynamic_inputs", tuple(cfg.data.dynamic_inputs) + C.UPPER_LAYER_INPUTS[layer]))
    static = tuple(order.get("static_inputs", tuple(cfg.data.static_inputs)))
    d, s = weights["W_ih"].shape[0], weights["W_sh"].shape[0]
    for what, names, n, key in (("dynamic", dynamic, d, "lstm.weight_ih"), ("static", static, s, "lstm.weight_sh")):
        if len(names) != n:
            raise InputDataError(
                f"{source}: {key} has {n} {what} inputs but layer {layer} uses {len(names)} ({', '.join(names)}); "
                f"give the model's {what} input order as data.{what}_inputs in the config (or `{what}_inputs` in a JSON statistics file)"
            )
    return dynamic, static


def _model_config(cfg: Config, weights: Mapping[str, np.ndarray], seq_length: int | None) -> ModelConfig:
    """`cfg.model` with the hidden size of `weights` (a warning where the config says another)
    and the window length `seq_length` (default `cfg.model.seq_length`)."""
    length = int(seq_length if seq_length is not None else cfg.model.seq_length)
    if length < 1:
        raise InputDataError(
            f"--seq-length {length}: the model's window length must be at least 1 day (SoMo.ml v1: 365)"
        )
    h = weights["W_hh"].shape[0]
    if h != cfg.model.hidden_size:
        log.warning(
            "the weights have H=%d hidden units, the config says model.hidden_size=%d: the checkpoint takes H from the weights",
            h,
            cfg.model.hidden_size,
        )
    return dataclasses.replace(cfg.model, hidden_size=int(h), seq_length=length)


def _save(
    bundle: Bundle, out: Path, state_dicts: Sequence[Path], stats: str | Path | Sequence[str | Path], told: str
) -> None:
    """Writes `bundle` to `out` with its provenance: the state dicts and statistics files it
    came from (absolute paths) and where its settings were told."""
    with writing("the imported checkpoint", out):
        save_bundle(
            bundle,
            out,
            source="import-torch",
            state_dicts=[str(p.resolve()) for p in state_dicts],
            statistics=[str(p.resolve()) for p in _split_paths(stats)],
            told=told,
        )


def _log_import(bundle: Bundle, n_members: int, out: Path, told: str, stats: str | Path | Sequence[str | Path]) -> None:
    """Logs what was imported into `out`, and where the settings a state dict lacks came from."""
    log.info(
        "imported %d member(s) of %s into %s: H=%d (from the weights); window L=%d days, predict_last_n=%d, "
        "dynamic inputs %s, static inputs %s (from %s; a state dict does not record them); statistics of %d variables and the target from %s",
        n_members,
        bundle.layer,
        out,
        bundle.model.hidden_size,
        bundle.model.seq_length,
        bundle.model.predict_last_n,
        list(bundle.dynamic_inputs),
        list(bundle.static_inputs),
        told,
        len(bundle.stats.mean),
        _show(stats),
    )


def _show(paths) -> str:
    return ", ".join(map(str, _split_paths(paths)))
