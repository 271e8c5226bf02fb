from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from elicitation import publishing
from elicitation.models import Study


class Command(BaseCommand):
    help = (
        "Publish studies as a dataset: Parquet judgments (counted ones only, anonymous "
        "annotator ids), the stimuli as PNG files and a dataset card (README.md)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--study",
            action="append",
            required=True,
            metavar="SLUG",
            help="a study to publish (repeat for several, e.g. the four hmix-* studies)",
        )
        parser.add_argument("--out", required=True, help="the folder to write (created)")
        parser.add_argument(
            "--license",
            default=publishing.DEFAULT_LICENSE,
            help=f"the licence the card states (default {publishing.DEFAULT_LICENSE})",
        )

    def handle(self, *args, **opts) -> None:
        slugs = opts["study"]
        studies = {s.slug: s for s in Study.objects.filter(slug__in=slugs)}
        unknown = [slug for slug in slugs if slug not in studies]
        if unknown:
            raise CommandError(f"no such study: {', '.join(unknown)}")
        try:
            publication = publishing.publish(
                [studies[slug] for slug in slugs], Path(opts["out"]), license=opts["license"]
            )
        except (ValueError, FileNotFoundError) as exc:
            raise CommandError(str(exc)) from None
        for slug, counts in publication.counts.items():
            details = ", ".join(f"{k} {v}" for k, v in counts.items())
            self.stdout.write(f"{slug}: {details}")
        self.stdout.write(f"written to {opts['out']} ({len(publication.files)} stimulus files)")
