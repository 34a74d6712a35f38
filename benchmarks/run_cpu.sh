#!/usr/bin/env bash
# Reproduce the CPU results committed under results/bench/ (see benchmarks/README.md).
# On a shared machine the disturbance guard waits for quiet windows: allow it plenty of retries.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export TAS_BENCH_RETRIES=${TAS_BENCH_RETRIES:-20} TAS_BENCH_MAX_WAIT=${TAS_BENCH_MAX_WAIT:-300}
for pair in tiny_cnn-tiny_vit tiny_vit-tiny_mlp tiny_cnn-tiny_mlp; do
  for threads in 1 2; do   # 1: what each pipeline job uses (runtime.threads); 2: the whole machine
    "$PY" -m tas bench --what step --experiment mini --pair "$pair" --threads "$threads"
  done
  "$PY" benchmarks/flops_step.py --experiment mini --pair "$pair"
done
for pair in swin_t-r18 convnext_t-deit_t; do
  "$PY" benchmarks/flops_step.py --experiment cifar100 --pair "$pair"   # FLOPs only: no 224-px timing on a CPU
done
"$PY" -m tas bench --what data          # runtime.threads (1); reads the 1-thread scratch steps written above
"$PY" -m tas bench --what pipeline      # minutes: the whole mini study in a fresh copy
"$PY" benchmarks/summarize.py
