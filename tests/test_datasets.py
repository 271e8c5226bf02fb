"""Importing image sources: every kind, and every bad input rejected with nothing left behind."""

import io
import pickle
import tarfile

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from PIL import Image

from datasets.models import Dataset
from datasets.selectors import dataset_arrays
from datasets.services import import_dataset
from datasets.sources import SourceError, read_cifar10
from tests.conftest import stored_files


@pytest.fixture(autouse=True)
def import_dir(settings, tmp_path):
    """The service reads only from import folders; these tests write theirs in tmp_path."""
    settings.HILLMIX_IMPORT_DIRS = [*settings.HILLMIX_IMPORT_DIRS, tmp_path]


LABEL_NAMES = [
    b"airplane",
    b"automobile",
    b"bird",
    b"cat",
    b"deer",
    b"dog",
    b"frog",
    b"horse",
    b"ship",
    b"truck",
]


def write_cifar_archive(path, per_batch=4, seed=0):
    """A tiny CIFAR-10 archive in the official python-version format."""
    rng = np.random.default_rng(seed)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = {
            b"batch_label": name.encode(),
            b"labels": rng.integers(0, 10, per_batch).tolist(),
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"filenames": [f"img{i}.png".encode() for i in range(per_batch)],
        }
    members = {"batches.meta": {b"label_names": LABEL_NAMES, b"num_vis": 3072}, **batches}
    with tarfile.open(path, "w:gz") as archive:
        for name, obj in members.items():
            data = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return batches


def test_cifar10_reader_reads_official_format(tmp_path):
    batches = write_cifar_archive(tmp_path / "cifar-10-python.tar.gz")
    test = read_cifar10(tmp_path / "cifar-10-python.tar.gz", "test")
    assert test.images.shape == (4, 32, 32, 3)
    assert test.class_names[0] == "Airplane" and test.class_names[9] == "Truck"
    raw = batches["test_batch"][b"data"][2]
    np.testing.assert_array_equal(test.images[2, :, :, 0].ravel(), raw[:1024])  # red plane
    np.testing.assert_array_equal(test.images[2, 0, 1], raw[[1, 1025, 2049]])
    assert test.labels.tolist() == batches["test_batch"][b"labels"]
    assert test.ids.tolist() == [0, 1, 2, 3]
    train = read_cifar10(tmp_path / "cifar-10-python.tar.gz", "train")
    assert len(train.images) == 20


def test_cifar10_import_through_service_and_command(db, tmp_path):
    write_cifar_archive(tmp_path / "c.tar.gz")
    call_command(
        "import_dataset", "cifar-mini", "--kind", "cifar10", "--path", str(tmp_path / "c.tar.gz")
    )
    dataset = Dataset.objects.get(name="cifar-mini")
    assert (dataset.num_images, dataset.height, dataset.channels) == (4, 32, 3)
    assert dataset_arrays(dataset).images.shape == (4, 32, 32, 3)


def test_cifar_pickle_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for name in ["batches.meta", "test_batch"]:
            data = pickle.dumps({b"label_names": [Evil()]})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    with pytest.raises(SourceError, match="refusing to load"):
        read_cifar10(path)


def test_demo_digits_ship_with_scikit_learn(db):
    dataset = import_dataset(name="digits", kind="demo")
    assert dataset.num_images == 1797
    assert (dataset.height, dataset.width, dataset.channels) == (8, 8, 1)
    assert dataset.class_names[0] == "Zero"
    assert dataset_arrays(dataset).images.max() == 255


def make_folder(root, sizes):
    for cls, size_list in sizes.items():
        (root / cls).mkdir(parents=True)
        for i, size in enumerate(size_list):
            Image.new("RGB", size, (i * 40, 0, 0)).save(root / cls / f"{i}.png")


def test_image_folder_one_subfolder_per_class(db, tmp_path):
    make_folder(tmp_path / "imgs", {"Cat": [(6, 6)] * 2, "Dog": [(6, 6)] * 3})
    dataset = import_dataset(name="pets", kind="folder", path=tmp_path / "imgs")
    assert dataset.class_names == ["Cat", "Dog"]
    assert dataset.num_images == 5
    assert dataset_arrays(dataset).labels.tolist() == [0, 0, 1, 1, 1]


@pytest.mark.shared_data
def test_hmix_endpoints_import_as_dataset(hmix_dataset):
    assert hmix_dataset.num_images == 487
    assert hmix_dataset.class_names[:2] == ["Airplane", "Automobile"]
    arrays = dataset_arrays(hmix_dataset)
    assert 1596 in arrays.ids.tolist()


def bad_sources(tmp_path):
    not_cifar = tmp_path / "not-cifar.tar.gz"
    with tarfile.open(not_cifar, "w:gz") as archive:
        info = tarfile.TarInfo("readme.txt")
        info.size = 5
        archive.addfile(info, io.BytesIO(b"hello"))
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"this is not an archive")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "Cat").mkdir()
    make_folder(tmp_path / "mixed", {"Cat": [(6, 6), (8, 8)]})
    np.savez(
        tmp_path / "no-ids.npz",
        images=np.zeros((2, 4, 4, 3), np.uint8),
        class_name=np.array(["Cat", "Dog"]),
    )
    np.savez(tmp_path / "no-images.npz", ids=np.arange(2), class_name=np.array(["Cat", "Dog"]))
    return [
        ("cifar10", not_cifar, "not a CIFAR-10 archive"),
        ("cifar10", garbage, "not a CIFAR-10 archive"),
        ("cifar10", tmp_path / "missing.tar.gz", "does not exist"),
        ("folder", tmp_path / "empty", "no class sub-folders with images"),
        ("folder", tmp_path / "mixed", "same size"),
        ("npz", tmp_path / "no-ids.npz", "lacks field"),
        ("npz", tmp_path / "no-images.npz", "lacks field.*images"),
    ]


def test_bad_sources_are_rejected_and_leave_nothing(db, tmp_path, media_root):
    for kind, path, message in bad_sources(tmp_path):
        with pytest.raises(ValidationError, match=message):
            import_dataset(name="bad", kind=kind, path=path)
        with pytest.raises(CommandError, match=message):
            call_command("import_dataset", "bad", "--kind", kind, "--path", str(path))
    assert Dataset.objects.count() == 0
    assert stored_files(media_root) == []


def test_duplicate_dataset_name_rejected(demo_dataset, media_root):
    with pytest.raises(ValidationError, match="already exists"):
        import_dataset(name="digits", kind="demo")
    assert Dataset.objects.count() == 1
    assert len(stored_files(media_root)) == 1


def test_reimported_name_never_serves_stale_pixels(db, tmp_path):
    from datasets.services import delete_dataset

    make_folder(tmp_path / "a", {"Cat": [(6, 6)] * 2, "Dog": [(6, 6)]})
    make_folder(tmp_path / "b", {"Cat": [(4, 4)] * 3, "Dog": [(4, 4)] * 3})
    first = import_dataset(name="pets", kind="folder", path=tmp_path / "a")
    assert dataset_arrays(first).images.shape == (3, 6, 6, 3)
    delete_dataset(first)
    second = import_dataset(name="pets", kind="folder", path=tmp_path / "b")
    assert second.arrays.name == first.arrays.name  # same storage name, new content
    assert dataset_arrays(second).images.shape == (6, 4, 4, 3)
