from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.authtoken.views import obtain_auth_token
from rest_framework.routers import DefaultRouter

from elicitation import api
from training.api import TrainingJobViewSet

router = DefaultRouter()
router.register("studies", api.StudyViewSet)
router.register("conditions", api.ConditionViewSet)
router.register("stimuli", api.StimulusViewSet)
router.register("participants", api.ParticipantViewSet)
router.register("judgments", api.JudgmentViewSet)
router.register("aggregates/midpoints", api.MidpointViewSet, basename="midpoints")
router.register("training-jobs", TrainingJobViewSet)

urlpatterns = [
    path("", include(router.urls)),
    path("token/", obtain_auth_token, name="api-token"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
]
