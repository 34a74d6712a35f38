"""`python -m tas describe`: the cost table of an experiment's methods on one pair, without training."""

from __future__ import annotations

import tas  # noqa: F401  (installs the torchvision guard; must precede `import timm`)

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tas.config import load_config
from tas.describe import describe, render
from tas.engine.evaluate import forward_flops
from tas.models import create_model

ROOT = Path(__file__).resolve().parent.parent
CFG = load_config(ROOT / "params.yaml")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mini():
    return describe(CFG, "mini", "tiny_cnn-tiny_vit")


def test_every_method_of_the_experiment_is_described(mini):
    assert [row["method"] for row in mini["methods"]] == list(CFG.experiments["mini"].methods)
    by_id = {row["method"]: row for row in mini["methods"]}
    assert by_id["scratch"]["extra_parameters"] == by_id["kd"]["extra_parameters"] == 0
    assert by_id["ofa"]["extra_parameters"] > 0 and by_id["tas"]["extra_parameters"] > 0
    # a teacher's forward costs something; OFA's branches and TAS's assistant cost more again
    assert (by_id["scratch"]["train_gflops_per_image"] < by_id["kd"]["train_gflops_per_image"]
            < by_id["ofa"]["train_gflops_per_image"])
    assert by_id["kd"]["train_gflops_per_image"] < by_id["tas"]["train_gflops_per_image"]


def test_scratch_training_flops_are_forward_plus_backward_of_the_student(mini):
    # counted as describe counts (meta device, math attention), so the ViT's attention products are in both
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with torch.device("meta"), sdpa_kernel(SDPBackend.MATH):
        student = create_model(CFG.models["tiny_vit"], 10, 32)
        forward = forward_flops(student.model, 32, torch.device("meta"))
    with torch.device("cpu"):  # a CPU run's fused attention kernel is invisible to the counter
        fused = forward_flops(create_model(CFG.models["tiny_vit"], 10, 32).model, 32, torch.device("cpu"))
    assert forward > fused
    scratch = next(row for row in mini["methods"] if row["method"] == "scratch")["train_gflops_per_image"] * 1e9
    assert 2.5 * forward <= scratch <= 3.05 * forward  # backward ~ 2x forward (no input gradient at the stem)


def test_tas_row_carries_the_assistant(mini):
    a = next(row for row in mini["methods"] if row["method"] == "tas")["assistant"]
    assert a["part_a"].startswith("teacher (TinyResNet)") and a["part_b"].startswith("student (TinyViT)")
    assert 0 < a["l2g_parameters"] <= a["new_parameters"]
    assert a["shape_plan"]["stage3_a"]["kind"] == "map" and a["shape_plan"]["stage3_b"]["kind"] == "tokens"
    text = render(mini)
    assert "L2G" in text and "tiny_cnn-tiny_vit" in text and text.count("\n") >= len(mini["methods"]) + 2


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "tas", "describe", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_cli_prints_json_and_refuses_an_unknown_pair_in_one_line():
    proc = _cli("--experiment", "mini", "--pair", "tiny_cnn-tiny_mlp", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["pair"] == "tiny_cnn-tiny_mlp" and len(result["methods"]) == len(CFG.experiments["mini"].methods)
    bad = _cli("--experiment", "mini", "--pair", "nope-tiny_vit")
    assert bad.returncode == 2
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "nope-tiny_vit" in errors[0] and "Traceback" not in bad.stderr
