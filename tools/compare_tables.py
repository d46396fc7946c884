"""Compare the tables of two workflow runs at their printed digits: which tables, rows and columns differ.

Every Markdown table under `results/` of the first run (tables/ and comparisons/) is read beside the same
file of the second; the Markdown copies hold the digits the tables print (`io.write_table`), so "equal to
the printed digits" is equality of these cells. For each differing table the differing cells are listed
(first column as the row's name). Timing tables and timing rows measure the machine, not the code; they are
listed apart so a reader sees at once whether anything else moved.

    .venv/bin/python tools/compare_tables.py ../before ../after     # two checkouts after `make demo`
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TIMING_WORDS = ("timing", "time", "seconds", "inference_s", "training_min", "_s |")


def markdown_rows(path: Path) -> list[list[str]]:
    """The cells of a Markdown table file's rows (header first), separator rows and prose dropped."""
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("|") and not set(line) <= set("|:- "):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def is_timing(name: str, header: list[str], row: list[str] | None) -> bool:
    text = " ".join([name, *header] if row is None else row).lower()
    return any(word in text for word in TIMING_WORDS) if row is not None else "timing" in name.lower()


def compare(before: Path, after: Path) -> dict:
    files = sorted(p.relative_to(before) for p in (before / "results").rglob("*.md"))
    report = {"equal": [], "timing_only": [], "different": [], "missing": []}
    for rel in files:
        if not (after / rel).is_file():
            report["missing"].append(str(rel))
            continue
        a, b = markdown_rows(before / rel), markdown_rows(after / rel)
        if a == b:
            report["equal"].append(str(rel))
            continue
        if len(a) != len(b) or (a and a[0] != b[0]):
            report["different"].append((str(rel), ["shape or header differs"]))
            continue
        header, cells = a[0], []
        for row_a, row_b in zip(a[1:], b[1:]):
            if row_a == row_b:
                continue
            timing_row = is_timing(str(rel), header, row_a)
            for column, (x, y) in enumerate(zip(row_a, row_b)):
                if x != y:
                    cells.append(
                        (
                            timing_row or is_timing(header[column], [], None),
                            f"{row_a[0]} / {header[column]}: {x} -> {y}",
                        )
                    )
        if is_timing(str(rel), header, None) or all(timing for timing, _ in cells):
            report["timing_only"].append(str(rel))
        else:
            report["different"].append((str(rel), [text for timing, text in cells if not timing]))
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    report = compare(args.before, args.after)
    print(f"{len(report['equal'])} tables equal to the printed digits")
    print(f"{len(report['timing_only'])} differ in timing cells only (wall-clock measurements):")
    for rel in report["timing_only"]:
        print(f"  {rel}")
    print(f"{len(report['missing'])} missing from the second run: {report['missing']}")
    print(f"{len(report['different'])} differ in other cells:")
    for rel, cells in report["different"]:
        print(f"  {rel}: {len(cells)} cells")
        for text in cells[:8]:
            print(f"    {text}")
    return 1 if report["different"] or report["missing"] else 0


if __name__ == "__main__":
    sys.exit(main())
