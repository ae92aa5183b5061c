#!/usr/bin/env bash
# Issue 24, CGM-GM's 20,000-step recipe in <= 10-minute GPU slots: one call = one slot. Trains with the graphed prior
# unroll (CUDAGraphModules) and fused Adam, resumes from .chunks/cgm_gm_20k/chunk.ckpt when present, stops at the
# last epoch end inside CHUNK_SECONDS, and hands the checkpoint and the chunk history back through $OUT (copy them
# to .chunks/cgm_gm_20k/ before the next slot; carry [".whl", ".chunks"]). The slot that reaches 20k evaluates the
# 25 checks and writes cgm_gm_full_20k.json; if the evaluation is cut off, the next slot resumes at step 20k and
# only evaluates.
set -u
OUT=${OUT:-out}
STAGES=${STAGES:-"slot"}
CHUNK_SECONDS=${CHUNK_SECONDS:-400}
source "$(dirname "$0")/gpu_call.sh"
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1
install_wheels
record_gpu
mkdir -p .chunks/cgm_gm_20k
stage "${SLOT_LIMIT:-560}" slot python benchmarks/cgm_gm.py --device cuda --fused --cuda-graphs --num-workers 4 \
  --cache-dir .cache/cgm_gm --chunk-dir .chunks/cgm_gm_20k --chunk-seconds "$CHUNK_SECONDS" \
  --out "$OUT/cgm_gm_full_20k.json"
cp .chunks/cgm_gm_20k/chunk.ckpt "$OUT/cgm_chunk.ckpt" 2>/dev/null; cp .chunks/cgm_gm_20k/chunks.json "$OUT/" 2>/dev/null
cat "$OUT/stages.txt"; grep -E "step [0-9]+/|slot done|Wall|pass|checks" "$OUT/slot.log" | tail -n 25
pack_logs
