"""Writing files all or nothing: a temporary file beside the destination, fsynced, then renamed
over it, so that a crash or an error never leaves a partial file under the final name."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from dcnn.errors import DcnnError


def fsync_file(path: Path) -> None:
    """Flush a file's (or a directory's) data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable (POSIX); platforms without directory fsync skip it."""
    with contextlib.suppress(OSError):
        fsync_file(directory)


@contextlib.contextmanager
def atomic_output(destination: str | Path) -> Iterator[IO[bytes]]:
    """Open a temporary file next to `destination` that replaces it only if the block succeeds.

    On success the data is flushed, fsynced and renamed over `destination`; on an exception the
    temporary file is removed and `destination` is left as it was. The temporary file's path is the
    handle's ``name`` (to checksum it before the rename).
    """
    destination = Path(destination)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed below, before the rename)
            dir=destination.parent, prefix=f".{destination.name}.", suffix=".part", delete=False
        )
    except OSError as err:
        raise DcnnError(
            f"cannot write {destination}: {err.strerror or err}. Choose a writable directory."
        ) from None
    temp = Path(handle.name)
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        temp.chmod(0o644)  # temporary files are created 0600; a data file is readable like any other download
        os.replace(temp, destination)
    except BaseException as err:
        temp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise DcnnError(f"cannot write {destination}: {err.strerror or err}.") from None
        raise
    fsync_directory(destination.parent)
