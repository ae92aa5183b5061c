#!/bin/bash
# Issue 22 on one GPU (one device call, <= 10 min; carry .whl): SPADE --full seeds 1, 2 (one process per model and seed),
# TinyMem selection (base + never-backdoored reference first, then four method groups in parallel, each writing its JSON
# after every method). Usage: bash benchmarks/issue22_gpu.sh [deadline seconds, default 568]; results under $OUT.
T0=$(date +%s); D=${1:-568}; left() { echo $(( D - ($(date +%s) - T0) )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=disabled
nvidia-smi --query-gpu=name,memory.total --format=csv > $OUT/gpu.txt
for s in 1 2; do for m in MQ-CNN MQ-Transformer SPADE; do
  timeout $(left) python3 benchmarks/spade.py --full --accelerator gpu --threads 2 --seeds $s --models $m --out $OUT/spade_full_s${s}_${m}_h100.json > $OUT/spade_s${s}_${m}.log 2>&1 &
done; done
(
  TM="python3 benchmarks/tinymem_selection.py --device cuda"
  timeout $(left) $TM --methods "" --out $OUT/tinymem_selection_base.json > $OUT/tinymem_base.log 2>&1
  mkdir -p $OUT/tm && cp -r outputs/tinymem/benchmark $OUT/tm/
  timeout $(left) $TM --methods BalancedSubnet --out $OUT/tinymem_sel_bsn.json > $OUT/tm_bsn.log 2>&1 &
  timeout $(left) $TM --methods "Subnet,Second-Order Unlearning,Durable,Durable-aggregate" --out $OUT/tinymem_sel_subnet.json > $OUT/tm_subnet.log 2>&1 &
  timeout $(left) $TM --methods "Zero-Out,Activations,Slimming,Hard Concrete" --out $OUT/tinymem_sel_neuron.json > $OUT/tm_neuron.log 2>&1 &
  timeout $(left) $TM --methods "FT clean,FT extra,FT both,Greedy,Integrated Gradients" --out $OUT/tinymem_sel_ft.json > $OUT/tm_ft.log 2>&1 &
  wait
) &
wait
ls -la $OUT
