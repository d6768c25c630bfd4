"""`somojax run`: every stage in order, each skipped when its outputs are complete and current.

synth (synthetic source only) -> prepare -> train (all layers, cascade) -> predict -> export ->
evaluate. A stage is re-run when the config sections it depends on changed since it last
finished (a fingerprint in `<run>/stages/<stage>.json`); training and prediction additionally
resume from their own checkpoints / finished tiles when they were interrupted (the marker
records the start of a stage after its old outputs were discarded, and its end).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable

from somojax.config import Config, to_dict
from somojax.utils import signals
from somojax.utils.logging import format_seconds, get_logger

log = get_logger("run")

# config sections each stage's outputs depend on (a change re-runs the stage and the ones after)
STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "synth": ("synth",),
    "prepare": ("synth", "data"),
    "train": ("synth", "data", "model", "train"),
    "predict": ("synth", "data", "model", "train", "infer"),
    "export": ("synth", "data", "model", "train", "infer"),
    "evaluate": ("synth", "data", "model", "train", "infer", "evaluate"),
}


def fingerprint(cfg: Config, stage: str) -> str:
    """Hash of the config sections `stage` depends on."""
    d = to_dict(cfg)
    sub = {k: d[k] for k in STAGE_INPUTS[stage]}
    return hashlib.sha256(json.dumps(sub, sort_keys=True).encode()).hexdigest()[:16]


def _marker(cfg: Config, stage: str) -> Path:
    return cfg.run_dir / "stages" / f"{stage}.json"


def _read_marker(cfg: Config, stage: str) -> dict | None:
    m = _marker(cfg, stage)
    if not m.exists():
        return None
    try:
        return json.loads(m.read_text())
    except ValueError:
        return None


def is_current(cfg: Config, stage: str) -> bool:
    """Whether `stage` finished with the current config."""
    rec = _read_marker(cfg, stage)
    return rec is not None and rec.get("finished") is not None and rec.get("fingerprint") == fingerprint(cfg, stage)


def is_resumable(cfg: Config, stage: str) -> bool:
    """Whether `stage` was started with the current config (after its old outputs were
    discarded) and did not finish: its own checkpoints / finished tiles resume it."""
    rec = _read_marker(cfg, stage)
    return rec is not None and rec.get("finished") is None and rec.get("fingerprint") == fingerprint(cfg, stage)


def _write_marker(cfg: Config, stage: str, rec: dict) -> None:
    m = _marker(cfg, stage)
    m.parent.mkdir(parents=True, exist_ok=True)
    tmp = m.with_suffix(".tmp")
    tmp.write_text(json.dumps({"fingerprint": fingerprint(cfg, stage), **rec}))
    tmp.replace(m)


def mark_started(cfg: Config, stage: str) -> None:
    _write_marker(cfg, stage, {"started": time.time()})


def mark_done(cfg: Config, stage: str, seconds: float) -> None:
    _write_marker(cfg, stage, {"seconds": round(seconds, 2), "finished": time.time()})


def discard_outputs(cfg: Config, stage: str) -> None:
    """Removes what an earlier run of `stage` left that its resume would pick up (train: every
    layer's checkpoints; predict: the prediction store), each part renamed away atomically."""
    from somojax import constants as C
    from somojax.checkpoint import discard_checkpoints

    if stage == "train":
        for layer in C.LAYERS:
            if (cfg.checkpoint_dir / layer).is_dir():
                discard_checkpoints(cfg.checkpoint_dir / layer)
    elif stage == "predict":
        import shutil
        import uuid

        from somojax.infer.store import progress_dir

        path = cfg.predictions_path
        for p in (progress_dir(path), path):  # the finished-tile records first
            if p.exists():
                gone = p.with_name(f".{p.name}.discarded-{uuid.uuid4().hex[:8]}")
                p.rename(gone)
                shutil.rmtree(gone, ignore_errors=True)


def stages(cfg: Config) -> list[tuple[str, Callable[[Config], object]]]:
    """The stages of a run, in order, as (name, function of the config). Each resumes what an
    interrupted run of it left (`run` discards the outputs first when it must start over)."""
    from somojax.evaluate import evaluate
    from somojax.infer import export, predict
    from somojax.prepare import prepare
    from somojax.train import train

    out: list[tuple[str, Callable[[Config], object]]] = []
    if cfg.data.source == "synthetic":
        from somojax.synth import generate

        out.append(("synth", generate))
    out += [("prepare", prepare), ("train", train), ("predict", predict), ("export", export), ("evaluate", evaluate)]
    return out


def run(cfg: Config) -> dict[str, float]:
    """Runs every stage that is not current; returns the wall time of each stage run [s]."""
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    upstream_ran = False  # once a stage re-runs, every later stage re-runs, from scratch
    for name, fn in stages(cfg):
        if not upstream_ran and is_current(cfg, name):
            log.info("[%s] up to date, skipped (delete %s to force)", name, _marker(cfg, name))
            continue
        # Resume an interrupted stage (started with these inputs, not finished); start over when
        # its inputs changed: an upstream stage re-ran, or its own config sections differ. Its old
        # outputs are discarded before the stage is marked started, so a stop at any moment
        # leaves either "start over" or "resume" for the next run, never a mix.
        fresh = upstream_ran or (_marker(cfg, name).exists() and not is_resumable(cfg, name))
        upstream_ran = True
        log.info(
            "[%s] %s", name, "starting from scratch" if fresh else "resuming" if is_resumable(cfg, name) else "starting"
        )
        if fresh:
            with signals.deferred():  # a Ctrl-C waits for the renames
                discard_outputs(cfg, name)
        mark_started(cfg, name)
        t0 = time.perf_counter()
        fn(cfg)
        timings[name] = time.perf_counter() - t0
        mark_done(cfg, name, timings[name])
        log.info("[%s] done in %s", name, format_seconds(timings[name]))
    total = time.perf_counter() - t_all
    log.info(
        "run %s finished in %s (%s); outputs in %s",
        cfg.name,
        format_seconds(total),
        ", ".join(f"{k} {format_seconds(v)}" for k, v in timings.items()) or "nothing to do",
        cfg.run_dir,
    )
    summary = cfg.run_dir / "run_summary.json"
    summary.write_text(json.dumps({"stage_seconds": timings, "total_seconds": total}, indent=1))
    return timings
