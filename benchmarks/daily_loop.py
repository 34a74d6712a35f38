"""The daily loop of issue 24, measured for one or more commits in one run (before/after on the same
machine): per commit, a fresh clone, then

    mini      `snakemake --cores 2` of the mini study: wall, CPU seconds of all its processes
              (getrusage of the children), CPU per rule from the rules' benchmark TSVs
    noop      the same command again on the finished study ("Nothing to be done")
    plan      `snakemake -n --config experiment=cifar100` (a dry run of the paper study)
    describe  `python -m tas describe --experiment cifar100 --pair P` for every pair, cold and warm
    suite     the README's test command without its install, with `--durations=15` (optional: --suite)

    python benchmarks/daily_loop.py 722af31 HEAD --suite --out results/bench/daily-loop.json
    python benchmarks/daily_loop.py --table results/bench/daily-loop.json [more.json]   # the Markdown table

Every command runs with the same interpreter (this venv); a clone imports its own `tas` because
`python -m` puts the working directory first. The foreign load (other processes' share of the
machine while a step ran) is recorded beside every figure: read a figure with a high share as
an upper bound.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tas.bench.load import ForeignLoad  # noqa: E402
from tas.bench.pipeline import snakemake_job_times  # noqa: E402

SUITE_ARGS = ["-q", "-n", "2", "--dist", "loadfile", "-m", "not smoke", "--ignore=tests/test_slurm.py"]
CIFAR_PAIRS = ["swin_t-r18", "vit_s-r18", "mixer_b16-r18", "swin_t-mbv2", "vit_s-mbv2", "mixer_b16-mbv2",
               "convnext_t-deit_t", "mixer_b16-deit_t", "convnext_t-swin_p", "mixer_b16-swin_p",
               "convnext_t-resmlp_s12", "swin_t-resmlp_s12"]


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def timed(cmd: list[str], cwd: Path, env: dict, timeout: float = 7200) -> dict:
    cpu0, t0 = children_cpu(), time.perf_counter()
    with ForeignLoad() as load:
        try:
            proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
            rc, out = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as err:
            rc, out = None, str(err)
    return {"cmd": " ".join(cmd), "returncode": rc, "wall_s": round(time.perf_counter() - t0, 2),
            "cpu_s": round(children_cpu() - cpu0, 1), "foreign_cpu_fraction": load.fraction, "tail": out[-3000:]}


def clone(ref: str, dest: Path) -> str:
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(ROOT), str(dest)], check=True)
    subprocess.run(["git", "checkout", "-q", ref], cwd=dest, check=True)
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=dest, capture_output=True, text=True,
                          check=True).stdout.strip()


def breakdown(cpu_log: Path, total_cpu_s: float) -> dict | None:
    """Where the study's CPU seconds went, per subcommand, from the lines each `python -m tas` process wrote
    (tas.cli, TAS_CPU_LOG): its start (interpreter, tas.cli), its subcommand module's import (torch, timm),
    and the rest (the job's work); what no tas process used is Snakemake's own (and the shells')."""
    if not cpu_log.is_file():
        return None  # a commit before tas.cli wrote these lines
    per: dict[str, dict] = {}
    for line in cpu_log.read_text().splitlines():
        rec = json.loads(line)
        agg = per.setdefault(rec["argv"][0], {"processes": 0, "start_s": 0.0, "import_s": 0.0, "work_s": 0.0})
        agg["processes"] += 1
        agg["start_s"] += rec["start_s"]
        agg["import_s"] += rec["job_import_s"]
        agg["work_s"] += rec["total_s"] - rec["start_s"] - rec["job_import_s"]
    per = {k: {n: round(v, 1) for n, v in agg.items()} for k, agg in per.items()}
    tas_total = sum(a["start_s"] + a["import_s"] + a["work_s"] for a in per.values())
    return {"per_subcommand": per, "tas_processes_s": round(tas_total, 1),
            "snakemake_and_shells_s": round(total_cpu_s - tas_total, 1)}


def slowest(tail: str) -> list[str]:
    return [line.strip() for line in tail.splitlines() if re.match(r"\s*\d+\.\d+s (call|setup|teardown)", line)]


def measure(ref: str, work: Path, suite: bool, pairs: list[str], keep_tables: Path | None = None) -> dict:
    commit = clone(ref, work)
    py = sys.executable
    # an empty user cache per commit (tas.usercache): its first describe is cold, and nothing one commit
    # derived speeds up the next one's study
    env = dict(os.environ, PATH=str(Path(py).parent) + os.pathsep + os.environ.get("PATH", ""),
               CUDA_VISIBLE_DEVICES="", DVC_NO_ANALYTICS="1", PYTHONUNBUFFERED="1",
               TAS_CACHE_DIR=str(work.parent / "user-cache"))
    env.pop("PYTHONPATH", None)
    out: dict = {"ref": ref, "commit": commit}
    print(f"[{commit}] mini study ...", file=sys.stderr, flush=True)
    cpu_log = work.parent / "cpu.jsonl"
    mini = timed([py, "-m", "snakemake", "--cores", "2"], work, dict(env, TAS_CPU_LOG=str(cpu_log)))
    mini["per_rule"] = snakemake_job_times(work)["per_rule"]
    mini["breakdown"] = breakdown(cpu_log, mini["cpu_s"])
    out["mini"] = mini
    tables = work / "results" / "mini" / "tables"
    if keep_tables is not None and tables.is_dir():  # the study's tables as this commit made them (docs/results)
        shutil.rmtree(keep_tables, ignore_errors=True)
        shutil.copytree(tables, keep_tables)
    print(f"[{commit}] mini {mini['wall_s']} s, {mini['cpu_s']} CPU-s (rc {mini['returncode']})", file=sys.stderr)
    out["noop"] = timed([py, "-m", "snakemake", "--cores", "2"], work, env)
    out["noop"]["nothing_to_do"] = "Nothing to be done" in out["noop"]["tail"]
    out["plan_cifar100"] = timed([py, "-m", "snakemake", "-n", "--cores", "2", "--config", "experiment=cifar100"],
                                 work, env)
    out["describe"] = {}
    for pair in pairs:
        cmd = [py, "-m", "tas", "describe", "--experiment", "cifar100", "--pair", pair]
        first, second = timed(cmd, work, env), timed(cmd, work, env)
        out["describe"][pair] = {"cold": first, "warm": second}
    if suite:
        print(f"[{commit}] test suite ...", file=sys.stderr, flush=True)
        run = timed([py, "-m", "pytest", *SUITE_ARGS, "--durations=15"], work, env)
        run["slowest"] = slowest(run["tail"])
        m = re.search(r"(\d+) passed", run["tail"])
        run["passed"] = int(m.group(1)) if m else None
        out["suite"] = run
        print(f"[{commit}] suite {run['wall_s']} s (rc {run['returncode']})", file=sys.stderr)
    return out


TARGETS = {"mini_wall_s": 300, "mini_cpu_s": 450, "suite_wall_s": 420, "describe_wall_s": 3, "noop_wall_s": 2,
           "plan_cifar100_wall_s": 5}


def _fmt_s(value) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes} min {seconds:02d} s"


def table(result: dict) -> str:
    """One row per target, one column per measured commit."""
    runs = result["runs"]
    rows = [
        ("mini study, wall (`snakemake --cores 2`)", "mini_wall_s", lambda r: r["mini"]["wall_s"]),
        ("mini study, CPU seconds (all processes)", "mini_cpu_s", lambda r: r["mini"]["cpu_s"]),
        ("test suite, wall (README command, no install)", "suite_wall_s",
         lambda r: r.get("suite", {}).get("wall_s")),
        ("`tas describe`, per cifar100 pair, cold (max)", "describe_wall_s",
         lambda r: max(p["cold"]["wall_s"] for p in r["describe"].values())),
        ("`tas describe`, per cifar100 pair, warm (max)", "describe_wall_s",
         lambda r: max(p["warm"]["wall_s"] for p in r["describe"].values())),
        ("no-op `snakemake` on the finished mini study", "noop_wall_s", lambda r: r["noop"]["wall_s"]),
        ("`snakemake -n --config experiment=cifar100`", "plan_cifar100_wall_s", lambda r: r["plan_cifar100"]["wall_s"]),
    ]
    head = "| target | goal | " + " | ".join(f"`{r['commit']}`" for r in runs) + " |"
    lines = [head, "|---|---:|" + "---:|" * len(runs)]
    for label, key, get in rows:
        cells = []
        for run in runs:
            try:
                value = get(run)
            except (KeyError, ValueError):
                value = None
            text = f"{value:.0f}" if key == "mini_cpu_s" and value is not None else _fmt_s(value)
            cells.append(f"**{text}**" if value is not None and value <= TARGETS[key] else text)
        goal = f"<= {TARGETS[key]}" if key == "mini_cpu_s" else f"<= {_fmt_s(TARGETS[key])}"
        lines.append(f"| {label} | {goal} | " + " | ".join(cells) + " |")
    loads = ", ".join(f"`{r['commit']}` mini {r['mini']['foreign_cpu_fraction']}" for r in runs)
    lines.append("")
    lines.append(f"Bold: the goal is met. Other processes' share of the machine during each mini study: {loads}.")
    for run in runs:
        parts = run["mini"].get("breakdown")
        if parts:
            lines += ["", f"Where the mini study's CPU seconds went at `{run['commit']}`:", "",
                      "| subcommand | processes | start (interpreter, tas.cli) | import of its job module | work |",
                      "|---|---:|---:|---:|---:|"]
            for name, agg in sorted(parts["per_subcommand"].items(), key=lambda kv: -kv[1]["work_s"]):
                lines.append(f"| {name} | {agg['processes']} | {agg['start_s']:.0f} | {agg['import_s']:.0f} | "
                             f"{agg['work_s']:.0f} |")
            lines.append(f"| Snakemake itself and the job shells | | | | {parts['snakemake_and_shells_s']:.0f} |")
    for run in runs:
        if run.get("suite", {}).get("slowest"):
            lines += ["", f"The 15 slowest tests at `{run['commit']}` (pytest --durations=15):", ""]
            lines += [f"    {line}" for line in run["suite"]["slowest"]]
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) >= 3 and sys.argv[1] == "--table":  # one or more JSONs: their runs side by side, in order
        runs = [run for name in sys.argv[2:] for run in json.loads(Path(name).read_text())["runs"]]
        print(table({"runs": runs}))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("refs", nargs="+", help="git refs to measure, in order (e.g. the old commit, then HEAD)")
    ap.add_argument("--suite", action="store_true", help="also time the test suite (minutes)")
    ap.add_argument("--pairs", default=",".join(CIFAR_PAIRS), help="cifar100 pairs for describe")
    ap.add_argument("--out", type=Path, help="JSON to write (default: stdout)")
    ap.add_argument("--keep-tables", type=Path, help="copy the last commit's results/mini/tables here")
    args = ap.parse_args()
    import torch  # noqa: F401  (versions for the header)
    from tas.bench.machine import cpu_model, versions

    result = {"benchmark": "daily-loop", "cpu": cpu_model(), "cpu_count": os.cpu_count(), "versions": versions(),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "runs": []}
    pairs = [p for p in args.pairs.split(",") if p]
    for ref in args.refs:
        tmp = Path(tempfile.mkdtemp(prefix="tas-daily-loop-"))
        try:
            keep = args.keep_tables if ref == args.refs[-1] else None
            result["runs"].append(measure(ref, tmp / "repo", args.suite, pairs, keep))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if args.out:  # each commit's figures kept even if a later one fails
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=1) + "\n")
    if not args.out:
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
