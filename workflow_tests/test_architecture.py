"""docs/ARCHITECTURE.md's module table is the package's own module docstrings, and is current."""

from __future__ import annotations

import importlib.util

from conftest import REPO

spec = importlib.util.spec_from_file_location("module_table", REPO / "tools" / "module_table.py")
module_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module_table)


def test_every_module_says_what_it_is():
    assert module_table.undocumented() == []


def test_the_table_lists_every_module():
    text = module_table.table()
    modules = sorted(path for path in (REPO / "src" / "nucleiflow").rglob("*.py") if path.name != "__main__.py")
    assert len(modules) >= 70
    for path in modules:
        if path.name == "__init__.py":
            assert f"### `{module_table.module_name(path)}`" in text
        else:
            assert f"| `{path.stem}` |" in text


def test_architecture_holds_the_generated_table():
    assert module_table.current_section() == module_table.table().strip(), (
        "docs/ARCHITECTURE.md's module table drifted from the module docstrings; regenerate it with "
        "`.venv/bin/python tools/module_table.py`"
    )
