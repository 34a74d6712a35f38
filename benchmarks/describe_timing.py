"""Wall time of `python -m tas describe --json` per pair (the whole CLI process, imports included): cold
(an empty describe cache) and warm (the cache that cold run filled), optionally beside an earlier checkout
of the code (no cache), and whether all of them print the same JSON.

    git archive 722af31 | tar -x -C /tmp/before     # the code before the cache (or git worktree add)
    python benchmarks/describe_timing.py --before /tmp/before --out results/bench/describe-timing.json

`--tree DIR` times another checkout instead of this one (e.g. `git archive` of a commit, so that
uncommitted edits in this working tree do not count).

Every process runs with this interpreter; a checkout imports its own `tas` (`python -m` puts the
working directory first). Each pair's cold run gets a fresh, empty TAS_CACHE_DIR, so no pair profits
from another's entries. The user's own cache is never read or written. Nothing waits for a quiet
machine: each run records its CPU seconds (user + system of the process: what it costs, however busy the
machine), the share of the CPU other processes used meanwhile (tas.bench.load.ForeignLoad) and the load
average; read a wall time with a high foreign share as an upper bound.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tas.bench.load import ForeignLoad, loadavg  # noqa: E402
from tas.bench.machine import cpu_model  # noqa: E402


def run(tree: Path, experiment: str, pair: str, cache: str) -> dict:
    cmd = [sys.executable, "-m", "tas", "describe", "--experiment", experiment, "--pair", pair, "--json"]
    env = {**os.environ, "TAS_CACHE_DIR": cache, "CUDA_VISIBLE_DEVICES": ""}
    env.pop("PYTHONPATH", None)
    cpu0, t0 = _children_cpu(), time.perf_counter()
    with ForeignLoad() as load:
        proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=1800)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} (in {tree}) failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "foreign_cpu_fraction": load.fraction,
            "loadavg": loadavg(), "json_sha256": hashlib.sha256(proc.stdout.encode()).hexdigest()}


def _children_cpu() -> float:
    """User + system CPU seconds of the finished child processes: what a run cost, whatever else ran."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def commit(tree: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tree, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "tas"], cwd=tree, capture_output=True,
                               text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() + ("+dirty (tas/)" if dirty else "")) or None


def main() -> int:
    from tas.config import load_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiment", default="cifar100")
    ap.add_argument("--pairs", help="comma-separated pair ids (default: every pair of the experiment)")
    ap.add_argument("--tree", type=Path, default=ROOT, help="the checkout to time (default: this one)")
    ap.add_argument("--tree-label", help="what --tree is (default: its git commit, if it is a clone)")
    ap.add_argument("--before", type=Path, help="a checkout of the earlier code, timed (once per pair) beside it")
    ap.add_argument("--before-label", help="what --before is (default: its git commit, if it is a clone)")
    ap.add_argument("--warm-repeats", type=int, default=3, help="warm runs per pair (their median is reported)")
    ap.add_argument("--out", type=Path, help="JSON to write (default: stdout)")
    args = ap.parse_args()

    pairs = ([p for p in args.pairs.split(",") if p] if args.pairs
             else [p.id for p in load_config(args.tree / "params.yaml").experiment(args.experiment).pairs])
    result = {"benchmark": "describe-timing", "experiment": args.experiment, "cpu": cpu_model(),
              "cpu_count": os.cpu_count(), "python": platform.python_version(),
              "commit": args.tree_label or commit(args.tree) or str(args.tree),
              "before": None if args.before is None else (args.before_label or commit(args.before) or str(args.before)),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv[1:], "pairs": {}}
    for pair in pairs:
        row: dict = {}
        if args.before is not None:
            with tempfile.TemporaryDirectory(prefix="tas-describe-before-") as cache:  # old code: no cache read
                row["before"] = run(args.before, args.experiment, pair, cache)
        cache = tempfile.mkdtemp(prefix="tas-describe-cache-")
        try:
            row["cold"] = run(args.tree, args.experiment, pair, cache)
            row["warm"] = [run(args.tree, args.experiment, pair, cache) for _ in range(args.warm_repeats)]
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        row["warm_median_s"] = statistics.median(r["wall_s"] for r in row["warm"])
        row["warm_median_cpu_s"] = statistics.median(r["cpu_s"] for r in row["warm"])
        digests = {r["json_sha256"] for r in (row.get("before"), row["cold"], *row["warm"]) if r is not None}
        row["same_json"] = len(digests) == 1
        result["pairs"][pair] = row
        print(f"{pair}: " + (f"before {row['before']['wall_s']} s, " if "before" in row else "")
              + f"cold {row['cold']['wall_s']} s, warm {row['warm_median_s']} s (CPU: "
              + (f"before {row['before']['cpu_s']} s, " if "before" in row else "")
              + f"cold {row['cold']['cpu_s']} s, warm {row['warm_median_cpu_s']} s), same JSON {row['same_json']}",
              file=sys.stderr, flush=True)
    rows = result["pairs"].values()
    result["summary"] = {
        "before_max_s": max((r["before"]["wall_s"] for r in rows if "before" in r), default=None),
        "cold_max_s": max(r["cold"]["wall_s"] for r in rows),
        "warm_max_s": max(r["warm_median_s"] for r in rows),
        "before_max_cpu_s": max((r["before"]["cpu_s"] for r in rows if "before" in r), default=None),
        "cold_max_cpu_s": max(r["cold"]["cpu_s"] for r in rows),
        "warm_max_cpu_s": max(r["warm_median_cpu_s"] for r in rows),
        "all_same_json": all(r["same_json"] for r in rows),
        "foreign_cpu_fraction_max": max((x["foreign_cpu_fraction"] or 0.0 for r in rows
                                         for x in (r.get("before"), r["cold"], *r["warm"]) if x), default=None),
    }
    text = json.dumps(result, indent=1) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0 if result["summary"]["all_same_json"] else 1


if __name__ == "__main__":
    sys.exit(main())
