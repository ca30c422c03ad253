"""Decoding uploads: formats sniffed and restricted, pixel limits from the header, EXIF rotation."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dcnn.data.images import open_image
from dcnn.serve.uploads import ACCEPTED_FORMATS, UploadError, open_upload
from tests.serve.conftest import encoded, png_declaring


def test_every_accepted_format_opens_and_others_are_refused():
    image = Image.effect_mandelbrot((24, 16), (-2, -1, 1, 1), 50).convert("RGB")
    for fmt in ACCEPTED_FORMATS:
        opened = open_upload(encoded(image, fmt))
        assert (opened.format, opened.size) == (fmt, (24, 16))
    for fmt in ("TIFF", "PPM", "ICO"):  # Pillow reads them; a public endpoint does not open them
        with pytest.raises(UploadError, match="not a JPEG, PNG, WEBP, GIF, BMP image") as refused:
            open_upload(encoded(image, fmt))
        assert refused.value.status == 415


def test_pixel_limits_are_checked_from_the_header():
    with pytest.raises(UploadError, match="4,000,000 pixels, over this server's limit of 3,999,999") as ours:
        open_upload(png_declaring(2000, 2000), max_pixels=3_999_999)
    assert ours.value.status == 413
    # Above Pillow's own limit (twice Image.MAX_IMAGE_PIXELS) Pillow refuses first, even with ours raised.
    with pytest.raises(UploadError, match="decompression bomb") as pillows:
        open_upload(png_declaring(20_000, 20_000), max_pixels=10**12)
    assert pillows.value.status == 413


def test_exif_orientation_is_applied_as_for_files(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90° clockwise
    photo = Image.linear_gradient("L").resize((40, 20)).convert("RGB")
    data = encoded(photo, "JPEG", exif=exif.tobytes())
    (tmp_path / "photo.jpg").write_bytes(data)
    uploaded, from_file = open_upload(data), open_image(tmp_path / "photo.jpg")
    assert uploaded.size == from_file.size == (20, 40)
    assert np.array_equal(np.asarray(uploaded), np.asarray(from_file))
