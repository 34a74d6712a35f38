"""Each params key has one owner: the code that reads it (tas.settings), not a list beside it.

A job's identity (its params hash: Snakemake's rerun trigger, the resume identity, dvc.yaml's params) is
the hash of the keys its settings function read; its behaviour is what that function returns. This test
flips every leaf of params.yaml (every runtime key among them) to another valid value, one at a time, and
asserts that the jobs whose params hash changes are exactly the jobs whose settings change: a key read but
not recorded, recorded too coarsely (a whole section where one field is read) or never reaching the hash
(a misspelt key, which `Job.params` drops) makes the two sets differ. Plan only: nothing trains or builds.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import functools
from pathlib import Path
from typing import Any, Iterator

import pytest

from tas import matrix
from tas.config import Config, RuntimeSpec, _build, _schema, load_config, thaw
from tas.errors import TasError
from tas.validation import problem

ROOT = Path(__file__).resolve().parent.parent
# mini (synthetic data, teachers trained here, teacher-free and built-first methods), two paper studies:
# ablation (CIFAR-100 at 224, a teacher loaded from a URL, a student with its own recipe, the ablation table)
# and imagenet (an image folder streamed per sample: the streamed-only runtime keys; pretrained teachers).
EXPERIMENTS = ("mini", "ablation", "imagenet")
# The image folder is streamed whatever its size would decide (the test reads no folder), and mini names two
# fields a job reads that params.yaml leaves to their defaults, so that they are flipped too.
BASE = {("datasets", "imagenet", "cache"): False, ("experiments", "mini", "gpus_per_job"): 1,
        ("experiments", "mini", "teacher_seed"): 0}


def _no_other_value(raw: dict, key: str) -> str | None:
    """Why a leaf may have no other valid value (None: it must have one)."""
    parts = key.split(".")
    if parts[0] == "methods" and parts[2:] == ["type"] and set(raw["methods"][parts[1]]) - {"type", "name"}:
        return "its options are its type's: another type refuses them (tas.config)"
    if parts[0] == "datasets" and parts[2:] == ["cache"] and "image_size" not in raw["datasets"][parts[1]]:
        return "true needs the image_size to decode at (tas.data.spec), and the folder has none"
    if parts[:3] == ["experiments", "imagenet", "teachers"] and parts[4:] == ["pretrained"]:
        return "false would leave a 0-epoch teacher untrained, which tas.config refuses"
    return None


def _set(tree: dict, path: tuple, value: Any) -> dict:
    out = copy.deepcopy(tree)
    node = out
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return out


def _leaves(tree: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """Every value that is not a mapping (a list is one leaf: a params key never points inside a list)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, (*path, key))
    else:
        yield path, tree


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _subschema(schema: dict, path: tuple) -> dict:
    node = schema
    for part in path:
        node = _resolve(schema, node)
        if part in node.get("properties", {}):
            node = node["properties"][part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return {}
    return _resolve(schema, node)


def _branches(schema: dict, node: dict) -> list[dict]:
    return [_resolve(schema, b) for b in node.get("oneOf", node.get("anyOf", [node]))]


def _mutations(value: Any) -> list:
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value * 2, value - 1]
    if isinstance(value, float):
        return [value / 2, value * 2, value + 1]
    if isinstance(value, str):
        return [value + "x"]
    if value is None:  # an option left to its default in code: a value of each plain type
        return [0.5, 1, True, "x"]
    if isinstance(value, list) and value:
        out = [value[:-1], value[::-1]] if len(value) > 1 else []
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            out.append(value + [max(value) + 1])
        return out
    return []


def _candidates(raw: dict, schema: dict, path: tuple, value: Any) -> Iterator[Any]:
    """Other values for one leaf, most plausible first: the schema's choices, the values the same field takes
    elsewhere in the file, the other ids of a section the value names, small changes of the value, and one
    value of each type the schema allows."""
    node = _subschema(schema, path)
    branches = _branches(schema, node)
    yield from (v for b in branches for v in b.get("enum", [b["const"]] if "const" in b else []))
    elsewhere = [v for p, v in _leaves(raw) if p[-1] == path[-1] and p != path]
    yield from elsewhere
    if isinstance(value, list):  # one more item that the same field lists elsewhere (a pair, a method)
        yield from (value + [item] for other in elsewhere if isinstance(other, list) for item in other
                    if item not in value)
    if isinstance(value, str):
        yield from (key for section in raw.values() if isinstance(section, dict) and value in section
                    for key in section)
    yield from _mutations(value)
    for branch in branches:
        kind = branch.get("type")
        if kind == "integer":
            yield from (branch.get("minimum", 1), branch.get("minimum", 1) + 1)
        elif kind == "number":
            yield 0.5
        elif kind == "boolean":
            yield from (True, False)
        elif kind == "null":
            yield None


def _config(raw: dict, schema: dict, path: tuple = ()) -> Config | None:
    """The validated Config of `raw` (the checks of tas.config.load_config, minus the file and the smoke
    shrinking), or None where it is not a valid params file. With `path` (a leaf changed in a valid file),
    only the entry holding it is checked against the schema again: no rule of the schema spans two entries."""
    entry = path[:2]
    node = raw
    for part in entry:
        node = node[part]
    subschema = _subschema(schema, entry) if entry else schema
    assert subschema, f"no schema for {'.'.join(entry)}"
    if problem(node, {"$defs": schema.get("$defs", {}), **subschema}):
        return None
    try:
        return _build(raw, source="params.yaml")
    except TasError:
        return None


def _same_meaning(a: Config, b: Config) -> bool:
    """A value spelt otherwise (amp: false for "off") changes the file, not the config: not a flip."""
    return dataclasses.replace(a, raw=b.raw) == b


def _plan(cfg: Config) -> dict[str, tuple[str, Any]] | None:
    """Every job of the experiments: its params hash and its settings."""
    try:
        jobs = matrix.expand(cfg, EXPERIMENTS)
    except TasError:
        return None
    settings: dict[tuple, Any] = {}
    out = {}
    for job in jobs:
        if job.reads not in settings:
            settings[job.reads] = matrix.job_settings(cfg, job)
        out[job.name] = (job.params_hash, settings[job.reads])
    return out


@pytest.fixture(scope="module")
def base():
    raw = thaw(load_config(ROOT / "params.yaml").raw)
    for path, value in BASE.items():
        raw = _set(raw, path, value)
    schema = _schema()
    cfg = _config(raw, schema)
    assert cfg is not None
    return raw, schema, cfg, _plan(cfg)


def _flip(raw: dict, schema: dict, cfg: Config, path: tuple, value: Any):
    """(the new value, its config) of the first valid candidate that means something else, or None."""
    tried = []
    for candidate in _candidates(raw, schema, path, value):
        if candidate == value or candidate in tried:
            continue
        tried.append(candidate)
        flipped = _config(_set(raw, path, candidate), schema, path)
        if flipped is not None and not _same_meaning(flipped, cfg):
            plan = _plan(flipped)
            if plan is not None:
                return candidate, plan
    return None


def test_a_job_s_identity_changes_exactly_when_its_settings_do(base, monkeypatch):
    raw, schema, cfg, plan = base
    # No code changes while the test runs: each set of code files is hashed once, not once per plan.
    monkeypatch.setattr(matrix, "code_hash", functools.lru_cache(maxsize=None)(matrix.code_hash))
    mismatches, skipped, flipped_any = [], [], 0
    rules_changed: set[str] = set()
    leaves = list(_leaves(raw))
    for path, value in leaves:
        key = ".".join(path)
        flip = _flip(raw, schema, cfg, path, value)
        if flip is None:
            skipped.append(key)
            continue
        candidate, other = flip
        common = plan.keys() & other.keys()
        by_hash = {n for n in common if plan[n][0] != other[n][0]}
        by_settings = {n for n in common if plan[n][1] != other[n][1]}
        flipped_any += bool(by_hash)
        rules_changed |= {n.split("@")[0] for n in by_hash}
        if by_hash != by_settings:
            mismatches.append(f"{key}: {value!r} -> {candidate!r}: identity changed only for "
                              f"{sorted(by_hash - by_settings)[:3]}, settings only for "
                              f"{sorted(by_settings - by_hash)[:3]}")
    assert not mismatches, "\n".join(mismatches)
    unexplained = [key for key in skipped if _no_other_value(raw, key) is None]
    assert not unexplained, f"no other valid value for: {unexplained}"
    flipped = {".".join(p) for p, _ in leaves} - set(skipped)
    assert {f"runtime.{f.name}" for f in dataclasses.fields(RuntimeSpec)} <= flipped
    # not vacuous: many leaves change some job, and every kind of job has been changed by one
    assert flipped_any > len(leaves) // 3
    assert rules_changed == {j.name.split("@")[0] for j in matrix.expand(cfg, EXPERIMENTS)}


# What a job may read of its Config besides its settings: where its files are, the runtime switches that leave
# its numbers alone, and the ids it checks before it starts (its pair and method, its dataset).
OUTSIDE_SETTINGS = {"data_root", "results_root", "runtime.threads", "runtime.num_workers", "runtime.progress",
                    "experiment", "datasets"}
# identity.py reads the values behind the params hash (the log of a rerun names them); num_classes_hint serves
# `describe` and the benchmarks, not a job.
NOT_A_JOB_BODY = {"identity.py", "num_classes_hint"}


def _config_reads(tree: ast.AST) -> Iterator[tuple[str, int]]:
    """`cfg.<name>` and `cfg.runtime.<name>` in a module, outside the functions of NOT_A_JOB_BODY."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name in NOT_A_JOB_BODY:
            node.body = []  # its reads are not a job's
    inner = set()  # the `cfg.runtime` of each `cfg.runtime.<name>`
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and isinstance(node.value.value, ast.Name) and node.value.value.id == "cfg"
                and node.value.attr == "runtime"):
            inner.add(id(node.value))
            yield f"runtime.{node.attr}", node.lineno
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "cfg"
                and id(node) not in inner):
            yield node.attr, node.lineno


def test_jobs_read_the_config_only_through_their_settings():
    """A read of the config outside tas.settings would change a job's behaviour without its identity: the
    flip test cannot see it, so no job module may make one."""
    found = []
    for path in sorted((ROOT / "tas" / "jobs").glob("*.py")):
        if path.name in NOT_A_JOB_BODY:
            continue
        found += [f"{path.name}:{line}: cfg.{name}" for name, line in _config_reads(ast.parse(path.read_text()))
                  if name not in OUTSIDE_SETTINGS]
    assert not found, "read these through the job's settings (tas.settings):\n" + "\n".join(found)
