"""Serving stored files. Nothing in storage is public: stimulus images are served under
their opaque key while a live study shows them, and everything else (datasets,
stimuli by file name, training diagrams and checkpoints) only to users with the
Django permission to view what the file belongs to."""

from __future__ import annotations

import posixpath
from functools import lru_cache

from django.core.files.storage import default_storage
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from django.views.static import serve

from datasets.selectors import stimulus_file_name
from elicitation.selectors import live_stimulus_file_name

# Top folder in storage -> the permission that lets a user download its files.
MEDIA_PERMISSIONS = {
    "datasets": "datasets.view_dataset",
    "stimuli": "datasets.view_stimulus",
    "training": "training.view_seedresult",
}
# Participants' browsers keep images for the session; shared caches do not, as an
# image stops being public when its study closes.
STIMULUS_CACHE_CONTROL = "private, max-age=3600"


@lru_cache(maxsize=4096)
def _stimulus_bytes(key: str, file_name: str) -> bytes:
    # Stimulus files never change (a few KB each): read once per process.
    with default_storage.open(file_name, "rb") as handle:
        return handle.read()


@require_GET
def stimulus_image(request: HttpRequest, key: str) -> HttpResponse:
    """A stimulus image by its opaque key: to anyone while a live study shows it, else
    to users who may view stimuli (admin previews). The reply names nothing (no file
    name, no dates): only the pixels the page shows anyway."""
    file_name = live_stimulus_file_name(key)
    if file_name is None and request.user.has_perm("datasets.view_stimulus"):
        file_name = stimulus_file_name(key)
    if file_name is None:
        raise Http404("No such image.")
    response = HttpResponse(_stimulus_bytes(key, file_name), content_type="image/png")
    response["Cache-Control"] = STIMULUS_CACHE_CONTROL
    return response


@require_GET
def protected_media(request: HttpRequest, path: str) -> HttpResponse:
    """A stored file for a user with the permission its folder asks for; a 404 for
    everyone else, so nobody learns which files exist."""
    # The folder is checked on the normalised path only: "datasets/../training/..."
    # must not pass as a dataset.
    if posixpath.normpath(path) != path or path.startswith(("/", "..")):
        raise Http404("No such file.")
    permission = MEDIA_PERMISSIONS.get(path.split("/", 1)[0])
    if permission is None or not request.user.has_perm(permission):
        raise Http404("No such file.")
    response = serve(request, path, document_root=default_storage.location)
    response["Cache-Control"] = "private, no-cache"
    return response
