"""Issue 23, reproduced with real processes: identical content gives identical bytes, a killed write leaves
nothing behind for good, error messages are whole.

(The Snakemake/DVC agreement cases are in tests/test_agreement.py.)
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from tas import io as tas_io
from tas.engine import checkpoint

ROOT = Path(__file__).resolve().parent.parent


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.detach().clone() for k, v in torch.nn.Linear(32, 10).state_dict().items()}


# ------------------------------------------------------------------------------ identical bytes


def test_torch_save_to_a_path_puts_the_file_name_into_the_bytes(tmp_path):
    """The measured cause: torch.save names its archive records after the file it writes."""
    state = _weights()
    torch.save(state, tmp_path / ".model.pt.aaaa.tmp")
    torch.save(state, tmp_path / ".model.pt.bbbb.tmp")
    assert (tmp_path / ".model.pt.aaaa.tmp").read_bytes() != (tmp_path / ".model.pt.bbbb.tmp").read_bytes()
    assert any(name.startswith(".model.pt.aaaa/")
               for name in zipfile.ZipFile(tmp_path / ".model.pt.aaaa.tmp").namelist())


def test_the_same_weights_always_give_the_same_file(tmp_path):
    state = _weights()
    first, second = tmp_path / "a" / "model.pt", tmp_path / "b" / "last.pt"
    checkpoint.save(first, state)
    before = first.read_bytes()
    checkpoint.save(first, _weights())  # rewritten through another temp file
    checkpoint.save(second, state)
    assert first.read_bytes() == before == second.read_bytes()
    names = zipfile.ZipFile(first).namelist()
    assert names and all(name.startswith("archive/") for name in names)
    assert not list(first.parent.glob(".*.tmp"))
    loaded = torch.load(first, weights_only=True)
    assert all(torch.equal(loaded[k], state[k]) for k in state)


# ------------------------------------------------------------------------------ a kill during the write

DIE_WHILE_WRITING = """
import os, signal, sys
from pathlib import Path
import torch
from tas.engine import checkpoint

def write_then_die(obj, fh, *args, **kwargs):
    fh.write(b"PK\\x03\\x04" + bytes(1 << 20))  # a megabyte of a half-written archive
    fh.flush()
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = write_then_die
checkpoint.save(Path(sys.argv[1]), {"w": torch.zeros(4)})
"""


def _killed_writer(path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", DIE_WHILE_WRITING, str(path)], cwd=ROOT,
                          capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


def test_a_temp_file_left_by_a_killed_writer_is_removed_by_the_next_write_and_a_live_ones_is_kept(tmp_path):
    path = tmp_path / "model.pt"
    _killed_writer(path)
    left = list(tmp_path.glob(".model.pt.*.tmp"))
    assert len(left) == 1 and left[0].stat().st_size > 1 << 20 and not path.exists()  # the measured leftover
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live_temp = tmp_path / f".model.pt.{live.pid}@{tas_io._HOST}.0123abcd.tmp"
        live_temp.write_bytes(b"being written")
        other_file = tmp_path / f".metrics.json.999999999@{tas_io._HOST}.0123abcd.tmp"
        other_file.write_bytes(b"{")
        checkpoint.save(path, {"w": torch.ones(4)})
        assert not left[0].exists()
        assert live_temp.exists()  # a live writer's file is never touched
        assert other_file.exists()  # another file's temp is that file's next write's business
    finally:
        live.kill()
        live.wait()
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(4))


def test_an_earlier_tas_temp_file_is_removed_once_it_is_old():
    old = Path("x") / ".model.pt.abcd_123.tmp"
    assert tas_io.temp_target(old) == "model.pt"
    assert tas_io.temp_target(Path(".model.pt.4242@host.0123abcd.tmp")) == "model.pt"
    assert tas_io.temp_target(Path("model.pt")) is None


# ------------------------------------------------------------------------------ a real job, recovered

pytest_slow = pytest.mark.slow


def _tas(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    sets = ["--set", f"paths.results={tmp_path / 'results'}", "--set", f"paths.data={tmp_path / 'data'}",
            "--set", "datasets.synthetic.train_size=64", "--set", "datasets.synthetic.test_size=32",
            "--set", "recipes.mini_teacher.epochs=1"]
    return subprocess.run([sys.executable, "-m", "tas", *args, *sets], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


@pytest_slow
def test_a_deleted_model_is_rebuilt_byte_identical_and_the_killed_writers_temp_file_is_removed(tmp_path):
    """Recovery after a kill during the model.pt write: the next run of the job resumes from its complete
    checkpoint, removes the leftover and writes the same model.pt and metrics.json, byte for byte."""
    assert _tas(tmp_path, "prepare-data", "--dataset", "synthetic").returncode == 0
    first = _tas(tmp_path, "train-teacher", "--experiment", "mini", "--teacher", "tiny_cnn")
    assert first.returncode == 0, first.stderr[-2000:]
    folder = tmp_path / "results" / "mini" / "teachers" / "tiny_cnn"
    before = {name: _sha(folder / name) for name in ("model.pt", "metrics.json", "history.csv", "provenance.json")}
    (folder / "model.pt").unlink()
    _killed_writer(folder / "model.pt")  # what a kill -9 during the final write leaves
    assert list(folder.glob(".model.pt.*.tmp"))
    again = _tas(tmp_path, "train-teacher", "--experiment", "mini", "--teacher", "tiny_cnn")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed from" in (folder / "log.txt").read_text()
    assert {name: _sha(folder / name) for name in before} == before
    assert not list(folder.glob(".*.tmp")) and not list((folder / "ckpt").glob(".*.tmp"))
    assert json.loads((folder / "metrics.json").read_text())["epochs"] == 1


# ------------------------------------------------------------------------------ whole messages


def test_an_unreadable_checkpoint_is_described_in_whole_words(tmp_path):
    from tas.errors import TasError
    from tas.models.weights import read_state_dict

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint " * 20)
    with pytest.raises(TasError) as err:
        read_state_dict(garbage)
    assert "weights_only" not in str(err.value) and "not a zip archive" in str(err.value)
    # a zip archive the weights-only unpickler refuses: its reason, not torch's paragraph cut mid-word
    foreign = tmp_path / "foreign.pt"
    torch.save({"fn": os.path.join}, foreign)
    with pytest.raises(TasError) as err:
        read_state_dict(foreign)
    message = str(err.value)
    assert "unpickler refused it" in message and "If yo)" not in message and "\n" not in message
    assert checkpoint.clip("alpha beta gamma", 12) == "alpha beta…"
    assert checkpoint.clip("short", 12) == "short"


def test_a_rerun_names_the_params_keys_that_changed_since_its_checkpoint():
    """Snakemake's reason shows a hash ("params have changed"); the job's log names the keys and values."""
    from tas.engine.trainer import changed_params

    old = {"methods.kd": {"type": "kd", "T": 1.0}, "recipes.mini": {"lr": 0.1, "epochs": 3}}
    new = {"methods.kd": {"type": "kd", "T": 2.0}, "recipes.mini": {"lr": 0.1, "epochs": 3, "ema_decay": 0.99}}
    assert changed_params(old, new) == ["methods.kd.T: 1.0 -> 2.0", "recipes.mini.ema_decay: (not set) -> 0.99"]
    assert changed_params(None, new) == []  # a checkpoint of an earlier tas: the hash's word only
