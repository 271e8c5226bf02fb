from django.contrib import admin
from django.utils.html import format_html

from hillmix_site.admin_views import service_form_view
from hillmix_site.permissions import GuardedLookupsAdmin

from . import services
from .forms import DatasetImportForm, StimulusSetForm
from .models import Dataset, Pair, Stimulus, StimulusSet


@admin.register(Dataset)
class DatasetAdmin(GuardedLookupsAdmin, admin.ModelAdmin):
    list_display = ["name", "source_kind", "split", "num_images", "size", "created_at"]
    readonly_fields = [f.name for f in Dataset._meta.fields]

    @admin.display(description="image size")
    def size(self, obj: Dataset) -> str:
        return f"{obj.height}x{obj.width}x{obj.channels}"

    def add_view(self, request, form_url="", extra_context=None):
        return service_form_view(
            self,
            request,
            DatasetImportForm,
            "Import a dataset",
            lambda data: services.import_dataset(**data),
        )

    def has_add_permission(self, request) -> bool:
        return request.user.has_perm("datasets.import_dataset")

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def delete_model(self, request, obj: Dataset) -> None:
        services.delete_dataset(obj)


class PairInline(admin.TabularInline):
    model = Pair
    fields = ["position", "name"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    max_num = 0


@admin.register(StimulusSet)
class StimulusSetAdmin(GuardedLookupsAdmin, admin.ModelAdmin):
    list_display = ["name", "dataset", "kind", "mixing_policy", "status", "progress", "created_at"]
    list_filter = ["kind", "status", "dataset"]
    readonly_fields = [f.name for f in StimulusSet._meta.fields] + ["progress", "preview"]
    inlines = [PairInline]

    @admin.display(description="progress")
    def progress(self, obj: StimulusSet) -> str:
        return format_html(
            '<progress max="{}" value="{}"></progress> {} / {}',
            obj.total or 1,
            obj.done,
            obj.done,
            obj.total,
        )

    @admin.display(description="first stimuli")
    def preview(self, obj: StimulusSet) -> str:
        stimuli = Stimulus.objects.filter(pair__stimulus_set=obj)[:22]
        return format_html(
            "<div>{}</div>",
            format_html(
                "".join(
                    format_html(
                        '<img src="{}" title="{}" width="48" height="48" '
                        'style="image-rendering: pixelated; margin: 1px">',
                        s.served_url,
                        s.name,
                    )
                    for s in stimuli
                )
            ),
        )

    def add_view(self, request, form_url="", extra_context=None):
        def create(data: dict) -> StimulusSet:
            return services.create_stimulus_set(
                name=data["name"],
                dataset=data["dataset"],
                kind=data["kind"],
                lams=data["lams"],
                mixing_policy=data["mixing_policy"],
                pairs=data["explicit_pairs"],
                n_pairs=None if data["explicit_pairs"] else data["random_pairs"],
                seed=data["seed"],
            )

        return service_form_view(self, request, StimulusSetForm, "Build a stimulus set", create)

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def delete_model(self, request, obj: StimulusSet) -> None:
        services.delete_stimulus_set(obj)


@admin.register(Stimulus)
class StimulusAdmin(GuardedLookupsAdmin, admin.ModelAdmin):
    list_display = ["name", "lam", "size_bytes", "thumbnail"]
    list_filter = ["pair__stimulus_set"]
    search_fields = ["name"]

    @admin.display(description="image")
    def thumbnail(self, obj: Stimulus) -> str:
        if not obj.image:
            return "-"
        return format_html(
            '<img src="{}" width="64" height="64" style="image-rendering: pixelated">',
            obj.served_url,
        )

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
