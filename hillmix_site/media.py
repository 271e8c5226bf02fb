"""Serving stored files. Nothing in storage is public: a live study's participants
fetch its stimulus images under names of that study alone (elicitation.live.image_key),
and everything else (stimuli by their own key or file name, datasets, training
diagrams and checkpoints) is served only to users with the Django permission to view
what the file belongs to."""

from __future__ import annotations

import logging
import posixpath
from functools import lru_cache

from django.core.files.storage import default_storage
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from django.views.static import serve

from datasets.selectors import stimulus_file_name
from elicitation.live import live_image_file

# Top folder in storage -> the permission that lets a user download its files.
MEDIA_PERMISSIONS = {
    "datasets": "datasets.view_dataset",
    "stimuli": "datasets.view_stimulus",
    "training": "training.view_seedresult",
}
# Participants' browsers keep images for the session; shared caches do not, as an
# image stops being public when its study closes.
STIMULUS_CACHE_CONTROL = "private, max-age=3600"

logger = logging.getLogger(__name__)


@lru_cache(maxsize=4096)
def _stimulus_bytes(file_name: str) -> bytes:
    # Stimulus files never change (a few KB each): read once per process.
    with default_storage.open(file_name, "rb") as handle:
        return handle.read()


def _image_response(file_name: str | None) -> HttpResponse:
    # The reply names nothing (no file name, no dates): only the pixels.
    if file_name is None:
        raise Http404("No such image.")
    try:
        content = _stimulus_bytes(file_name)
    except FileNotFoundError:
        # Storage lost a file the database names: the operator must know; the page's
        # image-failure report records which trial it broke.
        logger.error("stimulus file missing from storage: %s", file_name)
        raise Http404("No such image.") from None
    response = HttpResponse(content, content_type="image/png")
    response["Cache-Control"] = STIMULUS_CACHE_CONTROL
    return response


@require_GET
def study_image(request: HttpRequest, slug: str, key: str) -> HttpResponse:
    """A stimulus image under its name in the study `slug` (live.image_key), to anyone
    while that study is live; a 404 otherwise. Reads no database (live.live_image_file)."""
    return _image_response(live_image_file(slug, key))


@require_GET
def stimulus_image(request: HttpRequest, key: str) -> HttpResponse:
    """A stimulus image by the stimulus's own key (Stimulus.served_url), for users who
    may view stimuli (admin and API previews); a 404 for everyone else. Participants
    never see this key: they get study_image's names."""
    if not request.user.has_perm("datasets.view_stimulus"):
        raise Http404("No such image.")
    return _image_response(stimulus_file_name(key))


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
