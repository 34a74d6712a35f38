"""describe's FLOP count (tas.stepflops): the passes the methods of a pair share, counted once, add up to
what counting each method alone gives, and counting on the meta device gives what a real run counts."""

from __future__ import annotations

import tas  # noqa: F401  (installs the torchvision guard; must precede `import timm`)

import sys
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from tas.config import load_config
from tas.describe import FLOP_BATCH, describe
from tas.distillers import build_distiller
from tas.distillers.base import Distiller
from tas.distillers.registry import needs_teacher
from tas.engine.criterion import make_criterion
from tas.models import create_model
from tas.stepflops import PairSteps, dynamo_deferred

ROOT = Path(__file__).resolve().parent.parent
CFG = load_config(ROOT / "params.yaml")
SIZE, CLASSES = 32, 10

pytestmark = pytest.mark.usefixtures("one_thread")


def alone(distiller, size: int = SIZE, classes: int = CLASSES) -> int:
    """One step of `distiller` counted on its own with torch's FlopCounterMode (describe's count before
    tas.stepflops): per image, forward of the summed losses and backward."""
    distiller.train()
    device = next(distiller.parameters()).device
    x = torch.zeros(FLOP_BATCH, 3, size, size, device=device)
    y = torch.arange(FLOP_BATCH, device=device) % classes
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            out = distiller(x, y)
            sum(v for k, v in out.items() if k.startswith("loss_")).backward()
    finally:
        for p in distiller.parameters():
            p.grad = None
    return int(counter.get_total_flops()) // FLOP_BATCH


def _models(teacher_id: str, student_id: str):
    torch.manual_seed(0)
    return (create_model(CFG.models[teacher_id], CLASSES, SIZE), create_model(CFG.models[student_id], CLASSES, SIZE))


def _distiller(method_id: str, teacher, student):
    method = CFG.methods[method_id]
    return build_distiller(method.type, student, teacher if needs_teacher(method.type) else None, method.options,
                           CLASSES, make_criterion(0.1))


PAIR = ("tiny_cnn", "tiny_vit")  # a CNN teacher, a ViT student: attention, maps and tokens
# every method type of the paper's table
METHODS = CFG.experiments["cifar100"].methods


@pytest.fixture(scope="module")
def each_alone() -> dict:
    """Each method's step counted on its own on the meta device (the count before tas.stepflops)."""
    with torch.device("meta"), sdpa_kernel(SDPBackend.MATH):
        teacher, student = _models(*PAIR)
        return {m: alone(_distiller(m, teacher, student)) for m in METHODS}


def test_shared_passes_add_up_to_each_method_counted_alone(each_alone):
    with torch.device("meta"), sdpa_kernel(SDPBackend.MATH):
        teacher, student = _models(*PAIR)
        steps = PairSteps(teacher, student)
        shared = {m: steps.training_flops(_distiller(m, teacher, student), SIZE, CLASSES, FLOP_BATCH)
                  for m in METHODS}
    assert shared == each_alone
    assert steps.alone == 0  # every method took the split: the comparison above is of the split
    # the teacher's forward and the student's forward ran once, the student's backward once for the
    # methods whose gradients reach it through its logits and stage outputs alone
    assert len(steps._forwards) == 2 and 1 <= len(steps._backwards) < len(METHODS)
    assert len(set(each_alone.values())) > 4  # the methods do differ


def test_the_mini_rows_are_each_method_counted_alone(each_alone, monkeypatch):
    monkeypatch.setenv("TAS_CACHE_DIR", "off")
    result = describe(CFG, "mini", "-".join(PAIR))
    assert (result["image_size"], result["num_classes"]) == (SIZE, CLASSES)
    rows = {row["method"]: row["train_gflops_per_image"] for row in result["methods"]}
    assert rows == {m: round(each_alone[m] / 1e9, 3) for m in CFG.experiments["mini"].methods}


def test_meta_counts_what_a_real_run_counts(each_alone):
    # a real CPU step with real weights and the math attention kernel (as describe picks on meta): the same
    # FLOPs per method, so counting on meta (shapes only) has not drifted from a run that computes
    with torch.device("cpu"), sdpa_kernel(SDPBackend.MATH):
        teacher, student = _models(*PAIR)
        assert next(student.parameters()).device.type == "cpu"
        real = {m: alone(_distiller(m, teacher, student)) for m in CFG.experiments["mini"].methods}
    assert real == {m: each_alone[m] for m in real}


class _WritesIntoLogits(Distiller):
    """A method that scales the student's logits in place (a leaf the split hands out refuses that)."""

    def forward(self, x, y):
        kt = self.teacher_knowledge(x)
        logits = self.student(x).logits
        logits.mul_(0.5)
        return {"logits": logits, "loss_ce": self.criterion(logits, y), "loss_kd": (logits - kt.logits).pow(2).mean()}


def test_a_step_the_split_cannot_run_is_counted_alone():
    with torch.device("meta"), sdpa_kernel(SDPBackend.MATH):
        teacher, student = _models(*PAIR)
        steps = PairSteps(teacher, student)
        kd = steps.training_flops(_distiller("kd", teacher, student), SIZE, CLASSES, FLOP_BATCH)
        odd = _WritesIntoLogits(student, teacher, {}, CLASSES, make_criterion(0.0))
        assert steps.training_flops(odd, SIZE, CLASSES, FLOP_BATCH) == alone(odd)
        assert steps.alone == 1
        assert "forward" not in vars(student) and "forward" not in vars(teacher)  # the split left no trace
        assert steps.training_flops(_distiller("kd", teacher, student), SIZE, CLASSES, FLOP_BATCH) == kd


def test_counting_leaves_no_trace_of_its_dynamo_stand_in(monkeypatch):
    # as in a fresh `python -m tas describe`, where nothing imported torch._dynamo before the count
    import torch._dynamo as real

    monkeypatch.delitem(sys.modules, "torch._dynamo")
    monkeypatch.delattr(torch, "_dynamo")

    def square(t):
        return t * t

    marked = torch._disable_dynamo(square)  # what torch's meta references are wrapped in
    with dynamo_deferred():
        assert marked(torch.ones(2, device="meta")).shape == (2,)
        assert sys.modules["torch._dynamo"] is not real
    assert "torch._dynamo" not in sys.modules and "_dynamo" not in vars(torch)
    assert not hasattr(square, "__dynamo_disable")  # its next call imports and applies the real one
    monkeypatch.undo()
    assert marked(torch.ones(2, device="meta")).shape == (2,)
    assert square.__dynamo_disable is not square and sys.modules["torch._dynamo"] is real
