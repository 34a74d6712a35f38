#!/usr/bin/env bash
# The first hour on a GPU machine: what a session that is lent one GPU runs first. At most 10 minutes,
# offline (no download: the smoke makes its own inputs), from the checkout's root:
#
#   benchmarks/run_gpu.sh              # on the GPU machine; writes results/bench/gpu/summary.{json,md}
#   benchmarks/run_gpu.sh --dry-run    # anywhere: prints every command and checks that it exists; runs none
#
# 1. smoke     the cifar100 smoke on CUDA (bf16 autocast and channels_last for CNNs: runtime `auto` on
#              CUDA), in a temporary copy of the checkout, on two pairs x every method (swin_t-r18: a CNN
#              student, convnext_t-deit_t: a ViT student; 38 jobs). Each GPU job holds the GPU slot, so on
#              one GPU the whole 201-job study runs serialised in about 20 minutes: SMOKE_ALL=1 runs it all
#              (and its table). With 2 or more GPUs: gpus_per_job 2, i.e. two GPU slots per job, DDP over NCCL.
# 2. step      the training step of KD, OFA and TAS on Swin-T -> ResNet-18 at 224 px (tas bench --what step):
#              images/s, peak memory, FLOPs per image; the summary adds the bf16 MFU against the GPU's peak.
# 3. jpeg      JPEG decoding: nvjpeg (batched on the GPU) against simplejpeg and PIL per CPU core, on FOLDER
#              (an image folder; default ../shared/data/imagenette-96, else the smoke's self-made JPEGs).
# 4. nccl      a 1-process NCCL run (process group, DDP steps, all-reduce: benchmarks/nccl_check.py).
# 5. summary   summary.json + summary.md (benchmarks/gpu_summary.py), with a TODO line for issue 26.
#
# Fails loudly: the first failing command stops the script, named on stderr with its exit status.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
trap 'echo "run_gpu.sh: FAILED (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR

DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
ROOT=$(pwd)
abs() { case "$1" in /*) echo "$1" ;; *) echo "$ROOT/$1" ;; esac; }  # keeps a venv's python symlink as it is
PY=$(abs "${PYTHON:-.venv/bin/python}")
SNAKEMAKE=$(abs "${SNAKEMAKE:-$(dirname "$PY")/snakemake}")
OUT=$(abs "${OUT:-results/bench/gpu}")
FOLDER=${FOLDER:-../shared/data/imagenette-96}
[ "$DRY" = 1 ] && OUT=$(mktemp -d /tmp/tas-gpu-dry-XXXXXX)
mkdir -p "$OUT"
: > "$OUT/steps.tsv"
export PATH="$(dirname "$PY"):$PATH" HF_HUB_OFFLINE=1  # `python` in the smoke jobs' commands is this venv's; no hub

# run NAME LIMIT_S CMD...: run CMD under `timeout`, record its wall time in steps.tsv; on failure name it and stop.
# With --dry-run: print it and check that it exists (`python -m tas <subcommand>` and `python <script>` answer --help).
run() {
  local name=$1 limit=$2
  shift 2
  echo "+ [$name] $*" >&2
  if [ "$DRY" = 1 ]; then
    check "$@"
    printf '%s\t\t%s\t%s\n' "$name" "dry-run" "$*" >> "$OUT/steps.tsv"
    return 0
  fi
  local start=$SECONDS status=0
  timeout "$limit" "$@" || status=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$((SECONDS - start))" "$([ "$status" = 0 ] && echo ok || echo "failed ($status)")" "$*" >> "$OUT/steps.tsv"
  if [ "$status" != 0 ]; then
    echo "run_gpu.sh: FAILED [$name] (exit $status$([ "$status" = 124 ] && echo ", over its $limit s")): $*" >&2
    exit "$status"
  fi
}

check() {
  while [[ "$1" == env || "$1" == *=* ]]; do shift; done
  command -v "$1" > /dev/null || { echo "run_gpu.sh: --dry-run: $1 not found" >&2; exit 1; }
  if [ "$1" = "$PY" ] && [ "${2:-}" = -m ] && [ "${3:-}" = tas ]; then
    "$PY" -m tas "$4" --help > /dev/null
  elif [ "$1" = "$PY" ] && [ "${2:-}" = -m ]; then
    "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec(sys.argv[1]) is None)" "$3"
    local arg
    for arg in "$@"; do
      if [[ "$arg" == *.py ]]; then "$PY" "$arg" --help > /dev/null; fi
    done
  elif [ "$1" = "$PY" ]; then
    "$PY" "$2" --help > /dev/null
  else
    "$1" --help > /dev/null
  fi
}

if [ "$DRY" = 0 ]; then
  "$PY" -c "import tas, torch, sys; sys.exit(0 if torch.cuda.is_available() else 'run_gpu.sh: no CUDA device (try --dry-run)')"
  NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
else
  NGPU=1
fi

# 1. the cifar100 smoke on CUDA, in a copy of the checkout (its own params; the checkout stays untouched)
WORK=$(mktemp -d /tmp/tas-gpu-smoke-XXXXXX)
cp -r tas workflow Snakefile params.yaml .gitignore .dvcignore "$WORK/"
if [ "$NGPU" -ge 2 ]; then
  "$PY" -c "import yaml, sys; p = yaml.safe_load(open(sys.argv[1])); p['experiments']['cifar100']['gpus_per_job'] = 2; yaml.safe_dump(p, open(sys.argv[1], 'w'), sort_keys=False)" "$WORK/params.yaml"
fi
TARGETS=()
if [ "${SMOKE_ALL:-0}" != 1 ]; then
  for pair in swin_t-r18 convnext_t-deit_t; do
    for method in kd dkd dist fitnet ofa rsd tas; do TARGETS+=("results-smoke/cifar100/eval/runs/$pair/$method/seed0.json"); done
  done
  TARGETS+=(results-smoke/cifar100/eval/runs/r18/scratch/seed0.json results-smoke/cifar100/eval/runs/deit_t/scratch/seed0.json)
fi
cd "$WORK"
# targets first: --resources and --config each take every word after them
run smoke "${SMOKE_LIMIT_S:-330}" "$SNAKEMAKE" "${TARGETS[@]}" --cores "$(nproc)" --resources "gpu=$NGPU" --config experiment=cifar100 smoke=true

# 2. the training step of KD, OFA, TAS on Swin-T -> ResNet-18 at 224 px (fused optimizer and a bf16 teacher as
#    variants; torch.compile is left out here: minutes of compiling per method)
cd "$ROOT"
run step 150 env TAS_BENCH_VARIANTS="${TAS_BENCH_VARIANTS:-fused_optimizer,teacher_bf16}" "$PY" -m tas bench --what step \
  --experiment cifar100 --pair swin_t-r18 --methods kd,ofa,tas --steps 10 --windows 3 --output-dir "$OUT"

# 3. nvjpeg against CPU decoding, on FOLDER or else the imagenet smoke's self-made JPEGs
if [ ! -d "$FOLDER/train" ]; then
  cd "$WORK"
  run jpeg-folder 120 "$PY" -m tas check --experiment imagenet --set smoke=true
  FOLDER=$(find "$WORK/data-smoke/smoke-inputs/datasets/imagenet" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | head -n 1 || true)
  cd "$ROOT"
fi
run jpeg 90 "$PY" benchmarks/jpeg_decode.py "${FOLDER:-$WORK/no-folder}" --n 512 --batch 128 --out "$OUT/jpeg-decode.json"

# 4. one process, NCCL
run nccl 90 "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 benchmarks/nccl_check.py --out "$OUT/nccl.json"

# 5. the summary, with the TODO line of issue 26 (the cifar100_32 teachers' short-run top-1 needs the real CIFAR-100)
"$PY" benchmarks/gpu_summary.py "$OUT" --smoke-root "$WORK/results-smoke"
[ "$DRY" = 1 ] && rm -rf "$WORK"
echo "run_gpu.sh: done in ${SECONDS} s; summary in $OUT/summary.md" >&2
