"""PNG encoding of stimuli at native resolution. Pure Pillow/numpy."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# Stimuli are tiny; fast compression costs a few bytes and saves most of the time.
PNG_COMPRESS_LEVEL = 1


def to_pil(image: np.ndarray) -> Image.Image:
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return Image.fromarray(np.ascontiguousarray(image))


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        arr = np.asarray(img)
    return arr[:, :, None] if arr.ndim == 2 else arr
