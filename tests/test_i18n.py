"""Participant pages in the study's language: every translatable string of the pages,
their Python messages and their scripts has a translation in every shipped language
(extracted here with Django's template parser and Babel's extractors, so the test needs
no gettext tools); each participant page in German; a German trial page in Chromium."""

from __future__ import annotations

import gettext as stdlib_gettext
import json
import re
from pathlib import Path

import polib
import pytest
from babel.messages.extract import extract
from django.conf import settings
from django.template import Engine
from django.templatetags.i18n import BlockTranslateNode, TranslateNode
from django.test import Client
from django.urls import reverse

from elicitation.models import Session, Study
from tests.browser import enter_study

ROOT = Path(settings.BASE_DIR)
# What a participant sees: the participant templates, the messages of the participant
# views and of the flow's services, the site's error answers, and the scripts.
# The site's home page (templates/elicitation/home.html) is no participant page.
TEMPLATES = [
    ROOT / "templates" / "base.html",
    *sorted(
        p for p in (ROOT / "templates" / "elicitation").glob("*.html") if p.name != "home.html"
    ),
]
PYTHON = [
    ROOT / "elicitation" / "views.py",
    *sorted((ROOT / "elicitation" / "services").glob("*.py")),
    ROOT / "hillmix_site" / "errors.py",
]
SCRIPTS = sorted((ROOT / "static" / "js").rglob("*.js"))
KEYWORDS = {
    "gettext": None,
    "gettext_lazy": None,
    "gettext_noop": None,
    "pgettext": ((1, "c"), 2),
    "pgettext_lazy": ((1, "c"), 2),
    "ngettext": (1, 2),
    "ngettext_lazy": (1, 2),
}
SHIPPED = [code for code, _ in settings.LANGUAGES if code != "en"]
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def template_messages(path: Path) -> set[str]:
    """The msgids of {% translate %} and {% blocktranslate %} in one template, as Django
    builds them (its own parser and BlockTranslateNode.render_token_list)."""
    nodelist = Engine.get_default().from_string(path.read_text()).nodelist
    found = set()
    for node in nodelist.get_nodes_by_type(TranslateNode):
        found.add(str(node.filter_expression.var.literal))
    for node in nodelist.get_nodes_by_type(BlockTranslateNode):
        found.add(node.render_token_list(node.singular)[0])
        if node.plural:
            found.add(node.render_token_list(node.plural)[0])
    return found


def code_messages(path: Path, method: str) -> set[str]:
    found = set()
    with path.open("rb") as handle:
        for _, message, _, _ in extract(method, handle, keywords=KEYWORDS):
            found.update(m for m in (message if isinstance(message, tuple) else (message,)) if m)
    return found


def participant_messages() -> dict[str, set[str]]:
    """Every translatable string a participant can meet, by gettext domain."""
    django_domain: set[str] = set()
    for path in TEMPLATES:
        django_domain |= template_messages(path)
    for path in PYTHON:
        django_domain |= code_messages(path, "python")
    scripts = set().union(*(code_messages(path, "javascript") for path in SCRIPTS))
    return {"django": django_domain, "djangojs": scripts}


def missing_translations(language: str, domain: str, msgids: set[str]) -> list[str]:
    """The msgids without a translation in the compiled catalogue Django loads
    (msgfmt leaves out untranslated and fuzzy entries, so they count as missing)."""
    mo = ROOT / "locale" / language / "LC_MESSAGES" / f"{domain}.mo"
    with mo.open("rb") as handle:
        catalog = stdlib_gettext.GNUTranslations(handle)._catalog
    return sorted(m for m in msgids if not catalog.get(m))


def test_the_extraction_sees_every_kind_of_string():
    messages = participant_messages()
    assert "Consent" in messages["django"]  # {% translate %}
    assert "Trial %(index)s of %(total)s" in messages["django"]  # {% blocktranslate %}
    assert "No session for this study in this browser." in messages["django"]  # Python
    assert "Keys: G and H change the image; Enter or the button continues." in messages["djangojs"]
    assert len(messages["django"]) > 30 and len(messages["djangojs"]) > 40


@pytest.mark.parametrize("language", SHIPPED)
@pytest.mark.parametrize("domain", ["django", "djangojs"])
def test_every_participant_string_is_translated(language, domain):
    msgids = participant_messages()[domain]
    missing = missing_translations(language, domain, msgids)
    assert not missing, (
        f"{len(missing)} strings have no {language} translation in locale/{language}: run "
        f"manage.py makemessages -l {language} -d {domain}, translate, compilemessages: {missing}"
    )


@pytest.mark.parametrize("language", SHIPPED)
@pytest.mark.parametrize("domain", ["django", "djangojs"])
def test_catalogues_are_complete_and_compiled(language, domain):
    """The .po has no untranslated or fuzzy entry, keeps every placeholder (each plural
    form uses only its msgid's and msgid_plural's), and its .mo is compiled from it as it
    stands."""
    folder = ROOT / "locale" / language / "LC_MESSAGES"
    po = polib.pofile(str(folder / f"{domain}.po"))
    assert not po.untranslated_entries() and not po.fuzzy_entries()
    with (folder / f"{domain}.mo").open("rb") as handle:
        compiled = stdlib_gettext.GNUTranslations(handle)._catalog
    for entry in po.translated_entries():
        if entry.msgid_plural:
            known = set(PLACEHOLDER.findall(entry.msgid + entry.msgid_plural))
            for n, form in entry.msgstr_plural.items():
                assert set(PLACEHOLDER.findall(form)) <= known, entry
                assert compiled.get((entry.msgid, int(n))) == form, f"compile {domain}.po again"
            plural = set(PLACEHOLDER.findall(entry.msgid_plural))
            assert plural <= set(PLACEHOLDER.findall(entry.msgstr_plural[max(entry.msgstr_plural)]))
            continue
        kept = set(PLACEHOLDER.findall(entry.msgstr)) == set(PLACEHOLDER.findall(entry.msgid))
        assert kept, entry
        assert compiled.get(entry.msgid) == entry.msgstr, f"compile {domain}.po again"


def untranslated_template_text(source: str) -> list[str]:
    """Visible text of a template outside {% translate %} and {% blocktranslate %}: what
    is left once comments, translations, tags, variables, scripts and markup are gone
    (and the attributes a person reads: alt, aria-label, title, placeholder)."""
    source = re.sub(r"\{#.*?#\}|\{% comment %\}.*?\{% endcomment %\}", "", source, flags=re.S)
    source = re.sub(r"\{% blocktranslate.*?\{% endblocktranslate %\}", "", source, flags=re.S)
    source = re.sub(r"\{%.*?%\}|\{\{.*?\}\}", "", source, flags=re.S)
    attributes = re.finditer(r'\b(?:alt|aria-label|title|placeholder)="([^"]*)"', source)
    found = [m.group(1) for m in attributes if re.search("[A-Za-z]", m.group(1))]
    source = re.sub(r"<script.*?</script>|<style.*?</style>", "", source, flags=re.S)
    text = re.sub(r"<[^>]*>", "\n", source, flags=re.S)
    return found + [line.strip() for line in text.splitlines() if re.search("[A-Za-z]", line)]


# A string literal outside gettext( that reads as a message: words and spaces, and a
# capital first or a full stop last (class names and "use strict" do not).
JS_STRING = re.compile(
    r"(gettext\(\s*)?(\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\\\n]|\\.)*'|`(?:[^`\\]|\\.)*`)"
)


def untranslated_script_text(source: str) -> list[str]:
    source = re.sub(r"/\*.*?\*/", "", source, flags=re.S)
    source = re.sub(r"(^|[^:\\])//[^\n]*", r"\1", source)
    found = []
    for match in JS_STRING.finditer(source):
        text = match.group(2)[1:-1]
        if match.group(1) or not re.search(r"[A-Za-z]{2,} [A-Za-z]{2,}", text):
            continue
        if re.match(r"[A-Z][a-z]", text) or re.search(r"[.?!…:]$", text):
            found.append(text)
    return found


def test_participant_pages_and_scripts_show_no_text_outside_translation():
    # The site's own name is the default title (every study page sets its title).
    leftovers = {
        path.name: [t for t in untranslated_template_text(path.read_text()) if t != "HILL-Mix"]
        for path in TEMPLATES
    } | {path.name: untranslated_script_text(path.read_text()) for path in SCRIPTS}
    assert not any(leftovers.values()), {k: v for k, v in leftovers.items() if v}
    assert untranslated_template_text("<p>{% translate 'Yes' %} Thanks</p>") == ["Thanks"]
    assert untranslated_template_text('<img alt="a cat">') == ["a cat"]
    assert untranslated_script_text('el("p", {}, gettext("Fine."), "Not fine.")') == ["Not fine."]


def test_a_missing_translation_is_reported():
    assert missing_translations("de", "djangojs", {"Next", "A string nobody translated"}) == [
        "A string nobody translated"
    ]


# --- each participant page in German ------------------------------------------------


def german(make_study, **fields) -> Study:
    return make_study("construct", slug="studie", language="de", **fields)


def consented(client: Client, study: Study, answers: dict | None = None):
    client.get(f"/s/{study.slug}/?PROLIFIC_PID=p-de&STUDY_ID=st&SESSION_ID=se")
    return client.post(
        reverse("elicitation:consent", args=[study.slug]),
        {"consent_0": "on", "consent_1": "on", **(answers or {})},
        follow=True,
    )


def text(response) -> str:
    return response.content.decode()


@pytest.mark.django_db
def test_consent_instructions_and_quiz_pages_in_german(make_study, client):
    study = german(make_study)
    page = text(client.get(f"/s/{study.slug}/"))
    assert '<html lang="de">' in page
    for phrase in [
        "Einwilligung",
        "Ich stimme zu, weiter",
        "Anleitung",
        "Seite 1 von 2",
        "Weiter zum Quiz",
        "Ein paar Fragen, bevor es losgeht",
        "Antworten prüfen",
    ]:
        assert phrase in page, phrase
    assert "I agree, continue" not in page and "Check my answers" not in page
    assert "Consent text." in page  # the researcher's own text, as written
    refused = client.post(reverse("elicitation:consent", args=[study.slug]), {"consent_0": "on"})
    assert refused.status_code == 400 and "Bitte kreuzen Sie alle Kästchen an" in text(refused)
    wrong = consented(client, study, {"q0": "0"})  # the quiz failed: back to the instructions
    assert "Einige Antworten waren nicht richtig" in text(wrong)
    assert wrong.headers["Content-Language"] == "de"


@pytest.mark.django_db
def test_trial_feedback_and_completion_pages_in_german(make_study, client):
    study = german(make_study)
    trials = text(consented(client, study, {"q0": "1"}))
    assert "Durchgang 1 von" in trials and "Wird geladen …" in trials
    assert reverse("elicitation:javascript_catalog", args=["de"]) in trials
    session = Session.objects.get()
    assert "Fast geschafft" in trials and "Abschließen" in trials  # the feedback screen
    assert "Teilnahme an dieser Studie widerrufen" in trials  # the withdrawal link
    withdraw = text(client.get(reverse("elicitation:withdraw", args=[study.slug])))
    assert "Zurück zur Studie" in withdraw and "Widerrufen" in withdraw
    Session.objects.filter(pk=session.pk).update(state=Session.State.FEEDBACK)
    feedback = text(client.get(f"/s/{study.slug}/"))
    assert "Ihre Antworten sind gespeichert" in feedback
    client.post(reverse("elicitation:feedback", args=[study.slug]), {"f0": "gut"})
    done = text(client.get(f"/s/{study.slug}/"))
    assert "Vielen Dank!" in done and "Ihr Abschlusscode:" in done and "DONE-123" in done


@pytest.mark.django_db
def test_full_closed_and_error_answers_in_german(make_study, client):
    study = german(make_study, participants_per_condition=1, conditions=1)
    consented(Client(), study, {"q0": "1"})
    full = client.get(f"/s/{study.slug}/")
    assert full.status_code == 403 and "Vielen Dank für Ihr Interesse" in text(full)
    assert "Rekrutierungsplattform" in text(full)
    study.status = Study.Status.CLOSED
    study.save()
    closed = client.get(f"/s/{study.slug}/")
    assert "Diese Studie ist beendet." in text(closed)
    trial = client.get(reverse("elicitation:trial", args=[study.slug]))
    assert trial.json() == {"error": "In diesem Browser gibt es keine Sitzung für diese Studie."}
    save = client.post(
        reverse("elicitation:judgments", args=[study.slug]), "{}", content_type="application/json"
    )
    assert save.status_code == 403 and "keine Sitzung" in save.json()["error"]
    strict = Client(enforce_csrf_checks=True)
    refused = strict.post(
        reverse("elicitation:judgments", args=[study.slug]), "{}", content_type="application/json"
    )
    assert refused.status_code == 403
    assert refused.json()["error"].startswith("Das Sicherheitstoken der Seite fehlt")


@pytest.mark.django_db
def test_an_english_study_stays_english_and_languages_do_not_leak(make_study, client):
    english = make_study("construct", slug="study-en")
    german(make_study)
    assert "Ich stimme zu" in text(client.get("/s/studie/"))
    page = text(client.get("/s/study-en/"))
    assert "I agree, continue" in page and "Ich stimme zu" not in page
    assert '<html lang="en' in page
    trial = client.get(reverse("elicitation:trial", args=[english.slug]))
    assert trial.json()["error"] == "No session for this study in this browser."


def test_the_javascript_catalogue(client):
    catalog = client.get(reverse("elicitation:javascript_catalog", args=["de"]))
    assert catalog.status_code == 200 and "javascript" in catalog.headers["Content-Type"]
    body = catalog.content.decode()
    assert json.dumps("Tasten: G und H verändern das Bild")[1:-1] in body
    assert client.get("/jsi18n/xx/").status_code == 404


# --- in the browser -----------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_german_trial_page_in_the_browser(page, live_server, make_study):
    study = german(make_study, n_pairs=2)
    enter_study(page, live_server.url, study.slug, "de-person")
    page.wait_for_selector('.trial[data-index="0"][data-shown]')
    app = page.inner_text("#trial-app")
    assert "Tasten: G und H verändern das Bild" in app  # the key hint, from the script
    assert "Stellen Sie sich vor, 100 andere Menschen betrachten dieses Bild" in app
    assert "die Hälfte von ihnen" in app and "Weiter" in page.inner_text("#continue")
    assert "Keys:" not in app and "Imagine" not in app
    total = Session.objects.get().trial_count
    page.click("#continue")
    page.wait_for_selector('.trial[data-index="1"][data-shown]')
    # Written by the script after the first answer.
    assert page.inner_text("#progress-text") == f"Durchgang 2 von {total}"
