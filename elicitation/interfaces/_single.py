"""What the interfaces showing one mixed stimulus share: their H-Mix rows name the
pair by its ids."""

from __future__ import annotations

from typing import Any


def hmix_trial(row: dict, name: str, **fields: Any):
    """An HmixTrial of a single-stimulus row: pair from label/id columns, true lam from
    mixtureCoeff."""
    from ..hmix import HmixTrial, common, pair_from_ids

    return HmixTrial(
        **common(row, name),
        pair=pair_from_ids(row),
        stimulus_lam=float(row["mixtureCoeff"]),
        **fields,
    )


SINGLE_HMIX_COLUMNS = ["filename", "label1", "label2", "mixtureCoeff", "id1", "id2"]
