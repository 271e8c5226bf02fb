"""Image sources: read a dataset into memory as uint8 arrays. Pure numpy/Pillow.

Every reader returns an ImageArrays or raises SourceError with a message a
researcher can act on; none of them writes anything.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

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
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


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


def _cifar_members(path: Path) -> dict[str, bytes]:
    """Member name -> bytes for an archive or an extracted cifar-10-batches-py folder."""
    wanted = {"batches.meta", *CIFAR10_SPLITS["train"], *CIFAR10_SPLITS["test"]}
    found: dict[str, bytes] = {}
    if path.is_dir():
        folder = path / CIFAR10_DIR if (path / CIFAR10_DIR).is_dir() else path
        for name in wanted:
            if (folder / name).is_file():
                found[name] = (folder / name).read_bytes()
        return found
    try:
        with tarfile.open(path) as archive:
            for member in archive.getmembers():
                name = Path(member.name).name
                if member.isfile() and name in wanted:
                    found[name] = archive.extractfile(member).read()
    except (tarfile.TarError, OSError) as exc:
        raise SourceError(f"{path.name} is not a CIFAR-10 archive: {exc}") from None
    return found


def read_cifar10(path: str | Path, split: str = "test") -> ImageArrays:
    """CIFAR-10 in the official python-version format (archive or extracted folder).

    ids are indices into the unshuffled split, as in the H-Mix pair names.
    """
    path = Path(path)
    if split not in CIFAR10_SPLITS:
        raise SourceError(f"split must be one of {sorted(CIFAR10_SPLITS)}, not {split!r}")
    if not path.exists():
        raise SourceError(f"{path} does not exist")
    members = _cifar_members(path)
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
        if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072:
            raise SourceError(f"{member} has no (N, 3072) uint8 data array")
        if batch_labels is None or len(batch_labels) != len(data):
            raise SourceError(f"{member} has no label for every image")
        chunks.append(data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.extend(batch_labels)
    images = np.ascontiguousarray(np.concatenate(chunks))
    class_names = tuple(n.decode().capitalize() for n in names)
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


def _load_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img = img.convert("L") if img.mode in ("L", "1", "I;16", "I") else img.convert("RGB")
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise SourceError(f"{path} is not a readable image: {exc}") from None
    return arr[:, :, None] if arr.ndim == 2 else arr


def read_image_folder(path: str | Path) -> ImageArrays:
    """One sub-folder per class; ids number the images in sorted order."""
    root = Path(path)
    if not root.is_dir():
        raise SourceError(f"{root} is not a folder")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    images, labels = [], []
    class_names = []
    for class_dir in class_dirs:
        files = sorted(
            f for f in class_dir.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            continue
        label = len(class_names)
        class_names.append(class_dir.name)
        for file in files:
            images.append(_load_image(file))
            labels.append(label)
    if not images:
        raise SourceError(f"{root} has no class sub-folders with images in them")
    shapes = {img.shape for img in images}
    if len(shapes) > 1:
        raise SourceError(
            f"all images must have the same size; found {sorted(shapes)[:3]}"
            + (" ..." if len(shapes) > 3 else "")
        )
    return ImageArrays(
        images=np.stack(images),
        labels=np.asarray(labels, dtype=np.int64),
        ids=np.arange(len(images), dtype=np.int64),
        class_names=tuple(class_names),
    )


def read_npz(path: str | Path) -> ImageArrays:
    """A .npz with `images` (N,H,W[,C]) uint8, `class_name` (N,) and `ids` or `test_index`.

    Class order comes from an optional `class_names` array; without it, names that
    are all CIFAR-10 classes keep the CIFAR-10 order (so CIFAR-10H columns line up),
    other names are sorted.
    """
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SourceError(f"{path.name} is not a readable .npz file: {exc}") from None
    with data:
        fields = set(data.files)
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


def read_source(kind: str, path: str | Path | None = None, split: str = "test") -> ImageArrays:
    """One entry point for every kind of source."""
    if kind == "demo":
        return load_demo_digits()
    if kind not in SOURCE_KINDS:
        raise SourceError(f"unknown source kind {kind!r}; choose from {SOURCE_KINDS}")
    if not path:
        raise SourceError(f"a {kind} source needs a path")
    if kind == "cifar10":
        return read_cifar10(path, split)
    if kind == "folder":
        return read_image_folder(path)
    return read_npz(path)
