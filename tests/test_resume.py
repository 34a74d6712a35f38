"""Reliability: a killed job resumes to the same result, bad training states stop cleanly, DDP matches one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "tas", *args]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    common = ["--set", f"paths.data={root / 'data'}", "--set", "datasets.synthetic.train_size=960",
              "--set", "datasets.synthetic.test_size=200", "--set", "recipes.mini_teacher.epochs=1",
              "--set", "experiments.mini.teachers.tiny_vit.epochs=1",  # its own 20 epochs would set the pace
              "--set", "recipes.mini.epochs=3", "--set", "runtime.progress=false"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    teacher = ["--set", f"paths.results={root / 'teacher'}"]
    subprocess.run(_cmd("prepare-data", "--dataset", "synthetic", *common), check=True, cwd=ROOT, env=env,
                   capture_output=True)
    subprocess.run(_cmd("train-teacher", "--experiment", "mini", "--teacher", "tiny_vit", "--threads", "1",
                        *common, *teacher),
                   check=True, cwd=ROOT, env=env, capture_output=True)
    return root, common, env


def _distill_args(results: Path, common: list[str]) -> list[str]:
    return ["distill", "--experiment", "mini", "--pair", "tiny_vit-tiny_mlp", "--method", "kd", "--threads", "1",
            *common, "--set", f"paths.results={results}"]


def _copy_teacher(root: Path, results: Path) -> None:
    src = root / "teacher" / "mini" / "teachers" / "tiny_vit"
    dst = results / "mini" / "teachers" / "tiny_vit"
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("model.pt", "metrics.json"):
        (dst / name).write_bytes((src / name).read_bytes())


def _run_dir(results: Path) -> Path:
    return results / "mini" / "runs" / "tiny_vit-tiny_mlp" / "kd" / "seed0"


@pytest.fixture(scope="module")
def clean(setup) -> Path:
    """One uninterrupted run of the common settings, in one process: what a resumed run must equal, and what
    two DDP processes must match."""
    root, common, env = setup
    clean = root / "clean"
    _copy_teacher(root, clean)
    subprocess.run(_cmd(*_distill_args(clean, common)), check=True, cwd=ROOT, env=env, capture_output=True)
    return clean


def test_killed_distill_resumes_to_the_same_result(setup, clean):
    root, common, env = setup
    killed = root / "killed"
    _copy_teacher(root, killed)

    run = _run_dir(killed)
    last = run / "ckpt" / "last.pt"
    kills = 0
    # Kill twice: once mid-epoch 2, once right after a checkpoint appears (during or just after its write).
    for wait_for_epochs, delay in ((1, 0.4), (2, 0.0)):
        proc = subprocess.Popen(_cmd(*_distill_args(killed, common)), cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if last.exists() and torch.load(last, weights_only=True)["epoch"] + 1 >= wait_for_epochs:
                break
            time.sleep(0.05)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        assert not (run / "metrics.json").exists() or proc.returncode == 0
    assert kills >= 1
    # A kill during a write leaves only a temp file beside the checkpoint; simulate the worst case too.
    (last.parent / ".last.pt.partial.tmp").write_bytes(last.read_bytes()[:100])
    assert not (run / "model.pt").exists(), "a final output appeared before the job finished"

    done = subprocess.run(_cmd(*_distill_args(killed, common)), cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resumed" in done.stderr

    a = json.loads((_run_dir(clean) / "metrics.json").read_text())
    b = json.loads((run / "metrics.json").read_text())
    assert a["top1"] == b["top1"] and a["top5"] == b["top5"]
    wa = torch.load(_run_dir(clean) / "model.pt", weights_only=True)
    wb = torch.load(run / "model.pt", weights_only=True)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), f"{key} differs after resume"
    assert (_run_dir(clean) / "history.csv").read_text().splitlines()[1:] != []
    assert not list((run / "ckpt").glob(".*.tmp"))


def test_non_finite_loss_stops_and_names_the_term(setup):
    root, common, env = setup
    results = root / "nan"
    _copy_teacher(root, results)
    # T = 0 divides the logits by zero: the KD term becomes non-finite at the first step.
    proc = subprocess.run(_cmd(*_distill_args(results, common), "--set", "methods.kd.T=1.0e-45"), cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    last_line = proc.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: loss_kd became non-finite at epoch 1 step 1")
    assert not (_run_dir(results) / "model.pt").exists() and not (_run_dir(results) / "metrics.json").exists()


def test_corrupt_teacher_checkpoint_is_refused(setup):
    root, common, env = setup
    results = root / "corrupt"
    _copy_teacher(root, results)
    weights = results / "mini" / "teachers" / "tiny_vit" / "model.pt"
    weights.write_bytes(weights.read_bytes()[:1000])
    proc = subprocess.run(_cmd(*_distill_args(results, common)), cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "truncated or not a weights-only PyTorch file" in lines[0]
    assert not _run_dir(results).exists()


def test_ddp_two_processes_match_one(setup, clean):
    root, common, env = setup
    one, two = clean, root / "ddp2"  # one process: the clean run of the same settings
    _copy_teacher(root, two)
    # global batch 64 either way: one process forwards 64, each of two forwards 32
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                "29533", "-m", "tas"]
    multi = subprocess.run(torchrun + _distill_args(two, common),
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert multi.returncode == 0, multi.stderr[-3000:]
    a = json.loads((_run_dir(one) / "metrics.json").read_text())
    b = json.loads((_run_dir(two) / "metrics.json").read_text())
    # Same global batch and sample order; only per-rank augmentation draws and BN statistics differ.
    assert abs(a["top1"] - b["top1"]) < 12.0, (a["top1"], b["top1"])
    assert b["top1"] > 20.0
    history = (_run_dir(two) / "history.csv").read_text().splitlines()
    assert len(history) == 4  # header + 3 epochs, written once (rank 0 only)


def test_gpus_per_job_relaunches_the_same_command_under_torchrun(setup, tmp_path):
    root, common, env = setup
    results = root / "relaunch"
    _copy_teacher(root, results)
    env = dict(env, TAS_GPU_LOCK_DIR=str(tmp_path / "slots"), MASTER_PORT="29541")
    proc = subprocess.run(_cmd(*_distill_args(results, common), "--set", "recipes.mini.epochs=1",
                               "--set", "experiments.mini.gpus_per_job=2"),
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((_run_dir(results) / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["top1"] > 0
    history = (_run_dir(results) / "history.csv").read_text().splitlines()
    assert len(history) == 2  # written once, by rank 0
