"""The package stands alone (#22): the wheel holds every module and every data file tas reads at run time,
and an installed copy, away from the checkout, validates the repo's params.yaml against its own schema.

Cheap on purpose: the wheel goes into a --target folder with --no-deps, and the venv's packages (torch,
jsonschema, ...) serve it. .ci/run's wheel step does the full thing: a fresh venv, the pinned
requirements, `tas check` and `tas describe`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tas import codedeps

ROOT = Path(__file__).resolve().parent.parent
PIP = [sys.executable, "-m", "pip", "--no-input", "--disable-pip-version-check"]

pytestmark = pytest.mark.slow


def _run(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, cwd=cwd, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1", **env),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(argv)}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of what the wheel is made of, so that setuptools' build/ and egg-info stay out of
    the checkout (other tests walk it); --no-build-isolation: the venv's setuptools, no download."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "tas", src / "tas", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    _run([*PIP, "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist")], cwd=tmp)
    (built,) = (tmp / "dist").glob("tas-*.whl")
    return built


def test_the_wheel_holds_every_module_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tas").rglob("*.py") if "__pycache__" not in p.parts}
    data = {f for files in codedeps.DATA_FILES.values() for f in files}
    assert "tas/params.schema.yaml" in data  # the schema is package data, not a file of the checkout
    assert all(f.startswith("tas/") for f in data), data  # every file read at run time ships in the package
    assert modules - names == set() and data - names == set(), sorted((modules | data) - names)


def test_an_installed_wheel_validates_params_away_from_the_checkout(wheel, tmp_path):
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    _run([*PIP, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], cwd=tmp_path)
    code = ("import json, sys\n"
            "from pathlib import Path\n"
            "import tas, tas.config as config\n"
            "from tas.errors import TasError\n"
            f"site = Path({str(site)!r})\n"
            "assert Path(tas.__file__).resolve().is_relative_to(site), tas.__file__  "
            "# the installed copy, not the checkout\n"
            f"cfg = config.load_config({str(ROOT / 'params.yaml')!r})\n"
            "try:\n"
            "    config.validate_schema({'no_such_section': 1})\n"
            "    sys.exit('the schema let an unknown section through')\n"
            "except TasError:\n"
            "    pass\n"
            "print(json.dumps({'schema': str(config.SCHEMA_PATH), 'experiments': sorted(cfg.experiments)}))\n")
    out = json.loads(_run([sys.executable, "-c", code], cwd=elsewhere, PYTHONPATH=str(site)).stdout)
    assert Path(out["schema"]).resolve().is_relative_to(site.resolve())
    assert "mini" in out["experiments"]
    # The console entry point's planning command, the same way: the installed copy, the repo's params.yaml.
    check = _run([sys.executable, "-m", "tas", "check", "--params", str(ROOT / "params.yaml")], cwd=elsewhere,
                 PYTHONPATH=str(site))
    assert check.stdout.strip(), check.stderr
