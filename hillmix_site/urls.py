from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path

from . import media

urlpatterns = [
    # Before the admin: its catch-all would answer these URLs first.
    path("admin/recruitment/", include("recruitment.urls")),
    path("admin/", admin.site.urls),
    path("api/", include("hillmix_site.api_urls")),
    path("", include("elicitation.urls")),
]

if settings.HILLMIX_BENCH_FLOOR:
    from .bench_views import floor

    urlpatterns.append(path("bench/floor/", floor))

# Stored files are never served as they lie: see hillmix_site.media.
urlpatterns += [
    path("stimuli/<str:key>.png", media.stimulus_image, name="stimulus-image"),
    path("s/<slug:slug>/img/<str:key>.png", media.study_image, name="study-image"),
    re_path(rf"^{settings.MEDIA_URL.lstrip('/')}(?P<path>.*)$", media.protected_media),
]

# Refusals before a view runs answer JSON requests in JSON (hillmix_site.errors).
handler400 = "hillmix_site.errors.bad_request"

admin.site.site_header = "HILL-Mix research dashboard"
admin.site.site_title = "HILL-Mix"
admin.site.index_title = "Studies, stimuli and judgments"
