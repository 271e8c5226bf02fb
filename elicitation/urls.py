from django.urls import path

from . import views

app_name = "elicitation"

urlpatterns = [
    path("", views.home, name="home"),
    path("s/<slug:slug>/", views.study_page, name="study"),
    # The participant scripts' messages in one language (Study.language).
    path("jsi18n/<slug:language>/", views.javascript_catalog, name="javascript_catalog"),
    path("s/<slug:slug>/consent/", views.consent, name="consent"),
    path("s/<slug:slug>/instructions/", views.instructions_done, name="instructions"),
    path("s/<slug:slug>/quiz/", views.quiz, name="quiz"),
    path("s/<slug:slug>/feedback/", views.feedback, name="feedback"),
    path("s/<slug:slug>/trial/", views.trial, name="trial"),
    path("s/<slug:slug>/judgments/", views.judgments, name="judgments"),
    path("s/<slug:slug>/image-failures/", views.image_failures, name="image_failures"),
    path("s/<slug:slug>/withdraw/", views.withdraw, name="withdraw"),
    path("s/<slug:slug>/preview/<str:key>/", views.preview, name="preview"),
]
