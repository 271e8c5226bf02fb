"""Rebuild adaptive studies' stored posteriors from their judgments."""

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from elicitation.models import Study
from elicitation.services.sessions import write_recomputed_posteriors


class Command(BaseCommand):
    help = (
        "Store every pool's posteriors of an adaptive study (--study SLUG, or every study "
        "that has posteriors) as recomputed from the judgments that count. The saves keep "
        "them equal to that already; this is for a database restored or migrated from "
        "before the posteriors' storage changed (migration 0017)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--study", help="the study's slug (default: all)")

    def handle(self, *args, study: str | None = None, **options) -> None:
        studies = Study.objects.filter(posteriors__isnull=False).distinct()
        if study is not None:
            studies = Study.objects.filter(slug=study)
            if not studies.exists():
                raise CommandError(f"No study {study!r}.")
        count = 0
        for one in studies.order_by("pk"):
            with transaction.atomic():
                write_recomputed_posteriors(one)
            count += 1
        self.stdout.write(f"Rebuilt the posteriors of {count} studies.")
