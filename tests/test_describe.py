"""`python -m tas describe`: the cost table of an experiment's methods on one pair, without training."""

from __future__ import annotations

import tas  # noqa: F401  (installs the torchvision guard; must precede `import timm`)

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tas.describe as describe_module
from tas.config import load_config
from tas import usercache
from tas.describe import describe, render
from tas.engine.evaluate import forward_flops
from tas.models import create_model

ROOT = Path(__file__).resolve().parent.parent
CFG = load_config(ROOT / "params.yaml")

pytestmark = pytest.mark.usefixtures("one_thread")
PAIR = "tiny_cnn-tiny_vit"


@pytest.fixture(scope="module", autouse=True)
def cache_home(tmp_path_factory):
    """describe's cache in a folder of this module's own (the CLI runs below inherit it), not the user's."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("describe-cache")
        mp.setenv("TAS_CACHE_DIR", str(path))
        yield path / "describe"


@pytest.fixture(scope="module")
def first_run(cache_home):
    """The mini pair described into an empty cache: its result and the cache files it wrote."""
    assert not cache_home.exists()
    result = describe(CFG, "mini", PAIR)
    return result, sorted(cache_home.glob("*.json"))


@pytest.fixture(scope="module")
def mini(first_run):
    return first_run[0]


@pytest.fixture
def measured(monkeypatch):
    """The method ids each describe call had to measure (those not in the cache)."""
    calls = []
    real = describe_module._measure

    def spy(teacher, student, methods, *args):
        calls.append([m.id for m in methods])
        return real(teacher, student, methods, *args)

    monkeypatch.setattr(describe_module, "_measure", spy)
    return calls


def test_every_method_of_the_experiment_is_described(mini):
    assert [row["method"] for row in mini["methods"]] == list(CFG.experiments["mini"].methods)
    by_id = {row["method"]: row for row in mini["methods"]}
    assert by_id["scratch"]["extra_parameters"] == by_id["kd"]["extra_parameters"] == 0
    assert by_id["ofa"]["extra_parameters"] > 0 and by_id["tas"]["extra_parameters"] > 0
    # a teacher's forward costs something; OFA's branches and TAS's assistant cost more again
    assert (by_id["scratch"]["train_gflops_per_image"] < by_id["kd"]["train_gflops_per_image"]
            < by_id["ofa"]["train_gflops_per_image"])
    assert by_id["kd"]["train_gflops_per_image"] < by_id["tas"]["train_gflops_per_image"]


def test_scratch_training_flops_are_forward_plus_backward_of_the_student(mini):
    # counted as describe counts (meta device, math attention), so the ViT's attention products are in both
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with torch.device("meta"), sdpa_kernel(SDPBackend.MATH):
        student = create_model(CFG.models["tiny_vit"], 10, 32)
        forward = forward_flops(student.model, 32, torch.device("meta"))
    with torch.device("cpu"):  # a CPU run's fused attention kernel is invisible to the counter
        fused = forward_flops(create_model(CFG.models["tiny_vit"], 10, 32).model, 32, torch.device("cpu"))
    assert forward > fused
    scratch = next(row for row in mini["methods"] if row["method"] == "scratch")["train_gflops_per_image"] * 1e9
    assert 2.5 * forward <= scratch <= 3.05 * forward  # backward ~ 2x forward (no input gradient at the stem)


def test_tas_row_carries_the_assistant(mini):
    a = next(row for row in mini["methods"] if row["method"] == "tas")["assistant"]
    assert a["part_a"].startswith("teacher (TinyResNet)") and a["part_b"].startswith("student (TinyViT)")
    assert 0 < a["l2g_parameters"] <= a["new_parameters"]
    assert a["shape_plan"]["stage3_a"]["kind"] == "map" and a["shape_plan"]["stage3_b"]["kind"] == "tokens"
    text = render(mini)
    assert "L2G" in text and "tiny_cnn-tiny_vit" in text and text.count("\n") >= len(mini["methods"]) + 2


def _cli(*args, python=()):
    env = {**os.environ, "TAS_CACHE_DIR": "off"}  # measured: the CLI's own path, end to end
    return subprocess.run([sys.executable, *python, "-m", "tas", "describe", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=env)


def test_cli_prints_json_and_refuses_an_unknown_pair_in_one_line():
    proc = _cli("--experiment", "mini", "--pair", "tiny_cnn-tiny_mlp", "--json", python=("-X", "importtime"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["pair"] == "tiny_cnn-tiny_mlp" and len(result["methods"]) == len(CFG.experiments["mini"].methods)
    # counting imports no torch._dynamo (1.3 CPU-s; tas.stepflops.dynamo_deferred), nor the trainer
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")}
    assert "torch" in imported and not imported & {"torch._dynamo", "tas.engine.trainer", "timm.optim"}
    bad = _cli("--experiment", "mini", "--pair", "nope-tiny_vit")
    assert bad.returncode == 2
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "nope-tiny_vit" in errors[0] and "Traceback" not in bad.stderr


def test_the_cache_gives_back_the_numbers_it_was_given(first_run, cache_home, measured, monkeypatch):
    mini, written = first_run
    # one file per method, the class count and the student's eval transform
    assert len(written) == len(CFG.experiments["mini"].methods) + 2
    before = {path: path.read_bytes() for path in cache_home.glob("*.json")}
    assert describe(CFG, "mini", PAIR) == mini and measured == []
    assert {path: path.read_bytes() for path in cache_home.glob("*.json")} == before  # read, not written
    monkeypatch.setenv("TAS_CACHE_DIR", "off")  # measured again, nothing stored: the same numbers
    assert usercache.root() is None
    assert describe(CFG, "mini", PAIR) == mini and measured == [list(CFG.experiments["mini"].methods)]
    assert {path: path.read_bytes() for path in cache_home.glob("*.json")} == before


class _Missed(Exception):
    pass


def _misses(cfg, monkeypatch) -> list[str]:
    """The method ids describe would measure: those whose key is not in the cache (stopped before measuring)."""
    def stop(teacher, student, methods, *args):
        raise _Missed([m.id for m in methods])

    monkeypatch.setattr(describe_module, "_measure", stop)
    try:
        describe(cfg, "mini", PAIR)
    except _Missed as missed:
        return missed.args[0]
    return []


def test_a_changed_option_or_version_misses(mini, monkeypatch):
    assert _misses(CFG, monkeypatch) == []
    assert _misses(load_config(ROOT / "params.yaml", ["methods.kd.T=2.0"]), monkeypatch) == ["kd"]  # kd's alone
    changed_size = load_config(ROOT / "params.yaml", ["protocols.mini.augment.image_size=48"])
    assert _misses(changed_size, monkeypatch) == list(CFG.experiments["mini"].methods)
    versions = describe_module._versions()
    monkeypatch.setattr(describe_module, "_versions", lambda: {**versions, "torch": "0.0"})
    assert _misses(CFG, monkeypatch) == list(CFG.experiments["mini"].methods)


def test_the_code_key_holds_the_models_the_method_and_the_trainer(monkeypatch):
    import tas.codedeps

    hashed = []
    monkeypatch.setattr(tas.codedeps, "files_hash", lambda files: hashed.append(list(files)) or "stub")
    describe_module._code.cache_clear()
    try:
        describe_module._code(describe_module._method_roots("tas"))
    finally:
        describe_module._code.cache_clear()  # the stub hash must not outlive this test
    files = set(hashed[0])
    assert {"tas/describe.py", "tas/distillers/tas.py", "tas/distillers/base.py", "tas/models/__init__.py",
            "tas/models/stages.py", "tas/models/assistant.py", "tas/models/entrypoints.py", "tas/losses.py",
            "tas/engine/criterion.py", "tas/stepflops.py", "tas/params.schema.yaml"} <= files
    assert "tas/distillers/kd.py" not in files  # editing another method keeps this one's figures


def test_a_corrupt_cache_file_is_ignored_and_written_again(first_run, measured):
    mini, written = first_run
    # every file the first run wrote (the methods', the class count's, the eval transform's), a method's first
    files = sorted(written, key=lambda path: not path.name.startswith("method-"))
    good = json.loads(files[0].read_text())
    broken = [json.dumps({**good, "value": {**good["value"], "train_flops": "12"}}).encode(),  # its key, a bad value
              b"\x00\xff not json", b'{"key": {"format": 1', b"[]", b'{"key": {}, "value": {}}']
    assert len(files) >= len(broken)
    for i, path in enumerate(files):
        path.write_bytes(broken[i % len(broken)])
    assert describe(CFG, "mini", PAIR) == mini
    assert measured == [list(CFG.experiments["mini"].methods)]
    assert describe(CFG, "mini", PAIR) == mini and len(measured) == 1  # written again, whole
    assert json.loads(files[0].read_text()) == good


def test_an_unwritable_cache_is_skipped(mini, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("TAS_CACHE_DIR", str(blocker))  # a file where the folder would go
    key, roots = {"dataset": "d"}, ("tas.describe",)
    assert describe_module._cache_put("num_classes", key, roots, 7) == 7
    assert describe_module._cache_get("num_classes", key, roots, describe_module._is_count) is None
    monkeypatch.setenv("TAS_CACHE_DIR", str(tmp_path / "cache"))  # the same value, stored: found again
    assert describe_module._cache_put("num_classes", key, roots, 7) == 7
    assert describe_module._cache_get("num_classes", key, roots, describe_module._is_count) == 7
    assert describe_module._cache_get("num_classes", {"dataset": "e"}, roots, describe_module._is_count) is None


def test_a_cached_describe_imports_neither_torch_nor_timm(mini):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "tas", "describe", "--experiment", "mini",
                           "--pair", PAIR, "--json"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == mini
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")}
    assert "tas.describe" in imported and not imported & {"torch", "timm", "numpy"}
