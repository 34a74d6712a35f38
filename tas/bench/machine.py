"""What ran where: the device, the software versions and the commit every benchmark JSON records, and the
device slug its file name starts with."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

from tas.bench import TARGETS


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_slug(device: torch.device, threads: int | None = None) -> str:
    """cuda: the GPU's name (nvidia-h100-80gb-hbm3); cpu: cpu-<model>-<threads>t."""
    if device.type == "cuda":
        return _slug(torch.cuda.get_device_name(device))
    model = re.sub(r"\((r|tm)\)|\bcpu\b|\bprocessor\b|@.*$", " ", cpu_model(), flags=re.IGNORECASE)
    return f"cpu-{_slug(model) or platform.machine()}-{threads or torch.get_num_threads()}t"


def device_description(device: torch.device) -> dict:
    info = {"type": device.type, "threads": torch.get_num_threads(), "cpu": cpu_model(),
            "cpu_count": os.cpu_count(), "machine": platform.machine()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=torch.cuda.get_device_name(device), memory_mb=round(props.total_memory / 2**20),
                    capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    else:
        info["name"] = f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"
    return info


def versions() -> dict:
    import numpy as np
    import timm

    import tas

    return {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
            "numpy": np.__version__, "tas": tas.__version__}


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def header(kind: str, device: torch.device) -> dict:
    """The fields every benchmark JSON starts with."""
    return {"benchmark": kind, "device": device_description(device), "versions": versions(),
            "git_commit": git_commit(), "host": platform.node(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": list(sys.argv), "targets": dict(TARGETS)}
