"""One formatted table -> Markdown, LaTeX and HTML; the numeric table -> CSV.

A `Display` is the table as text (one string per cell) plus which cells are emphasised (a winner
beyond noise). Every format renders the same Display, so Markdown, LaTeX and the Snakemake report's
HTML never disagree; emphasis is spelled per format (**x**, \\textbf{x}, <strong>).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import pandas as pd

MISSING = "—"
TEXT_COLUMNS = ("Pair", "Method")  # left-aligned; every other column holds numbers
AUX_SUFFIXES = (" paper", " Δ", "+params", "Paper", "Δ")  # context beside our numbers: lighter in HTML


@dataclass(frozen=True)
class Display:
    frame: pd.DataFrame = field(hash=False)
    bold: frozenset[tuple[int, str]] = frozenset()  # (row position, column name)
    caption: str = ""
    notes: tuple[str, ...] = ()


# ---------------------------------------------------------------- cell text


def isnan(x) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))


def plain(x, signed: bool = False) -> str:
    return MISSING if isnan(x) else (f"{x:+.2f}" if signed else f"{x:.2f}")


def params(x) -> str:
    if isnan(x):
        return MISSING
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            return f"{x / div:.2f}{unit}"
    return f"{int(x)}"


def accuracy(mean, std, n, n_expected: int, signed: bool = False) -> str:
    """'78.12 ± 0.34'; a cell with fewer seeds than planned says so ('(1/2)') instead of hiding it."""
    if isnan(mean) or n == 0:
        return MISSING
    text = plain(mean, signed)
    if n > 1 and not isnan(std):
        text += f" ± {std:.2f}"
    if n < n_expected:
        text += f" ({n}/{n_expected})"
    return text


# ---------------------------------------------------------------- formats


def _emphasised(display: Display, wrap) -> pd.DataFrame:
    frame = display.frame.copy()
    for row, col in display.bold:
        frame.iat[row, frame.columns.get_loc(col)] = wrap(frame.iat[row, frame.columns.get_loc(col)])
    return frame


def md_escape(text) -> str:
    """A cell or header of a Markdown table: a '|' (e.g. in a display name) would end the cell."""
    return str(text).replace("|", r"\|").replace("\r", " ").replace("\n", " ")


def to_markdown(display: Display) -> str:
    escaped = Display(display.frame.map(md_escape), display.bold)
    frame = _emphasised(escaped, lambda s: f"**{s}**")
    frame.columns = [md_escape(c) for c in display.frame.columns]
    align = ["left" if c in TEXT_COLUMNS else "right" for c in display.frame.columns]
    text = frame.to_markdown(index=False, disable_numparse=True, colalign=align)
    notes = "".join(f"\n{note}" for note in display.notes)
    return f"**{display.caption}**\n\n{text}\n" + (f"{notes}\n" if notes else "")


def tex_escape(text: str) -> str:
    text = str(text).replace("\\", r"\textbackslash{}")
    for ch in "&%$#_{}":
        text = text.replace(ch, "\\" + ch)
    text = text.replace("~", r"\textasciitilde{}").replace("^", r"\textasciicircum{}")
    text = text.replace("->", r"$\rightarrow$").replace("<", r"$<$").replace(">", r"$>$")
    text = text.replace("†", r"\dag{}")  # the regime mark (tas.report.regime), text-mode in any LaTeX
    return text.replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("≈", r"$\approx$")


def to_latex(display: Display) -> str:
    escaped = _emphasised(Display(display.frame.map(tex_escape), display.bold), lambda s: rf"\textbf{{{s}}}")
    escaped.columns = [tex_escape(c) for c in display.frame.columns]
    latex = escaped.to_latex(index=False, escape=False, column_format="l" + "r" * (len(escaped.columns) - 1),
                             caption=tex_escape(display.caption))
    if not display.notes:
        return latex
    # The notes (test, footnotes, provenance) travel with the table into a paper, below the tabular.
    notes = "\n".join(rf"\par\footnotesize {tex_escape(n)}" for n in display.notes)
    head, end, tail = latex.rpartition(r"\end{table}")
    return f"{head}{notes}\n{end}{tail}"


_CSS = ('body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em;color:#222}\n'
        "table{border-collapse:collapse;font-size:14px}caption{font-weight:600;text-align:left;padding:.4em 0}\n"
        "th,td{padding:.3em .6em;border-bottom:1px solid #ddd;white-space:nowrap}"
        "th{background:#f4f4f4;white-space:normal;vertical-align:bottom}\n"
        "div.wide{overflow-x:auto;max-width:100%}\n"
        "td.aux{color:#777}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}"
        "td.text,th.text{text-align:left}\n"
        "tr:last-child td{border-bottom:2px solid #999}p.note{font-size:13px;color:#444;max-width:70em;margin:.3em 0}")


def to_html(display: Display, csv_name: str | None = None) -> str:
    """A standalone page (inline CSS, no scripts): the Snakemake report shows it as the table. A table wider
    than the page (Table 1: 30-odd columns) scrolls in its own box and its headers wrap, so no column is cut
    off at the report's frame width."""
    frame = display.frame
    kinds = ["text" if c in TEXT_COLUMNS else "num aux" if str(c).endswith(AUX_SUFFIXES) else "num"
             for c in frame.columns]
    head = "".join(f'<th class="{k}">{html.escape(str(c))}</th>' for c, k in zip(frame.columns, kinds))
    body = []
    for i in range(len(frame)):
        cells = []
        for j, (col, kind) in enumerate(zip(frame.columns, kinds)):
            text = html.escape(str(frame.iat[i, j]))
            cells.append(f'<td class="{kind}">' + (f"<strong>{text}</strong>" if (i, col) in display.bold else text)
                         + "</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in display.notes)
    # The relative link works beside the file; inside report.html the CSV is its own entry of the table.
    download = (f'<p class="note">Numbers: <a href="{html.escape(csv_name)}">{html.escape(csv_name)}</a> (in the '
                f'Snakemake report: this table\'s csv entry)</p>') if csv_name else ""
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(display.caption)}</title><style>{_CSS}</style></head><body>\n"
            f"<div class=\"wide\"><table><caption>{html.escape(display.caption)}</caption>"
            f"<thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(body)
            + f"\n</tbody></table></div>\n{notes}{download}\n</body></html>\n")


def to_csv(table: pd.DataFrame) -> str:
    # NaN -> empty field: a missing cell stays visibly missing, never a number.
    return table.to_csv(index=False, na_rep="", float_format="%.6g")
