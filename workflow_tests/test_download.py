"""download.fetch: local copies, checksums, and http(s) with resume against a local server."""

from __future__ import annotations

import hashlib
import http.server
import re
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from nucleiflow.download import DownloadError, SourceNotFoundError, fetch, resolve_local, sha256sum
from nucleiflow.errors import ChecksumError, ConfigError, DataFormatError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, not all one byte, so a misplaced chunk changes the hash
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
WRONG_SHA = "0" * 64


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at any path, honouring `Range: bytes=N-`.

    Behaviour switches (class attributes, set per test on a subclass):
    `drop_first` sends only half the body on the first request and hangs up;
    `ignore_range` always answers 200 with the whole body;
    `fail_with` answers the first `fail_times` requests with that HTTP status.
    """

    drop_first = False
    ignore_range = False
    fail_with: int | None = None
    fail_times = 1

    def do_GET(self):
        self.server.requests.append(self.headers.get("Range"))
        first = len(self.server.requests) == 1
        if self.fail_with and len(self.server.requests) <= self.fail_times:
            self.send_error(self.fail_with)
            return
        start = self._range_start()
        if start >= len(PAYLOAD):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = PAYLOAD[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if first and self.drop_first:
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body)

    def _range_start(self) -> int:
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        return int(match.group(1)) if match and not self.ignore_range else 0

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def serve():
    """Start a server with a handler variant on 127.0.0.1; yield (url, server)."""
    servers = []

    def start(**behaviour):
        handler = type("Handler", (RangeHandler,), behaviour)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.requests = []
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/data.zip", server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def fast(url, dest, sha256=None):
    return fetch(url, dest, sha256, retries=3, backoff=0.0, timeout=5, progress=False)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "src" / "data.zip"
    path.parent.mkdir()
    path.write_bytes(PAYLOAD)
    return path


def test_sha256sum_matches_hashlib(source):
    assert sha256sum(source) == PAYLOAD_SHA


def test_resolve_local_forms(tmp_path):
    assert resolve_local("file://resources/demo/x.zip") == Path("resources/demo/x.zip")
    assert resolve_local("file:///abs/x.zip") == Path("/abs/x.zip")
    assert resolve_local("resources/x.zip") == Path("resources/x.zip")
    assert resolve_local(tmp_path / "x.zip") == tmp_path / "x.zip"
    assert resolve_local("https://example.org/x.zip") is None


def test_unknown_scheme_is_a_config_error():
    with pytest.raises(ConfigError, match=r"ftp://host/x\.zip.*file, http, https"):
        resolve_local("ftp://host/x.zip")


@pytest.mark.parametrize("as_url", [True, False])
def test_local_copy_with_checksum(source, tmp_path, as_url):
    url = f"file://{source}" if as_url else str(source)
    dest = fast(url, tmp_path / "out" / "data.zip", PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD
    assert sorted(p.name for p in dest.parent.iterdir()) == ["data.zip"]


def test_local_checksum_mismatch_leaves_nothing(source, tmp_path):
    dest = tmp_path / "out" / "data.zip"
    with pytest.raises(ChecksumError) as caught:
        fast(source, dest, WRONG_SHA)
    message = str(caught.value)
    assert "\n" not in message and str(dest) in message and WRONG_SHA in message and PAYLOAD_SHA in message
    assert list(dest.parent.iterdir()) == []


def test_missing_local_source(tmp_path):
    missing = tmp_path / "nope.zip"
    with pytest.raises(SourceNotFoundError, match=re.escape(str(missing))) as caught:
        fast(f"file://{missing}", tmp_path / "out.zip")
    assert isinstance(caught.value, DataFormatError) and isinstance(caught.value, FileNotFoundError)


def test_http_download_with_progress_bar(serve, tmp_path, capsys):
    url, server = serve()
    dest = fetch(url, tmp_path / "data.zip", PAYLOAD_SHA, timeout=5, progress=True)
    assert dest.read_bytes() == PAYLOAD
    assert "data.zip" in capsys.readouterr().err
    assert server.requests == [None]
    assert not (tmp_path / "data.zip.part").exists()


def test_http_dropped_connection_resumes_with_range(serve, tmp_path):
    url, server = serve(drop_first=True)
    dest = fast(url, tmp_path / "data.zip", PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [None, f"bytes={len(PAYLOAD) // 2}-"]


def test_http_resumes_existing_part(serve, tmp_path):
    url, server = serve()
    (tmp_path / "data.zip.part").write_bytes(PAYLOAD[:1000])
    assert fast(url, tmp_path / "data.zip", PAYLOAD_SHA).read_bytes() == PAYLOAD
    assert server.requests == ["bytes=1000-"]


def test_http_server_ignoring_range_restarts_from_zero(serve, tmp_path):
    url, _ = serve(ignore_range=True)
    (tmp_path / "data.zip.part").write_bytes(b"stale bytes")
    assert fast(url, tmp_path / "data.zip", PAYLOAD_SHA).read_bytes() == PAYLOAD


def test_http_416_on_complete_part_just_verifies(serve, tmp_path):
    url, server = serve()
    (tmp_path / "data.zip.part").write_bytes(PAYLOAD)
    assert fast(url, tmp_path / "data.zip", PAYLOAD_SHA).read_bytes() == PAYLOAD
    assert server.requests == [f"bytes={len(PAYLOAD)}-"]


def test_http_5xx_is_retried(serve, tmp_path):
    url, server = serve(fail_with=503)
    assert fast(url, tmp_path / "data.zip", PAYLOAD_SHA).read_bytes() == PAYLOAD
    assert len(server.requests) == 2


def test_http_checksum_mismatch_removes_part(serve, tmp_path):
    url, _ = serve()
    with pytest.raises(ChecksumError, match=WRONG_SHA):
        fast(url, tmp_path / "data.zip", WRONG_SHA)
    assert list(tmp_path.iterdir()) == []


def test_http_gives_up_after_retries(tmp_path):
    # A port that was just free: the connection is refused at once, no internet involved.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DownloadError, match=r"after 2 attempts"):
        fetch(f"http://127.0.0.1:{port}/x.zip", tmp_path / "x.zip", retries=1, backoff=0.0, timeout=2, progress=False)


def test_http_404_is_not_retried(serve, tmp_path):
    url, server = serve(fail_with=404, fail_times=99)
    with pytest.raises(DownloadError, match="HTTP 404"):
        fast(url, tmp_path / "data.zip")
    assert len(server.requests) == 1


def test_link_verified_links_a_local_copy_without_copying(tmp_path):
    from nucleiflow.download import link_verified, sha256sum

    source = tmp_path / "held" / "fold_1.zip"
    source.parent.mkdir()
    source.write_bytes(b"pannuke" * 1000)
    dest = link_verified(source, tmp_path / "resources" / "fold_1.zip", sha256sum(source))
    assert dest.is_symlink() and dest.resolve() == source.resolve()
    with pytest.raises(ChecksumError):
        link_verified(source, tmp_path / "other.zip", "0" * 64)
    assert not (tmp_path / "other.zip").exists()


def test_write_checksum_writes_what_sha256sum_checks(tmp_path):
    from nucleiflow.download import sha256sum, write_checksum

    release = tmp_path / "stage1_train.zip"
    release.write_bytes(b"dsb2018" * 1000)
    checksum = tmp_path / "checksums" / "stage1_train.zip.sha256"
    assert write_checksum(release, checksum) == sha256sum(release)
    assert checksum.read_text() == f"{sha256sum(release)}  stage1_train.zip\n"
    if shutil.which("sha256sum"):  # coreutils: the format users check a download with
        checked = subprocess.run(["sha256sum", "-c", str(checksum)], cwd=tmp_path, capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    write_checksum(release, checksum, sha256=sha256sum(release).upper())  # verified already: not read again
    assert checksum.read_text().split()[0] == sha256sum(release)


def _refused_url() -> str:
    """A port that was just free: the connection is refused at once, no internet involved."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/x.zip"


def test_retries_back_off_exponentially_and_the_total_wait_is_bounded(tmp_path, monkeypatch):
    """fetch as scripts/download.py calls it (the default retries and back-off), with the pauses recorded."""
    waits = []
    monkeypatch.setattr("nucleiflow.download.time.sleep", waits.append)
    with pytest.raises(DownloadError, match=r"after 6 attempts"):
        fetch(_refused_url(), tmp_path / "x.zip", timeout=2, progress=False)
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0]  # a pause after every failed attempt but the last
    assert sum(waits) <= 60  # a dead server costs at most a minute of waiting


def test_a_transient_error_waits_once_before_the_retry(serve, tmp_path, monkeypatch):
    waits = []
    monkeypatch.setattr("nucleiflow.download.time.sleep", waits.append)
    url, server = serve(fail_with=503, fail_times=2)
    assert fetch(url, tmp_path / "data.zip", PAYLOAD_SHA, backoff=0.5, progress=False).read_bytes() == PAYLOAD
    assert waits == [0.5, 1.0] and len(server.requests) == 3
