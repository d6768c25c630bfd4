#!/usr/bin/env bash
# somojax train on a Cloud TPU VM pod slice: the same command on every worker; JAX forms one
# job over all chips and the ensemble's (member, data) mesh spans them.
#
# Edit two places: (1) PROJECT, ZONE, TPU_NAME, (2) CONFIG (or pass it: launch/tpu/train.sh CONFIG).
# Run it where gcloud is set up (in tmux: the job lives as long as the ssh sessions).
# A preempted or stopped run resumes from its last checkpoint when this script runs again.
# launch/render.py tpu --job train prints the gcloud line without running it.
set -euo pipefail
PROJECT=${PROJECT:-my-project}        # (1) Google Cloud project,
ZONE=${ZONE:-us-central2-b}           #     zone
TPU_NAME=${TPU_NAME:-somojax-v4-32}   #     and TPU VM name
REMOTE_DIR=${REMOTE_DIR:-somojax}     # the checkout on every worker (relative to the home directory)
CONFIG=${1:-configs/paper.yaml}       # (2) the config: a shipped name or a YAML path

# shellcheck source=launch/tpu/_common.sh
. "$(dirname "$0")/_common.sh"
on_all_workers "somojax train -c $(printf '%q' "$CONFIG")"
