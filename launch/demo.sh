#!/usr/bin/env bash
# The main job on the embedded default: sets up ./.venv on first use, then runs
# `somojax run --config demo` (synthetic Earth -> prepare -> train -> predict -> evaluate).
# Extra arguments are passed on, e.g.:  launch/demo.sh train.members=5
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/_env.sh
exec somojax run --config demo "$@"
