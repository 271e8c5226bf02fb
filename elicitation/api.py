"""The researcher REST API: read endpoints, aggregates and streaming exports.
Every operation needs the Django permission its view names in `action_permissions`
(reads default to the model's view permission: hillmix_site.permissions.ModelPermission)."""

from __future__ import annotations

import re

from django.db.models import Prefetch, QuerySet
from django.http import FileResponse, HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response

from datasets.models import Stimulus
from hillmix_site.permissions import DATA_REQUEST_PERMISSION, RECRUITER_ID_PERMISSION

from . import hmix, publishing, reports
from .exports import FORMATS, export_response, streaming_export
from .filters import ConditionFilter, JudgmentFilter, ParticipantFilter, StimulusFilter
from .models import AuditLog, Condition, Judgment, Participant, Session, Study
from .serializers import (
    ConditionSerializer,
    JudgmentSerializer,
    ParticipantSerializer,
    StimulusSerializer,
    StudySerializer,
)
from .services import FlowError, audit, consent


class ById(CursorPagination):
    ordering = "pk"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


def _include_excluded(request: Request) -> bool:
    """The `include_excluded` parameter of the exclusion rule (reports.counted); a value
    that is not a boolean is a 400."""
    try:
        return reports.include_excluded_param(request.query_params.get("include_excluded"))
    except ValueError as error:
        raise ValidationError({"include_excluded": str(error)}) from None


def _format(request: Request) -> str:
    fmt = request.query_params.get("as", "csv")
    if fmt not in FORMATS:
        raise ValidationError({"as": f"choose one of {FORMATS}"})
    return fmt


EXPORT_PARAMS = [
    OpenApiParameter("as", str, enum=list(FORMATS), description="csv (default) or json"),
    OpenApiParameter(
        "include_excluded",
        bool,
        description="Keep the judgments of excluded participants. Without it (the "
        "default) every export, aggregate and the dashboard leave them out.",
    ),
]


VIEW_JUDGMENTS = "elicitation.view_judgment"
EXPORT_JUDGMENTS = "elicitation.export_judgments"


def _audit_export(request: Request, study: Study | None, what: str) -> None:
    """Record an export in the audit log (who, which study, the query asked)."""
    query = request.query_params.urlencode()
    audit.record(
        request.user,
        AuditLog.Action.EXPORT,
        study=study,
        detail=f"{what}{f' ({query})' if query else ''}",
    )


class StudyViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Study.objects.select_related("stimulus_set").order_by("pk")
    action_permissions = {
        "stimulus_aggregates": [VIEW_JUDGMENTS],
        "confidence_by_lam": [VIEW_JUDGMENTS],
        "class_pairs": [VIEW_JUDGMENTS],
        "paper_view": [VIEW_JUDGMENTS],
        "export": [EXPORT_JUDGMENTS],
        "export_hmix": [EXPORT_JUDGMENTS],
        "publish": [EXPORT_JUDGMENTS],
    }
    serializer_class = StudySerializer
    pagination_class = ById
    lookup_field = "slug"

    @extend_schema(
        parameters=[
            *EXPORT_PARAMS[1:],
            OpenApiParameter(
                "values",
                bool,
                description="Also list every judgment's perceived lam and confidence per "
                "stimulus (the layout of H-Mix's processed file; tens of MB for a large "
                "study). Without it (the default) each stimulus gives its count of "
                "judgments instead of the lists.",
            ),
        ],
        responses={200: dict},
    )
    @action(detail=True, url_path="aggregates/stimuli")
    def stimulus_aggregates(self, request: Request, slug: str) -> HttpResponse:
        """Per stimulus: mean-based figures (population std, relabel diff, weighted
        relabel) and the number of judgments; with ?values=true the perceived lams and
        confidences themselves instead of their number (H-Mix's processed file)."""
        study, include = self.get_object(), _include_excluded(request)
        try:
            values = reports.flag_param("values", request.query_params.get("values"))
        except ValueError as error:
            raise ValidationError({"values": str(error)}) from None
        # Encoded by orjson, not the renderer: a million judgments' lists (see reports).
        body = reports.stimulus_aggregates_json(study, include, values)
        return HttpResponse(body, content_type="application/json")

    @extend_schema(parameters=EXPORT_PARAMS[1:], responses={200: dict})
    @action(detail=True, url_path="aggregates/confidence-by-lam")
    def confidence_by_lam(self, request: Request, slug: str) -> Response:
        """Mean and std, over per-stimulus mean confidences, for each true lam."""
        study = self.get_object()
        return Response(
            {
                "study": study.slug,
                "rows": reports.confidence_by_true_lam(study, _include_excluded(request)),
            }
        )

    @extend_schema(parameters=EXPORT_PARAMS[1:], responses={200: dict})
    @action(detail=True, url_path="aggregates/class-pairs")
    def class_pairs(self, request: Request, slug: str) -> Response:
        """Midpoints (or perceived lams) per unordered class pair."""
        study = self.get_object()
        return Response(reports.class_pair_midpoint_table(study, _include_excluded(request)))

    @extend_schema(parameters=EXPORT_PARAMS[1:], responses={200: dict})
    @action(detail=True, url_path="aggregates/paper")
    def paper_view(self, request: Request, slug: str) -> Response:
        """The H-Mix paper's view: confidence pooled over symmetric true lams (0.1 with
        0.9, 0.25 with 0.75, 0.5 alone; mean and population std over stimuli of their
        mean confidence) and the mean midpoint per grid interface with its 95% t
        interval."""
        return Response(reports.paper_view(self.get_object(), _include_excluded(request)))

    @extend_schema(parameters=EXPORT_PARAMS, responses={200: bytes})
    @action(detail=True)
    def export(self, request: Request, slug: str):
        """Every judgment of the study, streamed as CSV or JSON (no recruiter ids)."""
        study = self.get_object()
        judgments = reports.study_judgments(study, _include_excluded(request))
        _audit_export(request, study, "API study export")
        header = [name for name, _ in reports.EXPORT_COLUMNS]
        return export_response(
            _format(request),
            f"{study.slug}-judgments",
            header,
            reports.export_queryset(judgments),
            reports.EXPORT_JSON_COLUMNS,
            reports.EXPORT_CHUNK,
        )

    @extend_schema(parameters=EXPORT_PARAMS[1:], responses={200: bytes})
    @action(detail=True, url_path="export/hmix")
    def export_hmix(self, request: Request, slug: str):
        """The study's judgments as a CSV with the column names of the H-Mix files."""
        study = self.get_object()
        try:
            header = hmix.hmix_columns(study.interface)
        except hmix.NoHmixLayout as error:
            raise NotFound(str(error)) from None
        _audit_export(request, study, "API H-Mix CSV export")
        return streaming_export(
            "csv",
            f"{study.slug}-hmix",
            header,
            reports.hmix_rows(study, _include_excluded(request)),
        )

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "license",
                str,
                description=f"The licence the dataset card states (default "
                f"{publishing.DEFAULT_LICENSE}; an SPDX-style identifier).",
            )
        ],
        responses={(200, "application/zip"): bytes},
    )
    @action(detail=True)
    def publish(self, request: Request, slug: str) -> FileResponse:
        """The study as a dataset others can load (a zip, elicitation.publishing):
        Parquet judgments (counted ones, anonymous annotator ids, no recruiter id), the
        stimuli as PNG files and a dataset card. Recorded in the audit log."""
        from .models import AuditLog
        from .services import audit

        study = self.get_object()
        license = request.query_params.get("license", publishing.DEFAULT_LICENSE)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.+-]{0,63}", license):
            raise ValidationError({"license": "an identifier such as cc-by-4.0"})
        try:
            archive = publishing.publish_zip([study], license=license)
        except publishing.StudyStillOpen as error:
            return Response({"detail": str(error)}, status=409)
        audit.record(
            request.user, AuditLog.Action.EXPORT, study=study, detail="dataset publication (zip)"
        )
        return FileResponse(
            archive,
            as_attachment=True,
            filename=f"{study.slug}-dataset.zip",
            content_type="application/zip",
        )


class ConditionViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Condition.objects.select_related("study").prefetch_related(
        "items__pair", "items__stimulus"
    )
    serializer_class = ConditionSerializer
    filterset_class = ConditionFilter
    pagination_class = ById


class StimulusViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Stimulus.objects.select_related("pair__stimulus_set").distinct()
    serializer_class = StimulusSerializer
    filterset_class = StimulusFilter
    pagination_class = ById


class ParticipantViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Participant.objects.prefetch_related(
        Prefetch("sessions", queryset=Session.objects.select_related("study", "condition"))
    ).distinct()
    serializer_class = ParticipantSerializer
    filterset_class = ParticipantFilter
    pagination_class = ById
    lookup_field = "public_id"

    def finalize_response(self, request, response, *args, **kwargs):
        # Recruiter ids went out (to a holder of the permission): audited.
        if response.status_code == 200 and request.user.has_perm(RECRUITER_ID_PERMISSION):
            what = kwargs.get("public_id") or "list"
            query = request.query_params.urlencode()
            audit.record(
                request.user,
                AuditLog.Action.VIEW_RECRUITER_IDS,
                detail=f"API participants {what}{f' ({query})' if query else ''}",
            )
        return super().finalize_response(request, response, *args, **kwargs)


class DataRequest(serializers.Serializer):
    recruiter_pid = serializers.CharField(max_length=100, trim_whitespace=True)


class DataRequestViewSet(viewsets.ViewSet):
    """A participant's data request by recruiter id (PROLIFIC_PID): everything stored
    about them (access, GDPR art. 15) or its erasure (art. 17). Both need the
    recruiter-id permission and "Can erase a participant's data or export it for an
    access request"; both are audited. POST, so the id stays out of URLs and logs."""

    action_permissions = {"*": [RECRUITER_ID_PERMISSION, DATA_REQUEST_PERMISSION]}

    def _pid(self, request: Request) -> str:
        params = DataRequest(data=request.data)
        params.is_valid(raise_exception=True)
        return params.validated_data["recruiter_pid"]

    @extend_schema(request=DataRequest, responses={200: dict})
    @action(detail=False, methods=["post"])
    def access(self, request: Request) -> Response:
        """Everything stored about the participant, as JSON (404: unknown id)."""
        try:
            return Response(consent.access_export(request.user, self._pid(request)))
        except FlowError as error:
            raise NotFound(error.message) from None

    @extend_schema(request=DataRequest, responses={200: dict})
    @action(detail=False, methods=["post"])
    def erase(self, request: Request) -> Response:
        """Erase the participant's judgments, sessions and ids in every study, and drop
        the id from their settled bonus payments (404: unknown id; 409: a bonus of
        theirs is not settled; nothing erased then)."""
        try:
            return Response(consent.erase_participant(request.user, self._pid(request)))
        except FlowError as error:
            if error.status == 409:
                return Response({"detail": error.message}, status=409)
            raise NotFound(error.message) from None


class JudgmentViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Judgment.objects.select_related(
        "study", "session__participant", "session__condition", "pair", "stimulus"
    )
    serializer_class = JudgmentSerializer
    filterset_class = JudgmentFilter
    pagination_class = ById
    action_permissions = {"export": [EXPORT_JUDGMENTS]}

    def filter_queryset(self, queryset: QuerySet[Judgment]) -> QuerySet[Judgment]:
        """The filters, then the exclusion rule every export and aggregate applies."""
        queryset = super().filter_queryset(queryset)
        if self.action in ("list", "export"):
            queryset = reports.counted(queryset, _include_excluded(self.request))
        return queryset

    @extend_schema(parameters=EXPORT_PARAMS[1:])
    def list(self, request: Request, *args, **kwargs) -> Response:
        """The filtered judgments, a page at a time."""
        return super().list(request, *args, **kwargs)

    @extend_schema(parameters=EXPORT_PARAMS, responses={200: bytes})
    @action(detail=False)
    def export(self, request: Request):
        """The filtered judgments, streamed as CSV or JSON."""
        judgments: QuerySet[Judgment] = self.filter_queryset(Judgment.objects.all())
        _audit_export(request, None, "API judgments export")
        header = [name for name, _ in reports.EXPORT_COLUMNS]
        return export_response(
            _format(request),
            "judgments",
            header,
            reports.export_queryset(judgments),
            reports.EXPORT_JSON_COLUMNS,
            reports.EXPORT_CHUNK,
        )


class MidpointQuery(serializers.Serializer):
    study = serializers.SlugField(required=False)


class MidpointViewSet(viewsets.ViewSet):
    action_permissions = {"*": [VIEW_JUDGMENTS]}

    @extend_schema(
        parameters=[
            OpenApiParameter("study", str, description="limit to one study (slug)"),
            EXPORT_PARAMS[1],
        ],
        responses={200: dict},
    )
    def list(self, request: Request) -> Response:
        """Per grid interface (Construct, Select-Shuffled): the chosen midpoints' histogram."""
        params = MidpointQuery(data=request.query_params)
        params.is_valid(raise_exception=True)
        studies = Study.objects.all()
        if params.validated_data.get("study"):
            studies = studies.filter(slug=params.validated_data["study"])
        return Response(reports.midpoint_distribution(studies, _include_excluded(request)))
