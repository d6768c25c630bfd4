"""Typed, frozen configuration.

A configuration is a tree of frozen dataclasses, one section per stage. Defaults are the
paper's settings (SoMo.ml, docs/design.md#science); files in `configs/` override them, and a file may name
a `base:` file that it extends. Unknown keys are an error naming the key and the file (with a
suggestion); values are checked against the field types. Command-line overrides are
`section.key=value`, the value parsed as YAML (`train.members=3`, `data.quality_flags=[G,U]`).

Every run writes its resolved configuration next to its outputs (`save_config`).
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import logging
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Sequence, Union

import yaml

from somojax import constants as C
from somojax.config_checks import check_config
from somojax.errors import ConfigError

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------
# sections
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SynthConfig:
    """The synthetic Earth (docs/synthetic-earth.md): region, period and sampling of the demo data."""

    lat_range: tuple[float, float] = (38.0, 44.0)  # south and north edges [degrees north]
    lon_range: tuple[float, float] = (-100.0, -92.0)  # west and east edges [degrees east]
    start: str = "1999-01-01"  # first forcing day
    end: str = "2004-12-31"  # last forcing day
    station_start: str = "2001-01-01"  # first day stations observe
    n_stations: int = 60
    hours_per_obs: int = 3  # sub-daily sampling interval of the stations [h] (divides 24)
    seed: int = 0
    # land mask of the Earth to simulate: an ERA5 `lsm` or GLDAS mask file, read as `prepare`
    # reads data.land_mask; empty: the demo's own (all land but a lake and a river)
    land_mask: str = ""
    # 0: the region in one piece; > 0: independent tiles of band_deg x band_deg degrees, written
    # one latitude band at a time, so memory follows the band and not the region (the globe)
    band_deg: float = 0.0


@dataclass(frozen=True)
class DataConfig:
    """Raw inputs, target preparation rules and the analysis-ready stores."""

    # where the raw inputs are; "synthetic" reads what `somojax synth` wrote to <workdir>/raw
    source: Literal["synthetic", "files"] = "synthetic"
    ismn: str = ""  # ISMN archive: folder or .zip
    era5: tuple[str, ...] = ()  # ERA5 files or globs (NetCDF, GRIB, Zarr)
    era5_sm: tuple[str, ...] = ()  # ERA5 soil-moisture files, if separate from `era5`
    etopo: str = ""  # ETOPO1 1-arc-minute elevation
    gldas_soil: str = ""  # GLDAS soil fractions (clay/sand/silt)
    gldas_porosity: str = ""  # GLDAS porosity
    gldas_vegetation: str = ""  # GLDAS dominant vegetation
    land_mask: str = ""  # land mask (ERA5 lsm or GLDAS mask); empty: the GLDAS mask of statics
    store_dir: str = ""  # analysis-ready stores; empty: <workdir>/stores
    # periods (inclusive ISO dates)
    forcing_start: str = "1997-01-01"
    forcing_end: str = "2019-12-31"
    target_start: str = "2000-01-01"
    target_end: str = "2019-12-31"
    # region of the analysis-ready stores: (south, north) and (west, east) edges in degrees
    lat_range: tuple[float, float] = (-60.0, 90.0)
    lon_range: tuple[float, float] = (-180.0, 180.0)
    # target preparation (docs/design.md#targets)
    quality_flags: tuple[str, ...] = ("G",)
    min_values_per_day: int = 6
    min_days_per_sensor: int = 60
    # rescaling to ERA5 needs at least this many days on which series and ERA5 both have a value
    min_overlap_days: int = 60
    # ERA5 hourly accumulations: "hourly" (ERA5/CDS: amount of the preceding hour) or
    # "since_00utc" (ERA5-Land: running total since 00 UTC, day total stamped D+1 00:00)
    era5_accumulation: Literal["hourly", "since_00utc"] = "hourly"
    # units of ERA5 variables whose files have no `units` attribute, e.g. {t2m: K, tp: m}: states
    # what the values are (nothing is converted); without it such a file is an error
    units: Any = ()
    # time steps per ERA5 file the plausibility check reads before anything is written: 0 = every
    # value (exact counts); N = N evenly spaced steps (faster on TBs of ERA5; docs/reliability.md)
    era5_check_steps: int = 0
    # arid = net radiation / precipitation: precipitation below this floor [mm/year] is raised to it
    arid_min_precip: float = 1.0
    dynamic_inputs: tuple[str, ...] = C.DYNAMIC_INPUTS
    static_inputs: tuple[str, ...] = C.STATIC_INPUTS
    # train/validation split of the training stage
    split: Literal["cell", "period"] = "cell"
    val_fraction: float = 0.2  # share of target cells held out (split="cell")
    val_start: str = "2017-01-01"  # held-out period (split="period")
    val_end: str = "2019-12-31"
    split_seed: int = 0

    def __post_init__(self) -> None:
        # `units` written as a mapping ({t2m: K}) is kept as sorted (name, unit) pairs: frozen and
        # hashable like every other field, and saved configs read back the same
        u = self.units
        pairs = u.items() if isinstance(u, Mapping) else u if isinstance(u, (list, tuple)) else None
        if pairs is not None:
            object.__setattr__(
                self, "units", tuple(sorted((tuple(p) if isinstance(p, (list, tuple)) else p for p in pairs), key=str))
            )


@dataclass(frozen=True)
class ModelConfig:
    """EA-LSTM (docs/design.md#model)."""

    hidden_size: int = 128
    forget_bias: float = 5.0
    dropout: float = 0.5
    seq_length: int = 365
    predict_last_n: int = 1  # 1: sequence-to-one (the paper)
    # numerics of training (they change the numbers beyond float32 round-off, so they belong to
    # the model, not to `kernel`): the recurrent products' operand type (bfloat16: float32
    # accumulation, parameters and optimizer stay float32) and jax matmul precision ("default" is
    # TF32 on recent NVIDIA GPUs). Inference always runs float32 at "highest" (docs/inference.md).
    dtype: Literal["float32", "bfloat16"] = "float32"
    matmul_precision: Literal["default", "high", "highest"] = "highest"


@dataclass(frozen=True)
class TrainConfig:
    """Ensemble training: members, batches, loss, budget and learning-rate schedule (docs/training.md)."""

    layers: tuple[str, ...] = C.LAYERS
    members: int = 5
    shared_batches: bool = False  # True: every member sees the same batch
    batch_size: int = 256
    # training budget and learning rate (somojax/train/schedule.py, docs/training.md "Training
    # budget"): counted in updates, so the same settings fit worlds of any size; an epoch (a pass
    # over the samples, at most max_updates_per_epoch updates) is only the unit of sampling.
    # "plateau": learning_rate, x lr_decay after lr_patience validations without improvement,
    # down to min_lr; "cosine": learning_rate -> min_lr over max_updates (after warmup_updates);
    # "paper": SoMo.ml's learning_rates by epoch over `epochs` epochs, a validation per epoch
    lr_schedule: Literal["plateau", "cosine", "paper"] = "plateau"
    learning_rate: float = 1e-3
    max_updates: Optional[int] = 50000  # the budget; "paper": None = epochs x updates per epoch
    min_updates: int = 0  # no early stop before this many updates
    validate_every_updates: Optional[int] = 1000  # None: once per epoch ("paper": always)
    patience: Optional[int] = 8  # validations without improvement before stopping; None: never
    min_improvement: float = 1e-3  # relative decrease of the validation loss that counts as one
    lr_decay: float = 0.5  # "plateau"
    lr_patience: int = 3  # "plateau": validations without improvement before the rate decays
    min_lr: float = 1e-5  # "plateau" floor, "cosine" end
    warmup_updates: int = 0  # "cosine"
    epochs: int = 30  # "paper"
    # "paper": the learning rate from the given epoch on (ealstm_regional / SoMo.ml schedule)
    learning_rates: tuple[tuple[int, float], ...] = ((0, 1e-3), (10, 5e-4), (25, 1e-4))
    clip_norm: float = 1.0
    max_updates_per_epoch: Optional[int] = None
    loss: Literal["nse", "mse"] = "nse"
    nse_eps: float = 0.1
    nse_sigma_units: Literal["raw", "normalized"] = "raw"
    keep_checkpoints: int = 3
    checkpoint_every_steps: Optional[int] = None  # besides every validation; None: none
    log_every_steps: int = 50
    seed: int = 0


@dataclass(frozen=True)
class InferConfig:
    """Rollout to the prediction store (docs/inference.md, docs/output.md)."""

    mode: Literal["auto", "exact", "chunked"] = "auto"  # auto: follows model.predict_last_n
    start: str = "2000-01-01"
    end: str = "2019-12-31"
    # land: land cells of the statics in bbox; bbox: every cell of it; cells: those of cells_file
    # (all into the gridded store); points: one time series per point (CF timeSeries NetCDF)
    region: Literal["land", "bbox", "cells", "points"] = "land"
    bbox: tuple[float, float, float, float] = (-60.0, 90.0, -180.0, 180.0)  # S, N, W, E edges
    cells_file: str = ""  # region="cells": CSV with latitude, longitude columns
    # region="points": a CSV (latitude, longitude[, name]) or an ISMN archive (its stations);
    # empty with forcing_tables: the tables' cells
    points_file: str = ""
    # region="points" inputs from SoMo.ml's own tables instead of the stores: a folder of
    # features_<lat>_<lon>.dat and the statics table (global_attri.dat)
    forcing_tables: str = ""
    statics_table: str = ""
    output: str = ""  # prediction store; empty: <workdir>/predictions.zarr
    export_dir: str = ""  # NetCDF export; empty: <workdir>/export
    # ACDD attributes of the exported files: who made them, under which terms
    institution: str = ""  # empty: "unknown (set infer.institution)"
    license: str = "CC-BY-4.0"


@dataclass(frozen=True)
class EvaluateConfig:
    """Cross-validation and skill scores (docs/evaluation.md)."""

    folds: int = 5
    fold_seed: int = 0
    anomaly_window_days: int = 35  # centred window [d-17, d+17]
    anomaly_min_count: int = 10
    quantiles: tuple[float, float] = (0.2, 0.8)
    references: tuple[str, ...] = ()  # gridded products to score: paths (ESA CCI, SoMo.ml, stores)
    output_dir: str = ""  # empty: <workdir>/evaluation
    # score every dataset only on days where all datasets have a value (the paper's robustness check)
    common_days: bool = False


@dataclass(frozen=True)
class BenchConfig:
    """Benchmarks (`somojax bench`, docs/benchmarks.md)."""

    repeats: int = 5
    warmup: int = 2
    batch_size: int = 256
    seq_length: int = 365
    hidden_size: int = 128
    rollout_days: int = 7305  # one cell x 2000-2019
    output_dir: str = "benchmarks/results"


# Everything above says what is computed; the two sections below only say how fast, in how much
# memory and in which pieces. Changing them leaves every number the same (to float32 round-off,
# where sums are reordered) and leaves checkpoints, stores and resumption valid.
@dataclass(frozen=True)
class KernelConfig:
    """How the EA-LSTM recurrence runs, for training and inference (`somojax.models.kernel`)."""

    # x_t W_ih + b for all days in one product before the loop ("yes") or inside each step ("no");
    # auto: inside on the CPU (less memory traffic per step), before elsewhere
    hoist: Literal["auto", "yes", "no"] = "auto"
    # training gradients: "custom" = the hand-written backward pass (somojax/models/recurrence.py),
    # "autodiff" = jax.grad through lax.scan (uses remat and unroll); auto = custom
    backward: Literal["auto", "autodiff", "custom"] = "auto"
    remat: bool = True  # autodiff: recompute each step in the backward pass (less memory)
    unroll: int = 1  # lax.scan unroll factor
    # how one training step runs the members: "stacked" (one recurrence loop over all members;
    # needs the custom backward), "vmap" (batched ops over the member axis), "loop" (one
    # independent chain per member in the same graph); auto: stacked for several members with
    # the custom backward, loop for one or with the batch split over CPU devices (docs/training.md)
    ensemble_mode: Literal["auto", "vmap", "loop", "stacked"] = "auto"
    # exact inference: cells x windows stepped together (cache blocking); 0: 196608 // H
    rows_per_step: int = 0


@dataclass(frozen=True)
class LayoutConfig:
    """Devices, memory per pass, and the pieces of the stores (docs/scaling.md, docs/stores.md)."""

    # JAX CPU devices of a `somojax` command (one per core: the batch is split over the cores,
    # somojax/utils/devices.py); 0: the usable cores (the largest count dividing train.batch_size);
    # 1: one device whose products use all cores. A count in XLA_FLAGS wins. No effect on GPUs/TPUs.
    cpu_devices: int = 0
    # training mesh (`member`, `data`): devices on the member axis; 0: as many as divide the members
    mesh_member_size: int = 0
    # inference passes: most cells and output days per device pass, and the host+device memory
    # one pass may take (passes shrink to fit)
    tile_cells: int = 2048
    time_block_days: int = 1800  # a multiple of shard_time
    memory_budget_gb: float = 4.0
    # predictions.zarr (Zarr v3): shards are the unit of writing (a tile = shard_lat x shard_lon
    # cells, a time block = a multiple of shard_time days); inner chunks are the unit of reading
    shard_time: int = 360
    shard_lat: int = 60
    shard_lon: int = 60
    chunk_time: int = 30
    chunk_lat: int = 30
    chunk_lon: int = 30
    # forcings.zarr chunks: days x cells x cells
    forcing_chunk_days: int = 1461
    forcing_chunk_cells: int = 24


@dataclass(frozen=True)
class Config:
    """A whole somojax run."""

    name: str = "paper"
    workdir: str = "runs/{name}"  # every output of the run lives here
    seed: int = 0
    synth: SynthConfig = field(default_factory=SynthConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    kernel: KernelConfig = field(default_factory=KernelConfig)
    layout: LayoutConfig = field(default_factory=LayoutConfig)

    # --- derived paths ----------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        """The run's working directory."""
        return Path(self.workdir.format(name=self.name))

    @property
    def raw_dir(self) -> Path:
        """Where `somojax synth` writes the raw files of the synthetic Earth."""
        return self.run_dir / "raw"

    @property
    def store_dir(self) -> Path:
        """Where `somojax prepare` writes the analysis-ready stores."""
        return Path(self.data.store_dir) if self.data.store_dir else self.run_dir / "stores"

    @property
    def checkpoint_dir(self) -> Path:
        """Where training writes one checkpoint directory per layer."""
        return self.run_dir / "checkpoints"

    @property
    def predictions_path(self) -> Path:
        return Path(self.infer.output) if self.infer.output else self.run_dir / C.PREDICTIONS_STORE

    @property
    def export_dir(self) -> Path:
        return Path(self.infer.export_dir) if self.infer.export_dir else self.run_dir / "export"

    @property
    def evaluation_dir(self) -> Path:
        return Path(self.evaluate.output_dir) if self.evaluate.output_dir else self.run_dir / "evaluation"


SECTIONS: dict[str, type] = {
    "synth": SynthConfig,
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "infer": InferConfig,
    "evaluate": EvaluateConfig,
    "bench": BenchConfig,
    "kernel": KernelConfig,
    "layout": LayoutConfig,
}

# Keys that moved to `kernel` and `layout` (performance and layout apart from the science). A
# config file, a command-line override or a checkpoint's saved settings may still use the old
# name: it is read as the new one, with a warning that names both (`_moved`).
MOVED: dict[str, str] = {
    "cpu_devices": "layout.cpu_devices",
    "model.hoist": "kernel.hoist",
    "model.backward": "kernel.backward",
    "model.remat": "kernel.remat",
    "model.unroll": "kernel.unroll",
    "train.ensemble_mode": "kernel.ensemble_mode",
    "train.mesh_member_size": "layout.mesh_member_size",
    "infer.hoist": "kernel.hoist",
    "infer.rows_per_step": "kernel.rows_per_step",
    "data.chunk_days": "layout.forcing_chunk_days",
    "data.chunk_cells": "layout.forcing_chunk_cells",
    **{f"infer.{k}": f"layout.{k}" for k in ("tile_cells", "time_block_days", "memory_budget_gb")},
    **{f"infer.{a}_{d}": f"layout.{a}_{d}" for a in ("shard", "chunk") for d in ("time", "lat", "lon")},
}


def _moved(raw: Mapping, where: str) -> dict:
    """`raw` (a config tree as written) with the keys of `MOVED` under their new names.

    Each old key read is logged once with its new name; two spellings of one key with different
    values (`model.hoist: yes`, `infer.hoist: no`) are an error.
    """
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
    for old, new in MOVED.items():
        o_sec, _, o_key = old.rpartition(".")
        holder = out.get(o_sec) if o_sec else out
        if not isinstance(holder, dict) or o_key not in holder:
            continue
        value = holder.pop(o_key)
        if o_sec and not holder:
            del out[o_sec]
        n_sec, n_key = new.split(".")
        target = out.setdefault(n_sec, {})
        if not isinstance(target, dict):
            continue  # a malformed section: _check_keys names it
        if n_key in target and target[n_key] != value:
            raise ConfigError(
                f"{where} sets {new} twice with different values ({old}={value!r}, and {target[n_key]!r})"
            )
        target[n_key] = value
        log.warning("%s: %s is now %s (read as that; rename it to silence this)", where, old, new)
    return out


# ----------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------
def configs_dir() -> Path:
    """The folder of shipped configs (`$SOMOJAX_CONFIGS`, else `configs/` of the source tree)."""
    env = os.environ.get("SOMOJAX_CONFIGS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "configs"


def available_configs() -> list[str]:
    d = configs_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def resolve_config_path(name_or_path: str | os.PathLike) -> Path:
    """A config name (`demo`) or a path (`my.yaml`) to an existing file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist")
        return p
    cand = configs_dir() / f"{name_or_path}.yaml"
    if cand.exists():
        return cand
    raise ConfigError(
        f"unknown config {str(name_or_path)!r}: no such file and not one of the shipped configs "
        f"{available_configs()} in {configs_dir()}"
    )


def load_config(name_or_path: str | os.PathLike = "paper", overrides: Sequence[str] = ()) -> Config:
    """Loads a config file (following `base:`), applies `section.key=value` overrides.

    Args:
      name_or_path: a shipped config name (`paper`, `demo`, `tiny`) or a YAML path.
      overrides: command-line overrides such as `train.members=3`.

    Returns:
      The resolved, validated `Config`.
    """
    path = resolve_config_path(name_or_path)
    tree = _load_tree(path, seen=())
    cfg = _build(Config, tree, source={})
    cfg = apply_overrides(cfg, overrides)
    check_config(cfg, _sources(tree, overrides))  # value rules: somojax/config_checks.py
    return cfg


class _YamlLoader(yaml.SafeLoader):
    """Safe YAML that keeps dates as written: `2001-02-30` reaches the date rule as text
    instead of failing inside the YAML parser."""


_YamlLoader.add_constructor("tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node))


def _parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_YamlLoader)


def _sources(tree: Mapping, overrides: Sequence[str]) -> dict[str, str]:
    """Where each key's value came from: `config <file>` or `command-line override 'k=v'`."""
    out = {}
    for k, node in tree.items():
        leaves = node.items() if isinstance(node, dict) else [(None, node)]
        for kk, (_, path) in leaves:
            out[f"{k}.{kk}" if kk else k] = f"config {path}"
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        out[MOVED.get(key, key)] = f"command-line override {item!r}"
    return out


def _load_tree(path: Path, seen: tuple[Path, ...]) -> dict:
    """Reads a YAML file and merges it over its `base:` chain; records each key's file."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config {path} includes itself through `base:` ({' -> '.join(map(str, seen))})")
    try:
        raw = _parse_yaml(path.read_text()) or {}
    except (yaml.YAMLError, ValueError) as e:  # ValueError: not text (UnicodeDecodeError)
        raise ConfigError(f"config {path} is not valid YAML: {e}") from None
    except OSError as e:  # a directory, no permission
        raise ConfigError(f"config {path} cannot be read: {e.strerror or e}; give a YAML file") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping of sections, got {type(raw).__name__}")
    base = raw.pop("base", None)
    raw = _moved(raw, f"config {path}")
    tree: dict = {}
    if base:
        base_path = Path(base)
        if not base_path.is_absolute() and not base_path.suffix:
            base_path = resolve_config_path(base)
        elif not base_path.is_absolute():
            base_path = path.parent / base_path
        tree = _load_tree(base_path, seen + (path,))
    _check_keys(raw, path)
    return _merge(tree, _annotate(raw, path))


def _annotate(raw: dict, path: Path) -> dict:
    """Wraps leaves as (value, file) so that type errors can name the file."""
    out: dict = {}
    for k, v in raw.items():
        if k in SECTIONS and isinstance(v, dict):
            out[k] = {kk: (vv, path) for kk, vv in v.items()}
        else:
            out[k] = (v, path)
    return out


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _unknown(key: str, known: Sequence[str], where: str) -> ConfigError:
    hint = difflib.get_close_matches(key, known, n=1)
    msg = f"unknown key {key!r} in {where}"
    if hint:
        msg += f"; did you mean {hint[0]!r}?"
    else:
        msg += f"; known keys: {', '.join(known)}"
    return ConfigError(msg)


def _check_keys(raw: dict, path: Path) -> None:
    top = [n for n in _field_names(Config)]
    for k, v in raw.items():
        if k not in top:
            raise _unknown(k, top + ["base"], f"config {path}")
        if k in SECTIONS:
            if not isinstance(v, dict):
                raise ConfigError(f"section {k!r} in config {path} must be a mapping, got {v!r}")
            known = _field_names(SECTIONS[k])
            for kk in v:
                if kk not in known:
                    raise _unknown(f"{k}.{kk}", [f"{k}.{n}" for n in known], f"config {path}")


def _build(cls: type, tree: Mapping, source: Mapping) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in tree:
            continue
        node = tree[f.name]
        if f.name in SECTIONS and cls is Config:
            kwargs[f.name] = _build(SECTIONS[f.name], node, source)
            continue
        value, path = node
        kwargs[f.name] = coerce(value, hints[f.name], f"{cls.__name__}.{f.name}", path)
    return cls(**kwargs)


def coerce(value: Any, tp: Any, name: str, path: Any = None) -> Any:
    """Checks `value` against the type hint `tp`, converting lists to tuples and ints to floats."""
    where = f" (in {path})" if path else ""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, name, path)
            except ConfigError:
                pass
        raise ConfigError(f"{name}={value!r}{where}: expected {_tname(tp)}")
    if origin is Literal:
        if isinstance(value, bool) and {"yes", "no"} <= set(args):
            value = "yes" if value else "no"  # YAML 1.1 reads an unquoted yes/no as a boolean
        if value in args:
            return value
        raise ConfigError(f"{name}={value!r}{where}: must be one of {', '.join(map(repr, args))}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}={value!r}{where}: expected a list ({_tname(tp)})")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], name, path) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{name}={value!r}{where}: expected {len(args)} values ({_tname(tp)})")
        return tuple(coerce(v, a, name, path) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}={value!r}{where}: expected true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{name}={value!r}{where}: expected an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-3 (no dot) as text
        raise ConfigError(f"{name}={value!r}{where}: expected a number")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, datetime.date):  # YAML reads 2000-01-01 as a date
            return value.isoformat()
        raise ConfigError(f"{name}={value!r}{where}: expected a string")
    raise ConfigError(f"{name}: unsupported type {tp!r}")  # pragma: no cover - a programming error


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _tname(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def apply_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    """Applies `section.key=value` (or top-level `key=value`) overrides."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, text = item.split("=", 1)
        try:
            value = _parse_yaml(text) if text != "" else ""
        except (yaml.YAMLError, ValueError) as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {e}") from None
        where = "command-line override"
        key = MOVED.get(key.strip(), key.strip())
        if key != item.split("=", 1)[0].strip():
            log.warning("%s %r: %s is now %s (read as that)", where, item, item.split("=", 1)[0].strip(), key)
        parts = key.split(".")
        if len(parts) == 1:
            names = [n for n in _field_names(Config) if n not in SECTIONS]
            if parts[0] not in names:
                raise _unknown(parts[0], names, where)
            hint = typing.get_type_hints(Config)[parts[0]]
            cfg = dataclasses.replace(cfg, **{parts[0]: coerce(value, hint, f"Config.{parts[0]}", where)})
        elif len(parts) == 2 and parts[0] in SECTIONS:
            cls = SECTIONS[parts[0]]
            names = _field_names(cls)
            if parts[1] not in names:
                raise _unknown(key, [f"{parts[0]}.{n}" for n in names], where)
            hint = typing.get_type_hints(cls)[parts[1]]
            section = getattr(cfg, parts[0])
            section = dataclasses.replace(section, **{parts[1]: coerce(value, hint, key, where)})
            cfg = dataclasses.replace(cfg, **{parts[0]: section})
        else:
            raise _unknown(key, list(SECTIONS), where)
    return cfg


# ----------------------------------------------------------------------------------------
# saving
# ----------------------------------------------------------------------------------------
def to_dict(cfg: Config) -> dict:
    """The config as plain YAML/JSON-able data (tuples become lists)."""

    def plain(x):
        if dataclasses.is_dataclass(x):
            return {f.name: plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
        if isinstance(x, (tuple, list)):
            return [plain(v) for v in x]
        return x

    return plain(cfg)


def from_dict(d: Mapping, source: str = "saved config") -> Config:
    """Rebuilds a `Config` from `to_dict` output (e.g. the copy stored in a checkpoint)."""
    d = _moved(d, source)
    _check_keys(d, Path(source))
    tree = _annotate(d, Path(source))
    return _build(Config, tree, source={})


def save_config(cfg: Config, path: str | os.PathLike) -> Path:
    """Writes the resolved config as YAML (atomically) and returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("# resolved somojax configuration\n" + yaml.safe_dump(to_dict(cfg), sort_keys=False))
    tmp.replace(path)
    return path
