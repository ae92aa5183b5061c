#!/usr/bin/env bash
# Issue 24, the full ListOps recipe (150k steps) in <= 10-minute GPU slots: one call = one chunk of RUN
# (listops_beta: the shipped config, learned Sobolev beta; listops_no_bias: configs/ssm/listops_s4d_no_bias.yaml).
# Graphed settings of session 9 (CUDAGraphModules on the backbone, every batch padded to 2,048 so the graph has one
# shape, fused AdamW, 6 loader workers). The state comes back as $OUT/RUN.tar (or .partNN pieces): copy it into
# .chunks/ before the next slot and carry [".whl", ".chunks"]; the slot that reaches 150k runs `test`.
set -u
OUT=${OUT:-out}
RUN=${RUN:-listops_beta}
STAGES=${STAGES:-"chunk"}
SECONDS_TRAIN=${SECONDS_TRAIN:-400}
case $RUN in
  listops_beta) CONFIG=configs/ssm/listops_s4d.yaml ;;
  listops_no_bias) CONFIG=configs/ssm/listops_s4d_no_bias.yaml ;;
  *) echo "RUN must be listops_beta or listops_no_bias, got $RUN"; exit 2 ;;
esac
source "$(dirname "$0")/gpu_call.sh"
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1
install_wheels
record_gpu
stage "${CHUNK_LIMIT:-570}" chunk python benchmarks/chunked_fit.py --run "$RUN" --config "$CONFIG" \
  --seconds "$SECONDS_TRAIN" --out "$OUT" --test-after -- --trainer.enable_progress_bar=false \
  --data.init_args.num_workers=6 --data.init_args.pin_memory=true --data.init_args.pad_to_seq_len=true \
  --model.init_args.optimizer.init_args.fused=true \
  --trainer.callbacks+=framework.callbacks.cuda_graph_modules.CUDAGraphModules --trainer.callbacks.modules=[backbone]
cat "$OUT/stages.txt"; tail -n 20 "$OUT/chunk.log"
pack_logs
