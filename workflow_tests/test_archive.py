"""archive.safe_extract_zip: good archives extract; bad ones fail in one line and leave nothing."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from nucleiflow.archive import safe_extract_zip
from nucleiflow.errors import DataFormatError

PAYLOAD = b"nucleus payload " * 64


def make_zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def assert_fails_cleanly(zip_path: Path, dest: Path, pattern: str) -> None:
    """One-line DataFormatError matching `pattern`; no dest and no temporary directory left."""
    with pytest.raises(DataFormatError, match=pattern) as caught:
        safe_extract_zip(zip_path, dest)
    assert "\n" not in str(caught.value)
    assert not dest.exists()
    assert [p.name for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}")] == []


def test_good_zip_extracts(tmp_path):
    zip_path = make_zip(tmp_path / "good.zip", {"Fold 1/images/a.npy": PAYLOAD, "b/c.txt": b"x"})
    dest = tmp_path / "out" / "unpacked"
    assert safe_extract_zip(zip_path, dest) == dest
    assert (dest / "Fold 1" / "images" / "a.npy").read_bytes() == PAYLOAD
    assert (dest / "b" / "c.txt").read_bytes() == b"x"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["unpacked"]


def test_good_zip_replaces_existing_dest(tmp_path):
    dest = tmp_path / "unpacked"
    (dest / "old").mkdir(parents=True)
    safe_extract_zip(make_zip(tmp_path / "good.zip", {"new.txt": b"x"}), dest)
    assert sorted(p.name for p in dest.iterdir()) == ["new.txt"]


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "a\\..\\evil.txt"])
def test_parent_component_rejected(tmp_path, name):
    zip_path = make_zip(tmp_path / "bad.zip", {"ok.txt": b"x", name: b"x"})
    assert_fails_cleanly(zip_path, tmp_path / "out", r"bad\.zip: member .*evil\.txt.* '\.\.'")


@pytest.mark.parametrize("name", ["/etc/evil.txt", "C:/evil.txt"])
def test_absolute_member_rejected(tmp_path, name):
    zip_path = make_zip(tmp_path / "bad.zip", {name: b"x"})
    assert_fails_cleanly(zip_path, tmp_path / "out", r"member .*evil\.txt.* absolute path")


def test_symlink_member_rejected(tmp_path):
    zip_path = tmp_path / "link.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("ok.txt", b"x")
        link = zipfile.ZipInfo("link")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    assert_fails_cleanly(zip_path, tmp_path / "out", r"member 'link' is a symbolic link")


def test_truncated_zip_rejected(tmp_path):
    good = make_zip(tmp_path / "good.zip", {"a.bin": PAYLOAD})
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert_fails_cleanly(
        truncated, tmp_path / "out", r"truncated\.zip: not a valid zip archive \(truncated or corrupt\?\)"
    )


def test_crc_corrupted_member_rejected(tmp_path):
    zip_path = make_zip(tmp_path / "crc.zip", {"first.txt": b"fine", "second.bin": PAYLOAD}, zipfile.ZIP_STORED)
    data = zip_path.read_bytes()
    at = data.index(PAYLOAD) + 5  # stored, so the payload appears verbatim; flip one byte of it
    zip_path.write_bytes(data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :])
    assert_fails_cleanly(zip_path, tmp_path / "out", r"crc\.zip: member 'second\.bin' is corrupt")


def test_missing_zip(tmp_path):
    assert_fails_cleanly(tmp_path / "absent.zip", tmp_path / "out", r"absent\.zip: archive not found")
