"""The example's two processors (DESIGN §14), run by its ``flask obitox worker``:

- ``thumbnail``: images become a 256 px JPEG beside the upload (Pillow); the page
  shows it;
- ``sha256``: every file's SHA-256, read as a stream; the page shows it beside the file.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

from flask_obitox import ObitoX

#: The longest side of a thumbnail, in pixels.
THUMBNAIL_SIZE = 256
#: Images larger than this are not read into memory for a thumbnail.
MAX_THUMBNAIL_SOURCE = 64 * 1024 * 1024
#: What a stream is read in.
CHUNK = 1024 * 1024


def sha256(ctx: Any) -> dict[str, str]:
    """The SHA-256 of the stored object, streamed: any size, constant memory."""
    digest = hashlib.sha256()
    stream = ctx.open()
    try:
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            digest.update(chunk)
    finally:
        stream.close()
    return {"sha256": digest.hexdigest()}


def thumbnail(ctx: Any) -> dict[str, Any]:
    """A JPEG of at most :data:`THUMBNAIL_SIZE` px a side, saved as ``thumb.jpg``."""
    from PIL import Image  # the [demo] extra; the extension itself needs no Pillow

    if ctx.upload["size"] > MAX_THUMBNAIL_SOURCE:
        return {"skipped": f"larger than {MAX_THUMBNAIL_SOURCE} bytes"}
    stream = ctx.open()
    try:
        # Pillow seeks; the object stream does not.
        data = io.BytesIO(stream.read())
    finally:
        stream.close()
    with Image.open(data) as image:
        image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        width, height = image.size
        out = io.BytesIO()
        image.convert("RGB").save(out, "JPEG", quality=85)
    key = ctx.save("thumb.jpg", out.getvalue(), "image/jpeg")
    return {"thumbnail": key, "width": width, "height": height}


def register_processors(obitox: ObitoX) -> None:
    obitox.processor("thumbnail", content_types=["image/*"], timeout=60)(thumbnail)
    obitox.processor("sha256", timeout=600)(sha256)
