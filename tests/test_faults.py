"""Faults a new user meets, each reproduced: one clear line, exit 2, nothing deleted or half-written.

The Snakemake cases run real `snakemake` in a temporary copy of the project (its code, Snakefile and
params.yaml); each stops while Snakemake parses the Snakefile or in `onstart`, before any job runs.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tas import io as tas_io
from tas import preflight
from tas.engine import checkpoint, run_lock
from tas.engine.trainer import PROGRESS_EVERY_S, progress_due
from tas.errors import TasError

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SNAKEMAKE = shutil.which("snakemake", path=str(BIN))
TORCH_DISK_FULL = ("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: "
                   "file write failed")


# ------------------------------------------------------------------------------ disk full


def _no_temp_files(folder: Path) -> bool:
    return not list(folder.glob(".*.tmp"))


def test_disk_full_in_torch_save_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt" / "last.pt"
    checkpoint.save(path, {"w": torch.zeros(4)})
    before = path.read_bytes()
    real_save = torch.save

    def save_until_full(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial")  # what torch had written (into the temp file's handle) when the disk filled
        raise RuntimeError(TORCH_DISK_FULL)

    monkeypatch.setattr(torch, "save", save_until_full)
    with pytest.raises(tas_io.DiskFull) as err:
        checkpoint.save(path, {"w": torch.zeros(1000, 1000)})
    monkeypatch.setattr(torch, "save", real_save)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "free" in message
    assert "3.8 MB" in message  # 10^6 float32: what the checkpoint needs
    assert path.read_bytes() == before and _no_temp_files(path.parent)


def test_disk_full_as_oserror_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(TasError, match="disk full while writing .*metrics.json"):
        tas_io.write_json(path, {"top1": 1.0})
    assert not path.exists() and _no_temp_files(tmp_path)


def test_other_write_errors_keep_their_traceback(tmp_path):
    with pytest.raises(ValueError):
        with tas_io.atomic_path(tmp_path / "x.txt"):
            raise ValueError("a bug, not a full disk")
    assert _no_temp_files(tmp_path)


# ------------------------------------------------------------------------------ unreadable outputs


def test_a_truncated_torch_file_and_broken_json_are_detected(tmp_path):
    good = tmp_path / "model.pt"
    torch.save({"w": torch.ones(64)}, good)
    assert preflight.unreadable_file(good) is None
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "truncated" in preflight.unreadable_file(cut)
    (tmp_path / "empty.pt").write_bytes(b"")
    assert preflight.unreadable_file(tmp_path / "empty.pt") == "empty file"
    (tmp_path / "m.json").write_text('{"top1": 3')
    assert "JSON" in preflight.unreadable_file(tmp_path / "m.json")
    (tmp_path / "ok.json").write_text('{"top1": 3}')
    assert preflight.unreadable_file(tmp_path / "ok.json") is None


# ------------------------------------------------------------------------------ one writer per job folder

HOLD = """
import sys, time
from pathlib import Path
from tas.engine import run_lock
with run_lock.hold(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


def _holder(job_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(job_dir)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_is_refused_while_the_first_lives_and_takes_over_when_it_died(tmp_path):
    job_dir = tmp_path / "runs" / "p" / "kd" / "seed0"
    first = _holder(job_dir)
    try:
        with pytest.raises(run_lock.RunFolderBusy) as err:
            with run_lock.hold(job_dir):
                pass
        message = str(err.value)
        assert f"pid {first.pid}" in message and "--nolock" in message and "\n" not in message
    finally:
        first.send_signal(signal.SIGKILL)  # dies without any clean-up: a stale lock file stays behind
        first.wait()
    assert f"pid {first.pid}" in run_lock.lock_path(job_dir).read_text()
    with run_lock.hold(job_dir) as path:
        assert f"pid {os.getpid()}" in path.read_text()
    assert run_lock.lock_path(job_dir).read_text() == ""


def test_a_training_job_refuses_a_folder_another_process_holds(tmp_path):
    """The real CLI: `train-teacher` into a folder that a live process holds stops with one line, exit 2."""
    results = tmp_path / "results"
    teacher_dir = results / "mini" / "teachers" / "tiny_cnn"
    sets = ["--set", f"paths.results={results}", "--set", f"paths.data={tmp_path / 'data'}",
            "--set", "datasets.synthetic.train_size=64", "--set", "datasets.synthetic.test_size=32"]

    def tas(*args):
        return subprocess.run([sys.executable, "-m", "tas", *args, *sets], cwd=ROOT, capture_output=True, text=True,
                              timeout=300)

    assert tas("prepare-data", "--dataset", "synthetic").returncode == 0
    first = _holder(teacher_dir)
    try:
        proc = tas("train-teacher", "--experiment", "mini", "--teacher", "tiny_cnn")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "is being written by" in last and f"pid {first.pid}" in last
    assert not (teacher_dir / "model.pt").exists()


# ------------------------------------------------------------------------------ progress


def test_progress_is_shown_from_the_first_step_then_at_most_once_per_interval():
    assert progress_due(0, 100.0, None)
    assert not progress_due(1, 100.0 + PROGRESS_EVERY_S / 2, 100.0)
    assert progress_due(7, 100.0 + PROGRESS_EVERY_S, 100.0)


# ------------------------------------------------------------------------------ real Snakemake

snakemake_only = pytest.mark.skipif(SNAKEMAKE is None, reason="snakemake is needed")


@pytest.fixture()
def project(tmp_path):
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "tas", tmp_path / "tas", ignore=ignore)
    shutil.copytree(ROOT / "workflow", tmp_path / "workflow", ignore=ignore)
    for name in ("Snakefile", "params.yaml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    return tmp_path


def snakemake(root: Path, *args: str) -> tuple[int, str]:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run([SNAKEMAKE, *args], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def last_line(console: str) -> str:
    return console.strip().splitlines()[-1]


@snakemake_only
@pytest.mark.parametrize("config, expected", [
    (["experiment=nope"], "unknown experiment 'nope'"),
    (["lr=1"], "not lr: jobs read params.yaml"),  # "--config may only set `experiment` [and ...], not lr: ..."
])
def test_a_parse_time_error_is_the_last_line(project, config, expected):
    code, console = snakemake(project, "-n", "--cores", "1", "--config", *config)
    assert code == 2 and expected in last_line(console), console[-2000:]
    assert "File \"" not in console  # no traceback frame


@snakemake_only
def test_an_unknown_params_key_is_the_last_line(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["runtime"]["thredas"] = 2
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    code, console = snakemake(project, "-n", "--cores", "1")
    assert code == 2 and "thredas" in last_line(console), console[-2000:]


@snakemake_only
@pytest.mark.slow
def test_a_truncated_teacher_is_rebuilt_first_and_nothing_downstream_is_touched_when_that_fails(project):
    """Reproduces the lost run: a truncated teacher model.pt is newer than the complete runs it taught, so
    Snakemake would plan (and first delete) them all before the first failed on it. Now the preflight finds it
    damaged (torch's archive does not read back) and its job rebuilds it in a pass of its own, before anything
    else is planned; here that job fails (its checkpoint is refused), so the console ends with the job's line
    and the runs it taught are untouched."""
    torch.save({"fn": os.path.join}, project / "foreign.pt")  # a teacher checkpoint the loader refuses

    def edit(params):
        params["datasets"]["synthetic"].update(train_size=64, test_size=32)
        params["experiments"]["mini"]["teachers"]["tiny_cnn"] = {"recipe": "mini_teacher", "checkpoint": "foreign.pt",
                                                                 "epochs": 0}

    _edit_params(project, edit)
    teacher = project / "results" / "mini" / "teachers" / "tiny_cnn"
    run = project / "results" / "mini" / "runs" / "tiny_cnn-tiny_vit" / "ofa" / "seed0"
    for folder in (teacher, run):
        folder.mkdir(parents=True)
        torch.save({"w": torch.ones(256)}, folder / "model.pt")
        (folder / "metrics.json").write_text(json.dumps({"top1": 50.0}))
        (folder / "history.csv").write_text("epoch,test_top1\n1,50.0\n")
        (folder / "log.txt").write_text("done\n")
        (folder / "provenance.json").write_text("{}")
    whole = (teacher / "model.pt").read_bytes()
    time.sleep(0.05)
    (teacher / "model.pt").write_bytes(whole[: len(whole) // 2])  # the newest file, and broken
    kept = {p.name: p.read_bytes() for p in run.iterdir()}
    code, console = snakemake(project, "--cores", "2")
    assert code == 2, console[-3000:]
    assert "tas: results/mini/teachers/tiny_cnn/model.pt (load-teacher@mini/tiny_cnn) is" in console
    assert "first, in a Snakemake pass of its own" in console
    assert last_line(console).startswith("Error: checkpoint 'foreign.pt'"), console[-3000:]
    assert {p.name: p.read_bytes() for p in run.iterdir()} == kept


def test_the_preflight_verifies_arrays_against_meta_json_and_torch_archives_by_crc(tmp_path):
    """A truncated array passed the preflight (it only opened .pt/.json files); a torch file whose bytes were
    rewritten in place (same size) opened as a zip but does not load."""
    np = pytest.importorskip("numpy")
    from tas.data.prepare import array_checksum

    folder = tmp_path / "data" / "synthetic"
    folder.mkdir(parents=True)
    arrays = {"train_images": np.arange(4 * 8 * 8 * 3, dtype=np.uint8).reshape(4, 8, 8, 3),
              "train_labels": np.arange(4, dtype=np.int64), "test_images": np.zeros((2, 8, 8, 3), np.uint8),
              "test_labels": np.arange(2, dtype=np.int64)}
    for name, arr in arrays.items():
        np.save(folder / f"{name}.npy", arr)
    files = {f"{n}.npy": {"bytes": (folder / f"{n}.npy").stat().st_size} for n in arrays}
    (folder / "meta.json").write_text(json.dumps({"files": files, "checksum": array_checksum(arrays)}))
    verifier = preflight.Verifier(cache=tmp_path / "verified.json")
    assert verifier.problem(folder / "train_images.npy") is None
    verifier.save()
    data = (folder / "train_images.npy").read_bytes()
    (folder / "train_images.npy").write_bytes(data[:-10])  # truncated
    assert "damaged" in preflight.Verifier(cache=tmp_path / "verified.json").problem(folder / "train_images.npy")
    (folder / "train_images.npy").write_bytes(data[:-1] + b"\x07")  # same size, other bytes
    assert "checksum" in preflight.Verifier(cache=tmp_path / "verified.json").problem(folder / "train_images.npy")
    model = tmp_path / "model.pt"
    torch.save({"w": torch.ones(4096)}, model)
    assert preflight.Verifier(cache=None).problem(model) is None
    raw = bytearray(model.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # a flipped byte inside the tensor data
    model.write_bytes(bytes(raw))
    assert "CRC" in preflight.Verifier(cache=None).problem(model)


@snakemake_only
def test_missing_cifar100_data_stops_before_any_job_runs(project):
    code, console = snakemake(project, "--cores", "2", "--config", "experiment=cifar100")
    assert code == 2, console[-2000:]
    assert "CIFAR-100" in last_line(console) and "--download" in last_line(console)
    assert not (project / "results").exists()  # no assistant, no teacher, nothing built first


# ------------------------------------------------------------------------------ DVC plots, git-ignored outputs

DVC = shutil.which("dvc", path=str(BIN))


def _git_dvc_repo(root: Path) -> dict:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True, env=env)
    if DVC:
        subprocess.run([DVC, "init", "-q"], cwd=root, check=True, env=env)
    return env


def test_dvc_metrics_list_results_only():
    """provenance.json is a plain out, so `dvc metrics show` lists results only (plots: tests/test_dvc_plots.py)."""
    from tas.config import load_config
    from tas.dvcyaml import render_dvc_yaml

    text = render_dvc_yaml(load_config(ROOT / "params.yaml", experiments=["mini"]), experiments=["mini"])
    stages = yaml.safe_load(text)["stages"].values()
    assert any(s.get("metrics") for s in stages)
    assert not any("provenance" in str(s.get("metrics")) for s in stages)


def test_git_ignores_what_dvc_caches_and_keeps_the_small_results(tmp_path):
    _git_dvc_repo(tmp_path)
    shutil.copy2(ROOT / ".gitignore", tmp_path / ".gitignore")
    ignored = ["data/synthetic/train_images.npy", "dvc_plots/index.html", "results/mini/teachers/tiny_cnn/model.pt",
               "results/mini/runs/tiny_cnn-tiny_vit/kd/seed0/model.pt",
               "results/mini/runs/tiny_vit/scratch/seed0/log.txt",
               "results/mini/tables/.snakemake_timestamp", "results/mini/runs/p/kd/seed0/ckpt/last.pt"]
    kept = ["results/mini/runs/tiny_cnn-tiny_vit/kd/seed0/metrics.json",
            "results/mini/teachers/tiny_cnn/provenance.json",
            "results/mini/runs/tiny_cnn-tiny_vit/kd/seed0/history.csv", "results/mini/eval/runs/p/kd/seed0.json",
            "results/mini/tables/main.md", "results/mini/plots/curves_p.png"]

    def is_ignored(rel: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", "--no-index", rel], cwd=tmp_path).returncode == 0

    assert [p for p in ignored if not is_ignored(p)] == []
    assert [p for p in kept if is_ignored(p)] == []


# ------------------------------------------------------------------------------ progress bar on a terminal

PTY_RUN = """
import fcntl, os, pty, struct, sys, termios
pid, fd = pty.fork()
if pid == 0:
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a 0-column pty draws no bar
    os.execv(sys.argv[1], sys.argv[1:])
out = b""
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
"""


def test_the_epoch_bar_shows_loss_accuracy_and_speed_from_the_first_step(tmp_path):
    """A 4-step epoch (SYNC_EVERY is 50): before, the bar never showed loss/acc/img/s in `mini`."""
    sets = ["--set", f"paths.data={tmp_path / 'data'}", "--set", f"paths.results={tmp_path / 'results'}",
            "--set", "datasets.synthetic.train_size=256", "--set", "datasets.synthetic.test_size=64",
            "--set", "recipes.mini_teacher.epochs=1", "--set", "runtime.progress=true"]
    prep = subprocess.run([sys.executable, "-m", "tas", "prepare-data", "--dataset", "synthetic", *sets], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert prep.returncode == 0, prep.stderr
    proc = subprocess.run([sys.executable, "-c", PTY_RUN, sys.executable, "-m", "tas", "train-teacher", "--experiment",
                           "mini", "--teacher", "tiny_cnn", *sets], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    frames = [f for f in proc.stdout.replace("\r", "\n").splitlines() if f.startswith("epoch 1/1:")]
    assert frames, proc.stdout[-2000:]
    first = next(f for f in frames if "loss=" in f)
    assert "acc=" in first and "ips=" in first and ("0/4" in first or "1/4" in first), first


# ---------------------------------------------------------------- job errors and params.yaml under Snakemake


def _edit_params(root: Path, edit) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    edit(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@snakemake_only
@pytest.mark.slow
def test_a_job_error_is_the_consoles_last_line(project):
    """A job that fails with a tas error (here a teacher checkpoint the weights-only loader refuses) ended the
    console with Snakemake's "Error in rule ... check log file" block, exit 1; now with the job's line, exit 2."""
    torch.save({"fn": os.path.join}, project / "foreign.pt")  # a zip archive torch.load(weights_only) refuses

    def edit(params):
        params["datasets"]["synthetic"].update(train_size=64, test_size=32)
        params["experiments"]["mini"]["teachers"]["tiny_cnn"] = {"recipe": "mini_teacher", "checkpoint": "foreign.pt",
                                                                 "epochs": 0}

    _edit_params(project, edit)
    code, console = snakemake(project, "--cores", "2", "results/mini/teachers/tiny_cnn/model.pt")
    assert code == 2, console[-3000:]
    last = last_line(console)
    assert last.startswith("Error: checkpoint 'foreign.pt'") and "unpickler refused it" in last, console[-3000:]


@snakemake_only
@pytest.mark.parametrize("breakage, expected", [
    ("\nruntime:\n  threads: 3\n", "params.yaml: runtime: duplicate key at line"),
    ("\nmethods: [\n", "params.yaml: not valid YAML at line"),
])
def test_a_params_yaml_error_under_snakemake_is_tas_line(project, breakage, expected):
    """Snakemake's own `configfile:` parse said "Config file is not valid JSON or YAML" (no line); a key given
    twice was silently the last one."""
    with open(project / "params.yaml", "a") as fh:
        fh.write(breakage)
    code, console = snakemake(project, "-n", "--cores", "1")
    assert code == 2 and expected in last_line(console), console[-2000:]
    assert "Config file is not valid" not in console and "File \"" not in console
