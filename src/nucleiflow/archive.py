"""Unpack a zip archive safely and atomically.

Every member name is checked before anything is written (no absolute paths,
no `..`, no symlinks), so an archive cannot write outside `dest_dir`. Members
are extracted into a temporary sibling directory that is renamed onto
`dest_dir` only when all of them are out, so `dest_dir` is never half-full.
"""

from __future__ import annotations

import os
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath

from nucleiflow.errors import DataFormatError
from nucleiflow.io import atomic_dir


def safe_extract_zip(zip_path: str | os.PathLike, dest_dir: str | os.PathLike) -> Path:
    """Extract `zip_path` into `dest_dir` (replacing it) and return `dest_dir`.

    Raises DataFormatError, naming the archive and the member at fault, for an
    unreadable archive, an unsafe member or a corrupt member.
    """
    zip_path, dest_dir = Path(zip_path), Path(dest_dir)
    with _open_zip(zip_path) as archive:
        members = archive.infolist()
        for member in members:
            _check_member(zip_path, member)
        with atomic_dir(dest_dir) as tmp:
            for member in members:
                _extract_member(zip_path, archive, member, tmp)
    return dest_dir


def _open_zip(zip_path: Path) -> zipfile.ZipFile:
    if not zip_path.is_file():
        raise DataFormatError(f"{zip_path}: archive not found")
    try:
        return zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, EOFError) as exc:
        raise DataFormatError(f"{zip_path}: not a valid zip archive (truncated or corrupt?)") from exc


def _check_member(zip_path: Path, member: zipfile.ZipInfo) -> None:
    """Reject members that would land outside the destination."""
    name = member.filename
    # Check both path flavours: a zip written on Windows may use `C:\` or backslashes.
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).anchor:
        raise DataFormatError(f"{zip_path}: member {name!r} has an absolute path")
    if ".." in PureWindowsPath(name).parts:
        raise DataFormatError(f"{zip_path}: member {name!r} contains a '..' path component")
    if stat.S_ISLNK(member.external_attr >> 16):
        raise DataFormatError(f"{zip_path}: member {name!r} is a symbolic link")


def _extract_member(zip_path: Path, archive: zipfile.ZipFile, member: zipfile.ZipInfo, dest: Path) -> None:
    """Extract one (already checked) member; corruption becomes DataFormatError."""
    try:
        archive.extract(member, dest)
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise DataFormatError(f"{zip_path}: member {member.filename!r} is corrupt ({exc})") from exc
