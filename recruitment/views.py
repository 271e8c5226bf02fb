"""The Prolific page of a study's dashboard, inside the admin: submissions next to the
platform's live sessions and quality flags, bulk approve / reject / bonus forms. Every
view needs recruitment.manage_prolific; Prolific ids are shown only with
elicitation.view_recruiter_ids, and each showing is audit-logged."""

from __future__ import annotations

import logging

import httpx
from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.views.decorators.http import require_POST

from elicitation.models import AuditLog, Study
from elicitation.services import audit
from hillmix_site.permissions import RECRUITER_ID_PERMISSION, admin_permission_required

from . import credentials, selectors, services
from .forms import BonusForm, LinkForm, ReconcileForm, RejectForm, SelectionForm
from .models import BonusPayment, ProlificStudy
from .prolific import InvalidRequest, ProlificError

logger = logging.getLogger(__name__)
MANAGE = "recruitment.manage_prolific"
# What Prolific may answer instead of doing the job: shown on the page, never a 500.
API_FAILURES = (ProlificError, httpx.HTTPError, ImproperlyConfigured, services.NotConfigured)


def _context(request: HttpRequest, study: Study, **extra) -> dict:
    return {**admin.site.each_context(request), "opts": Study._meta, "study": study, **extra}


def _refuse(request: HttpRequest, study: Study, reason: str, status: int = 400) -> HttpResponse:
    """A refused action: nothing was sent to Prolific or changed here."""
    return TemplateResponse(
        request,
        "recruitment/refused.html",
        _context(request, study, title="Not done", reason=reason, status=status),
        status=status,
    )


# A Prolific call's refusals: answered by _refused_call, nothing changed here.
REFUSED_CALLS = (services.PaymentRunning, InvalidRequest, *API_FAILURES)


def _refused_call(request: HttpRequest, study: Study, error: Exception) -> HttpResponse:
    """The page's answer to a refused Prolific action: 409 while another payment run
    holds the study, 400 for a request refused here or a missing link or token, 502
    when Prolific (or the way to it) refused."""
    if isinstance(error, services.PaymentRunning):
        return _refuse(request, study, str(error), status=409)
    if isinstance(error, InvalidRequest | services.NotConfigured):
        return _refuse(request, study, str(error))
    return _refuse(request, study, f"Prolific refused: {error}", status=502)


def _form_reasons(form) -> str:
    """A refused form's errors in one line, field by field."""
    return "; ".join(f"{name}: {' '.join(errors)}" for name, errors in form.errors.items())


@staff_member_required
@admin_permission_required(MANAGE)
def dashboard(request: HttpRequest, pk: int) -> HttpResponse:
    study = get_object_or_404(Study, pk=pk)
    link = ProlificStudy.objects.filter(study=study).first()
    show_ids = request.user.has_perm(RECRUITER_ID_PERMISSION)
    rows, unmatched, problem = [], [], ""
    try:
        source = credentials.token_source()
    except ImproperlyConfigured as error:
        source, problem = "", str(error)
    if link is not None and source:
        try:
            with services.client() as api:
                submissions = api.list_submissions(link.prolific_study_id)
            rows, unmatched = selectors.submission_rows(study, submissions)
        except API_FAILURES as error:
            problem = f"Prolific could not be asked: {error}"
    ledger = list(selectors.ledger(study))
    if not show_ids:  # Prolific's refusals name ids ("Invalid ids: [...]")
        services.redact_errors(
            ledger, {b.recruiter_pid for b in ledger} | {r.submission.participant_id for r in rows}
        )
    if show_ids and (rows or ledger):  # the ledger shows its Prolific ids too
        audit.record(
            request.user,
            AuditLog.Action.VIEW_RECRUITER_IDS,
            study=study,
            detail=f"Prolific page: {len(rows)} submissions and {len(ledger)} bonus "
            "payments with their Prolific ids",
        )
    context = _context(
        request,
        study,
        title=f"Prolific: {study.title}",
        link=link,
        link_form=LinkForm(initial={"prolific_study_id": link.prolific_study_id if link else ""}),
        token_source=source,
        problem=problem,
        rows=rows,
        unmatched=unmatched,
        show_ids=show_ids,
        reject_form=RejectForm(),
        bonus_form=BonusForm(),
        ledger=ledger,
        needs_reconciliation=[b for b in ledger if b.state == BonusPayment.State.RECONCILE],
        reconcile_choices=ReconcileForm.base_fields["outcome"].choices,
    )
    return TemplateResponse(request, "recruitment/dashboard.html", context)


@staff_member_required
@admin_permission_required(MANAGE)
@require_POST
def link_study(request: HttpRequest, pk: int) -> HttpResponse:
    study = get_object_or_404(Study, pk=pk)
    form = LinkForm(request.POST)
    if not form.is_valid():
        return _refuse(request, study, "; ".join(form.errors.get("prolific_study_id", [])))
    services.link_study(study, form.cleaned_data["prolific_study_id"])
    messages.success(request, "Linked to the Prolific study.")
    return redirect("recruitment:prolific", pk=pk)


def _selected(request: HttpRequest, study: Study, api) -> list:
    """The submissions the form selected, checked against the study's list on Prolific."""
    references = SelectionForm.references_from(request.POST)
    if not references:
        raise InvalidRequest("Select at least one submission.")
    submissions = api.list_submissions(services.prolific_study_id(study))
    return services.resolve_references(submissions, references)


@staff_member_required
@admin_permission_required(MANAGE)
@require_POST
def approve(request: HttpRequest, pk: int) -> HttpResponse:
    study = get_object_or_404(Study, pk=pk)
    try:
        services.prolific_study_id(study)
        with services.client() as api:
            chosen = _selected(request, study, api)
            count = services.approve(api, chosen)
    except REFUSED_CALLS as error:
        return _refused_call(request, study, error)
    audit.record(
        request.user,
        AuditLog.Action.PAYMENT,
        study=study,
        detail=f"approved {count} Prolific submission(s)",
    )
    messages.success(request, f"Asked Prolific to approve {count} submission(s).")
    return redirect("recruitment:prolific", pk=pk)


@staff_member_required
@admin_permission_required(MANAGE)
@require_POST
def reject(request: HttpRequest, pk: int) -> HttpResponse:
    study = get_object_or_404(Study, pk=pk)
    form = RejectForm(request.POST)
    if not form.is_valid():
        return _refuse(request, study, _form_reasons(form))
    try:
        services.prolific_study_id(study)
        with services.client() as api:
            chosen = _selected(request, study, api)
            count = services.reject(
                api, chosen, form.cleaned_data["message"], form.cleaned_data["rejection_category"]
            )
    except REFUSED_CALLS as error:
        return _refused_call(request, study, error)
    audit.record(
        request.user,
        AuditLog.Action.PAYMENT,
        study=study,
        detail=f"rejected {count} Prolific submission(s) "
        f"({form.cleaned_data['rejection_category']})",
    )
    messages.success(request, f"Rejected {count} submission(s) on Prolific.")
    return redirect("recruitment:prolific", pk=pk)


@staff_member_required
@admin_permission_required(MANAGE)
@require_POST
def bonuses(request: HttpRequest, pk: int) -> HttpResponse:
    """Record a bonus for each selected submission's participant (when some are
    selected), then pay every pending bonus of the study through the ledger."""
    study = get_object_or_404(Study, pk=pk)
    selecting = bool(SelectionForm.references_from(request.POST))
    form = BonusForm(request.POST)
    if selecting and not form.is_valid():
        return _refuse(request, study, _form_reasons(form))
    try:
        services.prolific_study_id(study)
        with services.client() as api:
            if selecting:
                chosen = _selected(request, study, api)
                services.record_bonuses(
                    study,
                    [(s.participant_id, form.cents()) for s in chosen],
                    form.cleaned_data["reason"],
                    user=request.user,
                )
            report = services.pay_bonuses(api, study, user=request.user)
    except REFUSED_CALLS as error:
        return _refused_call(request, study, error)
    summary = f"Bonuses: {report.created} set up, {report.paid} paid"
    if report.reconcile:
        summary += f", {report.reconcile} need reconciliation"
    if report.failed:
        summary += f", {report.failed} refused by Prolific"
    (messages.warning if report.errors else messages.success)(request, summary + ".")
    return redirect("recruitment:prolific", pk=pk)


@staff_member_required
@admin_permission_required(MANAGE)
@require_POST
def reconcile(request: HttpRequest, pk: int) -> HttpResponse:
    study = get_object_or_404(Study, pk=pk)
    form = ReconcileForm(request.POST)
    if not form.is_valid():
        return _refuse(request, study, "Choose a bonus and what Prolific shows for it.")
    try:
        services.reconcile_bonus(
            form.cleaned_data["bonus"], study, form.cleaned_data["outcome"], user=request.user
        )
    except InvalidRequest as error:
        return _refuse(request, study, str(error))
    messages.success(request, "Bonus settled.")
    return redirect("recruitment:prolific", pk=pk)
