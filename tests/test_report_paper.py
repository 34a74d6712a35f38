"""Paper values (tas/report/paper_values.yaml): every published cell of METHOD.md s.6, each absent cell and
column said to be absent (not transcribed / not in the paper / not implemented), never shown as a number."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tas import paths
from tas.distillers import method_types
from tas.errors import TasError
from tas.report.data import load
from tas.report.paper import NOT_IN_PAPER, NOT_TRANSCRIBED, load_paper_tables
from tas.report.spec import PairRef, TableSpec
from tas.report.tables import write_tables

ROOT = Path(__file__).resolve().parent.parent
EXP = "exp"
# METHOD.md s.6, every number it gives: (teacher id, student id) -> {method: top-1}
CIFAR = {
    ("swin_t", "r18"): {"scratch": 74.01, "kd": 78.74, "fitnet": 78.87, "crd": 77.63, "ofa": 80.54, "tas": 81.61},
    ("vit_s", "r18"): {"scratch": 74.01, "kd": 77.26, "fitnet": 77.71, "crd": 76.60, "ofa": 80.15, "tas": 81.93},
    ("vit_s", "mbv2"): {"scratch": 73.68, "kd": 72.77, "fitnet": 73.54, "crd": 78.14, "ofa": 78.45, "tas": 82.10},
    ("convnext_t", "deit_t"): {"scratch": 68.00, "kd": 72.99, "fitnet": 60.78, "crd": 65.94,
                               "ofa": 75.76, "tas": 79.57},
    ("convnext_t", "resmlp_s12"): {"scratch": 66.56, "kd": 72.25, "fitnet": 45.47, "crd": 63.35,
                                   "ofa": 75.21, "tas": 78.03},
    ("convnext_t", "swin_p"): {"kd": 76.44, "fitnet": 24.06, "tas": 80.73},
}
RSD_CIFAR = {("swin_t", "r18"): 83.92, ("vit_s", "mbv2"): 81.68, ("convnext_t", "deit_t"): 82.46,
             ("convnext_t", "resmlp_s12"): 84.21}
IMAGENET = {
    ("swin_t", "r18"): {"scratch": 69.75, "kd": 71.14, "ofa": 71.76, "tas": 72.21},
    ("swin_t", "mbv2"): {"ofa": 72.32, "tas": 72.54},
    ("convnext_t", "deit_t"): {"kd": 74.00, "ofa": 74.41, "tas": 75.26},
    ("r50", "swin_n"): {"scratch": 75.53, "ofa": 77.76, "tas": 77.79},
}
UNTRANSCRIBED = [("swin_t", "mbv2"), ("mixer_b16", "r18"), ("mixer_b16", "mbv2"), ("mixer_b16", "deit_t"),
                 ("mixer_b16", "swin_p"), ("swin_t", "resmlp_s12")]


def test_every_published_cell_is_held():
    tables = load_paper_tables()
    cifar, imagenet = tables["tas_cifar100"], tables["tas_imagenet"]
    for (teacher, student), row in CIFAR.items():
        for method in cifar.columns:
            assert cifar.value(teacher, student, method) == row.get(method), (teacher, student, method)
    for (teacher, student), value in RSD_CIFAR.items():
        assert cifar.value(teacher, student, "rsd") == value
    for (teacher, student), row in IMAGENET.items():
        for method in imagenet.columns:
            assert imagenet.value(teacher, student, method) == row.get(method), (teacher, student, method)
    assert imagenet.value("swin_t", "r18", "rsd") == 72.13
    assert dict(cifar.avg_gain) == {"kd": 3.12, "fitnet": -5.21, "crd": -0.02, "ofa": 6.19, "tas": 8.38}
    assert cifar.gain("rsd") == 10.69 and imagenet.gain("tas") == 2.31


def test_the_two_papers_keep_their_own_numbers():
    """TAS and RSD disagree on OFA's cells: TAS's columns keep TAS's numbers, RSD's are recorded apart."""
    tables = load_paper_tables()
    assert tables["tas_cifar100"].value("convnext_t", "resmlp_s12", "ofa") == 75.21
    assert tables["rsd_cifar100"].value("convnext_t", "resmlp_s12", "ofa") == 81.22
    assert tables["tas_cifar100"].gain("ofa") == 6.19 and tables["rsd_cifar100"].gain("ofa") == 7.47
    assert tables["tas_imagenet"].value("swin_t", "r18", "ofa") == 71.76
    assert tables["rsd_imagenet"].value("swin_t", "r18", "ofa") == 71.85
    rsd = tables["tas_cifar100"].source_table("rsd")
    assert rsd.name == "rsd_cifar100" and "2507.21844" in rsd.source and "secondary summary" in rsd.source
    assert "2410.12342" in tables["tas_cifar100"].source_table("ofa").source


def test_absent_cells_say_why():
    cifar = load_paper_tables()["tas_cifar100"]
    for teacher, student in UNTRANSCRIBED:
        for method in cifar.all_columns:
            assert cifar.value(teacher, student, method) is None
            assert cifar.absent(teacher, student, method) == NOT_TRANSCRIBED, (teacher, student, method)
    assert cifar.absent("convnext_t", "swin_p", "scratch") == NOT_TRANSCRIBED  # the partial row
    assert cifar.absent("swin_t", "r18", "tas") is None
    assert cifar.absent("swin_t", "r18", "dkd") == NOT_IN_PAPER  # TAS's table has no DKD column
    assert cifar.absent("tiny_cnn", "tiny_vit", "kd") == NOT_IN_PAPER  # nor our mini pairs
    ablation = load_paper_tables()["tas_ablation"]
    assert ablation.absent("swin_t", "r18", "tas_no_as") == NOT_TRANSCRIBED
    assert ablation.absent("swin_t", "r18", "tas_brand_new") == NOT_IN_PAPER


@pytest.mark.parametrize("experiment", ["cifar100", "cifar100_32"])
def test_every_pair_of_the_studies_is_a_row_of_the_paper(experiment):
    cifar = load_paper_tables()["tas_cifar100"]
    pairs = yaml.safe_load((ROOT / "params.yaml").read_text())["experiments"][experiment]["pairs"]
    assert len(pairs) == 12
    for p in pairs:
        assert cifar.absent(p["teacher"], p["student"], "tas") in (None, NOT_TRANSCRIBED), p


def test_not_implemented_columns_are_the_ones_tas_lacks():
    """A main table's column marked not implemented has no method file in tas/distillers/, and every other
    has one (an ablation table's columns are variants of TAS, params.yaml method ids)."""
    own = set(method_types())
    for table in load_paper_tables().values():
        for column in table.columns if table.kind == "main" else ():
            assert (column in table.not_implemented) == (column not in own), (table.name, column)
    assert load_paper_tables()["tas_cifar100"].not_implemented == {"crd"}


@pytest.mark.parametrize("edit, message", [
    ({"rows": [{"teacher": "Swin-T", "student": "ResNet18", "kd": 1.0, "kdd": 2.0}]},
     "rows name kdd, not in its columns"),
    ({"rows": [{"teacher": "Swin-T", "student": "ResNet18"}] * 2}, "repeats the row"),
    ({"supplements": {"rsd": "nope"}}, "supplements.rsd names 'nope'"),
    ({"not_implemented": ["crd"]}, "not_implemented names"),
])
def test_malformed_paper_tables_are_refused(tmp_path, edit, message):
    table = {"kind": "main", "columns": ["kd"], "rows": [{"teacher": "Swin-T", "student": "ResNet18", "kd": 1.0}],
             **edit}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"models": {"Swin-T": ["swin_t"], "ResNet18": ["r18"]}, "tables": {"t": table}}))
    with pytest.raises(TasError, match=message):
        load_paper_tables(path)


def _eval(root: Path, ref: PairRef, method: str, top1: float) -> None:
    path = paths.run_eval(root, EXP, ref.pair, method, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"experiment": EXP, "pair": ref.pair, "method": method, "seed": 0, "top1": top1}))


def test_absent_paper_cells_and_columns_in_every_format(tmp_path):
    """cifar100-like table: one transcribed row, one pair of the 12 not transcribed, CRD (not implemented) and
    RSD (supplemented) columns: every absence is '—' with its tag and note, never a number."""
    full = PairRef("swin_t-r18", "swin_t", "r18", "Swin-T", "ResNet18")
    empty = PairRef("mixer_b16-r18", "mixer_b16", "r18", "Mixer-B/16", "ResNet18")
    for ref, kd in ((full, 78.0), (empty, 77.0)):
        _eval(tmp_path, ref, "kd", kd)
        _eval(tmp_path, ref, "rsd", kd + 3)
    spec = TableSpec(EXP, "main", (full, empty), ("kd", "rsd", "dkd"), {"kd": "KD", "rsd": "RSD", "dkd": "DKD"}, (0,),
                     "tas_cifar100")
    write_tables(load(tmp_path, spec))
    tables = paths.tables_dir(tmp_path, EXP)

    csv = pd.read_csv(tables / "main.csv").set_index("pair")
    assert csv.loc[full.pair, "kd_paper"] == 78.74 and pd.isna(csv.loc[full.pair, "kd_paper_note"])
    assert pd.isna(csv.loc[empty.pair, "kd_paper"]) and csv.loc[empty.pair, "kd_paper_note"] == "not transcribed"
    assert csv.loc[full.pair, "rsd_paper"] == 83.92 and csv.loc[empty.pair, "rsd_paper_note"] == "not transcribed"
    assert csv.loc[full.pair, "crd_paper"] == 77.63 and (csv["crd_absent"] == "not implemented in tas").all()
    assert csv.loc[full.pair, "scratch_absent"] == "not run in this experiment"
    assert "dkd_paper" not in csv  # no such column in the paper: none in ours either, and a note says so
    assert csv.loc["avg_gain", "crd_paper"] == -0.02 and csv.loc["avg_gain", "rsd_paper"] == 10.69
    paper_cols = [c for c in csv.columns if c.endswith("_paper") and c != "teacher_paper"]
    assert not (csv[paper_cols] == 0).any().any()

    md = (tables / "main.md").read_text()
    header = [c.strip() for c in md.splitlines()[2].split("|")]
    row = dict(zip(header, (c.strip() for c in next(md_row for md_row in md.splitlines()
                                                    if md_row.startswith("| Mixer-B/16")).split("|"))))
    assert row["KD paper"] == "— [nt]" and row["RSD paper"] == "— [nt]" and row["CRD"] == "— [ni]"
    assert row["CRD paper"] == "— [nt]" and row["Scratch"] == "— [nr]"
    row = dict(zip(header, (c.strip() for c in next(md_row for md_row in md.splitlines()
                                                    if md_row.startswith("| Swin-T")).split("|"))))
    assert row["CRD"] == "— [ni]" and row["CRD paper"] == "77.63" and row["RSD paper"] == "83.92"
    for line in ("[nt] the paper prints a value here that paper_values.yaml does not hold (not transcribed)",
                 "[ni] a column of the paper with no method in tas (not implemented)",
                 "[nr] a column of the paper whose method this experiment does not run",
                 "No paper column for DKD: the paper's table has none.",
                 "RSD paper: not a column of tas_cifar100; from table rsd_cifar100, arXiv 2507.21844"):
        assert line in md, line
    assert "[np]" not in md  # no cell of this table is outside the paper's rows and columns

    tex = (tables / "main.tex").read_text()
    assert "— [ni]" in tex and "— [nt]" in tex and r"\par\footnotesize [ni] a column" in tex
    page = (tables / "main.html").read_text()
    assert "— [ni]" in page and html.escape("[nt] the paper prints a value") in page

    summary = json.loads((tables / "summary.json").read_text())
    cell = next(c for c in summary["cells"] if c["pair"] == empty.pair and c["method"] == "kd")
    assert cell["paper"] is None and cell["paper_note"] == "not transcribed"
    crd = [r for r in summary["paper_columns_absent"] if r["column"] == "crd"]
    assert {r["pair"]: r["paper"] for r in crd} == {full.pair: 77.63, empty.pair: None, "avg_gain": -0.02}
    assert {r["ours"] for r in crd} == {"not implemented in tas"}
