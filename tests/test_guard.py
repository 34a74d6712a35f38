"""The torchvision guard: on this CPU-only torch, `import tas` is what lets timm/torchvision import."""

from __future__ import annotations

import subprocess
import sys


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_timm_and_torchvision_import_after_tas():
    out = _python("import tas, timm, torchvision; from timm.data import Mixup; from torchvision.transforms import v2; "
                  "import timm; timm.create_model('resnet18', num_classes=3); "
                  "print(tas._torchvision_guard.extension_loaded)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("True", "False")


def test_the_guard_is_what_makes_the_difference():
    loaded = _python("import tas, torchvision; print(tas._torchvision_guard.extension_loaded)").stdout.strip()
    bare = _python("import torchvision")
    if loaded == "True":
        assert bare.returncode == 0  # a machine whose torchvision extension loads needs no guard
    else:
        assert bare.returncode != 0 and "torchvision::nms" in bare.stderr


def test_import_tas_alone_imports_no_torch():
    out = _python("import sys, tas; print('torch' in sys.modules, 'torchvision' in sys.modules)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False False"
