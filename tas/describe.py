"""`python -m tas describe`: the cost table of an experiment's methods on one pair, without training.

For every method: the trainable parameters it adds to the student and the FLOPs of one training step
per image (forward of student, teacher and added modules, plus the backward), measured with
torch.utils.flop_counter on randomly initialised models at the protocol's image size. For TAS methods
also the assistant: which model gives part A and part B, L2G's parameters and the stage-3 shape plan.
"""

from __future__ import annotations

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from tas import batching
from tas.config import Config
from tas.data import sources
from tas.distillers import build_distiller
from tas.distillers.registry import distiller_class
from tas.engine.trainer import make_criterion
from tas.jobs.common import num_classes_hint
from tas.models import create_model
from tas.models.data_config import eval_transform

FLOP_BATCH = 2  # BatchNorm1d heads (RSD) need two samples in training mode; figures are per image


def describe(cfg: Config, experiment: str, pair_id: str) -> dict:
    exp = cfg.experiment(experiment)
    pair = exp.pair(pair_id)
    size = cfg.protocol_of(exp).augment.image_size
    classes = num_classes_hint(cfg, exp)
    recipe = cfg.student_recipe(exp, pair.student)
    # On the meta device: shapes, parameter counts and FLOPs without allocating or computing a weight
    # (the real 224-px models cost seconds each to initialise and run on a CPU).
    # The math attention kernel, as a CPU run takes: on meta the dispatcher would pick a fused kernel, whose
    # backward the counter prices differently, and the figures would depend on where describe runs.
    with torch.device("meta"), sdpa_kernel(SDPBackend.MATH):
        torch.manual_seed(0)
        teacher = create_model(cfg.model(pair.teacher), classes, size)
        student = create_model(cfg.model(pair.student), classes, size)
        names = {"teacher": cfg.model(pair.teacher).name, "student": cfg.model(pair.student).name}
        rows = []
        for method_id in exp.methods:
            method = cfg.method(method_id)
            uses_teacher = distiller_class(method.type).needs_teacher
            distiller = build_distiller(method.type, student, teacher if uses_teacher else None, method.options,
                                        classes, make_criterion(recipe.label_smoothing))
            row = {"method": method_id, "name": method.name, "type": method.type,
                   "extra_parameters": distiller.extra_parameters(),
                   "train_gflops_per_image": round(training_flops(distiller, size, classes) / 1e9, 3)}
            assistant = getattr(distiller, "assistant", None)
            if assistant is not None:
                row["assistant"] = _assistant_record(assistant, names)
            rows.append(row)
    return {"experiment": exp.id, "pair": pair.id, "teacher": pair.teacher, "student": pair.student,
            "teacher_name": names["teacher"], "student_name": names["student"], "image_size": size,
            "num_classes": classes, "recipe": effective_recipe(cfg, exp, pair.student),
            "flops": "torch.utils.flop_counter: 2 per multiply-add; forward + backward", "methods": rows}


def effective_recipe(cfg: Config, exp, student_id: str) -> dict:
    """The student recipe a run of `exp` trains with, resolved: the batch plan on the experiment's
    gpus_per_job (tas.batching), optimizer steps, the eval transform of the student's model."""
    recipe = cfg.student_recipe(exp, student_id)
    batches = batching.plan(recipe, exp.gpus_per_job)
    n_train = sources.train_images(cfg.protocol_of(exp).dataset, cfg.data_root)
    steps = batches.steps_per_epoch(n_train) if n_train is not None else None
    evaluation = eval_transform(recipe, cfg.model(student_id))
    return {
        "id": recipe.id, "student_recipes_key": cfg.student_recipe_key(exp, student_id),
        "processes": batches.processes, "global_batch": batches.global_batch, "micro_batch": batches.micro_batch,
        "accumulation": batches.accumulation, "train_images": n_train, "steps_per_epoch": steps,
        "epochs": recipe.epochs, "total_steps": None if steps is None else steps * recipe.epochs,
        "optimizer": recipe.optimizer, "lr": recipe.lr, "min_lr": recipe.min_lr, "weight_decay": recipe.weight_decay,
        "momentum": recipe.momentum if recipe.optimizer == "sgd" else None, "scheduler": recipe.scheduler,
        "lr_update": recipe.lr_update, "warmup_epochs": recipe.warmup_epochs, "warmup_lr": recipe.warmup_lr,
        "warmup_steps": None if steps is None else steps * recipe.warmup_epochs,
        "ema_decay": recipe.ema_decay, "drop_path": recipe.drop_path, "label_smoothing": recipe.label_smoothing,
        "clip_grad": recipe.clip_grad, "randaugment": recipe.randaugment, "mixup": recipe.mixup,
        "cutmix": recipe.cutmix,
        "random_erasing": recipe.random_erasing, "train_interpolation": recipe.train_interpolation,
        "eval_interpolation": evaluation.interpolation, "eval_crop_pct": evaluation.crop_pct,
    }


def training_flops(distiller, size: int, classes: int) -> int:
    """FLOPs of one training step (forward + backward of the summed loss) per image."""
    distiller.train()
    device = next(distiller.parameters()).device  # meta under describe: shapes only
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


def _assistant_record(assistant, names: dict) -> dict:
    spec = assistant.spec()
    l2g = spec["l2g"]
    return {
        "part_a": f"{spec['part_a']} ({names[spec['part_a']]}): stem + stages 1-3",
        "part_b": (f"{spec['part_b']} ({names[spec['part_b']]}): stage 4 + norm + pool + head"
                   if spec["fusion"] == "full" else f"not used (fusion {spec['fusion']}: pool + a new linear head)"),
        "fusion": spec["fusion"],
        "l2g_parameters": 0 if l2g is None else l2g["parameters"],
        "l2g": l2g,
        "new_parameters": spec["new_parameters"],
        "b_readout": spec["b_readout"],
        "shape_plan": {"stage3_a": spec["stage3_a"], "stage3_b": spec["stage3_b"]},
    }


def _layout(layout: dict) -> str:
    h, w = layout["grid"]
    prefix = f" + {layout['prefix_tokens']} prefix" if layout["prefix_tokens"] else ""
    return f"{layout['kind']} {layout['channels']}ch {h}x{w}{prefix}"


def render(result: dict) -> str:
    """The table as text: one line per method, then the assistant of each TAS method."""
    lines = [
        f"{result['experiment']} / {result['pair']}: {result['teacher_name']} -> {result['student_name']}, "
        f"{result['image_size']} px, {result['num_classes']} classes",
        f"{'method':<14} {'name':<26} {'extra params':>14} {'train GFLOPs/img':>17}",
    ]
    for row in result["methods"]:
        lines.append(f"{row['method']:<14} {row['name'][:26]:<26} {row['extra_parameters'] / 1e6:>12.2f} M "
                     f"{row['train_gflops_per_image']:>17.3f}")
    lines.append(f"(FLOPs: {result['flops']}; extra params: trainable parameters a method adds to the student)")
    lines += render_recipe(result["recipe"])
    for row in result["methods"]:
        a = row.get("assistant")
        if a is None:
            continue
        lines.append(f"{row['method']}: assistant, fusion {a['fusion']}; A = {a['part_a']}; B = {a['part_b']}")
        if a["l2g"] is not None:
            lines.append(f"  L2G {a['l2g']['kind']} (MLP ratio {a['l2g']['mlp_ratio']:g}): "
                         f"{a['l2g_parameters'] / 1e6:.2f} M params; "
                         f"shape plan {_layout(a['shape_plan']['stage3_a'])} -> {_layout(a['shape_plan']['stage3_b'])}"
                         + (f"; ViT part B reads: {a['b_readout']}" if a["b_readout"] not in (None, "own") else ""))
    return "\n".join(lines)


def render_recipe(recipe: dict) -> list[str]:
    """The effective student recipe, a few lines of `key value` (the same fields as --json's `recipe`)."""
    def fmt(value) -> str:
        return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    per_step = ("global_batch", "micro_batch", "accumulation", "processes", "train_images", "steps_per_epoch",
                "epochs", "total_steps")
    optimiser = ("optimizer", "lr", "min_lr", "weight_decay", "momentum", "scheduler", "lr_update", "warmup_epochs",
                 "warmup_steps", "warmup_lr", "clip_grad")
    regularisation = ("label_smoothing", "mixup", "cutmix", "randaugment", "random_erasing", "drop_path", "ema_decay",
                      "train_interpolation", "eval_interpolation", "eval_crop_pct")
    lines = [f"student recipe {recipe['id']} (student_recipes.{recipe['student_recipes_key']}):"]
    for group in (per_step, optimiser, regularisation):
        lines.append("  " + ", ".join(f"{key} {fmt(recipe[key])}" for key in group))
    return lines
