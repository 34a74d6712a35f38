"""Report (the tables subcommand): tables and plots from hand-made eval JSONs / metrics.json / history.csv (numbers
checked by hand)."""

from __future__ import annotations

import json
import re
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tas import paths
from tas.errors import TasError
from tas.report import write_report
from tas.report.data import load
from tas.report.paper import load_paper_table, load_paper_tables, teacher_values
from tas.report.plots import write_plots
from tas.report.spec import PairRef, TableSpec
from tas.report.kinds.ablation import table as ablation_table
from tas.report.kinds.main import table as main_table
from tas.report.tables import AVG_PAIR, write_tables

ROOT = Path(__file__).resolve().parent.parent
EXP = "exp"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SEEDS = (0, 1, 2)
# Pair 1 matches the paper row Swin-T -> ResNet18 (by model ids); pair 2 matches no paper row.
P1 = PairRef("swin_t-r18", "swin_t", "r18", "Swin-T", "ResNet18")
P2 = PairRef("convnext_t-tiny", "convnext_t", "tiny", "ConvNeXt-T", "TinyNet")
NAMES = {"scratch": "Scratch", "kd": "KD", "tas": "TAS"}
# top-1 per (pair, method) over seeds 0, 1, 2. P1: TAS beats KD beyond noise (p = 0.004);
# P2: TAS 62 +- 1 vs scratch 61 +- 1 is a tie (p = 0.29); (P2, kd) has no result (see _broken_kd).
TOP1 = {
    (P1, "scratch"): (70.0, 71.0, 72.0),
    (P1, "kd"): (75.0, 76.0, 77.0),
    (P1, "tas"): (80.0, 81.0, 82.0),
    (P2, "scratch"): (60.0, 61.0, 62.0),
    (P2, "tas"): (61.0, 63.0, 62.0),
}


def _write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _run(root, ref, method, seed, top1, **extra):
    ids = {"experiment": EXP, "pair": ref.pair, "teacher": ref.teacher, "student": ref.student,
           "method": method, "seed": seed}
    _write_json(paths.run_eval(root, EXP, ref.pair, method, seed), {
        **ids, "top1": top1, "top5": top1 + 10, "params": 11_000_000, "flops": 1.8e9, "images_per_s": 1000.0, **extra})
    run_dir = paths.run_dir(root, EXP, ref.pair, method, seed)
    _write_json(run_dir / "metrics.json", {**ids, "top1": top1, "wall_time_s": 100.0 + seed})
    _write_json(run_dir / "provenance.json", {
        "git": {"commit": "abc123", "dirty": False}, "params_hash": f"h-{method}", "dataset_checksum": "sha-data",
        "seed": seed, "device": "cpu", "host": "box"})
    hist = pd.DataFrame({
        "epoch": [1, 2, 3], "lr": [0.1, 0.05, 0.01], "loss": [3.0, 2.0, 1.5], "loss_ce": [2.0, 1.5, 1.0],
        "loss_kd": [1.0, 0.5, 0.5], "train_top1": [10.0, 30.0, 50.0], "test_top1": [top1 - 20, top1 - 5, top1],
        "test_top5": [30.0, 50.0, 70.0], "images_per_s": [900.0] * 3, "time_s": [1.0] * 3})
    hist.to_csv(run_dir / "history.csv", index=False)


def _broken_kd(root):
    """(P2, kd): seed 0 started and never finished, seed 1 has an eval without a finite top-1, seed 2 never ran."""
    log = paths.checkpoint_dir(paths.run_dir(root, EXP, P2.pair, "kd", 0)) / "log.txt"
    log.parent.mkdir(parents=True)
    log.write_text("non-finite loss at epoch 2\n")
    _write_json(paths.run_eval(root, EXP, P2.pair, "kd", 1),
                {"experiment": EXP, "pair": P2.pair, "method": "kd", "seed": 1, "top1": None})


@pytest.fixture
def main_root(tmp_path):
    for (ref, method), values in TOP1.items():
        for seed, top1 in zip(SEEDS, values):
            extra = {"extra_params": 0 if method != "tas" else 1_500_000}
            if method == "tas":
                extra["auxiliary"] = {"assistant": {"top1": top1 + 2}}  # assistant mean = student mean + 2
            _run(tmp_path, ref, method, seed, top1, **extra)
    _broken_kd(tmp_path)
    _write_json(paths.teacher_eval(tmp_path, EXP, "swin_t"),
                {"experiment": EXP, "model": "swin_t", "top1": 89.0, "top5": 98.0, "params": 2.8e7, "flops": 4.5e9,
                 "images_per_s": 500.0})
    return tmp_path


def _spec(kind="main", methods=("scratch", "kd", "tas"), pairs=(P1, P2), paper="tas_cifar100", seeds=SEEDS):
    return TableSpec(EXP, kind, pairs, methods, NAMES, seeds, paper, auxiliaries=("assistant",))


# ---------------------------------------------------------------- paper values


def test_paper_values_verbatim_and_joined_on_ids():
    tables = load_paper_tables()
    cifar = tables["tas_cifar100"]
    assert cifar.value("swin_t", "r18", "tas") == 81.61
    assert cifar.value("swin_t32", "r18_32", "tas") == 81.61  # the 32 px ids stand for the same paper models
    assert cifar.value("convnext_t", "resmlp_s12", "fitnet") == 45.47
    assert cifar.value("convnext_t", "swin_p", "fitnet") == 24.06
    assert cifar.value("convnext_t", "swin_p", "crd") is None  # partial row: not transcribed, not invented
    assert cifar.value("Swin-T", "ResNet18", "tas") is None  # display names are not keys
    assert dict(cifar.avg_gain) == {"kd": 3.12, "fitnet": -5.21, "crd": -0.02, "ofa": 6.19, "tas": 8.38}
    assert len(cifar.cells) == 12  # the paper's 12 pairs, 6 with transcribed numbers
    assert sum(bool(row) for row in cifar.cells.values()) == 6
    assert tables["tas_imagenet"].value("r50", "swin_n", "scratch") == 75.53
    assert tables["tas_imagenet"].value("swin_t", "mbv2", "scratch") is None
    abl = tables["tas_ablation"]
    assert abl.value("swin_t", "r18", "tas_no_ta") == 25.57
    assert "2410.12342" in cifar.source
    with pytest.raises(TasError, match="unknown paper table"):
        load_paper_table("nope")


def test_paper_rows_need_a_model_map(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text(yaml.safe_dump({"models": {"Swin-T": ["swin_t"]}, "tables": {"t": {
        "kind": "main", "rows": [{"teacher": "Swin-T", "student": "ResNet18", "kd": 1.0}]}}}))
    with pytest.raises(TasError, match="'ResNet18'.*models:"):
        load_paper_tables(bad)
    bad.write_text(yaml.safe_dump({"models": {"Swin-T": ["swin_t"], "Swin-S": ["swin_t"]}, "tables": {}}))
    with pytest.raises(TasError, match="stands for both"):
        load_paper_tables(bad)


def test_published_teacher_values(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"teachers": {"cifar100": {"swin_t": 89.26, "vit_s": {"top1": 92.44, "source": "x"}},
                                                 "r50": 76.1}}))
    assert teacher_values(("exp", "cifar100"), path) == {"swin_t": 89.26, "vit_s": 92.44, "r50": 76.1}
    assert teacher_values(("exp",), path) == {"r50": 76.1}
    assert isinstance(teacher_values(("cifar100",)), dict)  # the shipped file parses, whatever it holds


def test_spec_validation():
    with pytest.raises(TasError, match="kind"):
        _spec(kind="other")
    with pytest.raises(TasError, match="twice"):
        _spec(methods=("kd", "kd"))
    assert _spec().method_name("ofa") == "ofa"


# ---------------------------------------------------------------- the data object


def test_load_keeps_every_cell_with_a_status(main_root):
    data = load(main_root, _spec())
    assert len(data.runs) == 2 * 3 * 3  # every (pair, method, seed), measured or not
    assert len(data.measured) == 15
    kd2 = data.runs[(data.runs.pair == P2.pair) & (data.runs.method == "kd")].set_index("seed")
    assert list(kd2["status"]) == ["unfinished", "failed", "not run"]
    assert "ckpt/log.txt" in kd2.loc[0, "reason"] and "finite top-1" in kd2.loc[1, "reason"]
    assert data.samples(P1.pair, "tas") == [80.0, 81.0, 82.0]
    assert data.samples(P1.pair, "tas", "aux_assistant_top1") == [82.0, 83.0, 84.0]
    assert set(data.histories["pair"]) == {P1.pair, P2.pair} and "loss_ce" in data.histories
    assert data.paper is not None and data.paper.name == "tas_cifar100"


def test_main_table_numbers_marks_and_paper_interval(main_root):
    data = load(main_root, _spec())
    table = main_table(data).set_index("pair")
    r1, r2, avg = table.loc[P1.pair], table.loc[P2.pair], table.loc[AVG_PAIR]
    assert r1["label"] == "Swin-T -> ResNet18"
    assert r1["teacher_top1"] == 89.0 and math.isnan(r2["teacher_top1"])  # convnext_t has no teacher eval
    assert r1["scratch_mean"] == pytest.approx(71.0) and r1["scratch_std"] == pytest.approx(1.0) and r1["tas_n"] == 3
    # significance: TAS wins P1 outright; P2 is a tie between TAS and scratch; KD never marked
    assert (r1["tas_mark"], r1["kd_mark"], r1["scratch_mark"]) == ("win", "", "")
    assert (r2["tas_mark"], r2["scratch_mark"], r2["kd_mark"]) == ("tie", "tie", "")
    # paper beside ours: 95% t-interval of (80, 81, 82) is 81 +- 2.484, so 81.61 lies inside; KD's 78.74 does not
    assert r1["tas_ci_low"] == pytest.approx(81 - 2.4842, abs=1e-3)
    assert r1["tas_paper"] == 81.61 and r1["tas_diff"] == pytest.approx(81.0 - 81.61) and bool(r1["tas_paper_in_ci"])
    assert r1["kd_paper"] == 78.74 and not bool(r1["kd_paper_in_ci"])
    assert math.isnan(r2["tas_paper"]) and pd.isna(r2["tas_paper_in_ci"])
    # the missing cell stays missing
    assert math.isnan(r2["kd_mean"]) and r2["kd_n"] == 0
    # avg gain per seed: kd (5, 5, 5) on P1 only; tas ((10+1)/2, (10+2)/2, (10+0)/2) = (5.5, 6, 5)
    assert avg["kd_mean"] == pytest.approx(5.0) and avg["kd_std"] == pytest.approx(0.0) and avg["kd_pairs"] == 1
    assert avg["tas_mean"] == pytest.approx(5.5) and avg["tas_std"] == pytest.approx(0.5)
    assert avg["tas_n"] == 3 and avg["tas_pairs"] == 2
    assert avg["tas_paper"] == 8.38 and avg["tas_diff"] == pytest.approx(5.5 - 8.38)
    assert math.isnan(avg["scratch_mean"])
    assert r1["tas_extra_params"] == 1_500_000


def test_paper_join_ignores_display_names(main_root):
    renamed = PairRef(P1.pair, P1.teacher, P1.student, "My Swin", "My ResNet")
    table = main_table(load(main_root, _spec(pairs=(renamed, P2)))).set_index("pair")
    assert table.loc[P1.pair, "tas_paper"] == 81.61


def test_one_seed_marks_nothing(main_root):
    files = write_tables(load(main_root, _spec(seeds=(0,))))
    md = next(f for f in files if f.name == "main.md").read_text()
    assert "**" not in md.split("\n", 2)[2] and "≈" not in md.replace("'≈'", "")
    assert "one seed per method" in md and "one seed, so no winner marked" in md.splitlines()[0]
    table = pd.read_csv(next(f for f in files if f.name == "main.csv"))
    assert table[[c for c in table.columns if c.endswith("_mark")]].isna().all().all()


def test_main_table_without_paper(main_root):
    table = main_table(load(main_root, _spec(paper=None)))
    assert not [c for c in table.columns if c.endswith(("_paper", "_diff", "_in_ci"))]


def test_write_tables_files(main_root):
    files = write_tables(load(main_root, _spec()))
    tables = paths.tables_dir(main_root, EXP)
    assert {f.name for f in files} == {f"{stem}.{ext}" for stem in ("main", "tas_assistant")
                                       for ext in ("csv", "md", "tex", "html")} | {"provenance.csv", "summary.json"}
    for f in files:
        assert f.parent == tables and f.stat().st_size > 0
    assert not list(tables.glob(".*.tmp"))  # atomic writes leave no temp files

    csv = pd.read_csv(tables / "main.csv").set_index("pair")
    assert math.isnan(csv.loc[P2.pair, "kd_mean"]) and csv.loc[P2.pair, "kd_n"] == 0
    assert csv.loc[P1.pair, "tas_mean"] == pytest.approx(81.0) and csv.loc[P1.pair, "tas_mark"] == "win"
    header = (tables / "main.csv").read_text().splitlines()[0].split(",")
    line = next(csv_row for csv_row in (tables / "main.csv").read_text().splitlines() if csv_row.startswith(P2.pair))
    assert line.split(",")[header.index("kd_mean")] == ""  # missing is empty, not 0 / nan

    md = (tables / "main.md").read_text()
    p1_line = next(md_row for md_row in md.splitlines() if md_row.startswith("| Swin-T -> ResNet18"))
    p2_line = next(md_row for md_row in md.splitlines() if md_row.startswith("| ConvNeXt-T -> TinyNet"))
    assert "**81.00 ± 1.00**" in p1_line and "-0.61 (in)" in p1_line and "-2.74 (out)" in p1_line
    assert p1_line.split("|")[2].strip() == "89.00"  # teacher column: our teacher eval
    published = teacher_values((EXP, "cifar100")).get("swin_t")
    if published is not None:  # the published value beside it, when paper_values.yaml has one
        assert p1_line.split("|")[3].strip() == f"{published:.2f}" and "Teacher paper" in md
    assert "62.00 ± 1.00 ≈" in p2_line and "61.00 ± 1.00 ≈" in p2_line and "— [1]" in p2_line
    assert p2_line.split("|")[2].strip() == "— [2]"  # the teacher without an eval has its own footnote
    assert ("[2] teacher convnext_t: not evaluated: "
            "run `python -m tas evaluate --experiment exp --teacher convnext_t`." in md)
    assert "[1] ConvNeXt-T -> TinyNet, KD: seed 0: training did not finish" in md
    assert "seed 1: eval JSON has no finite top-1" in md and "seed 2: not run" in md
    assert md.startswith("**exp: last-epoch top-1 (%) per teacher -> student pair; bold = best beyond noise "
                         "(Welch's t-test, p < 0.05)")
    assert "Top-1 of each run: last epoch (fixed rule)." in md
    assert "Welch's t-test" in md and "provenance.csv" in md and not re.search(r"\bnan\b", md, re.I)
    avg_line = next(md_row for md_row in md.splitlines() if "Avg. gain over scratch" in md_row)
    assert "+5.50 ± 0.50" in avg_line and "+8.38" in avg_line

    tex = (tables / "main.tex").read_text()
    assert r"\textbf{81.00 $\pm$ 1.00}" in tex and r"$\approx$" in tex and r"$\rightarrow$" in tex
    assert r"p $<$ 0.05" in tex and r"\par\footnotesize [1] ConvNeXt-T" in tex  # caption and notes go with the table
    assert not re.search(r"\bnan\b", tex, re.I)

    page = (tables / "main.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<strong>81.00 ± 1.00</strong>" in page
    assert '<a href="main.csv">' in page and "Welch" in page and "ConvNeXt-T -&gt; TinyNet" in page
    # a table wider than the report's frame scrolls in its own box: no column is cut off
    assert '<div class="wide"><table>' in page and "div.wide{overflow-x:auto" in page

    summary = json.loads((tables / "summary.json").read_text())
    cell = next(c for c in summary["cells"] if c["pair"] == P2.pair and c["method"] == "kd")
    assert cell["mean"] is None and cell["n"] == 0 and cell["seeds"] == []
    assert summary["rows"][P1.pair]["winner"] == "tas" and summary["rows"][P2.pair]["tied"] == ["tas", "scratch"]
    gain = next(g for g in summary["avg_gain_over_scratch"] if g["method"] == "tas")
    assert gain["gain"] == pytest.approx(5.5) and gain["std_over_seeds"] == pytest.approx(0.5) and gain["n_pairs"] == 2
    assert {(m["method"], m["seed"], m["status"]) for m in summary["missing"]} == {
        ("kd", 0, "unfinished"), ("kd", 1, "failed"), ("kd", 2, "not run")}

    assist = pd.read_csv(tables / "tas_assistant.csv").set_index("pair")
    assert assist.loc[P1.pair, "teacher_top1"] == 89.0
    assert assist.loc[P1.pair, "assistant_mean"] == pytest.approx(83.0)
    assert math.isnan(assist.loc[P2.pair, "teacher_top1"])  # no teacher eval for convnext_t: missing


def test_provenance_csv(main_root):
    write_tables(load(main_root, _spec()))
    prov = pd.read_csv(paths.tables_dir(main_root, EXP) / "provenance.csv", dtype={"git_commit": str})
    # every (pair, method, seed) cell plus the teacher of each pair row
    assert len(prov) == 2 * 3 * 3 + 2
    tas = prov[(prov.pair == P1.pair) & (prov.method == "tas")].set_index("seed")
    assert list(tas.index) == [0, 1, 2]
    assert tas.loc[1, "run_dir"] == str(paths.run_dir(main_root, EXP, P1.pair, "tas", 1))
    assert tas.loc[1, "eval_path"] == str(paths.run_eval(main_root, EXP, P1.pair, "tas", 1))
    assert ((tas.loc[1, "git_commit"], tas.loc[1, "params_hash"], tas.loc[1, "dataset_checksum"])
            == ("abc123", "h-tas", "sha-data"))
    assert tas.loc[1, "device"] == "cpu" and tas.loc[1, "wall_time_s"] == 101.0 and tas.loc[1, "top1"] == 81.0
    assert tas.loc[1, "status"] == "ok"
    kd = prov[(prov.pair == P2.pair) & (prov.method == "kd")]
    assert list(kd["status"]) == ["unfinished", "failed", "not run"] and kd["git_commit"].isna().all()
    teacher = prov[(prov.pair == P1.pair) & (prov.method == "teacher")].iloc[0]
    assert teacher["top1"] == 89.0 and teacher["run_dir"] == str(paths.teacher_dir(main_root, EXP, "swin_t"))


def test_ablation_table(tmp_path):
    methods = ("kd", "tas_no_nce", "tas", "tas_new")
    values = {"kd": (78.0, 79.0), "tas_no_nce": (80.0, 80.0), "tas": (81.0, 82.0)}  # tas_new: not run
    for m, vals in values.items():
        for seed, v in zip((0, 1), vals):
            _run(tmp_path, P1, m, seed, v)
    spec = TableSpec(EXP, "ablation", (P1,), methods, {"tas": "TAS (full)"}, (0, 1), "tas_ablation",
                     auxiliaries=("assistant",))
    data = load(tmp_path, spec)
    table = ablation_table(data).set_index("method")
    assert list(table.index) == list(methods)
    assert table.loc["tas_no_nce", "paper"] == 80.95 and table.loc["tas_no_nce", "std"] == 0.0
    assert table.loc["kd", "diff"] == pytest.approx(78.5 - 78.74)
    assert table.loc["tas", "method_name"] == "TAS (full)"
    # 81.5 +- 0.71 vs 80 +- 0 on two seeds: p = 0.205, a tie with the best
    assert table.loc["tas", "mark"] == "tie" and table.loc["tas_no_nce", "mark"] == "tie"
    assert math.isnan(table.loc["tas_new", "mean"]) and math.isnan(table.loc["tas_new", "paper"])
    files = write_tables(data)
    assert {f.name for f in files} == {"ablation.csv", "ablation.md", "ablation.tex", "ablation.html",
                                       "provenance.csv", "summary.json"}
    md = (paths.tables_dir(tmp_path, EXP) / "ablation.md").read_text()
    assert "80.95" in md and "— [1]" in md and "TAS (full), ... " not in md
    plots = [p for p in write_report(tmp_path, spec) if p.suffix == ".png"]  # the kind brings its own plot
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
    data = load(tmp_path, spec)
    table = main_table(data).set_index("pair")
    for ref in (P1, p3):
        assert table.loc[ref.pair, "scratch_mean"] == pytest.approx(71.0) and table.loc[ref.pair, "scratch_n"] == 2
        assert len(data.history(ref.pair, "scratch")) == 4  # 2 epochs x 2 seeds
    # per seed: ((75-70) + (73-70)) / 2 = 4, ((76-72) + (73-72)) / 2 = 2.5
    assert table.loc[AVG_PAIR, "kd_mean"] == pytest.approx(3.25) and table.loc[AVG_PAIR, "kd_pairs"] == 2
    # a student-level eval that names another student is refused, not tabulated under r18
    _write_json(paths.student_run_eval(tmp_path, EXP, "r18", "scratch", 1),
                {"experiment": EXP, "student": "mbv2", "method": "scratch", "seed": 1, "top1": 70.0})
    with pytest.raises(TasError, match="student='mbv2'"):
        load(tmp_path, spec)


def test_table_spec_of_the_config_reads_scratch_per_student():
    from tas.config import load_config
    from tas.jobs.tables import table_spec

    spec = table_spec(load_config(ROOT / "params.yaml", experiments=["cifar100"]), "cifar100")
    assert spec.teacher_free == {"scratch"}
    r18 = [ref for ref in spec.pairs if ref.student == "r18"]
    assert len(r18) == 3
    assert ({spec.run(ref, "scratch", 0).eval_path("results") for ref in r18}
            == {paths.student_run_eval("results", "cifar100", "r18", "scratch", 0)})
    assert len({spec.run(ref, "kd", 0).eval_path("results") for ref in r18}) == 3


def test_write_plots(main_root):
    files = write_plots(load(main_root, _spec()))
    assert {f.name for f in files} == {"curves_swin_t-r18.png", "curves_convnext_t-tiny.png",
                                      "gain_over_scratch.png", "tas_assistant.png"}
    for f in files:
        assert f.parent == paths.plots_dir(main_root, EXP)
        assert f.read_bytes()[:8] == PNG_MAGIC and f.stat().st_size > 1000


def test_curves_plot_the_ce_term(main_root):
    from tas.report.plots import CURVE_PANELS

    assert [c for c, _ in CURVE_PANELS] == ["test_top1", "loss_ce", "loss"]


def test_plots_skip_without_data(tmp_path):
    # only a scratch eval, no history: no curves, no gain (nothing to compare), no assistant
    _write_json(paths.run_eval(tmp_path, EXP, P1.pair, "scratch", 0),
                {"experiment": EXP, "pair": P1.pair, "method": "scratch", "seed": 0, "top1": 70.0})
    assert write_plots(load(tmp_path, _spec())) == []
    assert not paths.plots_dir(tmp_path, EXP).exists()


def test_bad_inputs(tmp_path):
    with pytest.raises(TasError, match="no run evals"):
        load(tmp_path, _spec())
    path = paths.run_eval(tmp_path, EXP, P1.pair, "kd", 0)
    _write_json(paths.run_eval(tmp_path, EXP, P1.pair, "tas", 0),
                {"experiment": EXP, "pair": P1.pair, "method": "tas", "seed": 0, "top1": 70.0})
    path.parent.mkdir(parents=True)
    path.write_text("{not json")  # an unreadable eval is a failed cell with its reason, not a stop
    data = load(tmp_path, _spec())
    row = data.runs[(data.runs.method == "kd") & (data.runs.seed == 0) & (data.runs.pair == P1.pair)].iloc[0]
    assert row["status"] == "failed" and "unreadable" in row["reason"]
    _write_json(path, {"experiment": EXP, "pair": P1.pair, "method": "tas", "seed": 0, "top1": 70.0})
    with pytest.raises(TasError, match="method"):  # a moved file would fill the wrong cell: refused
        load(tmp_path, _spec())


def test_cli_tables_with_missing_and_failed_runs(tmp_path):
    """`python -m tas tables` on an experiment where most runs are missing or failed: exit 0, empty cells."""
    cfg = yaml.safe_load((ROOT / "params.yaml").read_text())
    exp = cfg["experiments"]["mini"]
    pairs = [PairRef(f"{p['teacher']}-{p['student']}", p["teacher"], p["student"], "", "") for p in exp["pairs"]]
    root = tmp_path / "results"
    ref = pairs[0]
    ids = {"experiment": "mini", "pair": ref.pair, "teacher": ref.teacher, "student": ref.student,
           "method": "kd", "seed": 0}
    _write_json(paths.run_eval(root, "mini", ref.pair, "kd", 0), {**ids, "top1": 55.0})
    _write_json(paths.run_eval(root, "mini", ref.pair, "ofa", 0), {**ids, "method": "ofa", "top1": float("nan")})
    (paths.checkpoint_dir(paths.run_dir(root, "mini", ref.pair, "tas", 0))).mkdir(parents=True)
    proc = subprocess.run([sys.executable, "-m", "tas", "tables", "--params", str(ROOT / "params.yaml"),
                           "--set", f"paths.results={root}", "--experiment", "mini"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    md = (paths.tables_dir(root, "mini") / "main.md").read_text()
    assert "55.00" in md and "not run" in md and "training did not finish" in md and "finite top-1" in md
    assert (paths.tables_dir(root, "mini") / "provenance.csv").is_file()


def test_write_report_reads_once_and_writes_both(main_root):
    files = write_report(main_root, _spec())
    assert {f.parent.name for f in files} == {"tables", "plots"}


def _render_check():
    import importlib.util

    spec = importlib.util.spec_from_file_location("render_check", ROOT / "workflow/report/render_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_render_check_finds_tables_and_their_csv(main_root):
    import base64

    rc = _render_check()
    page = (write_tables(load(main_root, _spec()))[3]).read_text()
    uri = "data:text/html;charset=utf8;base64," + base64.b64encode(page.encode()).decode()
    report = "<script>\nvar results = " + json.dumps({
        "results/exp/tables/main.html": {"data_uri": uri},
        "results/exp/tables/main.csv": {"data_uri": "data:,x"}}) + ";\n</script>"
    results = rc.report_results(report)
    assert rc.table_entries(results) == ["results/exp/tables/main.html"]
    assert "<strong>81.00 ± 1.00</strong>" in rc.decode(results["results/exp/tables/main.html"]["data_uri"])
    del results["results/exp/tables/main.csv"]
    with pytest.raises(SystemExit, match="no CSV download"):
        rc.table_entries(results)


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(),
                    reason="Debian's chromium is not installed (apt-get install -y chromium)")
def test_html_table_renders_in_headless_chromium(main_root, tmp_path):
    rc = _render_check()
    page = next(f for f in write_tables(load(main_root, _spec())) if f.name == "main.html")
    png = tmp_path / "main.png"
    rc.screenshot("/usr/bin/chromium", page, png, size="1400,500")
    assert png.read_bytes()[:8] == PNG_MAGIC and not rc.blank(png)
