"""Shared pytest fixtures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def own_user_cache(tmp_path_factory):
    """The tests' own user cache (tas.usercache), for them and the processes they start: they neither read
    what a developer's runs derived nor leave entries in ~/.cache/tas."""
    before = os.environ.get("TAS_CACHE_DIR")
    os.environ["TAS_CACHE_DIR"] = str(tmp_path_factory.mktemp("user-cache"))
    yield
    if before is None:
        os.environ.pop("TAS_CACHE_DIR", None)
    else:
        os.environ["TAS_CACHE_DIR"] = before


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: as fast for tiny batches and far steadier when the cores are shared
    (pytest-xdist workers, other jobs); restored for the modules that follow."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_build(tmp_path_factory):
    """`shared_build(name, build)`: a fresh copy of a folder that `build(folder)` makes once per test session.

    One build for all pytest-xdist workers (under a file lock in the session's temporary folder), so that
    several test files can each start from the same expensive state (a study run by real Snakemake and
    DVC) without each paying for it; every caller gets a copy of its own (modification times kept), so what
    one file does to its copy never reaches another's. The copy lives in another folder than the build: not
    for a study of real jobs whose tests compare rebuilt bytes (provenance.json records the job's argv, with
    its absolute path: tests/test_reruns_real.py failed so)."""
    import filelock

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's folder, shared by the workers

    def copy_of(name: str, build) -> Path:
        built, done = base / f"shared-{name}", base / f"shared-{name}.done"
        with filelock.FileLock(str(base / f"shared-{name}.lock")):
            if not done.exists():
                shutil.rmtree(built, ignore_errors=True)  # a build that failed half-way
                built.mkdir()
                build(built)
                done.touch()
        copy = tmp_path_factory.mktemp(name)
        shutil.copytree(built, copy, symlinks=True, dirs_exist_ok=True)
        shutil.rmtree(copy / ".dvc" / "tmp", ignore_errors=True)  # DVC's caches of the build's folder
        return copy

    return copy_of


def study_runner(root: Path, path_first=(), timeout: int = 600):
    """`run(*cmd, check=True)` in a test study's folder `root`: this interpreter's bin/ on PATH (after the
    folders of `path_first`, e.g. a stand-in `python`), so `python` in the jobs' commands, `snakemake` and
    `dvc` are this environment's; a git identity; no DVC analytics; no CUDA_VISIBLE_DEVICES from outside. A
    failed command raises with the ends of its output."""
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PYTHONDONTWRITEBYTECODE="1", GIT_AUTHOR_NAME="t",
               GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    env["PATH"] = os.pathsep.join([*map(str, path_first), str(Path(sys.executable).parent), os.environ["PATH"]])
    env.pop("CUDA_VISIBLE_DEVICES", None)

    def run(*cmd, check=True) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(c) for c in cmd], cwd=root, env=env, capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                                 f"{proc.stderr[-4000:]}")
        return proc

    return run


# The files that take longest (each a study run by real Snakemake / DVC, or many `python -m tas` processes),
# longest first, as measured on 2 cores at 722af31 (issue 24). With `--dist loadfile` a file is the unit of scheduling:
# one started last keeps one worker busy alone at the end, so these start first, one per worker, and the many
# short files fill in behind them. The second file of a shared build (tests/test_agreement_exp.py) comes after
# the file that builds it, so it finds it built. A file missing here (renamed, new) is only scheduled later,
# never skipped.
LONGEST_FIRST = (
    "test_agreement.py", "test_reruns.py", "test_reruns_real.py", "test_agreement_exp.py", "test_cli.py",
    "test_matrix.py", "test_dvc_remote.py", "test_resume.py", "test_faults.py", "test_models.py", "test_plugins.py",
    "test_codedeps.py", "test_teachers.py", "test_batching.py",
)


def pytest_configure(config):
    """pytest-xdist (3.x) reorders files by their number of tests unless told not to, which started the long
    studies (few tests each) last; keep the order pytest_collection_modifyitems gives."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def _file_rank(path, slow_files) -> tuple[int, int]:
    if path.name in LONGEST_FIRST:
        return 0, LONGEST_FIRST.index(path.name)
    return (1 if path in slow_files else 2), 0


def pytest_collection_modifyitems(config, items):
    """The longest files first (LONGEST_FIRST), then the other files with end-to-end (`slow`) tests, then the
    rest. `--dist loadfile` hands files to the workers in this order, so the long ones start early instead of
    keeping one worker busy alone at the end."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: _file_rank(item.path, slow_files))  # stable: the order within each file stays
