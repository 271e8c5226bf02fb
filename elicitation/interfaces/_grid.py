"""What the two grid interfaces (Construct, Select-Shuffled) share: a stored lam that
is the chosen midpoint, and the dashboard's midpoint histogram."""

from __future__ import annotations

from typing import Any

from .base import Evidence, InterfaceSpec


class GridInterface(InterfaceSpec):
    grid = True

    def evidence(
        self, lam: float | None, confidence: float | None, response: dict
    ) -> Evidence | None:
        return Evidence("midpoint", lam, confidence)

    def dashboard_charts(self, study: Any, include_excluded: bool) -> list[str]:
        from .. import plots, reports
        from ..models import Study

        distribution = reports.midpoint_distribution(
            Study.objects.filter(pk=study.pk), include_excluded
        )
        if self.name not in distribution:
            return []
        return [
            plots.midpoint_histogram(
                distribution[self.name]["counts"], f"Chosen midpoints ({self.label})"
            )
        ]


def hmix_trial(row: dict, name: str, **fields: Any):
    """An HmixTrial of a grid interface's row: the pair named in class_pair."""
    from datasets.naming import parse_pair_name

    from ..hmix import HmixTrial, common

    return HmixTrial(
        **common(row, name),
        pair=parse_pair_name(row["class_pair"]),
        stimulus_lam=None,
        confidence=None,
        **fields,
    )
