#!/usr/bin/env bash
# Issue 24, the flow-matching row of the throughput table in one <= 10-minute GPU call. Session 10's rows timed out in
# set-up: the 24 Navier–Stokes trajectories (64², 60 frames) are simulated inside `fit`. They are generated here first
# (deterministic; same fingerprint on both machines) into .cache/datasets and carried:
#   FRAMEWORK_CACHE_DIR=$PWD/.cache/datasets python benchmarks/flow_matching_throughput_data.py
# then the call carries [".whl", ".cache/datasets"].
set -u
OUT=${OUT:-out}
STAGES=${STAGES:-"tp"}
TIMEOUT=${TIMEOUT:-170}
source "$(dirname "$0")/gpu_call.sh"
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1 FRAMEWORK_CACHE_DIR=$PWD/.cache/datasets
install_wheels
record_gpu
ls "$FRAMEWORK_CACHE_DIR" > "$OUT/cache_listing.txt" 2>&1
stage $((3 * TIMEOUT + 60)) tp python benchmarks/training_throughput.py --configs flow_matching \
  --variants before static graphed --steps 150 --warmup 30 --timeout "$TIMEOUT" --out "$OUT/tp_flow_matching.json"
cat "$OUT/stages.txt"; tail -n 30 "$OUT/tp.log"
pack_logs
