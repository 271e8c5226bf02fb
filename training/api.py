from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from elicitation.api import ById

from . import services
from .models import TrainingJob
from .serializers import TrainingJobSerializer


class TrainingJobViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Launch training jobs and read their progress and per-seed metrics."""

    queryset = TrainingJob.objects.select_related("dataset").prefetch_related(
        "stimulus_sets", "studies", "results"
    )
    serializer_class = TrainingJobSerializer
    pagination_class = ById
    filterset_fields = ["status", "policy", "comparison"]
    action_permissions = {
        "create": ["training.launch_trainingjob"],
        "cancel": ["training.launch_trainingjob"],
    }

    def perform_create(self, serializer: TrainingJobSerializer) -> None:
        """Store and queue the job, then reply with the job as stored: with tasks run
        in-process (no broker) it has already run by now, and a reply must not show
        its results beside a status of "queued"."""
        serializer.save()
        serializer.instance.refresh_from_db()

    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        job = self.get_object()
        services.cancel_job(job)
        job.refresh_from_db()
        return Response(self.get_serializer(job).data)
