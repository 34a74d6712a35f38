"""The papers' regime check (tas.report.regime): a teacher not clearly above its student's scratch run is
marked in every format, footnoted, a CSV column, a summary entry and one warning line of `tables`."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tas import paths
from tas.errors import TasError
from tas.report.data import load
from tas.report.regime import MARK, check_rows, outside_regime
from tas.report.spec import PairRef, TableSpec
from tas.report.tables import write_tables

ROOT = Path(__file__).resolve().parent.parent
EXP = "exp"
SEEDS = (0, 1)
# WEAK: a teacher below its student's scratch run (the mini study once shipped 62.8 vs 71.4).
WEAK = PairRef("vit-r18", "vit", "r18", "ViT", "ResNet18")
STRONG = PairRef("swin-mbv2", "swin", "mbv2", "Swin", "MobileNetV2")
TEACHERS = {"vit": 62.8, "swin": 89.0}
SCRATCH = {WEAK: (71.0, 71.8), STRONG: (70.0, 72.0)}  # means 71.4 and 71.0
KD = {WEAK: (72.0, 73.0), STRONG: (75.0, 76.0)}
FOOTNOTE = "outside the papers' regime (teacher not clearly above the student from scratch)"


def _json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _records(root: Path, teachers: dict = TEACHERS) -> None:
    for ref in (WEAK, STRONG):
        for seed in SEEDS:
            _json(paths.student_run_eval(root, EXP, ref.student, "scratch", seed),
                  {"experiment": EXP, "student": ref.student, "method": "scratch", "seed": seed,
                   "top1": SCRATCH[ref][seed]})
            _json(paths.run_eval(root, EXP, ref.pair, "kd", seed),
                  {"experiment": EXP, "pair": ref.pair, "method": "kd", "seed": seed, "top1": KD[ref][seed]})
    for teacher, top1 in teachers.items():
        _json(paths.teacher_eval(root, EXP, teacher), {"experiment": EXP, "model": teacher, "top1": top1})


def _spec(methods=("scratch", "kd"), **options) -> TableSpec:
    return TableSpec(EXP, "main", (WEAK, STRONG), methods, {"scratch": "Scratch", "kd": "KD"}, SEEDS, None,
                     teacher_free={"scratch"}, **options)


def _line(text: str, label: str) -> str:
    return next(line for line in text.splitlines() if label in line and "->" in line and not line.startswith(MARK))


# ---------------------------------------------------------------- the rule


def test_outside_regime_rule():
    assert outside_regime(62.8, 71.4, 2.0) is True  # below
    assert outside_regime(72.5, 71.0, 2.0) is True  # above, by less than the margin
    assert outside_regime(73.2, 71.2, 2.0) is False  # exactly the margin, despite 73.2 - 71.2 = 1.9999999999999
    assert outside_regime(89.0, 71.0, 2.0) is False
    assert outside_regime(72.5, 71.0, 1.0) is False  # the margin decides
    assert outside_regime(math.nan, 71.0, 2.0) is None and outside_regime(89.0, math.nan, 2.0) is None


def test_check_rows_says_why_a_row_is_unchecked():
    pairs = (WEAK, STRONG)
    checks = check_rows(pairs, {"vit": 62.8}, {WEAK.pair: [71.0, 71.8], STRONG.pair: [70.0]}, 2.0)
    assert checks[WEAK.pair].outside is True and checks[WEAK.pair].scratch_top1 == pytest.approx(71.4)
    assert checks[WEAK.pair].gap == pytest.approx(-8.6) and checks[WEAK.pair].n_scratch == 2
    assert checks[STRONG.pair].outside is None and checks[STRONG.pair].reason == "teacher not evaluated"
    checks = check_rows(pairs, TEACHERS, {WEAK.pair: []}, 2.0)
    assert checks[WEAK.pair].reason == "student's scratch run not measured"
    assert {c.reason for c in check_rows(pairs, TEACHERS, None, 2.0).values()} == {"no scratch run in this table"}


# ---------------------------------------------------------------- the tables


def test_weak_teacher_is_marked_in_every_format(tmp_path):
    _records(tmp_path)
    warnings = []
    write_tables(load(tmp_path, _spec()), warn=warnings.append)
    tables = paths.tables_dir(tmp_path, EXP)

    md = (tables / "main.md").read_text()
    assert _line(md, "ViT -> ResNet18").startswith(f"| ViT -> ResNet18 {MARK}")
    assert MARK not in _line(md, "Swin -> MobileNetV2")
    foot = next(line for line in md.splitlines() if line.startswith(MARK))
    assert foot.startswith(f"{MARK} ViT -> ResNet18: teacher top-1 62.80 is not above the student's scratch top-1 "
                           "71.40 (mean over 2 seeds) by 2.00 points (gap -8.60)") and FOOTNOTE in foot
    assert md.count(FOOTNOTE) == 1  # one footnote: the strong teacher's row has none

    tex = (tables / "main.tex").read_text()
    assert r"ViT $\rightarrow$ ResNet18 \dag{} &" in tex and r"Swin $\rightarrow$ MobileNetV2 &" in tex
    assert r"\par\footnotesize \dag{} ViT" in tex and FOOTNOTE in tex

    page = (tables / "main.html").read_text()
    assert f"ViT -&gt; ResNet18 {MARK}</td>" in page and "Swin -&gt; MobileNetV2</td>" in page
    assert html.escape(FOOTNOTE) in page

    csv = pd.read_csv(tables / "main.csv").set_index("pair")
    assert bool(csv.loc[WEAK.pair, "outside_regime"]) is True and bool(csv.loc[STRONG.pair, "outside_regime"]) is False
    assert (csv.loc[WEAK.pair, "regime_gap"] == pytest.approx(-8.6)
            and csv.loc[STRONG.pair, "regime_gap"] == pytest.approx(18.0))
    assert pd.isna(csv.loc["avg_gain", "outside_regime"])  # not a pair row

    regime = json.loads((tables / "summary.json").read_text())["regime"]
    assert regime["margin"] == 2.0
    assert regime["rows"][WEAK.pair] == {"teacher_top1": 62.8, "scratch_top1": 71.4, "scratch_seeds": 2, "gap": -8.6,
                                         "outside": True, "unchecked": None}
    assert regime["rows"][STRONG.pair]["outside"] is False

    assert len(warnings) == 1 and warnings[0].startswith("warning: exp: ViT -> ResNet18 (vit-r18): teacher top-1 62.80")


def test_no_mark_when_every_teacher_leads(tmp_path):
    _records(tmp_path, {"vit": 80.0, "swin": 89.0})
    warnings = []
    files = write_tables(load(tmp_path, _spec()), warn=warnings.append)
    for f in files:
        if f.suffix in (".md", ".tex", ".html"):
            assert MARK not in f.read_text() and r"\dag" not in f.read_text(), f.name
    md = (paths.tables_dir(tmp_path, EXP) / "main.md").read_text()
    assert "Regime: every teacher is above its student's scratch top-1 by at least 2.00 points" in md
    assert warnings == []


def test_margin_is_a_table_option(tmp_path):
    _records(tmp_path, {"vit": 72.9, "swin": 89.0})  # 1.5 points above ResNet18's scratch mean
    flagged = []
    write_tables(load(tmp_path, _spec()), warn=flagged.append)
    assert len(flagged) == 1 and "by 2.00 points (gap +1.50)" in flagged[0]
    relaxed = []
    write_tables(load(tmp_path, _spec(regime_margin=1.0)), warn=relaxed.append)
    assert relaxed == []
    for bad in (-1.0, "2", True, math.inf):
        with pytest.raises(TasError, match=r"experiments\.exp\.table\.regime_margin"):
            _spec(regime_margin=bad)


def test_unchecked_rows_are_said_not_hidden(tmp_path):
    _records(tmp_path, {"swin": 89.0})  # the ViT teacher was never evaluated
    write_tables(load(tmp_path, _spec()))
    md = (paths.tables_dir(tmp_path, EXP) / "main.md").read_text()
    assert "not checked, teacher not evaluated: ViT -> ResNet18." in md and MARK not in md
    write_tables(load(tmp_path, _spec(methods=("kd",))))  # no scratch run to compare with
    md = (paths.tables_dir(tmp_path, EXP) / "main.md").read_text()
    assert "not checked, no scratch run in this table: ViT -> ResNet18; Swin -> MobileNetV2." in md


def test_table_options_come_from_params():
    from tas.config import load_config
    from tas.jobs.tables import table_spec

    cfg = load_config(ROOT / "params.yaml", experiments=["mini"])
    assert (table_spec(cfg, "mini").regime_margin, table_spec(cfg, "mini").report) == (2.0, "last")  # the defaults
    cfg = load_config(ROOT / "params.yaml",
                      ["experiments.mini.table.regime_margin=5", "experiments.mini.table.report=best"],
                      experiments=["mini"])
    assert (table_spec(cfg, "mini").regime_margin, table_spec(cfg, "mini").report) == (5, "best")
    for bad in ("experiments.mini.table.regime_margin=-1", "experiments.mini.table.report=median"):
        with pytest.raises(TasError):  # the schema refuses it before any job runs
            load_config(ROOT / "params.yaml", [bad], experiments=["mini"])


def test_cli_tables_prints_one_warning_per_weak_pair(tmp_path, capsys):
    """`python -m tas tables` on the mini study with a fabricated weak ViT teacher: one stderr line, for its pair."""
    from tas.cli import main

    exp = yaml.safe_load((ROOT / "params.yaml").read_text())["experiments"]["mini"]
    pairs = [(p["teacher"], p["student"]) for p in exp["pairs"]]
    root = tmp_path / "results"
    teachers, scratch = {"tiny_cnn": 89.0, "tiny_vit": 50.0}, {"tiny_vit": 53.6, "tiny_mlp": 61.2}
    for teacher, top1 in teachers.items():
        _json(paths.teacher_eval(root, "mini", teacher), {"experiment": "mini", "model": teacher, "top1": top1})
    for student, top1 in scratch.items():
        _json(paths.student_run_eval(root, "mini", student, "scratch", 0),
              {"experiment": "mini", "student": student, "method": "scratch", "seed": 0, "top1": top1})
    weak = [f"{t}-{s}" for t, s in pairs if teachers[t] - scratch[s] < 2.0]
    assert weak == ["tiny_vit-tiny_mlp"]  # the fixture itself: exactly one weak pair
    rc = main(["tables", "--params", str(ROOT / "params.yaml"), "--set", f"paths.results={root}",
               "--experiment", "mini"])
    err = capsys.readouterr().err
    assert rc == 0
    lines = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1 and "(tiny_vit-tiny_mlp)" in lines[0] and "outside the papers' regime" in lines[0]
    assert MARK in (paths.tables_dir(root, "mini") / "main.md").read_text()


@pytest.mark.parametrize("experiment", ["mini", "imagenette_mini"])
def test_published_tables_are_in_the_regime(experiment):
    """The published mini tables (docs/results) would carry no mark: each teacher leads its student's scratch
    top-1 by at least the experiment's margin, read from their own summary.json."""
    summary = json.loads((ROOT / "docs/results" / experiment / "tables/summary.json").read_text())
    exp = yaml.safe_load((ROOT / "params.yaml").read_text())["experiments"][experiment]
    margin = (exp.get("table") or {}).get("regime_margin", 2.0)
    teachers = {t["teacher"]: t["top1"] for t in summary["teachers"]}
    scratch = {c["pair"]: c["mean"] for c in summary["cells"] if c["method"] == "scratch"}
    refs = [PairRef(f"{p['teacher']}-{p['student']}", p["teacher"], p["student"], "", "") for p in exp["pairs"]]
    checks = check_rows(refs, teachers, {pair: [v] for pair, v in scratch.items() if v is not None}, margin)
    assert [c.outside for c in checks.values()] == [False] * len(refs)
    if "regime" in summary:  # tables regenerated since the check exists say the same
        assert not any(row["outside"] for row in summary["regime"]["rows"].values())
