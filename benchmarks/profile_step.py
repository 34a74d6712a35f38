"""Where a method's training step spends its time: torch.profiler over a few steps of the same step
`python -m tas bench --what step` times, with record_function regions around the parts of the
distiller (teacher / student / assistant forward, projection heads, branches) and of the step
(forward, accounting, backward, optimizer: named inside tas.engine.trainer.TrainStep).

    python benchmarks/profile_step.py --experiment mini --pair tiny_cnn-tiny_vit --methods kd,tas
    python benchmarks/profile_step.py ... --steps 20 --rows 25 --json results/bench/profile.json

Prints, per method: ms per step in each region (CPU wall time, profiler on) and the top operators by
self CPU time. On CUDA, regions are timed with the profiler's device time as well.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tas import batching  # noqa: E402
from tas.bench.step import MethodStep  # noqa: E402
from tas.config import load_config  # noqa: E402
from tas.engine import devices  # noqa: E402


def _hook_regions(distiller) -> list:
    """record_function regions around the distiller's sub-modules, opened and closed by hooks."""
    named = {}
    if distiller.teacher is not None:
        named["fwd.teacher"] = distiller.teacher
    named["fwd.student"] = distiller.student
    for name in ("assistant", "branches", "projector"):
        if hasattr(distiller, name) and isinstance(getattr(distiller, name), torch.nn.Module):
            named[f"fwd.{name}"] = getattr(distiller, name)
    if hasattr(distiller, "proj"):
        for key, module in distiller.proj.items():
            named[f"fwd.proj_{key}"] = module
    assistant = getattr(distiller, "assistant", None)
    if assistant is not None and getattr(assistant, "l2g", None) is not None:
        named["fwd.assistant.l2g"] = assistant.l2g
        # part B's stage 4 runs inside the assistant: hook the stage module itself
        named["fwd.assistant.stage4_b"] = assistant.part_b.stage_module(3)
    handles = []
    for label, module in named.items():
        stack: list = []

        def pre(_m, _inp, label=label, stack=stack):
            ctx = record_function(label)
            ctx.__enter__()
            stack.append(ctx)

        def post(_m, _inp, _out, stack=stack):
            if stack:
                stack.pop().__exit__(None, None, None)

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    return handles


def profile_method(cfg, experiment: str, pair_id: str | None, method: str, batch_size: int | None, steps: int,
                   threads: int | None, rows: int) -> dict:
    exp = cfg.experiment(experiment)
    pair = exp.pair(pair_id) if pair_id else exp.pairs[0]
    recipe = cfg.student_recipe(exp, pair.student)
    placement = devices.resolve(cfg.runtime, cfg.model(pair.student).family == "cnn", threads)
    # one process's forward batch, as the trainer runs it (tas.batching)
    job = MethodStep(cfg, exp, pair, method, int(batch_size or batching.plan(recipe, exp.gpus_per_job).micro_batch),
                     placement)
    for _ in range(3):
        job.step()
    handles = _hook_regions(job.distiller)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if placement.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            job.step()  # the trainer's TrainStep, whose parts are named profiler regions
        if placement.device.type == "cuda":
            torch.cuda.synchronize()
    for h in handles:
        h.remove()
    events = prof.key_averages()
    regions = defaultdict(float)
    device_regions = defaultdict(float)
    for e in events:
        if e.key.startswith(("step.", "fwd.")):
            regions[e.key] += e.cpu_time_total / 1000.0 / steps
            device_regions[e.key] += getattr(e, "device_time_total", 0.0) / 1000.0 / steps
    table = events.table(sort_by="self_cpu_time_total", row_limit=rows)
    top = sorted((e for e in events if not e.key.startswith(("step.", "fwd."))), key=lambda e: e.self_cpu_time_total,
                 reverse=True)[:rows]
    return {
        "method": method, "pair": pair.id, "batch_size": job.x.shape[0], "steps": steps,
        "region_cpu_ms_per_step": {k: round(v, 3) for k, v in sorted(regions.items())},
        "region_device_ms_per_step": {k: round(v, 3) for k, v in sorted(device_regions.items()) if v},
        "top_ops_self_cpu_ms_per_step": [{"op": e.key, "self_cpu_ms": round(e.self_cpu_time_total / 1000.0 / steps, 3),
                                          "calls_per_step": round(e.count / steps, 1)} for e in top],
        "table": table,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default=str(ROOT / "params.yaml"))
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--experiment", default="mini")
    p.add_argument("--pair", default=None)
    p.add_argument("--methods", default="kd,tas")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--rows", type=int, default=20)
    p.add_argument("--json", default=None, help="also write the per-region numbers here")
    args = p.parse_args(argv)
    cfg = load_config(args.params, args.overrides)
    results = []
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        res = profile_method(cfg, args.experiment, args.pair, method, args.batch_size, args.steps,
                             args.threads, args.rows)
        results.append(res)
        print(f"\n=== {res['pair']} {method} (batch {res['batch_size']}, {args.steps} steps, profiler on) ===")
        for key, ms in res["region_cpu_ms_per_step"].items():
            print(f"  {key:28s} {ms:9.2f} ms/step")
        print(res["table"])
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps([{k: v for k, v in r.items() if k != "table"} for r in results], indent=2)
                                   + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
