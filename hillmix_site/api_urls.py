from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import APIRootView, DefaultRouter

from elicitation import api
from training.api import TrainingJobViewSet

from .auth_views import ObtainToken, RotateToken
from .permissions import CanUseApi


class ApiRoot(APIRootView):
    permission_classes = [CanUseApi]


# No ".json" suffix routes: formats are chosen by the Accept header (and exports by
# `as=`); the suffix variants of the custom actions answered with a 500.
class Router(DefaultRouter):
    APIRootView = ApiRoot
    include_format_suffixes = False


router = Router()
router.register("studies", api.StudyViewSet)
router.register("conditions", api.ConditionViewSet)
router.register("stimuli", api.StimulusViewSet)
router.register("participants", api.ParticipantViewSet)
router.register("data-requests", api.DataRequestViewSet, basename="data-requests")
router.register("judgments", api.JudgmentViewSet)
router.register("aggregates/midpoints", api.MidpointViewSet, basename="midpoints")
router.register("training-jobs", TrainingJobViewSet)

urlpatterns = [
    path("", include(router.urls)),
    path("token/", ObtainToken.as_view(), name="api-token"),
    path("token/rotate/", RotateToken.as_view(), name="api-token-rotate"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its start-up script as a file: no inline script for the CSP.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
]
