"""build-assistant: build a pair's hybrid assistant, check its shapes and record its spec (assistant.json)."""

from __future__ import annotations

import torch

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
    torch.manual_seed(exp.teacher_seed)
    teacher = create_model(cfg.model(pair.teacher), num_classes, size)
    student = create_model(cfg.model(pair.student), num_classes, size)
    assistant = HybridAssistant(teacher, student, num_classes, fusion="full")
    teacher.eval(), student.eval(), assistant.eval()

    cost = assistant.cost(size)
    roles = assistant.roles
    names = {"teacher": cfg.model(pair.teacher).name, "student": cfg.model(pair.student).name}
    spec = {
        "experiment": exp.id, "pair": pair.id, "teacher": pair.teacher, "student": pair.student,
        "part_a_source": f"{roles.part_a} ({names[roles.part_a]}): stem + stages 1-3",
        "part_b_source": f"{roles.part_b} ({names[roles.part_b]}): stage 4 + norm + pool + head",
        "image_size": size,
        "shared_parameters": cost["shared_parameters"],
        "new_parameters": assistant.new_parameters(),
        "flops_total": cost["flops_total"],
        "flops_added_per_step": cost["flops_added_per_step"],
        "shape_plan": assistant.spec(),
    }
    out = paths.assistant_dir(cfg.results_root, exp.id, pair.id)
    write_json(out / paths.ASSISTANT_SPEC_FILE, spec)
    return spec

