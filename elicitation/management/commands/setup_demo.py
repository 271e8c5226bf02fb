from django.core.management.base import BaseCommand

from elicitation.demo import ensure_demo_stimuli, ensure_demo_studies, reset_researcher_login


class Command(BaseCommand):
    help = "Build the demo (bundled digits, stimulus sets, studies) and a researcher login."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")

    def handle(self, *args, **opts) -> None:
        base = opts["base_url"].rstrip("/")
        sets = ensure_demo_stimuli()
        studies = ensure_demo_studies(sets)
        login = reset_researcher_login()
        out = self.stdout
        out.write(self.style.SUCCESS("HILL-Mix demo is ready."))
        for stimulus_set in sets.values():
            stimulus_set.refresh_from_db()
            out.write(f"  stimulus set {stimulus_set.name}: {stimulus_set.done} stimuli")
        for study in studies:
            out.write(
                f"  Participant link ({study.get_interface_display()}): {base}/s/{study.slug}/"
            )
        out.write(f"  Admin dashboard:  {base}/admin/")
        out.write(f"  Researcher login: {login.username} / {login.password}")
