"""The one summary of benchmarks/run_gpu.sh: summary.json and summary.md in its output folder.

    python benchmarks/gpu_summary.py results/bench/gpu [--smoke-root /tmp/tas-gpu-x/results-smoke]

Reads what the script's steps wrote there (steps.tsv: each command's wall time; the step benchmark's
`<gpu>-paper-swin_t-r18.json`; jpeg-decode.json; nccl.json) and, with --smoke-root, the smoke runs' metrics.
MFU = images/s x the step's counted training FLOPs per image (torch's FLOP counter: matmuls, convolutions,
attention; forward + backward) / the GPU's dense bf16 peak (PEAK_BF16_TFLOPS below, or GPU_PEAK_TFLOPS).
A part that did not run is listed as such: nothing here is estimated.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

# Dense bf16 tensor-core peaks from the vendors' datasheets (TFLOP/s, no sparsity), by a substring of
# torch.cuda.get_device_name(); the first match wins, so the specific names come first.
PEAK_BF16_TFLOPS = (
    ("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("GH200", 989.0), ("A100", 312.0), ("L40S", 362.0),
    ("L40", 181.0), ("A10G", 70.0), ("A10", 125.0), ("L4", 121.0), ("RTX 4090", 165.0), ("A6000", 155.0),
)
TODO_26 = ("TODO(#26): each cifar100_32 teacher's top-1 after a short run of its recipe (teacher_finetune), next to "
           "the students' scratch top-1, needs the real CIFAR-100 archive, which an offline GPU machine does not have "
           "and which does not fit this script's 10 minutes beside the rest: not measured here.")


def peak_tflops(gpu: str | None) -> tuple[float | None, str]:
    if os.environ.get("GPU_PEAK_TFLOPS"):
        return float(os.environ["GPU_PEAK_TFLOPS"]), "GPU_PEAK_TFLOPS"
    for name, value in PEAK_BF16_TFLOPS:
        if gpu and name in gpu:
            return value, f"datasheet dense bf16 ({name})"
    return None, "unknown GPU: set GPU_PEAK_TFLOPS"


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def steps_run(out: Path) -> list[dict]:
    rows = []
    try:
        lines = (out / "steps.tsv").read_text().splitlines()
    except OSError:
        return rows
    for line in lines:
        name, seconds, status, command = (line.split("\t") + ["", "", "", ""])[:4]
        rows.append({"step": name, "wall_s": float(seconds) if seconds else None, "status": status, "command": command})
    return rows


def step_bench(out: Path) -> dict | None:
    found = sorted(p for p in out.glob("*-paper-swin_t-r18.json"))
    data = _json(found[-1]) if found else None
    if data is None:
        return None
    gpu = data.get("device", {}).get("name")
    peak, source = peak_tflops(gpu)
    methods = {}
    for method, res in data.get("methods", {}).items():
        gflops, ips = res.get("train_gflops_per_image"), res.get("images_per_s")
        mfu = None if not (peak and gflops and ips) else round(ips * gflops * 1e9 / (peak * 1e12), 4)
        methods[method] = {"images_per_s": ips, "step_ms": res.get("step_ms_median"),
                           "peak_mem_mb": res.get("peak_mem_mb"), "train_gflops_per_image": gflops, "bf16_mfu": mfu}
    return {"file": found[-1].name, "gpu": gpu, "batch_size": data.get("batch_size"),
            "amp_bf16": data.get("settings", {}).get("amp_bf16"),
            "channels_last": data.get("settings", {}).get("channels_last"), "peak_bf16_tflops": peak,
            "peak_source": source, "methods": methods, "ratios": data.get("ratios"), "variants": data.get("variants")}


def smoke(root: Path | None) -> dict | None:
    if root is None or not root.is_dir():
        return None
    runs = []
    for path in sorted(root.glob("*/runs/**/metrics.json")) + sorted(root.glob("*/teachers/*/metrics.json")):
        metrics = _json(path) or {}
        runs.append({"run": str(path.parent.relative_to(root)), "placement": metrics.get("placement"),
                     "world_size": metrics.get("world_size"), "wall_time_s": metrics.get("wall_time_s")})
    evals = list(root.glob("*/eval/**/*.json"))
    devices = sorted({(_json(p) or {}).get("device", "?") for p in evals})
    return {"training_jobs": len(runs), "evaluations": len(evals), "eval_devices": devices,
            "placements": sorted({json.dumps(r["placement"], sort_keys=True) for r in runs if r["placement"]}),
            "world_sizes": sorted({r["world_size"] for r in runs if r["world_size"]}), "runs": runs}


def jpeg(out: Path) -> dict | None:
    data = _json(out / "jpeg-decode.json")
    if data is None:
        return None
    return {"folder": data.get("folder"), "sets": {name: {"cpu_one_core": s.get("cpu_one_core"), "gpu": s.get("gpu")}
                                                   for name, s in data.get("sets", {}).items()}}


def markdown(summary: dict) -> str:
    lines = ["# First GPU hour (benchmarks/run_gpu.sh)", ""]
    lines += ["| step | wall (s) | status | command |", "|---|---:|---|---|"]
    lines += [f"| {r['step']} | {r['wall_s'] if r['wall_s'] is not None else '-'} | {r['status']} | `{r['command']}` |"
              for r in summary["steps"]] or ["| (none ran) | - | - | - |"]
    step = summary["step_benchmark"]
    lines += ["", "## Training step, Swin-T -> ResNet-18, 224 px"]
    if step is None:
        lines.append("not run")
    else:
        lines += [f"{step['gpu']}, batch {step['batch_size']}, bf16 {step['amp_bf16']}, "
                  f"channels_last {step['channels_last']}; "
                  f"peak {step['peak_bf16_tflops']} TFLOP/s ({step['peak_source']})", "",
                  "| method | images/s | ms/step | peak memory (MB) | GFLOP/image | bf16 MFU |",
                  "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {m} | {r['images_per_s']} | {r['step_ms']} | {r['peak_mem_mb']} | {r['train_gflops_per_image']} "
                  f"| {r['bf16_mfu'] if r['bf16_mfu'] is not None else '-'} |" for m, r in step["methods"].items()]
    sm = summary["smoke"]
    lines += ["", "## cifar100 smoke on CUDA"]
    lines.append("not run" if sm is None else
                 f"{sm['training_jobs']} training jobs, {sm['evaluations']} evaluations; "
                 f"placements {sm['placements']}; "
                 f"processes per job {sm['world_sizes']}; evaluated on {sm['eval_devices']}")
    jp = summary["jpeg_decode"]
    lines += ["", "## JPEG decoding (ms per image)"]
    if jp is None:
        lines.append("not run")
    else:
        for name, s in jp["sets"].items():
            cpu, gpu = s["cpu_one_core"] or {}, s["gpu"] or {}
            lines.append(f"- {name}: simplejpeg {cpu.get('simplejpeg_decode_ms')}, "
                         f"PIL {cpu.get('pil_decode_ms')} per core; "
                         f"nvjpeg {gpu.get('nvjpeg_decode_ms', gpu.get('skipped'))}")
    nc = summary["nccl"]
    lines += ["", "## NCCL, 1 process", "not run" if nc is None else
              f"backend {nc['backend']} {nc['nccl_version']}, init {nc['init_s']} s, "
              f"DDP step {nc['ddp_step_ms_last']} ms, all-reduce ok {nc['all_reduce_ok']}"]
    lines += ["", summary["todo"], ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the script's output folder")
    ap.add_argument("--smoke-root", type=Path, default=None, help="results-smoke/ of the smoke run")
    args = ap.parse_args()
    summary = {"steps": steps_run(args.out), "smoke": smoke(args.smoke_root), "step_benchmark": step_bench(args.out),
               "jpeg_decode": jpeg(args.out), "nccl": _json(args.out / "nccl.json"), "todo": TODO_26}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "summary.md").write_text(markdown(summary))
    print(args.out / "summary.md")


if __name__ == "__main__":
    main()
