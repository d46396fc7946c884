"""The module table of docs/ARCHITECTURE.md, generated from the package's own module docstrings.

Each module's row is the first paragraph of its docstring, read with `ast` (nothing is imported, so no
optional dependency is needed). Run `.venv/bin/python tools/module_table.py` after adding, moving or
re-describing a module; workflow_tests check that the document is current.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "nucleiflow"
DOCUMENT = ROOT / "docs" / "ARCHITECTURE.md"
START, END = "<!-- module-table:start -->", "<!-- module-table:end -->"


def summary(path: Path) -> str:
    """The first paragraph of a module's docstring on one line ('' when it has none)."""
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    paragraph = docstring.strip().split("\n\n", 1)[0]
    return " ".join(line.strip() for line in paragraph.splitlines()).replace("|", "\\|")


def package_modules(folder: Path) -> list[Path]:
    """The modules of one package folder (its __init__ first), then those of its subpackages, sorted."""
    modules = sorted(p for p in folder.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    return [folder / "__init__.py", *modules]


def packages(root: Path = PACKAGE) -> list[Path]:
    """Every package folder under `root` (itself first), in sorted order."""
    return [root, *sorted(p.parent for p in root.rglob("__init__.py") if p.parent != root)]


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def table(root: Path = PACKAGE) -> str:
    """One Markdown section per package: a row per module, named relative to its package."""
    sections = []
    for folder in packages(root):
        package = module_name(folder / "__init__.py", root)
        rows = ["| module | concern |", "|---|---|"]
        for path in package_modules(folder):
            name = "(package)" if path.name == "__init__.py" else f"`{path.stem}`"
            rows.append(f"| {name} | {summary(path)} |")
        sections.append(f"### `{package}`\n\n" + "\n".join(rows))
    return "\n\n".join(sections)


def undocumented(root: Path = PACKAGE) -> list[str]:
    """Modules whose docstring is missing (each needs one: it is their row in the table)."""
    return [module_name(p, root) for folder in packages(root) for p in package_modules(folder) if not summary(p)]


def current_section(document: Path = DOCUMENT) -> str:
    text = document.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{document}: no {START} ... {END} section")
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def write(document: Path = DOCUMENT) -> None:
    text = document.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    document.write_text(f"{head}{START}\n\n{table()}\n\n{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    missing = undocumented()
    if missing:
        sys.exit(f"modules without a docstring: {', '.join(missing)}")
    write()
    print(f"{DOCUMENT.relative_to(ROOT)}: module table written")
