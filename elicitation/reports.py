"""Reads for researchers: progress, aggregates, data quality, export rows.

Kept apart from selectors.py (the participant flow's reads) because these scan
whole studies; the numbers themselves come from the pure analytics module.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import QuerySet, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from . import analytics
from .models import GRID_INTERFACES, Interface, Judgment, Session, Study


def counted(judgments: QuerySet[Judgment], include_excluded: bool = False) -> QuerySet[Judgment]:
    """The exclusion rule, the one every export, aggregate and dashboard applies: the
    judgments of participants a researcher excluded are left out unless
    `include_excluded` asks for them."""
    return judgments if include_excluded else judgments.filter(session__excluded=False)


def include_excluded_param(value: str | None) -> bool:
    """The `include_excluded` query parameter of the exclusion rule, read the same way by
    the API and the dashboard: 1/true/yes/on or 0/false/no/off/absent, in any case.
    Raises ValueError for anything else (answered with a 400)."""
    text = (value or "").strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(f"include_excluded must be true or false, not {value!r}")


def study_judgments(study: Study, include_excluded: bool = False) -> QuerySet[Judgment]:
    """A study's judgments under the exclusion rule (`counted`)."""
    return counted(Judgment.objects.filter(study=study), include_excluded)


# --- progress -------------------------------------------------------------------


def study_progress(study: Study) -> list[dict]:
    """Per condition: started, completed, abandoned (idle past the stale limit),
    in progress, and the median completion time in minutes."""
    stale_before = timezone.now() - timedelta(minutes=study.stale_after_minutes)
    rows = {
        c.pk: {
            "condition": c.name,
            "started": 0,
            "completed": 0,
            "abandoned": 0,
            "in_progress": 0,
            "durations": [],
        }
        for c in study.conditions.all()
    }
    sessions = Session.objects.filter(study=study).values_list(
        "condition_id", "state", "last_seen_at", "started_at", "completed_at"
    )
    for condition_id, state, last_seen, started, completed in sessions:
        row = rows[condition_id]
        row["started"] += 1
        if state == Session.State.COMPLETE:
            row["completed"] += 1
            if completed and started:
                row["durations"].append((completed - started).total_seconds() / 60)
        elif last_seen < stale_before:
            row["abandoned"] += 1
        else:
            row["in_progress"] += 1
    for row in rows.values():
        durations = row.pop("durations")
        row["median_minutes"] = round(statistics.median(durations), 1) if durations else None
    return list(rows.values())


def progress_totals(progress: list[dict]) -> dict:
    keys = ["started", "completed", "abandoned", "in_progress"]
    return {k: sum(row[k] for row in progress) for k in keys}


# --- aggregates -----------------------------------------------------------------


def stimulus_aggregates(study: Study, include_excluded: bool = False) -> dict[str, dict]:
    """Per stimulus, the layout of H-Mix's processed_hmix_inferences.json."""
    rows = (
        study_judgments(study, include_excluded)
        .filter(stimulus__isnull=False, lam__isnull=False)
        .order_by("pk")
        .values_list(
            "stimulus__name",
            "stimulus__lam",
            "lam",
            "confidence",
            "pair__class1",
            "pair__class2",
            "pair__name",
        )
    )
    grouped: dict[str, dict] = {}
    for name, true_lam, lam, confidence, class1, class2, pair_name in rows.iterator():
        entry = grouped.setdefault(
            name,
            {
                "true": true_lam,
                "lams": [],
                "conf": [],
                "classes": [class1, class2],
                "pair": pair_name,
            },
        )
        entry["lams"].append(lam)
        entry["conf"].append(confidence)
    result = {}
    for name, entry in grouped.items():
        aggregate = analytics.stimulus_aggregate(entry["true"], entry["lams"], entry["conf"])
        aggregate["Endpoints"] = entry["classes"]
        aggregate["Class Pair"] = f"{entry['pair']}.png"
        result[name] = aggregate
    return result


def confidence_by_true_lam(study: Study, include_excluded: bool = False) -> list[dict]:
    """Mean and std over per-stimulus mean confidences, for each true lam."""
    per_stimulus = defaultdict(list)
    true_lams = {}
    rows = (
        study_judgments(study, include_excluded)
        .filter(stimulus__isnull=False, confidence__isnull=False)
        .values_list("stimulus_id", "stimulus__lam", "confidence")
    )
    for stimulus_id, true_lam, confidence in rows.iterator():
        per_stimulus[stimulus_id].append(confidence)
        true_lams[stimulus_id] = true_lam
    means = {k: sum(v) / len(v) for k, v in per_stimulus.items()}
    return [
        m.__dict__
        for m in analytics.mean_std_by([true_lams[k] for k in means], list(means.values()))
    ]


def perceived_by_true_lam(study: Study, include_excluded: bool = False) -> list[dict]:
    rows = list(
        study_judgments(study, include_excluded)
        .filter(stimulus__isnull=False, lam__isnull=False)
        .values_list("stimulus__lam", "lam")
    )
    return [m.__dict__ for m in analytics.mean_std_by([r[0] for r in rows], [r[1] for r in rows])]


def midpoint_distribution(studies: QuerySet[Study], include_excluded: bool = False) -> dict:
    """Per grid interface: how often each lam was chosen as the 50/50 point."""
    result = {}
    for interface in sorted(GRID_INTERFACES):
        lams, grid = [], set()
        for study in studies.filter(interface=interface).select_related("stimulus_set"):
            grid.update(float(x) for x in study.stimulus_set.lams)
            lams += list(
                study_judgments(study, include_excluded)
                .filter(lam__isnull=False)
                .values_list("lam", flat=True)
            )
        if lams:
            result[interface] = {
                "n": len(lams),
                "counts": analytics.midpoint_histogram(lams, sorted(grid)),
            }
    return result


def class_pair_midpoint_table(study: Study, include_excluded: bool = False) -> list[dict]:
    rows = (
        study_judgments(study, include_excluded)
        .filter(lam__isnull=False)
        .values_list("pair__class1", "pair__class2", "lam")
    )
    return analytics.class_pair_midpoints(rows.iterator())


def soft_label_summary(study: Study, include_excluded: bool = False) -> list[dict]:
    """Per stimulus of a soft-label study: analytics.soft_label_stimulus (mean label on
    class 1, class 2 and the rest, entropy, agreement with the mixup label) plus the
    stimulus name, sorted by true lam then name. Judgments without a stored soft label
    are skipped."""
    class_names = list(study.stimulus_set.dataset.class_names)
    index = {name: i for i, name in enumerate(class_names)}
    grouped: dict[str, dict] = {}
    rows = (
        study_judgments(study, include_excluded)
        .filter(stimulus__isnull=False)
        .order_by("pk")
        .values_list("stimulus__name", "stimulus__lam", "pair__class1", "pair__class2", "response")
    )
    for name, true_lam, class1, class2, response in rows.iterator(chunk_size=EXPORT_CHUNK):
        label = (response or {}).get("soft_label")
        if not label or len(label) != len(class_names) or not {class1, class2} <= index.keys():
            continue
        entry = grouped.setdefault(
            name, {"lam": true_lam, "class1": index[class1], "class2": index[class2], "labels": []}
        )
        entry["labels"].append(label)
    summary = [
        {
            "stimulus": name,
            **analytics.soft_label_stimulus(e["lam"], e["class1"], e["class2"], e["labels"]),
        }
        for name, e in grouped.items()
    ]
    return sorted(summary, key=lambda row: (row["true_lam"], row["stimulus"]))


# --- data quality ----------------------------------------------------------------


@dataclass(frozen=True)
class QualityThresholds:
    max_quiz_attempts: int = settings.HILLMIX_QUALITY["max_quiz_attempts"]
    min_median_rt_ms: float = settings.HILLMIX_QUALITY["min_median_rt_ms"]
    max_repeat_disagreement: float = settings.HILLMIX_QUALITY["max_repeat_disagreement"]


def quality_report(study: Study, thresholds: QualityThresholds) -> list[dict]:
    """One row per session with its flags: many quiz attempts, very fast answers,
    repeat trials that disagree with the first answer."""
    by_session: dict[int, list] = defaultdict(list)
    rows = (
        Judgment.objects.filter(study=study)
        .order_by("trial_index")
        .values_list("session_id", "pair_id", "stimulus_id", "lam", "rt_ms", "is_repeat")
    )
    for session_id, *rest in rows.iterator():
        by_session[session_id].append(rest)
    report = []
    sessions = Session.objects.filter(study=study).select_related("participant", "condition")
    for session in sessions.order_by("started_at"):
        answers = by_session.get(session.pk, [])
        first_answer = {}
        repeats = []
        for pair_id, stimulus_id, lam, _rt, is_repeat in answers:
            key = (pair_id, stimulus_id)
            if is_repeat and key in first_answer and lam is not None:
                repeats.append((lam, first_answer[key]))
            elif not is_repeat and lam is not None:
                first_answer.setdefault(key, lam)
        median_rt = statistics.median([a[3] for a in answers]) if answers else None
        disagreement = analytics.repeat_disagreement(repeats)
        flags = []
        if session.quiz_attempts > thresholds.max_quiz_attempts:
            flags.append(f"{session.quiz_attempts} quiz attempts")
        if median_rt is not None and median_rt < thresholds.min_median_rt_ms:
            flags.append(f"median response {median_rt:.0f} ms")
        if disagreement is not None and disagreement > thresholds.max_repeat_disagreement:
            flags.append(f"repeats differ by {disagreement:.2f}")
        report.append(
            {
                "session": session,
                "participant": session.participant.public_id,
                "condition": session.condition.name,
                "state": session.state,
                "answers": len(answers),
                "quiz_attempts": session.quiz_attempts,
                "median_rt_ms": median_rt,
                "repeat_disagreement": disagreement,
                "flags": flags,
                "excluded": session.excluded,
            }
        )
    return report


# --- export rows ------------------------------------------------------------------

EXPORT_COLUMNS = [
    ("id", "pk"),
    ("study", "study__slug"),
    ("interface", "interface"),
    ("participant", "session__participant__public_id"),
    ("condition", "session__condition__name"),
    ("trial_index", "trial_index"),
    ("is_repeat", "is_repeat"),
    ("pair", "pair__name"),
    ("class1", "pair__class1"),
    ("id1", "pair__id1"),
    ("class2", "pair__class2"),
    ("id2", "pair__id2"),
    ("stimulus", "stimulus__name"),
    ("true_lam", "stimulus__lam"),
    ("lam", "lam"),
    ("confidence", "confidence"),
    ("rt_ms", "rt_ms"),
    ("client_started_at", "client_started_at"),
    ("client_answered_at", "client_answered_at"),
    ("excluded", "session__excluded"),
    ("created_at", "created_at"),
    ("response", "response_text"),
]
# Columns holding JSON text (cast in SQL: no decoding and encoding again per row).
EXPORT_JSON_COLUMNS = ["response"]
EXPORT_CHUNK = 2000


def export_queryset(judgments: QuerySet[Judgment]) -> QuerySet:
    """The SELECT behind an export: one flat row per judgment, in EXPORT_COLUMNS order."""
    return (
        judgments.annotate(response_text=Cast("response", TextField()))
        .order_by("pk")
        .values_list(*[field for _, field in EXPORT_COLUMNS])
    )


def export_rows(judgments: QuerySet[Judgment]) -> Iterator[tuple]:
    """Judgment rows for export, streamed from the database a chunk at a time."""
    return export_queryset(judgments).iterator(chunk_size=EXPORT_CHUNK)


HMIX_COLUMNS = {
    Interface.CONSTRUCT: [
        "subject",
        "condition",
        "rt",
        "task",
        "class_pair",
        "start_value",
        "final_value",
    ],
    Interface.SELECT_SHUFFLED: ["subject", "condition", "rt", "task", "class_pair", "response"],
    Interface.INFER: [
        "subject",
        "condition",
        "rt",
        "task",
        "responses",
        "filename",
        "label1",
        "label2",
        "mixtureCoeff",
        "id1",
        "id2",
        "class_pair",
    ],
    Interface.SOFT_LABEL: [
        "subject",
        "condition",
        "rt",
        "task",
        "response",
        "filename",
        "label1",
        "label2",
        "mixtureCoeff",
        "id1",
        "id2",
    ],
}


def hmix_rows(study: Study, include_excluded: bool = False) -> Iterator[list]:
    """The study's judgments in the column layout of the H-Mix CSV for its interface."""
    from .hmix import hmix_response_fields, task_name

    columns = HMIX_COLUMNS[study.interface]
    rows = (
        study_judgments(study, include_excluded)
        .order_by("session__started_at", "session_id", "trial_index")
        .values_list(
            "session__participant__public_id",
            "session__condition__name",
            "rt_ms",
            "is_repeat",
            "pair__name",
            "pair__class1",
            "pair__id1",
            "pair__class2",
            "pair__id2",
            "stimulus__name",
            "stimulus__lam",
            "response",
        )
    )
    for (
        subject,
        condition,
        rt,
        repeat,
        pair,
        class1,
        id1,
        class2,
        id2,
        stimulus,
        true_lam,
        response,
    ) in rows.iterator(chunk_size=EXPORT_CHUNK):
        values = {
            "subject": subject,
            "condition": condition,
            "rt": rt,
            "task": task_name(study.interface, repeat),
            "class_pair": pair,
            "filename": stimulus,
            "label1": class1,
            "label2": class2,
            "mixtureCoeff": true_lam,
            "id1": id1,
            "id2": id2,
            **hmix_response_fields(study.interface, response),
        }
        if study.interface == Interface.INFER:
            values["class_pair"] = f"{pair}.png"
        yield [values[c] for c in columns]
