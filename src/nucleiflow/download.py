"""Fetch a dataset archive from a URL or a local path, verified and atomic.

http(s) downloads go to `<dest>.part` and resume from it with a `Range`
request, so a dropped connection or a killed job costs only the missing bytes.
Local sources (`file://` URLs and plain paths) are copied. Either way the
SHA-256 is checked before the file is renamed onto `dest`: `dest` exists only
when it is complete and correct.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit

from nucleiflow.errors import ChecksumError, ConfigError, DataFormatError, NucleiflowError
from nucleiflow.io import atomic_path, write_text

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
VALID_SCHEMES = ("file", "http", "https")
HTTP_SCHEMES = ("http", "https")
USER_AGENT = "nucleiflow-download/1"
# Failures of the connection itself; another attempt may succeed. (Disk errors are not among them.)
NETWORK_ERRORS = (ConnectionError, TimeoutError, ssl.SSLError, urllib.error.URLError, http.client.HTTPException)


class SourceNotFoundError(DataFormatError, FileNotFoundError):
    """A local source path does not exist (catchable as either parent class)."""


class DownloadError(NucleiflowError, OSError):
    """An http(s) download failed for good (after retries, or a 4xx answer)."""


class _RetryableError(Exception):
    """An attempt failed in a way that another attempt may fix."""


def sha256sum(path: str | os.PathLike) -> str:
    """Hex SHA-256 of the file at `path`, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_local(url: str | os.PathLike) -> Path | None:
    """Local path that `url` names, or None for an http(s) URL.

    `file://` URLs are read literally as netloc + path, so
    `file://resources/x.zip` is the relative path `resources/x.zip` and
    `file:///abs/x.zip` is `/abs/x.zip`. A string without a scheme is a path.
    """
    text = os.fspath(url)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if not scheme:
        return Path(text)
    if scheme == "file":
        return Path(unquote(parts.netloc + parts.path))
    if scheme in HTTP_SCHEMES:
        return None
    raise ConfigError(
        f"{text}: unsupported URL scheme {parts.scheme!r}; use one of: {', '.join(VALID_SCHEMES)} (or a plain path)"
    )


def fetch(
    url: str | os.PathLike,
    dest: str | os.PathLike,
    sha256: str | None = None,
    *,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 60,
    progress: bool = True,
) -> Path:
    """Put the file at `url` onto `dest`, verified against `sha256` when given.

    `retries` is the number of extra attempts after a failed http(s) attempt;
    attempt k (0-based) is followed by a pause of `backoff * 2**k` seconds.
    Returns `dest` as a Path.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    source = resolve_local(url)
    if source is None:
        _download(os.fspath(url), dest, sha256, retries=retries, backoff=backoff, timeout=timeout, progress=progress)
    else:
        _copy_local(source, dest, sha256)
    return dest


def link_verified(source: str | os.PathLike, dest: str | os.PathLike, sha256: str | None = None) -> Path:
    """Verify a file the user already holds in place and link it at `dest` (no 12 GB copies).

    The link is made under a temporary name and renamed, so `dest` never
    points at an unverified file.
    """
    source = Path(source).resolve()
    if not source.is_file():
        raise SourceNotFoundError(f"{source}: source file not found")
    _verify(source, sha256, f"{source}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.link")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(source)
    os.replace(tmp, dest)
    return dest


def write_checksum(path: str | os.PathLike, checksum: str | os.PathLike, sha256: str | None = None) -> str:
    """Write `path`'s SHA-256 to `checksum` as `sha256sum` does (`<hex>  <name>`); `sha256`: already verified."""
    digest = sha256.strip().lower() if sha256 else sha256sum(path)
    write_text(checksum, f"{digest}  {Path(path).name}\n")
    return digest


def _copy_local(source: Path, dest: Path, sha256: str | None) -> None:
    """Stream `source` into a temporary sibling of `dest`, verify, rename."""
    if not source.is_file():
        raise SourceNotFoundError(f"{source}: source file not found")
    with atomic_path(dest) as tmp:
        with open(source, "rb") as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK_SIZE)
        _verify(tmp, sha256, label=f"{dest} (copied from {source})")


def _verify(path: Path, expected: str | None, label: str) -> None:
    """Raise ChecksumError (and delete `path`) unless its SHA-256 is `expected`."""
    if expected is None:
        return
    actual = sha256sum(path)
    if actual != expected.strip().lower():
        path.unlink(missing_ok=True)
        raise ChecksumError(f"{label}: SHA-256 mismatch: expected {expected.strip()}, got {actual}")


def _download(
    url: str, dest: Path, sha256: str | None, *, retries: int, backoff: float, timeout: float, progress: bool
) -> None:
    """Download to `<dest>.part` with resume and retries, verify, rename."""
    part = dest.with_name(dest.name + ".part")
    attempts = retries + 1
    for attempt in range(attempts):
        try:
            _download_attempt(url, part, timeout=timeout, progress=progress)
            break
        except _RetryableError as exc:
            if attempt == attempts - 1:
                raise DownloadError(f"{url}: download failed after {attempts} attempts: {exc}") from exc
            delay = backoff * 2**attempt
            log.warning("%s: attempt %d/%d failed (%s); retrying in %.1f s", url, attempt + 1, attempts, exc, delay)
            time.sleep(delay)
    _verify(part, sha256, label=f"{dest} (downloaded from {url})")
    os.replace(part, dest)


def _download_attempt(url: str, part: Path, *, timeout: float, progress: bool) -> None:
    """One request: append the missing bytes to `part`, or start it afresh.

    Raises _RetryableError for failures worth another attempt.
    """
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            _handle_unsatisfiable_range(part, offset, exc.headers.get("Content-Range"))
            return
        raise _http_error(url, exc) from exc
    except NETWORK_ERRORS as exc:
        raise _RetryableError(_reason(exc)) from exc
    with response:
        offset = _resume_offset(response, part, offset)
        total = _expected_total(response, offset)
        try:
            _stream_body(response, part, offset, total, progress)
        except NETWORK_ERRORS as exc:
            raise _RetryableError(_reason(exc)) from exc
    size = part.stat().st_size
    if total is not None and size < total:
        raise _RetryableError(f"connection closed after {size} of {total} bytes")


def _open(url: str, offset: int, timeout: float):
    """urlopen `url`, asking for the bytes from `offset` on when resuming."""
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _handle_unsatisfiable_range(part: Path, offset: int, content_range: str | None) -> None:
    """416 answer to a resume: the .part is either already complete or stale."""
    total = _range_total(content_range)
    if total == offset:
        return  # the previous attempt got every byte; only the verification is left
    part.unlink()
    raise _RetryableError(f"server refused resuming at byte {offset}; restarting from zero")


def _http_error(url: str, exc: urllib.error.HTTPError) -> Exception:
    """Server errors and rate limits are retried; other statuses are final."""
    if exc.code >= 500 or exc.code == 429:
        return _RetryableError(f"HTTP {exc.code} {exc.reason}")
    return DownloadError(f"{url}: HTTP {exc.code} {exc.reason}")


def _resume_offset(response, part: Path, offset: int) -> int:
    """Byte offset the response body starts at (0 when the server ignored Range)."""
    if not offset:
        return 0
    if response.status != 206:
        log.info("server ignored the Range request; restarting from zero")
        return 0
    start = _range_start(response.headers.get("Content-Range"))
    if start != offset:
        part.unlink()  # the body does not continue the .part; start the next attempt afresh
        raise _RetryableError(f"server resumed at byte {start} instead of {offset}")
    return offset


def _expected_total(response, offset: int) -> int | None:
    """Full file size from Content-Range or Content-Length, when the server says."""
    total = _range_total(response.headers.get("Content-Range"))
    if total is not None:
        return total
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)")


def _range_start(content_range: str | None) -> int | None:
    match = _CONTENT_RANGE.match(content_range or "")
    return int(match.group(1)) if match and match.group(1) else None


def _range_total(content_range: str | None) -> int | None:
    match = _CONTENT_RANGE.match(content_range or "")
    return int(match.group(2)) if match and match.group(2).isdigit() else None


def _stream_body(response, part: Path, offset: int, total: int | None, progress: bool) -> None:
    """Write the body to `part` (appending at `offset`), with a progress bar on stderr."""
    mode = "ab" if offset else "wb"
    from tqdm import tqdm  # here, not at the top: the workflow imports this module while it builds the DAG

    bar = tqdm(
        total=total,
        initial=offset,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=part.name.removesuffix(".part"),
        file=sys.stderr,
        disable=not progress,
        leave=False,
    )
    with bar, open(part, mode) as out:
        while chunk := response.read(CHUNK_SIZE):
            out.write(chunk)
            bar.update(len(chunk))


def _reason(exc: BaseException) -> str:
    """Short, one-line description of a network error."""
    reason = getattr(exc, "reason", None) or exc
    return f"{type(exc).__name__}: {reason}"
