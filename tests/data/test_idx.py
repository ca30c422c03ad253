"""IDX parsing against hand-made files of known bytes, and every malformed-file error."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from dcnn.data.idx import describe_magic, idx_magic, parse_idx, read_idx
from dcnn.errors import DcnnError

# Magic 0x00000803 (unsigned byte, 3 dims), dims 2 x 2 x 3 as big-endian uint32, then 12 data bytes.
IMAGES_2x2x3 = (
    b"\x00\x00\x08\x03"
    b"\x00\x00\x00\x02" b"\x00\x00\x00\x02" b"\x00\x00\x00\x03"
    b"\x00\x01\x02" b"\x03\x04\x05"
    b"\x06\x07\x08" b"\xfd\xfe\xff"
)
EXPECTED_2x2x3 = np.array([[[0, 1, 2], [3, 4, 5]], [[6, 7, 8], [253, 254, 255]]], dtype=np.uint8)
# Magic 0x00000b01: big-endian signed shorts, 1 dim of 3: 1, -2, 258.
SHORTS = b"\x00\x00\x0b\x01" b"\x00\x00\x00\x03" b"\x00\x01" b"\xff\xfe" b"\x01\x02"


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_reads_hand_made_file(tmp_path: Path, compress: bool) -> None:
    data = gzip.compress(IMAGES_2x2x3, mtime=0) if compress else IMAGES_2x2x3
    array = read_idx(write(tmp_path / "images-idx3-ubyte", data), magic=0x00000803)
    assert array.dtype == np.uint8
    np.testing.assert_array_equal(array, EXPECTED_2x2x3)
    array[0, 0, 0] = 9  # a writable array, independent of the file's bytes


def test_reads_multibyte_big_endian_in_native_order() -> None:
    array = parse_idx(SHORTS)
    assert array.dtype == np.int16 and array.dtype.isnative
    assert array.tolist() == [1, -2, 258]


def test_magic_numbers() -> None:
    assert idx_magic(0x08, 3) == 0x00000803
    assert describe_magic(0x00000801) == "0x00000801 (unsigned byte, 1 dimensions)"
    assert describe_magic(0x89504E47) == "0x89504e47 (not an IDX magic number)"


def test_wrong_magic_names_file_expected_and_found(tmp_path: Path) -> None:
    labels = write(tmp_path / "labels", b"\x00\x00\x08\x01\x00\x00\x00\x02\x05\x07")
    assert read_idx(labels).tolist() == [5, 7]
    with pytest.raises(DcnnError) as err:
        read_idx(labels, magic=0x00000803)
    message = str(err.value)
    assert str(labels) in message
    assert "expected 0x00000803 (unsigned byte, 3 dimensions)" in message
    assert "found 0x00000801 (unsigned byte, 1 dimensions)" in message


def test_not_idx_at_all(tmp_path: Path) -> None:
    png = write(tmp_path / "digit.png", b"\x89PNG\r\n\x1a\n" + bytes(20))
    with pytest.raises(DcnnError, match=r"wrong magic number.*found 0x89504e47 \(not an IDX magic number\)"):
        read_idx(png)


def test_truncated_data_names_promised_and_found_sizes(tmp_path: Path) -> None:
    path = write(tmp_path / "cut", IMAGES_2x2x3[:-1])
    with pytest.raises(DcnnError) as err:
        read_idx(path)
    message = str(err.value)
    assert str(path) in message and "truncated" in message
    assert "(2, 2, 3)" in message and "28 bytes in all, found 27 bytes" in message


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"\x00\x00", "shorter than the 4-byte magic number"),
        (IMAGES_2x2x3[:10], "the header of a 3-dimensional IDX file takes 16 bytes, the file has 10"),
    ],
    ids=["no-magic", "cut-header"],
)
def test_truncated_header(data: bytes, needle: str) -> None:
    with pytest.raises(DcnnError, match=needle):
        parse_idx(data, source="f")


def test_trailing_garbage(tmp_path: Path) -> None:
    path = write(tmp_path / "long", IMAGES_2x2x3 + b"junk")
    with pytest.raises(DcnnError, match=r"trailing garbage: .*28 bytes in all, found 32 bytes"):
        read_idx(path)


def test_corrupt_gzip(tmp_path: Path) -> None:
    compressed = gzip.compress(IMAGES_2x2x3 * 50, mtime=0)
    path = write(tmp_path / "cut.gz", compressed[: len(compressed) // 2])
    with pytest.raises(DcnnError, match=r"cut\.gz: corrupt gzip data .*Delete it"):
        read_idx(path)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(DcnnError, match="cannot read"):
        read_idx(tmp_path / "absent")
