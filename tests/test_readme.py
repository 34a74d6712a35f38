"""The README's first two commands are the ones a newcomer runs, and `.ci/run` runs exactly the second."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _first_commands(count: int) -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"^    (python3\.11 -m venv .+)$", text, flags=re.M)[:count]


def test_ci_runs_the_readme_test_command():
    install_and_run, install_and_test = _first_commands(2)
    assert "snakemake" in install_and_run and "pytest" in install_and_test
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install_and_test in ci, ".ci/run must run the README's test command verbatim"
