"""The researcher API's serializers (read-only). What participants send is checked
in answers.py."""

from __future__ import annotations

from rest_framework import serializers

from datasets.models import Stimulus

from .models import Condition, Judgment, Participant, Study


class StudySerializer(serializers.ModelSerializer):
    stimulus_set = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = Study
        fields = [
            "id",
            "slug",
            "title",
            "interface",
            "status",
            "stimulus_set",
            "repeat_trials",
            "ask_confidence",
            "construct_start",
            "slider_start",
            "soft_label_gamma",
            "condition_count",
            "language",
            "created_at",
        ]


class ConditionSerializer(serializers.ModelSerializer):
    study = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    items = serializers.SerializerMethodField()

    class Meta:
        model = Condition
        fields = ["id", "study", "name", "position", "items"]

    def get_items(self, condition: Condition) -> list[dict]:
        return [
            {
                "position": item.position,
                "pair": item.pair.name,
                "stimulus": item.stimulus.name if item.stimulus else None,
            }
            for item in condition.items.all()
        ]


class StimulusSerializer(serializers.ModelSerializer):
    stimulus_set = serializers.CharField(source="pair.stimulus_set.name", read_only=True)
    pair = serializers.CharField(source="pair.name", read_only=True)
    class1 = serializers.CharField(source="pair.class1", read_only=True)
    class2 = serializers.CharField(source="pair.class2", read_only=True)
    image = serializers.SerializerMethodField()

    class Meta:
        model = Stimulus
        fields = [
            "id",
            "name",
            "stimulus_set",
            "pair",
            "class1",
            "class2",
            "lam",
            "image",
            "size_bytes",
        ]

    def get_image(self, stimulus: Stimulus) -> str | None:
        return stimulus.served_url if stimulus.image else None


class ParticipantSerializer(serializers.ModelSerializer):
    """Pseudonymous by default; recruiter ids only for users with that permission."""

    sessions = serializers.SerializerMethodField()

    class Meta:
        model = Participant
        fields = ["public_id", "created_at", "sessions"]

    def _sees_recruiter_ids(self) -> bool:
        request = self.context.get("request")
        return bool(request and request.user.has_perm("elicitation.view_recruiter_ids"))

    def get_sessions(self, participant: Participant) -> list[dict]:
        sees = self._sees_recruiter_ids()
        result = []
        for session in participant.sessions.all():
            entry = {
                "study": session.study.slug,
                "condition": session.condition.name,
                "state": session.state,
                "position": session.position,
                "quiz_attempts": session.quiz_attempts,
                "excluded": session.excluded,
                "kind": session.kind,
                "withdrawn_at": session.withdrawn_at,
                "started_at": session.started_at,
                "completed_at": session.completed_at,
            }
            if sees:
                entry["recruiter_study_id"] = session.recruiter_study_id
                entry["recruiter_session_id"] = session.recruiter_session_id
            result.append(entry)
        return result

    def to_representation(self, participant: Participant) -> dict:
        data = super().to_representation(participant)
        if self._sees_recruiter_ids():
            data["recruiter_pid"] = participant.recruiter_pid
        return data


class JudgmentSerializer(serializers.ModelSerializer):
    study = serializers.CharField(source="study.slug", read_only=True)
    participant = serializers.CharField(source="session.participant.public_id", read_only=True)
    condition = serializers.CharField(source="session.condition.name", read_only=True)
    pair = serializers.CharField(source="pair.name", read_only=True)
    stimulus = serializers.CharField(source="stimulus.name", read_only=True, default=None)
    true_lam = serializers.FloatField(source="stimulus.lam", read_only=True, default=None)
    excluded = serializers.BooleanField(source="session.excluded", read_only=True)

    class Meta:
        model = Judgment
        fields = [
            "id",
            "study",
            "interface",
            "participant",
            "condition",
            "trial_index",
            "is_repeat",
            "pair",
            "stimulus",
            "true_lam",
            "lam",
            "confidence",
            "rt_ms",
            "client_started_at",
            "client_answered_at",
            "response",
            "excluded",
            "created_at",
        ]
