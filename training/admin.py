from django.contrib import admin, messages
from django.core.exceptions import SuspiciousOperation
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.html import format_html, format_html_join

from hillmix_site.admin_views import service_form_view
from hillmix_site.permissions import GuardedLookupsAdmin, with_admin_permission

from . import services
from .forms import TrainingJobForm
from .models import SeedResult, TrainingJob
from .selectors import COMPARED_METRICS, comparison_table, policy_differences


class SeedResultInline(admin.TabularInline):
    model = SeedResult
    fields = ["seed", "device", "summary", "diagram", "checkpoint"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    max_num = 0

    @admin.display(description="metrics")
    def summary(self, obj: SeedResult) -> str:
        return format_html_join(
            "",
            "<div>{}: {}</div>",
            ((k, f"{v:.4f}" if isinstance(v, float) else v) for k, v in obj.metrics.items()),
        )

    @admin.display(description="reliability")
    def diagram(self, obj: SeedResult) -> str:
        if not obj.reliability_diagram:
            return "-"
        return format_html('<img src="{}" width="220">', obj.reliability_diagram.url)


@admin.register(TrainingJob)
class TrainingJobAdmin(GuardedLookupsAdmin, admin.ModelAdmin):
    list_display = [
        "name",
        "comparison",
        "policy",
        "architecture",
        "status",
        "progress_text",
        "attempts",
        "created_at",
    ]
    list_filter = ["status", "policy", "comparison"]
    actions = ["cancel", "fail_stalled"]
    inlines = [SeedResultInline]
    readonly_fields = [f.name for f in TrainingJob._meta.fields] + ["stimulus_sets", "studies"]
    change_list_template = "admin/training/trainingjob_changelist.html"

    @admin.display(description="progress")
    def progress_text(self, obj: TrainingJob) -> str:
        p = obj.progress
        if not p:
            return "-"
        return (
            f"seed {p['seed_index'] + 1}/{len(obj.seeds)}, epoch {p['epoch'] + 1}/"
            f"{obj.epochs}, step {p['step'] + 1}/{p['steps_per_epoch']}, loss {p['loss']}"
        )

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context=None):
        def create(data: dict) -> TrainingJob:
            fields = {k: v for k, v in data.items() if k not in ("stimulus_sets", "studies")}
            return services.create_job(
                stimulus_sets=list(data["stimulus_sets"]),
                studies=list(data["studies"]),
                created_by=request.user,
                **fields,
            )

        return service_form_view(self, request, TrainingJobForm, "Launch a training job", create)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self.has_launch_permission(request)

    def has_launch_permission(self, request: HttpRequest) -> bool:
        """Launching, cancelling and failing jobs (admin actions' "launch")."""
        return request.user.has_perm("training.launch_trainingjob")

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.action(description="Cancel", permissions=["launch"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[TrainingJob]) -> None:
        for job in queryset:
            services.cancel_job(job)
        self.message_user(request, f"Asked {queryset.count()} job(s) to stop.", messages.INFO)

    @admin.action(
        description="Mark jobs whose worker stopped responding as failed", permissions=["launch"]
    )
    def fail_stalled(self, request: HttpRequest, queryset: QuerySet[TrainingJob]) -> None:
        count = services.fail_stale_jobs(queryset)
        self.message_user(request, f"{count} stalled job(s) marked failed.", messages.INFO)

    def get_urls(self) -> list:
        return [
            path(
                "compare/",
                self.admin_site.admin_view(self.compare),
                name="training_trainingjob_compare",
            ),
            *super().get_urls(),
        ]

    @with_admin_permission("training.view_trainingjob")
    def compare(self, request: HttpRequest) -> HttpResponse:
        """The paper's table: one row per policy, mean +- std and 95% t interval over
        seeds; then which differences between policies exceed seed noise (paired by
        seed, paired t-test)."""
        jobs = TrainingJob.objects.all()
        name = request.GET.get("comparison")
        if name and "\x00" in name:  # PostgreSQL refuses NUL in text: a 400, not a 500
            raise SuspiciousOperation("A NUL byte in the comparison name.")
        if name:
            jobs = jobs.filter(comparison=name)
        groups = sorted(set(TrainingJob.objects.values_list("comparison", flat=True)))
        rows = comparison_table(jobs)
        differences = policy_differences(rows)
        context = {
            **self.admin_site.each_context(request),
            "opts": TrainingJob._meta,
            "title": "Compare label policies",
            "rows": rows,
            "headings": [heading for _, heading, _ in COMPARED_METRICS],
            "differences": differences,
            "beyond_noise": [d for d in differences if d["exceeds_noise"]],
            "groups": groups,
            "current": name or "",
        }
        return TemplateResponse(request, "admin/training/compare.html", context)
