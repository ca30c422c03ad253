"""Download files from a list of mirrors, verified, with a progress bar and an atomic write.

A file is streamed into a temporary file next to its destination, checked (length against the
server's Content-Length, then the caller's checksum), flushed to disk and renamed into place, so the
destination never holds a partial or unverified file; on any failure the temporary file is removed
and the next mirror is tried.
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from dcnn.errors import DcnnError
from dcnn.fileio import atomic_output

#: Seconds a connection attempt or a single read may block before the mirror counts as failed.
DEFAULT_TIMEOUT = 30.0
_CHUNK_BYTES = 1 << 16
_USER_AGENT = "dcnn"  # some mirrors refuse Python's default agent


class DownloadError(DcnnError):
    """Every mirror failed; `failures` holds (url, reason) for each attempt."""

    def __init__(self, message: str, failures: Sequence[tuple[str, str]]) -> None:
        super().__init__(message)
        self.failures = list(failures)


class _MirrorFailed(Exception):
    """One mirror could not deliver the file (network error, short read, bad checksum)."""


def md5_hex(data: bytes) -> str:
    """The MD5 hex digest of `data` (an integrity check against published checksums, not security)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _progress_bar(enabled: bool | None) -> Progress:
    console = Console(stderr=True)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal if enabled is None else not enabled,
    )


def _fetch(url: str, handle: IO[bytes], timeout: float, progress: Progress, label: str) -> None:
    """Stream `url` into `handle`; raise _MirrorFailed on any network error or a short body."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        raise _MirrorFailed(f"HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise _MirrorFailed(str(err.reason)) from None
    except (OSError, ValueError, http.client.HTTPException) as err:
        raise _MirrorFailed(str(err) or type(err).__name__) from None
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        task = progress.add_task(label, total=total)
        try:
            received = _stream(response, handle, progress, task)
            if total is not None and received != total:
                raise _MirrorFailed(f"connection closed after {received} of {total} bytes")
        except _MirrorFailed:
            progress.remove_task(task)  # only the bar of the mirror that delivered stays on screen
            raise


def _stream(response: IO[bytes], handle: IO[bytes], progress: Progress, task: TaskID) -> int:
    """Copy the body of `response` into `handle`, advancing the progress bar; the bytes received."""
    received = 0
    while True:
        try:
            chunk = response.read(_CHUNK_BYTES)
        except (OSError, http.client.HTTPException) as err:
            reason = str(err) or type(err).__name__
            raise _MirrorFailed(f"connection lost after {received} bytes ({reason})") from None
        if not chunk:
            return received
        handle.write(chunk)
        received += len(chunk)
        progress.update(task, advance=len(chunk))


def download_file(
    urls: Sequence[str],
    destination: str | Path,
    verify: Callable[[bytes], object] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool | None = None,
) -> Path:
    """Download the first of `urls` that delivers a good file to `destination`, atomically.

    `verify(data)` receives the downloaded bytes and raises DcnnError, saying what is wrong, when
    they are bad (a checksum mismatch); the next mirror is then tried. `timeout` bounds the
    connection and each read, in seconds. `progress`: show a progress bar (None: only when stderr
    is a terminal). Raises DownloadError, listing every mirror's failure, when none succeeds.
    """
    destination = Path(destination)
    failures: list[tuple[str, str]] = []
    with _progress_bar(progress) as bar:
        for url in urls:
            try:
                with atomic_output(destination) as handle:
                    _fetch(url, handle, timeout, bar, label=destination.name)
                    if verify is not None:
                        handle.flush()
                        try:
                            verify(Path(handle.name).read_bytes())
                        except DcnnError as err:
                            raise _MirrorFailed(str(err)) from None
                return destination
            except _MirrorFailed as err:
                failures.append((url, str(err)))
            except OSError as err:  # network errors became _MirrorFailed: this one is local (disk full)
                raise DcnnError(f"cannot write {destination}: {err.strerror or err}.") from None
    tried = "; ".join(f"{url}: {reason}" for url, reason in failures) or "no mirror given"
    raise DownloadError(f"could not download {destination.name} ({tried})", failures)
