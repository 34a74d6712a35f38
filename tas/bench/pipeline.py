"""Wall time of the whole pipeline (`bench --what pipeline`): `snakemake --cores 2` of the selected study in
a fresh copy of the checkout, then the no-op rerun, a dry run and `dvc status`. Minutes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable

import torch

from tas.bench import TARGETS
from tas.bench.load import ForeignLoad
from tas.bench.machine import device_slug, header
from tas.config import Config
from tas.errors import TasError
from tas.io import write_json


def repo_files(root: Path) -> list[str]:
    """Tracked files plus untracked ones git does not ignore (the working tree as it is now)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                             capture_output=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        raise TasError(f"bench pipeline needs a git checkout to copy ({err}); run it from the project root") from None
    return sorted({f for f in out.stdout.decode().split("\0") if f})


def copy_checkout(root: Path, dest: Path, drop: Iterable[str] = ("results/", "data/")) -> int:
    """Copy the checkout's files (see repo_files) to dest, leaving out data and results (the study
    must produce them itself)."""
    count = 0
    for rel in repo_files(root):
        if any(rel.startswith(prefix) for prefix in drop):
            continue
        src = root / rel
        if not src.is_file():
            continue  # deleted in the working tree but still in the index
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
        count += 1
    return count


def _timed(cmd: list[str], cwd: Path, env: dict, log: Path, preexec=None, timeout: float | None = None) -> dict:
    t0 = time.perf_counter()
    with open(log, "w") as fh, ForeignLoad() as load:
        try:
            returncode = subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                        preexec_fn=preexec, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            returncode = None  # killed at the limit; the wall time says how long it had run
    wall = time.perf_counter() - t0
    text = log.read_text(errors="replace")
    return {"cmd": " ".join(cmd), "returncode": returncode, "wall_s": round(wall, 2), "timed_out": returncode is None,
            "foreign_cpu_fraction": load.fraction, "log_tail": text[-1500:]}


def _two_core_affinity():
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) <= 2:
        return None, cpus
    chosen = set(cpus[:2])
    return (lambda: os.sched_setaffinity(0, chosen)), sorted(chosen)


def bench_pipeline(cfg: Config, *, out_dir: Path | str = "results/bench", experiment: str | None = None,
                   cores: int = 2, root: Path | None = None, snakemake_args: Iterable[str] = (),
                   timeout: float | None = 3600, tag: str | None = None) -> Path:
    """Wall time of `snakemake --cores 2` in a fresh copy of the checkout, and of the no-op rerun."""
    root = Path(root or Path.cwd()).resolve()
    if not (root / "Snakefile").is_file():
        raise TasError(f"{root}/Snakefile is missing; run the pipeline benchmark from the project root")
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""), CUDA_VISIBLE_DEVICES="",
               DVC_NO_ANALYTICS="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(cores),
               GIT_AUTHOR_NAME="tas-bench", GIT_AUTHOR_EMAIL="bench@localhost",
               GIT_COMMITTER_NAME="tas-bench", GIT_COMMITTER_EMAIL="bench@localhost")
    env.pop("PYTHONPATH", None)
    preexec, cpus = _two_core_affinity() if cores == 2 else (None, [])
    snakemake_args = list(snakemake_args)
    snakemake = [sys.executable, "-m", "snakemake", "--cores", str(cores), *snakemake_args]
    if experiment:
        snakemake += ["--config", f"experiment={experiment}"]
    result = header("pipeline", torch.device("cpu"))
    with tempfile.TemporaryDirectory(prefix="tas-bench-pipeline-") as tmp:
        work = Path(tmp) / "repo"
        logs = Path(tmp) / "logs"
        logs.mkdir()
        t0 = time.perf_counter()
        n_files = copy_checkout(root, work)
        copy_s = time.perf_counter() - t0
        git_steps = _git_snapshot(work, env, logs) if (work / "dvc.yaml").is_file() else []
        print(f"bench pipeline: {n_files} files copied to {work}; running {' '.join(snakemake)}", file=sys.stderr)
        full = _timed(snakemake, work, env, logs / "full.log", preexec, timeout)
        print(f"bench pipeline: full run {full['wall_s']} s (rc {full['returncode']})", file=sys.stderr)
        noop = _timed(snakemake, work, env, logs / "noop.log", preexec, timeout)
        noop["nothing_to_do"] = "Nothing to be done" in noop["log_tail"]
        dryrun = _timed(snakemake + ["-n"], work, env, logs / "dry.log", preexec, timeout)
        dvc = _dvc_noop(work, env, logs, preexec)
        outputs = sorted(str(p.relative_to(work)) for p in (work / "results").rglob("*") if p.is_file()) \
            if (work / "results").is_dir() else []
        jobs = snakemake_job_times(work)
    result.update({
        "experiment": experiment or list(cfg.selected), "cores": cores, "cpu_affinity": cpus,
        "settings": {"copy": "git ls-files --cached --others --exclude-standard, data/ and results/ left out",
                     "files_copied": n_files, "copy_s": round(copy_s, 2), "snakemake_args": snakemake_args,
                     "env": {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(cores)}},
        "full_run": full, "noop_rerun": noop, "dry_run": dryrun, "dvc": {"git_snapshot": git_steps, **dvc},
        "outputs": {"count": len(outputs), "tables": [o for o in outputs if "/tables/" in o][:20]},
        "jobs": jobs,
        "target_study_met": bool(full["returncode"] == 0 and full["wall_s"] <= TARGETS["mini_study_wall_s_max"]),
        "target_noop_met": bool(noop["returncode"] == 0 and noop["wall_s"] <= TARGETS["noop_rerun_wall_s_max"]),
    })
    path = Path(out_dir) / f"{device_slug(torch.device('cpu'), cores)}-pipeline{'-' + tag if tag else ''}.json"
    write_json(path, result)
    return path


def snakemake_job_times(work: Path) -> dict:
    """Per-job wall/CPU seconds from the rules' `benchmark:` TSVs (tas.matrix.BENCHMARK_ROOT), and
    totals per rule: where the study's time goes."""
    from tas.matrix import BENCHMARK_ROOT

    root = work / BENCHMARK_ROOT
    jobs, per_rule = [], {}
    for tsv in sorted(root.rglob("*.tsv")) if root.is_dir() else []:
        lines = tsv.read_text().strip().splitlines()
        if len(lines) < 2:
            continue
        row = dict(zip(lines[0].split("\t"), lines[1].split("\t")))
        rel = tsv.relative_to(root)
        rule = rel.parts[0]
        def num(key: str) -> float:
            try:
                return float(row.get(key, ""))
            except ValueError:  # Snakemake writes '-' where it measured nothing
                return 0.0

        wall, cpu, rss = num("s"), num("cpu_time"), num("max_rss")
        jobs.append({"rule": rule, "job": "/".join(rel.with_suffix("").parts[1:]), "wall_s": round(wall, 2),
                     "cpu_s": round(cpu, 2), "max_rss_mb": round(rss, 1)})
        agg = per_rule.setdefault(rule, {"jobs": 0, "wall_s": 0.0, "cpu_s": 0.0})
        agg["jobs"] += 1
        agg["wall_s"] = round(agg["wall_s"] + wall, 2)
        agg["cpu_s"] = round(agg["cpu_s"] + cpu, 2)
    return {"per_rule": per_rule, "per_job": sorted(jobs, key=lambda j: -j["wall_s"]),
            "sum_job_wall_s": round(sum(j["wall_s"] for j in jobs), 2)}


def _git_snapshot(work: Path, env: dict, logs: Path) -> list[dict]:
    """Make the fresh copy a git repository with one commit (DVC needs one), before any output exists."""
    steps = []
    for name, cmd in (("git-init", ["git", "init", "-q"]), ("git-add", ["git", "add", "-A"]),
                      ("git-commit", ["git", "commit", "-q", "--no-verify", "-m", "bench snapshot"])):
        res = _timed(cmd, work, env, logs / f"{name}.log", None, 600)
        steps.append({k: res[k] for k in ("cmd", "returncode", "wall_s")})
        if res["returncode"] != 0:
            steps[-1]["error"] = res["log_tail"][-300:]
            break
    return steps


def _dvc_noop(work: Path, env: dict, logs: Path, preexec) -> dict:
    """`dvc status` in the copy after `dvc commit` recorded the Snakemake outputs (the documented
    way to adopt outputs produced outside DVC): a no-op check that should find nothing to do."""
    if not (work / "dvc.yaml").is_file():
        return {"skipped": "no dvc.yaml in the checkout"}
    if not (work / ".git").is_dir():
        return {"skipped": "the copy is not a git repository (git init failed)"}
    dvc = [sys.executable, "-m", "dvc"]
    setup = []
    if not (work / ".dvc").is_dir():  # the checkout may carry its own .dvc/config
        setup.append(("dvc-init", dvc + ["init", "-q"]))
    setup += [("dvc-config", dvc + ["config", "core.analytics", "false"]), ("dvc-commit", dvc + ["commit", "-f"])]
    steps = []
    for name, cmd in setup:
        res = _timed(cmd, work, env, logs / f"{name}.log", preexec, 1800)
        steps.append({k: res[k] for k in ("cmd", "returncode", "wall_s")})
        if res["returncode"] != 0:
            steps[-1]["error"] = res["log_tail"][-600:]
            if name != "dvc-commit":
                return {"setup": steps}
    status = _timed(dvc + ["status"], work, env, logs / "dvc-status.log", preexec, 600)
    status["up_to_date"] = "up to date" in status["log_tail"]
    return {"setup": steps, "status": status,
            "target_noop_met": bool(status["returncode"] == 0 and status["up_to_date"]
                                    and status["wall_s"] <= TARGETS["noop_rerun_wall_s_max"])}

