"""A whole 2AFC session in headless Chromium: keys F and J (and the buttons), which
class is on which side as the server said, with the trial page's key guards: a key
pressed before the image shows or held from the previous trial answers nothing."""

import pytest

from elicitation.models import Judgment, Session
from tests.browser import enter_study, finish_feedback
from tests.test_browser_edges import SHOWN, hold_images, release, shown

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def side_class(page, key: str) -> int:
    """The class (1 or 2) the F or J key stands for on the trial shown."""
    return int(page.get_attribute(f"#choose-{key}", "data-class"))


def test_2afc_session_by_keys_f_and_j(page, live_server, make_study):
    study = make_study("afc", n_pairs=2, repeat_trials=1)
    enter_study(page, live_server.url, study.slug, "afc-person")
    session = Session.objects.get()
    expected, f_labels = [], []
    for i in range(session.trial_count):
        shown(page, i)
        key = "f" if i % 2 == 0 else "j"
        expected.append(side_class(page, key))
        assert side_class(page, "f") == (2 if session.trial_order[i]["swapped"] else 1)
        f_labels.append(page.inner_text("#choose-f"))
        assert page.inner_text(f"#choose-{key}").endswith(f"({key.upper()})")
        if i == session.trial_count - 1:
            page.click(f"#choose-{key}")  # the buttons answer as the keys do
        else:
            page.keyboard.press(key)
        page.wait_for_selector(f'.trial[data-index="{i}"]', state="detached")
    finish_feedback(page)
    judgments = list(Judgment.objects.filter(session=session).order_by("trial_index"))
    assert [j.response["choice"] for j in judgments] == expected
    sides = [spec["swapped"] for spec in session.trial_order]
    assert [j.response["swapped"] for j in judgments] == sides
    for judgment, f_label in zip(judgments, f_labels, strict=True):
        pair = judgment.pair
        f_class = pair.class2 if judgment.response["swapped"] else pair.class1
        assert f_label == f"{f_class} (F)"
        assert judgment.lam == pytest.approx(judgment.stimulus.lam)  # the stimulus's lam
        assert judgment.confidence is None


def test_2afc_keys_held_or_pressed_early_answer_nothing(page, live_server, make_study):
    study = make_study("afc", n_pairs=2, conditions=1, repeat_trials=0, ask_confidence=True)
    enter_study(page, live_server.url, study.slug, "afc-keys")
    shown(page, 0)
    page.keyboard.press("f")  # with confidence asked, a choice waits for Next
    assert page.get_attribute("#choose-f", "aria-pressed") == "true"
    page.focus("#confidence")
    page.keyboard.press("ArrowRight")
    held = hold_images(page)
    page.click("#next")
    for _ in range(500):  # until trial 1's image is asked for
        if held:
            break
        page.wait_for_timeout(20)
    assert held
    page.keyboard.down("j")  # pressed while trial 1 is loading ...
    page.wait_for_timeout(200)
    release(held)
    shown(page, 1)
    for _ in range(6):  # ... and held once it shows: the browser repeats it
        page.keyboard.down("j")
        page.wait_for_timeout(25)
    page.keyboard.up("j")
    page.wait_for_timeout(300)
    assert page.get_attribute("#choose-j", "aria-pressed") == "false"
    assert page.get_attribute("#choose-f", "aria-pressed") == "false"
    assert page.is_visible(SHOWN.format(1)) and Judgment.objects.count() == 1
    page.keyboard.press("j")  # a new press counts
    assert page.get_attribute("#choose-j", "aria-pressed") == "true"
    first = Judgment.objects.get()
    assert first.response["choice"] == int(first.response["swapped"]) + 1  # F's class
    assert first.confidence == pytest.approx(0.51)
