"""Publishing studies as a dataset others can load: Parquet judgments, the stimuli as PNG
files and a dataset card, the way H-Mix (Collins et al., UAI 2023) and CIFAR-10H were
published.

The layout, under one folder (or one zip):

    README.md                 the dataset card: a YAML header (licence, the Hugging Face
                              `configs` and `dataset_info`, the studies with their
                              interfaces, counts, exclusion rule and consent text) and prose
    data/judgments.parquet    one row per counted judgment (COLUMNS)
    stimuli/<set>/<name>.png  every stimulus a published judgment showed that the
                              platform holds an image of

It loads with `datasets.load_dataset("parquet", data_files="data/judgments.parquet")`
or `pandas.read_parquet`. Rows follow TFDS `cifar10_h` (annotator id, trial index,
reaction time, the image's file name) in long form, one judgment a row. Annotators are
numbered 0, 1, ... in the order the platform first saw them, the same number in every
study of one publication; neither the platform's public id nor a recruiter id (nor
feedback, timestamps or addresses) leaves the database. Only counted judgments are
published (`reports.counted`: live sessions, excluded participants left out).
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from django.core.files.storage import default_storage

from datasets.models import Stimulus

from . import interfaces
from .models import Judgment, Study
from .reports import counted

DATA_FILE = "data/judgments.parquet"
STIMULI_FOLDER = "stimuli"
DEFAULT_LICENSE = "cc-by-4.0"
EXCLUSION_RULE = (
    "Only judgments of live sessions are published: pilot, preview and simulated sessions "
    "never are, nor are the judgments of participants the researchers excluded (for "
    "failed quality checks) or who withdrew and had their data erased."
)

# (column, Arrow type, meaning): the Parquet schema and the card's column table.
COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("study", pa.string(), "the study's short name (slug)"),
    ("interface", pa.string(), "the elicitation interface (construct, select_shuffled, ...)"),
    ("annotator_id", pa.int32(), "the annotator, numbered within this publication"),
    ("condition", pa.string(), "the condition (batch of stimuli) the annotator was given"),
    ("trial_index", pa.int32(), "the trial's position in the annotator's session (from 0)"),
    ("is_repeat", pa.bool_(), "a repeat of an earlier trial (consistency check)"),
    ("pair", pa.string(), "the image pair, Class1_id1_Class2_id2"),
    ("class1", pa.string(), "the class of image 1 (lam is its weight)"),
    ("id1", pa.int32(), "image 1's index in the source dataset"),
    ("class2", pa.string(), "the class of image 2"),
    ("id2", pa.int32(), "image 2's index in the source dataset"),
    ("stimulus", pa.string(), "single-image interfaces: the shown stimulus's name"),
    ("stimulus_file", pa.string(), "its PNG inside this publication (null: no image held)"),
    ("true_lam", pa.float64(), "single-image interfaces: the shown stimulus's effective lam"),
    ("grid_files", pa.list_(pa.string()), "grid interfaces: the pair's PNGs, by lam"),
    ("grid_lams", pa.list_(pa.float64()), "grid interfaces: the lams of grid_files"),
    ("lam", pa.float64(), "the answer's lam: perceived share of image 1 or chosen midpoint"),
    ("confidence", pa.float64(), "the annotator's confidence, 0-1 (null: not asked)"),
    ("rt_ms", pa.float64(), "response time in milliseconds, from the trial on screen"),
    ("response", pa.string(), "the whole answer as the interface stored it (JSON)"),
]
SCHEMA = pa.schema([(name, kind) for name, kind, _ in COLUMNS])
# The Hugging Face card's feature types for COLUMNS.
_HF_TYPES = {"string": "string", "int32": "int32", "bool": "bool", "double": "float64"}


@dataclass
class Publication:
    """What a publication holds: its rows (COLUMNS, in order), the stimulus files
    (path inside the publication -> Stimulus) and per-study counts."""

    studies: list[Study]
    rows: list[dict]
    files: dict[str, Stimulus] = field(default_factory=dict)
    counts: dict[str, dict] = field(default_factory=dict)


def stimulus_path(stimulus: Stimulus) -> str:
    """Where a stimulus's PNG lies inside a publication: stimuli/<set name>/<file name>
    (the set keeps names of different sets apart)."""
    return f"{STIMULI_FOLDER}/{stimulus.pair.stimulus_set.name}/{stimulus.name}"


class StudyStillOpen(ValueError):
    """A study that still takes participants cannot be published."""


def collect(studies: Sequence[Study]) -> Publication:
    """Read the counted judgments of `studies` into publication rows (one query for the
    judgments, one for the grid stimuli). Raises ValueError for no study or a study
    named twice, and StudyStillOpen for a study that is not closed."""
    if not studies:
        raise ValueError("publish at least one study")
    if len({s.pk for s in studies}) != len(studies):
        raise ValueError("a study is named twice")
    still_open = [s.slug for s in studies if s.status != Study.Status.CLOSED]
    if still_open:
        # The published lams and stimulus images would answer a current participant's trials.
        raise StudyStillOpen(
            f"close {', '.join(still_open)} before publishing it: a published dataset "
            "holds every stimulus and its lam, which would answer the trials of anyone "
            "still taking part"
        )
    judgments = list(
        counted(Judgment.objects.filter(study__in=studies))
        .select_related(
            "study",
            "session",
            "session__condition",
            "pair",
            "pair__stimulus_set",
            "stimulus",
            "stimulus__pair__stimulus_set",
        )
        .order_by("session__participant_id", "session__started_at", "session_id", "trial_index")
    )
    annotators: dict[int, int] = {}
    for participant in sorted({j.session.participant_id for j in judgments}):
        annotators[participant] = len(annotators)
    grid_pairs = {j.pair_id for j in judgments if interfaces.get(j.interface).grid}
    grids: dict[int, list[Stimulus]] = {}
    grid_stimuli = Stimulus.objects.filter(pair_id__in=grid_pairs).select_related(
        "pair__stimulus_set"
    )
    for stimulus in grid_stimuli.order_by("pair_id", "lam"):
        grids.setdefault(stimulus.pair_id, []).append(stimulus)
    publication = Publication(list(studies), [])
    order = {s.pk: i for i, s in enumerate(studies)}
    judgments.sort(
        key=lambda j: (order[j.study_id], annotators[j.session.participant_id], j.trial_index)
    )
    for judgment in judgments:
        publication.rows.append(_row(judgment, annotators, grids, publication.files))
    for study in studies:
        rows = [r for r in publication.rows if r["study"] == study.slug]
        shown = {r["stimulus"] for r in rows if r["stimulus"]} | {
            (r["pair"], lam) for r in rows for lam in r["grid_lams"]
        }
        publication.counts[study.slug] = {
            "judgments": len(rows),
            "annotators": len({r["annotator_id"] for r in rows}),
            "repeats": sum(r["is_repeat"] for r in rows),
            "stimuli": len(shown),
            "with_confidence": sum(r["confidence"] is not None for r in rows),
        }
    return publication


def _row(
    judgment: Judgment,
    annotators: dict[int, int],
    grids: dict[int, list[Stimulus]],
    files: dict[str, Stimulus],
) -> dict:
    pair, stimulus = judgment.pair, judgment.stimulus
    grid = grids.get(pair.pk, []) if interfaces.get(judgment.interface).grid else []

    def file_of(s: Stimulus) -> str | None:
        if not s.image:
            return None
        path = stimulus_path(s)
        files[path] = s
        return path

    return {
        "study": judgment.study.slug,
        "interface": judgment.interface,
        "annotator_id": annotators[judgment.session.participant_id],
        "condition": judgment.session.condition.name,
        "trial_index": judgment.trial_index,
        "is_repeat": judgment.is_repeat,
        "pair": pair.name,
        "class1": pair.class1,
        "id1": pair.id1,
        "class2": pair.class2,
        "id2": pair.id2,
        "stimulus": stimulus.name if stimulus else None,
        "stimulus_file": file_of(stimulus) if stimulus else None,
        "true_lam": stimulus.lam if stimulus else None,
        "grid_files": [file_of(s) or "" for s in grid],
        "grid_lams": [s.lam for s in grid],
        "lam": judgment.lam,
        "confidence": judgment.confidence,
        "rt_ms": judgment.rt_ms,
        "response": json.dumps(judgment.response, sort_keys=True),
    }


def write(publication: Publication, out: Path, *, license: str = DEFAULT_LICENSE) -> Path:
    """Write the publication into the folder `out` (created; files already there with
    the same names are replaced). Returns `out`. Raises FileNotFoundError when a
    stimulus's stored image is missing."""
    out = Path(out)
    (out / DATA_FILE).parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(publication.rows, schema=SCHEMA)
    pq.write_table(table, out / DATA_FILE)
    for path, stimulus in sorted(publication.files.items()):
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        with default_storage.open(stimulus.image.name, "rb") as source, target.open("wb") as sink:
            shutil.copyfileobj(source, sink)
    (out / "README.md").write_text(card(publication, license=license), encoding="utf-8")
    return out


def publish(studies: Sequence[Study], out: Path, *, license: str = DEFAULT_LICENSE) -> Publication:
    """Collect and write `studies` as one publication under `out`."""
    publication = collect(studies)
    write(publication, out, license=license)
    return publication


def publish_zip(studies: Sequence[Study], *, license: str = DEFAULT_LICENSE) -> io.BufferedRandom:
    """The publication of `studies` as a zip in a temporary file (deleted when closed),
    positioned at its start; every path inside starts with the first study's slug."""
    archive = tempfile.TemporaryFile()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / studies[0].slug
        publish(studies, root, license=license)
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    bundle.write(path, path.relative_to(folder).as_posix())
    archive.seek(0)
    return archive


def card(publication: Publication, *, license: str = DEFAULT_LICENSE) -> str:
    """The dataset card (README.md): a YAML header the Hugging Face Hub reads (licence,
    `configs`, `dataset_info` features) with the studies' interfaces, counts, exclusion
    rule and consent text, then the same in prose."""
    studies = publication.studies
    total = len(publication.rows)
    header = {
        "license": license,
        "pretty_name": ", ".join(s.title for s in studies),
        "task_categories": ["image-classification"],
        "tags": ["mixup", "human-in-the-loop", "soft-labels", "hill-mix"],
        "configs": [
            {"config_name": "default", "data_files": [{"split": "train", "path": DATA_FILE}]}
        ],
        "dataset_info": {
            "features": [_hf_feature(name, kind) for name, kind, _ in COLUMNS],
            "splits": [{"name": "train", "num_examples": total}],
        },
        "studies": [
            {
                "study": s.slug,
                "title": s.title,
                "interface": s.interface,
                **publication.counts[s.slug],
                "consent_text": s.consent_text,
                "consent_items": list(s.consent_items),
            }
            for s in studies
        ],
        "annotators": len({r["annotator_id"] for r in publication.rows}),
        "judgments": total,
        "stimulus_files": len(publication.files),
        "exclusion_rule": EXCLUSION_RULE,
    }
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False, allow_unicode=True, width=100).rstrip(),
        "---",
        "",
        f"# {header['pretty_name']}",
        "",
        "Human judgments of mixup images (two images blended with weight `lam`, the weight "
        "of image 1), collected with HILL-Mix (human-in-the-loop mixup; Collins et al., "
        '"Human-in-the-Loop Mixup", UAI 2023). One row per judgment.',
        "",
        "| study | interface | judgments | annotators | repeats | stimuli |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in studies:
        c = publication.counts[s.slug]
        lines.append(
            f"| {s.slug} | {s.interface} | {c['judgments']} | {c['annotators']} | "
            f"{c['repeats']} | {c['stimuli']} |"
        )
    lines += [
        "",
        f"{total} judgments by {header['annotators']} annotators; "
        f"{len(publication.files)} stimulus images under `{STIMULI_FOLDER}/`.",
        "",
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        f'ds = load_dataset("parquet", data_files="{DATA_FILE}", split="train")',
        "# or: pandas.read_parquet(" + repr(DATA_FILE) + ")",
        "```",
        "",
        "## Columns",
        "",
        "| column | meaning |",
        "| --- | --- |",
        *[f"| `{name}` | {meaning} |" for name, _, meaning in COLUMNS],
        "",
        "## Annotators and privacy",
        "",
        "Annotators are numbered within this publication (the same number in each of its "
        "studies). No recruiter id, platform id, free-text feedback, timestamp or network "
        "address is published.",
        "",
        "## Exclusion rule",
        "",
        EXCLUSION_RULE,
        "",
        "## Consent",
        "",
    ]
    for s in studies:
        lines += [f"### {s.slug}", "", s.consent_text.strip(), ""]
        lines += [f"- {item}" for item in s.consent_items] + [""]
    lines += ["## Licence", "", f"`{license}`", ""]
    return "\n".join(lines)


def _hf_feature(name: str, kind: pa.DataType) -> dict:
    if pa.types.is_list(kind):
        inner = _HF_TYPES[str(kind.value_type)]
        return {"name": name, "sequence": inner}
    return {"name": name, "dtype": _HF_TYPES[str(kind)]}
