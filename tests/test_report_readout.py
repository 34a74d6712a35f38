"""Last vs best epoch: evaluate copies the trainer's best-epoch top-1 into the eval record; a table shows the
last epoch (our fixed rule) unless `table.report: best`, and says which it shows."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tas import paths
from tas.errors import TasError
from tas.report.data import NOT_RECORDED, load
from tas.report.spec import PairRef, TableSpec
from tas.report.tables import write_tables

EXP = "exp"
P1 = PairRef("swin_t-r18", "swin_t", "r18", "Swin-T", "ResNet18")
LAST = {"scratch": (70.0, 72.0), "kd": (76.0, 77.0)}
BEST = {"scratch": (71.0, 73.5), "kd": (77.5, 78.0)}  # the best epoch is never below the last
BEST_WORDS = ("best epoch over training, as OFA's train.py reports — selected on the test set, "
              "for comparison with the paper only")


def _records(root: Path, without_best: tuple[str, int] | None = None) -> None:
    for method in LAST:
        for seed in (0, 1):
            record = {"experiment": EXP, "pair": P1.pair, "method": method, "seed": seed, "top1": LAST[method][seed],
                      "best_epoch_top1": BEST[method][seed], "best_epoch": 280 + seed}
            if (method, seed) == without_best:  # evaluated before the trainer recorded the best epoch
                del record["best_epoch_top1"], record["best_epoch"]
            path = paths.run_eval(root, EXP, P1.pair, method, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record))


def _spec(report: str) -> TableSpec:
    return TableSpec(EXP, "main", (P1,), tuple(LAST), {"scratch": "Scratch", "kd": "KD"}, (0, 1), "tas_cifar100",
                     report=report)


def test_evaluate_copies_the_best_epoch_and_tolerates_old_metrics():
    from tas.jobs.evaluate import training_record

    new = training_record({"top1": 76.0, "best_epoch_top1": 77.5, "best_epoch": 281, "extra_params": 5,
                           "auxiliary": {}})
    assert new == {"extra_params": 5, "auxiliary": {}, "best_epoch_top1": 77.5, "best_epoch": 281}
    old = training_record({"top1": 76.0})  # a metrics.json written before the trainer recorded them
    assert old == {"extra_params": 0, "auxiliary": {}}


def test_last_is_the_default_and_says_so(tmp_path):
    _records(tmp_path)
    write_tables(load(tmp_path, _spec("last")))
    tables = paths.tables_dir(tmp_path, EXP)
    csv = pd.read_csv(tables / "main.csv").set_index("pair")
    assert (csv.loc[P1.pair, "kd_mean"] == pytest.approx(76.5)
            and csv.loc[P1.pair, "scratch_mean"] == pytest.approx(71.0))
    md = (tables / "main.md").read_text()
    assert md.startswith("**exp: last-epoch top-1 (%)") and "Top-1 of each run: last epoch (fixed rule)." in md
    assert json.loads((tables / "summary.json").read_text())["report"] == {"top1": "last",
                                                                           "means": "last epoch (fixed rule)"}


def test_best_shows_the_best_epoch_in_every_format(tmp_path):
    _records(tmp_path)
    write_tables(load(tmp_path, _spec("best")))
    tables = paths.tables_dir(tmp_path, EXP)
    csv = pd.read_csv(tables / "main.csv").set_index("pair")
    assert csv.loc[P1.pair, "kd_mean"] == pytest.approx(77.75) and csv.loc[P1.pair, "kd_paper"] == 78.74
    assert csv.loc[P1.pair, "kd_diff"] == pytest.approx(77.75 - 78.74)
    assert csv.loc["avg_gain", "kd_mean"] == pytest.approx(((77.5 - 71.0) + (78.0 - 73.5)) / 2)
    md = (tables / "main.md").read_text()
    assert md.startswith("**exp: best-epoch (selected on the test set) top-1 (%)")
    assert f"Top-1 of each run: {BEST_WORDS}." in md
    assert "best epoch over training" in (tables / "main.tex").read_text()
    assert "best epoch over training" in (tables / "main.html").read_text()
    assert json.loads((tables / "summary.json").read_text())["report"]["top1"] == "best"


def test_best_never_falls_back_to_the_last(tmp_path):
    _records(tmp_path, without_best=("kd", 1))
    data = load(tmp_path, _spec("best"))
    row = data.runs[(data.runs.method == "kd") & (data.runs.seed == 1)].iloc[0]
    assert row["status"] == NOT_RECORDED and "no best_epoch_top1" in row["reason"]
    assert data.samples(P1.pair, "kd") == [77.5]  # seed 1's last-epoch 77.0 is not shown in its place
    write_tables(data)
    md = (paths.tables_dir(tmp_path, EXP) / "main.md").read_text()
    assert "77.50 (1/2) [1]" in md and "seed 1: eval JSON has no best_epoch_top1" in md
    assert len(load(tmp_path, _spec("last")).measured) == 4  # the last-epoch table has every run


def test_best_without_any_record_is_one_clear_error(tmp_path):
    _records(tmp_path, without_best=("kd", 0))
    for path in paths.experiment_dir(tmp_path, EXP).rglob("*.json"):
        record = json.loads(path.read_text())
        record.pop("best_epoch_top1", None)
        path.write_text(json.dumps(record))
    with pytest.raises(TasError, match="holds best_epoch_top1 .*set table.report: last"):
        load(tmp_path, _spec("best"))
    with pytest.raises(TasError, match=r"table\.report is 'median'"):
        _spec("median")
