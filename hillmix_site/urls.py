from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.static import serve

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("hillmix_site.api_urls")),
    path("", include("elicitation.urls")),
]

if settings.HILLMIX_BENCH_FLOOR:
    from .bench_views import floor

    urlpatterns.append(path("bench/floor/", floor))

if settings.SERVE_MEDIA:
    media_prefix = settings.MEDIA_URL.lstrip("/")
    urlpatterns.append(
        re_path(rf"^{media_prefix}(?P<path>.*)$", serve, {"document_root": settings.MEDIA_ROOT})
    )

admin.site.site_header = "HILL-Mix research dashboard"
admin.site.site_title = "HILL-Mix"
admin.site.index_title = "Studies, stimuli and judgments"
