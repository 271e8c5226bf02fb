"""Django's and libraries' admins with the project's lookup guard: no changelist
lookup, search or column reaches a password hash or an API token key."""

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy

from .permissions import GuardedLookupsAdmin


class GuardedUserAdmin(GuardedLookupsAdmin, UserAdmin):
    hide_in_forms = False


class GuardedTokenAdmin(GuardedLookupsAdmin, TokenAdmin):
    pass


for model, model_admin in [(get_user_model(), GuardedUserAdmin), (TokenProxy, GuardedTokenAdmin)]:
    admin.site.unregister(model)
    admin.site.register(model, model_admin)
