"""build-assistant: build a pair's hybrid assistant, check its shapes and record its spec (assistant.json)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from tas import paths
from tas.config import Config
from tas.io import write_json
from tas.jobs.common import num_classes_hint
from tas.models import create_model
from tas.models.assistant import HybridAssistant


def build_assistant(cfg: Config, experiment: str, pair_id: str, threads: int | None = None) -> dict:
    torch.set_num_threads(max(1, threads or cfg.runtime.threads))
    exp = cfg.experiment(experiment)
    pair = exp.pair(pair_id)
    size = cfg.protocol_of(exp).augment.image_size
    num_classes = num_classes_hint(cfg, exp)
    torch.manual_seed(exp.seeds[0])
    teacher = create_model(cfg.model(pair.teacher), num_classes, size)
    student = create_model(cfg.model(pair.student), num_classes, size)
    assistant = HybridAssistant(teacher, student, num_classes, fusion="full")
    teacher.eval(), student.eval(), assistant.eval()

    part_a = assistant.part_a
    shared = _shared_parameters(assistant, size)
    probe = torch.zeros(1, 3, size, size)
    with torch.inference_mode():
        h = part_a.stem(probe)
        for index in range(3):
            h = part_a.stage(index, h)
        counter = FlopCounterMode(display=False)
        with counter:
            assistant(h)
        extra_flops = int(counter.get_total_flops())
        counter = FlopCounterMode(display=False)
        with counter:
            x = part_a.stem(probe)
            for index in range(3):
                x = part_a.stage(index, x)
            assistant(x)
        total_flops = int(counter.get_total_flops())
    spec = {
        "experiment": exp.id, "pair": pair.id, "teacher": pair.teacher, "student": pair.student,
        "part_a_source": f"{assistant.roles.part_a} ({getattr(cfg.model(pair.teacher if assistant.roles.part_a == 'teacher' else pair.student), 'name')}): stem + stages 1-3",
        "part_b_source": f"{assistant.roles.part_b} ({getattr(cfg.model(pair.teacher if assistant.roles.part_b == 'teacher' else pair.student), 'name')}): stage 4 + norm + pool + head",
        "image_size": size,
        "shared_parameters": shared,
        "new_parameters": assistant.new_parameters(),
        "flops_total": total_flops,
        "flops_added_per_step": extra_flops,
        "shape_plan": assistant.spec(),
    }
    out = paths.assistant_dir(cfg.results_root, exp.id, pair.id)
    write_json(out / paths.ASSISTANT_SPEC_FILE, spec)
    return spec


def _shared_parameters(assistant: HybridAssistant, size: int) -> int:
    """Student/teacher parameters on the assistant's path: those one backward through it reaches."""
    models = [assistant.part_a.model, assistant.part_b.model]
    params = {id(p): p for m in models for p in m.parameters()}
    saved = {key: p.requires_grad for key, p in params.items()}
    for p in params.values():
        p.requires_grad_(True)
        p.grad = None
    try:
        h = assistant.part_a.stem(torch.zeros(2, 3, size, size))
        for index in range(3):
            h = assistant.part_a.stage(index, h)
        assistant(h)[2].sum().backward()
        return sum(p.numel() for p in params.values() if p.grad is not None)
    finally:
        for key, p in params.items():
            p.grad = None
            p.requires_grad_(saved[key])


