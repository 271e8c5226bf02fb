"""manage.py simulate_participants --study SLUG --n 50 [--seed S]: run simulated people
(elicitation.services.simulation) through a study, to pilot it and to estimate how many
participants it needs; their sessions are of kind simulated, never research data."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from elicitation.models import Study
from elicitation.reliability import participants_estimate
from elicitation.services import FlowError
from elicitation.services.simulation import simulate_participants


class Command(BaseCommand):
    help = "Run simulated participants (fitted to H-Mix) through a study; kept out of real data."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--study", required=True, help="the study's slug")
        parser.add_argument("--n", type=int, default=50, help="how many simulated people")
        parser.add_argument("--seed", type=int, default=None, help="seed for repeatable runs")

    def handle(self, *args, study: str, n: int, seed: int | None, **options) -> None:
        found = Study.objects.filter(slug=study).select_related("stimulus_set").first()
        if found is None:
            raise CommandError(f"no study {study!r}")
        if not 1 <= n <= 10_000:
            raise CommandError("--n must be between 1 and 10000")
        try:
            result = simulate_participants(found, n, seed)
        except (ValueError, FlowError) as error:
            raise CommandError(str(getattr(error, "message", error))) from None
        self.stdout.write(
            f"{len(result.sessions)} simulated sessions, {result.judgments} judgments "
            f"({result.from_hmix} pairs answered from H-Mix's curves, the rest from the prior)."
        )
        estimate = participants_estimate(found)
        if estimate["participants"] is not None:
            self.stdout.write(
                f"Estimated participants to reach +-{estimate['target']} on every pair's "
                f"midpoint: {estimate['participants']} (from {estimate['source']})."
            )
