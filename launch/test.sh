#!/usr/bin/env bash
# The test suite: sets up ./.venv with the test extra on first use, then runs pytest with
# 8 fake CPU devices (tests/conftest.py). Extra arguments go to pytest, e.g. -m "not slow".
set -euo pipefail
cd "$(dirname "$0")/.."
SOMOJAX_EXTRAS=test source launch/_env.sh
# PyTorch is optional (import-torch, peers). Take a CPU wheel only if one is available without
# downloading (a local wheel house); otherwise the torch tests are skipped.
python -c "import torch" 2>/dev/null || python -m pip install -q --no-index torch==2.13.0 2>/dev/null \
  || echo "==> PyTorch not available offline: tests marked 'torch' will be skipped"
exec python -m pytest "$@"
