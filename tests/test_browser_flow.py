"""Whole sessions in headless Chromium: Construct by keyboard, Select-Shuffled by mouse."""

import pytest

from elicitation.models import Judgment, Session
from tests.browser import enter_study, finish_feedback

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def shown_index(page) -> int:
    # Keys act on a trial only once its images are on screen (data-shown).
    page.wait_for_selector(".trial[data-shown]")
    return int(page.get_attribute(".trial", "data-index"))


def test_construct_session_by_keyboard_with_reload_and_quiz_retry(page, live_server, make_study):
    study = make_study("construct", ask_confidence=True, n_pairs=6)
    trial_fetches, page_loads = [], []
    page.on("request", lambda r: "/trial/" in r.url and trial_fetches.append(r.url))
    page.on("request", lambda r: r.resource_type == "document" and page_loads.append(r.url))
    enter_study(page, live_server.url, study.slug, "kb-person", wrong_first=True)
    session = Session.objects.get()
    assert session.quiz_attempts == 2
    total = session.trial_count
    for i in range(total):
        assert shown_index(page) == i
        if i == 1:  # a reload mid-session comes back to the same trial
            page.reload()
            assert shown_index(page) == 1
        start = int(page.get_attribute("#stimulus", "data-step"))  # grid step, not lam
        key = "h" if start < 5 else "g"
        for _ in range(3):
            page.keyboard.press(key)
        page.keyboard.press("g" if key == "h" else "h")  # one step back
        page.focus("#confidence")
        for _ in range(5):
            page.keyboard.press("ArrowRight")
        if i == total - 1:
            page_loads.clear()  # from the last answer on
        page.keyboard.press("Enter")
        page.wait_for_selector(f'.trial[data-index="{i}"]', state="detached")
    page.wait_for_selector("#f0")
    finish_feedback(page)
    assert page.inner_text("#completion-code") == "DONE-123"
    assert trial_fetches == []  # each trial came with its page or the save before it
    # The feedback questions were the trial page's last screen: the only page loads
    # after the last answer are sending them and the completion page.
    study_url = f"{live_server.url}/s/{study.slug}/"
    assert page_loads == [f"{study_url}feedback/", study_url]

    session.refresh_from_db()
    assert session.state == "complete"
    judgments = list(Judgment.objects.filter(session=session).order_by("trial_index"))
    assert len(judgments) == total
    for judgment in judgments:
        response = judgment.response
        start = response["start_lam"]
        direction = 1 if start < 0.5 else -1
        expected = [round(start + direction * 0.1 * k, 1) for k in (0, 1, 2, 3, 2)]
        assert response["history"] == expected
        assert judgment.lam == response["final_lam"] == expected[-1]
        assert judgment.confidence == 0.55 and judgment.rt_ms > 0
    assert sum(j.is_repeat for j in judgments) == 1


def test_select_shuffled_session_by_mouse_survives_lost_connection(page, live_server, make_study):
    study = make_study("select_shuffled", ask_confidence=True)
    page_loads = []
    page.on("request", lambda r: r.resource_type == "document" and page_loads.append(r.url))
    enter_study(page, live_server.url, study.slug, "mouse-person")
    page.wait_for_selector('.trial[data-index="0"]')
    session = Session.objects.get()
    # Consent, instructions and quiz are one page, sent once: the recruiter's link, the
    # address without its ids, sending them, and the trial page.
    study_url = f"{live_server.url}/s/{study.slug}/"
    assert [url.split("?")[0] for url in page_loads] == [
        study_url,
        study_url,
        f"{study_url}consent/",
        study_url,
    ]
    assert session.quiz_attempts == 1 and session.state == Session.State.TRIALS
    failures = {"left": 4}  # the banner then stays up for several seconds of retries

    def flaky(route):
        if failures["left"] > 0:
            failures["left"] -= 1
            route.abort()
        else:
            route.continue_()

    page.route("**/judgments/", flaky)
    for i in range(session.trial_count):
        assert shown_index(page) == i
        assert page.is_disabled("#next")
        choices = page.locator(".choice")
        assert choices.count() == 11
        choices.nth(4).click()
        assert page.is_disabled("#next")  # confidence not given yet
        page.fill("#confidence", "80")
        page.click("#next")
        if i == 0:
            page.wait_for_selector("#connection:not([hidden])")
            assert "cannot reach the server" in page.inner_text("#connection")
        page.wait_for_selector(f'.trial[data-index="{i}"]', state="detached", timeout=30_000)
    finish_feedback(page)

    judgments = list(Judgment.objects.filter(session=session).order_by("trial_index"))
    assert len(judgments) == session.trial_count
    for judgment, spec in zip(judgments, session.trial_order, strict=True):
        assert judgment.response["order_shown"] == spec["order"]
        assert judgment.lam == spec["order"][4] == judgment.response["chosen_lam"]
        assert judgment.confidence == 0.8 and judgment.rt_ms > 0


def test_select_shuffled_works_on_a_phone(phone_page, live_server, make_study):
    study = make_study("select_shuffled", quiz=[], feedback_questions=[], repeat_trials=0)
    phone_page.goto(f"{live_server.url}/s/{study.slug}/")
    for box in phone_page.locator("input[type=checkbox]").all():
        box.tap()
    phone_page.tap("#consent-submit")
    phone_page.tap("#instr-next")
    phone_page.tap("#instr-done")  # sends the consent with the instructions' end
    phone_page.wait_for_selector('.trial[data-index="0"]')
    for i in range(Session.objects.get().trial_count):
        phone_page.wait_for_selector(f'.trial[data-index="{i}"] .choice')
        width = phone_page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390  # no sideways scrolling
        phone_page.locator(".choice").nth(0).tap()
        phone_page.tap("#next")
    phone_page.wait_for_selector("#complete")
    assert Judgment.objects.count() == Session.objects.get().trial_count
