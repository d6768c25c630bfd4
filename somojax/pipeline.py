"""`somojax run`: every stage in order, each skipped when its outputs are complete and current.

synth (synthetic source only) -> prepare -> train (all layers, cascade) -> predict -> export ->
evaluate. A stage is re-run when the config sections it depends on changed since it last
finished (a fingerprint in `<run>/stages/<stage>.json`); training and prediction additionally
resume from their own checkpoints / finished tiles when they were interrupted.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable

from somojax.config import Config, to_dict
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


def is_current(cfg: Config, stage: str) -> bool:
    """Whether `stage` finished with the current config."""
    m = _marker(cfg, stage)
    if not m.exists():
        return False
    try:
        return json.loads(m.read_text()).get("fingerprint") == fingerprint(cfg, stage)
    except ValueError:
        return False


def mark_done(cfg: Config, stage: str, seconds: float) -> None:
    m = _marker(cfg, stage)
    m.parent.mkdir(parents=True, exist_ok=True)
    tmp = m.with_suffix(".tmp")
    tmp.write_text(json.dumps({"fingerprint": fingerprint(cfg, stage), "seconds": round(seconds, 2), "finished": time.time()}))
    tmp.replace(m)


def stages(cfg: Config) -> list[tuple[str, Callable[[Config, bool], object]]]:
    """The stages of a run, in order, as (name, function of (config, fresh))."""
    from somojax.evaluate import evaluate
    from somojax.infer import export, predict
    from somojax.prepare import prepare
    from somojax.train import train

    out: list[tuple[str, Callable[[Config, bool], object]]] = []
    if cfg.data.source == "synthetic":
        from somojax.synth import generate

        out.append(("synth", lambda c, fresh: generate(c)))
    out += [
        ("prepare", lambda c, fresh: prepare(c)),
        ("train", lambda c, fresh: train(c, layers=None, fresh=fresh)),
        ("predict", lambda c, fresh: predict(c, layers=None, fresh=fresh)),
        ("export", lambda c, fresh: export(c)),
        ("evaluate", lambda c, fresh: evaluate(c)),
    ]
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
        # Resume an interrupted stage (no marker yet, inputs unchanged); start over when its
        # inputs changed: an upstream stage re-ran, or its own config sections differ.
        fresh = upstream_ran or _marker(cfg, name).exists()
        upstream_ran = True
        log.info("[%s] starting%s", name, " from scratch" if fresh else "")
        t0 = time.perf_counter()
        fn(cfg, fresh)
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
