"""The researcher dashboard pages inside the admin: staff who hold the Django permission
each page names (hillmix_site.permissions)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import ngettext
from django.views.decorators.http import require_POST

from hillmix_site.permissions import (
    DATA_REQUEST_PERMISSION,
    RECRUITER_ID_PERMISSION,
    admin_permission_required,
)

# plots and reliability (numpy, pandas, scipy) load with the admin's URLconf, at a
# worker's start, not in a researcher's first dashboard request (0.37 s).
from . import interfaces, plots, reliability, reports, services
from .models import AuditLog, Session, Study
from .services import audit, consent


def _context(request: HttpRequest, **extra) -> dict:
    return {**admin.site.each_context(request), "opts": Study._meta, **extra}


@staff_member_required
@admin_permission_required("elicitation.view_study")
def overview(request: HttpRequest) -> HttpResponse:
    """Every study with its progress per condition; refreshes itself."""
    rows = []
    for study in Study.objects.select_related("stimulus_set").order_by("-created_at"):
        progress = reports.study_progress(study)
        rows.append(
            {"study": study, "progress": progress, "totals": reports.progress_totals(progress)}
        )
    return TemplateResponse(
        request,
        "admin/elicitation/overview.html",
        _context(request, title="Studies: live progress", rows=rows),
    )


def _thresholds(request: HttpRequest) -> reports.QualityThresholds:
    defaults = reports.QualityThresholds()
    values = {}
    for name, cast in (
        ("max_quiz_attempts", int),
        ("min_median_rt_ms", float),
        ("max_repeat_disagreement", float),
    ):
        try:
            values[name] = cast(request.GET.get(name, getattr(defaults, name)))
        except (TypeError, ValueError):
            values[name] = getattr(defaults, name)
    return reports.QualityThresholds(**values)


# Prolific fills these placeholders in with each participant's ids.
RECRUITER_PLACEHOLDERS = (
    "?PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}"
)


def participant_link(request: HttpRequest, study: Study) -> str:
    """The study's full participant URL with the recruiter's placeholders, to paste into
    Prolific as the study link."""
    url = request.build_absolute_uri(reverse("elicitation:study", args=[study.slug]))
    return url + RECRUITER_PLACEHOLDERS


def preview_link(request: HttpRequest, study: Study) -> str:
    """The study's preview link (views.preview): every visit is a fresh preview
    session, never research data; it works while the study is piloting or live."""
    return request.build_absolute_uri(
        reverse("elicitation:preview", args=[study.slug, study.preview_key])
    )


QUALITY_PAGE_SIZE = 200


def _without(request: HttpRequest, *names: str) -> str:
    """The request's query string without the parameters `names`, to build links on."""
    query = request.GET.copy()
    for name in names:
        query.pop(name, None)
    return query.urlencode()


@staff_member_required
@admin_permission_required("elicitation.view_study")
@reports.shared_stimulus_groups()  # the charts and the paper's view share one GROUP BY
def study_dashboard(request: HttpRequest, pk: int) -> HttpResponse:
    study = get_object_or_404(Study.objects.select_related("stimulus_set"), pk=pk)
    try:
        include = reports.include_excluded_param(request.GET.get("include_excluded"))
        curves_kind = reports.figure_kind_param(request.GET.get("curves_kind"))
    except ValueError as error:
        return HttpResponseBadRequest(str(error))
    progress = reports.study_progress(study)
    charts = interfaces.get(study.interface).dashboard_charts(study, include)
    thresholds = _thresholds(request)
    # A page of sessions at a time: a large study's table would be most of the page's
    # time (10,000 rows: 6 s of template rendering) and more than anyone reads at once.
    # Research participants by default; ?kind=pilot (preview, simulated, live with the
    # withdrawn) lists those sessions instead.
    kind = request.GET.get("kind") or None
    if kind is not None and kind not in Session.Kind.values:
        return HttpResponseBadRequest(f"kind must be one of {Session.Kind.values}")
    quality_page = Paginator(
        reports.quality_sessions(study, kind), QUALITY_PAGE_SIZE
    ).get_page(request.GET.get("quality_page"))
    context = _context(
        request,
        title=f"Dashboard: {study.title}",
        study=study,
        participant_link=participant_link(request, study),
        preview_link=preview_link(request, study),
        session_kinds=reports.session_kinds(study),
        quality_kind=kind,
        progress=progress,
        totals=reports.progress_totals(progress),
        charts=charts,
        class_pairs=reports.class_pair_midpoint_table(study, include),
        paper=reports.paper_view(study, include),
        include_excluded=include,
        thresholds=thresholds,
        quality=reports.quality_report(study, thresholds, quality_page.object_list),
        quality_page=quality_page,
        quality_query=_without(request, "quality_page"),
        **_trust(request, study, include, curves_kind),
    )
    return TemplateResponse(request, "admin/elicitation/dashboard.html", context)


# The curves chart's title per session kind shown (?curves_kind): a saved figure of
# pilot or simulated sessions says whose it is.
CURVES_TITLES = {
    Session.Kind.LIVE: "Psychometric curve per class pair: posterior mean, 90% band",
    Session.Kind.PILOT: "Pilot sessions only (not research data): posterior mean, 90% band",
    Session.Kind.SIMULATED: "Simulated sessions only (not research data): posterior mean, 90% band",
}


def _trust(request: HttpRequest, study: Study, include: bool, kind: str) -> dict:
    """The curves and who-to-trust sections (elicitation.reliability) from the sessions
    of one kind (reports.FIGURE_KINDS; ?curves_kind, live by default), never a mix: one
    page of pair curves (?curves_page; ?weighted=1 weights answers by reliability),
    agreement, reliability per participant, the participants estimate (for live
    sessions, from the simulated ones while no live answer is in), the simulated
    sessions."""
    rows = reliability.answers(study, include, kind)
    agreement = reliability.study_agreement(study, include, kind, rows=rows)
    weighted = request.GET.get("weighted") == "1"
    curves = reliability.curves(
        study, include, kind, weighted=weighted, rows=rows, agreement=agreement
    )
    page = Paginator(curves.pair_ids, reliability.CURVES_PER_PAGE).get_page(
        request.GET.get("curves_page")
    )
    chart = ""
    if curves.people:
        shown = reliability.curve_rows(curves, page.start_index() - 1, page.end_index())
        chart = plots.pair_curves(shown, CURVES_TITLES[kind])
    if kind == Session.Kind.LIVE:
        estimate = reliability.participants_estimate(study, include, curves)
    else:
        estimate = {**reliability.estimate_from(curves), "kind": kind}
    return {
        "curves_chart": chart,
        "has_curves": study.interface in reliability.INTERFACES,
        "curves_page": page,
        "curves_query": _without(request, "curves_page"),
        "curves_kind": kind,
        # The switch's links keep the rest of the query; a kind starts at its first page.
        "curves_kinds": reports.FIGURE_KINDS,
        "curves_kind_query": _without(request, "curves_kind", "curves_page"),
        "curves_weighted": weighted,
        "agreement": agreement,
        "trusted": agreement["participants"][:QUALITY_PAGE_SIZE],
        "estimate": estimate,
        "simulated": reliability.simulated_counts(study),
    }


@staff_member_required
@admin_permission_required("elicitation.change_session")
@require_POST
def toggle_exclusion(request: HttpRequest, pk: int, session_id: int) -> HttpResponse:
    session = get_object_or_404(Session, pk=session_id, study_id=pk)
    services.set_excluded(session, not session.excluded)
    verb = "included again" if session.excluded else "excluded"
    messages.success(request, f"Participant {session.participant.public_id} {verb}.")
    return redirect("admin:elicitation_study_dashboard", pk=pk)


@staff_member_required
@admin_permission_required("elicitation.import_hmix")
def import_hmix(request: HttpRequest) -> HttpResponse:
    """Import the published H-Mix data from a folder on the server, as a task."""
    from pathlib import Path

    from django.conf import settings
    from django.core.exceptions import ValidationError

    from datasets.services import resolve_import_path

    from .tasks import import_hmix as import_task

    default = Path(settings.SHARED_DATA_DIR) / "hmix"
    if request.method == "POST":
        given = request.POST.get("folder") or str(default)
        # One answer for missing, outside the import folders and not H-Mix, so the form
        # tells nobody which server files exist.
        refusal = f"{given} is not a folder of H-Mix files in the import folders."
        try:
            folder = resolve_import_path(given, folder=True)
        except ValidationError:
            folder = None
        if folder is None or not (folder / "hmix_construct_midpoint.csv").is_file():
            messages.error(request, refusal)
        else:
            import_task.delay(str(folder))
            messages.success(
                request,
                f"Importing H-Mix data from {folder}; studies hmix-* "
                "appear when it is done (importing twice changes nothing).",
            )
            return redirect("admin:elicitation_study_changelist")
    return TemplateResponse(
        request,
        "admin/elicitation/import_hmix.html",
        _context(request, title="Import the H-Mix data", default=default),
    )


@staff_member_required
@admin_permission_required("elicitation.change_study")
@require_POST
def close_study(request: HttpRequest, pk: int) -> HttpResponse:
    study = get_object_or_404(Study, pk=pk)
    services.set_study_status(study, Study.Status.CLOSED)
    messages.success(request, f"{study.slug} is closed to new participants.")
    return redirect("admin:elicitation_study_dashboard", pk=pk)


@staff_member_required
@admin_permission_required("elicitation.delete_session")
@require_POST
def delete_non_live(request: HttpRequest, pk: int) -> HttpResponse:
    """Delete the study's pilot and preview sessions (POST `kind`: one of pilot,
    preview, simulated; absent: pilot and preview) with their judgments. Live sessions
    are never touched. Audited."""
    study = get_object_or_404(Study, pk=pk)
    kind = request.POST.get("kind")
    try:
        count = services.delete_non_live_sessions(study, [kind] if kind else None)
    except services.FlowError as error:
        return HttpResponseBadRequest(error.message)
    what = kind or "pilot and preview"
    numbers = {"count": count, "what": what}
    detail = ngettext(
        "%(count)d %(what)s session deleted", "%(count)d %(what)s sessions deleted", count
    )
    audit.record(
        request.user, AuditLog.Action.DELETE_NON_LIVE, study=study, detail=detail % numbers
    )
    done = ngettext(
        "%(count)d %(what)s session deleted, with its answers.",
        "%(count)d %(what)s sessions deleted, with their answers.",
        count,
    )
    messages.success(request, done % numbers)
    return redirect("admin:elicitation_study_dashboard", pk=pk)


@staff_member_required
@admin_permission_required(RECRUITER_ID_PERMISSION, DATA_REQUEST_PERMISSION)
def data_requests(request: HttpRequest) -> HttpResponse:
    """A participant's request by recruiter id (PROLIFIC_PID): POST `action=export`
    downloads everything stored about them as JSON (an access request), `action=erase`
    with `confirm` erases it (services.consent). Both audited. 404-style message for an
    unknown recruiter id, 400 for a bad form; nothing changes then."""
    if request.method == "POST":
        pid = (request.POST.get("recruiter_pid") or "").strip()
        action = request.POST.get("action")
        if not pid or action not in ("export", "erase"):
            return HttpResponseBadRequest("Give a recruiter id and action export or erase.")
        try:
            if action == "export":
                data = consent.access_export(request.user, pid)
                response = JsonResponse(data, json_dumps_params={"indent": 2})
                name = f"participant-{data['participant']['public_id']}.json"
                response["Content-Disposition"] = f'attachment; filename="{name}"'
                return response
            if request.POST.get("confirm") != "on":
                messages.error(request, "Tick the box to confirm the erasure.")
                return redirect("admin:elicitation_data_requests")
            result = consent.erase_participant(request.user, pid)
        except services.FlowError as error:
            messages.error(request, error.message)
            return redirect("admin:elicitation_data_requests")
        sessions = ngettext("%(n)d session", "%(n)d sessions", result["sessions"])
        judgments = ngettext("%(n)d judgment", "%(n)d judgments", result["judgments"])
        bonuses = ngettext(
            "%(n)d settled bonus payment kept without the id",
            "%(n)d settled bonus payments kept without the id",
            result["bonuses"],
        )
        messages.success(
            request,
            f"Erased participant {result['participant'] or '(no sessions)'}: "
            f"{sessions % {'n': result['sessions']}}, "
            f"{judgments % {'n': result['judgments']}}; "
            f"{bonuses % {'n': result['bonuses']}}.",
        )
        return redirect("admin:elicitation_data_requests")
    return TemplateResponse(
        request,
        "admin/elicitation/data_requests.html",
        _context(request, title="Participants' data requests (by recruiter id)"),
    )
