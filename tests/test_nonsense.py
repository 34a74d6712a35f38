"""Issue 23, item 7: settings that ran silently (or failed unclearly) are refused with one line naming the key,
exit 2, by the real CLI; numbers written `1e-3` are numbers."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tas.errors import TasError

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SNAKEMAKE = shutil.which("snakemake", path=str(BIN))


def tas(*args: str, params: Path | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    extra = ["--params", str(params)] if params else []
    return subprocess.run([sys.executable, "-m", "tas", *args, *extra], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def refused(proc: subprocess.CompletedProcess) -> str:
    """The one line of a refusal (exit 2, no traceback)."""
    assert proc.returncode == 2, proc.stdout[-1000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    return lines[0]


def test_a_student_trained_for_0_epochs_is_refused_a_teacher_used_as_given_is_not():
    """Measured: a student with `epochs: 0` recorded its chance-level 9.2 % as a normal result."""
    line = refused(tas("check", "--set", "recipes.mini.epochs=0"))
    assert "recipes.mini.epochs: 0" in line and "student" in line
    # the same for a job: nothing is trained or written
    assert "recipes.mini.epochs" in refused(tas("distill", "--experiment", "mini", "--pair", "tiny_cnn-tiny_vit",
                                                "--method", "kd", "--set", "recipes.mini.epochs=0"))
    given = tas("check", "--set", "experiments.mini.teachers.tiny_cnn.epochs=0",
                "--set", "experiments.mini.teachers.tiny_cnn.checkpoint=teacher.pt")
    assert given.returncode == 0, given.stderr


def test_a_key_given_twice_in_params_yaml_is_refused_with_both_lines(tmp_path):
    """Measured: YAML keeps the last of two `experiment:` keys, and the study switched without a word."""
    text = (ROOT / "params.yaml").read_text()
    params = tmp_path / "params.yaml"
    params.write_text(text + "\nexperiment: cifar100\n")
    first = 1 + next(i for i, line in enumerate(text.splitlines()) if line.startswith("experiment:"))
    line = refused(tas("check", params=params))
    assert f"experiment: duplicate key at line {len(text.splitlines()) + 2} (first at line {first})" in line


def test_threads_0_is_refused():
    """Measured: `--threads 0` ran with one thread."""
    line = refused(tas("distill", "--experiment", "mini", "--pair", "tiny_cnn-tiny_vit", "--method", "kd",
                       "--threads", "0"))
    assert "--threads 0" in line


def test_a_300_character_id_is_refused_naming_the_key_not_a_traceback():
    """Measured: a traceback, "File name too long"."""
    line = refused(tas("check", "--set", "experiment=" + "a" * 300))
    assert line.startswith("error: params.yaml: experiment: ") and "is 300 characters long; at most 64" in line
    assert len(line) < 200


def test_numbers_in_exponent_form_are_numbers(tmp_path):
    """Measured: `--set recipes.mini.lr=1e-3` gave "expected number, got str" (YAML 1.1 reads 1e-3 as text)."""
    from tas.config import load_config

    assert load_config(ROOT / "params.yaml", ["recipes.mini.lr=1e-3"]).recipes["mini"].lr == pytest.approx(0.001)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["recipes"]["mini"]["lr"] = "LR_HERE"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False).replace("LR_HERE", "5e-2"))  # as a user writes it
    assert load_config(params).recipes["mini"].lr == pytest.approx(0.05)
    assert tas("check", "--set", "recipes.mini.lr=1e-3").returncode == 0


def test_a_short_sha256_gets_a_message_about_its_form():
    """Measured: `sha256: abc` said "expected null, got str"."""
    line = refused(tas("check", "--set", "experiments.mini.teachers.tiny_cnn.sha256=abc",
                       "--set", "experiments.mini.teachers.tiny_cnn.checkpoint=https://example.org/t.pt"))
    assert "experiments.mini.teachers.tiny_cnn.sha256" in line and "'abc'" in line and "[0-9a-fA-F]{64}" in line
    assert "null" not in line


def test_an_empty_class_folder_is_refused_naming_it(tmp_path):
    """Measured: an empty class folder was kept as a class of 0 images."""
    from tas.config import load_config
    from tas.data import imagefolder

    root = tmp_path / "folder"
    for split in ("train", "val"):
        for cls in ("cat", "dog", "owl"):
            (root / split / cls).mkdir(parents=True)
            if cls != "owl" or split == "val":
                (root / split / cls / "a.jpg").write_bytes(b"\xff\xd8")
    cfg = load_config(ROOT / "params.yaml", ["datasets.imagenet.root=" + str(root)])
    with pytest.raises(TasError) as err:
        imagefolder.scan(root, cfg.datasets["imagenet"])
    assert f"class folder {root / 'train' / 'owl'} has no images" in str(err.value)


def test_tables_before_any_evaluation_suggests_a_command_that_works(tmp_path):
    """Measured: it suggested `python -m tas evaluate --experiment mini`, which itself fails (it needs a run)."""
    line = refused(tas("tables", "--experiment", "mini", "--set", f"paths.results={tmp_path / 'results'}"))
    suggested = re.findall(r"`([^`]+)`", line)
    assert suggested and suggested[0].startswith("snakemake --cores 2 --config experiment=mini"), line
    if SNAKEMAKE is None:
        return
    project = tmp_path / "project"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "tas", project / "tas", ignore=ignore)
    shutil.copytree(ROOT / "workflow", project / "workflow", ignore=ignore)
    for name in ("Snakefile", "params.yaml"):
        shutil.copy2(ROOT / name, project / name)
    command = suggested[0].split() + ["-n"]  # the suggestion, as a dry run
    proc = subprocess.run([str(BIN / command[0]), *command[1:]], cwd=project, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "evaluate_run" in proc.stdout + proc.stderr


def test_a_bar_in_a_display_name_does_not_break_the_markdown_table():
    """Measured: a `|` in a method's display name split its row into one more column than the header."""
    import pandas as pd

    from tas.report import render

    frame = pd.DataFrame({"Pair": ["T|S"], "Method": ["K|D"], "Top-1": ["70.00"]})
    text = render.to_markdown(render.Display(frame, frozenset({(0, "Method")}), "caption"))
    rows = [line for line in text.splitlines() if line.startswith("|")]
    cells = [len(re.split(r"(?<!\\)\|", row)) for row in rows]
    assert len(set(cells)) == 1, text
    assert r"K\|D" in text and r"T\|S" in text
    assert "K|D" in render.to_html(render.Display(frame, frozenset(), "c"))  # HTML and LaTeX cells hold a '|' as it is
