#!/usr/bin/env bash
# One device call: GPU correctness checks, then the benchmark suite on the GPU.
#   here:   benchmarks/gpu/fetch_wheels.sh
#   device: run(command="bash benchmarks/gpu/run.sh", carry=[".whl"], timeout_s=540)
# Results (JSON, logs) go to $OUT (or benchmarks/results when $OUT is unset); commit the JSON.
# Each stage has its own time limit so that a slow one cannot take the whole lease.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ! python3 -c "import grain, zarr, dask" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
CONFIG="${SOMOJAX_GPU_CONFIG:-paper}"
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import jax, sys; print('python', sys.version.split()[0], 'jax', jax.__version__, jax.devices())"
} 2>&1 | tee "$OUT/gpu-env.txt"

# 1. correctness on this device: the numerics tests against NumPy float64 (no fake CPU devices)
timeout 240 python3 -m pytest -q -p no:cacheprovider -m "not slow" \
  tests/test_ealstm.py tests/test_train_recurrence.py tests/test_train_ensemble_modes.py tests/test_train_losses.py \
  2>&1 | tee "$OUT/gpu-tests.log" | tail -5
tests_rc=${PIPESTATUS[0]}

# 2. the suite: floor, training step (1 and 5 members, PyTorch peer on the same GPU), exact and
# chunked rollout with the full-product extrapolation, forward pass
timeout 420 python3 -m somojax bench -c "$CONFIG" --only floor train rollout forward bench.output_dir="$OUT" \
  2>&1 | tee "$OUT/gpu-bench.log" | grep -E '^\||ratios|written' | tail -40
bench_rc=${PIPESTATUS[0]}
echo "tests rc=$tests_rc bench rc=$bench_rc"
[ "$tests_rc" = 0 ] && [ "$bench_rc" = 0 ]
