"""Read IDX files, the format of MNIST and Fashion-MNIST, gzipped or raw.

The format (LeCun, Cortes and Burges, "THE MNIST DATABASE", file formats section): a 4-byte magic
number ``0x00 0x00 <type code> <number of dimensions>``, then each dimension as a big-endian
unsigned 32-bit integer, then the data in C order, big-endian. MNIST images are
``0x00000803`` (unsigned bytes, 3 dimensions: count, rows, columns), labels ``0x00000801``.

Files are read whole: a file shorter than its header promises (truncated) or longer (trailing
garbage) is rejected with a :class:`~dcnn.errors.DcnnError` naming the file and both sizes.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from dcnn.errors import DcnnError

#: IDX type code (third magic byte) → (element type, name in the MNIST file-format section).
IDX_TYPES: dict[int, tuple[np.dtype, str]] = {
    0x08: (np.dtype(np.uint8), "unsigned byte"),
    0x09: (np.dtype(np.int8), "signed byte"),
    0x0B: (np.dtype(">i2"), "short"),
    0x0C: (np.dtype(">i4"), "int"),
    0x0D: (np.dtype(">f4"), "float"),
    0x0E: (np.dtype(">f8"), "double"),
}

GZIP_MAGIC = b"\x1f\x8b"
_MAGIC_BYTES = 4
_DIM_BYTES = 4
_ANY_MAGIC = "an IDX magic number 0x0000TTDD (TT a type code in 08 09 0b 0c 0d 0e, DD dimensions)"


def idx_magic(dtype_code: int, ndim: int) -> int:
    """The magic number of an IDX file holding `ndim`-dimensional data of type `dtype_code`."""
    return (dtype_code << 8) | ndim


def describe_magic(magic: int) -> str:
    """A magic number with its meaning, e.g. ``0x00000803 (unsigned byte, 3 dimensions)``."""
    idx_type = IDX_TYPES.get((magic >> 8) & 0xFF)
    if magic >> 16 or idx_type is None:
        return f"0x{magic:08x} (not an IDX magic number)"
    return f"0x{magic:08x} ({idx_type[1]}, {magic & 0xFF} dimensions)"


def gunzip_if_compressed(data: bytes, source: str | Path | None = None) -> bytes:
    """`data` decompressed when it is gzipped (detected by the gzip magic bytes, not a file name).

    Corrupt gzip data raises DcnnError; with `source` (the file's name) the message names it and the fix.
    """
    if not data.startswith(GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        problem = f"corrupt gzip data ({err})"
        if source is None:
            raise DcnnError(problem) from None
        raise DcnnError(
            f"{source}: {problem}: the file is truncated or damaged. Delete it and download it again."
        ) from None


def read_file_bytes(path: str | Path) -> bytes:
    """The bytes of the file at `path` (a DcnnError if it cannot be read)."""
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise DcnnError(f"cannot read {path}: {err.strerror or err}.") from None


def parse_idx(data: bytes, source: str | Path = "<bytes>", magic: int | None = None) -> np.ndarray:
    """Decode the bytes of an (uncompressed) IDX file into an array in native byte order.

    `source` names the file in error messages. With `magic`, the file must have exactly that magic
    number (e.g. ``0x00000803`` for MNIST images), else any valid IDX magic number is accepted.
    """
    if len(data) < _MAGIC_BYTES:
        raise DcnnError(
            f"{source}: not an IDX file: {len(data)} bytes, shorter than the 4-byte magic number. "
            "The file is truncated or empty; delete it and download it again."
        )
    (found,) = struct.unpack(">I", data[:_MAGIC_BYTES])
    idx_type = IDX_TYPES.get((found >> 8) & 0xFF)
    if (magic is not None and found != magic) or found >> 16 or idx_type is None:
        expected = describe_magic(magic) if magic is not None else _ANY_MAGIC
        raise DcnnError(
            f"{source}: wrong magic number: expected {expected}, found {describe_magic(found)}. "
            "This is not the expected IDX file; replace it with the canonical file."
        )
    dtype, type_name = idx_type
    ndim = found & 0xFF
    header_bytes = _MAGIC_BYTES + _DIM_BYTES * ndim
    if len(data) < header_bytes:
        raise DcnnError(
            f"{source}: truncated: the header of a {ndim}-dimensional IDX file takes {header_bytes} bytes, "
            f"the file has {len(data)}. Delete it and download it again."
        )
    shape = struct.unpack(f">{ndim}I", data[_MAGIC_BYTES:header_bytes])
    promised = header_bytes + math.prod(shape) * dtype.itemsize
    if len(data) != promised:
        problem = "truncated" if len(data) < promised else "trailing garbage"
        raise DcnnError(
            f"{source}: {problem}: the header promises shape {shape} of {type_name}, "
            f"{promised} bytes in all, found {len(data)} bytes. Delete it and download it again."
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_bytes).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a writable copy in native byte order


def read_idx(path: str | Path, magic: int | None = None) -> np.ndarray:
    """Read an IDX file, gzipped or raw, as a numpy array (MNIST: uint8). See :func:`parse_idx`."""
    return parse_idx(gunzip_if_compressed(read_file_bytes(path), path), source=path, magic=magic)
