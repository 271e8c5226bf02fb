"""Image sources: read a dataset into memory as uint8 arrays. Pure numpy/Pillow.

Every reader returns an ImageArrays or raises SourceError with a message a
researcher can act on; none of them writes anything. Every reader keeps within
ImportLimits (images, pixels per image, bytes decompressed) and never follows a
symbolic link: archives are streamed with a running byte budget, and a link in an
archive or a folder is refused.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import pickle
import tarfile
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .imaging import ImageError, read_image

CIFAR10_CLASSES = (
    "Airplane",
    "Automobile",
    "Bird",
    "Cat",
    "Deer",
    "Dog",
    "Frog",
    "Horse",
    "Ship",
    "Truck",
)
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_SPLITS = {
    "train": [f"data_batch_{i}" for i in range(1, 6)],
    "test": ["test_batch"],
}
DIGIT_NAMES = ("Zero", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class SourceError(ValueError):
    """The source is not what it claims to be; the message says why."""


@dataclass(frozen=True)
class ImageArrays:
    images: np.ndarray  # (N, H, W, C) uint8, C in {1, 3}
    labels: np.ndarray  # (N,) int64 index into class_names
    ids: np.ndarray  # (N,) int64 id in the source dataset
    class_names: tuple[str, ...]
    # "cifar10-test" when ids index the CIFAR-10 test set (CIFAR-10H then applies).
    id_space: str = ""

    def __post_init__(self) -> None:
        n = len(self.images)
        if n == 0:
            raise SourceError("the source holds no images")
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise SourceError("images must be uint8 with shape (N, H, W, C)")
        if self.images.shape[3] not in (1, 3):
            raise SourceError(f"images need 1 or 3 channels, not {self.images.shape[3]}")
        if len(self.labels) != n or len(self.ids) != n:
            raise SourceError("images, labels and ids must have the same length")
        if len(np.unique(self.ids)) != n:
            raise SourceError("image ids must be unique")
        if self.labels.min() < 0 or self.labels.max() >= len(self.class_names):
            raise SourceError("a label points past the list of class names")
        for name in self.class_names:
            if not name or "_" in name or "/" in name:
                raise SourceError(f"class name {name!r} must be non-empty, without '_' or '/'")


@dataclass(frozen=True)
class ImportLimits:
    """Bounds on one import (settings HILLMIX_LIMITS); a source above one is refused."""

    max_images: int = 100_000
    max_image_pixels: int = 1024 * 1024  # height * width of one image
    max_bytes: int = 512 * 1024 * 1024  # decompressed bytes read, and the image array kept

    def check_arrays(self, images: np.ndarray) -> None:
        """Raise SourceError if an (N, H, W, C) array is over a bound."""
        if images.ndim >= 3:
            self.check_count(images.shape[0])
            self.check_pixels(images.shape[1], images.shape[2])
        if images.nbytes > self.max_bytes:
            raise SourceError(self.bytes_message("the images"))

    def check_count(self, count: int) -> None:
        if count > self.max_images:
            raise SourceError(
                f"the source holds {count} images; at most {self.max_images} are allowed "
                "(HILLMIX_MAX_IMAGES)"
            )

    def check_pixels(self, height: int, width: int) -> None:
        if height * width > self.max_image_pixels:
            raise SourceError(
                f"images of {height}x{width} are too large; at most {self.max_image_pixels} "
                "pixels per image are allowed (HILLMIX_MAX_IMAGE_PIXELS)"
            )

    def bytes_message(self, what: str) -> str:
        return (
            f"{what} take more than {self.max_bytes} bytes once decompressed "
            "(HILLMIX_MAX_IMPORT_BYTES)"
        )


DEFAULT_LIMITS = ImportLimits()


class _BudgetReader(io.RawIOBase):
    """A read-only stream that fails once more than `budget` bytes have come through it."""

    def __init__(self, raw: BinaryIO, limits: ImportLimits, what: str) -> None:
        self.raw, self.left, self.limits, self.what = raw, limits.max_bytes, limits, what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # noqa: ANN001 - io protocol
        data = self.raw.read(len(buffer))
        self.left -= len(data)
        if self.left < 0:
            raise SourceError(self.limits.bytes_message(self.what))
        buffer[: len(data)] = data
        return len(data)


def _open_decompressed(path: Path) -> BinaryIO:
    """The file's bytes after gzip, bzip2 or xz decompression (by magic number)."""
    with open(path, "rb") as handle:
        magic = handle.read(6)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.open(path, "rb")
    if magic.startswith(b"BZh"):
        return bz2.open(path, "rb")
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.open(path, "rb")
    return open(path, "rb")


# What a damaged archive raises while it is streamed.
_ARCHIVE_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batches (dicts of numpy arrays) and nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # protocol-2 pickles written by Python 3 encode bytes this way
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle protocol
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle(data: bytes, member: str) -> dict:
    try:
        return _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:
        raise SourceError(f"{member} is not a CIFAR-10 batch: {exc}") from None


def _cifar_members(path: Path, wanted: set[str], limits: ImportLimits) -> dict[str, bytes]:
    """Member name -> bytes for an archive or an extracted cifar-10-batches-py folder.

    The archive is streamed: members are read in order, every byte decompressed
    counts against limits.max_bytes, and link members are refused.
    """
    found: dict[str, bytes] = {}
    if path.is_dir():
        folder = path / CIFAR10_DIR if _is_real_dir(path / CIFAR10_DIR) else path
        left = limits.max_bytes
        for name in sorted(wanted):
            file = folder / name
            if file.is_symlink():
                raise SourceError(f"{name} is a symbolic link; links are not followed")
            if file.is_file():
                left -= file.stat().st_size
                if left < 0:
                    raise SourceError(limits.bytes_message(path.name))
                found[name] = file.read_bytes()
        return found
    try:
        with _open_decompressed(path) as raw:
            stream = io.BufferedReader(_BudgetReader(raw, limits, path.name))
            with tarfile.open(fileobj=stream, mode="r|") as archive:
                for member in archive:
                    name = Path(member.name).name
                    if name not in wanted:
                        continue
                    if member.issym() or member.islnk():
                        raise SourceError(f"{member.name} is a link; links are not followed")
                    if member.isfile():
                        if member.size > limits.max_bytes:
                            raise SourceError(limits.bytes_message(member.name))
                        found[name] = archive.extractfile(member).read()
    except _ARCHIVE_ERRORS as exc:
        raise SourceError(f"{path.name} is not a CIFAR-10 archive: {exc}") from None
    return found


def _is_real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def read_cifar10(
    path: str | Path, split: str = "test", limits: ImportLimits = DEFAULT_LIMITS
) -> ImageArrays:
    """CIFAR-10 in the official python-version format (archive or extracted folder).

    ids are indices into the unshuffled split, as in the H-Mix pair names.
    Raises SourceError for anything else, a truncated archive, or one over `limits`.
    """
    path = Path(path)
    if split not in CIFAR10_SPLITS:
        raise SourceError(f"split must be one of {sorted(CIFAR10_SPLITS)}, not {split!r}")
    if not path.exists():
        raise SourceError(f"{path} does not exist")
    members = _cifar_members(path, {"batches.meta", *CIFAR10_SPLITS[split]}, limits)
    missing = [m for m in ["batches.meta", *CIFAR10_SPLITS[split]] if m not in members]
    if missing:
        raise SourceError(f"{path.name} is not a CIFAR-10 archive: missing {', '.join(missing)}")
    meta = _unpickle(members["batches.meta"], "batches.meta")
    names = meta.get(b"label_names")
    if not isinstance(names, list) or len(names) != 10:
        raise SourceError("batches.meta has no list of 10 label_names")
    chunks, labels = [], []
    for member in CIFAR10_SPLITS[split]:
        batch = _unpickle(members[member], member)
        data = batch.get(b"data")
        batch_labels = batch.get(b"labels")
        if (
            not isinstance(data, np.ndarray)
            or data.ndim != 2
            or data.shape[1] != 3072
            or data.dtype != np.uint8
        ):
            raise SourceError(f"{member} has no (N, 3072) uint8 data array")
        if not isinstance(batch_labels, list) or len(batch_labels) != len(data):
            raise SourceError(f"{member} has no label for every image")
        if not all(isinstance(x, int) and 0 <= x < 10 for x in batch_labels):
            raise SourceError(f"{member} has labels outside 0-9")
        chunks.append(data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.extend(batch_labels)
    images = np.ascontiguousarray(np.concatenate(chunks))
    limits.check_arrays(images)
    if not all(isinstance(n, bytes) for n in names):
        raise SourceError("batches.meta label_names must be byte strings")
    class_names = tuple(n.decode(errors="replace").capitalize() for n in names)
    return ImageArrays(
        images=images,
        labels=np.asarray(labels, dtype=np.int64),
        ids=np.arange(len(images), dtype=np.int64),
        class_names=class_names,
        id_space="cifar10-test" if split == "test" else "",
    )


def download_cifar10(dest_dir: str | Path) -> Path:
    """Fetch the official archive (needs a network) and check its MD5."""
    dest = Path(dest_dir) / "cifar-10-python.tar.gz"
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_suffix(".part")
        urllib.request.urlretrieve(CIFAR10_URL, partial)  # noqa: S310 - fixed https URL
        partial.rename(dest)
    digest = hashlib.md5(dest.read_bytes()).hexdigest()  # noqa: S324 - checksum, not security
    if digest != CIFAR10_MD5:
        dest.unlink()
        raise SourceError("the downloaded CIFAR-10 archive failed its checksum")
    return dest


def read_image_folder(path: str | Path, limits: ImportLimits = DEFAULT_LIMITS) -> ImageArrays:
    """One sub-folder per class; ids number the images in sorted order.

    Images are read by imaging.read_image (upright, uint8 grey or RGB); if any is
    RGB, grey ones are repeated over three channels. Links are refused, never
    followed; the number of images and each image's pixels are checked before
    decoding, and the decoded total against limits.max_bytes.
    """
    root = Path(path)
    if not _is_real_dir(root):
        raise SourceError(f"{root.name} is not a folder")
    class_dirs = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if entry.is_symlink():
            raise SourceError(f"{entry.name} is a symbolic link; links are not followed")
        if entry.is_dir(follow_symlinks=False):
            class_dirs.append(Path(entry.path))
    listing: list[tuple[str, list[Path]]] = []
    for class_dir in class_dirs:
        files = []
        for entry in sorted(os.scandir(class_dir), key=lambda e: e.name):
            if Path(entry.name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if entry.is_symlink():
                raise SourceError(
                    f"{class_dir.name}/{entry.name} is a symbolic link; links are not followed"
                )
            if entry.is_file(follow_symlinks=False):
                files.append(Path(entry.path))
        if files:
            listing.append((class_dir.name, files))
    if not listing:
        raise SourceError(f"{root.name} has no class sub-folders with images in them")
    limits.check_count(sum(len(files) for _, files in listing))
    images, labels, class_names = [], [], []
    total = 0
    for label, (class_name, files) in enumerate(listing):
        class_names.append(class_name)
        for file in files:
            try:
                image = read_image(file, limits.max_image_pixels)
            except ImageError as exc:
                raise SourceError(f"{class_name}/{file.name}: {exc}") from None
            total += image.nbytes
            if total > limits.max_bytes:
                raise SourceError(limits.bytes_message("the images"))
            images.append(image)
            labels.append(label)
    sizes = {img.shape[:2] for img in images}
    if len(sizes) > 1:
        raise SourceError(
            f"all images must have the same size; found {sorted(sizes)[:3]}"
            + (" ..." if len(sizes) > 3 else "")
        )
    if any(img.shape[2] == 3 for img in images):
        images = [np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img for img in images]
    stacked = np.stack(images)
    limits.check_arrays(stacked)
    return ImageArrays(
        images=stacked,
        labels=np.asarray(labels, dtype=np.int64),
        ids=np.arange(len(images), dtype=np.int64),
        class_names=tuple(class_names),
    )


_NPZ_FIELDS = {
    "images": "u",  # numpy dtype kinds each field may have
    "class_name": "US",
    "class_names": "US",
    "ids": "iu",
    "test_index": "iu",
}


_NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def _npz_arrays(path: Path, limits: ImportLimits) -> dict[str, np.ndarray]:
    """The known fields of a .npz, each checked from its header (dtype, shape, size)
    before it is decompressed; object arrays are refused, never unpickled."""
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            members = {Path(i.filename).stem: i for i in archive.infolist()}
            wanted = {k: v for k, v in members.items() if k in _NPZ_FIELDS}
            if sum(info.file_size for info in wanted.values()) > limits.max_bytes:
                raise SourceError(limits.bytes_message(path.name))
            for field, info in wanted.items():
                with archive.open(info) as handle:
                    version = np.lib.format.read_magic(handle)
                    if version not in _NPY_HEADER_READERS:
                        raise SourceError(f"{path.name}: {field} uses .npy format {version}")
                    shape, _, dtype = _NPY_HEADER_READERS[version](handle)
                if dtype.kind not in _NPZ_FIELDS[field] or dtype.hasobject:
                    raise SourceError(
                        f"{path.name}: {field} holds {dtype} values; it must hold "
                        + (
                            "uint8 pixels"
                            if field == "images"
                            else "integers"
                            if field in ("ids", "test_index")
                            else "strings"
                        )
                    )
                if int(np.prod(shape, dtype=object)) * dtype.itemsize > info.file_size:
                    raise SourceError(f"{path.name}: {field} is damaged (shorter than its header)")
                if field == "images" and len(shape) >= 3:
                    limits.check_count(shape[0])
                    limits.check_pixels(shape[1], shape[2])
                elif field != "images" and len(shape) != 1:
                    raise SourceError(f"{path.name}: {field} must be one-dimensional")
                with archive.open(info) as handle:
                    arrays[field] = np.lib.format.read_array(handle, allow_pickle=False)
    except SourceError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as exc:
        raise SourceError(f"{path.name} is not a readable .npz file: {exc}") from None
    return arrays


def read_npz(path: str | Path, limits: ImportLimits = DEFAULT_LIMITS) -> ImageArrays:
    """A .npz with `images` (N,H,W[,C]) uint8, `class_name` (N,) and `ids` or `test_index`.

    Class order comes from an optional `class_names` array; without it, names that
    are all CIFAR-10 classes keep the CIFAR-10 order (so CIFAR-10H columns line up),
    other names are sorted. Raises SourceError for a damaged file, a field of the
    wrong type or shape (object arrays included), or one over `limits`.
    """
    path = Path(path)
    data = _npz_arrays(path, limits)
    fields = set(data)
    id_field = "ids" if "ids" in fields else "test_index"
    missing = [f for f in ("images", "class_name", id_field) if f not in fields]
    if missing:
        raise SourceError(
            f"{path.name} lacks field(s) {', '.join(missing)}; it needs images, "
            "class_name and ids (or test_index)"
        )
    images = data["images"]
    per_image = [str(n) for n in data["class_name"]]
    ids = data[id_field].astype(np.int64)
    ordered = [str(n) for n in data["class_names"]] if "class_names" in fields else None
    if images.ndim == 3:
        images = images[..., None]
    if images.dtype != np.uint8:
        raise SourceError(f"images must be uint8, not {images.dtype}")
    if images.ndim != 4:
        raise SourceError(f"images must have shape (N, H, W) or (N, H, W, C), not {images.shape}")
    limits.check_arrays(images)
    if ordered is None:
        present = set(per_image)
        ordered = list(CIFAR10_CLASSES) if present <= set(CIFAR10_CLASSES) else sorted(present)
    index = {name: i for i, name in enumerate(ordered)}
    unknown = sorted(set(per_image) - set(index))
    if unknown:
        raise SourceError(f"class_name has names missing from class_names: {unknown}")
    return ImageArrays(
        images=np.ascontiguousarray(images),
        labels=np.asarray([index[n] for n in per_image], dtype=np.int64),
        ids=ids,
        class_names=tuple(ordered),
        id_space="cifar10-test"
        if id_field == "test_index" and tuple(ordered) == CIFAR10_CLASSES
        else "",
    )


def load_demo_digits() -> ImageArrays:
    """scikit-learn's bundled 8x8 digits (1,797 images, no download), scaled to 0-255."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return ImageArrays(
        images=images,
        labels=digits.target.astype(np.int64),
        ids=np.arange(len(images), dtype=np.int64),
        class_names=DIGIT_NAMES,
    )


SOURCE_KINDS = ("cifar10", "folder", "npz", "demo")


def read_source(
    kind: str,
    path: str | Path | None = None,
    split: str = "test",
    limits: ImportLimits = DEFAULT_LIMITS,
) -> ImageArrays:
    """One entry point for every kind of source; SourceError says what is wrong."""
    if kind == "demo":
        return load_demo_digits()
    if kind not in SOURCE_KINDS:
        raise SourceError(f"unknown source kind {kind!r}; choose from {SOURCE_KINDS}")
    if not path:
        raise SourceError(f"a {kind} source needs a path")
    if kind == "cifar10":
        return read_cifar10(path, split, limits)
    if kind == "folder":
        return read_image_folder(path, limits)
    return read_npz(path, limits)
