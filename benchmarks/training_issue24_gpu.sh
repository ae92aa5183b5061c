#!/usr/bin/env bash
# Issue 24 on one GPU (<= 9.5 min): training throughput of the shipped ListOps and CGM-GM configs, before vs
# `graphed` (CUDAGraphModules: the hot module's forward + backward as CUDA graphs, its first real capture) vs
# `static` (no host syncs, one input shape), all in one run. Needs `carry: [".whl"]` (jsonargparse & co. for the
# GPU image's Python). Writes to ${OUT:-out}/; every JSON is rewritten after each row, so a call cut short keeps
# what it measured.
set -u
OUT=${OUT:-out}
STAGES=${STAGES:-"listops cgm_gm"}
source "$(dirname "$0")/gpu_call.sh"
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1
install_wheels
record_gpu
T="python benchmarks/training_throughput.py --steps 200 --warmup 30 --timeout 95"
stage 290 listops $T --configs listops --variants before graphed static --out "$OUT/tp_listops.json"
stage 290 cgm_gm $T --configs cgm_gm --variants before graphed static --out "$OUT/tp_cgm_gm.json"
cat "$OUT/stages.txt"; tail -n 4 "$OUT"/*.log 2>/dev/null
pack_logs
