"""The Prolific pages, under /admin/recruitment/ (wrapped by the admin site: its login
and look)."""

from django.contrib import admin
from django.urls import path

from . import views

app_name = "recruitment"

wrap = admin.site.admin_view

urlpatterns = [
    path("studies/<int:pk>/prolific/", wrap(views.dashboard), name="prolific"),
    path("studies/<int:pk>/prolific/link/", wrap(views.link_study), name="prolific_link"),
    path("studies/<int:pk>/prolific/approve/", wrap(views.approve), name="prolific_approve"),
    path("studies/<int:pk>/prolific/reject/", wrap(views.reject), name="prolific_reject"),
    path("studies/<int:pk>/prolific/bonuses/", wrap(views.bonuses), name="prolific_bonuses"),
    path(
        "studies/<int:pk>/prolific/bonuses/reconcile/",
        wrap(views.reconcile),
        name="prolific_reconcile",
    ),
]
