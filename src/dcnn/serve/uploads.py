"""Uploaded bytes to an upright PIL image, refusing what a public endpoint must not decode.

First the request body's size is limited (:class:`BodyLimit`): a declared Content-Length over the
limit is refused before anything is read, and otherwise the body is counted chunk by chunk as it
arrives and reading stops at the first chunk past the limit, so neither memory nor the disk
spool of the multipart parser ever holds more than the limit. Then (:func:`open_upload`):

- the format is sniffed from the content by Pillow, never taken from the file name or the
  declared content type, and only the formats a browser uploads as photos are opened (Pillow's
  other plugins, some of which call external programs, never see a request);
- the pixel count is read from the header and checked before any pixel is decoded, so a
  decompression bomb (a small file declaring a huge image) never reaches memory; Pillow's own
  bomb check stays in force behind it;
- a truncated or corrupt file fails while decoding, and becomes a 400.

The image is then decoded fully and turned upright by its EXIF orientation, as
:func:`dcnn.data.images.open_image` does for files, so the service sees the same pixels as
`dcnn predict`.
"""

from __future__ import annotations

import io

from PIL import Image, ImageOps, UnidentifiedImageError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dcnn.errors import DcnnError

# Pillow format names of the photos a browser uploads.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
# The largest request body accepted by default: a photo of up to 20 MiB.
DEFAULT_MAX_UPLOAD_BYTES = 20 * 2**20
# A 50-megapixel photo (8660×5773) is the largest decoded by default: 150 MB of RGB.
DEFAULT_MAX_PIXELS = 50_000_000


class UploadError(DcnnError):
    """An upload the service refuses: the message, and the HTTP status it is answered with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def open_upload(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode uploaded bytes into an upright image; raises UploadError (400, 413 or 415)."""
    if not data:
        raise UploadError(400, "the upload is empty (0 bytes); send an image file.")
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        width, height = image.size
        if width * height > max_pixels:
            raise UploadError(413, f"the image has {width}×{height} = {width * height:,} pixels, over this "
                                   f"server's limit of {max_pixels:,} (a possible decompression bomb); send a "
                                   "smaller image.")
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
    except UploadError:
        raise
    except UnidentifiedImageError:
        raise UploadError(415, f"the upload is not a {', '.join(ACCEPTED_FORMATS)} image (its content was checked, "
                               "not its name or type); send a photo in one of these formats.") from None
    except Image.DecompressionBombError as err:  # Pillow's own limit, behind ours
        raise UploadError(413, f"the image is too large to decode safely (a possible decompression bomb): "
                               f"{err}") from None
    except Exception as err:  # whatever a decoder raises on a malformed file (OSError, SyntaxError, ...)
        raise UploadError(400, f"the image is truncated or corrupt ({type(err).__name__}: {err}); send the "
                               "whole file.") from None
    return image


class BodyTooLarge(HTTPException):
    """A request body over the limit (413), raised while the body is being read."""

    def __init__(self, max_bytes: int):
        super().__init__(413, f"the request is over this server's upload limit of {max_bytes:,} bytes; send a "
                              "smaller image.")


class BodyLimit:
    """ASGI middleware refusing request bodies over `max_bytes` with 413 and a JSON error.

    A Content-Length over the limit is answered at once, unread; any other body is counted as the
    application reads it, and the read that passes the limit raises :class:`BodyTooLarge` (the
    application's HTTPException handler answers it), so no more of the body is read.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            too_large = BodyTooLarge(self.max_bytes)
            await JSONResponse({"error": too_large.detail}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)
