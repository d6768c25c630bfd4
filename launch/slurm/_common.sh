# shellcheck shell=bash
# Sourced by launch/slurm/*.sbatch inside the job: the environment and the `run` helper.
# SOMOJAX_DRY_RUN=1 makes `run` print each command line instead of running it (launch/render.py
# uses that to show the exact commands a script runs, without a cluster).
# SOMOJAX_VENV: the virtual environment with somojax (default: .venv of the checkout).
run() {
  if [ -n "${SOMOJAX_DRY_RUN:-}" ]; then
    local a out=()
    for a in "$@"; do  # quoted like Python's shlex.quote
      if [[ $a =~ ^[A-Za-z0-9_./=:@%+,-]+$ ]]; then out+=("$a"); else out+=("'${a//\'/\'\"\'\"\'}'"); fi
    done
    echo "${out[*]}"
  else
    "$@"
  fi
}
# `run_bg`: the same, in the background (printed in order in a dry run)
run_bg() {
  if [ -n "${SOMOJAX_DRY_RUN:-}" ]; then
    run "$@"
  else
    "$@" &
  fi
}
cd "${SLURM_SUBMIT_DIR:-.}" || exit 1
if [ -z "${SOMOJAX_DRY_RUN:-}" ]; then
  # shellcheck disable=SC1091
  . "${SOMOJAX_VENV:-.venv}/bin/activate"
fi
# A step that ended by SIGTERM (exit 143: SLURM's notice before the time limit, or a
# preemption) has written its checkpoint or finished tiles; the job is put back in the queue
# and the same command resumes it. Any other failure ends the job.
requeue_if_stopped() {
  local rc=$1
  if [ "$rc" -eq 143 ] && [ -n "${SLURM_JOB_ID:-}" ]; then
    echo "somojax: stopped by SIGTERM before the time limit; requeueing job $SLURM_JOB_ID to resume"
    run scontrol requeue "$SLURM_JOB_ID"
    exit 0
  fi
  exit "$rc"
}
