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


def test_building_a_model_imports_no_dynamo_and_compile_still_works():
    """tas/_deferred_dynamo.py: timm and torchvision load without torch._dynamo, and nothing of what they
    would have got from it is lost: roi_align's check gives the real answer, torch.compile works after."""
    out = _python(
        "import sys, tas, timm, torch\n"
        "from tas.models import create_model\n"
        "from tas.config import load_config\n"
        "view = create_model(load_config('params.yaml').model('tiny_vit'), 10, 32)\n"
        "print('dynamo' if 'torch._dynamo' in sys.modules else 'no dynamo')\n"
        "print(torch.compiler.disable.__module__)\n"
        "rd = sys.modules['torchvision.ops.roi_align']\n"
        "import torch._dynamo.utils as real\n"
        "assert rd.is_compile_supported('cpu') == real.is_compile_supported('cpu')\n"
        "f = torch.compile(lambda x: x * 2, backend='eager')\n"
        "print(f(torch.ones(2)).tolist())\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["no dynamo", "torch.compiler", "[2.0, 2.0]"]


def test_a_deferred_disable_still_keeps_its_function_out_of_the_compiled_graph():
    code = (
        "import torch, tas\n"
        "from tas._deferred_dynamo import deferred_disable\n"
        "seen = []\n"
        "def probe(x):\n"
        "    seen.append(torch.compiler.is_compiling())\n"
        "    return x + 1\n"
        "wrapped = deferred_disable(probe) if {defer} else probe\n"
        "f = torch.compile(lambda x: wrapped(x) * 2, backend='eager')\n"
        "assert f(torch.ones(2)).tolist() == [4.0, 4.0] and f(torch.ones(2)).tolist() == [4.0, 4.0]\n"
        "print(seen)\n")
    deferred = _python(code.format(defer=True))
    assert deferred.returncode == 0, deferred.stderr
    assert deferred.stdout.strip() == "[False, False]"  # run eagerly, at every call
    traced = _python(code.format(defer=False))  # the control: without it the function is traced (compiled)
    assert traced.returncode == 0, traced.stderr
    assert traced.stdout.strip() != "[False, False]"
