#!/usr/bin/env bash
# Downloads the wheels of benchmarks/gpu/wheels.txt for the GPU machine (Python 3.12, x86-64)
# into .whl/ at the repository root (ignored by git). Run here, where the package index is
# reachable; the device call then carries .whl (docs/benchmarks.md "On a GPU").
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
grep -v '^#' benchmarks/gpu/wheels.txt | grep . | while read -r req; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$req"
done
ls -la .whl
du -sh .whl
