"""Stimulus sets: generation through the Celery task, names, counts, bad input."""

import itertools
from collections import Counter

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command

from datasets.imaging import decode_png
from datasets.mixing import IMAGE_MIXING_METHODS, mixup
from datasets.models import Pair, Stimulus, StimulusSet
from datasets.naming import GRID_LAMS, SINGLE_LAMS
from datasets.selectors import dataset_arrays, stimuli_of_set
from datasets.services import create_stimulus_set, delete_stimulus_set
from tests.conftest import stored_files


def build(django_capture_on_commit_callbacks, **kwargs) -> StimulusSet:
    with django_capture_on_commit_callbacks(execute=True):
        stimulus_set = create_stimulus_set(**kwargs)
    stimulus_set.refresh_from_db()
    return stimulus_set


def test_grid_set_built_by_task_has_every_pair_and_lam(
    demo_dataset, django_capture_on_commit_callbacks, media_root
):
    stimulus_set = build(
        django_capture_on_commit_callbacks,
        name="grid",
        dataset=demo_dataset,
        kind="grid",
        n_pairs=45,
        seed=3,
    )
    assert stimulus_set.status == "succeeded"
    assert stimulus_set.done == stimulus_set.total == 45 * 11
    stimuli = list(stimuli_of_set(stimulus_set))
    assert len(stimuli) == 495
    assert sorted({s.lam for s in stimuli}) == list(GRID_LAMS)
    assert len(stored_files(media_root)) == 495 + 1  # + the dataset arrays
    # Balanced: 45 unordered class pairs of 10 digit classes, one pair each.
    per_class_pair = Counter(frozenset((p.class1, p.class2)) for p in stimulus_set.pairs.all())
    assert len(per_class_pair) == 45 and set(per_class_pair.values()) == {1}
    pair = stimulus_set.pairs.first()
    names = {s.name for s in pair.stimuli.all()}
    assert f"mixed_0.0_{pair.name}.png" in names and f"mixed_1.0_{pair.name}.png" in names


def test_random_pairs_are_balanced_and_distinct(demo_dataset, django_capture_on_commit_callbacks):
    stimulus_set = build(
        django_capture_on_commit_callbacks,
        name="many",
        dataset=demo_dataset,
        kind="single",
        n_pairs=100,
        seed=1,
    )
    pairs = list(stimulus_set.pairs.all())
    counts = Counter(frozenset((p.class1, p.class2)) for p in pairs)
    assert max(counts.values()) - min(counts.values()) <= 1
    assert len({p.name for p in pairs}) == 100
    assert all(p.class1 != p.class2 for p in pairs)
    assert stimulus_set.total == 100 * len(SINGLE_LAMS)


def test_stored_png_is_native_resolution_mixup(demo_dataset, django_capture_on_commit_callbacks):
    stimulus_set = build(
        django_capture_on_commit_callbacks,
        name="one",
        dataset=demo_dataset,
        kind="single",
        pairs=["Zero_0_One_1"],
        lams=[0.3],
    )
    stimulus = Stimulus.objects.get(pair__stimulus_set=stimulus_set)
    assert stimulus.name == "mixed_0.3_Zero_0_One_1.png"
    with default_storage.open(stimulus.image.name, "rb") as handle:
        image = decode_png(handle.read())
    images = dataset_arrays(demo_dataset).images
    np.testing.assert_array_equal(image, mixup(images[0], images[1], 0.3))


@pytest.mark.shared_data
def test_hmix_pair_stimulus_matches_published_rounding(
    hmix_dataset, django_capture_on_commit_callbacks
):
    stimulus_set = build(
        django_capture_on_commit_callbacks,
        name="hmix-grid",
        dataset=hmix_dataset,
        kind="grid",
        pairs=["Airplane_1596_Frog_3615"],
    )
    stimulus = Stimulus.objects.get(pair__stimulus_set=stimulus_set, lam=0.3)
    with default_storage.open(stimulus.image.name, "rb") as handle:
        image = decode_png(handle.read()).astype(float)
    arrays = dataset_arrays(hmix_dataset)
    row = {int(i): r for r, i in enumerate(arrays.ids)}
    x1 = arrays.images[row[1596]].astype(float)
    x2 = arrays.images[row[3615]].astype(float)
    np.testing.assert_array_equal(image, np.round(0.3 * x1 + 0.7 * x2))
    assert stimulus_set.total == 11 and stimulus.size_bytes < 4096


BAD_REQUESTS = [
    ({"pairs": ["Zebra_0_One_1"]}, "unknown class 'Zebra'"),
    ({"pairs": ["Zero_0_One_999999"]}, "unknown id 999999"),
    ({"pairs": ["Zero_1_One_0"]}, "is a One, not a Zero"),
    ({"pairs": ["Zero_0_Zero_10"]}, "same class"),
    ({"pairs": ["Zero-0-One-1"]}, "not of the form"),
    ({"pairs": ["Zero_0_One_1", "Zero_0_One_1"]}, "listed twice"),
    ({"pairs": ["Zero_0_One_1"], "lams": [0.5, 1.5]}, "lam must lie in"),
    ({"pairs": ["Zero_0_One_1"], "lams": [-0.1]}, "lam must lie in"),
    ({"n_pairs": 0}, "at least 1"),
    ({}, "either explicit pairs or a number"),
    ({"n_pairs": 2, "kind": "weird"}, "kind must be"),
    ({"n_pairs": 2, "mixing_policy": "blend"}, "mixing policy"),
]


def test_bad_stimulus_requests_leave_nothing(
    demo_dataset, django_capture_on_commit_callbacks, media_root
):
    for extra, message in BAD_REQUESTS:
        kwargs = {"name": "bad", "dataset": demo_dataset, "kind": "grid", **extra}
        with django_capture_on_commit_callbacks(execute=True):
            with pytest.raises(ValidationError, match=message):
                create_stimulus_set(**kwargs)
    assert StimulusSet.objects.count() == Pair.objects.count() == Stimulus.objects.count() == 0
    assert len(stored_files(media_root)) == 1  # only the dataset arrays


def test_make_stimuli_command(demo_dataset, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        call_command(
            "make_stimuli",
            "cmd-set",
            "--dataset",
            "digits",
            "--kind",
            "single",
            "--pair",
            "Zero_0_One_1",
            "--pair",
            "Two_2_Three_3",
            "--lams",
            "0.25",
            "0.75",
        )
    stimulus_set = StimulusSet.objects.get(name="cmd-set")
    assert stimulus_set.done == 4
    with pytest.raises(CommandError, match="lam must lie in"):
        call_command(
            "make_stimuli", "bad", "--dataset", "digits", "--pair", "Zero_0_One_1", "--lams", "2"
        )
    with pytest.raises(CommandError, match="no dataset"):
        call_command("make_stimuli", "bad", "--dataset", "nope", "--random-pairs", "2")


def test_cutmix_set_and_rerun_is_idempotent(
    demo_dataset, django_capture_on_commit_callbacks, media_root
):
    from datasets.services import generate_stimuli

    stimulus_set = build(
        django_capture_on_commit_callbacks,
        name="cm",
        dataset=demo_dataset,
        kind="grid",
        n_pairs=3,
        mixing_policy="cutmix",
    )
    before = sorted(p.name for p in stored_files(media_root))
    generate_stimuli(stimulus_set.pk)
    assert Stimulus.objects.count() == 33
    assert sorted(p.name for p in stored_files(media_root)) == before
    delete_stimulus_set(stimulus_set)
    assert len(stored_files(media_root)) == 1


def test_all_class_pairs_reachable():
    assert len(list(itertools.combinations(range(10), 2))) == 45


def test_worker_processes_store_the_same_png_bytes_as_encoding_here(
    demo_dataset, django_capture_on_commit_callbacks, media_root, monkeypatch
):
    """Generation through the PNG worker processes and in this process store byte-equal
    files (encode_png of the mixed pixels) and the same rows."""
    import os

    from datasets import services
    from datasets.imaging import encode_png
    from datasets.mixing import mix_pairs

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("worker processes need two CPUs")
    monkeypatch.setattr(services, "PARALLEL_MIN_STIMULI", 1)
    monkeypatch.setattr(services, "GENERATION_CHUNK", 7)  # several chunks in flight
    results = {}
    for processes in (2, 1):
        monkeypatch.setattr(services, "GENERATION_PROCESSES", processes)
        stimulus_set = build(
            django_capture_on_commit_callbacks,
            name=f"procs-{processes}",
            dataset=demo_dataset,
            kind="grid",
            n_pairs=20,
            seed=4,
        )
        assert stimulus_set.status == "succeeded" and stimulus_set.done == 20 * 11
        rows = {}
        for s in stimuli_of_set(stimulus_set).select_related("pair"):
            with default_storage.open(s.image.name, "rb") as handle:
                data = handle.read()
            assert len(data) == s.size_bytes and len(s.key) >= 20
            assert s.image.name == f"stimuli/{stimulus_set.pk}/{s.name}"
            rows[(s.pair.position, s.lam, s.name)] = data
        results[processes] = rows
    assert results[2] == results[1] and len(results[2]) == 220
    arrays = dataset_arrays(demo_dataset)
    stimulus_set = StimulusSet.objects.get(name="procs-2")
    pair = stimulus_set.pairs.get(position=13)
    row = {int(i): r for r, i in enumerate(arrays.ids)}
    mixed, kept = mix_pairs(
        arrays.images[[row[pair.id1]]], arrays.images[[row[pair.id2]]], GRID_LAMS, seed=4 + 7
    )
    for j, lam in enumerate(kept):
        stimulus = pair.stimuli.get(lam=lam)
        assert results[2][(13, lam, stimulus.name)] == encode_png(mixed[0, j])


@pytest.mark.django_db(transaction=True)
def test_a_real_celery_worker_generates_a_large_set_with_its_png_workers(start_worker):
    """A Celery prefork worker runs tasks in a daemonic process; generation still starts
    its PNG worker processes there (a set above PARALLEL_MIN_STIMULI), twice in a row."""
    import time

    from datasets import services
    from datasets.services import import_dataset

    worker = start_worker()
    dataset = import_dataset(name="digits-worker", kind="demo")
    n_pairs = services.PARALLEL_MIN_STIMULI // 11 + 5
    sets = [
        create_stimulus_set(name=f"big-{i}", dataset=dataset, kind="grid", n_pairs=n_pairs)
        for i in range(2)
    ]
    deadline = time.monotonic() + 180
    while StimulusSet.objects.filter(status__in=["pending", "running"]).exists():
        assert time.monotonic() < deadline, worker.output()
        time.sleep(0.5)
    for stimulus_set in sets:
        stimulus_set.refresh_from_db()
        assert stimulus_set.status == "succeeded", (stimulus_set.error, worker.output())
        assert stimulus_set.done == stimulus_set.total == n_pairs * 11
        sizes = list(stimuli_of_set(stimulus_set).values_list("size_bytes", flat=True))
        assert len(sizes) == n_pairs * 11 and min(sizes) > 0
        stimulus = stimuli_of_set(stimulus_set).last()
        with default_storage.open(stimulus.image.name, "rb") as handle:
            assert len(handle.read()) == stimulus.size_bytes


@pytest.mark.parametrize("method", IMAGE_MIXING_METHODS)
def test_a_set_is_generated_with_each_image_mixing_method(
    method, db, settings, tmp_path, django_capture_on_commit_callbacks
):
    """Through the service and its task: every stored image of a black/white pair holds
    exactly the share of image 1 (black) its row records, and the set lists those lams."""
    from datasets.services import import_dataset

    settings.HILLMIX_IMPORT_DIRS = [tmp_path]
    np.savez(
        tmp_path / "bw.npz",
        images=np.stack([np.zeros((8, 8), np.uint8), np.full((8, 8), 255, np.uint8)]),
        class_name=np.array(["Black", "White"]),
        ids=np.array([0, 1]),
    )
    dataset = import_dataset(name="bw", kind="npz", path=tmp_path / "bw.npz")
    stimulus_set = build(
        django_capture_on_commit_callbacks,
        name=f"bw-{method}",
        dataset=dataset,
        kind="grid",
        mixing_policy=method,
        pairs=["Black_0_White_1"],
    )
    assert stimulus_set.status == "succeeded" and stimulus_set.mixing_policy == method
    stimuli = list(stimuli_of_set(stimulus_set).order_by("lam"))
    assert [s.lam for s in stimuli] == stimulus_set.lams and len(set(stimulus_set.lams)) == 11
    for stimulus in stimuli:
        with stimulus.image.open("rb") as handle:
            pixels = decode_png(handle.read()).astype(float)
        share = 1 - pixels.mean() / 255  # mixup rounds to whole grey levels
        assert share == pytest.approx(stimulus.lam, abs=0.5 / 255 + 1e-12), stimulus.name


def test_hidden_state_mixing_is_never_offered_for_stimulus_sets(demo_dataset):
    """Manifold Mixup mixes a network's hidden states: the service, the form (and so the
    admin page) and the model refuse it for a stimulus set."""
    from datasets.forms import StimulusSetForm

    with pytest.raises(ValidationError, match="mixing policy must be one of"):
        create_stimulus_set(
            name="hidden",
            dataset=demo_dataset,
            kind="grid",
            mixing_policy="manifold_mixup",
            n_pairs=1,
        )
    assert not StimulusSet.objects.exists()
    offered = [value for value, _ in StimulusSetForm().fields["mixing_policy"].choices]
    assert offered == list(IMAGE_MIXING_METHODS) and "manifold_mixup" not in offered
    field = StimulusSet._meta.get_field("mixing_policy")
    assert [value for value, _ in field.choices] == list(IMAGE_MIXING_METHODS)
