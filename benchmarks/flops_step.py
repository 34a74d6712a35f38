"""FLOPs of one training step per image, per method, for a pair (device-independent: count the
224-px pairs on a CPU). Writes results/bench/flops-<protocol>-<pair>.json.

    python benchmarks/flops_step.py --experiment cifar100 --pair swin_t-r18
    python benchmarks/flops_step.py --experiment cifar100 --pair convnext_t-deit_t --methods kd,tas
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tas.bench import DEFAULT_METHODS, parse_methods  # noqa: E402
from tas.bench.flops import bench_flops  # noqa: E402
from tas.config import load_config  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default=str(ROOT / "params.yaml"))
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--experiment", default=None)
    p.add_argument("--pair", default=None)
    p.add_argument("--methods", default=DEFAULT_METHODS)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--output-dir", default=str(ROOT / "results" / "bench"))
    args = p.parse_args(argv)
    cfg = load_config(args.params, args.overrides)
    print(bench_flops(cfg, args.experiment, args.pair, parse_methods(cfg, args.methods), batch_size=args.batch_size,
                      threads=args.threads, out_dir=args.output_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
