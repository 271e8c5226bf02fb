"""Refusals that happen before a view runs (a failed CSRF check, a body Django will not
read), answered in JSON to a request that sent JSON, as the views themselves answer it:
the trial page reads the `error` of every refused save."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import csrf, defaults


def wants_json(request: HttpRequest) -> bool:
    """A request to a JSON endpoint: it sent JSON, or it is a participant's save."""
    return request.content_type == "application/json" or request.path_info.endswith("/judgments/")


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """settings.CSRF_FAILURE_VIEW: 403, in JSON for JSON requests."""
    if wants_json(request):
        message = "The page's security token is missing or old: reload the page."
        return JsonResponse({"error": message}, status=403)
    return csrf.csrf_failure(request, reason)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """The root URLconf's handler400 (a body over DATA_UPLOAD_MAX_MEMORY_SIZE, a broken
    multipart body, a disallowed host): 400, in JSON for JSON requests."""
    if wants_json(request):
        return JsonResponse({"error": "The request could not be read."}, status=400)
    return defaults.bad_request(request, exception)
