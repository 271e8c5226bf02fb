"""Imports read only from the import folders, within bounds, and refuse every damaged
file with a clear message and nothing left behind; images are read as people see them;
training jobs are bounded."""

import gzip
import io
import os
import re
import struct
import tarfile
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from PIL import Image

from datasets.models import Dataset
from datasets.selectors import dataset_arrays
from datasets.services import import_dataset
from datasets.sources import SourceError, read_cifar10, read_image_folder
from tests.conftest import stored_files
from tests.test_datasets import make_folder, write_cifar_archive
from training.models import TrainingJob


@pytest.fixture
def imports(settings, tmp_path):
    """One import folder of the test's own; `outside` is a sibling the import may not read."""
    folder = tmp_path / "imports"
    folder.mkdir()
    (tmp_path / "outside").mkdir()
    settings.HILLMIX_IMPORT_DIRS = [folder]
    return folder


def assert_nothing_stored(media_root):
    assert Dataset.objects.count() == 0
    assert stored_files(media_root) == []


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def good_npz_fields(n=2):
    return {
        "images": np.zeros((n, 4, 4, 3), np.uint8),
        "class_name": np.array(["Cat", "Dog"] * (n // 2)),
        "ids": np.arange(n),
    }


# --- import folders ------------------------------------------------------------------


def test_default_import_folders_hold_the_shared_data():
    assert django_settings.SHARED_DATA_DIR in django_settings.HILLMIX_IMPORT_DIRS


def test_paths_outside_the_import_folders_get_one_answer(db, imports, tmp_path, media_root):
    outside = tmp_path / "outside"
    write_npz(outside / "real.npz", **good_npz_fields())
    (outside / "pickled.npy").write_bytes(b"\x80\x04K\x01.")
    (imports / "escape.npz").symlink_to(outside / "real.npz")
    (imports / "escape-folder").symlink_to(outside, target_is_directory=True)
    tries = [
        ("npz", outside / "real.npz"),  # exists, outside
        ("npz", outside / "pickled.npy"),  # exists, would say "pickled data"
        ("npz", outside / "missing.npz"),  # does not exist
        ("npz", "/etc/passwd"),
        ("npz", imports / "escape.npz"),  # a link out of the folder
        ("folder", imports / "escape-folder"),
        ("npz", "../outside/real.npz"),  # relative, climbing out
        ("npz", imports / "missing.npz"),
        ("npz", "missing.npz"),
    ]
    tries += [("folder", outside), ("folder", imports / "none"), ("folder", "/etc")]
    messages = {"npz": set(), "folder": set()}
    for kind, path in tries:
        with pytest.raises(ValidationError) as caught:
            import_dataset(name="x", kind=kind, path=path)
        (message,) = caught.value.messages
        messages[kind].add(message.replace(str(path), "PATH"))
    assert messages == {
        "npz": {"PATH does not exist in an import folder, or cannot be read"},
        "folder": {"PATH is not a folder in the import folders, or cannot be read"},
    }
    assert_nothing_stored(media_root)


def test_inside_the_import_folders_relative_and_absolute_paths_import(db, imports):
    write_npz(imports / "ok.npz", **good_npz_fields())
    assert import_dataset(name="a", kind="npz", path=imports / "ok.npz").num_images == 2
    assert import_dataset(name="b", kind="npz", path="ok.npz").num_images == 2


def test_admin_form_gives_no_file_existence_oracle(db, imports, tmp_path, client, media_root):
    from django.contrib.auth import get_user_model

    admin = get_user_model().objects.create_superuser("root", password="pw")
    client.force_login(admin)
    (tmp_path / "outside" / "secret.npy").write_bytes(b"\x80\x04K\x01.")
    pages = []
    for path in [tmp_path / "outside" / "secret.npy", tmp_path / "outside" / "none.npy"]:
        response = client.post(
            "/admin/datasets/dataset/add/",
            {"name": "probe", "kind": "npz", "path": str(path), "split": "test"},
        )
        assert response.status_code == 200
        page = response.content.decode().replace(str(path), "PATH")
        assert "does not exist in an import folder, or cannot be read" in page
        assert "pickled" not in page and "No such file" not in page
        pages.append(re.findall(r'class="error[^"]*">(.*?)</ul>', page, re.S))
    assert pages[0] == pages[1] and pages[0]
    assert_nothing_stored(media_root)


# --- archives --------------------------------------------------------------------------


def add_member(archive, name, data=b"", **attrs):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    archive.addfile(info, io.BytesIO(data) if data else None)


def test_archive_member_over_the_byte_budget_is_refused_before_it_is_read(db, imports, settings):
    """A small .tar.gz holding 64 MiB of zeros is refused without holding them in memory."""
    settings.HILLMIX_LIMITS = {**settings.HILLMIX_LIMITS, "max_import_bytes": 8 * 2**20}
    path = imports / "bomb.tar.gz"
    info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
    info.size = 64 * 2**20
    with tarfile.open(path, "w:gz") as archive:
        archive.addfile(info, io.BytesIO(bytes(info.size)))
    assert path.stat().st_size < 2**20
    tracemalloc.start()
    try:
        with pytest.raises(ValidationError, match="HILLMIX_MAX_IMPORT_BYTES"):
            import_dataset(name="bomb", kind="cifar10", path=path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20
    assert Dataset.objects.count() == 0


def test_archive_bytes_count_as_they_stream():
    """Many members, each small, still spend one budget."""
    from datasets.sources import ImportLimits

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for i in range(40):
            add_member(archive, f"junk/{i}", bytes(2**20))
    limits = ImportLimits(max_bytes=8 * 2**20)
    path = _write_tmp(buffer.getvalue(), "junk.tar.gz")
    with pytest.raises(SourceError, match="HILLMIX_MAX_IMPORT_BYTES"):
        read_cifar10(path, "test", limits)


def _write_tmp(data, name):
    import tempfile

    folder = tempfile.mkdtemp()
    path = os.path.join(folder, name)
    with open(path, "wb") as handle:
        handle.write(data)
    return path


def test_link_members_in_archives_are_refused(db, imports, media_root):
    path = imports / "links.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        add_member(
            archive,
            "cifar-10-batches-py/batches.meta",
            type=tarfile.SYMTYPE,
            linkname="/etc/passwd",
        )
        add_member(
            archive,
            "cifar-10-batches-py/test_batch",
            type=tarfile.LNKTYPE,
            linkname="cifar-10-batches-py/batches.meta",
        )
    with pytest.raises(ValidationError, match="links are not followed"):
        import_dataset(name="links", kind="cifar10", path=path)
    assert_nothing_stored(media_root)


def test_truncated_archives_are_refused(db, imports, media_root):
    write_cifar_archive(imports / "full.tar.gz")
    data = (imports / "full.tar.gz").read_bytes()
    (imports / "cut.tar.gz").write_bytes(data[: len(data) // 2])
    with gzip.open(imports / "full.tar.gz") as handle:
        raw = handle.read()
    (imports / "cut.tar").write_bytes(raw[: len(raw) // 2 + 100])
    for name in ["cut.tar.gz", "cut.tar"]:
        with pytest.raises(ValidationError, match="not a CIFAR-10 archive"):
            import_dataset(name="cut", kind="cifar10", path=imports / name)
    assert_nothing_stored(media_root)


# --- .npz files ------------------------------------------------------------------------


def test_malformed_npz_files_get_clear_messages_and_leave_nothing(db, imports, media_root):
    good = good_npz_fields()
    cases = {
        "object.npz": ({**good, "images": np.array([None, 1], dtype=object)}, "holds object"),
        "object-names.npz": (
            {**good, "class_name": np.array(["Cat", None], dtype=object)},
            "holds object",
        ),
        "float.npz": ({**good, "images": np.zeros((2, 4, 4, 3))}, "must hold uint8"),
        "flat.npz": ({**good, "images": np.zeros((2, 48), np.uint8)}, "must have shape"),
        "names-2d.npz": (
            {**good, "class_name": np.array([["Cat"], ["Dog"]])},
            "one-dimensional",
        ),
        "string-ids.npz": ({**good, "ids": np.array(["a", "b"])}, "must hold integers"),
        "short-ids.npz": ({**good, "ids": np.arange(1)}, "same length"),
        "four-channels.npz": ({**good, "images": np.zeros((2, 4, 4, 4), np.uint8)}, "channels"),
    }
    for name, (arrays, message) in cases.items():
        np.savez(imports / name, **arrays, allow_pickle=True)
        with pytest.raises(ValidationError, match=message):
            import_dataset(name="bad", kind="npz", path=imports / name)
    np.savez(imports / "whole.npz", **good)
    data = (imports / "whole.npz").read_bytes()
    (imports / "truncated.npz").write_bytes(data[: len(data) // 2])
    np.save(imports / "plain.npy", good["images"])
    (imports / "text.npz").write_text("not numpy at all")
    for name in ["truncated.npz", "plain.npy", "text.npz"]:
        with pytest.raises(ValidationError, match="not a readable .npz file"):
            import_dataset(name="bad", kind="npz", path=imports / name)
    assert_nothing_stored(media_root)


def test_npz_zip_bomb_is_refused_from_its_header(db, imports, settings):
    settings.HILLMIX_LIMITS = {**settings.HILLMIX_LIMITS, "max_import_bytes": 2**20}
    path = imports / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for field, array in list(good_npz_fields().items())[1:]:
            buffer = io.BytesIO()
            np.save(buffer, array)
            archive.writestr(f"{field}.npy", buffer.getvalue())
        buffer = io.BytesIO()
        np.save(buffer, np.zeros((8, 512, 512, 3), np.uint8))  # 6 MiB of zeros
        archive.writestr("images.npy", buffer.getvalue())
    with pytest.raises(ValidationError, match="HILLMIX_MAX_IMPORT_BYTES"):
        import_dataset(name="bomb", kind="npz", path=path)


def test_npz_bounds_on_images_and_pixels(db, imports, settings):
    settings.HILLMIX_LIMITS = {**settings.HILLMIX_LIMITS, "max_images": 3, "max_image_pixels": 64}
    np.savez(imports / "many.npz", **good_npz_fields(4))
    with pytest.raises(ValidationError, match="HILLMIX_MAX_IMAGES"):
        import_dataset(name="many", kind="npz", path=imports / "many.npz")
    np.savez(imports / "big.npz", **{**good_npz_fields(), "images": np.zeros((2, 9, 9), np.uint8)})
    with pytest.raises(ValidationError, match="HILLMIX_MAX_IMAGE_PIXELS"):
        import_dataset(name="big", kind="npz", path=imports / "big.npz")
    assert Dataset.objects.count() == 0


# --- image folders ---------------------------------------------------------------------


def png_claiming(width, height):
    """A tiny PNG whose header claims width x height pixels."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def test_malformed_and_oversized_images_are_refused(db, imports, media_root):
    cases = {
        "bomb": (lambda p: p.write_bytes(png_claiming(100_000, 100_000)), "pixels"),
        "huge": (lambda p: Image.new("L", (2000, 2000)).save(p), "HILLMIX_MAX_IMAGE_PIXELS"),
        "text": (lambda p: p.write_text("not an image"), "not a readable image"),
        # a format outside IMAGE_FORMATS under an image's name: its decoder is never run
        "icon": (lambda p: Image.new("RGB", (16, 16)).save(p, format="ICO"), "not a readable"),
        "cut": (
            lambda p: p.write_bytes(_png_bytes(Image.new("RGB", (64, 64), "red"))[:60]),
            "not a readable image",
        ),
    }
    for name, (write, message) in cases.items():
        (imports / name / "Cat").mkdir(parents=True)
        write(imports / name / "Cat" / "0.png")
        with pytest.raises(ValidationError, match=message):
            import_dataset(name="bad", kind="folder", path=imports / name)
    assert_nothing_stored(media_root)


def _png_bytes(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_folder_bounds_on_count_and_bytes(db, imports, settings):
    make_folder(imports / "pets", {"Cat": [(6, 6)] * 3, "Dog": [(6, 6)] * 2})
    settings.HILLMIX_LIMITS = {**settings.HILLMIX_LIMITS, "max_images": 4}
    with pytest.raises(ValidationError, match="HILLMIX_MAX_IMAGES"):
        import_dataset(name="pets", kind="folder", path=imports / "pets")
    settings.HILLMIX_LIMITS = {**settings.HILLMIX_LIMITS, "max_images": 10, "max_import_bytes": 300}
    with pytest.raises(ValidationError, match="HILLMIX_MAX_IMPORT_BYTES"):
        import_dataset(name="pets", kind="folder", path=imports / "pets")
    assert Dataset.objects.count() == 0


def test_links_inside_an_image_folder_are_not_followed(db, imports, tmp_path, media_root):
    make_folder(tmp_path / "outside" / "private", {"Secret": [(6, 6)]})
    make_folder(imports / "a", {"Cat": [(6, 6)]})
    (imports / "a" / "Secret").symlink_to(tmp_path / "outside" / "private" / "Secret")
    make_folder(imports / "b", {"Cat": [(6, 6)]})
    (imports / "b" / "Cat" / "9.png").symlink_to(
        tmp_path / "outside" / "private" / "Secret" / "0.png"
    )
    for name in ["a", "b"]:
        with pytest.raises(ValidationError, match="links are not followed"):
            import_dataset(name=name, kind="folder", path=imports / name)
    assert_nothing_stored(media_root)


# --- images as people see them -----------------------------------------------------


def test_exif_orientation_is_applied(db, imports):
    """A JPEG stored 64 wide and 32 high with orientation 6 shows 32 wide, 64 high, its
    left half on top."""
    stored = np.zeros((32, 64), np.uint8)
    stored[:, 32:] = 255
    image = Image.fromarray(stored)
    exif = Image.Exif()
    exif[0x0112] = 6
    (imports / "photos" / "Cat").mkdir(parents=True)
    image.save(imports / "photos" / "Cat" / "0.jpg", quality=95, exif=exif)
    Image.fromarray(np.full((64, 32), 128, np.uint8)).save(imports / "photos" / "Cat" / "1.png")
    dataset = import_dataset(name="photos", kind="folder", path=imports / "photos")
    assert (dataset.height, dataset.width) == (64, 32)
    turned = dataset_arrays(dataset).images[0, :, :, 0].astype(float)
    assert turned[:28].mean() < 10 and turned[36:].mean() > 245


def test_sixteen_bit_images_keep_their_range(db, imports):
    values = np.array([[0, 257 * 100, 65535, 32896]], dtype=np.uint16)
    (imports / "deep" / "Cat").mkdir(parents=True)
    Image.fromarray(values).save(imports / "deep" / "Cat" / "0.png")
    dataset = import_dataset(name="deep", kind="folder", path=imports / "deep")
    assert dataset_arrays(dataset).images[0, 0, :, 0].tolist() == [0, 100, 255, 128]


def _through_file(image, fmt, **options):
    from datasets.imaging import read_image

    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return read_image(buffer.getvalue())


def test_every_mode_maps_to_grey_or_rgb_by_the_rule():
    from datasets.imaging import ImageError, _to_uint8, read_image

    one = Image.new("1", (2, 1))
    one.putpixel((1, 0), 1)
    assert _through_file(one, "PNG")[0, :, 0].tolist() == [0, 255]
    assert _through_file(Image.new("L", (1, 1), 77), "PNG").tolist() == [[[77]]]
    la = Image.new("LA", (2, 1))
    la.putpixel((0, 0), (100, 255))
    la.putpixel((1, 0), (100, 0))
    assert _through_file(la, "PNG")[0, :, 0].tolist() == [100, 255]  # over white
    rgba = Image.new("RGBA", (2, 1), (10, 20, 30, 255))
    rgba.putpixel((1, 0), (10, 20, 30, 0))
    assert _through_file(rgba, "PNG")[0].tolist() == [[10, 20, 30], [255, 255, 255]]
    palette = Image.new("P", (2, 1))
    palette.putpalette([200, 0, 0, 0, 0, 200] + [0] * 762)
    palette.putpixel((1, 0), 1)
    assert _through_file(palette, "PNG")[0].tolist() == [[200, 0, 0], [0, 0, 200]]
    transparent = _through_file(palette, "PNG", transparency=1)
    assert transparent[0].tolist() == [[200, 0, 0], [255, 255, 255]]
    pa = palette.convert("PA")
    assert _to_uint8(pa).shape == (1, 2, 3)
    ints = Image.fromarray(np.array([[0, 25700, 65535]], dtype=np.int32))
    assert ints.mode == "I"
    assert _through_file(ints, "TIFF")[0, :, 0].tolist() == [0, 100, 255]
    with pytest.raises(ImageError, match="0..65535"):
        _through_file(Image.fromarray(np.array([[-1, 5]], dtype=np.int32)), "TIFF")
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert _through_file(floats, "TIFF")[0, :, 0].tolist() == [0, 128, 255]
    with pytest.raises(ImageError, match=r"\[0, 1\]"):
        _through_file(Image.fromarray(np.array([[0.0, 2.0]], dtype=np.float32)), "TIFF")
    cmyk = Image.new("CMYK", (2, 1), (0, 0, 0, 0))
    cmyk.putpixel((1, 0), (0, 255, 255, 0))
    assert _through_file(cmyk, "TIFF")[0].tolist() == [[255, 255, 255], [255, 0, 0]]
    ycbcr = Image.new("RGB", (1, 1), (0, 128, 255)).convert("YCbCr")
    assert np.abs(_to_uint8(ycbcr)[0, 0].astype(int) - [0, 128, 255]).max() <= 2
    assert read_image(_png_bytes(Image.new("RGB", (3, 2)))).shape == (2, 3, 3)


def test_grey_and_colour_images_in_one_folder_become_rgb(tmp_path):
    (tmp_path / "mixed" / "Cat").mkdir(parents=True)
    Image.new("L", (2, 2), 50).save(tmp_path / "mixed" / "Cat" / "0.png")
    Image.new("RGB", (2, 2), (1, 2, 3)).save(tmp_path / "mixed" / "Cat" / "1.png")
    arrays = read_image_folder(tmp_path / "mixed")
    assert arrays.images.shape == (2, 2, 2, 3)
    assert arrays.images[0, 0, 0].tolist() == [50, 50, 50]


# --- training-job bounds ---------------------------------------------------------------


@pytest.fixture
def researcher_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("boss", password="pw"))
    return client


@pytest.mark.parametrize(
    ("field", "value"),
    [("epochs", 2_147_483_647), ("seeds", list(range(5000))), ("batch_size", 1)],
)
def test_training_job_bounds_in_the_api(demo_dataset, researcher_client, field, value):
    body = {"name": "huge", "dataset": demo_dataset.name, "policy": "onehot", field: value}
    response = researcher_client.post("/api/training-jobs/", body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert TrainingJob.objects.count() == 0


def test_training_job_bounds_in_the_admin(demo_dataset, researcher_client):
    response = researcher_client.post(
        "/admin/training/trainingjob/add/",
        {
            "name": "huge",
            "dataset": demo_dataset.pk,
            "heldout_fraction": 0.2,
            "split_seed": 0,
            "policy": "onehot",
            "architecture": "small_cnn",
            "epochs": 2_000_000_000,
            "batch_size": 128,
            "learning_rate": 0.05,
            "seeds": "[0]",
            "online_alpha": 0.0,
            "device": "auto",
        },
    )
    assert response.status_code == 200
    assert "HILLMIX_MAX_EPOCHS" in response.content.decode()
    assert TrainingJob.objects.count() == 0


# --- uploads through the admin --------------------------------------------------------


def _npz_upload(name, **arrays):
    from django.core.files.uploadedfile import SimpleUploadedFile

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return SimpleUploadedFile(name, buffer.getvalue())


def test_admin_imports_an_uploaded_npz(researcher_client, media_root, settings):
    settings.HILLMIX_IMPORT_DIRS = []  # an upload needs no server folder
    response = researcher_client.post(
        "/admin/datasets/dataset/add/",
        {
            "name": "sent",
            "kind": "npz",
            "split": "test",
            "upload": _npz_upload("mine.npz", **good_npz_fields()),
        },
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    dataset = Dataset.objects.get(name="sent")
    assert dataset.source_path == "upload:mine.npz"
    assert dataset_arrays(dataset).images.shape == (2, 4, 4, 3)


def test_bad_uploads_get_form_errors_and_leave_nothing(researcher_client, media_root, settings):
    cases = [
        (
            _npz_upload("objects.npz", **{**good_npz_fields(), "ids": np.array([1, None])}),
            "npz",
            "objects.npz: ids holds object",
        ),
        (_npz_upload("fine.npz", **good_npz_fields()), "folder", "uploads are .npz files"),
    ]
    for upload, kind, message in cases:
        response = researcher_client.post(
            "/admin/datasets/dataset/add/",
            {"name": "bad", "kind": kind, "split": "test", "upload": upload},
        )
        assert response.status_code == 200
        assert message in response.content.decode()
    settings.HILLMIX_LIMITS = {**settings.HILLMIX_LIMITS, "max_import_bytes": 100}
    response = researcher_client.post(
        "/admin/datasets/dataset/add/",
        {
            "name": "bad",
            "kind": "npz",
            "split": "test",
            "upload": _npz_upload("big.npz", **good_npz_fields()),
        },
    )
    assert "HILLMIX_MAX_IMPORT_BYTES" in response.content.decode()
    assert_nothing_stored(media_root)


def test_npz_header_claiming_more_than_the_member_holds_is_refused(db, imports, media_root):
    """A header saying (10**13,) over a few bytes must not allocate 80 TB."""
    path = imports / "liar.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for field, array in good_npz_fields().items():
            buffer = io.BytesIO()
            np.save(buffer, array)
            data = buffer.getvalue()
            if field == "ids":
                data = data.replace(b"(2,)", b"(10000000000000,)")
            archive.writestr(f"{field}.npy", data)
    with pytest.raises(ValidationError, match="ids is damaged"):
        import_dataset(name="liar", kind="npz", path=path)
    assert_nothing_stored(media_root)
