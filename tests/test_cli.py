"""The CLI as users run it: real processes, real timm models, the synthetic dataset."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def tas(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tas", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> list[str]:
    """Overrides that keep a whole job to seconds on 2 CPU cores."""
    root = tmp_path_factory.mktemp("cli")
    return [
        "--set", f"paths.data={root / 'data'}", "--set", f"paths.results={root / 'results'}",
        "--set", "datasets.synthetic.train_size=1000", "--set", "datasets.synthetic.test_size=300",
        "--set", "recipes.mini_teacher.epochs=3", "--set", "recipes.mini.epochs=1", "--set", "runtime.progress=false",
    ]


def _results(tiny: list[str]) -> Path:
    return Path(next(a.split("=", 1)[1] for a in tiny if a.startswith("paths.results=")))


def test_every_option_of_every_subcommand_has_help_and_upper_case_acronyms():
    import argparse
    import re

    from tas.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    missing, lowered = [], []
    acronyms = re.compile(r"\b(json|flops|gflops|l2g|tas|csv|md5|gpu|cpu|html)\b")
    for name, p in sub.choices.items():
        texts = [p.description or ""]
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings)}")
            texts.append(action.help or "")
        # option names and file names (assistant.json) are spelled as typed
        lowered += [f"{name}: {t}" for t in texts if acronyms.search(re.sub(r"--\S+|\S+\.\w+|`[^`]*`", "", t))]
    assert not missing, missing
    assert not lowered, lowered


def test_help_lists_every_subcommand():
    out = tas("--help")
    assert out.returncode == 0
    for subcommand in ("check", "prepare-data", "train-teacher", "prepare-run", "distill", "evaluate", "tables",
                       "dvc-yaml", "bench"):
        assert subcommand in out.stdout
        sub = tas(subcommand, "--help")
        assert sub.returncode == 0 and "--params" in sub.stdout and "--set" in sub.stdout


def test_distill_help_explains_student_runs():
    out = tas("distill", "--help")
    assert out.returncode == 0
    text = " ".join(out.stdout.split())  # argparse wraps lines
    assert "(--pair PAIR | --student STUDENT)" in text
    assert "runs once per student" in text and "--pair T-S, which means the same run" in text


def test_check_prints_resolved_experiment():
    out = tas("check")
    assert out.returncode == 0, out.stderr
    resolved = json.loads(out.stdout)
    assert resolved["mini"]["runs"] == 11 and resolved["mini"]["dataset"] == "synthetic"


def test_train_teacher_then_evaluate(tiny):
    assert tas("prepare-data", "--dataset", "synthetic", *tiny).returncode == 0
    out = tas("train-teacher", "--experiment", "mini", "--teacher", "tiny_cnn", *tiny)
    assert out.returncode == 0, out.stderr
    job = _results(tiny) / "mini" / "teachers" / "tiny_cnn"
    # the line the Snakemake rules echo to the console (ECHO_RESULT): folder, final top-1 and time
    (done,) = [line for line in out.stderr.splitlines() if " done " in line]
    assert str(job) in done and "top1" in done and done.endswith(" s")
    for name in ("model.pt", "metrics.json", "history.csv", "log.txt", "provenance.json"):
        assert (job / name).is_file() and (job / name).stat().st_size > 0
    state = torch.load(job / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["top1"] > 25.0, metrics  # 10 classes: chance is 10 %
    assert "provenance" not in metrics  # `dvc metrics show` lists results only
    prov = json.loads((job / "provenance.json").read_text())
    assert prov["seed"] == 0 and len(prov["dataset_checksum"]) == 64 and prov["params_hash"]
    assert {"torch", "timm", "python"} <= set(prov["versions"]) and "cpu" in prov["device"]
    rows = list(csv.DictReader((job / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and "loss_ce" in rows[0]

    out = tas("evaluate", "--experiment", "mini", "--teacher", "tiny_cnn", *tiny)
    assert out.returncode == 0, out.stderr
    report = json.loads((_results(tiny) / "mini" / "eval" / "teachers" / "tiny_cnn.json").read_text())
    assert abs(report["top1"] - metrics["top1"]) < 1e-6
    assert report["params"] == metrics["params"] and report["flops"] > 0 and report["images_per_s"] > 0


def test_rerun_of_finished_job_resumes_without_training(tiny):
    job = _results(tiny) / "mini" / "teachers" / "tiny_cnn"
    before = json.loads((job / "metrics.json").read_text())["top1"]
    out = tas("train-teacher", "--experiment", "mini", "--teacher", "tiny_cnn", *tiny)
    assert out.returncode == 0, out.stderr
    assert "resumed" in out.stderr
    assert json.loads((job / "metrics.json").read_text())["top1"] == before


def test_distill_needs_the_teacher_first(tiny):
    out = tas("distill", "--experiment", "mini", "--pair", "tiny_vit-tiny_mlp", "--method", "kd", *tiny)
    assert out.returncode == 2
    assert "train-teacher --experiment mini --teacher tiny_vit" in out.stderr
    assert not (_results(tiny) / "mini" / "runs" / "tiny_vit-tiny_mlp").exists()


def test_scratch_by_student_or_by_pair_is_one_run(tiny):
    assert tas("prepare-data", "--dataset", "synthetic", *tiny).returncode == 0
    runs = _results(tiny) / "mini" / "runs"
    out = tas("distill", "--experiment", "mini", "--student", "tiny_mlp", "--method", "scratch", *tiny)
    assert out.returncode == 0, out.stderr
    run = runs / "tiny_mlp" / "scratch" / "seed0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["student"] == "tiny_mlp" and "pair" not in metrics and "teacher" not in metrics
    # the pair's name for the same run finds it finished: nothing is trained again, nothing written elsewhere
    out = tas("distill", "--experiment", "mini", "--pair", "tiny_cnn-tiny_mlp", "--method", "scratch", *tiny)
    assert out.returncode == 0, out.stderr
    assert "resumed" in out.stderr and json.loads(out.stdout)["top1"] == metrics["top1"]
    assert not (runs / "tiny_cnn-tiny_mlp").exists()
    evals = _results(tiny) / "mini" / "eval" / "runs"
    by_student = tas("evaluate", "--experiment", "mini", "--student", "tiny_mlp", "--method", "scratch", *tiny)
    assert by_student.returncode == 0, by_student.stderr
    record = json.loads((evals / "tiny_mlp" / "scratch" / "seed0.json").read_text())
    assert record["student"] == "tiny_mlp" and "pair" not in record and "teacher_top1" not in record
    by_pair = tas("evaluate", "--experiment", "mini", "--pair", "tiny_cnn-tiny_mlp", "--method", "scratch", *tiny)
    assert by_pair.returncode == 0, by_pair.stderr
    assert json.loads(by_pair.stdout)["top1"] == record["top1"]
    assert sorted(p.name for p in evals.iterdir()) == ["tiny_mlp"]


def test_teacher_method_by_student_fails_before_writing(tiny):
    out = tas("distill", "--experiment", "mini", "--student", "tiny_vit", "--method", "kd", *tiny)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: method 'kd' needs a teacher"), out.stderr
    assert "use --pair instead of --student" in lines[0] and "tiny_cnn-tiny_vit" in lines[0]
    assert not (_results(tiny) / "mini" / "runs" / "tiny_vit").exists()


def test_distill_tas_records_assistant_accuracy(tiny):
    run_ids = ("--experiment", "mini", "--pair", "tiny_cnn-tiny_vit", "--method", "tas")
    out = tas("distill", *run_ids, *tiny)  # TAS's assistant is built first, by its prepare-run job
    assert out.returncode == 2 and "run its prepare-run job first" in out.stderr and "Traceback" not in out.stderr
    assert tas("prepare-run", *run_ids, *tiny).returncode == 0
    out = tas("distill", *run_ids, *tiny)
    assert out.returncode == 0, out.stderr
    run = _results(tiny) / "mini" / "runs" / "tiny_cnn-tiny_vit" / "tas" / "seed0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["auxiliary"]["assistant"]["top1"] <= 100.0 and metrics["extra_params"] > 0
    header = (run / "history.csv").read_text().splitlines()[0]
    for term in ("loss_ce", "loss_ce_assistant", "loss_nce_ts", "loss_nce_ta", "loss_nce_as", "loss_ofa_ts",
                 "loss_ofa_ta", "loss_ofa_as"):
        assert term in header


@pytest.mark.parametrize("args, fragment", [
    (["distill", "--experiment", "mini", "--pair", "nope-tiny_cnn", "--method", "kd"], "unknown pair 'nope-tiny_cnn'"),
    (["distill", "--experiment", "mini", "--pair", "tiny_cnn-tiny_vit", "--method", "dist"],
     "method 'dist' is not in experiment 'mini'"),
    (["distill", "--experiment", "mini", "--student", "r18", "--method", "scratch"], "unknown student 'r18'"),
    (["distill", "--experiment", "mini", "--student", "tiny_vit", "--method", "scratch", "--seed", "3"],
     "seed 3 is not in"),
    (["evaluate", "--experiment", "mini", "--student", "tiny_vit"], "needs --method"),
    (["train-teacher", "--experiment", "nope", "--teacher", "tiny_cnn"], "unknown experiment 'nope'"),
    (["train-teacher", "--experiment", "mini", "--teacher", "r18"], "unknown teacher 'r18'"),
    (["prepare-data", "--dataset", "imagenet"], "imagenet"),
])
def test_bad_ids_exit_two_with_one_line(tiny, args, fragment):
    out = tas(*args, *tiny)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], out.stderr
