"""DVC's plots are the tables job's PNGs (#23): `dvc plots show` renders them offline, one colour per method.

The project here is fabricated: the mini study's run records (history.csv + eval JSON) under a temp folder, the
real tables step (`python -m tas tables`) on them, the generated dvc.yaml beside them, and real git + DVC.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from matplotlib.colors import to_hex

from tas import paths
from tas.config import load_config
from tas.dvcyaml import CURVES_PLOT, render_dvc_yaml
from tas.jobs.tables import table_spec
from tas.report.colours import PALETTE, method_colours

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DVC = shutil.which("dvc", path=str(BIN)) or shutil.which("dvc")
EXP = "mini"
SEEDS = (0, 1)  # the mini study reads seed 0; the colour test reads both, so a method has a min..max band
# A run that was never trained: the pair's other methods must keep their colours (matplotlib's cycle would
# hand KD's colour to the next method drawn).
NOT_RUN = ("tiny_vit-tiny_mlp", "kd")


def _cfg():
    return load_config(ROOT / "params.yaml", experiments=[EXP])


def _write_run(results: Path, run, top1: float) -> None:
    run_dir = run.dir(results)
    run_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"epoch": [1, 2, 3], "loss": [3.0, 2.4, 2.0], "loss_ce": [2.5, 2.0, 1.6],
                  "test_top1": [top1 - 10, top1 - 4, top1]}).to_csv(run_dir / paths.HISTORY_FILE, index=False)
    (run_dir / paths.METRICS_FILE).write_text(json.dumps({**run.ids(), "top1": top1}))
    run.eval_path(results).parent.mkdir(parents=True, exist_ok=True)
    run.eval_path(results).write_text(json.dumps({**run.ids(), "top1": top1, "top5": top1 + 10}))


def _env() -> dict:
    return dict(os.environ, DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
                GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t", PYTHONPATH=str(ROOT))


def _tables(project: Path) -> None:
    """The tables step as the pipeline runs it (results/ relative to the working directory)."""
    proc = subprocess.run([sys.executable, "-m", "tas", "tables", "--params", str(ROOT / "params.yaml"),
                           "--experiment", EXP], cwd=project, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A folder with the mini study's run records, its tables step run, and the generated dvc.yaml."""
    project = tmp_path_factory.mktemp("project")
    cfg = _cfg()
    spec = table_spec(cfg, EXP)
    results = project / cfg.results_root
    for i, ref in enumerate(spec.pairs):
        for j, method in enumerate(spec.methods):
            if (ref.pair, method) == NOT_RUN:
                continue
            for seed in SEEDS:
                _write_run(results, spec.run(ref, method, seed), 50.0 + 5 * j + i + seed)
    _tables(project)
    (project / "dvc.yaml").write_text(render_dvc_yaml(cfg, experiments=[EXP]))
    return project


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


# ----------------------------------------------------------------------------------- (a) dvc.yaml


@pytest.mark.parametrize("experiment", ["mini", "cifar100", "ablation"])
def test_dvc_yaml_plots_are_the_tables_stages_pngs(experiment):
    cfg = load_config(ROOT / "params.yaml", experiments=[experiment])
    document = yaml.safe_load(render_dvc_yaml(cfg, experiments=[experiment]))
    plots = document["plots"]
    # one curves PNG per pair, and no Vega (data) plot: one would put the CDN scripts back on the page
    assert plots == [paths.plot_file(cfg.results_root, experiment, f"curves_{p.id}").as_posix()
                     for p in cfg.experiment(experiment).pairs]
    tables_outs = [next(iter(o)) if isinstance(o, dict) else o
                   for o in document["stages"][f"tables--{experiment}"]["outs"]]
    assert all(any(_under(p, out) for out in tables_outs) for p in plots), (plots, tables_outs)
    assert not any(_under(p, out) for name, stage in document["stages"].items() if name != f"tables--{experiment}"
                   for o in stage.get("outs", []) for out in ([next(iter(o))] if isinstance(o, dict) else [o])
                   for p in plots)


def test_the_committed_dvc_yaml_lists_pngs_only():
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    assert plots and all(isinstance(p, str) and p.endswith(".png") for p in plots)


# ----------------------------------------------------------------------------------- (b) the tables step


def test_the_tables_step_writes_every_png_dvc_yaml_lists(project):
    listed = yaml.safe_load((project / "dvc.yaml").read_text())["plots"]
    assert listed and all((project / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in listed)
    # the name dvcyaml spells is the name the report writes (neither module imports the other)
    written = {p.name for p in paths.plots_dir(project / "results", EXP).glob("curves_*.png")}
    assert written == {CURVES_PLOT.format(pair=p.id) + ".png" for p in _cfg().experiment(EXP).pairs}


def test_a_method_has_one_colour_in_every_plot_of_the_study(project):
    from tas.report.data import load
    from tas.report.plots import curves_figure

    spec = dataclasses.replace(table_spec(_cfg(), EXP), seeds=SEEDS)
    data = load(project / "results", spec)
    colours = method_colours(spec.methods)
    assert len(set(colours.values())) == len(colours)  # every method of the study its own colour
    for ref in spec.pairs:
        fig = curves_figure(data, ref)
        expected = {spec.method_name(m): colours[m] for m in spec.methods if (ref.pair, m) != NOT_RUN}
        for ax in fig.axes:
            lines = {line.get_label(): to_hex(line.get_color()) for line in ax.get_lines()}
            bands = [to_hex(band.get_facecolor()[0]) for band in ax.collections]
            assert lines == expected, ref.pair
            assert bands == list(expected.values())  # two seeds: each method's min..max band in its colour
            assert {t.get_text() for t in ax.get_legend().get_texts()} == set(expected)
    assert colours["kd"] != colours["tas"]


def test_the_palette_follows_the_study_order():
    assert method_colours(["scratch", "kd", "tas"]) == {"scratch": PALETTE[0], "kd": PALETTE[1], "tas": PALETTE[2]}
    many = [f"m{i}" for i in range(len(PALETTE) + 1)]
    assert method_colours(many)[many[-1]] == PALETTE[0]  # more methods than colours: reused in order
    assert len(set(PALETTE)) == len(PALETTE) and all(re.fullmatch("#[0-9a-f]{6}", c) for c in PALETTE)


# ----------------------------------------------------------------------------------- (c) real DVC, offline


def _page_is_offline(html: str, root: Path) -> list[str]:
    """The <img> sources of a DVC page, after checking it loads nothing from the network."""
    assert "<script" not in html, re.findall(r"<script[^>]*>", html)
    assert "://" not in html  # no http(s) script, stylesheet or image
    images = re.findall(r'<img src="([^"]+)"', html)
    assert all((root / src).is_file() for src in images), images  # copied beside the page, linked relatively
    return images


@pytest.mark.skipif(DVC is None, reason="dvc is needed")
def test_dvc_plots_show_and_diff_need_no_network(project):
    env = _env()
    subprocess.run(["git", "init", "-q"], cwd=project, check=True, env=env)
    subprocess.run([DVC, "init", "-q"], cwd=project, check=True, env=env)
    listed = yaml.safe_load((project / "dvc.yaml").read_text())["plots"]

    proc = subprocess.run([DVC, "plots", "show", "-o", "page"], cwd=project, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "failed" not in proc.stderr.lower(), proc.stderr[-2000:]
    page = project / "page"
    images = _page_is_offline((page / "index.html").read_text(), page)
    assert len(images) == len(listed)
    assert all(any(src.endswith(p.replace("/", "_")) for src in images) for p in listed)
    assert all((page / src).read_bytes() == (project / p).read_bytes()
               for p in listed for src in images if src.endswith(p.replace("/", "_")))

    # `dvc plots diff`: each revision's image, both local
    subprocess.run(["git", "add", "-A"], cwd=project, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "study"], cwd=project, check=True, env=env)
    _write_run(project / "results", table_spec(_cfg(), EXP).run(table_spec(_cfg(), EXP).pairs[0], "tas", 0), 99.0)
    _tables(project)
    proc = subprocess.run([DVC, "plots", "diff", "HEAD", "-o", "diff"], cwd=project, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "failed" not in proc.stderr.lower(), proc.stderr[-2000:]
    images = _page_is_offline((project / "diff" / "index.html").read_text(), project / "diff")
    assert len(images) == 2 * len(listed)
    assert {src.split("/")[-1].split("_")[0] for src in images} == {"HEAD", "workspace"}
