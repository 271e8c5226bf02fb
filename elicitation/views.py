"""Participant pages. Plain Django views (CSRF enforced on every POST); the study's
state lives in the Session row, the link to it in the participant's cookie."""

from __future__ import annotations

import json

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from . import services
from .models import Session, Study
from .selectors import (
    next_trial,
    progress,
    session_by_id,
    session_by_recruiter_pid,
    study_by_slug,
)
from .services import FlowError, RecruiterIds

SESSION_KEY = "hillmix_sessions"
RECRUITER_PARAMS = ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID")
RECRUITER_KEY = "hillmix_recruiter"


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "elicitation/home.html")


def _study_or_404(slug: str) -> Study:
    study = study_by_slug(slug)
    if study is None:
        raise Http404("No such study.")
    return study


def _bound_session(request: HttpRequest, slug: str) -> Session | None:
    """The session this browser holds in the study, with its study loaded (one query)."""
    return session_by_id(slug, request.session.get(SESSION_KEY, {}).get(slug))


def _bind(request: HttpRequest, study: Study, session: Session) -> None:
    ids = dict(request.session.get(SESSION_KEY, {}))
    if ids.get(study.slug) != session.pk:
        ids[study.slug] = session.pk
        request.session[SESSION_KEY] = ids


def _flow_error_page(request: HttpRequest, study: Study, error: FlowError) -> HttpResponse:
    return render(
        request,
        "elicitation/unavailable.html",
        {"study": study, "message": error.message},
        status=error.status,
    )


STATE_TEMPLATES = {
    Session.State.INSTRUCTIONS: "elicitation/instructions.html",
    Session.State.QUIZ: "elicitation/quiz.html",
    Session.State.TRIALS: "elicitation/trials.html",
    Session.State.FEEDBACK: "elicitation/feedback.html",
    Session.State.COMPLETE: "elicitation/complete.html",
}


@require_GET
def study_page(request: HttpRequest, slug: str) -> HttpResponse:
    """The one address a participant uses: shows whatever step they are at."""
    recruiter = RecruiterIds.from_query(request.GET)
    session = _bound_session(request, slug)  # loads the study with it
    study = session.study if session else _study_or_404(slug)
    session = session or session_by_recruiter_pid(study, recruiter.pid)
    if session is None:
        if study.status != Study.Status.LIVE:
            return _flow_error_page(request, study, FlowError(_closed_message(study), status=403))
        if any(key in request.GET for key in RECRUITER_PARAMS):
            # Kept server-side until consent, and dropped from the address bar so they
            # never reach a page, the history, a Referer header or an access log.
            pending = dict(request.session.get(RECRUITER_KEY, {}))
            pending[str(study.pk)] = recruiter.__dict__
            request.session[RECRUITER_KEY] = pending
            return redirect("elicitation:study", slug=slug)
        return render(request, "elicitation/consent.html", {"study": study})
    _bind(request, study, session)
    if any(key in request.GET for key in RECRUITER_PARAMS):
        return redirect("elicitation:study", slug=slug)
    services.touch(session)
    context = {"study": study, "session": session, "progress": progress(session)}
    return render(request, STATE_TEMPLATES[session.state], context)


def _closed_message(study: Study) -> str:
    if study.status == Study.Status.CLOSED:
        return "This study has closed. Thank you for your interest."
    return "This study has not opened yet. Please come back later."


@require_POST
def consent(request: HttpRequest, slug: str) -> HttpResponse:
    if _bound_session(request, slug):
        return redirect("elicitation:study", slug=slug)
    study = _study_or_404(slug)
    ticked = [request.POST.get(f"consent_{i}") == "on" for i in range(len(study.consent_items))]
    if not all(ticked):
        return render(
            request,
            "elicitation/consent.html",
            {"study": study, "error": "Please tick every box to take part."},
            status=400,
        )
    pending = request.session.get(RECRUITER_KEY, {}).get(str(study.pk), {})
    try:
        session = services.start_session(
            study, RecruiterIds(**pending), address=request.META.get("REMOTE_ADDR", "")
        )
    except FlowError as error:
        return _flow_error_page(request, study, error)
    _bind(request, study, session)
    return redirect("elicitation:study", slug=slug)


def _session_or_error(request: HttpRequest, slug: str) -> Session:
    session = _bound_session(request, slug)
    if session is None:
        _study_or_404(slug)  # an unknown study is a 404, a known one without session a 403
        raise FlowError("No session for this study in this browser.", status=403)
    return session


@require_POST
def instructions_done(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        services.finish_instructions(_session_or_error(request, slug))
    except FlowError:
        pass  # a stale form (second tab, back button): just show the current step
    return redirect("elicitation:study", slug=slug)


@require_POST
def quiz(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        session = _session_or_error(request, slug)
        answers = []
        for i in range(len(session.study.quiz)):
            value = request.POST.get(f"q{i}")
            answers.append(int(value) if value is not None and value.isdigit() else None)
        if not services.submit_quiz(session, answers):
            messages.warning(
                request,
                "Some answers were not right. Please read the instructions again.",
            )
    except FlowError:
        pass
    return redirect("elicitation:study", slug=slug)


@require_POST
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


def _json_error(error: FlowError) -> JsonResponse:
    return JsonResponse({"error": error.message}, status=error.status)


@require_GET
def trial(request: HttpRequest, slug: str) -> JsonResponse:
    """The next trial to show, or done=true when the trials are over."""
    try:
        session = _session_or_error(request, slug)
    except FlowError as error:
        return _json_error(error)
    upcoming = next_trial(session)
    return JsonResponse({"session": session.token, "done": upcoming is None, "trial": upcoming})


@require_POST
def judgments(request: HttpRequest, slug: str) -> JsonResponse:
    """Save one answer. 201 stored, 200 already stored (a retry), 4xx refused."""
    try:
        session = _session_or_error(request, slug)
        try:
            payload = json.loads(request.body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise FlowError("The body must be JSON.") from None
        if not isinstance(payload, dict):
            raise FlowError("The body must be a JSON object.")
        result = services.record_judgment(session, payload)
    except FlowError as error:
        return _json_error(error)
    return JsonResponse(
        {
            "saved": True,
            "trial_index": result.judgment.trial_index,
            "next": result.next_position,
            "finished": result.finished,
        },
        status=201 if result.created else 200,
    )
