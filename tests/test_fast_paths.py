"""The speed switches a GPU run uses (bf16 autocast, channels_last, torch.compile), run through the
real CLI and trainer on the CPU, where they are opt-in (`runtime.amp: auto` is off on CPU). A GPU
changes the kernels, not this code path: a job that breaks here would break on the cluster."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow  # each test trains through the CLI in a subprocess


def tas(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tas", *args], capture_output=True, text=True, cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("fast")
    sets = [
        "--set", f"paths.data={root / 'data'}", "--set", f"paths.results={root / 'results'}",
        "--set", "datasets.synthetic.train_size=256", "--set", "datasets.synthetic.test_size=128",
        "--set", "recipes.mini_teacher.epochs=1", "--set", "recipes.mini.epochs=1", "--set", "runtime.progress=false",
    ]
    for argv in (["prepare-data", "--dataset", "synthetic"],
                 ["train-teacher", "--experiment", "mini", "--teacher", "tiny_cnn"],
                 ["prepare-run", "--experiment", "mini", "--pair", "tiny_cnn-tiny_vit", "--method", "tas"]):
        proc = tas(*argv, *sets)
        assert proc.returncode == 0, proc.stderr
    return sets


def _run_dir(tiny: list[str], pair: str, method: str) -> Path:
    results = Path(next(a.split("=", 1)[1] for a in tiny if a.startswith("paths.results=")))
    return results / "mini" / "runs" / pair / method / "seed0"


def _check_outputs(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["top1"] <= 100.0
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert rows and all(math.isfinite(float(rows[0][k])) for k in rows[0] if k.startswith("loss"))
    weights = torch.load(run / "model.pt", weights_only=True)
    # autocast computes in bf16 but the saved weights stay the fp32 masters
    assert all(t.dtype in (torch.float32, torch.int64) for t in weights.values())
    return metrics


def test_tas_under_bf16_autocast_and_channels_last(tiny):
    # CNN teacher -> ViT student: channels_last applies to the teacher (A, the CNN), the assistant runs
    # B's (the student ViT's) stage 4 on L2G's output under autocast, and every loss term is summed from
    # bf16 logits.
    proc = tas("distill", "--experiment", "mini", "--pair", "tiny_cnn-tiny_vit", "--method", "tas", *tiny,
               "--set", "runtime.amp=bf16", "--set", "runtime.channels_last=on")
    assert proc.returncode == 0, proc.stderr
    run = _run_dir(tiny, "tiny_cnn-tiny_vit", "tas")
    metrics = _check_outputs(run)
    assert metrics["placement"] == {"amp": "bf16", "channels_last": True, "compile": False}
    assert metrics["initial_state"] == "seed 0"  # L2G drawn from the run's own seed
    history = (run / "history.csv").read_text().splitlines()[0]
    for term in ("loss_ce", "loss_ce_assistant", "loss_nce_ts", "loss_ofa_ta", "loss_nce_as"):
        assert term in history, term


def test_kd_with_torch_compile(tiny):
    proc = tas("distill", "--experiment", "mini", "--pair", "tiny_cnn-tiny_vit", "--method", "kd", *tiny,
               "--set", "runtime.compile=true")
    assert proc.returncode == 0, proc.stderr
    metrics = _check_outputs(_run_dir(tiny, "tiny_cnn-tiny_vit", "kd"))
    assert metrics["placement"] == {"amp": "off", "channels_last": False, "compile": True}
