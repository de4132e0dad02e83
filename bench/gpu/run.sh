#!/usr/bin/env bash
# There (a lent GPU machine, via the device tool, with `.whl` carried): the GPU checks of
# issue 6 as one prepared run, each step's output written to $OUT (or ./gpu-out):
#   1. tests/models/test_cuda.py            (captured/compiled steps == the eager loop)
#   2. bench/train_throughput.py --compile  (cnn32 B128 and resnet32 B64 vs the baseline)
#   3. bench/serve_samples.py on the GPU (batching on and off): one API process at the default
#      SNGAN_GENERATION_CHUNK (32 on CUDA; 1, 8, 32 clients); then, at 1 and 32 clients, one
#      process at chunk 8, and four processes at the default chunk (one change at a time)
# About 7 minutes on an H200. QUICK=1 shortens every step (to try the script on a CPU box).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out="${OUT:-gpu-out}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1

if [ -d .whl ] && ! python3 -c 'import fastapi, sqlalchemy, celery' 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
python3 - <<'PY' | tee "$out/env.txt"
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__)
print("device", torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
PY
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >>"$out/env.txt" 2>&1

quick="${QUICK:-0}"
step() {  # name, command...: run, keep its log, carry on after a failure
    local name="$1"
    shift
    echo "== $name: $*"
    local t0=$SECONDS
    "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "== $name: rc $rc in $((SECONDS - t0)) s"
    tail -n 25 "$out/$name.log"
}

if [ "$quick" = 1 ]; then
    step cuda_tests python3 -m pytest -q -p no:cacheprovider tests/models/test_fast_path.py
    step train_throughput python3 bench/train_throughput.py --width 8 --steps 3 --warmup 1
    serve=(--g-ch 4 --duration 2 --warmup 1)
    few=(--clients 1,32)
else
    step cuda_tests python3 -m pytest -q -p no:cacheprovider -s tests/models/test_cuda.py
    step train_throughput python3 bench/train_throughput.py --compile --steps 200
    serve=(--duration 8 --warmup 2)
    few=(--clients 1,32)
fi
step serve_samples python3 bench/serve_samples.py --device auto "${serve[@]}"
step serve_samples_chunk8 python3 bench/serve_samples.py --device auto --chunk 8 \
    "${serve[@]}" "${few[@]}"
step serve_samples_4procs python3 bench/serve_samples.py --device auto \
    --api-workers 4 "${serve[@]}" "${few[@]}"
ls -la "$out"
