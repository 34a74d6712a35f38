"""Where a job runs and with which numerics, resolved once from params.yaml's `runtime` section."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from tas.errors import TasError


@dataclass(frozen=True)
class Placement:
    device: torch.device
    amp: bool               # bf16 autocast
    channels_last: bool
    compile: bool

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)


def resolve(runtime, family_is_conv: bool, threads: int | None = None, local_rank: int = 0) -> Placement:
    """Apply the runtime settings (threads, device) and say how to run."""
    torch.set_num_threads(max(1, threads or runtime.threads))
    if runtime.device == "cuda" and not torch.cuda.is_available():
        raise TasError("runtime.device is 'cuda' but no CUDA device is visible; set runtime.device: auto or cpu")
    use_cuda = runtime.device == "cuda" or (runtime.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    amp = {"auto": use_cuda, "bf16": True, "off": False}[runtime.amp]
    channels_last = {"auto": use_cuda and family_is_conv, "on": True, "off": False}[runtime.channels_last]
    if use_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = not runtime.deterministic
    return Placement(device, amp, channels_last, bool(runtime.compile))


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this for reproducible matmuls; harmless on CPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def rng_state() -> dict:
    """All RNG states as tensors and plain containers, so resume files load with weights_only=True."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(int(v) for v in internal.tolist()), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
