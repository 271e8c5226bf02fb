"""Refusals that happen before a view runs (a failed CSRF check, a body Django will not
read), answered in JSON to a request that sent JSON, as the views themselves answer it:
the trial page reads the `error` of every refused save."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, resolve
from django.utils import translation
from django.utils.translation import gettext
from django.views import csrf, defaults


def wants_json(request: HttpRequest) -> bool:
    """A request to a JSON endpoint: it sent JSON, or it is a participant's save."""
    return request.content_type == "application/json" or request.path_info.endswith("/judgments/")


def page_language(request: HttpRequest) -> str:
    """The language to answer in: a study's participant pages are in the study's
    language (Study.language), everything else in the site's."""
    try:
        match = resolve(request.path_info)
    except Resolver404:
        return settings.LANGUAGE_CODE
    if match.namespace == "elicitation" and "slug" in match.kwargs:
        from elicitation.selectors import study_language  # the app, loaded after the site

        return study_language(match.kwargs["slug"])
    return settings.LANGUAGE_CODE


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """settings.CSRF_FAILURE_VIEW: 403, in JSON for JSON requests."""
    with translation.override(page_language(request)):
        if wants_json(request):
            message = gettext("The page's security token is missing or old: reload the page.")
            return JsonResponse({"error": message}, status=403)
        return csrf.csrf_failure(request, reason)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """The root URLconf's handler400 (a body over DATA_UPLOAD_MAX_MEMORY_SIZE, a broken
    multipart body, a disallowed host): 400, in JSON for JSON requests."""
    with translation.override(page_language(request)):
        if wants_json(request):
            message = gettext("The request could not be read.")
            return JsonResponse({"error": message}, status=400)
        return defaults.bad_request(request, exception)


def refuse_nul_in_path(get_response: Callable[[HttpRequest], HttpResponse]):
    """Middleware: a 400 (bad_request, so JSON for JSON requests) for an address whose
    path holds a NUL byte (%00), before any view looks it up. PostgreSQL refuses text
    holding NUL, so a path part that reaches a query (an API object by slug or public
    id, a stimulus by its key) would otherwise end in a 500. Query strings and bodies
    are left to the forms and views, which clean or refuse NUL themselves."""

    def middleware(request: HttpRequest) -> HttpResponse:
        if "\x00" in request.path_info:
            raise SuspiciousOperation("A NUL byte in the address.")
        return get_response(request)

    return middleware
