#!/usr/bin/env bash
# All GPU benchmarks in one call (device time is scarce): versions, then the
# prefill sweep at full 7B depth, the forward pass vs HF on CUDA, and the
# training step at full 3B depth. Each writes its rows to $OUT/results.md,
# which is merged into bench/results.md by hand afterwards.
#   OUT=/tmp/gpu bash bench/gpu.sh
set -u
OUT=${OUT:-/tmp/gpu_bench}
mkdir -p "$OUT"
cp bench/results.md "$OUT/results.md"
export PYTHONPATH=$PWD XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import jax, flax, optax, orbax.checkpoint as o, transformers, torch; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'optax', optax.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__)"
run() { echo "== $*"; timeout "${T:-300}" python3 "$@" --out "$OUT/results.md" 2>&1 | tail -n 15; }
T=280 run bench/prefill.py --text-layers 28 --vision-layers 32 --dtype bfloat16 --reps 5 ${PREFILL_FLAGS:-}
[ -z "${SKIP_FORWARD:-}" ] && T=90 run bench/forward.py --dtype bfloat16 --reps 10
T=200 run bench/train_step.py --text-layers 36 --vision-layers 32 --reps 5
