#!/usr/bin/env bash
# Issue 23 on one GPU (<= 9 min on an H100): squeezed GPU tests, kernel targets (split vs fused decode paths vs the
# best dense kernel at 128K/10 %/batch 1, 32 and 8 KV heads; hierarchical vs flat lookup at 512K), end-to-end
# generation at 128K (and 64K, quick) with graph-captured decode for both decode paths. Writes to ${OUT:-out}/.
# Each stage has its own time limit; every benchmark rewrites its JSON after each measurement.
set -u
OUT=${OUT:-out}
STAGES=${STAGES:-"gpu_tests speed_targets gen_128k gen_64k"}  # a subset when device time is short
source "$(dirname "$0")/gpu_call.sh"
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 WANDB_MODE=disabled TRITON_INTERPRET=0
record_gpu
stage 140 gpu_tests python -m pytest -m gpu -v -p no:cacheprovider -rf --durations=5 tests/framework/kernels/squeezed_attention \
  tests/framework/models/components/squeezed/test_static_decoding_gpu.py
stage 110 speed_targets python benchmarks/squeezed_attention_speed.py --targets --reps 20 \
  --out "$OUT/speed_targets.json"
stage 190 gen_128k python benchmarks/squeezed_attention_generation.py --contexts 131072 --batches 1,4 --budgets 0.1 \
  --modes topk --inputs 256,2048 --reps 2 --out "$OUT/gen_128k.json"
stage 90 gen_64k python benchmarks/squeezed_attention_generation.py --contexts 65536 --batches 1,4 --budgets 0.1 \
  --modes topk --inputs 256,2048 --quick --out "$OUT/gen_64k.json"
for f in gen_128k gen_64k; do
  [ -f "$OUT/$f.json" ] && python benchmarks/squeezed_attention_generation.py --render "$OUT/$f.json" > "$OUT/$f.md" 2>&1
done
cat "$OUT/stages.txt"; tail -n 3 "$OUT"/*.log 2>/dev/null
pack_logs
