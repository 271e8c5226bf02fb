"""The Content-Security-Policy by area of the site: settings.CONTENT_SECURITY_POLICY
everywhere, plus inline styles on staff pages (django-csp's middleware, extended the
way its documentation suggests, through get_policy_parts)."""

from __future__ import annotations

from csp.middleware import CSPMiddleware, PolicyParts
from django.http import HttpRequest, HttpResponseBase

# Staff-only areas: the admin (its dashboard plots are matplotlib's inline SVG, styled
# by attributes) and the API's browsable pages and docs (a <style> block).
STAFF_PREFIXES = ("/admin/", "/api/")
STAFF_UPDATE = {"style-src": ["'unsafe-inline'"]}


class PolicyByAreaMiddleware(CSPMiddleware):
    """CSPMiddleware that adds STAFF_UPDATE on paths under STAFF_PREFIXES (unless a
    view's own csp_update decorator already set an update)."""

    def get_policy_parts(
        self, request: HttpRequest, response: HttpResponseBase, report_only: bool = False
    ) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        if parts.update is None and request.path_info.startswith(STAFF_PREFIXES):
            parts.update = STAFF_UPDATE
        return parts
