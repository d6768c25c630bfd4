"""`somojax run` resumes an interrupted stage and starts over only when its inputs changed."""

from __future__ import annotations

import dataclasses

import pytest

from somojax import pipeline
from somojax.config import load_config
from somojax.utils.signals import Interrupted


def fake_stages(calls, stop_in=None):
    def make(name):
        def fn(cfg):
            calls.append(name)
            if name == "train":
                layer = cfg.checkpoint_dir / "L1"
                (layer / "state").mkdir(parents=True, exist_ok=True)
                (layer / "state" / f"run{len(calls)}").write_text("")  # what this attempt trained
            if name == stop_in:
                raise Interrupted(2)

        return fn

    return lambda cfg: [(n, make(n)) for n in ("synth", "prepare", "train", "predict", "export", "evaluate")]


def test_an_interrupted_stage_resumes_and_a_changed_one_starts_over(tmp_path, monkeypatch):
    cfg = load_config("tiny", [f"workdir={tmp_path}"])
    calls: list[str] = []
    monkeypatch.setattr(pipeline, "stages", fake_stages(calls, stop_in="train"))
    with pytest.raises(Interrupted):
        pipeline.run(cfg)
    assert calls == ["synth", "prepare", "train"] and pipeline.is_resumable(cfg, "train")
    first = sorted(p.name for p in (cfg.checkpoint_dir / "L1" / "state").iterdir())

    calls.clear()
    monkeypatch.setattr(pipeline, "stages", fake_stages(calls))
    pipeline.run(cfg)  # the same config: train resumes (its checkpoints are kept), the rest follow
    assert calls == ["train", "predict", "export", "evaluate"]
    kept = sorted(p.name for p in (cfg.checkpoint_dir / "L1" / "state").iterdir())
    assert set(first) < set(kept) and pipeline.is_current(cfg, "train")

    calls.clear()
    changed = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=cfg.train.seed + 1))
    pipeline.run(changed)  # another training config: the old checkpoints are discarded first
    assert calls == ["train", "predict", "export", "evaluate"]
    assert len(list((cfg.checkpoint_dir / "L1" / "state").iterdir())) == 1
