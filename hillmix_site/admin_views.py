"""Admin pages driven by a plain form and a service call (shared by the apps)."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import admin, messages
from django.contrib.admin.exceptions import DisallowedModelAdminToField
from django.contrib.admin.options import IS_POPUP_VAR, TO_FIELD_VAR
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Model
from django.forms import Form
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse


def service_form_view(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    form_class: type[Form],
    title: str,
    create: Callable[[dict], Model],
) -> HttpResponse:
    """Show the form; on a valid POST call `create`, whose ValidationErrors show on the
    form; on success go back to the change list. Opened from a "+" beside a foreign key
    (Django's popup protocol: `_popup`, `_to_field`), it answers with the admin's popup
    response instead, which closes the window and offers the new object in the field."""
    if not model_admin.has_add_permission(request):
        raise PermissionDenied  # the admin's own add views check the same
    params = request.POST if request.method == "POST" else request.GET
    is_popup = IS_POPUP_VAR in params
    to_field = params.get(TO_FIELD_VAR)
    if to_field and not model_admin.to_field_allowed(request, to_field):
        raise DisallowedModelAdminToField(f"The field {to_field} cannot be referenced.")
    form = form_class(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            obj = create(form.cleaned_data)
        except ValidationError as exc:
            for message in exc.messages:
                form.add_error(None, message)
        else:
            if is_popup:
                # ModelAdmin.response_add speaks the popup protocol (value, label).
                return model_admin.response_add(request, obj)
            model_admin.message_user(request, f"Created {obj}.", messages.SUCCESS)
            return redirect(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_changelist")
    context = {
        **model_admin.admin_site.each_context(request),
        "form": form,
        "title": title,
        "opts": model_admin.model._meta,
        "is_popup": is_popup,
        "is_popup_var": IS_POPUP_VAR,
        "to_field": to_field,
        "to_field_var": TO_FIELD_VAR,
    }
    return TemplateResponse(request, "admin/service_form.html", context)
