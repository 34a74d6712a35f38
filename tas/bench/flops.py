"""FLOPs of one training step per image for each method of a pair: device-independent, so the 224-px
pairs can be counted on a CPU (`benchmarks/flops_step.py`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tas.bench.machine import git_commit, versions
from tas.bench.memory import release_memory
from tas.bench.step import MethodStep, ratios
from tas.config import Config
from tas.io import write_json


def bench_flops(cfg: Config, experiment: str | None, pair_id: str | None, methods: list[str], *,
                batch_size: int = 2, threads: int | None = None, out_dir: Path | str = "results/bench") -> Path:
    """Count each method's training step (torch.utils.flop_counter); writes flops-<protocol>-<pair>.json."""
    from tas.engine import devices

    exp = cfg.experiment(experiment)
    pair = exp.pair(pair_id) if pair_id else exp.pairs[0]
    protocol = cfg.protocol_of(exp)
    placement = devices.resolve(cfg.runtime, cfg.model(pair.student).family == "cnn", threads)
    per_method = {}
    for method_id in methods:
        job = MethodStep(cfg, exp, pair, method_id, batch_size, placement)
        job.step()  # first-call work (lazy init) stays out of the count
        gflops = round(job.count_flops() / 1e9, 4)
        job.check_finite()
        per_method[method_id] = {"train_gflops_per_image": gflops, "extra_params": job.extra_params}
        print(f"bench flops {pair.id} {method_id}: {gflops} GFLOP/image", file=sys.stderr)
        del job
        release_memory(placement.device)
    result = {"benchmark": "flops", "versions": versions(), "git_commit": git_commit(),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "experiment": exp.id, "protocol": protocol.id,
              "pair": pair.id, "teacher_timm": cfg.model(pair.teacher).timm,
              "student_timm": cfg.model(pair.student).timm,
              "image_size": protocol.augment.image_size, "counted_with_batch": batch_size,
              "counted": "torch.utils.flop_counter over one training step (forward + backward): matmul, conv, "
                         "attention; elementwise ops, norms and the optimizer are not counted",
              "methods": per_method, "flop_ratios": ratios(per_method, "train_gflops_per_image")}
    path = Path(out_dir) / f"flops-{protocol.id}-{pair.id}.json"
    write_json(path, result)
    return path
