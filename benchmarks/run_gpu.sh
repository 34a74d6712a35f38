#!/usr/bin/env bash
# The GPU measurements of the performance issue, in one go, on a machine with one CUDA device:
# the paper's two 224-px pairs (bf16 autocast, channels_last, the GPU variants: compile, fused
# optimizer, bf16 teacher), their FLOPs, the 224-px input path against those steps, a real JPEG folder
# (streamed, and JPEG decoding: PIL per core against nvjpeg), and the tables.
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
# A real JPEG folder (../shared/data/imagenette-96, 85 MB: copy it there, or set FOLDER): the folder read as a
# job reads it (upsampling on the GPU: runtime.upsample_on auto), and nvjpeg against PIL per core.
FOLDER=${FOLDER:-../shared/data/imagenette-96}
if [ -d "$FOLDER/train" ]; then
  "$PY" -m tas bench --what data --set "datasets.imagenette.root=$FOLDER"
  "$PY" benchmarks/jpeg_decode.py "$FOLDER" --out "results/bench/$("$PY" -c 'import tas, torch; from tas.bench.machine import device_slug; print(device_slug(torch.device("cuda")))')-jpeg-decode.json"
fi
"$PY" benchmarks/summarize.py
