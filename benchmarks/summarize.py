"""Print the benchmark JSONs under a folder as Markdown tables (what benchmarks/README.md quotes).

    python benchmarks/summarize.py                 # results/bench
    python benchmarks/summarize.py /path/to/bench
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load(folder: Path) -> list[dict]:
    out = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except ValueError:
            continue
        data["_file"] = path.name
        out.append(data)
    return out


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 600 else f"{seconds / 3600:.2f} h"


def step_tables(runs: list[dict]) -> str:
    lines = []
    for d in runs:
        dev = d["device"]["name"]
        lines.append(f"**{d['pair']}** ({d['protocol']}, {d['image_size']} px, batch {d['batch_size']}, {dev}; "
                     f"`{d['_file']}`)\n")
        lines.append("| method | images/s | ms/step (median) | windows (ms) | peak mem (MB) "
                     "| extra params | train GFLOP/img |")
        lines.append("|---|---:|---:|---|---:|---:|---:|")
        for m, v in d["methods"].items():
            windows = ", ".join(f"{w:.0f}" for w in v["step_ms_windows"])
            lines.append(f"| {m} | {v['images_per_s']:.0f} | {v['step_ms_median']:.1f} | {windows} | "
                         f"{_fmt(v.get('peak_mem_mb'), 0)} | {v['extra_params']:,} | "
                         f"{_fmt(v.get('train_gflops_per_image'), 3)} |")
        ratios = ", ".join(f"{k} **{v:.2f}**" for k, v in d["ratios"].items())
        flops = ", ".join(f"{k} {v:.2f}" for k, v in d.get("flop_ratios", {}).items())
        lines.append(f"\nstep-time ratios: {ratios}; FLOP ratios: {flops or '-'}\n")
        proj = d.get("projection", {})
        if proj.get("methods"):
            runs_h = ", ".join(f"{m} {_duration(v['epoch_s'] * proj['epochs'])}" for m, v in proj["methods"].items())
            lines.append(f"projected {proj['epochs']}-epoch run on {proj['train_images']:,} images (steps only): "
                         f"{runs_h}\n")
        for variant, per in d.get("variants", {}).items():
            cells = ", ".join(f"{m} {v.get('speedup_vs_baseline', v.get('error'))}" for m, v in per.items())
            lines.append(f"- variant `{variant}`: speed-up vs baseline: {cells}")
    return "\n".join(lines)


def data_table(d: dict) -> str:
    lines = [f"{d['device']['name']} (`{d['_file']}`)\n",
             "| input path | batch | workers | images/s | step it feeds (scratch) | step images/s | data / step |",
             "|---|---:|---:|---:|---|---:|---:|"]
    for case in d["cases"]:
        ref = case.get("step_reference") or {}
        for run in case["runs"]:
            lines.append(f"| {case['name']} | {case['batch_size']} | {run['num_workers']} | {run['images_per_s']:.0f} "
                         f"| {ref.get('experiment', '-')} {ref.get('pair', '')} | {_fmt(ref.get('images_per_s'), 0)} | "
                         f"{_fmt(run.get('ratio_to_step'), 1)} |")
    return "\n".join(lines)


def pipeline_table(d: dict) -> str:
    dvc = d.get("dvc", {})
    status = dvc.get("status", {})
    lines = [f"{d['device']['name']}, {d['cores']} cores (`{d['_file']}`)\n",
             "| run | wall (s) | exit | other processes' CPU share |", "|---|---:|---:|---:|",
             f"| `snakemake --cores {d['cores']}` (whole study, fresh copy) | {d['full_run']['wall_s']:.1f} | "
             f"{d['full_run']['returncode']} | {_fmt(d['full_run'].get('foreign_cpu_fraction'), 3)} |",
             f"| no-op rerun `snakemake --cores {d['cores']}` | {d['noop_rerun']['wall_s']:.2f} | "
             f"{d['noop_rerun']['returncode']} | {_fmt(d['noop_rerun'].get('foreign_cpu_fraction'), 3)} |",
             f"| `snakemake -n` | {d['dry_run']['wall_s']:.2f} | {d['dry_run']['returncode']} | - |"]
    if status:
        lines.append(f"| `dvc status` (after `dvc commit`) | {status['wall_s']:.2f} | {status['returncode']} | "
                     f"{_fmt(status.get('foreign_cpu_fraction'), 3)} |")
    per_rule = d.get("jobs", {}).get("per_rule", {})
    if per_rule:
        lines += ["", "| rule | jobs | sum of job wall (s) | sum of job CPU (s) |", "|---|---:|---:|---:|"]
        for rule, agg in sorted(per_rule.items(), key=lambda kv: -kv[1]["wall_s"]):
            lines.append(f"| {rule} | {agg['jobs']} | {agg['wall_s']:.1f} | {agg['cpu_s']:.1f} |")
    return "\n".join(lines)


def flops_table(runs: list[dict]) -> str:
    lines = ["| pair | protocol | " + " | ".join(["scratch", "kd", "dkd", "ofa", "rsd", "tas"])
             + " | tas/kd | ofa/kd |", "|---|---|" + "---:|" * 8]
    for d in runs:
        cells = [_fmt(d["methods"].get(m, {}).get("train_gflops_per_image"), 3)
                 for m in ("scratch", "kd", "dkd", "ofa", "rsd", "tas")]
        r = d["flop_ratios"]
        lines.append(f"| {d['pair']} | {d['protocol']} ({d['image_size']} px) | " + " | ".join(cells)
                     + f" | {_fmt(r.get('tas/kd'))} | {_fmt(r.get('ofa/kd'))} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0]) if argv else ROOT / "results" / "bench"
    runs = _load(folder)
    steps = [d for d in runs if d.get("benchmark") == "step"]
    if steps:
        print("## Step\n\n" + step_tables(steps) + "\n")
    for d in (d for d in runs if d.get("benchmark") == "data"):
        print("## Data path\n\n" + data_table(d) + "\n")
    for d in (d for d in runs if d.get("benchmark") == "pipeline"):
        print("## Pipeline\n\n" + pipeline_table(d) + "\n")
    flops = [d for d in runs if d.get("benchmark") == "flops"]
    if flops:
        print("## FLOPs per training step (GFLOP per image)\n\n" + flops_table(flops) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
