"""Stimulus generation throughput and size.

Prints stimuli per second for 1,000 pairs x 11 lam values through the platform's
path (vectorised mix + PNG encode in worker processes + storage + bulk database
rows), against a plain per-image Pillow blend-and-save loop measured in the same
run, and the bytes a Select-Shuffled trial (11 stimuli) costs against the original
suite's ~1.08 MB.

    .venv/bin/python bench/stimuli.py [--pairs 1000]
"""

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
from _django import setup

ORIGINAL_TRIAL_BYTES = 1.08e6  # 11 matplotlib renderings of ~100 KB each


def source_images(shared: Path) -> tuple[str, Path]:
    npz = shared / "hmix" / "hmix_endpoints.npz"
    if npz.exists():
        return "H-Mix endpoint images (real CIFAR-10)", npz
    rng = np.random.default_rng(0)
    # Smooth random images compress like photographs, unlike white noise.
    base = rng.integers(0, 256, (500, 8, 8, 3), dtype=np.uint8)
    images = base.repeat(4, axis=1).repeat(4, axis=2)
    path = Path("/tmp/hillmix-bench-synthetic.npz")
    names = np.array(["Airplane", "Automobile", "Bird", "Cat", "Deer"] * 100)
    np.savez(path, images=images, class_name=names, ids=np.arange(500))
    return "synthetic 32x32 RGB images (shared data absent)", path


def baseline(images: np.ndarray, rows: np.ndarray, lams: list[float], out: Path) -> float:
    """What the original tooling did: one Pillow blend and one file per stimulus."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for p, (i1, i2) in enumerate(rows):
        a, b = Image.fromarray(images[i1]), Image.fromarray(images[i2])
        for lam in lams:
            Image.blend(b, a, lam).save(out / f"{p}_{lam}.png")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    work = setup()
    from django.conf import settings

    from datasets.naming import GRID_LAMS, PairKey
    from datasets.pairing import locate_pairs
    from datasets.selectors import dataset_arrays, stimuli_of_set
    from datasets.services import create_stimulus_set, import_dataset

    label, npz = source_images(Path(settings.SHARED_DATA_DIR))
    dataset = import_dataset(name="bench", kind="npz", path=npz, any_path=True)
    lams = list(GRID_LAMS)
    n = args.pairs * len(lams)

    # Disk timings here are noisy: interleave the two paths and keep the best of each.
    platform_runs, baseline_runs = [], []
    for repeat in range(args.repeats):
        start = time.perf_counter()
        stimulus_set = create_stimulus_set(
            name=f"bench-grid-{repeat}", dataset=dataset, kind="grid", n_pairs=args.pairs, seed=0
        )
        platform_runs.append(time.perf_counter() - start)
        stimulus_set.refresh_from_db()
        assert stimulus_set.status == "succeeded" and stimulus_set.done == n, stimulus_set.error
        keys = [PairKey(p.class1, p.id1, p.class2, p.id2) for p in stimulus_set.pairs.all()]
        rows = locate_pairs(dataset_arrays(dataset), keys)
        baseline_runs.append(
            baseline(dataset_arrays(dataset).images, rows, lams, work / f"baseline{repeat}")
        )
    platform_s, baseline_s = min(platform_runs), min(baseline_runs)

    sizes = np.array(stimuli_of_set(stimulus_set).values_list("size_bytes", flat=True))
    per_trial = sizes.mean() * len(lams)
    print(f"source: {label}; {args.pairs} pairs x {len(lams)} lam values = {n} stimuli")
    print(
        f"platform (mix + PNG + storage + rows): {n / platform_s:10.0f} stimuli/s "
        f"(best of {args.repeats}: {platform_s:.2f} s)"
    )
    print(
        f"baseline (Pillow blend + save loop):   {n / baseline_s:10.0f} stimuli/s "
        f"({baseline_s:.2f} s)"
    )
    print(f"speed ratio platform / baseline: {baseline_s / platform_s:.2f}x")
    print(
        f"bytes per Select-Shuffled trial (11 stimuli): {per_trial / 1e3:.1f} KB "
        f"vs original ~{ORIGINAL_TRIAL_BYTES / 1e6:.2f} MB "
        f"({ORIGINAL_TRIAL_BYTES / per_trial:.0f}x smaller)"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
