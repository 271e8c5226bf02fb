"""Reads for training: a job's base split, labelled mixed points and evaluation data."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage

from datasets.imaging import decode_png
from datasets.models import Stimulus
from datasets.selectors import dataset_arrays
from elicitation import interfaces
from elicitation.models import Judgment
from elicitation.reports import counted

from . import policies
from .config import EvalData, TrainData
from .models import TrainingJob


def heldout_size(n: int, heldout_fraction: float) -> int:
    """How many of a dataset's n images heldout_split holds out: round(n * fraction)."""
    return int(round(n * heldout_fraction))


def heldout_split(n: int, heldout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, held out) of a dataset, fixed by the seed."""
    order = np.random.default_rng(seed).permutation(n)
    cut = heldout_size(n, heldout_fraction)
    return np.sort(order[cut:]), np.sort(order[:cut])


@dataclass
class JobData:
    train: TrainData
    evaluation: EvalData
    label_map: policies.OnlineLabelMap | None = None
    # Without CIFAR-10H: held-out mixed stimuli and the studies' mean soft labels on them.
    human_reference: EvalData | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class _Point:
    stimulus: Stimulus
    judgments: policies.PointJudgments
    rows: tuple[int, int]


def _judged_points(job: TrainingJob, class_index: dict[str, int], row_of_id: dict[int, int]):
    """Every stimulus of the job's sets with the judgments of the job's studies on it,
    and the midpoints (class1, class2, lam) the grid studies gave. What a judgment
    yields is its interface's (InterfaceSpec.evidence); an unknown interface raises
    LookupError rather than being left out."""
    per_stimulus: dict[tuple[str, float], list] = defaultdict(list)
    per_pair: dict[str, list] = defaultdict(list)
    midpoints = []
    judgments = counted(Judgment.objects.filter(study__in=job.studies.all())).values_list(
        "interface",
        "pair__name",
        "pair__class1",
        "pair__class2",
        "stimulus__lam",
        "lam",
        "confidence",
        "response",
    )
    for interface, pair, class1, class2, true_lam, lam, confidence, response in judgments:
        evidence = interfaces.get(interface).evidence(lam, confidence, response)
        if evidence is None:
            continue
        if evidence.kind == "midpoint":
            per_pair[pair].append((evidence.value, evidence.confidence))
            if class1 in class_index and class2 in class_index:
                midpoints.append((class_index[class1], class_index[class2], evidence.value))
        else:
            per_stimulus[(pair, round(true_lam, 4))].append(
                (evidence.kind, evidence.value, evidence.confidence)
            )
    points = []
    stimuli = Stimulus.objects.filter(
        pair__stimulus_set__in=job.stimulus_sets.all()
    ).select_related("pair")
    for stimulus in stimuli:
        pair = stimulus.pair
        if pair.id1 not in row_of_id or pair.id2 not in row_of_id or not stimulus.image:
            continue
        point = policies.PointJudgments(
            class_index[pair.class1], class_index[pair.class2], stimulus.lam
        )
        for midpoint, confidence in per_pair.get(pair.name, []):
            point.perceived.append(policies.perceived_from_midpoint(stimulus.lam, midpoint))
            point.confidences.append(confidence)
        for kind, value, confidence in per_stimulus.get((pair.name, round(stimulus.lam, 4)), []):
            if kind == "perceived":
                point.perceived.append(value)
                point.confidences.append(confidence)
            else:
                point.soft_labels.append(np.asarray(value))
        points.append(_Point(stimulus, point, (row_of_id[pair.id1], row_of_id[pair.id2])))
    return points, midpoints


def _stimulus_pixels(points: list[_Point]) -> np.ndarray:
    images = []
    for p in points:
        with default_storage.open(p.stimulus.image.name, "rb") as handle:
            images.append(decode_png(handle.read()))
    return np.stack(images)


def cifar10h_probs() -> np.ndarray | None:
    path = Path(settings.HILLMIX_CIFAR10H_PROBS)
    return np.load(path) if path.exists() else None


def job_data(job: TrainingJob, seed: int) -> JobData:
    arrays = dataset_arrays(job.dataset)
    class_index = {name: i for i, name in enumerate(arrays.class_names)}
    num_classes = len(arrays.class_names)
    train_rows, heldout_rows = heldout_split(len(arrays.ids), job.heldout_fraction, job.split_seed)
    train_row_of_id = {int(arrays.ids[r]): int(r) for r in train_rows}
    notes = []
    points, midpoints = _judged_points(job, class_index, train_row_of_id)
    policy = policies.get_policy(job.policy)
    if job.studies.exists():
        needs_soft = policy.evidence == "soft"
        points = [
            p for p in points if (p.judgments.soft_labels if needs_soft else p.judgments.perceived)
        ]
    curves = None
    if policy.fits_curves:
        curves = policy.fit_curves([p.judgments for p in points], midpoints)
        notes.append(f"{job.policy}: {len(curves.curves)} class pairs with their own curve")
    label_map = None
    mixed_images = np.zeros((0, *arrays.images.shape[1:]), dtype=np.uint8)
    mixed_labels = np.zeros((0, num_classes))
    if job.online_alpha > 0:
        label_map = policy.label_map(num_classes, curves)
        notes.append(f"online {job.online_mixing}, alpha {job.online_alpha}")
    elif policy.adds_points and points:
        mixed_images = _stimulus_pixels(points)
        mixed_labels = policies.label_points(
            job.policy,
            [p.judgments for p in points],
            num_classes,
            np.random.default_rng(seed),
            curves,
        )
    notes.append(
        f"{len(train_rows)} base images, {len(mixed_images)} mixed points, "
        f"{len(heldout_rows)} held out"
    )
    soft, human_reference = None, None
    if job.dataset.id_space == "cifar10-test":
        probs = cifar10h_probs()
        if probs is not None:
            soft = probs[arrays.ids[heldout_rows]]
            notes.append("cross-entropy against CIFAR-10H")
    if soft is None:
        heldout_row_of_id = {int(arrays.ids[r]): int(r) for r in heldout_rows}
        labelled, _ = _judged_points(job, class_index, heldout_row_of_id)
        labelled = [p for p in labelled if p.judgments.soft_labels]
        if labelled:
            human_reference = EvalData(
                _stimulus_pixels(labelled),
                np.array([p.judgments.class1 for p in labelled]),
                np.stack([np.mean(p.judgments.soft_labels, axis=0) for p in labelled]),
            )
            notes.append(
                f"cross-entropy against the studies' soft labels on {len(labelled)} "
                "held-out stimuli"
            )
    return JobData(
        train=TrainData(
            arrays.images[train_rows],
            arrays.labels[train_rows],
            mixed_images,
            mixed_labels,
            num_classes,
        ),
        evaluation=EvalData(arrays.images[heldout_rows], arrays.labels[heldout_rows], soft),
        label_map=label_map,
        human_reference=human_reference,
        notes=notes,
    )


# The comparison page's figures, in its column order: (metrics key, heading, lower is
# better). Each is summarised over seeds as mean +- std with a 95% t interval.
COMPARED_METRICS = [
    ("ce_human", "CE (human)", True),
    ("tv_human", "TV (human)", True),
    ("entropy_spearman", "entropy rank corr.", False),
    ("fgsm_ce", "FGSM CE", True),
    ("fgsm_accuracy", "FGSM acc.", False),
    ("pgd_ce", "PGD CE", True),
    ("pgd_accuracy", "PGD acc.", False),
    ("ece", "Calib: ECE", True),
    ("rms_calibration_error", "Calib: RMS", True),
    ("accuracy", "accuracy", False),
    ("top2_accuracy", "top-2 acc.", False),
    ("worst_class_accuracy", "worst-class acc.", False),
]


def _row_key(job: TrainingJob) -> tuple[str, str]:
    """(policy, how it mixed): jobs that mix online by different methods or alphas are
    different rows."""
    online = f"online {job.online_mixing}, alpha {job.online_alpha:g}" if job.online_alpha else ""
    return job.policy, online


def comparison_table(jobs) -> list[dict]:
    """One row per policy (and online mixing): each figure over every seed of the given
    jobs as metrics.seed_summary (mean, sample std, 95% t interval, n), plus
    `per_seed`, metric -> {seed: value} (a seed run twice: the mean of its runs), which
    policy_differences pairs by seed. Rows in registry order."""
    from .metrics import seed_summary

    rows: dict[tuple[str, str], dict] = {}
    for job in jobs.prefetch_related("results"):
        key = _row_key(job)
        row = rows.setdefault(
            key,
            {
                "policy": key[0],
                "mixing": key[1],
                "label": f"{key[0]} ({key[1]})" if key[1] else key[0],
                "jobs": [],
                "runs": {m: defaultdict(list) for m, _, _ in COMPARED_METRICS},
            },
        )
        row["jobs"].append(job)
        for result in job.results.all():
            for m, _, _ in COMPARED_METRICS:
                if result.metrics.get(m) is not None:
                    row["runs"][m][result.seed].append(result.metrics[m])
    order = {name: i for i, name in enumerate(policies.POLICIES)}
    table = []
    for key in sorted(rows, key=lambda k: (order.get(k[0], len(order)), k[1])):
        row = rows[key]
        runs = row.pop("runs")
        row["per_seed"] = {
            m: {seed: float(np.mean(v)) for seed, v in by_seed.items()}
            for m, by_seed in runs.items()
        }
        row["stats"] = {m: seed_summary(list(v.values())) for m, v in row["per_seed"].items()}
        row["cells"] = [row["stats"][m] for m, _, _ in COMPARED_METRICS]
        table.append(row)
    return table


def policy_differences(table: list[dict]) -> list[dict]:
    """Every pair of rows of comparison_table and every figure both have on at least
    two common seeds: the per-seed differences (first row minus second) with their
    mean, 95% t interval and two-sided paired t-test (metrics.paired_difference);
    `exceeds_noise` when p < 0.05. No correction for the number of comparisons: with
    many rows, some differences pass by chance."""
    from .metrics import paired_difference

    found = []
    for i, first in enumerate(table):
        for second in table[i + 1 :]:
            for metric, heading, lower_better in COMPARED_METRICS:
                diff = paired_difference(first["per_seed"][metric], second["per_seed"][metric])
                if diff is None:
                    continue
                better = first if (diff["mean"] < 0) == lower_better else second
                found.append(
                    {
                        **diff,
                        "metric": metric,
                        "heading": heading,
                        "first": first["label"],
                        "second": second["label"],
                        "better": better["label"] if diff["mean"] != 0 else None,
                    }
                )
    return found
