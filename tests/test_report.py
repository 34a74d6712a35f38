"""Report stage: tables and plots from hand-made eval JSONs / history.csv (numbers checked by hand)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from tas import paths
from tas.errors import TasError
from tas.report.paper import load_paper_table, load_paper_tables
from tas.report.plots import read_history, write_plots
from tas.report.spec import PairRef, TableSpec
from tas.report.tables import (AVG_PAIR, ablation_table, collect, format_main, main_table, write_tables)

ROOT = Path(__file__).resolve().parent.parent
EXP = "exp"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Pair 1 matches the paper row Swin-T -> ResNet18; pair 2 matches no paper row.
P1 = PairRef("swin_t-r18", "swin_t", "r18", "Swin-T", "ResNet18")
P2 = PairRef("convnext_t-tiny", "convnext_t", "tiny", "ConvNeXt-T", "TinyNet")
NAMES = {"scratch": "Scratch", "kd": "KD", "tas": "TAS"}
# top-1 per (pair, method) for seeds 0, 1; (P2, kd) is the missing cell.
TOP1 = {
    (P1, "scratch"): (70.0, 72.0),
    (P1, "kd"): (75.0, 76.0),
    (P1, "tas"): (80.0, 81.0),
    (P2, "scratch"): (60.0, 61.0),
    (P2, "tas"): (66.0, 68.0),
}


def _write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _run(root, ref, method, seed, top1, **extra):
    _write_json(paths.run_eval(root, EXP, ref.pair, method, seed), {
        "experiment": EXP, "pair": ref.pair, "teacher": ref.teacher, "student": ref.student, "method": method,
        "seed": seed, "top1": top1, "top5": top1 + 10, "params": 11_000_000, "flops": 1.8e9,
        "images_per_s": 1000.0, **extra})
    hist = pd.DataFrame({
        "epoch": [1, 2, 3], "lr": [0.1, 0.05, 0.01], "loss": [3.0, 2.0, 1.5], "loss_ce": [2.0, 1.5, 1.0],
        "loss_kd": [1.0, 0.5, 0.5], "train_top1": [10.0, 30.0, 50.0], "test_top1": [top1 - 20, top1 - 5, top1],
        "test_top5": [30.0, 50.0, 70.0], "images_per_s": [900.0] * 3, "time_s": [1.0] * 3})
    path = paths.run_dir(root, EXP, ref.pair, method, seed) / "history.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    hist.to_csv(path, index=False)


@pytest.fixture
def main_root(tmp_path):
    for (ref, method), values in TOP1.items():
        for seed, top1 in zip((0, 1), values):
            extra = {"extra_params": 0 if method != "tas" else 1_500_000}
            if method == "tas":
                extra["assistant_top1"] = top1 + 2  # assistant mean = student mean + 2
            _run(tmp_path, ref, method, seed, top1, **extra)
    _write_json(paths.teacher_eval(tmp_path, EXP, "swin_t"),
                {"experiment": EXP, "model": "swin_t", "top1": 89.0, "top5": 98.0, "params": 2.8e7, "flops": 4.5e9,
                 "images_per_s": 500.0})
    return tmp_path


def _spec(kind="main", methods=("scratch", "kd", "tas"), pairs=(P1, P2), paper="tas_cifar100"):
    return TableSpec(EXP, kind, pairs, methods, NAMES, (0, 1), paper)


def test_paper_values_verbatim():
    tables = load_paper_tables()
    cifar = tables["tas_cifar100"]
    assert cifar.value("Swin-T", "ResNet18", "tas") == 81.61
    assert cifar.value("ConvNeXt-T", "ResMLP-S12", "fitnet") == 45.47
    assert cifar.value("ConvNeXt-T", "Swin-P", "fitnet") == 24.06
    assert cifar.value("ConvNeXt-T", "Swin-P", "crd") is None  # partial row: not transcribed, not invented
    assert dict(cifar.avg_gain) == {"kd": 3.12, "fitnet": -5.21, "crd": -0.02, "ofa": 6.19, "tas": 8.38}
    assert len(cifar.cells) == 6
    assert tables["tas_imagenet"].value("ResNet50", "Swin-N", "scratch") == 75.53
    assert tables["tas_imagenet"].value("Swin-T", "MobileNetV2", "scratch") is None
    abl = tables["tas_ablation"]
    assert abl.value("Swin-T", "ResNet18", "tas_no_ta") == 25.57
    assert abl.value("Swin-T", "ResNet18", "tas") == 81.61
    assert "2410.12342" in cifar.source
    with pytest.raises(TasError, match="unknown paper table"):
        load_paper_table("nope")


def test_spec_validation():
    with pytest.raises(TasError, match="kind"):
        _spec(kind="other")
    with pytest.raises(TasError, match="twice"):
        _spec(methods=("kd", "kd"))
    assert _spec().method_name("ofa") == "ofa"


def test_collect_long_form_and_missing_cell(main_root):
    df = collect(main_root, _spec())
    assert len(df) == 10  # 6 cells x 2 seeds, minus the missing (P2, kd) cell
    assert df[(df.pair == P2.pair) & (df.method == "kd")].empty
    assert set(df.columns) >= {"pair", "method", "seed", "top1", "extra_params", "assistant_top1"}
    assert math.isnan(df[(df.method == "kd")]["assistant_top1"].iloc[0])


def test_main_table_numbers(main_root):
    spec = _spec()
    table = main_table(collect(main_root, spec), spec, load_paper_table("tas_cifar100")).set_index("pair")
    r1, r2, avg = table.loc[P1.pair], table.loc[P2.pair], table.loc[AVG_PAIR]
    assert r1["label"] == "Swin-T -> ResNet18"
    assert r1["scratch_mean"] == pytest.approx(71.0)
    assert r1["scratch_std"] == pytest.approx(math.sqrt(2))  # sample std of (70, 72)
    assert r1["kd_std"] == pytest.approx(math.sqrt(0.5))
    assert r1["tas_n"] == 2
    # paper values and diffs on the matching row only
    assert r1["scratch_paper"] == 74.01 and r1["kd_paper"] == 78.74 and r1["tas_paper"] == 81.61
    assert r1["tas_diff"] == pytest.approx(80.5 - 81.61)
    assert r1["kd_diff"] == pytest.approx(75.5 - 78.74)
    assert math.isnan(r2["tas_paper"]) and math.isnan(r2["tas_diff"])
    # missing cell stays missing
    assert math.isnan(r2["kd_mean"]) and r2["kd_n"] == 0
    # avg gain by hand: kd only on P1 (75.5 - 71); tas over both pairs ((80.5-71) + (67-60.5)) / 2 = 8.0
    assert avg["kd_mean"] == pytest.approx(4.5) and avg["kd_n"] == 1
    assert avg["tas_mean"] == pytest.approx(8.0) and avg["tas_n"] == 2
    assert avg["tas_paper"] == 8.38 and avg["tas_diff"] == pytest.approx(8.0 - 8.38)
    assert avg["kd_paper"] == 3.12
    assert math.isnan(avg["scratch_mean"])
    # extra params only where measured (all-empty columns are dropped)
    assert r1["tas_extra_params"] == 1_500_000
    display = format_main(table.reset_index(), spec).set_index("Pair")
    assert display.loc["Swin-T -> ResNet18", "TAS"] == "80.50 ± 0.71"
    assert display.loc["Swin-T -> ResNet18", "TAS Δ"] == "-1.11"
    assert display.loc["ConvNeXt-T -> TinyNet", "KD"] == "—"
    assert display.loc["Avg. gain over scratch", "TAS"] == "+8.00"
    assert display.loc["Avg. gain over scratch", "TAS paper"] == "+8.38"


def test_main_table_without_paper(main_root):
    spec = _spec(paper=None)
    table = main_table(collect(main_root, spec), spec, None)
    assert not [c for c in table.columns if c.endswith(("_paper", "_diff"))]


def test_write_tables_files(main_root):
    spec = _spec()
    files = write_tables(main_root, spec)
    tables = paths.tables_dir(main_root, EXP)
    names = {f.name for f in files}
    assert names == {"main.csv", "main.md", "main.tex", "tas_assistant.csv", "tas_assistant.md",
                     "tas_assistant.tex", "summary.json"}
    for f in files:
        assert f.parent == tables and f.stat().st_size > 0
    assert not list(tables.glob(".*.tmp"))  # atomic writes leave no temp files

    csv = pd.read_csv(tables / "main.csv").set_index("pair")
    assert math.isnan(csv.loc[P2.pair, "kd_mean"]) and csv.loc[P2.pair, "kd_n"] == 0
    assert csv.loc[P1.pair, "tas_mean"] == pytest.approx(80.5)
    assert csv.loc[P1.pair, "tas_paper"] == pytest.approx(81.61)
    # the missing CSV field is empty, not 0 / nan
    line = next(l for l in (tables / "main.csv").read_text().splitlines() if l.startswith(P2.pair))
    header = (tables / "main.csv").read_text().splitlines()[0].split(",")
    assert line.split(",")[header.index("kd_mean")] == ""

    md = (tables / "main.md").read_text()
    p2_line = next(l for l in md.splitlines() if "ConvNeXt-T -> TinyNet" in l)
    assert "—" in p2_line and "nan" not in md.lower()
    assert "81.61" in md and "Avg. gain over scratch" in md

    tex = (tables / "main.tex").read_text()
    assert r"\begin{tabular}" in tex and "—" in tex and "nan" not in tex.lower()
    assert r"$\pm$" in tex and r"$\rightarrow$" in tex

    summary = json.loads((tables / "summary.json").read_text())
    cell = next(c for c in summary["cells"] if c["pair"] == P2.pair and c["method"] == "kd")
    assert cell["mean"] is None and cell["n"] == 0 and cell["seeds"] == []
    gain = next(g for g in summary["avg_gain_over_scratch"] if g["method"] == "tas")
    assert gain["gain"] == pytest.approx(8.0) and gain["paper"] == 8.38 and gain["n_pairs"] == 2

    assist = pd.read_csv(tables / "tas_assistant.csv").set_index("pair")
    assert assist.loc[P1.pair, "teacher_top1"] == 89.0
    assert assist.loc[P1.pair, "assistant_mean"] == pytest.approx(82.5)
    assert assist.loc[P1.pair, "student_mean"] == pytest.approx(80.5)
    assert math.isnan(assist.loc[P2.pair, "teacher_top1"])  # no teacher eval for convnext_t: missing


def test_ablation_table(tmp_path):
    methods = ("kd", "tas_no_nce", "tas", "tas_new")
    values = {"kd": (78.0, 79.0), "tas_no_nce": (80.0, 80.0), "tas": (81.0, 82.0)}  # tas_new: not run
    for m, vals in values.items():
        for seed, v in zip((0, 1), vals):
            _run(tmp_path, P1, m, seed, v)
    spec = TableSpec(EXP, "ablation", (P1,), methods, {"tas": "TAS (full)"}, (0, 1), "tas_ablation")
    table = ablation_table(collect(tmp_path, spec), spec, load_paper_table("tas_ablation")).set_index("method")
    assert list(table.index) == list(methods)
    assert table.loc["tas_no_nce", "paper"] == 80.95
    assert table.loc["tas_no_nce", "std"] == 0.0
    assert table.loc["kd", "diff"] == pytest.approx(78.5 - 78.74)
    assert table.loc["tas", "method_name"] == "TAS (full)"
    assert math.isnan(table.loc["tas_new", "mean"]) and math.isnan(table.loc["tas_new", "paper"])
    files = write_tables(tmp_path, spec)
    assert {f.name for f in files} == {"ablation.csv", "ablation.md", "ablation.tex", "summary.json"}
    md = (paths.tables_dir(tmp_path, EXP) / "ablation.md").read_text()
    assert "80.95" in md and "—" in md
    plots = write_plots(tmp_path, spec)
    assert {p.name for p in plots} == {"curves_swin_t-r18.png", "ablation_swin_t-r18.png"}
    for p in plots:
        assert p.read_bytes()[:8] == PNG_MAGIC


def test_pairs_with_one_student_share_its_scratch_run(tmp_path):
    """Scratch runs once per student: both swin_t-r18 and convnext_t-r18 read results/exp/*/runs/r18/scratch/."""
    p3 = PairRef("convnext_t-r18", "convnext_t", "r18", "ConvNeXt-T", "ResNet18")
    spec = TableSpec(EXP, "main", (P1, p3), ("scratch", "kd"), NAMES, (0, 1), None, teacher_free={"scratch"})
    for seed, top1 in zip((0, 1), (70.0, 72.0)):
        _write_json(paths.student_run_eval(tmp_path, EXP, "r18", "scratch", seed),
                    {"experiment": EXP, "student": "r18", "method": "scratch", "seed": seed, "top1": top1})
        history = paths.student_run_dir(tmp_path, EXP, "r18", "scratch", seed) / "history.csv"
        history.parent.mkdir(parents=True)
        pd.DataFrame({"epoch": [1, 2], "test_top1": [top1 - 5, top1], "loss": [2.0, 1.0]}).to_csv(history, index=False)
    for ref, values in ((P1, (75.0, 76.0)), (p3, (73.0, 73.0))):
        for seed, top1 in zip((0, 1), values):
            _run(tmp_path, ref, "kd", seed, top1)
    # a stale pair-level scratch eval (the old layout) is not what the table reads
    _write_json(paths.run_eval(tmp_path, EXP, P1.pair, "scratch", 0),
                {"experiment": EXP, "pair": P1.pair, "method": "scratch", "seed": 0, "top1": 10.0})
    table = main_table(collect(tmp_path, spec), spec, None).set_index("pair")
    for ref in (P1, p3):
        assert table.loc[ref.pair, "scratch_mean"] == pytest.approx(71.0) and table.loc[ref.pair, "scratch_n"] == 2
        assert len(read_history(tmp_path, spec, ref, "scratch")) == 4  # 2 epochs x 2 seeds
    # gain per pair, then averaged: ((75.5 - 71) + (73 - 71)) / 2
    assert table.loc[AVG_PAIR, "kd_mean"] == pytest.approx(3.25) and table.loc[AVG_PAIR, "kd_n"] == 2
    # a student-level eval that names another student is refused, not tabulated under r18
    _write_json(paths.student_run_eval(tmp_path, EXP, "r18", "scratch", 1),
                {"experiment": EXP, "student": "mbv2", "method": "scratch", "seed": 1, "top1": 70.0})
    with pytest.raises(TasError, match="student='mbv2'"):
        collect(tmp_path, spec)


def test_table_spec_of_the_config_reads_scratch_per_student():
    from tas.config import load_config
    from tas.jobs import table_spec

    spec = table_spec(load_config(ROOT / "params.yaml", experiments=["cifar100"]), "cifar100")
    assert spec.teacher_free == {"scratch"}
    r18 = [ref for ref in spec.pairs if ref.student == "r18"]
    assert len(r18) == 3
    assert {spec.run(ref, "scratch", 0).eval_path("results") for ref in r18} == {paths.student_run_eval("results", "cifar100", "r18", "scratch", 0)}
    assert len({spec.run(ref, "kd", 0).eval_path("results") for ref in r18}) == 3


def test_write_plots(main_root):
    files = write_plots(main_root, _spec())
    assert {f.name for f in files} == {"curves_swin_t-r18.png", "curves_convnext_t-tiny.png",
                                      "gain_over_scratch.png", "tas_assistant.png"}
    for f in files:
        assert f.parent == paths.plots_dir(main_root, EXP)
        assert f.read_bytes()[:8] == PNG_MAGIC and f.stat().st_size > 1000


def test_plots_skip_without_data(tmp_path):
    # only a scratch eval, no history: no curves, no gain (nothing to compare), no assistant
    _write_json(paths.run_eval(tmp_path, EXP, P1.pair, "scratch", 0),
                {"experiment": EXP, "pair": P1.pair, "method": "scratch", "seed": 0, "top1": 70.0})
    assert write_plots(tmp_path, _spec()) == []
    assert not paths.plots_dir(tmp_path, EXP).exists()


def test_bad_inputs(tmp_path):
    with pytest.raises(TasError, match="no run evals"):
        write_tables(tmp_path, _spec())
    path = paths.run_eval(tmp_path, EXP, P1.pair, "kd", 0)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(TasError, match="unreadable"):
        collect(tmp_path, _spec())
    _write_json(path, {"experiment": EXP, "pair": P1.pair, "method": "tas", "seed": 0, "top1": 70.0})
    with pytest.raises(TasError, match="method"):
        collect(tmp_path, _spec())
    _write_json(path, {"experiment": EXP, "pair": P1.pair, "method": "kd", "seed": 0, "top1": None})
    with pytest.raises(TasError, match="top1"):
        collect(tmp_path, _spec())
