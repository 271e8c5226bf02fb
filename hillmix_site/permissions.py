"""Who may do what: the Django permission each researcher page, action and API
operation needs (../shared/DESIGN.md, section 7: staff status alone grants nothing), and
the fields no lookup, filter, ordering or search may touch.

The roles that bundle these permissions are in hillmix_site.roles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import wraps

from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied
from django.db.models import Model
from django.db.models.constants import LOOKUP_SEP
from django.http import HttpRequest
from rest_framework.permissions import SAFE_METHODS, BasePermission

RECRUITER_ID_PERMISSION = "elicitation.view_recruiter_ids"
# Recruiter ids identify a person: only holders of RECRUITER_ID_PERMISSION may see them
# or narrow a list by them.
# Erasing a participant's data or exporting it for an access request, by recruiter id
# (with RECRUITER_ID_PERMISSION: the request names the person by it).
DATA_REQUEST_PERMISSION = "elicitation.handle_data_requests"
RECRUITER_ID_FIELDS = frozenset({"recruiter_pid", "recruiter_study_id", "recruiter_session_id"})
# Credentials (a participant's session secret or its hash, API token keys, password
# hashes): nobody narrows a list by them, because a prefix lookup answered "1 row" or
# "0 rows" recovers the whole value a few characters at a time.
SECRET_FIELDS = frozenset({"token", "token_hash", "secret_hash", "key", "password"})

# Reading the API's index, schema and docs (no data): anyone who may read studies.
API_READ_PERMISSION = "elicitation.view_study"


def hidden_fields(user) -> frozenset[str]:
    """Field names `user` may neither see nor use in a lookup, search or ordering."""
    if user.has_perm(RECRUITER_ID_PERMISSION):
        return SECRET_FIELDS
    return SECRET_FIELDS | RECRUITER_ID_FIELDS


def lookup_touches(model: type[Model], lookup: str, names: Iterable[str]) -> bool:
    """Whether a query-string lookup such as `session__participant__recruiter_pid__startswith`
    or an ordering such as `-token` reaches a field called one of `names` on `model` or
    any model it follows a relation to. Unknown parts count as touching (fail closed)
    unless they come after a plain field (they are then transforms or lookups)."""
    names = frozenset(names)
    current = model
    for part in lookup.lstrip("-").split(LOOKUP_SEP):
        if part == "pk":
            part = current._meta.pk.name
        if part in names:
            return True
        try:
            field = current._meta.get_field(part)
        except Exception:  # FieldDoesNotExist, or a related query name Django refuses
            return current is model
        if not field.is_relation or field.related_model is None:
            return False
        current = field.related_model
    return False


class GuardedLookupsAdmin:
    """ModelAdmin mixin: changelist lookups, search fields, ordering and forms never
    use credentials, nor recruiter ids for users without the permission. A refused
    lookup is Django's DisallowedModelAdminLookup, answered with a 400."""

    # False where the admin shows such a field safely itself (Django's user admin shows
    # only a masked password hash).
    hide_in_forms = True

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        if request is None or lookup_touches(self.model, lookup, hidden_fields(request.user)):
            return False
        return super().lookup_allowed(lookup, value, request)

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        hidden = hidden_fields(request.user)
        return [
            name
            for name in super().get_search_fields(request)
            if not lookup_touches(self.model, name.lstrip("^=@"), hidden)
        ]

    def get_list_display(self, request: HttpRequest) -> list:
        # `?o=<n>` sorts by the n-th column: a hidden field is never one.
        hidden = hidden_fields(request.user)
        return [
            name
            for name in super().get_list_display(request)
            # A column computed by the admin itself (progress bars, thumbnails) is no
            # field lookup; only field names are checked.
            if not (
                isinstance(name, str)
                and not hasattr(self, name)
                and lookup_touches(self.model, name, hidden)
            )
        ]

    def get_sortable_by(self, request: HttpRequest) -> list[str]:
        hidden = hidden_fields(request.user)
        return [
            name
            for name in super().get_sortable_by(request)
            if not (isinstance(name, str) and lookup_touches(self.model, name, hidden))
        ]

    def get_ordering(self, request: HttpRequest) -> list[str]:
        hidden = hidden_fields(request.user)
        return [
            name
            for name in super().get_ordering(request) or ()
            if not (isinstance(name, str) and lookup_touches(self.model, name, hidden))
        ]

    def get_exclude(self, request: HttpRequest, obj=None) -> list[str] | None:
        declared = super().get_exclude(request, obj)
        hidden = hidden_fields(request.user) & {f.name for f in self.model._meta.get_fields()}
        if not hidden or not self.hide_in_forms:
            return declared  # None keeps the form's own Meta.exclude in force
        return sorted(set(declared or ()) | hidden)


def admin_permission_required(*perms: str) -> Callable:
    """Decorator for the admin's own pages (wrapped by AdminSite.admin_view, which sends
    anonymous users to the login): a logged-in user without every one of `perms` gets
    a 403, whatever their staff status."""
    return permission_required(perms, raise_exception=True)


def check_admin_permission(request: HttpRequest, *perms: str) -> None:
    """Raise PermissionDenied (403) unless the request's user has every one of `perms`."""
    if not request.user.has_perms(perms):
        raise PermissionDenied


def with_admin_permission(*perms: str) -> Callable:
    """Decorator for ModelAdmin methods taking (self, request, ...): 403 without `perms`."""

    def decorate(method: Callable) -> Callable:
        @wraps(method)
        def checked(self, request: HttpRequest, *args, **kwargs):
            check_admin_permission(request, *perms)
            return method(self, request, *args, **kwargs)

        return checked

    return decorate


def model_permission(model: type[Model], action: str) -> str:
    """'app_label.<action>_<model>', e.g. model_permission(Study, "view") is
    'elicitation.view_study'."""
    return f"{model._meta.app_label}.{action}_{model._meta.model_name}"


class ModelPermission(BasePermission):
    """The REST API's default: an active user holding every permission the view names
    for its action (`view.action_permissions[action]`); reads without an entry need the
    queryset model's view permission; anything else without an entry is refused."""

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_active):
            return False
        perms = required_api_permissions(view, request.method)
        return bool(perms) and user.has_perms(perms)


def required_api_permissions(view, method: str) -> tuple[str, ...]:
    """The permissions an API view needs for `method` (see ModelPermission); empty
    means no one may (fail closed)."""
    by_action = getattr(view, "action_permissions", {})
    action = getattr(view, "action", None)
    if action in by_action:
        return tuple(by_action[action])
    if "*" in by_action:
        return tuple(by_action["*"])
    queryset = getattr(view, "queryset", None)
    if method in SAFE_METHODS and queryset is not None:
        return (model_permission(queryset.model, "view"),)
    return ()


class CanUseApi(BasePermission):
    """The API index, schema and docs: users who may read studies."""

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(
            user and user.is_authenticated and user.is_active and user.has_perm(API_READ_PERMISSION)
        )
