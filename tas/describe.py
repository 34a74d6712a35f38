"""`python -m tas describe`: the cost table of an experiment's methods on one pair, without training.

For every method: the trainable parameters it adds to the student and the FLOPs of one training step
per image (forward of student, teacher and added modules, plus the backward), counted with
torch.utils.flop_counter on the meta device at the protocol's image size, the passes the methods share
counted once per pair (tas.stepflops). For TAS methods
also the assistant: which model gives part A and part B, L2G's parameters and the stage-3 shape plan.

What needs torch or timm (each method's figures, the class count, the student's eval transform) is kept
in the user cache (tas.usercache: `$TAS_CACHE_DIR`, else `$XDG_CACHE_HOME/tas`, else `~/.cache/tas`;
`TAS_CACHE_DIR=off` turns it off), one small JSON file per value under `describe/`. A value's key holds
every input it is computed from: the model specs (timm id, kwargs), image size, classes, the method's type
and options, the label smoothing, a hash of the code that computes it (the import closure of this module
and of the method's file, tas.codedeps) and the torch/timm versions. A warm run imports neither torch nor
timm. A cache file that does not parse, does not hold its key or not a valid value is ignored and written
again (atomically).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import fields, is_dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from tas import batching
from tas.config import Config, thaw
from tas.data import sources
from tas.distillers.registry import needs_teacher

FLOP_BATCH = 2  # BatchNorm1d heads (RSD) need two samples in training mode; figures are per image
CACHE_FOLDER = "describe"  # under tas.usercache.root()
CACHE_FORMAT = 1  # bump when what a cached value holds changes
_ASSISTANT_KEYS = ("fusion", "part_a", "part_b", "l2g", "new_parameters", "b_readout", "stage3_a", "stage3_b")


def describe(cfg: Config, experiment: str, pair_id: str) -> dict:
    exp = cfg.experiment(experiment)
    pair = exp.pair(pair_id)
    size = cfg.protocol_of(exp).augment.image_size
    dataset = cfg.protocol_of(exp).dataset
    classes = _cached("num_classes", {"dataset": _plain(dataset)}, _source_roots(dataset.source),
                      lambda: _num_classes(cfg, exp), _is_count)
    recipe = cfg.student_recipe(exp, pair.student)
    teacher, student = cfg.model(pair.teacher), cfg.model(pair.student)
    names = {"teacher": teacher.name, "student": student.name}
    methods = [cfg.method(method_id) for method_id in exp.methods]
    keys = {m.id: {"teacher": _plain(teacher) if needs_teacher(m.type) else None, "student": _plain(student),
                   "image_size": size, "num_classes": classes, "method_type": m.type, "options": thaw(m.options),
                   "label_smoothing": recipe.label_smoothing, "flop_batch": FLOP_BATCH, "plugin": _plugin(m.type)}
            for m in methods}
    found = {m.id: _cache_get("method", keys[m.id], _method_roots(m.type), _is_method_value) for m in methods}
    missing = [m for m in methods if found[m.id] is None]
    if missing:  # build the pair's models once for every method not in the cache
        for method_id, value in _measure(teacher, student, missing, size, classes, recipe.label_smoothing).items():
            type_ = cfg.method(method_id).type
            found[method_id] = _cache_put("method", keys[method_id], _method_roots(type_), value)
    rows = []
    for m in methods:
        value = found[m.id]
        row = {"method": m.id, "name": m.name, "type": m.type, "extra_parameters": value["extra_parameters"],
               "train_gflops_per_image": round(value["train_flops"] / 1e9, 3)}
        if value["assistant"] is not None:
            row["assistant"] = _assistant_record(value["assistant"], names)
        rows.append(row)
    return {"experiment": exp.id, "pair": pair.id, "teacher": pair.teacher, "student": pair.student,
            "teacher_name": names["teacher"], "student_name": names["student"], "image_size": size,
            "num_classes": classes, "recipe": effective_recipe(cfg, exp, pair.student),
            "flops": "torch.utils.flop_counter: 2 per multiply-add; forward + backward", "methods": rows}


def _measure(teacher_spec, student_spec, methods: list, size: int, classes: int, label_smoothing: float) -> dict:
    """method id -> {extra_parameters, train_flops, assistant}: the pair's models built once, then every method."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from tas.distillers import build_distiller
    from tas.engine.criterion import make_criterion
    from tas.models import create_model
    from tas.stepflops import PairSteps, dynamo_deferred

    # On the meta device: shapes, parameter counts and FLOPs without allocating or computing a weight
    # (the real 224-px models cost seconds each to initialise and run on a CPU).
    # The math attention kernel, as a CPU run takes: on meta the dispatcher would pick a fused kernel, whose
    # backward the counter prices differently, and the figures would depend on where describe runs.
    values = {}
    with dynamo_deferred(), torch.device("meta"), sdpa_kernel(SDPBackend.MATH):
        torch.manual_seed(0)
        # the teacher only when a method to measure uses it (a cached pair may miss only its scratch row)
        uses_teacher = any(needs_teacher(method.type) for method in methods)
        teacher = create_model(teacher_spec, classes, size) if uses_teacher else None
        student = create_model(student_spec, classes, size)
        steps = PairSteps(teacher, student)  # the passes every method shares, counted once (tas.stepflops)
        for method in methods:
            distiller = build_distiller(method.type, student, teacher if needs_teacher(method.type) else None,
                                        method.options, classes, make_criterion(label_smoothing))
            assistant = getattr(distiller, "assistant", None)
            values[method.id] = {"extra_parameters": distiller.extra_parameters(),
                                 "train_flops": steps.training_flops(distiller, size, classes, FLOP_BATCH),
                                 "assistant": None if assistant is None else assistant.spec()}
    return values


def _num_classes(cfg: Config, exp) -> int:
    from tas.jobs.common import num_classes_hint  # imports torch: only when the cache does not have it

    return num_classes_hint(cfg, exp)


def _eval_transform(recipe, model_spec) -> tuple[str, float]:
    """The student's eval (interpolation, crop_pct): tas.models.data_config, which imports timm, on a cache miss."""
    def compute():
        from tas.models.data_config import eval_transform

        return list(eval_transform(recipe, model_spec))

    key = {"eval_interpolation": recipe.eval_interpolation, "eval_crop_pct": recipe.eval_crop_pct,
           "model": _plain(model_spec)}
    interpolation, crop_pct = _cached("eval_transform", key, ("tas.describe",), compute, _is_eval_value)
    return interpolation, crop_pct


def effective_recipe(cfg: Config, exp, student_id: str) -> dict:
    """The student recipe a run of `exp` trains with, resolved: the batch plan on the experiment's
    gpus_per_job (tas.batching), optimizer steps, the eval transform of the student's model."""
    recipe = cfg.student_recipe(exp, student_id)
    batches = batching.plan(recipe, exp.gpus_per_job)
    n_train = sources.train_images(cfg.protocol_of(exp).dataset, cfg.data_root)
    steps = batches.steps_per_epoch(n_train) if n_train is not None else None
    eval_interpolation, eval_crop_pct = _eval_transform(recipe, cfg.model(student_id))
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
        "eval_interpolation": eval_interpolation, "eval_crop_pct": eval_crop_pct,
    }


# -- the cache ------------------------------------------------------------------------------------------------

def _plain(value: Any) -> Any:
    """A spec (frozen dataclass, mappings, tuples, paths) as plain JSON values."""
    if is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Path):
        return str(value)
    value = thaw(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _json(value: Any, sort_keys: bool = True) -> str:
    return json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), allow_nan=False)


@lru_cache(maxsize=None)
def _versions() -> dict:
    from importlib.metadata import version

    return {"torch": version("torch"), "timm": version("timm"), "python": "%d.%d" % sys.version_info[:2],
            # timm reads it at import: fused or explicit attention, which the counter prices differently
            "TIMM_FUSED_ATTN": os.environ.get("TIMM_FUSED_ATTN")}


@lru_cache(maxsize=None)
def _code(roots: tuple[str, ...]) -> str:
    """Hash of the code that computes a value: the import closure of `roots` (read with ast) and its data files."""
    from tas.codedeps import DATA_FILES, closure, files_hash
    from tas.plugins import ROOT, module_file

    files = {module_file(m).relative_to(ROOT).as_posix() for m in closure(roots)}
    files |= {data for source in list(files) for data in DATA_FILES.get(source, ())}
    return files_hash(sorted(files))


def _method_roots(method_type: str) -> tuple[str, ...]:
    from tas.plugins import method_modules

    module = method_modules().get(method_type)
    if module is not None:
        return ("tas.describe", module)
    from tas.codedeps import tas_imports  # a third-party method: the tas modules its files import (its own: _plugin)
    from tas.distillers.registry import entry_point_files

    return ("tas.describe", *tas_imports(entry_point_files(method_type)))


def _source_roots(source: str) -> tuple[str, ...]:
    from tas.plugins import SOURCES_PACKAGE, plugin_modules

    module = plugin_modules(SOURCES_PACKAGE).get(source)
    return ("tas.describe",) if module is None else ("tas.describe", module)


def _plugin(method_type: str) -> str | None:
    """A third-party method's distribution, version and files' hash (tas.distillers.registry); None for tas's own."""
    from tas.distillers.registry import entry_point_version

    return entry_point_version(method_type)


def _cache_name(kind: str, full_key: dict) -> str:
    return f"{CACHE_FOLDER}/{kind}-{hashlib.sha256(_json(full_key).encode()).hexdigest()[:40]}.json"


def _full_key(kind: str, key: dict, roots: tuple[str, ...]) -> dict:
    return {"format": CACHE_FORMAT, "kind": kind, "versions": _versions(), "code": _code(roots), **key}


def _cache_get(kind: str, key: dict, roots: tuple[str, ...], valid: Callable[[Any], bool]) -> Any:
    """The cached value of `key`, or None (no cache, not there, unreadable, or not a valid value)."""
    from tas import usercache

    if usercache.root() is None:
        return None
    full = _full_key(kind, key, roots)
    entry = usercache.read_json(_cache_name(kind, full))
    if not isinstance(entry, dict) or entry.get("key") != json.loads(_json(full)) or not valid(entry.get("value")):
        return None
    return entry["value"]


def _cache_put(kind: str, key: dict, roots: tuple[str, ...], value: Any) -> Any:
    """Store `value` (tas.usercache: atomic; skipped where the cache cannot be written) and return it as a
    cache hit gives it back (through JSON), so that a first run and a cached one return the same objects."""
    from tas import usercache

    full = _full_key(kind, key, roots)
    entry = json.loads(_json({"key": full, "value": value}, sort_keys=False))  # the value keeps its own order
    usercache.write_json(_cache_name(kind, full), entry)
    return entry["value"]


def _cached(kind: str, key: dict, roots: tuple[str, ...], compute: Callable[[], Any],
            valid: Callable[[Any], bool]) -> Any:
    value = _cache_get(kind, key, roots, valid)
    return value if value is not None else _cache_put(kind, key, roots, compute())


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return _is_int(value) and value > 0


def _is_eval_value(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], float))


def _is_method_value(value: Any) -> bool:
    if not (isinstance(value, dict) and _is_int(value.get("extra_parameters")) and _is_int(value.get("train_flops"))):
        return False
    assistant = value.get("assistant", False)
    return assistant is None or (isinstance(assistant, dict) and all(k in assistant for k in _ASSISTANT_KEYS))


def _assistant_record(spec: dict, names: dict) -> dict:
    """The assistant's part of a TAS row, from its spec (tas.models.assistant.Assistant.spec)."""
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
