"""A DVC experiment sweep as one small table: the params that differ between the experiments, and each
method's mean top-1.

    python -m tas.sweep                      # the experiment params.yaml selects, every DVC experiment
    python -m tas.sweep --experiment mini --by-pair

`dvc exp show` lists every metrics file and every param as a column (hundreds in a study; 750 columns for
the mini study with `--only-changed --md`). This reads the same data (`dvc exp show --json`) and keeps
what a sweep is read for: one row per experiment (the workspace, each commit shown and its experiments),
the params.yaml leaves whose values differ between those rows, and the mean top-1 of each method over the
study's evaluated runs (pairs and seeds; `--by-pair` for one column per pair and method), with the number
of runs behind each mean when it is not the same for all.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from typing import Any, Iterable

from tas.errors import TasError

_RUN_EVAL = re.compile(r"^(?P<root>.+)/(?P<experiment>[^/]+)/eval/runs/"
                       r"(?P<owner>[^/]+)/(?P<method>[^/]+)/seed(?P<seed>[0-9]+)\.json$")


def dvc_exp_show() -> list[dict]:
    dvc = [sys.executable, "-m", "dvc"] if importlib.util.find_spec("dvc") else [shutil.which("dvc") or "dvc"]
    try:
        proc = subprocess.run([*dvc, "exp", "show", "--json"], capture_output=True, text=True)
    except OSError as err:
        raise TasError(f"cannot run dvc ({err}); install it (pip install dvc) and run from the project root") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise TasError(f"`dvc exp show --json` failed: {last}")
    return json.loads(proc.stdout or "[]")


def rows_of(show: list[dict]) -> list[tuple[str, dict]]:
    """(label, data) of the workspace, each commit shown and each of its experiments, in dvc's order."""
    rows = []
    for commit in show:
        data = commit.get("data") or {}
        if not data:
            continue
        label = "workspace" if commit.get("rev") == "workspace" else (commit.get("name") or commit["rev"][:7])
        rows.append((label, data))
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs") or []:
                if rev.get("data"):
                    rows.append((rev.get("name") or exp.get("name") or rev["rev"][:7], rev["data"]))
    return rows


def _leaves(value: Any, prefix: str, out: dict) -> dict:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _leaves(item, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value
    return out


def params_of(data: dict) -> dict[str, Any]:
    params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
    return _leaves(params, "", {})


def top1s(data: dict, experiment: str, by_pair: bool) -> dict[str, list[float]]:
    """{column: [top-1 of each evaluated run]} for one row."""
    out: dict[str, list[float]] = defaultdict(list)
    for path, metrics in (data.get("metrics") or {}).items():
        match = _RUN_EVAL.match(path)
        value = ((metrics or {}).get("data") or {}).get("top1")
        if not match or match["experiment"] != experiment or not isinstance(value, (int, float)):
            continue
        column = f"{match['owner']} {match['method']}" if by_pair else match["method"]
        out[column].append(float(value))
    return out


def table(rows: list[tuple[str, dict]], experiment: str, by_pair: bool = False) -> str:
    """The sweep as a Markdown table (see the module docstring)."""
    if not rows:
        raise TasError("`dvc exp show` lists nothing; run a study and `dvc exp run -S key=value` first")
    params = [params_of(data) for _, data in rows]
    keys = sorted({k for p in params for k in p})
    changed = [k for k in keys if len({json.dumps(p.get(k), sort_keys=True, default=str) for p in params}) > 1]
    scores = [top1s(data, experiment, by_pair) for _, data in rows]
    columns = sorted({c for s in scores for c in s})
    if not columns:
        raise TasError(f"no evaluated run of experiment {experiment!r} in `dvc exp show`; evaluate the study "
                       f"(`snakemake --cores 2 --config experiment={experiment}` and `dvc commit`, or `dvc repro`)")
    counts = {len(s.get(c, [])) for s in scores for c in columns}
    header = ["experiment", *changed, *(f"{c} top-1" for c in columns)]
    lines = ["| " + " | ".join(_md(h) for h in header) + " |",
             "|" + "|".join(["---"] * (1 + len(changed)) + ["---:"] * len(columns)) + "|"]
    for (label, _), p, s in zip(rows, params, scores):
        cells = [label, *(_show(p.get(k)) for k in changed)]
        for c in columns:
            values = s.get(c, [])
            cell = f"{sum(values) / len(values):.2f}" if values else "—"
            if values and len(counts) > 1:
                cell += f" (n={len(values)})"
            cells.append(cell)
        lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _show(value: Any) -> str:
    if value is None:
        return "—"
    text = json.dumps(value, default=str) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= 30 else text[:29] + "…"


def _md(text: str) -> str:
    return str(text).replace("|", r"\|")


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tas.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", help="the study whose runs to score (default: params.yaml's `experiment`)")
    parser.add_argument("--by-pair", action="store_true", help="one column per pair and method instead of per method")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        rows = rows_of(dvc_exp_show())
        experiment = args.experiment
        if experiment is None:
            selected = params_of(rows[0][1]).get("experiment") if rows else None
            experiment = selected if isinstance(selected, str) else (selected or ["mini"])[0]
        print(table(rows, experiment, args.by_pair), end="")
    except TasError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
