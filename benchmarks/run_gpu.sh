#!/usr/bin/env bash
# The GPU measurements of the performance issue, in one go, on a machine with one CUDA device:
# the paper's two 224-px pairs (bf16 autocast, channels_last, the GPU variants: compile, fused
# optimizer, bf16 teacher), their FLOPs, the 224-px input path against those steps, and the tables.
# Writes results/bench/<gpu-name>-*.json; commit them and copy the figures into the READMEs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -c "import tas, torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: run benchmarks/run_cpu.sh instead')"
for pair in swin_t-r18 convnext_t-deit_t; do
  "$PY" -m tas bench --what step --experiment cifar100 --pair "$pair"
  "$PY" benchmarks/flops_step.py --experiment cifar100 --pair "$pair"
done
"$PY" -m tas bench --what data --experiment cifar100   # the 224-px in-memory cases, against the steps above
"$PY" -m tas bench --what step --experiment mini        # the mini pair on the GPU, for comparison with the CPU
"$PY" benchmarks/summarize.py
