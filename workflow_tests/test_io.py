"""Atomic writers and table formats."""

import os
import stat

import pandas as pd
import pytest

from nucleiflow.io import atomic_dir, atomic_path, write_table


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_keeps_old_file_until_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(ValueError), atomic_path(target) as tmp:
        tmp.write_text("new")
        raise ValueError
    assert target.read_text() == "old"
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_atomic_outputs_get_umask_permissions(tmp_path):
    with atomic_path(tmp_path / "a.txt") as tmp:
        tmp.write_text("x")
    mode = stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode)
    assert mode & stat.S_IRGRP  # not 0600 as mkstemp would leave it


def test_atomic_dir_replaces_whole_tree(tmp_path):
    dest = tmp_path / "tree"
    with atomic_dir(dest) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(KeyError), atomic_dir(dest) as tmp:
        (tmp / "b.txt").write_text("2")
        raise KeyError
    assert sorted(p.name for p in dest.iterdir()) == ["a.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["tree"]


def test_write_table_three_formats(tmp_path):
    df = pd.DataFrame({"model": ["U-Net", "DeepLabV3+"], "dice": [0.83561, 0.5]})
    paths = write_table(tmp_path / "t.csv", df, caption="Test metrics")
    assert [p.suffix for p in paths] == [".csv", ".md", ".tex"]
    assert pd.read_csv(paths[0])["dice"].tolist() == [0.83561, 0.5]  # CSV keeps full precision
    md = paths[1].read_text()
    assert md.startswith("Test metrics") and "0.8356" in md and "| U-Net" in md
    tex = paths[2].read_text()
    assert "\\begin{tabular}" in tex and "\\caption{Test metrics}" in tex
