# shellcheck shell=bash
# Sourced by launch/tpu/*.sh: runs one command on every worker (host) of a Cloud TPU VM slice.
# SOMOJAX_DRY_RUN=1 prints the gcloud command line instead (launch/render.py).
#
# Each worker needs the checkout at $REMOTE_DIR with .venv holding somojax[tpu], and the run's
# workdir (stores, checkpoints, prediction store) on storage every worker sees (a Filestore or
# gcsfuse mount): all workers read the same stores and write one checkpoint / one store.
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
on_all_workers() {
  # SOMOJAX_DISTRIBUTED=auto: jax.distributed.initialize() finds the slice's workers itself
  local remote="cd $REMOTE_DIR && . .venv/bin/activate && SOMOJAX_DISTRIBUTED=auto $1"
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --project="$PROJECT" --zone="$ZONE" --worker=all --command="$remote"
}
