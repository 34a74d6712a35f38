"""What is on disk is what both tools say is done (issue 23), asked of real Snakemake and real DVC: the second half
of tests/test_agreement.py (a deleted run, `dvc checkout`, in-place writes, `dvc exp run` / `exp apply`), in a file of
its own so that pytest-xdist runs the two halves side by side. The study is the same one (built once per test
session, tests/conftest.py: shared_build), in a copy of this file's own; each test leaves it clean for both tools,
and asserts it. The `dvc exp` test has a copy of its own (its experiment stays applied).
"""

from __future__ import annotations

import shutil
import sys
import time

import pytest

from test_agreement import DVC, SNAKEMAKE, TEACHER_MODEL, assert_clean, dvc_changed, ran, study_copy

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(SNAKEMAKE is None or DVC is None, reason="snakemake and dvc are needed")]


@pytest.fixture(scope="module")
def study(shared_build):
    return study_copy(shared_build)


@pytest.fixture
def own_study(shared_build):
    """A copy for one test alone: the experiment it runs and applies need not be undone for another test."""
    return study_copy(shared_build)


def test_a_deleted_run_and_its_evaluation_are_rebuilt(study):
    root, run = study
    run_dir = root / "results/mini/runs/tiny_cnn-tiny_vit/kd/seed0"
    evaluation = root / "results/mini/eval/runs/tiny_cnn-tiny_vit/kd/seed0.json"
    shutil.rmtree(run_dir)
    evaluation.unlink()
    run(SNAKEMAKE, "--cores", "2")
    assert sorted(ran(root)) == ["distill@mini/tiny_cnn-tiny_vit/kd/seed0", "evaluate@mini/tiny_cnn-tiny_vit/kd/seed0"]
    assert_clean(run)


def test_after_dvc_checkout_both_tools_are_clean(study):
    """A deleted output restored by `dvc checkout` (a copy with a new mtime) is not rebuilt or rerun."""
    root, run = study
    (root / TEACHER_MODEL).unlink()
    run(DVC, "checkout", "-q", TEACHER_MODEL)
    assert (root / TEACHER_MODEL).is_file()
    assert_clean(run)
    assert ran(root) == []


def test_an_in_place_write_cannot_damage_the_cache(study):
    """Measured with hard links: writing into an output changed the cached copy, and `dvc checkout` then
    restored the damaged bytes."""
    root, run = study
    path = root / TEACHER_MODEL
    before = path.read_bytes()
    with open(path, "r+b") as fh:  # in place, as root: the cache's read-only mode would not stop it
        fh.seek(10)
        fh.write(b"XXXX")
    assert dvc_changed(run)
    run(DVC, "checkout", "--force", "-q", TEACHER_MODEL)
    assert path.read_bytes() == before
    time.sleep(0.01)
    assert_clean(run)
    assert ran(root) == []


def test_after_dvc_exp_run_checkout_and_exp_apply_both_tools_are_clean(own_study):
    """Measured: after `dvc exp run` Snakemake wanted to rerun KD until `snakemake --touch`, which wrote
    .snakemake_timestamp into tables/ and plots/ and made `dvc status` report the tables stage. Now, with no
    --touch: after the experiment, after going back to the commit (`git checkout` + `dvc checkout`) and after
    applying the experiment again (`dvc exp apply`), both tools are clean, and Snakemake runs nothing."""
    root, run = own_study
    kd = root / "results/mini/runs/tiny_cnn-tiny_vit/kd/seed0/metrics.json"
    baseline = kd.read_text()
    exp = run(DVC, "exp", "run", "-n", "kd-t2", "-S", "methods.kd.T=2")
    reran = ran(root)
    assert reran and all(name.split("/")[2:3] in (["kd"], []) or name.startswith("tables@") for name in reran), \
        (reran, exp.stdout[-3000:], exp.stderr[-3000:])
    assert kd.read_text() != baseline
    assert_clean(run)
    assert ran(root) == []
    assert not list((root / "results/mini/tables").glob(".snakemake_timestamp"))

    run("git", "checkout", "-q", "--", ".")
    run(DVC, "checkout", "-q", "--force")
    assert kd.read_text() == baseline
    assert_clean(run)
    assert ran(root) == []

    run(DVC, "exp", "apply", "-q", "kd-t2")
    assert kd.read_text() != baseline
    assert_clean(run)
    assert ran(root) == []

    # The sweep as a small table: the changed param and each method's mean top-1, one row per experiment.
    sweep = run(sys.executable, "-m", "tas.sweep").stdout
    header, rule, *body = sweep.splitlines()
    assert header.startswith("| experiment | methods.kd.T | ") and "kd top-1" in header and header.count("|") < 12
    assert any(line.startswith("| kd-t2 | 2 |") for line in body), sweep
