"""`python -m tas` exits without the interpreter's teardown (tas.cli.console): nothing a command printed
may be lost by that, and its exit status must be the command's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tas(*args: str) -> subprocess.CompletedProcess:
    # Buffered streams, as a user's shell gives them (this CI sets PYTHONUNBUFFERED=1, which would hide a lost tail).
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    return subprocess.run([sys.executable, "-m", "tas", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_a_failing_command_keeps_its_status_and_its_error_line():
    done = _tas("check", "--set", "no_such_section.x=1")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].startswith("error: ")


def test_everything_printed_to_a_pipe_arrives():
    # A pipe is block-buffered: a tail left in the buffer at exit would be cut off and the JSON not parse.
    done = _tas("describe", "--experiment", "mini", "--pair", "tiny_cnn-tiny_mlp", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)
