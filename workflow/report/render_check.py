"""Check that a Snakemake report shows the formatted tables: open it in headless Chromium, on each table.

    snakemake --report report.html
    python workflow/report/render_check.py report.html --out report-check/

For every table of the report (an `.html` entry under Tables) it checks that the report also carries
the same table's `.csv` (the download), that the embedded HTML is our formatted table, then opens the
report in headless Chromium (Debian's `chromium` package: `apt-get install -y chromium`) with the
table selected as a user would after clicking it, and saves a screenshot per table to --out. It fails
(exit 1, one line) when an entry is missing, the embedded page is not a table, or a screenshot is
blank. Look at the PNGs: they are what a reader of report.html sees.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")


def report_results(report: str) -> dict:
    """The report's `results` object: one entry per file, keyed by its path, with a base64 data URI."""
    match = re.search(r"var results = (\{.*?\});\s*</script>", report, re.S)
    if not match:
        raise SystemExit("render_check: no `var results = {...}` in the report; is it a Snakemake >= 8 report?")
    return json.loads(match.group(1))


def decode(data_uri: str) -> str:
    head, _, payload = data_uri.partition(",")
    return base64.b64decode(payload).decode() if head.endswith(";base64") else payload


def table_entries(results: dict) -> list[str]:
    """Paths of the tables' HTML entries; each must have its CSV beside it in the report."""
    pages = sorted(p for p in results if p.endswith(".html") and "/tables/" in p)
    if not pages:
        raise SystemExit("render_check: the report lists no tables/*.html; check workflow/rules/tables.smk patterns")
    for page in pages:
        if page[:-len(".html")] + ".csv" not in results:
            raise SystemExit(f"render_check: {page} has no CSV download beside it in the report")
        html = decode(results[page]["data_uri"])
        if "<table>" not in html or "<caption>" not in html:
            raise SystemExit(f"render_check: the report's {page} is not a formatted table")
    return pages


def _select(report: str, page: str) -> str:
    """The report with a script that opens the Tables category and shows `page`, as a click would."""
    # Two steps, as a reader's two clicks: React applies the category's state before the table's view.
    script = ("<script>window.addEventListener('load', () => setTimeout(() => {"
              "app.showCategory('Tables'); setTimeout(() => "
              f"app.setView({{content: 'html', contentPath: results[{json.dumps(page)}].data_uri, "
              f"resultPath: {json.dumps(page)}}}), 300);}}, 300));</script>")
    # Only the document's own closing tag: the report's bundled scripts contain "</body>" in strings.
    head, tag, tail = report.rpartition("</body>")
    if not tag:
        raise SystemExit("render_check: the report has no </body>; is it a Snakemake report?")
    return head + script + tag + tail


def screenshot(chromium: str, html_file: Path, png: Path, size: str = "1600,900") -> None:
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
                               "--virtual-time-budget=4000", f"--screenshot={png}", html_file.as_uri()],
                              capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 or not png.is_file():
        raise SystemExit(f"render_check: chromium failed on {html_file}: {proc.stderr.strip()[-300:]}")


def blank(png: Path) -> bool:
    from matplotlib.image import imread

    pixels = imread(png)
    return float(pixels.std()) < 1e-3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("--out", type=Path, default=Path("report-check"))
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = ap.parse_args(argv)
    report = args.report.read_text()
    results = report_results(report)
    args.out.mkdir(parents=True, exist_ok=True)
    for page in table_entries(results):
        name = page.replace("/", "_").removesuffix(".html")
        staged = args.out / f"{name}.report.html"
        staged.write_text(_select(report, page))
        png = args.out / f"{name}.png"
        screenshot(args.chromium, staged.resolve(), png)
        staged.unlink()
        if blank(png):
            raise SystemExit(f"render_check: the screenshot of {page} is blank")
        print(f"{page}: shown in the report (csv beside it) -> {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
