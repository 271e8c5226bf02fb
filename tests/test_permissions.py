"""Roles and permissions over every URL the site has, admin lookups on credentials and
recruiter ids, login lockout, and API tokens that expire and rotate."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.test import Client, RequestFactory
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from rest_framework.authtoken.models import Token

from elicitation.models import Participant, Session, Study
from elicitation.services.audit import record as record_audit
from hillmix_site.permissions import RECRUITER_ID_FIELDS, SECRET_FIELDS
from hillmix_site.roles import ANALYST, RESEARCHER, ROLE_PERMISSIONS
from tests.test_api import answered_study  # noqa: F401  (a fixture)
from training.models import TrainingJob

ROLES = ["anonymous", "staff", "analyst", "researcher", "admin"]
PUBLIC = "public"  # participants' pages, logins: no permission at all
STAFF = "staff"  # admin pages that show no data (index, own password): any staff user
LOGGED_IN = "logged-in"  # the user's own API token
NOBODY = "nobody"  # no one, not even a superuser (read-only models' add views, ...)


@dataclass
class Check:
    """One request to a URL and who may make it: `needs` is a marker above or a tuple
    of permissions; `allowed`/`denied` are the statuses for users with and without."""

    needs: str | tuple[str, ...]
    method: str = "get"
    allowed: set[int] = field(default_factory=lambda: {200})
    denied: set[int] = field(default_factory=lambda: {403})


def perms(*names: str) -> tuple[str, ...]:
    return names


VIEW_STUDY = perms("elicitation.view_study")
VIEW_JUDGMENT = perms("elicitation.view_judgment")
EXPORT = perms("elicitation.export_judgments")
LAUNCH = perms("training.launch_trainingjob")
MANAGE_PROLIFIC = perms("recruitment.manage_prolific")
DATA_REQUESTS = perms("elicitation.view_recruiter_ids", "elicitation.handle_data_requests")

# Every named URL (and unnamed route) of the URLconf, except the admin's standard
# per-model pages, which ADMIN_MODELS covers. A URL missing here fails the test.
EXPECTED: dict[str, list[Check]] = {
    # participants and logins
    "elicitation:home": [Check(PUBLIC)],
    "elicitation:study": [Check(PUBLIC)],
    "elicitation:consent": [Check(PUBLIC)],
    "elicitation:instructions": [Check(PUBLIC)],
    "elicitation:quiz": [Check(PUBLIC)],
    "elicitation:feedback": [Check(PUBLIC)],
    "elicitation:trial": [Check(PUBLIC)],
    "elicitation:judgments": [Check(PUBLIC)],
    "elicitation:image_failures": [Check(PUBLIC)],
    # withdrawing reaches only the browser's own session (none here); a wrong preview key
    "elicitation:withdraw": [Check(PUBLIC, allowed={403}), Check(PUBLIC, "post", {403})],
    "elicitation:preview": [Check(PUBLIC, allowed={404})],
    "elicitation:javascript_catalog": [Check(PUBLIC)],
    # a stimulus by its own key: admin previews only (the world's key is no stimulus's;
    # test_blinding fetches real ones)
    "stimulus-image": [Check(perms("datasets.view_stimulus"), allowed={404}, denied={404})],
    "study-image": [Check(PUBLIC)],  # a live study's images, under that study's names
    "admin:login": [Check(PUBLIC)],
    "admin:logout": [Check(PUBLIC)],
    "api-token": [Check(PUBLIC)],
    "bench/floor/": [Check(PUBLIC)],  # only with HILLMIX_BENCH_FLOOR, never deployed
    # stored files: a 404 for whoever may not see the folder
    "^media/(?P<path>.*)$": [
        Check(perms("datasets.view_dataset"), denied={404}),
    ],
    # admin pages without data
    "admin:index": [Check(STAFF)],
    "admin:password_change": [Check(STAFF)],
    "admin:password_change_done": [Check(STAFF)],
    "admin:jsi18n": [Check(STAFF)],
    "admin:view_on_site": [Check(STAFF, allowed={302, 404})],
    "admin/(?P<url>.*)$": [Check(STAFF, allowed={404})],
    "admin:autocomplete": [Check(NOBODY)],  # no admin has autocomplete fields
    "admin:app_list": [Check(VIEW_STUDY, denied={404})],
    "admin:auth_user_password_change": [Check(perms("auth.change_user"))],
    # researcher pages in the admin
    "admin:elicitation_study_overview": [Check(VIEW_STUDY)],
    "admin:elicitation_study_dashboard": [Check(VIEW_STUDY)],
    "admin:elicitation_import_hmix": [Check(perms("elicitation.import_hmix"))],
    "admin:elicitation_study_close": [
        Check(perms("elicitation.change_study"), method="post", allowed={302})
    ],
    "admin:elicitation_session_exclusion": [
        Check(perms("elicitation.change_session"), method="post", allowed={302})
    ],
    "admin:elicitation_study_delete_non_live": [
        Check(perms("elicitation.delete_session"), method="post", allowed={302})
    ],
    "admin:elicitation_data_requests": [
        Check(DATA_REQUESTS),
        Check(DATA_REQUESTS, method="post", allowed={400}),  # no recruiter id given
    ],
    "admin:training_trainingjob_compare": [Check(perms("training.view_trainingjob"))],
    # Prolific (recruitment): nothing is linked or configured here, so an allowed
    # action is refused as bad input (400) and nothing is sent anywhere.
    "recruitment:prolific": [Check(MANAGE_PROLIFIC)],
    "recruitment:prolific_link": [Check(MANAGE_PROLIFIC, method="post", allowed={400})],
    "recruitment:prolific_approve": [Check(MANAGE_PROLIFIC, method="post", allowed={400})],
    "recruitment:prolific_reject": [Check(MANAGE_PROLIFIC, method="post", allowed={400})],
    "recruitment:prolific_bonuses": [Check(MANAGE_PROLIFIC, method="post", allowed={400})],
    "recruitment:prolific_reconcile": [Check(MANAGE_PROLIFIC, method="post", allowed={400})],
    # the REST API
    "api-root": [Check(VIEW_STUDY)],
    "schema": [Check(VIEW_STUDY)],
    "api-docs": [Check(VIEW_STUDY)],
    "api-token-rotate": [Check(LOGGED_IN, method="post")],
    "study-list": [Check(VIEW_STUDY)],
    "study-detail": [Check(VIEW_STUDY)],
    "study-stimulus-aggregates": [Check(VIEW_JUDGMENT)],
    "study-confidence-by-lam": [Check(VIEW_JUDGMENT)],
    "study-class-pairs": [Check(VIEW_JUDGMENT)],
    "study-paper-view": [Check(VIEW_JUDGMENT)],
    "study-export": [Check(EXPORT)],
    "study-export-hmix": [Check(EXPORT)],
    "study-publish": [Check(EXPORT, allowed={200, 409})],  # 409: only a closed study
    "condition-list": [Check(perms("elicitation.view_condition"))],
    "condition-detail": [Check(perms("elicitation.view_condition"))],
    "stimulus-list": [Check(perms("datasets.view_stimulus"))],
    "stimulus-detail": [Check(perms("datasets.view_stimulus"))],
    "participant-list": [Check(perms("elicitation.view_participant"))],
    "participant-detail": [Check(perms("elicitation.view_participant"))],
    "data-requests-access": [Check(DATA_REQUESTS, method="post", allowed={400})],
    "data-requests-erase": [Check(DATA_REQUESTS, method="post", allowed={400})],
    "judgment-list": [Check(VIEW_JUDGMENT)],
    "judgment-detail": [Check(VIEW_JUDGMENT)],
    "judgment-export": [Check(EXPORT)],
    "midpoints-list": [Check(VIEW_JUDGMENT)],
    "trainingjob-list": [
        Check(perms("training.view_trainingjob")),
        Check(LAUNCH, method="post", allowed={400}),  # an empty job is refused
    ],
    "trainingjob-detail": [Check(perms("training.view_trainingjob"))],
    "trainingjob-cancel": [Check(LAUNCH, method="post")],
}

# The admin's pages per model: changelist, change (read-only with the view permission)
# and history need the view permission; add and delete what is named here. Every
# model of the project's apps registered in the admin needs an entry.
ADMIN_MODELS: dict[str, dict[str, str | tuple[str, ...]]] = {
    "datasets.dataset": {
        "add": perms("datasets.import_dataset"),
        "delete": perms("datasets.delete_dataset"),
    },
    "datasets.stimulusset": {
        "add": perms("datasets.add_stimulusset"),
        "delete": perms("datasets.delete_stimulusset"),
    },
    "datasets.stimulus": {"add": NOBODY, "delete": perms("datasets.delete_stimulus")},
    "elicitation.study": {
        "add": perms("elicitation.add_study"),
        "delete": perms("elicitation.delete_study"),
    },
    "elicitation.session": {"add": NOBODY, "delete": NOBODY},
    "elicitation.participant": {"add": NOBODY, "delete": NOBODY},
    "elicitation.judgment": {"add": NOBODY, "delete": NOBODY},
    "elicitation.auditlog": {"add": NOBODY, "delete": NOBODY},
    "training.trainingjob": {"add": LAUNCH, "delete": perms("training.delete_trainingjob")},
}
PROJECT_APPS = {"datasets", "elicitation", "training", "hillmix_site"}
ADMIN_MODEL_URL = re.compile(r"^admin:(\w+?)_(\w+)_(changelist|add|change|history|delete)$")
ADMIN_MODEL_REDIRECT = re.compile(r"^admin/(\w+)/(\w+)/<path:object_id>/$")


def walk(resolver=None, prefix: str = "", namespace: str = ""):
    """(route, key) for every URL pattern: key is the namespaced name, or the route for
    unnamed patterns."""
    for pattern in (resolver or get_resolver()).url_patterns:
        if isinstance(pattern, URLResolver):
            inner = namespace + (f"{pattern.namespace}:" if pattern.namespace else "")
            yield from walk(pattern, prefix + str(pattern.pattern), inner)
        else:
            assert isinstance(pattern, URLPattern)
            route = prefix + str(pattern.pattern)
            yield route, (namespace + pattern.name) if pattern.name else route


def checks_for(key: str, route: str) -> list[Check] | None:
    if key in EXPECTED:
        return EXPECTED[key]
    model_url = ADMIN_MODEL_URL.match(key)
    redirect = ADMIN_MODEL_REDIRECT.match(route) if key == route else None
    match = model_url or redirect
    if match is None:
        return None
    app, model = match.group(1), match.group(2)
    page = model_url.group(3) if model_url else "redirect"
    label = f"{app}.{model}"
    if app in PROJECT_APPS:
        if label not in ADMIN_MODELS:
            return None
        needs = ADMIN_MODELS[label].get(page, perms(f"{app}.view_{model}"))
    else:  # Django's and libraries' models: users, groups, tokens, login records
        action = {"changelist": "view", "history": "view"}.get(page, page)
        needs = perms(f"{app}.{action}_{model}") if page != "redirect" else perms()
    if page == "redirect":
        return [Check(STAFF, allowed={301, 302})]
    if app not in PROJECT_APPS:
        # Django's own pages: a missing object sends anyone back to the index (302)
        # before the permission is asked.
        return [Check(needs, allowed={200, 302, 403}, denied={302, 403})]
    return [Check(needs)]


def url_for(route: str, objects: dict) -> str:
    """A concrete URL for `route`, its parameters filled from the test's objects."""
    model_path = re.match(r"admin/(\w+)/(\w+)/", route)

    def value(name: str) -> str:
        if name == "object_id" and model_path:
            obj = objects.get(f"{model_path.group(1)}.{model_path.group(2)}")
            return str(obj.pk if obj is not None else 0)
        if name == "pk" and route.startswith("api/"):
            resource = route.split("^")[1].split("/")[0].split("\\")[0]
            return str(objects[f"api.{resource}"].pk)
        return str(objects[name])

    def converter(m: re.Match) -> str:
        # DRF's format suffix converter takes the dot with the format.
        return ("." if m.group(1) == "drf_format_suffix" else "") + value(m.group(2))

    url = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: value(m.group(1)), route)
    url = re.sub(r"<(?:(\w+):)?(\w+)>", converter, url)
    url = url.replace("^", "").replace("$", "").replace("\\.", ".").replace("/?", "")
    return "/" + url


@pytest.fixture
def world(answered_study, role_user, django_user_model, media_root):  # noqa: F811
    study, sessions = answered_study
    job = TrainingJob.objects.create(
        name="probe", dataset=study.stimulus_set.dataset, policy="onehot", seeds=[0]
    )
    users = {
        "staff": django_user_model.objects.create_user("staff", password="pw", is_staff=True),
        "analyst": role_user("analyst", ANALYST),
        "researcher": role_user("researcher", RESEARCHER),
        "admin": django_user_model.objects.create_superuser("boss", "b@example.org", "pw"),
    }
    (media_root / "datasets").mkdir(exist_ok=True)
    (media_root / "datasets" / "probe.txt").write_text("probe")
    stimulus = study.stimulus_set.pairs.first().stimuli.first()
    condition = study.conditions.first()
    judgment = sessions[0].judgments.first()
    objects = {
        "slug": study.slug,
        "pk": study.pk,
        "session_id": sessions[0].pk,
        "public_id": sessions[0].participant.public_id,
        "format": "json",
        "language": "de",
        "app_label": "elicitation",
        "content_type_id": 1,
        "url": "no-such-page/",
        "path": "datasets/probe.txt",
        "key": "no-such-key",
        "id": users["staff"].pk,
        "object_id": study.pk,
        "api.studies": study,
        "api.conditions": condition,
        "api.stimuli": stimulus,
        "api.judgments": judgment,
        "api.training-jobs": job,
        "datasets.dataset": study.stimulus_set.dataset,
        "datasets.stimulusset": study.stimulus_set,
        "datasets.stimulus": stimulus,
        "elicitation.study": study,
        "elicitation.session": sessions[0],
        "elicitation.participant": sessions[0].participant,
        "elicitation.judgment": judgment,
        "elicitation.auditlog": record_audit(None, "export", study=study),
        "training.trainingjob": job,
        "auth.user": users["staff"],
        "auth.group": Group.objects.get(name=ANALYST),
    }
    clients = {"anonymous": Client()}
    for role, user in users.items():
        clients[role] = Client()
        clients[role].force_login(user)
    return study, sessions, job, users, clients, objects


def state(study: Study, session: Session, job: TrainingJob) -> tuple:
    """What a refused request must leave as it was."""
    study.refresh_from_db()
    session.refresh_from_db()
    job.refresh_from_db()
    return (
        study.status,
        session.excluded,
        job.cancel_requested,
        job.status,
        TrainingJob.objects.count(),
        Token.objects.count(),
    )


def test_every_url_checks_the_permission_for_what_it_does(world):
    study, sessions, job, users, clients, objects = world
    routes = list(walk())
    missing = sorted({key for route, key in routes if checks_for(key, route) is None})
    assert not missing, f"URLs without an entry in EXPECTED / ADMIN_MODELS: {missing}"
    seen = 0
    for route, key in routes:
        url = url_for(route, objects)
        for check in checks_for(key, route):
            for role in ROLES:
                before = state(study, sessions[0], job)
                response = getattr(clients[role], check.method)(url)
                status = response.status_code
                where = (role, check.method, url, status)
                seen += 1
                assert status < 500, where
                if check.needs == PUBLIC:
                    continue
                if role == "anonymous":
                    if url.startswith("/admin/"):
                        assert status == 302 and "/admin/login/" in response["Location"], where
                    elif url.startswith("/api/"):
                        assert status in (401, 403), where
                    else:
                        assert status in check.denied, where
                    assert state(study, sessions[0], job) == before, where
                    continue
                user = users[role]
                if check.needs in (STAFF, LOGGED_IN):
                    may = True
                elif check.needs == NOBODY:
                    may = False
                else:
                    may = user.has_perms(check.needs)
                if may:
                    assert status in check.allowed, where
                else:
                    assert status in check.denied, where
                    assert state(study, sessions[0], job) == before, where
    assert seen > 500


def test_roles_are_groups_with_what_design_section_7_says():
    analyst = set(ROLE_PERMISSIONS[ANALYST])
    researcher = set(ROLE_PERMISSIONS[RESEARCHER])
    assert analyst < researcher
    assert "elicitation.export_judgments" in analyst
    assert all(p.split(".")[1].startswith(("view_", "export_")) for p in analyst)
    for perm in (
        "datasets.import_dataset",
        "training.launch_trainingjob",
        "elicitation.add_study",
        "elicitation.import_hmix",
    ):
        assert perm in researcher and perm not in analyst
    assert "elicitation.view_recruiter_ids" not in researcher
    assert not any(p.startswith("auth.") for p in researcher)


@pytest.mark.django_db
def test_role_groups_come_from_the_migration():
    for name, wanted in ROLE_PERMISSIONS.items():
        group = Group.objects.get(name=name)
        have = {
            f"{p.content_type.app_label}.{p.codename}"
            for p in group.permissions.select_related("content_type")
        }
        assert have == set(wanted), name


def test_admin_actions_need_their_permission(world):
    study, sessions, job, users, clients, objects = world
    changelist = "/admin/elicitation/study/"
    dashboard = f"/admin/elicitation/study/{study.pk}/dashboard/"
    # The dashboard offers only the buttons its user may press.
    for role, may in [("analyst", False), ("researcher", True)]:
        page = clients[role].get(dashboard).content.decode()
        assert ('id="close-study"' in page) == may, role
        assert ("/exclusion/" in page) == may, role
    for role in ("staff", "analyst"):
        response = clients[role].post(
            changelist, {"action": "close_study", "_selected_action": [study.pk]}
        )
        assert response.status_code in (200, 302, 403), role
        study.refresh_from_db()
        assert study.status == "live", role
        clients[role].post(
            "/admin/training/trainingjob/", {"action": "cancel", "_selected_action": [job.pk]}
        )
        job.refresh_from_db()
        assert not job.cancel_requested, role
    close = {"action": "close_study", "_selected_action": [study.pk]}
    clients["researcher"].post(changelist, close)
    study.refresh_from_db()
    assert study.status == "closed"
    clients["researcher"].post(
        "/admin/training/trainingjob/", {"action": "cancel", "_selected_action": [job.pk]}
    )
    job.refresh_from_db()
    assert job.cancel_requested


# --- lookups on credentials and recruiter ids --------------------------------------


def count_in_changelist(client: Client, url: str) -> tuple[int, str]:
    response = client.get(url)
    if response.status_code != 200:
        return response.status_code, ""
    return 200, str(response.context["cl"].result_count)


def test_admin_lookups_on_recruiter_ids_and_tokens_never_narrow(world, django_user_model):
    study, sessions, job, users, clients, objects = world
    holder = django_user_model.objects.create_user("payer", password="pw", is_staff=True)
    holder.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="elicitation",
            codename__in=[
                "view_recruiter_ids",
                "view_participant",
                "view_session",
                "view_judgment",
            ],
        )
    )
    payer = Client()
    payer.force_login(holder)
    session = sessions[0]
    pid = session.participant.recruiter_pid
    hashed = session.token_hash
    wrong_hash = ("0" if hashed[0] != "0" else "1") + hashed[1:]
    # (lookup, the true value, a wrong one): a list that answers differently for the
    # two tells the value away a character at a time.
    probes = {
        "/admin/elicitation/participant/": [
            ("recruiter_pid__startswith", pid[:5], "zzzzz"),
            ("recruiter_pid", pid, "zzzzz"),
            ("sessions__token_hash__startswith", hashed[:4], wrong_hash[:4]),
            ("sessions__recruiter_session_id", session.recruiter_session_id, "zzzzz"),
            ("q", pid, "zzzzz"),
        ],
        "/admin/elicitation/session/": [
            ("token_hash__startswith", hashed[:4], wrong_hash[:4]),
            ("token_hash", hashed, wrong_hash),
            ("pk__in", session.pk, 0),  # a control: an ordinary lookup still works
            ("recruiter_study_id", session.recruiter_study_id, "zzzzz"),
            ("recruiter_session_id__startswith", session.recruiter_session_id[:4], "zzzz"),
            ("participant__recruiter_pid__startswith", pid[:5], "zzzzz"),
            ("q", hashed[:4], wrong_hash[:4]),
        ],
        "/admin/elicitation/judgment/": [
            ("session__token_hash__startswith", hashed[:4], wrong_hash[:4]),
            ("session__participant__recruiter_pid", pid, "zzzzz"),
            ("q", pid, "zzzzz"),
        ],
    }
    for role, client in [("analyst", clients["analyst"]), ("payer", payer)]:
        for changelist, lookups in probes.items():
            assert count_in_changelist(client, changelist)[0] == 200, (role, changelist)
            for name, right, wrong in lookups:
                if role == "payer" and "recruiter" in name and "token" not in name:
                    continue  # they may narrow by recruiter ids (checked below)
                answers = {
                    count_in_changelist(client, f"{changelist}?{name}={value}")
                    for value in (right, wrong)
                }
                if name == "pk__in":
                    assert len(answers) == 2, (role, answers)
                    continue
                # Refused (400) or answered alike, whatever the value.
                assert len(answers) == 1, (role, changelist, name, answers)
    # Sorting by column number (`?o=<n>`) reaches only the columns shown, and no admin
    # shows a hidden field as a column or takes it for its default ordering.
    request = RequestFactory().get("/admin/")
    for user, hidden in [
        (users["analyst"], SECRET_FIELDS | RECRUITER_ID_FIELDS),
        (holder, SECRET_FIELDS),
    ]:
        request.user = user
        for model, model_admin in admin.site._registry.items():
            names = [
                n
                for n in [
                    *model_admin.get_list_display(request),
                    *model_admin.get_ordering(request),
                    *model_admin.get_search_fields(request),
                ]
                if isinstance(n, str)
            ]
            parts = {part.lstrip("-^=@") for name in names for part in name.split("__")}
            assert not parts & hidden, (model, user, parts & hidden)
    # Not even a superuser narrows users by password hash, nor sees API token keys listed.
    boss = clients["admin"]
    assert boss.get("/admin/auth/user/?password__startswith=pbkdf2").status_code == 400
    key = Token.objects.create(user=users["analyst"]).key
    tokens = boss.get("/admin/authtoken/tokenproxy/")
    assert tokens.status_code == 200 and key not in tokens.content.decode()
    assert boss.get(f"/admin/authtoken/tokenproxy/?key__startswith={key[:3]}").status_code == 400
    assert boss.get(f"/admin/auth/user/{users['analyst'].pk}/change/").status_code == 200
    # The holder finds a participant by recruiter id, in the list and by lookup.
    page = payer.get(f"/admin/elicitation/participant/?recruiter_pid={pid}")
    assert page.status_code == 200 and page.context["cl"].result_count == 1
    assert pid in page.content.decode()
    analyst_page = clients["analyst"].get("/admin/elicitation/participant/")
    assert pid not in analyst_page.content.decode()
    # Nobody's pages show a session's secret hash, nor recruiter ids without the permission.
    for client, shows_ids in [(clients["analyst"], False), (payer, True)]:
        body = client.get(f"/admin/elicitation/session/{session.pk}/change/").content.decode()
        assert hashed not in body
        assert (session.recruiter_session_id in body) == shows_ids


def test_api_filters_ordering_and_search_ignore_recruiter_ids_and_tokens(world):
    study, sessions, job, users, clients, objects = world
    session = sessions[0]
    pid = session.participant.recruiter_pid
    everyone = clients["admin"].get("/api/participants/").json()["results"]
    assert len(everyone) == 2
    for params in [
        {"recruiter_pid": pid},
        {"recruiter_pid__startswith": pid[:5]},
        {"sessions__token_hash__startswith": session.token_hash[:4]},
        {"token_hash": session.token_hash},
        {"search": pid},
        {"ordering": "recruiter_pid"},
        {"o": "recruiter_pid"},
    ]:
        for role in ("analyst", "admin"):
            for url, count in [("/api/participants/", 2), ("/api/judgments/", None)]:
                response = clients[role].get(url, params)
                assert response.status_code in (200, 400), (role, url, params)
                if response.status_code == 200 and count is not None:
                    assert len(response.json()["results"]) == count, (role, url, params)
    # No viewset declares a filter, ordering or search on these fields.
    from hillmix_site.api_urls import router

    hidden = SECRET_FIELDS | RECRUITER_ID_FIELDS
    for _, viewset, _ in router.registry:
        names = set(getattr(viewset, "filterset_fields", None) or [])
        names |= set(getattr(viewset, "ordering_fields", None) or [])
        names |= set(getattr(viewset, "search_fields", None) or [])
        filterset = getattr(viewset, "filterset_class", None)
        if filterset is not None:
            names |= {f.field_name for f in filterset.base_filters.values()}
        assert not any(part in hidden for name in names for part in name.split("__")), viewset


# --- logins ---------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["api", "admin"])
def test_logins_lock_out_after_repeated_failures(where, django_user_model, settings, db):
    django_user_model.objects.create_superuser("boss", "b@example.org", "right-password")

    def attempt(password: str, client: Client | None = None, username: str = "boss"):
        client = client or attacker
        if where == "api":
            return client.post("/api/token/", {"username": username, "password": password})
        return client.post("/admin/login/", {"username": username, "password": password})

    attacker = Client()
    assert attempt("right-password", Client()).status_code in (200, 302)
    tokens = set(Token.objects.values_list("key", flat=True))
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert attempt("wrong").status_code in (200, 400)  # a plain failed login
    assert attempt("wrong").status_code == 429  # the last one allowed locks out
    locked = attempt("right-password")
    assert locked.status_code == 429
    assert "_auth_user_id" not in attacker.session
    assert set(Token.objects.values_list("key", flat=True)) == tokens
    # Another address is not locked out by someone else's failures.
    ok = attempt("right-password", Client(REMOTE_ADDR="198.51.100.7"))
    assert ok.status_code == (200 if where == "api" else 302)
    # Nor is another user at the locked-out address: the count is per username and
    # address together (AXES_LOCKOUT_PARAMETERS), so an office behind one address
    # keeps working while one of its logins is being guessed.
    django_user_model.objects.create_user("colleague", password="their-password", is_staff=True)
    ok = attempt("their-password", username="colleague")
    assert ok.status_code == (200 if where == "api" else 302)
    assert attempt("right-password").status_code == 429  # boss stays locked there


def test_api_tokens_expire_and_rotate(answered_study, role_user, settings):  # noqa: F811
    role_user("analyst", ANALYST, password="a-long-password")
    login = {"username": "analyst", "password": "a-long-password"}
    reply = Client().post("/api/token/", login)
    assert reply.status_code == 200 and "expires_at" in reply.json()
    key = reply.json()["token"]
    api = Client(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/studies/").status_code == 200
    # Rotation: the old key stops working at once, the new one works.
    rotated = api.post("/api/token/rotate/")
    assert rotated.status_code == 200
    new_key = rotated.json()["token"]
    assert new_key != key
    assert api.get("/api/studies/").status_code == 401
    api = Client(HTTP_AUTHORIZATION=f"Token {new_key}")
    assert api.get("/api/studies/").status_code == 200
    # Expiry: a token older than the TTL is refused; logging in issues a fresh one.
    Token.objects.filter(key=new_key).update(
        created=timezone.now() - timedelta(hours=settings.HILLMIX_TOKEN_TTL_HOURS, minutes=1)
    )
    refused = api.get("/api/studies/")
    assert refused.status_code == 401 and "expired" in refused.content.decode()
    fresh = Client().post("/api/token/", login).json()["token"]
    assert fresh != new_key
    assert Client(HTTP_AUTHORIZATION=f"Token {fresh}").get("/api/studies/").status_code == 200


def test_a_password_change_ends_the_old_token(answered_study, role_user):  # noqa: F811
    user = role_user("analyst", ANALYST, password="a-long-password")
    key = Client().post("/api/token/", {"username": "analyst", "password": "a-long-password"})
    key = key.json()["token"]
    user.set_password("another-long-password")
    user.save()
    assert Client(HTTP_AUTHORIZATION=f"Token {key}").get("/api/studies/").status_code == 401


def test_second_setup_demo_leaves_no_old_token_working(
    db, capsys, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        call_command("setup_demo")
    first = re.search(r"Researcher login: (\S+) / (\S+)", capsys.readouterr().out)
    login = {"username": first.group(1), "password": first.group(2)}
    key = Client().post("/api/token/", login).json()["token"]
    assert Client(HTTP_AUTHORIZATION=f"Token {key}").get("/api/studies/").status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        call_command("setup_demo")
    second = re.search(r"Researcher login: (\S+) / (\S+)", capsys.readouterr().out)
    assert Client(HTTP_AUTHORIZATION=f"Token {key}").get("/api/studies/").status_code == 401
    login = {"username": second.group(1), "password": second.group(2)}
    assert Client().post("/api/token/", login).status_code == 200


def test_participants_are_pseudonymous_in_the_admin_registry():
    # The admin of every model holding recruiter ids or secrets guards its lookups.
    from hillmix_site.permissions import GuardedLookupsAdmin

    for model, model_admin in admin.site._registry.items():
        fields = {f.name for f in model._meta.get_fields()}
        if model._meta.app_label in PROJECT_APPS and fields & (SECRET_FIELDS | RECRUITER_ID_FIELDS):
            assert isinstance(model_admin, GuardedLookupsAdmin), model
    assert Participant in admin.site._registry and Session in admin.site._registry
