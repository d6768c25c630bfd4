"""Which job a process joins, read from its environment (somojax/utils/distributed.py)."""

from __future__ import annotations

import pytest

from somojax.errors import ConfigError
from somojax.utils.distributed import Job, initialize, job_from_env

EXPLICIT = {"SOMOJAX_COORDINATOR": "127.0.0.1:5555", "SOMOJAX_NUM_PROCESSES": "4", "SOMOJAX_PROCESS_ID": "3"}
SRUN = {
    "SLURM_JOB_ID": "7",
    "SLURM_NTASKS": "8",
    "SLURM_STEP_NUM_TASKS": "8",
    "SLURM_PROCID": "5",
    "SLURM_LOCALID": "1",
}


@pytest.mark.parametrize(
    "env,want",
    [
        ({}, None),
        (EXPLICIT, Job("explicit", "127.0.0.1:5555", 4, 3, "SOMOJAX_COORDINATOR")),
        ({**EXPLICIT, "SOMOJAX_NUM_PROCESSES": "1", "SOMOJAX_PROCESS_ID": "0"}, None),  # a job of one
        ({**EXPLICIT, **SRUN}, Job("explicit", "127.0.0.1:5555", 4, 3, "SOMOJAX_COORDINATOR")),  # explicit wins
        (SRUN, Job("auto", why="SLURM step of 8 tasks")),
        ({**SRUN, "SLURM_STEP_NUM_TASKS": "1"}, None),  # `somojax` run by the batch script itself, not srun
        ({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}, None),
        ({"OMPI_COMM_WORLD_SIZE": "2"}, Job("auto", why="Open MPI job of 2 ranks")),
        ({"SOMOJAX_DISTRIBUTED": "auto"}, Job("auto", why="SOMOJAX_DISTRIBUTED=auto")),
        ({**SRUN, **EXPLICIT, "SOMOJAX_DISTRIBUTED": "off"}, None),
    ],
)
def test_job_from_env(env, want):
    assert job_from_env(env) == want


@pytest.mark.parametrize(
    "env,needle",
    [
        ({"SOMOJAX_COORDINATOR": "127.0.0.1:5555"}, "SOMOJAX_NUM_PROCESSES, SOMOJAX_PROCESS_ID not"),
        ({**EXPLICIT, "SOMOJAX_NUM_PROCESSES": "four"}, "SOMOJAX_NUM_PROCESSES='four'"),
        ({**EXPLICIT, "SOMOJAX_PROCESS_ID": "4"}, "SOMOJAX_PROCESS_ID=4 must be below SOMOJAX_NUM_PROCESSES=4"),
        ({**EXPLICIT, "SOMOJAX_PROCESS_ID": "-1"}, "SOMOJAX_PROCESS_ID='-1'"),
        ({**EXPLICIT, "SOMOJAX_COORDINATOR": "localhost"}, "expected host:port"),
        ({"SOMOJAX_DISTRIBUTED": "yes"}, "SOMOJAX_DISTRIBUTED='yes'"),
    ],
)
def test_bad_environment_is_one_clear_error(env, needle):
    with pytest.raises(ConfigError, match=None) as e:
        job_from_env(env)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_single_process_starts_nothing():
    import jax

    assert initialize({}) == (0, 1)
    assert not jax.distributed.is_initialized()


def test_a_bad_environment_makes_the_command_exit_2(tmp_path, monkeypatch, capsys):
    from somojax.cli import main

    monkeypatch.setenv("SOMOJAX_COORDINATOR", "127.0.0.1:1")
    monkeypatch.delenv("SOMOJAX_NUM_PROCESSES", raising=False)
    monkeypatch.delenv("SOMOJAX_PROCESS_ID", raising=False)
    assert main(["predict", "-c", "tiny", f"workdir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "somojax predict: error: SOMOJAX_COORDINATOR set but SOMOJAX_NUM_PROCESSES, SOMOJAX_PROCESS_ID not" in err
