"""Importing the published H-Mix data (Collins et al., UAI 2023) as closed studies."""

from __future__ import annotations

import uuid
from functools import partial
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from .. import interfaces
from ..models import (
    Condition,
    ConditionItem,
    Judgment,
    Participant,
    Session,
    Study,
)

# --- Importing the published H-Mix data ----------------------------------------

HMIX_NAMESPACE = uuid.UUID("5f1c3c1e-7d0a-4a8e-9a57-48d1c0a9e001")
HMIX_DATASET = "hmix-endpoints"


def hmix_study_slug(interface: str) -> str:
    return "hmix-" + interface.replace("_", "-")


def import_hmix(folder: str | Path) -> dict[str, dict]:
    """Load the four H-Mix CSVs and the endpoint images as datasets, stimulus sets,
    closed studies, conditions, participants, sessions and judgments.

    Subject ids become participants' pseudonymous ids; conditions and response times
    are kept. A study that is already imported is left alone, so a second import
    changes nothing.
    """
    from datasets.models import Dataset, Stimulus, StimulusSet
    from datasets.services import (
        create_stimulus_set,
        generate_stimuli,
        import_dataset,
        register_stimuli,
    )

    from .. import hmix

    folder = Path(folder)
    trials = {interface: read(folder) for interface, read in hmix.READERS.items()}
    dataset = Dataset.objects.filter(name=HMIX_DATASET).first() or import_dataset(
        name=HMIX_DATASET, kind="npz", path=folder / "hmix_endpoints.npz"
    )
    grid_of = {i: interfaces.get(i).grid for i in trials}
    grid_pairs = list(dict.fromkeys(t.pair for i in trials if grid_of[i] for t in trials[i]))
    grid_set = StimulusSet.objects.filter(name="hmix-grid").first()
    if grid_set is None:
        grid_set = create_stimulus_set(
            name="hmix-grid", dataset=dataset, kind="grid", pairs=grid_pairs
        )
    if grid_set.status != StimulusSet.Status.SUCCEEDED:
        grid_set = generate_stimuli(grid_set.pk)
    single_set = StimulusSet.objects.filter(name="hmix-single").first() or register_stimuli(
        name="hmix-single",
        dataset=dataset,
        kind="single",
        entries=[(t.pair, t.stimulus_lam) for i in trials if not grid_of[i] for t in trials[i]],
    )
    stimulus_of = {
        (s.pair.name, round(s.lam, 4)): s
        for s in Stimulus.objects.filter(pair__stimulus_set=single_set).select_related("pair")
    }
    pair_of = {p.name: p for p in grid_set.pairs.all()}

    report = {}
    for interface, rows in trials.items():
        slug = hmix_study_slug(interface)
        if Study.objects.filter(slug=slug).exists():
            report[interface] = {"status": "already imported"}
            continue
        grid = grid_of[interface]
        with transaction.atomic():
            study = Study.objects.create(
                slug=slug,
                title=hmix.mapping(interface).title,
                interface=interface,
                stimulus_set=grid_set if grid else single_set,
                status=Study.Status.CLOSED,
                consent_text="Imported from the published H-Mix data (Collins et al., UAI 2023).",
            )

            unit = partial(_hmix_unit, grid, pair_of, stimulus_of)
            report[interface] = _import_hmix_study(study, rows, unit)
    return report


def _hmix_unit(grid: bool, pair_of: dict, stimulus_of: dict, trial) -> tuple:
    """The (pair, stimulus) a trial showed: the pair alone for grid interfaces."""
    if grid:
        return (pair_of[trial.pair.name], None)
    stimulus = stimulus_of[(trial.pair.name, round(trial.stimulus_lam, 4))]
    return (stimulus.pair, stimulus)


def _import_hmix_study(study: Study, rows: list, unit) -> dict:
    by_condition: dict[str, list] = {}
    by_subject: dict[str, list] = {}
    for row in rows:
        by_condition.setdefault(row.condition, []).append(row)
        by_subject.setdefault(row.subject, []).append(row)
    conditions, positions = {}, {}
    for i, name in enumerate(sorted(by_condition, key=lambda c: (len(c), c))):
        condition = Condition.objects.create(study=study, name=name, position=i)
        conditions[name] = condition
        units = list(dict.fromkeys(unit(r) for r in by_condition[name]))
        ConditionItem.objects.bulk_create(
            ConditionItem(condition=condition, position=k, pair=pair, stimulus=stimulus)
            for k, (pair, stimulus) in enumerate(units)
        )
        positions[name] = {u: k for k, u in enumerate(units)}
    sessions, trial_index = {}, {}
    for subject, subject_rows in by_subject.items():
        participant, _ = Participant.objects.get_or_create(public_id=subject)
        condition_name = subject_rows[0].condition
        ordered = sorted(subject_rows, key=lambda r: r.source_index)
        sessions[subject] = Session.objects.create(
            study=study,
            participant=participant,
            condition=conditions[condition_name],
            trial_order=[
                {
                    "item": positions[condition_name][unit(r)],
                    "repeat": r.is_repeat,
                    "source_index": r.source_index,
                }
                for r in ordered
            ],
            position=len(ordered),
            state=Session.State.COMPLETE,
            completed_at=timezone.now(),
        )
        trial_index.update({(subject, r.source_index): k for k, r in enumerate(ordered)})
    # File order, so the aggregates list answers in the order H-Mix did.
    Judgment.objects.bulk_create(
        Judgment(
            session=sessions[r.subject],
            study=study,
            trial_index=trial_index[(r.subject, r.source_index)],
            interface=study.interface,
            pair=unit(r)[0],
            stimulus=unit(r)[1],
            is_repeat=r.is_repeat,
            response=r.response,
            lam=r.lam,
            confidence=r.confidence,
            rt_ms=r.rt_ms,
            idempotency_key=uuid.uuid5(
                HMIX_NAMESPACE, f"{study.interface}:{r.subject}:{r.source_index}"
            ),
        )
        for r in rows
    )
    return {
        "status": "imported",
        "judgments": len(rows),
        "participants": len(by_subject),
        "conditions": len(conditions),
    }
