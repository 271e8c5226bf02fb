"""Reading images as people see them, and PNG encoding of stimuli. Pure Pillow/numpy.

`read_image` is the one way the project opens an image file. It turns every
image into uint8 pixels, (H, W, 1) grey or (H, W, 3) RGB, by this rule:

- only PNG, JPEG, BMP, GIF, WebP and TIFF files are opened (IMAGE_FORMATS);
- the EXIF orientation is applied first (a phone photo stored sideways is read
  upright, as every viewer shows it); animated images give their first frame;
- 1 and L are grey (1 becomes 0/255); RGB, RGBX, YCbCr, CMYK, LAB and HSV become
  RGB through Pillow's conversion; P becomes RGB (RGBA when it has transparency);
- images with alpha (LA, La, PA, RGBA, RGBa, P with transparency) are composited
  over white, the page background they are shown on; LA stays grey;
- 16-bit grey (I;16, I;16L, I;16B, I;16N, and I, which is how Pillow opens 16-bit
  PNGs) is scaled by 255/65535 and rounded, so the full 16-bit range maps onto
  the full 8-bit range; values outside 0..65535 are refused;
- 32-bit float grey (F) must lie in [0, 1] and is scaled by 255 and rounded;
- anything else (or a file Pillow cannot decode) is refused with ImageError.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Stimuli are tiny; fast compression costs a few bytes and saves most of the time.
PNG_COMPRESS_LEVEL = 1

_GREY_MODES = {"1", "L"}
_COLOUR_MODES = {"RGB", "RGBX", "YCbCr", "CMYK", "LAB", "HSV"}
_ALPHA_MODES = {"LA", "La", "PA", "RGBA", "RGBa"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_SIXTEEN_BIT_MAX = 65535.0
# The formats people bring; the other decoders Pillow ships are never tried.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")


class ImageError(ValueError):
    """The file is not an image this project can read; the message says why."""


def read_image(source: str | Path | bytes | BinaryIO, max_pixels: int | None = None) -> np.ndarray:
    """Decode one image as it displays: (H, W, 1) or (H, W, 3) uint8 (rule in the module doc).

    `max_pixels` bounds width * height, checked from the header before any pixel
    is decoded, so a small file claiming a huge canvas costs nothing.
    Raises ImageError for unreadable files, images over the bound and unsupported modes.
    """
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check warns, then raises; our bound below is the one we keep.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source, formats=IMAGE_FORMATS) as img:
                width, height = img.size
                if max_pixels is not None and width * height > max_pixels:
                    raise ImageError(
                        f"the image is {width}x{height}; at most {max_pixels} pixels are "
                        "allowed (HILLMIX_MAX_IMAGE_PIXELS)"
                    )
                upright = ImageOps.exif_transpose(img)
                return _to_uint8(upright)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError("the image claims more pixels than any image we accept") from None
    except UnidentifiedImageError:
        raise ImageError(f"not a readable image (one of {', '.join(IMAGE_FORMATS)})") from None
    except Exception as exc:  # noqa: BLE001 - damaged data makes decoders raise all kinds
        raise ImageError(f"not a readable image ({type(exc).__name__}: {exc})") from None


def _to_uint8(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in _ALPHA_MODES:
        grey = mode in ("LA", "La")
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba).convert("L" if grey else "RGB")
        mode = img.mode
    if mode in _GREY_MODES:
        arr = np.asarray(img.convert("L"), dtype=np.uint8)
    elif mode in _COLOUR_MODES:
        try:
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
        except ValueError as exc:
            raise ImageError(f"cannot convert {mode} pixels to RGB ({exc})") from None
    elif mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(img).astype(np.float64)
        if values.size and (values.min() < 0 or values.max() > _SIXTEEN_BIT_MAX):
            raise ImageError(f"{mode} pixel values must lie in 0..65535")
        arr = np.rint(values * (255.0 / _SIXTEEN_BIT_MAX)).astype(np.uint8)
    elif mode == "F":
        values = np.asarray(img, dtype=np.float64)
        if not np.all(np.isfinite(values)) or values.min() < 0.0 or values.max() > 1.0:
            raise ImageError("floating-point images must hold values in [0, 1]")
        arr = np.rint(values * 255.0).astype(np.uint8)
    else:
        raise ImageError(f"images of mode {mode} are not supported")
    return arr[:, :, None] if arr.ndim == 2 else arr


def to_pil(image: np.ndarray) -> Image.Image:
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return Image.fromarray(np.ascontiguousarray(image))


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def write_pngs(images: np.ndarray, paths: list[str], file_mode: int | None = None) -> list[int]:
    """Encode each of (N, H, W, C) uint8 `images` as encode_png does and write it to the
    matching path (its folder must exist), replacing any file there; returns the byte
    size of each. Runs in the stimulus generator's worker processes (datasets.services),
    so it takes plain arrays and paths. Raises OSError when a file cannot be written."""
    sizes = []
    for image, path in zip(images, paths, strict=True):
        data = encode_png(image)
        with open(path, "wb") as handle:
            handle.write(data)
        if file_mode is not None:
            os.chmod(path, file_mode)
        sizes.append(len(data))
    return sizes


def decode_png(data: bytes) -> np.ndarray:
    """A stored stimulus's pixels, (H, W, 1) or (H, W, 3) uint8, read by `read_image`."""
    return read_image(data)
