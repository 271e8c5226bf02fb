"""Researcher tools in the admin: the stimulus-set popup, the dashboard's soft-label
plots and participant link, editing studies without breaking them."""

import json

import pytest
from django.urls import reverse

from datasets.models import StimulusSet


@pytest.fixture
def superuser(db, django_user_model):
    return django_user_model.objects.create_superuser("res", "res@example.org", "pw-123456")


@pytest.fixture
def admin_client(client, superuser):
    client.force_login(superuser)
    return client


def test_plus_beside_stimulus_set_closes_the_popup_and_offers_the_new_set(
    admin_client, demo_dataset, django_capture_on_commit_callbacks
):
    url = reverse("admin:datasets_stimulusset_add") + "?_to_field=id&_popup=1"
    page = admin_client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="_popup"' in html and 'name="_to_field"' in html
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            url,
            {
                "_popup": "1",
                "_to_field": "id",
                "name": "popup-set",
                "dataset": demo_dataset.pk,
                "kind": "grid",
                "mixing_policy": "mixup",
                "lams": "",
                "random_pairs": "2",
                "explicit_pairs": "",
                "seed": "0",
            },
        )
    created = StimulusSet.objects.get(name="popup-set")
    # Django's popup response: a page whose data closes the window and adds the option.
    assert response.status_code == 200, response
    assert "admin/popup_response.html" in [t.name for t in response.templates]
    data = json.loads(response.context["popup_response_data"])
    assert data == {"value": str(created.pk), "obj": str(created)}
    # Without the popup the form still goes back to the list.
    with django_capture_on_commit_callbacks(execute=True):
        plain = admin_client.post(
            reverse("admin:datasets_stimulusset_add"),
            {
                "name": "plain-set",
                "dataset": demo_dataset.pk,
                "kind": "grid",
                "mixing_policy": "mixup",
                "lams": "",
                "random_pairs": "2",
                "explicit_pairs": "",
                "seed": "0",
            },
        )
    assert plain.status_code == 302 and plain["Location"].endswith("/stimulusset/")
    # A field that cannot be referenced is refused.
    assert admin_client.get(url.replace("_to_field=id", "_to_field=name")).status_code == 400


def test_soft_label_dashboard_plots_its_judgments_and_gives_the_recruiter_link(
    make_study, admin_client
):
    import html as html_lib

    from elicitation import reports
    from elicitation.services import RecruiterIds, record_judgment, start_session
    from tests.test_flow import to_trials
    from tests.test_single_interfaces import SOFT_OK, envelope

    study = make_study("soft_label", n_pairs=2, feedback_questions=[])
    url = reverse("admin:elicitation_study_dashboard", args=[study.pk])
    assert "No judgments yet" in admin_client.get(url).content.decode()
    session = to_trials(start_session(study, RecruiterIds("p1")))
    for _ in range(3):
        session.refresh_from_db()
        record_judgment(session.token, envelope(session, SOFT_OK))
    page = admin_client.get(url)
    text = page.content.decode()
    assert "No judgments yet" not in text
    for title in (
        "Mean soft label per stimulus",
        "Entropy of the mean label vs true lam",
        "Agreement with the mixup label vs true lam",
    ):
        assert title in text
    assert len(page.context["charts"]) == 3
    rows = reports.soft_label_summary(study)
    assert sum(r["n"] for r in rows) == 3
    for row in rows:
        assert row["class1"] + row["class2"] + row["other"] == pytest.approx(1.0)
        assert 0 <= row["agreement"] <= 1 and row["entropy_bits"] > 0
    # The full link with Prolific's placeholders, ready to paste.
    link = (
        f"http://testserver/s/{study.slug}/"
        "?PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}"
    )
    assert page.context["participant_link"] == link
    assert link in html_lib.unescape(text)


def test_soft_label_summary_numbers():
    from elicitation.analytics import soft_label_stimulus

    # Two annotators over 4 classes of a stimulus at lam 0.75 of classes 0 and 1.
    row = soft_label_stimulus(0.75, 0, 1, [[1, 0, 0, 0], [0.5, 0.5, 0, 0]])
    assert row["class1"] == 0.75 and row["class2"] == 0.25 and row["other"] == 0
    assert row["agreement"] == pytest.approx(1.0)  # the mean is exactly the mixup label
    assert row["entropy_bits"] == pytest.approx(0.8112781)  # -(.75 log2 .75 + .25 log2 .25)
    apart = soft_label_stimulus(1.0, 0, 1, [[0, 0, 1, 0]])
    assert apart["agreement"] == 0 and apart["other"] == 1 and apart["entropy_bits"] == 0
    with pytest.raises(ValueError):
        soft_label_stimulus(0.5, 0, 1, [])
