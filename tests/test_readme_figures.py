"""The README is short, and every figure in it is a copy of a file the pipeline wrote (issue 22).

A copy is a block between `<!-- results: FILE -->` (or `<!-- results: FILE lines A-B -->`) and
`<!-- /results -->`; it must equal FILE (or its lines A..B), a committed output under docs/results/ or
results/bench/. The same holds for such blocks in docs/ and benchmarks/README.md. Outside the blocks the
README states no result figure (top-1 with two decimals, a percentage, a duration): it links to the
file or the benchmarks/README.md row instead. Every relative link of these pages points to a file that
exists and, with an anchor, to one of its headings.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MAX_LINES = 200
SOURCES = ("docs/results/", "results/bench/")
BLOCK = re.compile(r"^<!-- results: (?P<path>\S+)(?: lines (?P<a>\d+)-(?P<b>\d+))? -->\n"
                   r"(?P<body>.*?)^<!-- /results -->$",
                   re.M | re.S)
# Result figures a README must not state outside a copied block: 61.20, 54.53 ± 1.20, 94 %, 17 min 48 s, 625 s.
FIGURE = re.compile(r"\b\d+\.\d\d\b|\d\s?%|\b\d+(?:\.\d+)?\s?(?:min|h|s|ms)\b")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _blocks(page: Path) -> list[re.Match]:
    return list(BLOCK.finditer(page.read_text()))


def _outside_blocks(text: str) -> str:
    return BLOCK.sub("", text)


def test_readme_is_at_most_200_lines():
    n = len(README.read_text().splitlines())
    assert n <= MAX_LINES, f"README.md has {n} lines; at most {MAX_LINES} (move sections to docs/)"


def test_readme_has_figure_blocks_and_they_are_well_formed():
    text = README.read_text()
    assert _blocks(README), "README.md copies no results table (<!-- results: FILE --> ... <!-- /results -->)"
    opened, closed = text.count("<!-- results:"), text.count("<!-- /results -->")
    assert opened == closed == len(_blocks(README)), "an unmatched or malformed <!-- results --> marker in README.md"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_copied_block_equals_its_file(page: Path):
    for block in _blocks(page):
        rel = block["path"]
        assert rel.startswith(SOURCES), f"{page.name}: {rel} is not a pipeline output under {' or '.join(SOURCES)}"
        source = ROOT / rel
        assert source.is_file(), f"{page.name}: {rel} does not exist"
        lines = source.read_text().splitlines()
        if block["a"]:
            a, b = int(block["a"]), int(block["b"])
            assert 1 <= a <= b <= len(lines), f"{page.name}: {rel} has {len(lines)} lines, not {a}-{b}"
            lines = lines[a - 1:b]
        expected = "\n".join(lines).rstrip("\n")
        got = block["body"].rstrip("\n")
        assert got == expected, (f"{page.relative_to(ROOT)}: the copy of {rel} differs from the file; "
                                 f"copy the file again (or fix the line range)")


def test_readme_states_no_figure_outside_a_copied_block():
    found = []
    for n, line in enumerate(_outside_blocks(README.read_text()).splitlines(), 1):
        if line.startswith("    "):  # commands: `-n 2`, `--cores 8` are arguments, not figures
            continue
        found += [f"{m.group(0)!r} in: {line.strip()}" for m in FIGURE.finditer(line)]
    assert not found, ("README.md states figures outside a <!-- results --> block; copy the file that holds "
                       "them, or link to it / to its benchmarks/README.md row:\n" + "\n".join(found))


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation other than '-' and '_' dropped, spaces -> '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    in_code = False
    for line in page.read_text().splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        if in_code or not re.match(r"#{1,6} ", line):
            continue
        slug = _slug(line.lstrip("#"))
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_exists(page: Path):
    broken = []
    for target in LINK.findall(_outside_code(page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and dest.is_file() and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: broken links:\n" + "\n".join(broken)


def _outside_code(text: str) -> str:
    """The text without fenced code blocks and indented (4-space) blocks, where [x](y) is code, not a link."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return "\n".join(line for line in text.splitlines() if not line.startswith("    "))


def test_the_cli_table_lists_every_subcommand():
    from tas.cli import SUBCOMMANDS

    section = README.read_text().split("## The CLI", 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\| `([a-z-]+)", section, flags=re.M))
    assert rows == set(SUBCOMMANDS), (f"README.md's CLI table lists {sorted(rows)}; `python -m tas --help` has "
                                      f"{sorted(SUBCOMMANDS)}: missing {sorted(set(SUBCOMMANDS) - rows)}, "
                                      f"not a subcommand {sorted(rows - set(SUBCOMMANDS))}")
