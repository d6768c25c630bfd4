#!/usr/bin/env bash
# somojax predict on a Cloud TPU VM pod slice: every worker rolls out its share of the tiles
# (tile t on worker t % n) into one prediction store; running it again after a preemption
# computes only the (tile, time block) pairs not yet finished.
#
# Edit two places: (1) PROJECT, ZONE, TPU_NAME, (2) CONFIG (or pass it: launch/tpu/predict.sh CONFIG).
# launch/render.py tpu --job predict prints the gcloud line without running it.
set -euo pipefail
PROJECT=${PROJECT:-my-project}        # (1) Google Cloud project,
ZONE=${ZONE:-us-central2-b}           #     zone
TPU_NAME=${TPU_NAME:-somojax-v4-32}   #     and TPU VM name
REMOTE_DIR=${REMOTE_DIR:-somojax}     # the checkout on every worker (relative to the home directory)
CONFIG=${1:-configs/paper.yaml}       # (2) the config: a shipped name or a YAML path

# shellcheck source=launch/tpu/_common.sh
. "$(dirname "$0")/_common.sh"
on_all_workers "somojax predict -c $(printf '%q' "$CONFIG")"
