"""Blinding: what a participant's browser receives (pages, trial JSON, save replies,
image addresses and image responses) tells nothing of a stimulus beyond what its
interface shows on purpose; stored files are not public (DESIGN section 7)."""

import io
import json
import re
import uuid

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.storage import default_storage
from django.urls import reverse

from datasets.models import Stimulus
from elicitation import interfaces
from elicitation.answers import choice_ids
from elicitation.models import Judgment, Session, Study
from elicitation.services import FlowError, copy_study, open_conflicts, set_study_status

INTERFACES = ["construct", "select_shuffled", "infer", "soft_label"]
# Numbers the trial JSON may carry (positions and counts, never a stimulus's).
COUNTING_KEYS = {"index", "total", "start_step", "slider_start", "trial_index", "next"}


def opaque_image(study) -> re.Pattern:
    """The only image addresses a study's participants may see: names of that study."""
    return re.compile(rf"^/s/{re.escape(study.slug)}/img/[A-Za-z0-9_-]{{20,}}\.png$")


# The stored-file path a response could name in a header.
LEAKY_HEADERS = ("Content-Disposition", "ETag", "Last-Modified", "Location")


def _walk(value, path=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield path + (key,), key, item
            yield from _walk(item, path + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield path + (i,), None, item
            yield from _walk(item, path + (i,))


class Secrets:
    """What the study knows about its stimuli and a participant must not learn."""

    def __init__(self, study):
        self.study = study
        stimuli = list(Stimulus.objects.filter(pair__stimulus_set=study.stimulus_set))
        pairs = {s.pair for s in stimuli}
        self.names = {s.name for s in stimuli} | {p.name for p in pairs}
        self.ids = {p.id1 for p in pairs} | {p.id2 for p in pairs}
        self.class_names = list(study.stimulus_set.dataset.class_names)

    def check_text(self, text: str, where: str) -> None:
        for name in self.names:
            assert name not in text, f"{where} names stimulus or pair {name!r}"
        assert "mixed_" not in text and '"lam"' not in text and "data-lam" not in text, where

    def check_trial_json(self, body: dict, where: str) -> None:
        """The trial JSON (a fetch, a save's reply, the page's first trial)."""
        self.check_text(json.dumps(body), where)
        trial = body.get("trial")
        shown = set()
        if trial and trial["interface"] != "soft_label":
            shown = {trial["class1"], trial["class2"]}  # named on purpose
        for path, key, value in _walk(body):
            here = f"{where} at {'.'.join(map(str, path))}"
            if key is not None:
                assert not re.search(r"lam|pair|stimul|source|id1|id2|name", key) or (
                    key == "class_names"
                ), f"{here}: key {key!r}"
            assert not isinstance(value, float), f"{here}: a non-integer number {value}"
            if isinstance(value, int) and not isinstance(value, bool):
                assert key in COUNTING_KEYS or value not in self.ids, f"{here}: source id {value}"
            if isinstance(value, str) and "class_names" not in path:
                assert value not in set(self.class_names) - shown, f"{here}: class {value!r}"
        if trial is None:
            return
        if trial["interface"] == "soft_label":
            # All classes as options, neither of the two mixed ones singled out.
            assert trial["class_names"] == self.class_names
            assert "class1" not in trial and "class2" not in trial
        urls = [im["url"] for im in trial["images"]] if "images" in trial else [trial["image"]]
        for url in urls:
            assert opaque_image(self.study).match(url), f"{where}: image address {url}"

    def check_image(self, client, url: str, where: str) -> None:
        response = client.get(url)
        assert response.status_code == 200, (where, url, response.status_code)
        assert response["Content-Type"] == "image/png"
        assert response.content.startswith(b"\x89PNG")
        for header in LEAKY_HEADERS:
            assert header not in response, f"{where}: {header} on {url}"
        for header, value in response.items():
            self.check_text(value, f"{where}: header {header}")
        assert "private" in response["Cache-Control"] and "max-age" in response["Cache-Control"]


def _answer(trial: dict) -> dict:
    """An answer as the page would build it from what it was sent."""
    interface = trial["interface"]
    if interface == "construct":
        start = trial["start_step"]
        final = start + 1 if start < len(trial["images"]) // 2 else start - 1
        return {"start_step": start, "final_step": final, "steps": [start, final]}
    if interface == "select_shuffled":
        ids = [im["choice"] for im in trial["images"]]
        return {"choice": ids[2], "order_shown": ids}
    if interface == "infer":
        return {"slider": 30, "confidence": 70, "slider_touched": True, "confidence_touched": True}
    return {"first_class": trial["class_names"][0], "first_prob": 60, "impossible": []}


def _first_trial(html: str) -> dict:
    match = re.search(
        r'<script id="first-trial" type="application/json">(.*?)</script>', html, re.S
    )
    assert match, "the trial page arrives with its first trial"
    return json.loads(match.group(1))


@pytest.mark.django_db
@pytest.mark.parametrize("interface", INTERFACES)
def test_every_trial_a_browser_receives_is_blind(make_study, client, interface):
    study = make_study(interface, quiz=[], n_pairs=4, conditions=1)
    secrets = Secrets(study)
    url = f"/s/{study.slug}/"
    client.get(f"{url}?PROLIFIC_PID=blind-{interface}")
    client.post(f"{url}consent/", {"consent_0": "on", "consent_1": "on"})
    page = client.get(url).content.decode()
    secrets.check_text(page, "trial page")
    body = _first_trial(page)
    secrets.check_trial_json(body, "first trial")
    fetched = client.get(f"{url}trial/").json()
    assert fetched == body
    images = 0
    while not body["done"]:
        trial = body["trial"]
        urls = [im["url"] for im in trial["images"]] if "images" in trial else [trial["image"]]
        for image in urls:
            secrets.check_image(client, image, f"trial {trial['index']}")
            images += 1
        answer = {
            "session": body["session"],
            "trial_index": trial["index"],
            "idempotency_key": str(uuid.uuid4()),
            "rt_ms": 1200,
            "response": _answer(trial),
        }
        reply = client.post(f"{url}judgments/", json.dumps(answer), content_type="application/json")
        assert reply.status_code == 201, reply.content
        body = reply.json()
        secrets.check_trial_json(body, f"reply to trial {trial['index']}")
    session = Session.objects.get()
    assert Judgment.objects.count() == session.trial_count and images >= session.trial_count
    # What is stored is unchanged: lams, in H-Mix's terms.
    for judgment, spec in zip(
        Judgment.objects.order_by("trial_index"), session.trial_order, strict=True
    ):
        if interface == "construct":
            start = spec["start_lam"]
            final = round(start + (0.1 if start < 0.5 else -0.1), 1)
            assert judgment.response == {
                "start_lam": start,
                "final_lam": final,
                "history": [start, final],
            }
            assert judgment.lam == final
        elif interface == "select_shuffled":
            assert judgment.response == {
                "chosen_lam": spec["order"][2],
                "order_shown": spec["order"],
            }
            assert judgment.lam == spec["order"][2]


@pytest.mark.django_db
def test_select_shuffled_ids_are_per_trial_and_only_the_trials_own_are_accepted(make_study, client):
    study = make_study("select_shuffled", quiz=[], n_pairs=4, conditions=1, repeat_trials=1)
    client.get(f"/s/{study.slug}/?PROLIFIC_PID=ids")
    client.post(f"/s/{study.slug}/consent/", {"consent_0": "on", "consent_1": "on"})
    session = Session.objects.get()
    grid = sorted(session.trial_order[0]["order"])
    per_trial = [choice_ids(session.pk, i, grid) for i in range(session.trial_count)]
    # The same lam has another id in every trial (the repeat included), and no id repeats.
    flat = [choice for ids in per_trial for choice in ids]
    assert len(set(flat)) == len(flat)
    body = client.get(f"/s/{study.slug}/trial/").json()
    ids = [im["choice"] for im in body["trial"]["images"]]
    assert ids == choice_ids(session.pk, 0, session.trial_order[0]["order"])

    def send(response):
        answer = {
            "session": body["session"],
            "trial_index": 0,
            "idempotency_key": str(uuid.uuid4()),
            "rt_ms": 900,
            "response": response,
        }
        return client.post(
            f"/s/{study.slug}/judgments/", json.dumps(answer), content_type="application/json"
        )

    refused = [
        {"choice": per_trial[1][0], "order_shown": ids},  # another trial's id
        {"choice": "0.5", "order_shown": ids},
        {"choice": ids[0], "order_shown": list(reversed(ids))},
        {"choice": ids[0], "order_shown": per_trial[1]},
        {"chosen_lam": 0.5, "order_shown": session.trial_order[0]["order"]},  # the old way
    ]
    for response in refused:
        reply = send(response)
        assert reply.status_code == 400, (response, reply.content)
        assert "error" in reply.json()
    assert Judgment.objects.count() == 0
    assert send({"choice": ids[5], "order_shown": ids}).status_code == 201
    assert Judgment.objects.get().lam == session.trial_order[0]["order"][5]


@pytest.mark.django_db
def test_construct_answers_in_steps_and_refuses_lams(make_study, client):
    study = make_study("construct", quiz=[], conditions=1, construct_start="0.9")
    client.get(f"/s/{study.slug}/?PROLIFIC_PID=steps")
    client.post(f"/s/{study.slug}/consent/", {"consent_0": "on", "consent_1": "on"})
    body = client.get(f"/s/{study.slug}/trial/").json()
    assert body["trial"]["start_step"] == 9 and len(body["trial"]["images"]) == 11

    def send(response):
        answer = {
            "session": body["session"],
            "trial_index": 0,
            "idempotency_key": str(uuid.uuid4()),
            "rt_ms": 900,
            "response": response,
        }
        return client.post(
            f"/s/{study.slug}/judgments/", json.dumps(answer), content_type="application/json"
        )

    for response in [
        {"start_lam": 0.9, "final_lam": 0.8, "history": [0.9, 0.8]},  # the old way
        {"start_step": 1, "final_step": 2, "steps": [1, 2]},  # not where it started
        {"start_step": 9, "final_step": 11, "steps": [9, 10, 11]},  # off the grid
        {"start_step": 9, "final_step": 7, "steps": [9, 7]},  # a jump
        {"start_step": 9, "final_step": 8.5, "steps": [9, 8.5]},
    ]:
        assert send(response).status_code == 400, response
    assert Judgment.objects.count() == 0
    assert send({"start_step": 9, "final_step": 7, "steps": [9, 8, 7]}).status_code == 201
    judgment = Judgment.objects.get()
    assert judgment.response == {"start_lam": 0.9, "final_lam": 0.7, "history": [0.9, 0.8, 0.7]}
    assert judgment.lam == 0.7


# --- Stored files --------------------------------------------------------------------


def _user(username: str, *permissions: str) -> User:
    user = User.objects.create_user(username, password="pw-not-used-123", is_staff=True)
    for codename in permissions:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


@pytest.mark.django_db
def test_datasets_checkpoints_and_stored_stimuli_are_not_public(make_study, client):
    study = make_study("construct")
    dataset_file = study.stimulus_set.dataset.arrays.name
    stimulus = Stimulus.objects.filter(pair__stimulus_set=study.stimulus_set).first()
    checkpoint = default_storage.save("training/checkpoints/job1-seed0.pt", _bytes(b"weights"))
    diagram = default_storage.save("training/diagrams/job1-seed0.png", _bytes(b"\x89PNG"))
    files = {
        dataset_file: "view_dataset",
        stimulus.image.name: "view_stimulus",
        checkpoint: "view_seedresult",
        diagram: "view_seedresult",
    }
    for name in files:
        assert default_storage.exists(name)
        assert client.get(f"/media/{name}").status_code == 404, name
    assert client.get("/media/../manage.py").status_code == 404
    # Staff status alone grants nothing; each folder asks for its own permission.
    client.force_login(_user("staff-only"))
    for name in files:
        assert client.get(f"/media/{name}").status_code == 404, name
    for name, permission in files.items():
        client.force_login(_user(f"may-{permission}-{len(name)}", permission))
        response = client.get(f"/media/{name}")
        assert response.status_code == 200, name
        assert b"".join(response.streaming_content) == default_storage.open(name).read()
        assert "private" in response["Cache-Control"]
    # A folder's permission opens that folder only, however the path is spelled.
    client.force_login(_user("datasets-only", "view_dataset"))
    for sneaky in (f"datasets/../{checkpoint}", f"datasets//../{checkpoint}", f"/{checkpoint}"):
        assert client.get(f"/media/{sneaky}").status_code == 404, sneaky


def _bytes(data: bytes):
    from django.core.files.base import ContentFile

    return ContentFile(data)


def _take_part(client, study, pid: str) -> list[dict]:
    """Every trial one participant of `study` is sent, answered as the page would
    (the interface's example_answer)."""
    url = f"/s/{study.slug}/"
    client.get(f"{url}?PROLIFIC_PID={pid}")
    client.post(f"{url}consent/", {"consent_0": "on", "consent_1": "on"})
    body = _first_trial(client.get(url).content.decode())
    trials = []
    while not body["done"]:
        trial = body["trial"]
        trials.append(trial)
        answer = {
            "session": body["session"],
            "trial_index": trial["index"],
            "idempotency_key": str(uuid.uuid4()),
            "rt_ms": 1200,
            "response": interfaces.get(trial["interface"]).example_answer(trial),
        }
        reply = client.post(f"{url}judgments/", json.dumps(answer), content_type="application/json")
        assert reply.status_code == 201, reply.content
        body = reply.json()
    return trials


def _image_urls(trials: list[dict]) -> list[str]:
    return [
        url
        for trial in trials
        for url in (
            [im["url"] for im in trial["images"]] if "images" in trial else [trial["image"]]
        )
    ]


def _beside(study, interface: str):
    """A study of `interface` on the same stimulus set as `study`, conditions built, a
    draft (what a researcher's copy of it is)."""
    from elicitation.services import build_conditions

    other = copy_study(study)
    Study.objects.filter(pk=other.pk).update(interface=interface)
    other.refresh_from_db()
    build_conditions(other)
    return other


@pytest.mark.django_db
def test_stimulus_images_are_public_only_under_a_live_studys_own_names(
    make_study, client, django_assert_num_queries
):
    study = make_study("select_shuffled", quiz=[])
    [trial, *_] = _take_part(client, study, "images")
    url, *others = _image_urls([trial])
    stimuli = Stimulus.objects.filter(pair__stimulus_set=study.stimulus_set)
    keys = set(stimuli.values_list("key", flat=True))
    assert not any(key in shown for key in keys for shown in [url, *others])  # names of its own
    stimulus = stimuli.first()
    assert stimulus.name.startswith("mixed_")  # H-Mix's name stays, as data
    assert client.get(url).status_code == 200
    # Serving a page's images reads no database once the process knows the study.
    with django_assert_num_queries(0):
        for other in others:
            assert client.get(other).status_code == 200
    assert client.post(url).status_code == 405
    assert client.get(f"/s/{study.slug}/img/not-a-name-of-any-image.png").status_code == 404
    assert client.get(url.replace(study.slug, "another-study")).status_code == 404
    # The stimulus's own key is for users who may view stimuli (admin previews), never
    # for participants, even while the study is live.
    own = stimulus.served_url
    assert client.get(own).status_code == 404
    client.force_login(_user("staff-live"))
    assert client.get(own).status_code == 404
    client.force_login(_user("viewer-live", "view_stimulus"))
    assert client.get(own).status_code == 200
    client.logout()
    for status in ("draft", "closed"):
        if status == "draft":
            study.status = status
            study.save()
        else:
            set_study_status(study, status)
        assert client.get(url).status_code == 404, status
        client.force_login(_user(f"viewer-{status}", "view_stimulus"))
        assert client.get(url).status_code == 404, status  # a study's names die with it
        assert client.get(own).status_code == 200, status
        client.logout()


@pytest.mark.django_db
def test_two_live_studies_on_one_stimulus_set_share_no_image_address(make_study):
    """Walking 2AFC (which names the pair on purpose) must not name the images another
    study shows: every image has another address in every study."""
    from django.test import Client

    infer = make_study("infer", quiz=[], n_pairs=3, conditions=1, repeat_trials=0)
    afc = _beside(infer, "afc")
    set_study_status(afc, Study.Status.LIVE)
    afc.refresh_from_db()
    walks = {
        study.slug: _image_urls(_take_part(Client(), study, study.slug)) for study in (infer, afc)
    }
    seen = {slug: set(urls) for slug, urls in walks.items()}
    assert all(len(urls) >= 3 for urls in seen.values())
    assert not seen[infer.slug] & seen[afc.slug]
    names = {slug: {url.rsplit("/", 1)[1] for url in urls} for slug, urls in seen.items()}
    assert not names[infer.slug] & names[afc.slug]
    anyone = Client()
    pixels = {}
    for slug, urls in seen.items():
        pixels[slug] = set()
        for url in urls:
            response = anyone.get(url)
            assert response.status_code == 200, url
            pixels[slug].add(response.content)
            elsewhere = url.replace(f"/s/{slug}/", f"/s/{({infer.slug, afc.slug} - {slug}).pop()}/")
            assert anyone.get(elsewhere).status_code == 404, elsewhere
    # The same images all the same: only the rule below keeps their bytes from linking
    # studies that disclose different things.
    assert pixels[infer.slug] == pixels[afc.slug]


def test_each_interface_declares_what_it_shows_and_hides():
    expected = {
        "construct": ({"classes", "lam"}, set()),  # its grid in step order
        "select_shuffled": ({"classes"}, {"lam"}),  # the shuffle
        "infer": ({"classes"}, {"lam"}),
        "afc": ({"classes"}, {"lam"}),
        "soft_label": (set(), {"classes", "lam"}),
    }
    for spec in interfaces.all():
        assert (set(spec.shows), set(spec.hides)) == expected[spec.name], spec.name
        assert ("classes" in spec.shows) == spec.names_classes


CONFLICTS = [
    ("construct", "select_shuffled", "lam"),
    ("select_shuffled", "construct", "lam"),
    ("afc", "soft_label", "classes"),
    ("soft_label", "infer", "classes"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("live_interface, opening, disclosed", CONFLICTS)
def test_opening_a_study_beside_one_that_shows_what_it_hides_is_refused(
    make_study, admin_client, live_interface, opening, disclosed
):
    from elicitation.interfaces import DISCLOSURES
    from tests.test_researcher_tools import form_data, post_change

    live = make_study(live_interface, n_pairs=3)
    draft = _beside(live, opening)
    before = Study.objects.filter(pk=draft.pk).values().get()
    changelist = reverse("admin:elicitation_study_changelist")
    # The admin's action.
    reply = admin_client.post(
        changelist, {"action": "open_study", "_selected_action": [draft.pk]}, follow=True
    )
    text = reply.content.decode()
    assert reply.status_code == 200 and "cannot open" in text and live.slug in text
    assert DISCLOSURES[disclosed] in text
    assert Study.objects.filter(pk=draft.pk).values().get() == before
    # The admin's form.
    reply = post_change(admin_client, draft, form_data(admin_client, draft, status="live"))
    assert reply.status_code == 200, "the form is shown again with the error"
    assert "cannot open" in reply.content.decode() and live.slug in reply.content.decode()
    assert Study.objects.filter(pk=draft.pk).values().get() == before
    # The service.
    with pytest.raises(FlowError) as refused:
        set_study_status(draft, Study.Status.LIVE)
    assert refused.value.status == 409 and live.slug in refused.value.message
    assert Study.objects.filter(pk=draft.pk).values().get() == before
    # Once the other study closes, it opens.
    set_study_status(live, Study.Status.CLOSED)
    admin_client.post(changelist, {"action": "open_study", "_selected_action": [draft.pk]})
    assert Study.objects.get(pk=draft.pk).status == "live"
    # ... and the closed one cannot open again beside it.
    with pytest.raises(FlowError):
        set_study_status(live, Study.Status.LIVE)
    assert Study.objects.get(pk=live.pk).status == "closed"


@pytest.mark.django_db(transaction=True)
def test_two_studies_that_may_not_be_open_together_cannot_open_at_once(make_study):
    """Opening holds a lock on the images' dataset until it commits: a second opening
    waits for it (here: gives up after lock_timeout) instead of reading the first as
    still closed."""
    import threading

    from django.db import OperationalError, connection, transaction

    construct = make_study("construct", n_pairs=3, status="draft")
    select = _beside(construct, "select_shuffled")
    holding, release = threading.Event(), threading.Event()

    def open_construct() -> None:
        try:
            with transaction.atomic():
                set_study_status(construct, Study.Status.LIVE)
                holding.set()
                release.wait(30)
        finally:
            connection.close()

    first = threading.Thread(target=open_construct)
    first.start()
    try:
        assert holding.wait(30)
        with pytest.raises(OperationalError), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '300ms'")
            set_study_status(select, Study.Status.LIVE)
    finally:
        release.set()
        first.join(30)
    assert Study.objects.get(pk=construct.pk).status == "live"
    assert Study.objects.get(pk=select.pk).status == "draft"
    with pytest.raises(FlowError, match=construct.slug):
        set_study_status(select, Study.Status.LIVE)


@pytest.mark.django_db
def test_studies_that_disclose_alike_open_together_and_other_sets_are_judged_by_pairs(
    make_study, make_stimulus_set
):
    from elicitation.services import build_conditions

    select = make_study("select_shuffled", n_pairs=3)
    infer = _beside(select, "infer")  # both name the classes and hide the lams
    set_study_status(infer, Study.Status.LIVE)
    assert Study.objects.get(pk=infer.pk).status == "live"
    # Another stimulus set mixing the same source pairs shows the same pixels.
    soft = make_study("soft_label", slug="soft-same-pairs", n_pairs=3, status="draft")
    assert soft.stimulus_set_id != select.stimulus_set_id
    with pytest.raises(FlowError, match=select.slug):
        set_study_status(soft, Study.Status.LIVE)
    # One of other pairs does not.
    other_pairs = make_stimulus_set(name="other-pairs", kind="single", n_pairs=3, seed=99)
    shared = {(p.id1, p.id2) for p in select.stimulus_set.pairs.all()}
    assert not {(p.id1, p.id2) for p in other_pairs.pairs.all()} & (
        shared | {t[::-1] for t in shared}
    )
    Study.objects.filter(pk=soft.pk).update(stimulus_set=other_pairs)
    soft.refresh_from_db()
    build_conditions(soft)
    set_study_status(soft, Study.Status.LIVE)
    assert Study.objects.get(pk=soft.pk).status == "live"


@pytest.mark.django_db
def test_the_demo_opens_every_study_with_no_conflict():
    from django.core.management import call_command

    call_command("setup_demo", stdout=io.StringIO())
    studies = list(Study.objects.all())
    assert {s.interface for s in studies} == set(interfaces.names())
    for study in studies:
        assert study.status == "live", study.slug
        assert open_conflicts(study.interface, study.stimulus_set_id, study.pk) == [], study.slug


# --- In the browser ---------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_select_shuffled_in_the_browser_answers_with_opaque_ids(page, live_server, make_study):
    study = make_study("select_shuffled", quiz=[], feedback_questions=[], repeat_trials=0)
    sent, images = [], []
    page.on("request", lambda r: "/judgments/" in r.url and sent.append(r.post_data_json))
    page.on("response", lambda r: r.request.resource_type == "image" and images.append(r))
    page.goto(f"{live_server.url}/s/{study.slug}/")
    for box in page.locator("input[type=checkbox]").all():
        box.check()
    page.click("#consent-submit")
    page.click("#instr-next")
    page.click("#instr-done")  # sends the consent with the instructions' end
    session = Session.objects.get()
    for i in range(session.trial_count):
        page.wait_for_selector(f'.trial[data-index="{i}"] .choice')
        html = page.content()
        assert "data-lam" not in html and 'data-choice="' in html
        Secrets(study).check_text(html, f"page at trial {i}")
        page.locator(".choice").nth(6).click()
        page.click("#next")
        page.wait_for_selector(f'.trial[data-index="{i}"]', state="detached")
    page.wait_for_selector("#complete")
    judgments = list(Judgment.objects.filter(session=session).order_by("trial_index"))
    assert len(judgments) == len(sent) == session.trial_count
    for judgment, answer, spec in zip(judgments, sent, session.trial_order, strict=True):
        ids = choice_ids(session.pk, judgment.trial_index, spec["order"])
        assert answer["response"] == {"choice": ids[6], "order_shown": ids}
        assert judgment.lam == spec["order"][6] == judgment.response["chosen_lam"]
        assert judgment.response["order_shown"] == spec["order"]
    shown = [r.url.split(live_server.url)[1] for r in images]
    assert shown and all(opaque_image(study).match(url) for url in shown)
    assert all(r.status == 200 and "content-disposition" not in r.headers for r in images)


@pytest.mark.django_db
def test_a_stimulus_file_missing_from_storage_is_a_404_and_logged(make_study, client, caplog):
    from django.core.files.storage import default_storage

    from hillmix_site import media

    study = make_study("infer", quiz=[])
    [trial, *_] = _take_part(client, study, "missing-file")
    url, *_ = _image_urls([trial])
    media._stimulus_bytes.cache_clear()
    for stimulus in Stimulus.objects.filter(pair__stimulus_set=study.stimulus_set):
        default_storage.delete(stimulus.image.name)
    with caplog.at_level("ERROR", logger="hillmix_site.media"):
        assert client.get(url).status_code == 404
    assert "missing from storage" in caplog.text
