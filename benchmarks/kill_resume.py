"""Kill `somojax train` and `somojax predict` at random moments, resume, compare bitwise.

On the tiny config (the real CLI in subprocesses): one uninterrupted `train` and `predict` are
the reference; then each command is started again and again in a fresh copy of the stores,
stopped at a random moment with SIGKILL, SIGINT or SIGTERM (mixed), and restarted with the same
command until it completes; when a copy completes it is compared with the reference and a new
copy starts, until `--kills` stops have landed on each command.

Compared bitwise: for train, per layer the params of the latest and of the best checkpoint and
metrics.jsonl (without its wall-clock fields `time`, `train/steps_per_s`, `train/samples_per_s`);
for predict, every array of the prediction store (`sm`, `sm_spread`). Checked on every stop:
SIGINT/SIGTERM exit with 130/143 (or 0 when the command had already finished) and print no
traceback.

    python benchmarks/kill_resume.py                    # 20 stops on each command
    python benchmarks/kill_resume.py --kills 3 --only train

Writes benchmarks/results/kill_resume-<machine>.json (counts, failures, the command).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# more updates, validations, checkpoints and log records than tiny's defaults, so that stops land
# between them, and a plateau rate that decays during the run (lr_patience 1; a validation counts
# as an improvement only when it lowers the best loss by 30%)
TRAIN_OVERRIDES = [
    "train.max_updates=24",
    "train.validate_every_updates=6",
    "train.checkpoint_every_steps=4",
    "train.log_every_steps=3",
    "train.keep_checkpoints=2",
    "train.lr_patience=1",
    "train.min_improvement=0.3",
]
TIMING_KEYS = ("time", "train/steps_per_s", "train/samples_per_s")
SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}


def somojax(args: list[str], env: dict) -> list[str]:
    """The `somojax` console script beside this Python (else `python -m somojax.cli`)."""
    exe = Path(sys.executable).parent / "somojax"
    return [str(exe), *args] if exe.exists() else [sys.executable, "-m", "somojax.cli", *args]


def run(args: list[str], env: dict, log) -> float:
    """Runs a somojax command to completion; returns its wall time."""
    t0 = time.perf_counter()
    out = subprocess.run(somojax(args, env), env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"somojax {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    log(f"  somojax {' '.join(args[:1])}: {time.perf_counter() - t0:.1f} s")
    return time.perf_counter() - t0


def stop_at(args: list[str], env: dict, after: float, sig: int, timeout: float = 300.0) -> tuple[int, str]:
    """Starts a command, sends `sig` after `after` seconds (if still running); (rc, stderr)."""
    p = subprocess.Popen(somojax(args, env), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        p.wait(timeout=after)
    except subprocess.TimeoutExpired:
        p.send_signal(sig)
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
        return -999, err + "\n[did not stop within the timeout]"
    return p.returncode, err


def train_copy_of(base: Path, work: Path) -> Path:
    shutil.copytree(base, work)
    return work


def train_result(work: Path) -> dict:
    from somojax.checkpoint import load_bundle
    from somojax.utils.logging import read_metrics

    out = {}
    for layer_dir in sorted((work / "checkpoints").iterdir()):
        layer = layer_dir.name
        metrics = [
            {k: v for k, v in r.items() if k not in TIMING_KEYS}
            for r in read_metrics(work / "metrics" / layer / "metrics.jsonl")
        ]
        out[layer] = {
            "best": load_bundle(layer_dir, which="best").params,
            "latest": load_bundle(layer_dir, which="latest").params,
            "metrics": metrics,
        }
    return out


def predict_result(work: Path) -> dict:
    import zarr

    g = zarr.open_group(str(work / "predictions.zarr"), mode="r")
    return {name: np.asarray(a[...]) for name, a in g.arrays()}


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fc":
        return a.tobytes() == b.tobytes()
    return bool(np.array_equal(a, b))


def compare_train(ref: dict, got: dict) -> list[str]:
    bad = []
    if sorted(ref) != sorted(got):
        return [f"layers {sorted(got)} != {sorted(ref)}"]
    for layer in ref:
        for which in ("best", "latest"):
            for k in ref[layer][which]:
                if not same_bits(ref[layer][which][k], got[layer][which][k]):
                    bad.append(f"{layer} {which} {k} differs")
        if ref[layer]["metrics"] != got[layer]["metrics"]:
            steps = [r["step"] for r in got[layer]["metrics"]]
            bad.append(f"{layer} metrics.jsonl differs (steps {steps[:40]})")
    return bad


def compare_predict(ref: dict, got: dict) -> list[str]:
    if sorted(ref) != sorted(got):
        return [f"arrays {sorted(got)} != {sorted(ref)}"]
    return [f"{k} differs" for k in ref if not same_bits(ref[k], got[k])]


def stop_campaign(
    name: str,
    cmd: list[str],
    fresh_copy,
    result,
    compare,
    ref,
    t_ref: float,
    kills: int,
    rng: random.Random,
    env: dict,
    log,
) -> dict:
    """Stops `cmd` at random moments until `kills` stops have landed; compares every completed copy."""
    stops, copies, failures, by_signal, restarts = 0, 0, [], {s: 0 for s in SIGNALS}, 0
    while stops < kills:
        work = fresh_copy(copies)
        copies += 1
        while True:
            restarts += 1
            sname = rng.choice(list(SIGNALS))
            after = rng.uniform(0.2, 0.9 * t_ref)
            rc, err = stop_at(cmd + [f"workdir={work}"], env, after, SIGNALS[sname])
            if rc == 0:  # completed before the signal
                break
            stops += 1
            by_signal[sname] += 1
            want = {"SIGKILL": -signal.SIGKILL, "SIGINT": 130, "SIGTERM": 143}[sname]
            if rc != want:
                failures.append(
                    f"{name} copy {copies}: {sname} after {after:.2f} s exited {rc}, expected {want}: {err[-1500:]}"
                )
            if "Traceback" in err:
                failures.append(f"{name} copy {copies}: {sname} after {after:.2f} s printed a traceback: {err[-3000:]}")
            if sname != "SIGKILL" and rc == want and "To resume, run the same command again" not in err:
                failures.append(f"{name} copy {copies}: {sname} gave no resume message: {err[-800:]}")
            log(f"  {name} copy {copies}: {sname} after {after:.2f} s -> exit {rc} ({stops}/{kills})")
            if stops >= kills:
                break
        run(cmd + [f"workdir={work}"], env, log)  # finish it (a no-op when it has)
        diff = compare(ref, result(work))
        if diff:
            failures.append(f"{name} copy {copies}: not bitwise equal to the uninterrupted run: {diff}")
        log(f"  {name} copy {copies}: {'bitwise equal' if not diff else 'DIFFERENT: ' + '; '.join(diff)}")
        shutil.rmtree(work, ignore_errors=True)
    return {
        "stops": stops,
        "by_signal": by_signal,
        "processes": restarts,
        "copies_compared": copies,
        "failures": failures,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=20, help="stops per command (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=["train", "predict"], default=None)
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one, deleted)")
    p.add_argument(
        "--out", default=None, help="JSON result (default benchmarks/results/kill_resume-<machine>.json; '-' for none)"
    )
    a = p.parse_args(argv)
    rng = random.Random(a.seed)
    root = Path(a.workdir or tempfile.mkdtemp(prefix="somojax-kill-"))
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("SOMOJAX_FAULT", None)

    def log(msg: str) -> None:
        print(msg, flush=True)

    t_all = time.perf_counter()
    base, ref = root / "base", root / "ref"
    log(f"kill_resume: tiny config, {a.kills} stops per command, seed {a.seed}, in {root}")
    run(["synth", "-c", "tiny", f"workdir={base}"], env, log)
    run(["prepare", "-c", "tiny", f"workdir={base}"], env, log)
    shutil.copytree(base, ref)
    train_cmd = ["train", "-c", "tiny", *TRAIN_OVERRIDES]
    predict_cmd = ["predict", "-c", "tiny", *TRAIN_OVERRIDES]  # the same config: the checkpoints match
    run(train_cmd + [f"workdir={ref}"], env, log)
    run(predict_cmd + [f"workdir={ref}"], env, log)
    # a second uninterrupted run: the same bits (the baseline of every comparison), and the
    # duration of a run with a warm compilation cache, which the stop moments are drawn from
    again = train_copy_of(base, root / "ref2")
    t_train = run(train_cmd + [f"workdir={again}"], env, log)
    t_pred = run(predict_cmd + [f"workdir={again}"], env, log)
    baseline = compare_train(train_result(ref), train_result(again)) + compare_predict(
        predict_result(ref), predict_result(again)
    )
    if baseline:
        raise RuntimeError(f"two uninterrupted runs differ: {baseline}")
    shutil.rmtree(again)
    result: dict = {
        "command": "python benchmarks/kill_resume.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "config": "tiny " + " ".join(TRAIN_OVERRIDES),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "reference_seconds": {"train": round(t_train, 1), "predict": round(t_pred, 1)},
    }

    def train_copy(i: int) -> Path:
        return train_copy_of(base, root / f"train-{i}")

    def predict_copy(i: int) -> Path:
        w = root / f"predict-{i}"
        shutil.copytree(base, w)
        shutil.copytree(ref / "checkpoints", w / "checkpoints")
        return w

    if a.only in (None, "train"):
        result["train"] = stop_campaign(
            "train",
            train_cmd,
            train_copy,
            train_result,
            compare_train,
            train_result(ref),
            t_train,
            a.kills,
            rng,
            env,
            log,
        )
    if a.only in (None, "predict"):
        result["predict"] = stop_campaign(
            "predict",
            predict_cmd,
            predict_copy,
            predict_result,
            compare_predict,
            predict_result(ref),
            t_pred,
            a.kills,
            rng,
            env,
            log,
        )
    result["seconds"] = round(time.perf_counter() - t_all, 1)
    result["failures"] = sum(len(result[k]["failures"]) for k in ("train", "predict") if k in result)
    for k in ("train", "predict"):
        if k in result:
            r = result[k]
            log(
                f"{k}: {r['stops']} stops {r['by_signal']} over {r['processes']} processes, {r['copies_compared']} copies compared, {len(r['failures'])} failures"
            )
            for f in r["failures"]:
                log("  FAIL " + f[:2000])
    if a.out != "-":
        out = (
            Path(a.out)
            if a.out
            else REPO / "benchmarks" / "results" / f"kill_resume-{platform.machine()}-{os.cpu_count()}c.json"
        )
        out.write_text(json.dumps(result, indent=1) + "\n")
        log(f"wrote {out}")
    if not a.workdir:
        shutil.rmtree(root, ignore_errors=True)
    return result


if __name__ == "__main__":
    sys.exit(1 if main()["failures"] else 0)
