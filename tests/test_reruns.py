"""What a change reruns, asked of the real tools: Snakemake's dry run and `dvc status` on a finished study.

A job reruns when its params, its inputs or the code it runs change; nothing else does. The study here is
the `mini` experiment run by real Snakemake with the fake `python` of test_matrix (it writes each job's
declared outputs), then adopted by real DVC (`dvc commit`), in a temporary git repository. Edits are made
and reverted per test.
"""

from __future__ import annotations

import json

import pytest
import yaml

from test_matrix import DVC, SNAKEMAKE, fake_project, parse_dry_run  # noqa: F401  (fake_project is a fixture)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(fake_project):  # noqa: F811
    root, run = fake_project
    run(SNAKEMAKE, "--cores", "2", "--resources", "gpu=2")
    # The documented routine: after a Snakemake run, DVC adopts the outputs (docs/pipeline.md).
    run(DVC, "commit", "-f", "-q")
    return root, run


def planned(run) -> set[str]:
    """Jobs `snakemake -n` would run, as '<rule> <wildcard values>'."""
    proc = run(SNAKEMAKE, "-n", "--cores", "2", "--resources", "gpu=2")
    return {" ".join([job["rule"], *job["wildcards"].values()]) for job in parse_dry_run(proc.stdout)} - {"all"}


def dvc_changed(run) -> set[str]:
    """Stages `dvc status` reports as changed (their own deps, params or outs)."""
    return set(json.loads(run(DVC, "status", "--json").stdout or "{}"))


def plan_after_comment(root, run, rel: str) -> tuple[set[str], set[str]]:
    """What Snakemake and DVC would rerun after a comment line is appended to `rel` (then taken back)."""
    path = root / rel
    original = path.read_text()
    path.write_text(original + "# a comment\n")
    try:
        return planned(run), dvc_changed(run)
    finally:
        path.write_text(original)


def test_a_finished_study_after_dvc_commit_is_clean_for_both_tools(finished):
    root, run = finished
    assert planned(run) == set()
    assert dvc_changed(run) == set()


def test_a_comment_in_the_tas_method_reruns_only_tas_runs(finished):
    root, run = finished
    jobs, stages = plan_after_comment(root, run, "tas/distillers/tas.py")
    trained = {j for j in jobs if j.startswith("distill ")}
    assert trained and all(j.split()[3] == "tas" for j in trained), jobs
    # the tas method's code is also that of its prepare-run jobs (its assistant, built first)
    assert {j.split()[0] for j in jobs} == {"prepare_run", "distill", "evaluate_run", "tables"}
    assert all(j.split()[3] == "tas" for j in jobs if j.startswith("prepare_run ")), jobs
    assert stages and all(s.startswith(("distill--", "prepare-run--")) and s.split("--")[3] == "tas"
                          for s in stages), stages


def test_losses_rerun_the_methods_that_import_them_never_data_or_teachers(finished):
    root, run = finished
    jobs, stages = plan_after_comment(root, run, "tas/losses.py")
    rules = {j.split()[0] for j in jobs}
    assert "distill" in rules
    assert not rules & {"prepare_arrays", "train_teacher", "distill_student", "evaluate_teacher"}
    # scratch imports no loss of tas.losses: its runs (per student) stay
    assert not any(" scratch " in f" {j} " for j in jobs)
    assert stages and all(s.startswith(("distill--", "prepare-run--")) for s in stages)


def test_the_report_reruns_only_the_tables(finished):
    root, run = finished
    jobs, stages = plan_after_comment(root, run, "tas/report/tables.py")
    assert jobs == {"tables mini"}
    assert stages == {"tables--mini"}


def test_the_data_source_reruns_everything_downstream_of_its_data(finished):
    root, run = finished
    jobs, _ = plan_after_comment(root, run, "tas/data/sources/synthetic.py")
    rules = {j.split()[0] for j in jobs}
    assert {"prepare_arrays", "train_teacher", "distill", "distill_student", "tables"} <= rules


def test_one_teachers_recipe_reruns_that_teacher_and_its_descendants(finished):
    root, run = finished
    params = root / "params.yaml"
    original = params.read_text()
    changed = yaml.safe_load(original)
    teacher = changed["experiments"]["mini"]["teachers"]["tiny_vit"]
    teacher["epochs"] = int(teacher.get("epochs") or 6) + 1  # tiny_vit's own entry: tiny_cnn's stays as it was
    params.write_text(yaml.safe_dump(changed, sort_keys=False))
    try:
        jobs = planned(run)
        stages = dvc_changed(run)
    finally:
        params.write_text(original)
    assert "train_teacher mini tiny_vit" in jobs
    assert "train_teacher mini tiny_cnn" not in jobs
    assert not any(j.startswith("prepare_") for j in jobs)
    trained = {j for j in jobs if j.startswith("distill ")}
    assert trained and all(j.split()[2].startswith("tiny_vit-") for j in trained), trained
    assert not any(j.startswith("distill_student") for j in jobs)
    # its evaluation reads the recipe the entry names, not its epochs: it reruns through its input, the new
    # model.pt (planned above by Snakemake), and is no stage whose own params changed
    assert stages == {"train-teacher--mini--tiny_vit"}


def test_dvc_exp_show_has_readable_columns(finished):
    root, run = finished
    out = run(DVC, "exp", "show", "--no-pager", "--only-changed", "--md").stdout
    assert "…" not in out
