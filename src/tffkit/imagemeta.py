"""Per-image metadata recorded beside the scores: file format, size, JPEG quality estimate, bytes.

Format and size are known shortcuts of these benchmarks (reals are JPEG photographs, fakes PNG at one size), so
``scores.csv`` carries them. The JPEG quality is estimated from the luminance quantisation table: the IJG quality
whose table (as libjpeg writes it through PIL) is nearest, and ``jpeg_table`` says whether it matched exactly
(``ijg``) or only approximately (``custom``, e.g. a camera's own tables).
"""

from __future__ import annotations

import functools
import io
import os

import numpy as np
from PIL import Image

META_COLUMNS = ("format", "width", "height", "jpeg_quality", "jpeg_table", "file_bytes")


@functools.lru_cache(maxsize=1)
def _ijg_tables() -> np.ndarray:
    """(100, 64) luminance tables of IJG qualities 1..100, in the order PIL reports them."""
    tables = []
    img = Image.new("RGB", (8, 8))
    for q in range(1, 101):
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=q)
        buf.seek(0)
        with Image.open(buf) as j:
            tables.append(list(j.quantization[0]))
    return np.asarray(tables, dtype=np.float64)


def estimate_jpeg_quality(quantization: dict) -> tuple[int | None, str]:
    """(quality 1..100, ``ijg`` when the table is exactly IJG's at that quality else ``custom``) from PIL's
    ``Image.quantization``; (None, '') without a luminance table."""
    table = quantization.get(0) if quantization else None
    if table is None or len(table) != 64:
        return None, ""
    t = np.asarray(list(table), dtype=np.float64)
    ref = _ijg_tables()
    dist = np.abs(np.log(ref) - np.log(np.maximum(t, 1))).sum(axis=1)
    best = int(np.argmin(dist))
    return best + 1, "ijg" if np.array_equal(ref[best], t) else "custom"


def image_metadata(img: Image.Image, path: str | None = None) -> dict:
    """Format, size, JPEG quality estimate and file size of an opened (not yet converted) image."""
    quality, kind = (estimate_jpeg_quality(getattr(img, "quantization", None) or {})
                     if img.format in ("JPEG", "MPO") else (None, ""))
    try:
        size = os.path.getsize(path) if path is not None else None
    except OSError:
        size = None
    return {"format": img.format or "", "width": img.size[0], "height": img.size[1], "jpeg_quality": quality,
            "jpeg_table": kind, "file_bytes": size}
