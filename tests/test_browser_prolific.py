"""The Prolific page in headless Chromium: the ticked rows and the button pressed decide
what is sent (each button posts the one form to its own action), against the local
fake Prolific server."""

import pytest
from django.test import Client

from elicitation.services import RecruiterIds, start_session
from recruitment import services
from recruitment.models import BonusPayment
from tests.fake_prolific import TOKEN, FakeProlific
from tests.test_prolific import PROLIFIC_STUDY, REASON_TEXT

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def fake():
    server = FakeProlific().start()
    yield server
    server.stop()


def test_prolific_page_approves_rejects_and_pays_what_is_ticked(
    page, live_server, make_study, role_user, fake, settings
):
    settings.PROLIFIC_API_URL = fake.url
    settings.PROLIFIC_API_TOKEN = TOKEN
    settings.PROLIFIC_REQUESTS_PER_SECOND = 0
    study = make_study(slug="prolific-browser")
    services.link_study(study, PROLIFIC_STUDY)
    subs = {}
    for pid in ("pa", "pb", "pc"):
        subs[pid] = fake.add_submission(PROLIFIC_STUDY, pid)
        start_session(study, RecruiterIds(pid, PROLIFIC_STUDY, subs[pid]["id"]))
    staff = Client()
    staff.force_login(role_user("researcher", "Researcher"))
    page.context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": staff.cookies[settings.SESSION_COOKIE_NAME].value,
                "url": live_server.url,
            }
        ]
    )
    page.goto(f"{live_server.url}/admin/elicitation/study/{study.pk}/dashboard/")
    page.click("#prolific-page")
    ref = {pid: services.submission_reference(s["id"]) for pid, s in subs.items()}

    def tick(*pids):
        for pid in pids:
            page.check(f"input[name=submission][value='{ref[pid]}']")

    tick("pa")
    with page.expect_navigation():
        page.click("#approve")
    assert page.locator(".messagelist .success").count() == 1
    assert [subs[p]["status"] for p in ("pa", "pb", "pc")] == [
        "APPROVED",
        "AWAITING REVIEW",
        "AWAITING REVIEW",
    ]

    tick("pb")
    page.select_option("#id_rejection_category", "FAILED_CHECK")
    page.fill("#id_message", REASON_TEXT)
    with page.expect_navigation():
        page.click("#reject")
    assert page.locator(".messagelist .success").count() == 1
    assert subs["pb"]["status"] == "REJECTED" and subs["pc"]["status"] == "AWAITING REVIEW"

    tick("pa", "pc")
    page.fill("#id_amount", "0.40")
    page.fill("#id_reason", "accuracy")
    with page.expect_navigation():
        page.click("#pay-bonus")
    assert page.locator(".messagelist .success").count() == 1
    assert (fake.paid_to("pa"), fake.paid_to("pb"), fake.paid_to("pc")) == ([40], [], [40])
    assert page.locator("#ledger tbody tr").count() == 2
    assert set(BonusPayment.objects.values_list("state", flat=True)) == {"paid"}
