"""TAS_CPU_LOG: each `python -m tas` command appends where its CPU went (benchmarks/daily_loop.py sums them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_each_command_appends_one_line(tmp_path):
    log = tmp_path / "cpu.jsonl"
    env = dict(os.environ, TAS_CPU_LOG=str(log))
    for cmd in (["check"], ["prepare-data", "--dataset", "synthetic", "--set", f"paths.data={tmp_path / 'data'}"],
                ["check", "--set", "no_such_section.x=1"]):  # a failing command is logged too
        subprocess.run([sys.executable, "-m", "tas", *cmd], env=env, capture_output=True, timeout=300)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["argv"][0] for line in lines] == ["check", "prepare-data", "check"]
    check, prepare, _ = lines
    assert check["job_import_s"] == 0 and prepare["job_import_s"] > 0  # prepare-data imports its job module
    for line in lines:
        assert 0 < line["start_s"] <= line["total_s"] and line["job_import_s"] <= line["total_s"]
