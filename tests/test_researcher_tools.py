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
    # The study form the "+" belongs to offers it.
    study_form = admin_client.get(reverse("admin:elicitation_study_add"))
    assert f'<option value="{created.pk}">{created}</option>' in study_form.content.decode()
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


# --- editing studies -----------------------------------------------------------------

TEXT_LISTS = ("consent_items", "instruction_pages", "feedback_questions")


def form_data(client, study, **overrides) -> dict:
    """What the admin's change form of `study` sends back unchanged, with overrides."""
    page = client.get(reverse("admin:elicitation_study_change", args=[study.pk]))
    assert page.status_code == 200
    form = page.context["adminform"].form
    data = {}
    for name in form.fields:
        value = form[name].value()
        if name in TEXT_LISTS:
            data.update({f"{name}_{i}": item for i, item in enumerate(value)})
        elif name == "quiz":
            for i, q in enumerate(value):
                data[f"quiz_{i}_question"] = q["question"]
                data[f"quiz_{i}_options"] = "\n".join(q["options"])
                data[f"quiz_{i}_answer"] = str(q["answer"] + 1)
        elif isinstance(value, bool):
            if value:
                data[name] = "on"
        else:
            data[name] = "" if value is None else value
    for inline in page.context["inline_admin_formsets"]:
        formset = inline.formset
        management = formset.management_form
        data.update({f"{formset.prefix}-{n}": management[n].value() for n in management.fields})
        for sub in formset.forms:
            data.update({f"{sub.prefix}-{n}": sub[n].value() or "" for n in sub.fields})
    data.update(overrides)
    return data


def post_change(client, study, data):
    return client.post(reverse("admin:elicitation_study_change", args=[study.pk]), data)


def test_admin_edits_the_flow_as_fields_and_refuses_broken_ones(make_study, admin_client):
    from elicitation.models import Study

    study = make_study("construct", status="draft")
    page = admin_client.get(reverse("admin:elicitation_study_change", args=[study.pk]))
    html = page.content.decode()
    for name in ("consent_items_0", "instruction_pages_1", "feedback_questions_0"):
        assert f'name="{name}"' in html
    assert 'name="quiz_0_question"' in html and 'id="id_quiz_0_answer" value="2"' in html
    assert '"answer": 1' not in html  # no raw JSON to edit
    before = Study.objects.values().get(pk=study.pk)

    def refused(response, message):
        assert response.status_code == 200 and message in response.content.decode()
        assert Study.objects.values().get(pk=study.pk) == before

    refused(
        post_change(admin_client, study, form_data(admin_client, study, quiz_0_answer="3")),
        "or nobody can pass the quiz",
    )
    refused(
        post_change(admin_client, study, form_data(admin_client, study, quiz_0_answer="")),
        "give the number of the right option",
    )
    refused(
        post_change(admin_client, study, form_data(admin_client, study, quiz_0_options="A")),
        "give at least two options",
    )
    no_consent = form_data(
        admin_client, study, consent_items_0="", consent_items_1="", status="live"
    )
    refused(post_change(admin_client, study, no_consent), "give at least 1 consent statements")

    edited = form_data(
        admin_client,
        study,
        consent_items_2="I have read the information sheet.",
        quiz_1_question="Which key moves toward class 1?",
        quiz_1_options="g\nh",
        quiz_1_answer="2",
        instruction_pages_1="",
    )
    response = post_change(admin_client, study, edited)
    assert response.status_code == 302, response.context["adminform"].form.errors
    study.refresh_from_db()
    assert study.consent_items == [
        "I am 18 or older.",
        "I agree.",
        "I have read the information sheet.",
    ]
    assert study.instruction_pages == ["Page one."]
    assert study.quiz == [
        {"question": "Pick B", "options": ["A", "B"], "answer": 1},
        {"question": "Which key moves toward class 1?", "options": ["g", "h"], "answer": 1},
    ]


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"quiz": [{"question": "Pick B", "options": ["A", "B"]}]}, "quiz", "lacks answer"),
        (
            {"quiz": [{"question": "Pick B", "options": ["A", "B"], "answer": 2}]},
            "quiz",
            "one of its 2 options",
        ),
        (
            {"quiz": [{"question": "Pick B", "options": ["A", "B"], "answer": True}]},
            "quiz",
            "number of an option",
        ),
        ({"quiz": {"question": "Pick B"}}, "quiz", "must be a list"),
        ({"consent_items": "I agree"}, "consent_items", "must be a list"),
        ({"consent_items": [], "status": "live"}, "consent_items", "at least 1"),
        ({"instruction_pages": [], "status": "live"}, "instruction_pages", "at least 1"),
        ({"consent_items": ["I agree", ""]}, "consent_items", "item 2"),
        ({"instruction_pages": "Read this."}, "instruction_pages", "must be a list"),
        ({"feedback_questions": [3]}, "feedback_questions", "item 1"),
    ],
)
def test_no_writer_can_store_a_study_that_cannot_run(make_study, fields, field, message):
    from django.core.exceptions import ValidationError

    from elicitation.models import Study
    from elicitation.services import save_study

    study = make_study("construct", status="draft")
    before = Study.objects.values().get(pk=study.pk)
    for name, value in fields.items():
        setattr(study, name, value)
    with pytest.raises(ValidationError) as refused:
        save_study(study)
    assert message in " ".join(refused.value.message_dict[field])
    assert Study.objects.values().get(pk=study.pk) == before


def _started(study):
    from elicitation.services import RecruiterIds, start_session

    return start_session(study, RecruiterIds("already-in"))


def test_edits_that_would_break_running_sessions_are_refused(make_study, admin_client):
    from django.core.exceptions import ValidationError
    from django.test import Client

    from elicitation.models import Study
    from elicitation.services import save_study

    study = make_study("construct")
    other_set = make_study("infer", slug="other").stimulus_set
    _started(study)
    page = admin_client.get(reverse("admin:elicitation_study_change", args=[study.pk]))
    form = page.context["adminform"].form
    for locked in ("interface", "stimulus_set", "condition_count", "ask_confidence"):
        assert locked not in form.fields  # shown read-only
    before = Study.objects.values().get(pk=study.pk)
    # Sent anyway (a stale form, a hand-made request): ignored, nothing changes.
    response = post_change(
        admin_client,
        study,
        form_data(admin_client, study, interface="infer", stimulus_set=other_set.pk),
    )
    study.refresh_from_db()
    assert (study.interface, study.stimulus_set_id) == (
        before["interface"],
        before["stimulus_set_id"],
    )
    # Grading the quiz differently is refused, with the way out named.
    response = post_change(admin_client, study, form_data(admin_client, study, quiz_0_answer="1"))
    assert response.status_code == 200
    assert "Copy as a new draft study" in response.content.decode()
    assert Study.objects.get(pk=study.pk).quiz == before["quiz"]
    # Rewording is fine.
    reworded = form_data(
        admin_client, study, quiz_0_question="Please pick B", quiz_0_options="A\nB"
    )
    assert post_change(admin_client, study, reworded).status_code == 302
    assert Study.objects.get(pk=study.pk).quiz[0]["question"] == "Please pick B"
    # Other writers get the same answer from the model.
    for name, value in (
        ("interface", "infer"),
        ("stimulus_set", other_set),
        ("condition_count", 3),
        ("soft_label_gamma", 0.3),
        ("quiz", [{"question": "Pick B", "options": ["A", "B", "C"], "answer": 1}]),
    ):
        edited = Study.objects.get(pk=study.pk)
        setattr(edited, name, value)
        with pytest.raises(ValidationError, match="Participants have started"):
            save_study(edited)
    assert Study.objects.get(pk=study.pk).interface == "construct"
    # The study still serves its participants.
    participant = Client()
    participant.get(f"/s/{study.slug}/?PROLIFIC_PID=newcomer")
    assert participant.get(f"/s/{study.slug}/").status_code == 200


def test_copy_as_new_draft_study(make_study, admin_client):
    from elicitation.models import Study

    study = make_study("construct")
    _started(study)
    changelist = reverse("admin:elicitation_study_changelist")
    for _ in range(2):
        response = admin_client.post(
            changelist, {"action": "copy_as_new_study", "_selected_action": [study.pk]}
        )
        assert response.status_code == 302
    first, second = (Study.objects.get(slug=f"{study.slug}{s}") for s in ("-copy", "-copy-2"))
    for copy in (first, second):
        assert copy.status == "draft" and not copy.sessions.exists()
        assert copy.conditions.count() == study.conditions.count()
        assert (copy.interface, copy.stimulus_set_id, copy.quiz) == (
            study.interface,
            study.stimulus_set_id,
            study.quiz,
        )
    # The copy takes the changes the original refuses.
    response = post_change(
        admin_client, first, form_data(admin_client, first, quiz_0_answer="1", condition_count="1")
    )
    assert response.status_code == 302
    first.refresh_from_db()
    assert first.quiz[0]["answer"] == 0 and first.conditions.count() == 1


def test_admin_adds_a_study_from_fields(make_stimulus_set, admin_client):
    from elicitation.models import Study

    stimulus_set = make_stimulus_set(name="new-study-set", kind="grid", n_pairs=4)
    data = {
        "title": "New study",
        "slug": "new-study",
        "interface": "select_shuffled",
        "stimulus_set": stimulus_set.pk,
        "status": "draft",
        "consent_text": "Please read.",
        "consent_items_0": "I am 18 or older.",
        "consent_items_1": "",
        "instruction_pages_0": "Click the 50/50 image.",
        "quiz_0_question": "What do you click?",
        "quiz_0_options": "The 50/50 image\nAny image",
        "quiz_0_answer": "1",
        "quiz_1_question": "",
        "quiz_1_options": "",
        "quiz_1_answer": "",
        "feedback_questions_0": "",
        "condition_count": "2",
        "repeat_trials": "0",
        "construct_start": "random",
        "slider_start": "50",
        "soft_label_gamma": "0.1",
        "stale_after_minutes": "60",
        # What the add form shows to start with (a browser posts these as they are).
        "language": "en",
        "on_withdrawal": "erase",
        "design": "fixed",
        "adaptive_budget": "60",
        "adaptive_max_per_pair": "3",
        "adaptive_repeat_spacing": "10",
        "adaptive_objective": "curve",
        "conditions-TOTAL_FORMS": "0",
        "conditions-INITIAL_FORMS": "0",
        "conditions-MIN_NUM_FORMS": "0",
        "conditions-MAX_NUM_FORMS": "0",
    }
    response = admin_client.post(reverse("admin:elicitation_study_add"), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    study = Study.objects.get(slug="new-study")
    assert study.consent_items == ["I am 18 or older."]
    assert study.instruction_pages == ["Click the 50/50 image."]
    assert study.quiz == [
        {"question": "What do you click?", "options": ["The 50/50 image", "Any image"], "answer": 0}
    ]
    assert study.feedback_questions == [] and study.conditions.count() == 2


def test_a_study_stored_broken_before_the_checks_cannot_be_opened(make_study, admin_client):
    from elicitation.models import Study

    study = make_study("construct", status="draft")
    # Written around Study.clean (as studies stored before it were).
    Study.objects.filter(pk=study.pk).update(quiz=[{"question": "Pick B", "options": ["A", "B"]}])
    changelist = reverse("admin:elicitation_study_changelist")
    response = admin_client.post(
        changelist, {"action": "open_study", "_selected_action": [study.pk]}, follow=True
    )
    assert response.status_code == 200
    assert "cannot open until its flow is fixed" in response.content.decode()
    assert Study.objects.get(pk=study.pk).status == "draft"
    Study.objects.filter(pk=study.pk).update(
        quiz=[{"question": "Pick B", "options": ["A", "B"], "answer": 1}]
    )
    admin_client.post(changelist, {"action": "open_study", "_selected_action": [study.pk]})
    assert Study.objects.get(pk=study.pk).status == "live"


def test_a_closed_import_without_consent_or_instructions_stays_editable(make_study, admin_client):
    """H-Mix's studies are imported closed, with no consent or instruction pages."""
    study = make_study("construct", status="closed", consent_items=[], instruction_pages=[])
    response = post_change(admin_client, study, form_data(admin_client, study, title="Renamed"))
    assert response.status_code == 302
    study.refresh_from_db()
    assert study.title == "Renamed" and study.consent_items == []
    reopened = form_data(admin_client, study, status="live")
    response = post_change(admin_client, study, reopened)
    assert response.status_code == 200 and "give at least 1 consent statements" in (
        response.content.decode()
    )
