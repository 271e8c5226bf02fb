"""Participant pages. Plain Django views (CSRF enforced on every POST); the study's
state lives in the Session row, the link to it in a cookie holding the session's
secret token (the database keeps only its hash), scoped to the study's address. No page
or JSON reply carries the secret."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable

from django.conf import settings
from django.contrib import messages
from django.core import signing
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import translation
from django.utils.cache import patch_cache_control
from django.utils.crypto import constant_time_compare
from django.utils.translation import gettext
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.i18n import JavaScriptCatalog

from hillmix_site.client_address import client_address

from . import services
from .live import LiveSession, live_session
from .models import Session, Study
from .selectors import (
    next_trial,
    progress,
    session_by_recruiter_pid,
    study_by_slug,
    study_is_full,
    study_language,
)
from .services import (
    NO_SESSION,
    AlreadyCompleted,
    FlowError,
    RecruiterIds,
    StudyFull,
    Withdrawn,
)
from .services import consent as consent_law

RECRUITER_PARAMS = ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID")
RECRUITER_SALT = "elicitation.recruiter-ids"
ENTRY_COOKIE_AGE = 24 * 3600  # from following the recruiter's link to consenting


def private_reply(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Mark a participant view's replies `private, no-cache`: each depends on the
    browser's cookie (its trial, its completion code), so no shared cache on the way
    may keep one and hand it to the next participant opening the same address."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        response = view(request, *args, **kwargs)
        patch_cache_control(response, private=True, no_cache=True)
        return response

    return wrapped


def in_study_language(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Run a participant view with its study's language (Study.language) active: its
    page, its messages and the JavaScript catalogue the page loads. Texts the researcher
    wrote (consent, instructions, quiz) are shown as written."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, slug: str, *args, **kwargs) -> HttpResponse:
        with translation.override(study_language(slug)):
            response = view(request, slug, *args, **kwargs)
            response.headers.setdefault("Content-Language", translation.get_language())
        return response

    return wrapped


@require_GET
@cache_control(public=True, max_age=3600)
def javascript_catalog(request: HttpRequest, language: str) -> HttpResponse:
    """The participant scripts' messages in one of settings.LANGUAGES (Django's
    JavaScriptCatalog: gettext() and interpolate() for static/js, served as a script of
    this site, as the Content-Security-Policy wants). 404 for another language."""
    if language not in dict(settings.LANGUAGES):
        raise Http404("No such language.")
    with translation.override(language):
        return JavaScriptCatalog.as_view()(request)


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "elicitation/home.html")


def _study_or_404(slug: str) -> Study:
    study = study_by_slug(slug)
    if study is None:
        raise Http404("No such study.")
    return study


def _session_cookie(slug: str) -> str:
    return f"hillmix_{slug}"


def _browser_session(request: HttpRequest, slug: str) -> LiveSession | None:
    """The session this browser holds in the study (one query; the study is cached)."""
    return live_session(request.COOKIES.get(_session_cookie(slug)), slug)


def _bound_session(request: HttpRequest, slug: str) -> Session | None:
    live = _browser_session(request, slug)
    return live.session if live else None


def _study_path(slug: str) -> str:
    """Where the study's cookies apply: its own pages only."""
    return reverse("elicitation:study", args=[slug])


def _set_study_cookie(
    response: HttpResponse, slug: str, name: str, value: str, max_age: int
) -> None:
    """A cookie only the study's own pages receive, out of reach of page scripts."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=_study_path(slug),
        secure=settings.SESSION_COOKIE_SECURE,
        httponly=True,
        samesite="Lax",
    )


def _bind(response: HttpResponse, slug: str, session: Session) -> HttpResponse:
    """Give this browser the session's secret, which it alone holds from now on (a
    session just started or resumed carries it as `token`), and drop the recruiter's
    ids it held until then."""
    _set_study_cookie(
        response, slug, _session_cookie(slug), session.token, settings.SESSION_COOKIE_AGE
    )
    response.delete_cookie(_entry_cookie(slug), path=_study_path(slug), samesite="Lax")
    return response


def _forget_session(response: HttpResponse, slug: str) -> None:
    response.delete_cookie(_session_cookie(slug), path=_study_path(slug), samesite="Lax")


def _other_person(session: Session, recruiter: RecruiterIds) -> bool:
    """Whether a recruiter's link names someone other than the browser's session."""
    if not recruiter.pid:
        return False
    same = Session.objects.filter(pk=session.pk, participant__recruiter_pid=recruiter.pid)
    return not same.exists()


def _entry_cookie(slug: str) -> str:
    return f"hillmix_{slug}_entry"


def _hold_recruiter_ids(response: HttpResponse, slug: str, recruiter: RecruiterIds) -> None:
    """Keep the recruiter's ids until consent in a signed cookie: they leave the address
    bar at once, so they never reach a page, the history, a Referer header or an
    access log, and nothing is written to the database for a visit that goes no
    further."""
    signed = signing.dumps(recruiter.__dict__, salt=RECRUITER_SALT)
    _set_study_cookie(response, slug, _entry_cookie(slug), signed, ENTRY_COOKIE_AGE)


def _held_recruiter_ids(request: HttpRequest, slug: str) -> RecruiterIds:
    try:
        held = signing.loads(
            request.COOKIES.get(_entry_cookie(slug), ""),
            salt=RECRUITER_SALT,
            max_age=ENTRY_COOKIE_AGE,
        )
    except signing.BadSignature:  # absent, expired or tampered with: no ids
        return RecruiterIds()
    return RecruiterIds(**held)


def _flow_error_page(request: HttpRequest, study: Study, error: FlowError) -> HttpResponse:
    if isinstance(error, StudyFull):
        return render(request, "elicitation/full.html", {"study": study}, status=error.status)
    if isinstance(error, AlreadyCompleted):  # the study's completion page, nothing more
        return render(request, "elicitation/complete.html", {"study": study})
    if isinstance(error, Withdrawn):
        return render(request, "elicitation/withdrawn.html", {"study": study}, status=403)
    return render(
        request,
        "elicitation/unavailable.html",
        {"study": study, "message": error.message},
        status=error.status,
    )


STATE_TEMPLATES = {
    Session.State.INSTRUCTIONS: "elicitation/instructions.html",
    Session.State.TRIALS: "elicitation/trials.html",
    Session.State.FEEDBACK: "elicitation/feedback.html",
    Session.State.COMPLETE: "elicitation/complete.html",
}


@private_reply
@require_GET
@in_study_language
def study_page(request: HttpRequest, slug: str) -> HttpResponse:
    """The one address a participant uses: shows whatever step they are at."""
    live = _browser_session(request, slug)  # loads the study with it
    session = live.session if live else None
    study = session.study if session else _study_or_404(slug)
    if any(key in request.GET for key in RECRUITER_PARAMS):
        # The recruiter's link: its ids leave the address bar at once. A link naming
        # someone else than this browser's session starts or resumes that person's own
        # session (on the next page), never the one this browser holds.
        # Unfilled placeholders ({{%PROLIFIC_PID%}}, as Prolific's preview sends) are a
        # preview: a fresh session of its own for each previewer.
        recruiter = RecruiterIds.from_query(request.GET)
        response = redirect("elicitation:study", slug=slug)
        if session is not None and (recruiter.preview or _other_person(session, recruiter)):
            _forget_session(response, slug)
            session = None
        if session is None:
            _hold_recruiter_ids(response, slug, recruiter)
        return response
    if session is None:
        # Recruiter ids that already have a session here open it only if they prove it
        # is theirs (services.resume_session); it is then shown at once, under its new
        # secret.
        held = _held_recruiter_ids(request, slug)
        existing = None if held.preview else session_by_recruiter_pid(study, held.pid)
        if existing is None:
            return _newcomer_page(request, study, preview=held.preview)
        try:
            secret = services.resume_session(existing, held).token
        except FlowError as error:
            return _flow_error_page(request, study, error)
        live = live_session(secret, slug)
        session = live.session
        session.token = secret
    services.touch(session)
    context = {"study": study, "session": session, "progress": progress(session)}
    if live and session.state == Session.State.TRIALS:
        context["first_trial"] = _trial_body(live)  # shown at once, without a request
    page = render(request, STATE_TEMPLATES[session.state], context)
    return _bind(page, slug, session) if hasattr(session, "token") else page


def _newcomer_page(request: HttpRequest, study: Study, preview: bool = False) -> HttpResponse:
    """A browser without a session in the study: the consent page, unless the study is
    closed, or full (for a participant: a preview takes no place)."""
    if not study.accepts_participants:
        return _flow_error_page(request, study, FlowError(_closed_message(study), status=403))
    if not preview and study_is_full(study):
        return _flow_error_page(request, study, StudyFull())
    return render(request, "elicitation/consent.html", {"study": study})


@private_reply
@require_GET
def preview(request: HttpRequest, slug: str, key: str) -> HttpResponse:
    """The study's preview link (the dashboard shows it): a fresh session of kind
    preview on every visit, never research data. 404 for a wrong key."""
    study = _study_or_404(slug)
    if not constant_time_compare(key, study.preview_key):
        raise Http404("No such study.")
    response = redirect("elicitation:study", slug=slug)
    _forget_session(response, slug)
    _hold_recruiter_ids(response, slug, RecruiterIds(preview=True))
    return response


def _closed_message(study: Study) -> str:
    if study.status == Study.Status.CLOSED:
        return gettext("This study has closed. Thank you for your interest.")
    return gettext("This study has not opened yet. Please come back later.")


@private_reply
@require_POST
@in_study_language
def consent(request: HttpRequest, slug: str) -> HttpResponse:
    """Consent, sent with the instructions' end (and the quiz's first answers) by the
    page that shows them all: starts the session and takes it as far as they allow."""
    if _bound_session(request, slug):
        return redirect("elicitation:study", slug=slug)
    study = _study_or_404(slug)
    ticked = [request.POST.get(f"consent_{i}") == "on" for i in range(len(study.consent_items))]
    if not all(ticked):
        return render(
            request,
            "elicitation/consent.html",
            {"study": study, "error": gettext("Please tick every box to take part.")},
            status=400,
        )
    answers = _quiz_answers(request, study) if _quiz_reached(request, study) else None
    try:
        session = services.start_session(
            study,
            _held_recruiter_ids(request, slug),
            address=client_address(request.META, settings.HILLMIX_TRUSTED_PROXIES),
            quiz_answers=answers,
        )
    except FlowError as error:
        return _flow_error_page(request, study, error)
    if answers and session.state == Session.State.INSTRUCTIONS and session.quiz_attempts:
        _warn_quiz_failed(request)
    return _bind(redirect("elicitation:study", slug=slug), slug, session)


def _session_or_error(request: HttpRequest, slug: str) -> Session:
    session = _bound_session(request, slug)
    if session is None:
        _study_or_404(slug)  # an unknown study is a 404, a known one without session a 403
        raise FlowError(NO_SESSION, status=403)
    return session


@private_reply
@require_POST
@in_study_language
def instructions_done(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        services.finish_instructions(_session_or_error(request, slug))
    except FlowError:
        pass  # a stale form (second tab, back button): just show the current step
    return redirect("elicitation:study", slug=slug)


def _quiz_reached(request: HttpRequest, study: Study) -> bool:
    """Whether the form carries the quiz's answers (always, in a study without one)."""
    return not study.quiz or any(f"q{i}" in request.POST for i in range(len(study.quiz)))


def _quiz_answers(request: HttpRequest, study: Study) -> list[int | None]:
    answers = []
    for i in range(len(study.quiz)):
        value = request.POST.get(f"q{i}")
        answers.append(int(value) if value is not None and value.isdigit() else None)
    return answers


def _warn_quiz_failed(request: HttpRequest) -> None:
    messages.warning(
        request, gettext("Some answers were not right. Please read the instructions again.")
    )


@private_reply
@require_POST
@in_study_language
def quiz(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        session = _session_or_error(request, slug)
        if not services.submit_quiz(session, _quiz_answers(request, session.study)):
            _warn_quiz_failed(request)
    except FlowError:
        pass
    return redirect("elicitation:study", slug=slug)


@private_reply
@require_POST
@in_study_language
def feedback(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        session = _session_or_error(request, slug)
        answers = {
            question: request.POST.get(f"f{i}", "")
            for i, question in enumerate(session.study.feedback_questions)
        }
        services.submit_feedback(session, answers)
    except FlowError:
        pass
    return redirect("elicitation:study", slug=slug)


@private_reply
@require_http_methods(["GET", "POST"])
@in_study_language
def withdraw(request: HttpRequest, slug: str) -> HttpResponse:
    """Withdrawing from the study, linked from every participant page: GET asks to
    confirm; POST (CSRF-checked) withdraws the session this browser holds, and only
    that one (services.consent.withdraw: its answers erased or kept as the study's
    on_withdrawal says, the consent page having told which), then forgets it. 403
    without a session."""
    session = _bound_session(request, slug)
    if session is None:
        return _flow_error_page(request, _study_or_404(slug), FlowError(NO_SESSION, status=403))
    study = session.study
    context = {"study": study, "session": session}
    if request.method == "GET":
        return render(request, "elicitation/withdraw.html", context)
    try:
        consent_law.withdraw(session)
    except FlowError as error:
        return _flow_error_page(request, study, error)
    response = render(request, "elicitation/withdrawn.html", {"study": study})
    _forget_session(response, slug)
    return response


def _json_error(error: FlowError, slug: str | None = None) -> JsonResponse:
    """A refusal in JSON; with `slug`, its message in that study's language (the save's
    path looks the language up only when it refuses)."""
    if slug is None:
        return JsonResponse({"error": error.message}, status=error.status)
    with translation.override(study_language(slug)):
        return JsonResponse({"error": str(error.message)}, status=error.status)


def _trial_body(live: LiveSession) -> dict:
    services.serve_next_trial(live)  # adaptive studies choose each trial as it is served
    upcoming = next_trial(live)
    # The session's reference, not its secret: the page sends it back with each answer.
    return {"session": live.session.reference, "done": upcoming is None, "trial": upcoming}


@private_reply
@require_GET
@in_study_language
def trial(request: HttpRequest, slug: str) -> JsonResponse:
    """The next trial to show, or done=true when the trials are over."""
    live = _browser_session(request, slug)
    if live is None:
        return _json_error(FlowError(NO_SESSION, status=403))
    return JsonResponse(_trial_body(live))


# An answer is a few hundred bytes (a Construct history of 500 steps about 4 KB).
ANSWER_MAX_BYTES = 64 * 1024


def _answer_body(request: HttpRequest) -> dict:
    """The save's JSON object. Raises FlowError: 415 for another content type, 413 for
    a body over ANSWER_MAX_BYTES (refused before it is read), 400 for anything that is
    not a JSON object, including numbers of over 4,300 digits (Python's int limit) and
    nesting deeper than the parser's recursion limit."""
    if request.content_type != "application/json":
        raise FlowError("Send the answer as application/json.", status=415)
    too_big = FlowError(f"An answer is at most {ANSWER_MAX_BYTES} bytes.", status=413)
    declared = request.META.get("CONTENT_LENGTH") or ""
    if declared.isdigit() and int(declared) > ANSWER_MAX_BYTES:
        raise too_big
    try:
        body = request.body
    except RequestDataTooBig:
        raise too_big from None
    if len(body) > ANSWER_MAX_BYTES:
        raise too_big
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError included
        raise FlowError("The body must be JSON.") from None
    if not isinstance(payload, dict):
        raise FlowError("The body must be a JSON object.")
    return payload


@private_reply
@require_POST
def judgments(request: HttpRequest, slug: str) -> JsonResponse:
    """Save one answer. 201 stored, 200 already stored (a retry), 4xx refused.
    The reply carries the next trial, so the page needs no second request."""
    try:
        token = request.COOKIES.get(_session_cookie(slug))
        if not token:
            raise FlowError(NO_SESSION, status=403)
        result = services.record_judgment(token, _answer_body(request), slug)
    except FlowError as error:
        return _json_error(error, slug)
    return JsonResponse(
        {
            "saved": True,
            "trial_index": result.judgment.trial_index,
            "next": result.live.session.position,
            "finished": result.finished,
            **_trial_body(result.live),
        },
        status=201 if result.created else 200,
    )


@private_reply
@require_POST
def image_failures(request: HttpRequest, slug: str) -> JsonResponse:
    """Log that this browser could not load the current trial's images, even after
    retries (201). The trial stays unanswered: nothing is stored as a judgment."""
    try:
        live = _browser_session(request, slug)
        if live is None:
            raise FlowError(NO_SESSION, status=403)
        services.record_image_failure(live.session, _answer_body(request))
    except FlowError as error:
        return _json_error(error, slug)
    return JsonResponse({"logged": True}, status=201)
