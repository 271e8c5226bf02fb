"""The "+" beside Stimulus set on the study form, in headless Chromium."""

import pytest
from django.conf import settings
from django.test import Client

from datasets.models import StimulusSet

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_plus_beside_stimulus_set_builds_it_in_a_popup_that_closes(
    page, live_server, demo_dataset, django_user_model
):
    staff = Client()
    staff.force_login(django_user_model.objects.create_superuser("res", "r@example.org", "pw"))
    page.context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": staff.cookies[settings.SESSION_COOKIE_NAME].value,
                "url": live_server.url,
            }
        ]
    )
    page.goto(f"{live_server.url}/admin/elicitation/study/add/")
    with page.expect_popup() as opened:
        page.click("#add_id_stimulus_set")
    popup = opened.value
    popup.fill("#id_name", "browser-set")
    popup.select_option("#id_dataset", str(demo_dataset.pk))
    popup.select_option("#id_kind", "grid")
    popup.fill("#id_random_pairs", "2")
    with popup.expect_event("close"):
        popup.click("input[type=submit]")
    created = StimulusSet.objects.get(name="browser-set")
    chosen = page.locator("#id_stimulus_set option:checked")
    assert chosen.get_attribute("value") == str(created.pk)
    assert chosen.inner_text() == str(created)
