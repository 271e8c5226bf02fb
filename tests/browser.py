"""Headless Chromium (Debian's package) driven by Playwright, for the browser tests."""

import os
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("HILLMIX_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# Playwright's sync API runs an event loop in the test thread; the ORM calls the
# tests make around it are ordinary synchronous ones.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("HILLMIX_REQUIRE_BROWSER") == "1":
            pytest.fail(f"Chromium not found at {CHROMIUM}; apt-get install chromium")
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


# Every page reports what the site's Content-Security-Policy blocked (an inline script,
# style or handler, a foreign source) to the console; Chromium logs its own "Refused to
# ..." line as well. The page fixtures fail a test that saw any.
REPORT_CSP_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (e) => {
  console.error(`CSP violation: ${e.effectiveDirective} blocked ${e.blockedURI || "inline"}`);
});
"""


def watch_csp(context) -> list[str]:
    """Console lines of CSP violations on any page of `context`, as they happen."""
    seen: list[str] = []
    context.add_init_script(REPORT_CSP_VIOLATIONS)

    def check(message) -> None:
        text = message.text
        if text.startswith("CSP violation") or "Content Security Policy" in text:
            seen.append(text)

    context.on("console", check)
    return seen


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    violations = watch_csp(context)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()
    assert not violations, violations


@pytest.fixture
def phone_page(browser):
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    violations = watch_csp(context)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()
    assert not violations, violations


def enter_study(
    page, base_url: str, slug: str, pid: str, quiz_answer: str = "B", wrong_first: bool = False
) -> None:
    """Consent, instructions and quiz as a participant does them."""
    page.goto(f"{base_url}/s/{slug}/?PROLIFIC_PID={pid}&STUDY_ID=st&SESSION_ID=se")
    for box in page.locator("input[type=checkbox]").all():
        box.check()
    page.click("#consent-submit")
    answers = ["A", quiz_answer] if wrong_first else [quiz_answer]
    for answer in answers:
        page.click("#instr-next")
        page.click("#instr-done")
        page.get_by_label(answer, exact=True).check()
        page.click("#quiz-submit")
        if answer != quiz_answer:
            page.wait_for_selector(".instruction-page")
            assert "read the instructions again" in page.inner_text(".notice")


def finish_feedback(page) -> None:
    page.fill("#f0", "All clear, thanks.")
    page.click("#feedback-submit")
    page.wait_for_selector("#complete")
