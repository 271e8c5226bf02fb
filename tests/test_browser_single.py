"""Whole Infer and Soft-label sessions in headless Chromium."""

import pytest

from elicitation.models import Judgment, Session
from tests.browser import enter_study, finish_feedback

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def wait_next_trial(page, i: int) -> None:
    page.wait_for_selector(f'.trial[data-index="{i}"]', state="detached")


def test_infer_session_requires_both_sliders(page, live_server, make_study):
    study = make_study("infer", n_pairs=2)
    enter_study(page, live_server.url, study.slug, "infer-person")
    session = Session.objects.get()
    for i in range(session.trial_count):
        page.wait_for_selector(f'.trial[data-index="{i}"]')
        page.click("#next")
        assert "move the first slider and the confidence slider" in page.inner_text("#ask-move")
        page.fill("#mixing", str(10 * i))
        page.click("#next")
        assert "confidence slider" in page.inner_text("#ask-move")
        page.fill("#confidence", "65")
        page.click("#next")
        wait_next_trial(page, i)
    finish_feedback(page)
    judgments = list(Judgment.objects.filter(session=session).order_by("trial_index"))
    assert len(judgments) == session.trial_count
    for i, judgment in enumerate(judgments):
        assert judgment.response["slider"] == 10 * i and judgment.response["confidence"] == 65
        assert judgment.lam == pytest.approx(1 - 0.1 * i)
        assert judgment.confidence == pytest.approx(0.65)


def test_soft_label_session_with_validation(page, live_server, make_study):
    study = make_study("soft_label", n_pairs=2)
    enter_study(page, live_server.url, study.slug, "soft-person")
    session = Session.objects.get()
    for i in range(session.trial_count):
        page.wait_for_selector(f'.trial[data-index="{i}"]')
        page.click("#next")
        assert "most probable category" in page.inner_text("#soft-error")
        page.select_option("#first-class", "Three")
        page.fill("#first-prob", "70")
        page.select_option("#second-class", "Eight")
        page.fill("#second-prob", "90")
        page.click("#next")
        assert "between 0 and the first" in page.inner_text("#soft-error")
        page.fill("#second-prob", "20")
        assert page.is_disabled("#impossible-Three")  # chosen classes cannot be impossible
        page.check("#impossible-Zero")
        page.check("#impossible-One")
        page.click("#next")
        wait_next_trial(page, i)
    finish_feedback(page)
    judgments = list(Judgment.objects.filter(session=session))
    assert len(judgments) == session.trial_count
    for judgment in judgments:
        response = judgment.response
        assert (response["first_class"], response["first_prob"]) == ("Three", 70)
        assert (response["second_class"], response["second_prob"]) == ("Eight", 20)
        assert response["impossible"] == ["Zero", "One"]
        label = response["soft_label"]
        assert label[3] == pytest.approx(0.7) and label[8] == pytest.approx(0.2)
        assert label[0] == 0 and label[2] == pytest.approx(0.1 / 6)
