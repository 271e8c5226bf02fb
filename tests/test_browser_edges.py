"""The trial page at its edges: held and repeated keys, sliders answered at their start,
images that fail to load, progress text; on a desktop and on a phone."""

import pytest

from elicitation.models import ImageLoadFailure, Judgment, Session
from tests.browser import enter_study

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOWN = '.trial[data-index="{}"][data-shown]'


def shown(page, i: int) -> None:
    """Wait until trial i's images are on screen and it takes answers."""
    page.wait_for_selector(SHOWN.format(i), state="visible")


def hold_images(page) -> list:
    """Hold every image request until `release`."""
    held = []

    def route(r):
        if r.request.resource_type == "image" and not released(held):
            held.append(r)
        else:
            r.fallback()

    page.route("**/*", route)
    return held


def released(held: list) -> bool:
    return bool(held) and held[0] is None


def release(held: list) -> None:
    waiting = list(held)
    held[:] = [None]  # from now on images pass
    for r in waiting:
        r.continue_()


def block_images(page) -> None:
    page.route(
        "**/*", lambda r: r.abort() if r.request.resource_type == "image" else r.fallback()
    )


def dispatch_repeat_enter(page) -> None:
    """A script-made auto-repeat, as a browser sends for a held key."""
    page.evaluate(
        """() => document.body.dispatchEvent(new KeyboardEvent("keydown",
             {key: "Enter", code: "Enter", repeat: true, bubbles: true, cancelable: true}))"""
    )


def test_held_enter_does_not_answer_the_next_trial(page, live_server, make_study):
    study = make_study("construct", n_pairs=3, conditions=1, repeat_trials=0)
    enter_study(page, live_server.url, study.slug, "held-enter")
    session = Session.objects.get()
    total = session.trial_count
    shown(page, 0)
    assert page.inner_text("#progress-text") == f"Trial 1 of {total}"
    page.keyboard.press("h")
    page.keyboard.down("Enter")  # answers trial 0 ...
    shown(page, 1)
    for _ in range(12):  # ... and is held: the browser repeats it
        page.keyboard.down("Enter")
        page.wait_for_timeout(25)
    dispatch_repeat_enter(page)
    page.keyboard.up("Enter")
    page.wait_for_timeout(400)
    assert Judgment.objects.count() == 1
    assert page.is_visible(SHOWN.format(1))
    assert page.inner_text("#progress-text") == f"Trial 2 of {total}"
    page.keyboard.press("Enter")  # a new press answers
    shown(page, 2)
    second = Judgment.objects.get(trial_index=1)
    assert second.response["history"] == [second.response["start_lam"]]
    assert second.rt_ms >= 400


def test_key_pressed_before_the_trial_shows_does_not_answer_it(page, live_server, make_study):
    study = make_study("construct", n_pairs=3, conditions=1, repeat_trials=0)
    enter_study(page, live_server.url, study.slug, "early-key")
    shown(page, 0)
    held = hold_images(page)
    page.click("#continue")
    for _ in range(500):  # until trial 1's images are asked for
        if held:
            break
        page.wait_for_timeout(20)
    assert held
    page.wait_for_selector("#trial-status")  # the answered trial is gone
    assert not page.is_visible(SHOWN.format(1))
    page.keyboard.down("Enter")  # pressed while trial 1 is loading
    page.keyboard.down("h")
    page.wait_for_timeout(300)
    release(held)
    shown(page, 1)
    start = page.get_attribute("#stimulus", "src")
    for _ in range(6):  # still held once it shows
        page.keyboard.down("Enter")
        page.keyboard.down("h")
        page.wait_for_timeout(25)
    page.keyboard.up("h")
    page.keyboard.up("Enter")
    page.wait_for_timeout(400)
    assert Judgment.objects.count() == 1
    assert page.get_attribute("#stimulus", "src") == start  # "h" held: no step
    page.keyboard.press("Enter")
    shown(page, 2)
    judgment = Judgment.objects.get(trial_index=1)
    assert judgment.response["history"] == [judgment.response["start_lam"]]
    # Response time runs from the moment the images were on screen, not from the save
    # of the trial before or the start of their loading.
    assert 400 <= judgment.rt_ms < 5000


def test_slider_clicked_at_its_start_is_an_answer(page, live_server, make_study):
    study = make_study("infer", n_pairs=2)
    enter_study(page, live_server.url, study.slug, "click-at-start")
    session = Session.objects.get()
    shown(page, 0)
    class1, class2 = page.locator(".prompt strong").all_inner_texts()
    page.click("#next")  # nothing touched yet: refused
    assert "move the first slider and the confidence slider" in page.inner_text("#ask-move")
    assert page.input_value("#mixing") == "50"
    page.click("#mixing")  # exactly at the start: 50/50 is an answer
    page.click("#confidence")
    assert page.input_value("#mixing") == "50"
    assert page.inner_text("#mixing-value") == f"50% {class1}, 50% {class2}"
    page.click("#next")
    shown(page, 1)
    # From the keyboard: an arrow key at the start counts as touching it.
    page.focus("#mixing")
    page.keyboard.press("End")
    page.keyboard.press("ArrowLeft")
    class1, class2 = page.locator(".prompt strong").all_inner_texts()
    assert page.inner_text("#mixing-value") == f"1% {class1}, 99% {class2}"
    page.focus("#confidence")
    page.keyboard.press("ArrowUp")
    page.click("#next")
    shown(page, 2)
    first, second = Judgment.objects.filter(session=session).order_by("trial_index")
    assert first.response["slider"] == 50 and first.response["confidence"] == 50
    assert first.response["slider_start"] == 50 and first.lam == pytest.approx(0.5)
    assert second.response["slider"] == 99 and second.response["confidence"] == 51


def test_randomised_slider_start_is_served_and_recorded(page, live_server, make_study):
    study = make_study("infer", n_pairs=2, slider_start="random")
    enter_study(page, live_server.url, study.slug, "random-start")
    session = Session.objects.get()
    starts = [spec["slider_start"] for spec in session.trial_order]
    assert all(0 <= s <= 100 for s in starts) and len(set(starts)) > 1
    for i in range(3):
        shown(page, i)
        assert page.input_value("#mixing") == str(starts[i])
        class1, class2 = page.locator(".prompt strong").all_inner_texts()
        page.fill("#mixing", "30")
        assert page.inner_text("#mixing-value") == f"70% {class1}, 30% {class2}"
        page.fill("#confidence", "80")
        page.click("#next")
    shown(page, 3)
    judgments = Judgment.objects.filter(session=session).order_by("trial_index")
    assert [j.response["slider_start"] for j in judgments] == starts[:3]
    assert all(j.response["slider"] == 30 for j in judgments)


def test_failed_image_is_retried_then_explained_and_logged(page, live_server, make_study):
    study = make_study("select_shuffled", n_pairs=3)
    failed_requests = []
    page.on("requestfailed", lambda r: r.resource_type == "image" and failed_requests.append(r))
    block_images(page)
    enter_study(page, live_server.url, study.slug, "no-images")
    page.wait_for_selector("#image-error", state="visible")
    assert "could not be loaded" in page.inner_text("#image-error")
    assert not page.is_visible(".trial")  # nothing to answer
    assert page.locator("#next, .choice").count() == 0
    session = Session.objects.get()
    assert len(failed_requests) > 11  # every image, and then again
    assert Judgment.objects.count() == 0
    failure = ImageLoadFailure.objects.get()
    assert failure.session == session and failure.trial_index == 0 and failure.failed >= 1
    page.unroute("**/*")
    page.click("#retry-images")
    shown(page, 0)
    page.locator(".choice").nth(2).click()
    page.click("#next")
    shown(page, 1)
    assert Judgment.objects.count() == 1
    assert ImageLoadFailure.objects.count() == 1


def test_edges_on_a_phone(phone_page, live_server, make_study):
    page = phone_page
    study = make_study("infer", quiz=[], feedback_questions=[], repeat_trials=0)
    page.goto(f"{live_server.url}/s/{study.slug}/")
    for box in page.locator("input[type=checkbox]").all():
        box.tap()
    page.tap("#consent-submit")
    page.tap("#instr-next")
    block_images(page)
    page.tap("#instr-done")
    page.wait_for_selector("#image-error", state="visible")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    session = Session.objects.get()
    assert Judgment.objects.count() == 0
    assert ImageLoadFailure.objects.filter(session=session, trial_index=0).count() == 1
    page.unroute("**/*")
    page.tap("#retry-images")
    shown(page, 0)
    assert page.inner_text("#progress-text") == f"Trial 1 of {session.trial_count}"
    page.tap("#mixing")  # a touch at the start is an answer
    page.tap("#confidence")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.tap("#next")
    shown(page, 1)
    assert page.inner_text("#progress-text") == f"Trial 2 of {session.trial_count}"
    judgment = Judgment.objects.get()
    assert judgment.response["slider"] == 50 and judgment.response["slider_touched"]
