from django.urls import path

from . import views

app_name = "elicitation"

urlpatterns = [
    path("", views.home, name="home"),
]
