from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import path, reverse
from django.utils.html import format_html

from hillmix_site.permissions import RECRUITER_ID_PERMISSION, GuardedLookupsAdmin

from . import dashboard, services
from .forms import StudyForm
from .models import (
    AuditLog,
    Condition,
    ImageLoadFailure,
    Judgment,
    Participant,
    Session,
    Study,
)
from .services import audit
from .study_rules import LOCKED_ONCE_STARTED


class ConditionInline(admin.TabularInline):
    model = Condition
    fields = ["name", "position", "item_count"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    max_num = 0

    @admin.display(description="items")
    def item_count(self, obj: Condition) -> int:
        return obj.items.count()


@admin.register(Study)
class StudyAdmin(GuardedLookupsAdmin, admin.ModelAdmin):
    list_display = [
        "slug",
        "title",
        "interface",
        "status",
        "sessions",
        "dashboard_link",
        "created_at",
    ]
    list_filter = ["interface", "status"]
    change_list_template = "admin/elicitation/study_changelist.html"
    search_fields = ["slug", "title"]
    prepopulated_fields = {"slug": ["title"]}
    inlines = [ConditionInline]
    form = StudyForm
    actions = [
        "build_conditions",
        "pilot_study",
        "open_study",
        "close_study",
        "copy_as_new_study",
    ]
    fieldsets = [
        (None, {"fields": ["title", "slug", "interface", "stimulus_set", "status"]}),
        (
            "Participant flow",
            {
                "fields": [
                    "consent_text",
                    "consent_items",
                    "instruction_pages",
                    "quiz",
                    "feedback_questions",
                    "language",
                ]
            },
        ),
        (
            "Trials",
            {
                "fields": [
                    "condition_count",
                    "repeat_trials",
                    "ask_confidence",
                    "construct_start",
                    "slider_start",
                    "soft_label_gamma",
                    "stale_after_minutes",
                    "participants_per_condition",
                ]
            },
        ),
        (
            "Adaptive design",
            {
                "fields": [
                    "design",
                    "adaptive_budget",
                    "adaptive_max_per_pair",
                    "adaptive_repeat_spacing",
                    "adaptive_objective",
                    "adaptive_noise",
                ],
                "description": "Adaptive: each next trial is the one that tells most about "
                "the pairs' curves (the README's 'Adaptive studies'). Repeats: 'repeat trials'.",
            },
        ),
        ("Completion", {"fields": ["completion_code", "completion_url", "full_return_url"]}),
        ("Consent", {"fields": ["on_withdrawal"]}),
    ]

    def get_urls(self) -> list:
        wrap = self.admin_site.admin_view
        return [
            path("overview/", wrap(dashboard.overview), name="elicitation_study_overview"),
            path("import-hmix/", wrap(dashboard.import_hmix), name="elicitation_import_hmix"),
            path(
                "<int:pk>/dashboard/",
                wrap(dashboard.study_dashboard),
                name="elicitation_study_dashboard",
            ),
            path(
                "<int:pk>/dashboard/sessions/<int:session_id>/exclusion/",
                wrap(dashboard.toggle_exclusion),
                name="elicitation_session_exclusion",
            ),
            path(
                "<int:pk>/dashboard/close/",
                wrap(dashboard.close_study),
                name="elicitation_study_close",
            ),
            path(
                "<int:pk>/dashboard/delete-non-live/",
                wrap(dashboard.delete_non_live),
                name="elicitation_study_delete_non_live",
            ),
            path(
                "data-requests/",
                wrap(dashboard.data_requests),
                name="elicitation_data_requests",
            ),
            *super().get_urls(),
        ]

    @admin.display(description="sessions")
    def sessions(self, obj: Study) -> int:
        return obj.sessions.count()

    @admin.display(description="dashboard")
    def dashboard_link(self, obj: Study) -> str:
        url = reverse("admin:elicitation_study_dashboard", args=[obj.pk])
        return format_html('<a href="{}">open</a>', url)

    def get_readonly_fields(self, request: HttpRequest, obj: Study | None = None) -> list[str]:
        """Once participants have started, what their sessions depend on is shown, not
        edited (Study.clean refuses it too); the copy action makes a new study."""
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None and obj.pk and obj.sessions.exists():
            fields += [name.removesuffix("_id") for name in LOCKED_ONCE_STARTED]
        return fields

    def save_model(self, request: HttpRequest, obj: Study, form, change: bool) -> None:
        services.save_study(obj)
        design = {"interface", "stimulus_set", "condition_count"}
        if not obj.conditions.exists() or (change and design & set(form.changed_data)):
            # Conditions are dealt from the stimulus set for the interface; no session
            # holds one yet (a study with sessions cannot change these).
            self._build(request, obj)

    @admin.action(description="Copy as a new draft study", permissions=["add"])
    def copy_as_new_study(self, request: HttpRequest, queryset: QuerySet[Study]) -> None:
        for study in queryset:
            try:
                copy = services.copy_study(study)
            except services.FlowError as error:
                self.message_user(request, f"{study}: {error.message}", messages.ERROR)
            else:
                url = reverse("admin:elicitation_study_change", args=[copy.pk])
                self.message_user(
                    request,
                    format_html('{} copied as the draft <a href="{}">{}</a>.', study, url, copy),
                )

    def _build(self, request: HttpRequest, study: Study) -> None:
        try:
            conditions = services.build_conditions(study)
        except services.FlowError as error:
            self.message_user(request, f"{study}: {error.message}", messages.ERROR)
        else:
            self.message_user(request, f"{study}: {len(conditions)} conditions built.")

    @admin.action(description="Rebuild conditions from the stimulus set", permissions=["change"])
    def build_conditions(self, request: HttpRequest, queryset: QuerySet[Study]) -> None:
        for study in queryset:
            self._build(request, study)

    @admin.action(description="Pilot (sessions are pilots, not data)", permissions=["change"])
    def pilot_study(self, request: HttpRequest, queryset: QuerySet[Study]) -> None:
        for study in queryset:
            try:
                services.set_study_status(study, Study.Status.PILOT)
            except services.FlowError as error:
                self.message_user(request, error.message, messages.ERROR)

    @admin.action(description="Open (make live)", permissions=["change"])
    def open_study(self, request: HttpRequest, queryset: QuerySet[Study]) -> None:
        for study in queryset:
            try:
                services.set_study_status(study, Study.Status.LIVE)
            except services.FlowError as error:
                self.message_user(request, error.message, messages.ERROR)

    @admin.action(description="Close", permissions=["change"])
    def close_study(self, request: HttpRequest, queryset: QuerySet[Study]) -> None:
        for study in queryset:
            services.set_study_status(study, Study.Status.CLOSED)


class ReadOnlyAdmin(GuardedLookupsAdmin, admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class ImageLoadFailureInline(admin.TabularInline):
    """Trials whose images this participant's browser could not load (not answered)."""

    model = ImageLoadFailure
    fields = ["trial_index", "failed", "attempts", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    max_num = 0
    verbose_name_plural = "images that did not load"


@admin.register(Session)
class SessionAdmin(ReadOnlyAdmin):
    inlines = [ImageLoadFailureInline]
    list_display = [
        "participant",
        "study",
        "condition",
        "state",
        "position",
        "quiz_attempts",
        "excluded",
        "kind",
        "started_at",
        "completed_at",
        "withdrawn_at",
    ]
    list_filter = ["study", "state", "excluded", "kind"]

    def change_view(self, request: HttpRequest, object_id: str, form_url="", extra_context=None):
        # The detail page shows the session's recruiter study and session ids to whoever
        # may see them: that view is audited.
        response = super().change_view(request, object_id, form_url, extra_context)
        if request.user.has_perm(RECRUITER_ID_PERMISSION) and response.status_code == 200:
            session = self.get_object(request, object_id)
            audit.record(
                request.user, AuditLog.Action.VIEW_RECRUITER_IDS,
                study=session.study_id if session else None,
                detail=f"admin: session {object_id}",
            )
        return response


@admin.register(Participant)
class ParticipantAdmin(ReadOnlyAdmin):
    list_display = ["public_id", "created_at"]
    search_fields = ["public_id"]

    def get_list_display(self, request: HttpRequest) -> list[str]:
        # Whoever pays participants finds them by recruiter id (GuardedLookupsAdmin
        # hides the column, its ordering and its lookups from everyone else).
        columns = super().get_list_display(request)
        if request.user.has_perm(RECRUITER_ID_PERMISSION):
            return [*columns, "recruiter_pid"]
        return columns

    def changelist_view(self, request: HttpRequest, extra_context=None):
        response = super().changelist_view(request, extra_context)
        if request.user.has_perm(RECRUITER_ID_PERMISSION) and response.status_code == 200:
            query = request.GET.urlencode()
            audit.record(
                request.user, AuditLog.Action.VIEW_RECRUITER_IDS,
                detail=f"admin: participant list{f' ({query})' if query else ''}",
            )
        return response

    def change_view(self, request: HttpRequest, object_id: str, form_url="", extra_context=None):
        response = super().change_view(request, object_id, form_url, extra_context)
        if request.user.has_perm(RECRUITER_ID_PERMISSION) and response.status_code == 200:
            audit.record(
                request.user, AuditLog.Action.VIEW_RECRUITER_IDS,
                detail=f"admin: participant {object_id}",
            )
        return response


@admin.register(Judgment)
class JudgmentAdmin(ReadOnlyAdmin):
    list_display = [
        "study",
        "session",
        "trial_index",
        "interface",
        "pair",
        "lam",
        "confidence",
        "rt_ms",
        "is_repeat",
        "created_at",
    ]
    list_filter = ["study", "interface", "is_repeat"]


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdmin):
    """Who exported data, saw recruiter ids, erased, withdrew or paid: read-only, for
    whoever holds elicitation.view_auditlog (admins)."""

    list_display = ["created_at", "username", "action", "study", "detail"]
    list_filter = ["action", "study"]
    search_fields = ["username", "action", "detail"]
    date_hierarchy = "created_at"
