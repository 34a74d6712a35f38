"""An evaluate job counts a model's forward FLOPs without importing torch._dynamo (tas.engine.evaluate), and
counts what torch's FlopCounterMode counts."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys, torch, tas
from torch.utils.flop_counter import FlopCounterMode
from tas.config import load_config
from tas.engine.evaluate import forward_flops
from tas.models import create_model

cfg = load_config("params.yaml")
models = {model_id: create_model(cfg.models[model_id], 10, 32).model.eval() for model_id in ("tiny_cnn", "tiny_vit")}
counted = {model_id: forward_flops(model, 32, torch.device("cpu")) for model_id, model in models.items()}
assert "torch._dynamo" not in sys.modules
for model_id, model in models.items():
    with torch.inference_mode(), FlopCounterMode(display=False) as reference:
        model(torch.zeros(1, 3, 32, 32))
    print(model_id, counted[model_id], reference.get_total_flops())
    assert counted[model_id] == reference.get_total_flops() > 0
assert "torch._dynamo" in sys.modules  # the control: torch's own counter imports it
"""


def test_forward_flops_equal_torchs_count_without_dynamo():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(done.stdout.splitlines()) == 2
