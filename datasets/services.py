"""Writes for datasets and stimuli: importing sources, building stimulus sets."""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import tempfile
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import connection, transaction

from .imaging import encode_png, write_pngs
from .mixing import IMAGE_MIXING_METHODS, check_lams, effective_lams, mix_pairs
from .models import Dataset, Pair, Stimulus, StimulusSet, new_stimulus_key
from .naming import GRID_LAMS, SINGLE_LAMS, PairKey, parse_pair_name, stimulus_name
from .pairing import locate_pairs, sample_balanced_pairs
from .selectors import dataset_arrays, stimuli_of_set
from .sources import ImageArrays, ImportLimits, SourceError, download_cifar10, read_source

logger = logging.getLogger(__name__)

# Pairs mixed, encoded and stored per step; progress is written after each.
GENERATION_CHUNK = 100
# Worker processes that encode stimulus PNGs (at most the CPUs this process may use),
# and the smallest set worth starting them for (starting costs about a tenth of a second).
GENERATION_PROCESSES = 4
PARALLEL_MIN_STIMULI = 500


def import_limits() -> ImportLimits:
    """The import bounds of settings.HILLMIX_LIMITS."""
    limits = settings.HILLMIX_LIMITS
    return ImportLimits(
        max_images=limits["max_images"],
        max_image_pixels=limits["max_image_pixels"],
        max_bytes=limits["max_import_bytes"],
    )


def resolve_import_path(path: str | Path, *, folder: bool = False, any_path: bool = False) -> Path:
    """The real location of `path`, which must lie inside settings.HILLMIX_IMPORT_DIRS.

    A relative path is looked up in each import folder in turn. Links are resolved
    before the check, so none leads out of the folders. Missing, outside the folders
    and unreadable all raise the same ValidationError, so the answer says nothing
    about the server's other files (the wording depends only on `folder`, what the
    caller asks for). `any_path` (the import_dataset command, run from a shell on the
    server) lifts the folder restriction only.
    """
    if folder:
        message = f"{path} is not a folder in the import folders, or cannot be read"
    else:
        message = f"{path} does not exist in an import folder, or cannot be read"
    roots = [Path(d) for d in settings.HILLMIX_IMPORT_DIRS]
    given = Path(path)
    if any_path or given.is_absolute():
        candidates = [given]
    else:
        candidates = [root / given for root in roots]
    for candidate in candidates:
        try:
            real = candidate.resolve(strict=True)
            inside = any_path or any(real.is_relative_to(r.resolve()) for r in roots)
            readable = (real.is_file() or real.is_dir()) and os.access(real, os.R_OK)
        except (OSError, RuntimeError, ValueError):
            continue
        if inside and readable:
            return real
    raise ValidationError(message)


def import_dataset(
    *,
    name: str,
    kind: str,
    path: str | Path | None = None,
    split: str = "test",
    download: bool = False,
    any_path: bool = False,
    upload: UploadedFile | None = None,
) -> Dataset:
    """Read a source completely, then store it; on any error nothing is left behind.

    The source is an `upload` (a .npz or CIFAR-10 archive sent through the admin), or
    a `path` that must lie in an import folder (resolve_import_path) unless `any_path`.
    It must keep within settings.HILLMIX_LIMITS. Raises ValidationError.
    """
    if Dataset.objects.filter(name=name).exists():
        raise ValidationError(f"a dataset named {name!r} already exists")
    if upload is not None:
        return _import_upload(name, kind, split, upload)
    try:
        if kind == "cifar10" and download:
            dest = Path(default_storage.location) / "downloads"
            if path:
                dest = Path(path).resolve()
                roots = [Path(d).resolve() for d in settings.HILLMIX_IMPORT_DIRS]
                if not any_path and not any(dest.is_relative_to(r) for r in roots):
                    raise ValidationError(f"{path} is not inside an import folder")
            path = download_cifar10(dest)
        elif path and kind != "demo":
            path = resolve_import_path(path, folder=kind == "folder", any_path=any_path)
        arrays = read_source(kind, path, split, import_limits())
    except SourceError as exc:
        raise ValidationError(str(exc)) from None
    return _store_dataset(name, kind, str(path or ""), split if kind == "cifar10" else "", arrays)


def _import_upload(name: str, kind: str, split: str, upload: UploadedFile) -> Dataset:
    if kind not in ("cifar10", "npz"):
        raise ValidationError("uploads are .npz files or CIFAR-10 archives (kind npz or cifar10)")
    limits = import_limits()
    if upload.size > limits.max_bytes:
        raise ValidationError(limits.bytes_message("the upload"))
    # The readers take a file on disk; the copy lives only while it is read.
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / "uploaded-source"
        with open(local, "wb") as handle:
            for chunk in upload.chunks():
                handle.write(chunk)
        try:
            arrays = read_source(kind, local, split, limits)
        except SourceError as exc:
            raise ValidationError(str(exc).replace(local.name, upload.name)) from None
    source = f"upload:{upload.name}"[:500]
    return _store_dataset(name, kind, source, split if kind == "cifar10" else "", arrays)


def _store_dataset(name: str, kind: str, path: str, split: str, arrays: ImageArrays) -> Dataset:
    buffer = io.BytesIO()
    np.savez(
        buffer,
        images=arrays.images,
        labels=arrays.labels,
        ids=arrays.ids,
        class_names=np.asarray(arrays.class_names),
    )
    _, height, width, channels = arrays.images.shape
    dataset = Dataset(
        name=name,
        source_kind=kind,
        source_path=path,
        split=split,
        class_names=list(arrays.class_names),
        num_images=len(arrays.images),
        height=height,
        width=width,
        channels=channels,
        id_space=arrays.id_space,
    )
    dataset.full_clean(exclude=["arrays"])
    stored = default_storage.save(f"datasets/{name}.npz", ContentFile(buffer.getvalue()))
    try:
        with transaction.atomic():
            dataset.arrays.name = stored
            dataset.save()
    except Exception:
        default_storage.delete(stored)
        raise
    return dataset


def create_stimulus_set(
    *,
    name: str,
    dataset: Dataset,
    kind: str,
    lams: Iterable[float] | None = None,
    mixing_policy: str = "mixup",
    pairs: Iterable[str | PairKey] | None = None,
    n_pairs: int | None = None,
    seed: int = 0,
) -> StimulusSet:
    """Check everything, record the set and its pairs, and queue image generation.

    Pairs are either explicit (`Airplane_1596_Frog_3615`) or `n_pairs` random pairs
    balanced over class pairs. Invalid input raises ValidationError and writes nothing.
    """
    if kind not in StimulusSet.Kind.values:
        raise ValidationError(f"kind must be one of {StimulusSet.Kind.values}")
    if mixing_policy not in IMAGE_MIXING_METHODS:
        raise ValidationError(f"mixing policy must be one of {IMAGE_MIXING_METHODS}")
    lam_list = (
        list(lams)
        if lams is not None
        else list(GRID_LAMS if kind == StimulusSet.Kind.GRID else SINGLE_LAMS)
    )
    try:
        lam_values = sorted({round(float(x), 4) for x in check_lams(lam_list)})
    except (TypeError, ValueError) as exc:
        raise ValidationError(str(exc)) from None
    if not lam_values:
        raise ValidationError("give at least one lam value")
    try:
        # The set records the lams its stimuli really have (DESIGN "effective lam"); a
        # grid's nominal steps live on only as step positions.
        lam_values = effective_lams(lam_values, mixing_policy, dataset.height, dataset.width)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    lam_values = [float(x) for x in lam_values]
    if StimulusSet.objects.filter(name=name).exists():
        raise ValidationError(f"a stimulus set named {name!r} already exists")
    if (pairs is None) == (n_pairs is None):
        raise ValidationError("give either explicit pairs or a number of random pairs")

    arrays = dataset_arrays(dataset)
    try:
        if pairs is not None:
            keys = [p if isinstance(p, PairKey) else parse_pair_name(p) for p in pairs]
            if not keys:
                raise ValueError("the list of pairs is empty")
            duplicates = {k.name for k in keys if keys.count(k) > 1}
            if duplicates:
                raise ValueError(f"pairs listed twice: {sorted(duplicates)}")
            locate_pairs(arrays, keys)
        else:
            keys = sample_balanced_pairs(arrays, int(n_pairs), seed)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None

    with transaction.atomic():
        stimulus_set = StimulusSet(
            name=name,
            dataset=dataset,
            kind=kind,
            mixing_policy=mixing_policy,
            lams=lam_values,
            seed=seed,
            total=len(keys) * len(lam_values),
        )
        stimulus_set.full_clean()
        stimulus_set.save()
        _create_pairs(stimulus_set, keys)
        from .tasks import generate_stimulus_set

        set_id = stimulus_set.pk
        transaction.on_commit(lambda: generate_stimulus_set.delay(set_id))
    return stimulus_set


def _create_pairs(stimulus_set: StimulusSet, keys: list[PairKey]) -> list[Pair]:
    return Pair.objects.bulk_create(
        Pair(
            stimulus_set=stimulus_set,
            position=i,
            name=k.name,
            class1=k.class1,
            id1=k.id1,
            class2=k.class2,
            id2=k.id2,
        )
        for i, k in enumerate(keys)
    )


def _delete_stimuli(stimulus_set: StimulusSet) -> None:
    for file_name in stimuli_of_set(stimulus_set).values_list("image", flat=True):
        if file_name:
            default_storage.delete(file_name)
    stimuli_of_set(stimulus_set).delete()


def generate_stimuli(stimulus_set_id: int) -> StimulusSet:
    """Mix, encode and store every stimulus of a set; safe to run again (a finished set
    is left as it is, an interrupted one is redone).

    Chunks of GENERATION_CHUNK pairs are mixed in one vectorised step (the set's mixing
    method), PNG-encoded and written by worker processes (_PngWriter) while the next
    chunk is mixed, and recorded with one bulk insert each, after which `done` is
    updated. A failure removes what was written and records the error on the set.
    """
    stimulus_set = StimulusSet.objects.select_related("dataset").get(pk=stimulus_set_id)
    if stimulus_set.status == StimulusSet.Status.SUCCEEDED:
        return stimulus_set  # a duplicate delivery of the task: studies may use these rows
    _delete_stimuli(stimulus_set)  # an interrupted run starts clean
    StimulusSet.objects.filter(pk=stimulus_set.pk).update(status="running", done=0, error="")
    arrays = dataset_arrays(stimulus_set.dataset)
    pairs = list(stimulus_set.pairs.order_by("position"))
    lams = [float(x) for x in stimulus_set.lams]
    folder = f"stimuli/{stimulus_set.pk}"
    keys = [PairKey(p.class1, p.id1, p.class2, p.id2) for p in pairs]
    writer = _PngWriter(folder, len(pairs) * len(lams))
    done = 0

    def record(job: tuple[list[Pair], np.ndarray, list[str], Future]) -> None:
        nonlocal done
        chunk, kept, names, written = job
        stored, sizes = written.result()
        per_pair = len(kept)
        _insert_stimuli(
            (
                chunk[i // per_pair].pk,
                float(kept[i % per_pair]),
                name,
                stored[i],
                sizes[i],
                new_stimulus_key(),
            )
            for i, name in enumerate(names)
        )
        done += len(names)
        StimulusSet.objects.filter(pk=stimulus_set.pk).update(done=done)

    try:
        all_rows = locate_pairs(arrays, keys)
        with writer:
            pending: deque = deque()
            for start in range(0, len(pairs), GENERATION_CHUNK):
                chunk = pairs[start : start + GENERATION_CHUNK]
                rows = all_rows[start : start + GENERATION_CHUNK]
                mixed, kept = mix_pairs(
                    arrays.images[rows[:, 0]],
                    arrays.images[rows[:, 1]],
                    lams,
                    stimulus_set.mixing_policy,
                    seed=stimulus_set.seed + start,
                )
                names = [
                    stimulus_name(float(lam), key)
                    for key in keys[start : start + GENERATION_CHUNK]
                    for lam in kept
                ]
                written = writer.submit(mixed.reshape((-1,) + mixed.shape[2:]), names)
                pending.append((chunk, kept, names, written))
                # Rows are written while the workers encode the next chunks.
                if len(pending) > writer.ahead:
                    record(pending.popleft())
            while pending:
                record(pending.popleft())
    except Exception as exc:
        logger.exception("stimulus set %s failed", stimulus_set.pk)
        _delete_stimuli(stimulus_set)
        writer.delete_written()
        StimulusSet.objects.filter(pk=stimulus_set.pk).update(status="failed", error=str(exc))
        raise
    StimulusSet.objects.filter(pk=stimulus_set.pk).update(status="succeeded")
    stimulus_set.refresh_from_db()
    return stimulus_set


def _insert_stimuli(rows: Iterable[tuple[int, float, str, str, int, str]]) -> None:
    """Insert (pair id, lam, name, image, size_bytes, key) rows in one statement batch.

    Plain parameterised SQL: building a model instance per row cost the generator more
    than encoding the images (bench/stimuli.py). Every column Stimulus has is given.
    """
    fields = [
        Stimulus._meta.get_field(f) for f in ("pair", "lam", "name", "image", "size_bytes", "key")
    ]
    quote = connection.ops.quote_name
    sql = (
        f"INSERT INTO {quote(Stimulus._meta.db_table)} "
        f"({', '.join(quote(f.column) for f in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))})"
    )
    with transaction.atomic(), connection.cursor() as cursor:  # one commit, not one a row
        cursor.executemany(sql, list(rows))


class _PngWriter:
    """Encodes and stores stimulus PNGs for generate_stimuli.

    With a file-system storage, more than one CPU and at least PARALLEL_MIN_STIMULI
    images, worker processes encode and write the files (Pillow's encoder holds the
    GIL, so threads do not help); otherwise they are encoded here and saved through
    the storage. Either way the bytes are encode_png's, under the storage names
    `folder/name`. `submit` returns a future of (stored names, byte sizes).
    """

    def __init__(self, folder: str, total: int) -> None:
        self.folder = folder
        self.written: list[str] = []
        self.pool: ProcessPoolExecutor | None = None
        workers = min(len(os.sched_getaffinity(0)), GENERATION_PROCESSES)
        self.parallel = (
            isinstance(default_storage, FileSystemStorage)
            and workers > 1
            and total >= PARALLEL_MIN_STIMULI
        )
        self.workers = workers if self.parallel else 1
        self.ahead = 2 * self.workers  # chunks in flight before rows are written

    def __enter__(self) -> _PngWriter:
        if self.parallel:
            # A Celery prefork worker runs tasks in a daemonic process, which
            # multiprocessing forbids to start children lest they outlive it. These
            # cannot: __exit__ shuts the pool down before the task returns. So the flag
            # is lifted while the pool lives (the pool starts workers on demand), and
            # there the workers are forked (Celery's process state cannot be pickled
            # for a fork server; its task processes run one thread). Elsewhere a fork
            # server starts them clean, never a copy of a process with its database
            # connection and threads.
            process = multiprocessing.current_process()
            self.was_daemon = process.daemon
            if self.was_daemon:
                process.daemon = False
                context = multiprocessing.get_context("fork")
            else:
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(["datasets.imaging"])
            self.pool = ProcessPoolExecutor(self.workers, mp_context=context)
            os.makedirs(default_storage.path(self.folder), exist_ok=True)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            if self.was_daemon:
                multiprocessing.current_process().daemon = True

    def submit(self, images: np.ndarray, names: list[str]) -> Future:
        stored = [f"{self.folder}/{name}" for name in names]
        self.written += stored
        if self.pool is not None:
            base = default_storage.path(self.folder)
            # Names are one path segment (stimulus_name); anything else takes the
            # storage's own checked join.
            paths = [
                os.path.join(base, name)
                if "/" not in name and name not in (".", "..")
                else default_storage.path(full)
                for name, full in zip(names, stored, strict=True)
            ]
            sizes = self.pool.submit(
                write_pngs, images, paths, default_storage.file_permissions_mode
            )
            future: Future = Future()
            sizes.add_done_callback(lambda f: _settle(future, f, stored))
            return future
        future = Future()
        try:
            datas = [encode_png(image) for image in images]
            saved = [
                default_storage.save(n, ContentFile(d)) for n, d in zip(stored, datas, strict=True)
            ]
            self.written += saved
            future.set_result((saved, [len(d) for d in datas]))
        except Exception as exc:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(exc)
        return future

    def delete_written(self) -> None:
        """Remove every file this writer may have written (after a failure)."""
        for name in set(self.written):
            default_storage.delete(name)


def _settle(future: Future, sizes: Future, stored: list[str]) -> None:
    exc = sizes.exception()
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result((stored, sizes.result()))


def _store_stimulus(
    folder: str, pair: Pair, key: PairKey, lam: float, image: np.ndarray
) -> Stimulus:
    name = stimulus_name(lam, key)
    data = encode_png(image)
    stored = default_storage.save(f"{folder}/{name}", ContentFile(data))
    return Stimulus(pair=pair, lam=lam, name=name, image=stored, size_bytes=len(data))


def register_stimuli(
    *, name: str, dataset: Dataset, kind: str, entries: Iterable[tuple[PairKey, float]]
) -> StimulusSet:
    """Record published stimuli (pair, lam) as a finished set, for importing old studies.

    Images are rendered where the dataset holds both endpoints; the others keep their
    names and lams but no image (their judgments still count in every aggregate).
    """
    by_pair: dict[PairKey, set[float]] = {}
    for pair, lam in entries:
        by_pair.setdefault(pair, set()).add(round(float(lam), 4))
    arrays = dataset_arrays(dataset)
    row_of_id = {int(i): r for r, i in enumerate(arrays.ids)}
    folder_lams = sorted({lam for lams in by_pair.values() for lam in lams})
    with transaction.atomic():
        stimulus_set = StimulusSet.objects.create(
            name=name,
            dataset=dataset,
            kind=kind,
            lams=folder_lams,
            status=StimulusSet.Status.SUCCEEDED,
        )
        pairs = _create_pairs(stimulus_set, list(by_pair))
        stimuli = []
        for pair, key in zip(pairs, by_pair, strict=True):
            lams = sorted(by_pair[key])
            if key.id1 in row_of_id and key.id2 in row_of_id:
                x1 = arrays.images[[row_of_id[key.id1]]]
                x2 = arrays.images[[row_of_id[key.id2]]]
                mixed = mix_pairs(x1, x2, lams)[0][0]
                stimuli += [
                    _store_stimulus(f"stimuli/{stimulus_set.pk}", pair, key, lam, mixed[j])
                    for j, lam in enumerate(lams)
                ]
            else:
                stimuli += [
                    Stimulus(pair=pair, lam=lam, name=stimulus_name(lam, key)) for lam in lams
                ]
        Stimulus.objects.bulk_create(stimuli)
        StimulusSet.objects.filter(pk=stimulus_set.pk).update(done=len(stimuli), total=len(stimuli))
    stimulus_set.refresh_from_db()
    return stimulus_set


def delete_stimulus_set(stimulus_set: StimulusSet) -> None:
    """Remove a set with its files (the database cascade leaves files behind)."""
    _delete_stimuli(stimulus_set)
    stimulus_set.delete()


def delete_dataset(dataset: Dataset) -> None:
    file_name = dataset.arrays.name
    dataset.delete()
    default_storage.delete(file_name)
