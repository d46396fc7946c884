"""File-writing at the edges: atomic outputs, tables in three formats, JSON.

A killed job must never leave a half-written file that looks finished, so every
writer goes through `atomic_path`: write to a temporary sibling, then rename.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from nucleiflow.paths import TABLE_SUFFIXES


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` on success.

    The temporary keeps the final suffix (libraries such as matplotlib and h5py
    infer the format from it). On error the temporary is removed and `path` is
    left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the usual umask-based mode.
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory next to `path`; rename it onto `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text())


def _json_default(obj):
    # numpy scalars and paths appear in summaries; make them plain JSON.
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_csv(path: str | os.PathLike, df: pd.DataFrame, **kwargs) -> None:
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, **kwargs)


def write_table(
    stem: str | os.PathLike, df: pd.DataFrame, caption: str = "", float_format: str = "{:.4f}"
) -> list[Path]:
    """Write `df` as `<stem>.csv` (full precision), `<stem>.md` and `<stem>.tex`.

    `stem` may carry one of the three suffixes; it is replaced. Returns the paths.
    """
    stem = Path(stem)
    if stem.suffix in TABLE_SUFFIXES:
        stem = stem.with_suffix("")
    paths = [stem.with_suffix(s) for s in TABLE_SUFFIXES]
    write_csv(paths[0], df)
    shown = df.copy()
    for col in shown.columns:
        if pd.api.types.is_float_dtype(shown[col]):
            shown[col] = shown[col].map(lambda v: "" if pd.isna(v) else float_format.format(v))
        else:  # a missing label is an empty cell, not "nan"
            shown[col] = shown[col].astype(object).where(shown[col].notna(), "")
    md = shown.to_markdown(index=False)
    if caption:
        md = f"{caption}\n\n{md}"
    write_text(paths[1], md + "\n")
    tex = shown.to_latex(index=False, caption=caption or None, escape=True)
    write_text(paths[2], tex)
    return paths
