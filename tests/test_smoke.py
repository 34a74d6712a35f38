"""Smoke mode: the paper studies in miniature, with their real models, methods and recipe structure.

Fast tests (the main suite): `shrink` changes sizes and input locations only; the self-made CIFAR-100
archive goes through the real download, md5 and prepare code.

The `smoke` tests (a CI step of their own, `pytest -m smoke`; about half an hour on 2 cores) run real
Snakemake in a temporary copy of the project: every job of the cifar100 study to a 12-row SMOKE table, a
second call with nothing to do, no real results folder; then the ablation, imagenet and cifar100_32 studies
(cifar100_32 on 2 pairs); a subset of cifar100 with bf16 autocast + channels_last on the CPU, and with
gpus_per_job 2 (torchrun, gloo); and one stage through DVC.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tas.config import load_config
from tas.smoke import ACCUMULATION, MICRO_BATCH, STEPS_PER_EPOCH, TEST_SIZE, shrink

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SNAKEMAKE = shutil.which("snakemake", path=str(BIN))
DVC = shutil.which("dvc", path=str(BIN))
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
# The budget of the issue for the whole cifar100 smoke on 2 cores (reported, not asserted: the CI machine
# may be shared; the time is printed and written to smoke-times.json in the project copy).
BUDGET_S = 20 * 60



def smoke_run(test):
    """A test of the smoke runs: slow, deselected from the main suite (`-m "not smoke"`), CI runs it alone."""
    marks = (pytest.mark.slow, pytest.mark.smoke,
             pytest.mark.skipif(SNAKEMAKE is None or DVC is None, reason="snakemake and dvc are needed"))
    for mark in marks:
        test = mark(test)
    return test


# ------------------------------------------------------------------------------------------- fast


def test_shrink_changes_sizes_and_locations_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = copy.deepcopy(PARAMS)
    raw["experiment"] = "mini"  # synthetic data and trained teachers: nothing to make
    small = shrink(raw)
    assert raw == PARAMS  # a new dict
    assert small["paths"] == {"data": "data-smoke", "results": "results-smoke"}
    for key in ("models", "methods", "protocols"):
        assert small[key] == raw[key], key
    global_batch = MICRO_BATCH * ACCUMULATION
    for rid, recipe in small["recipes"].items():
        real = raw["recipes"][rid]
        assert recipe["epochs"] == min(1, real["epochs"])
        assert recipe["global_batch"] == global_batch and recipe["micro_batch"] == MICRO_BATCH
        sizes = {"epochs", "global_batch", "micro_batch", "eval_batch_size"}
        assert {k: v for k, v in recipe.items() if k not in sizes} == {k: v for k, v in real.items() if k not in sizes}
    for dataset in small["datasets"].values():
        assert dataset["train_size"] == STEPS_PER_EPOCH * global_batch and dataset["test_size"] == TEST_SIZE
    for eid, exp in small["experiments"].items():
        real = raw["experiments"][eid]
        assert {k: v for k, v in exp.items() if k != "teachers"} == {k: v for k, v in real.items() if k != "teachers"}
        for tid, teacher in exp["teachers"].items():
            if real["teachers"][tid].get("epochs"):
                assert teacher["epochs"] == 1
    assert small["experiments"]["mini"]["teachers"]["tiny_vit"]["epochs"] == 1  # 20 in the real study


def test_more_gpus_per_job_scale_the_global_batch_not_the_micro_batch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = copy.deepcopy(PARAMS)
    raw["experiment"] = "mini"
    raw["experiments"]["mini"]["gpus_per_job"] = 2
    small = shrink(raw)
    assert small["recipes"]["mini"]["global_batch"] == 2 * MICRO_BATCH * ACCUMULATION
    assert small["recipes"]["mini"]["micro_batch"] == MICRO_BATCH


def test_smoke_config_has_its_own_folders_and_commands(tmp_path, monkeypatch):
    from tas import matrix

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    monkeypatch.chdir(tmp_path)  # smoke inputs are made relative to the project root
    cfg = load_config(params, ["smoke=true"], experiments=["mini"])
    assert cfg.smoke and cfg.results_root == Path("results-smoke") and cfg.data_root == Path("data-smoke")
    jobs = matrix.expand(cfg)
    assert all(job.command[6:8] == ("--set", "smoke=true") for job in jobs)
    assert all(not out.startswith(("results/", "data/")) for job in jobs for out in job.outs)


def test_self_made_cifar_archive_goes_through_download_md5_and_prepare(tmp_path, monkeypatch):
    from tas.data.prepare import load_dataset, prepare_dataset
    from tas.data.spec import DatasetSpec
    from tas.smoke import inputs

    monkeypatch.chdir(tmp_path)
    raw = copy.deepcopy(PARAMS)
    raw["experiment"] = "cifar100_32"  # teachers trained from scratch: the archive is its only input
    small = shrink(raw)
    dataset = small["datasets"]["cifar100"]
    assert dataset["url"].startswith("file://") and len(dataset["md5"]) == 32 and "root" not in dataset
    assert (tmp_path / "data-smoke/cifar100/raw/cifar-100-python.tar.gz").is_file()  # "downloaded"
    manifest = inputs.read_manifest("data-smoke")
    assert shrink(raw) == small and inputs.read_manifest("data-smoke") == manifest  # nothing made twice
    spec = DatasetSpec(id="cifar100", **{k: v for k, v in dataset.items() if k != "source"}, source="cifar100")
    prepare_dataset(spec, "data-smoke")
    data = load_dataset(spec, "data-smoke")
    assert data.num_classes == 100 and data.n_train == dataset["train_size"] and data.n_test == TEST_SIZE


# ------------------------------------------------------------------------------------------- smoke runs


def _env() -> dict:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PYTHONDONTWRITEBYTECODE="1", HF_HUB_OFFLINE="1",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"  # `python` in the jobs' commands is this interpreter
    env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU paths, also on a GPU box
    return env


class Project:
    """A temporary copy of the project (code, workflow, params, git and DVC settings) as a git repository."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.times: dict[str, float] = {}
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for folder in ("tas", "workflow"):
            shutil.copytree(ROOT / folder, root / folder, ignore=ignore)
        for name in ("Snakefile", "params.yaml", ".dvcignore", ".gitignore"):
            shutil.copy2(ROOT / name, root / name)
        self.run("git", "init", "-q")
        self.run("git", "add", "-A")
        self.run("git", "commit", "-qm", "smoke")

    def run(self, *cmd, check: bool = True, timeout: int = 3600,
            label: str | None = None) -> subprocess.CompletedProcess:
        start = time.perf_counter()
        proc = subprocess.run([str(c) for c in cmd], cwd=self.root, env=_env(), capture_output=True, text=True,
                              timeout=timeout)
        if label:
            self.times[label] = round(time.perf_counter() - start, 1)
            (self.root / "smoke-times.json").write_text(json.dumps(self.times, indent=2))
            print(f"{label}: {self.times[label]:.0f} s", file=sys.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                                 f"{proc.stderr[-6000:]}")
        return proc

    def snakemake(self, *args, **kw) -> subprocess.CompletedProcess:
        return self.run(SNAKEMAKE, "--cores", "2", *args, **kw)

    def edit(self, change) -> None:
        path = self.root / "params.yaml"
        params = yaml.safe_load(path.read_text())
        change(params)
        path.write_text(yaml.safe_dump(params, sort_keys=False))

    def table(self, experiment: str, kind: str = "main"):
        import pandas as pd

        folder = self.root / "results-smoke" / experiment / "tables"
        return pd.read_csv(folder / f"{kind}.csv"), (folder / f"{kind}.md").read_text()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    project = Project(tmp_path_factory.mktemp("smoke"))
    project.snakemake("--config", "experiment=cifar100", "smoke=true", label="cifar100 smoke (201 jobs)")
    return project


def _runs_ok(root: Path, experiment: str) -> list[dict]:
    evals = sorted((root / "results-smoke" / experiment / "eval" / "runs").rglob("seed*.json"))
    return [json.loads(p.read_text()) for p in evals]


@smoke_run
def test_cifar100_smoke_ends_with_a_twelve_row_smoke_table(study):
    table, markdown = study.table("cifar100")
    assert markdown.startswith("**SMOKE")
    assert len(table) == 13 and table["pair"].iloc[-1] != table["pair"].iloc[0]  # 12 pairs + the avg-gain row
    methods = PARAMS["experiments"]["cifar100"]["methods"]
    assert len(methods) == 8 and all(f"{m}_mean" in table for m in methods)
    assert any(c.endswith("_paper") for c in table.columns)  # the paper's columns
    assert table[[f"{m}_mean" for m in methods]].iloc[:-1].notna().all().all()  # every cell was measured
    runs = _runs_ok(study.root, "cifar100")
    assert len(runs) == 84 + 5
    summary = json.loads((study.root / "results-smoke/cifar100/tables/summary.json").read_text())
    assert summary["smoke"] is True and not summary["missing"]
    print(f"cifar100 smoke: {study.times} (budget {BUDGET_S} s)", file=sys.stderr)


@smoke_run
def test_second_call_has_nothing_to_do(study):
    proc = study.snakemake("-n", "--config", "experiment=cifar100", "smoke=true")
    assert "Nothing to be done" in proc.stdout + proc.stderr


@smoke_run
def test_the_real_folders_are_never_written(study):
    for real in ("results/cifar100", "data/cifar100", "data"):
        assert not (study.root / real).exists(), real


@smoke_run
def test_the_other_paper_studies_run(study):
    # cifar100_32 on 2 of its 12 pairs (a CNN and a ViT student; CI's 90 minutes); ablation and imagenet whole.
    keep = ["swin_t32-r18_32", "convnext_t32-deit_t32"]

    def fewer_pairs(params):
        exp = params["experiments"]["cifar100_32"]
        exp["pairs"] = [p for p in exp["pairs"] if f"{p['teacher']}-{p['student']}" in keep]

    study.edit(fewer_pairs)
    study.snakemake("--config", "experiment=[ablation,imagenet,cifar100_32]", "smoke=true",
                    label="ablation + imagenet + cifar100_32 (2 pairs) smoke")
    ablation, markdown = study.table("ablation", "ablation")
    assert markdown.startswith("**SMOKE") and len(ablation) >= len(PARAMS["experiments"]["ablation"]["methods"])
    imagenet, markdown = study.table("imagenet")
    assert markdown.startswith("**SMOKE") and len(imagenet) == 4 + 1
    small, markdown = study.table("cifar100_32")
    assert markdown.startswith("**SMOKE") and len(small) == len(keep) + 1
    teachers = json.loads((study.root / "results-smoke/cifar100_32/teachers/swin_t32/metrics.json").read_text())
    assert teachers["epochs"] == 1  # trained, 1 epoch
    proc = study.snakemake("-n", "--config", "experiment=[cifar100,ablation,imagenet,cifar100_32]", "smoke=true")
    assert "Nothing to be done" in proc.stdout + proc.stderr


# The CPU paths of the GPU features on a subset of cifar100 (kept small for CI's 90 minutes): KD, OFA and
# TAS on a CNN student, TAS on a ViT student, and the CNN student's scratch run; their teachers too.
SUBSET = [f"results-smoke/cifar100/eval/runs/swin_t-r18/{m}/seed0.json" for m in ("kd", "ofa", "tas")]
SUBSET += ["results-smoke/cifar100/eval/runs/convnext_t-deit_t/tas/seed0.json",
           "results-smoke/cifar100/eval/runs/r18/scratch/seed0.json"]


@smoke_run
def test_bf16_autocast_and_channels_last_on_the_cpu(study):
    def bf16(params):
        params["runtime"].update(amp="bf16", channels_last="on")

    study.edit(bf16)
    # targets before --config: Snakemake's --config takes every word after it as a key=value
    study.snakemake(*SUBSET, "--config", "experiment=cifar100", "smoke=true", label="bf16 + channels_last subset")
    metrics = json.loads((study.root / "results-smoke/cifar100/runs/swin_t-r18/tas/seed0/metrics.json").read_text())
    assert metrics["placement"] == {"amp": "bf16", "channels_last": True, "compile": False}


@smoke_run
def test_two_processes_per_job_under_gloo(study):
    def two(params):
        params["runtime"].update(amp="off", channels_last="off")
        params["experiments"]["cifar100"]["gpus_per_job"] = 2

    study.edit(two)
    subset = [p for p in SUBSET if ("/swin_t-r18/" in p and "/ofa/" not in p) or "/r18/" in p]
    study.snakemake(*subset, "--config", "experiment=cifar100", "smoke=true", label="gpus_per_job 2 (gloo) subset")
    metrics = json.loads((study.root / "results-smoke/cifar100/runs/swin_t-r18/tas/seed0/metrics.json").read_text())
    assert metrics["world_size"] == 2


@smoke_run
def test_a_smoke_stage_runs_through_dvc(study):
    study.run(sys.executable, "-m", "tas", "dvc-yaml", "--set", "experiment=ablation", "--set", "smoke=true")
    study.run(DVC, "init", "-q")
    shutil.copy2(ROOT / ".dvc" / "config", study.root / ".dvc" / "config")
    stage = "evaluate--ablation--swin_t-r18--kd--seed0"
    study.run(DVC, "repro", "--force-downstream", stage, label="dvc repro of one ablation smoke stage")
    assert (json.loads((study.root / "results-smoke/ablation/eval/runs/swin_t-r18/kd/seed0.json").read_text())["n"]
            == TEST_SIZE)


# ------------------------------------------------------------------------------------------- the first GPU hour


@pytest.mark.slow
def test_run_gpu_sh_parses_and_its_commands_exist():
    script = ROOT / "benchmarks" / "run_gpu.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    proc = subprocess.run([str(script), "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHON=sys.executable))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for step in ("[smoke]", "[step]", "[jpeg]", "[nccl]"):
        assert step in proc.stderr
    assert "smoke=true" in proc.stderr and "--pair swin_t-r18 --methods kd,ofa,tas" in proc.stderr
    out = Path(proc.stderr.strip().rsplit("summary in ", 1)[1].removesuffix("summary.md"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step_benchmark"] is None and "TODO(#26)" in summary["todo"]  # nothing measured, nothing claimed
    shutil.rmtree(out)


def test_gpu_summary_computes_mfu_from_the_step_benchmark(tmp_path):
    step = json.loads((ROOT / "results/bench/cpu-intel-xeon-1t-mini-tiny_cnn-tiny_vit.json").read_text())
    step["device"]["name"] = "NVIDIA H200"
    (tmp_path / "nvidia-h200-paper-swin_t-r18.json").write_text(json.dumps(step))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_summary.py"), str(tmp_path)], capture_output=True,
                          text=True, env={k: v for k, v in os.environ.items() if k != "GPU_PEAK_TFLOPS"})
    assert proc.returncode == 0, proc.stderr
    kd = json.loads((tmp_path / "summary.json").read_text())["step_benchmark"]["methods"]["kd"]
    expected = step["methods"]["kd"]["images_per_s"] * step["methods"]["kd"]["train_gflops_per_image"] * 1e9 / 989e12
    assert kd["bf16_mfu"] == round(expected, 4)
    assert "| kd |" in (tmp_path / "summary.md").read_text()
