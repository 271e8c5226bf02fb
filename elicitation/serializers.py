"""Validation of what participants send. One response serializer per interface,
all stored in the one Judgment table; the envelope is shared."""

from __future__ import annotations

from rest_framework import serializers

from datasets.models import Stimulus

from .models import Condition, Interface, Judgment, Participant, Study
from .soft_labels import top2_clamp

LAM_TOLERANCE = 1e-6


def grid_index(value: float, grid: list[float]) -> int:
    """Position of value on the stimulus set's lam grid, or a validation error."""
    for i, lam in enumerate(grid):
        if abs(lam - value) < LAM_TOLERANCE:
            return i
    raise serializers.ValidationError(f"lam {value} is not on the grid {grid}")


class JudgmentEnvelope(serializers.Serializer):
    """What every interface sends around its answer."""

    session = serializers.CharField(max_length=64)
    trial_index = serializers.IntegerField(min_value=0)
    idempotency_key = serializers.UUIDField()
    rt_ms = serializers.FloatField(min_value=0.001, max_value=24 * 3600 * 1000)
    client_started_at = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    client_answered_at = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    confidence = serializers.IntegerField(
        min_value=0, max_value=100, required=False, allow_null=True
    )
    response = serializers.DictField()


class TrialResponse(serializers.Serializer):
    """Base for interface answers. context: `trial` (what was shown), `grid` (lams),
    `study` and `class_names`."""

    # Interfaces whose answer carries its own confidence slider.
    has_own_confidence = False

    def derived(self) -> dict:
        """lam and confidence (0-1) that the answer implies, for the Judgment columns."""
        raise NotImplementedError


class ConstructResponse(TrialResponse):
    start_lam = serializers.FloatField()
    final_lam = serializers.FloatField()
    history = serializers.ListField(child=serializers.FloatField(), min_length=1, max_length=500)

    def validate(self, data: dict) -> dict:
        grid = self.context["grid"]
        steps = [grid_index(lam, grid) for lam in data["history"]]
        if abs(data["start_lam"] - self.context["trial"]["start_lam"]) > LAM_TOLERANCE:
            raise serializers.ValidationError("start_lam is not the lam this trial started at")
        if steps[0] != grid_index(data["start_lam"], grid):
            raise serializers.ValidationError("history must begin at start_lam")
        if steps[-1] != grid_index(data["final_lam"], grid):
            raise serializers.ValidationError("history must end at final_lam")
        if any(abs(b - a) != 1 for a, b in zip(steps, steps[1:], strict=False)):
            raise serializers.ValidationError("history may only move one grid step at a time")
        data["history"] = [grid[i] for i in steps]
        data["final_lam"] = grid[steps[-1]]
        return data

    def derived(self) -> dict:
        return {"lam": self.validated_data["final_lam"]}


class SelectShuffledResponse(TrialResponse):
    chosen_lam = serializers.FloatField()
    order_shown = serializers.ListField(child=serializers.FloatField(), max_length=100)

    def validate(self, data: dict) -> dict:
        grid = self.context["grid"]
        shown = self.context["trial"]["order"]
        if len(data["order_shown"]) != len(shown) or any(
            abs(a - b) > LAM_TOLERANCE for a, b in zip(data["order_shown"], shown, strict=True)
        ):
            raise serializers.ValidationError("order_shown is not the order this trial showed")
        data["chosen_lam"] = grid[grid_index(data["chosen_lam"], grid)]
        return data

    def derived(self) -> dict:
        return {"lam": self.validated_data["chosen_lam"]}


class InferResponse(TrialResponse):
    """Slider from "100% class 1" (0) to "100% class 2" (100), and a confidence slider.

    The page sends `touched` flags; an untouched slider is refused, as the participant
    was asked to move it.
    """

    has_own_confidence = True
    slider = serializers.IntegerField(min_value=0, max_value=100)
    confidence = serializers.IntegerField(min_value=0, max_value=100)
    slider_touched = serializers.BooleanField()
    confidence_touched = serializers.BooleanField()

    def validate(self, data: dict) -> dict:
        if not (data["slider_touched"] and data["confidence_touched"]):
            raise serializers.ValidationError("both sliders must be moved before answering")
        data["perceived_lam"] = round(1.0 - data["slider"] / 100.0, 4)
        return data

    def derived(self) -> dict:
        return {
            "lam": self.validated_data["perceived_lam"],
            "confidence": self.validated_data["confidence"] / 100.0,
        }


class SoftLabelResponse(TrialResponse):
    """Most probable class and its probability, an optional second class, the
    impossible classes; stored with its Top-2 Clamp soft label."""

    first_class = serializers.CharField(max_length=50)
    first_prob = serializers.FloatField(min_value=0, max_value=100)
    second_class = serializers.CharField(max_length=50, allow_null=True, required=False)
    second_prob = serializers.FloatField(
        min_value=0, max_value=100, allow_null=True, required=False
    )
    impossible = serializers.ListField(
        child=serializers.CharField(max_length=50), required=False, max_length=1000
    )

    def validate(self, data: dict) -> dict:
        names = list(self.context["class_names"])
        second = data.get("second_class") or None
        impossible = data.get("impossible", [])
        unknown = [c for c in [data["first_class"], second, *impossible] if c and c not in names]
        if unknown:
            raise serializers.ValidationError(f"unknown classes: {unknown}")
        if data["first_prob"] <= 0:
            raise serializers.ValidationError("the most probable class needs a probability > 0")
        if second is None and data.get("second_prob") not in (None, 0):
            raise serializers.ValidationError("a second probability needs a second class")
        if second is not None:
            if second == data["first_class"]:
                raise serializers.ValidationError("the second class must differ from the first")
            if data.get("second_prob") is None:
                raise serializers.ValidationError("give the second class a probability")
            if data["second_prob"] > data["first_prob"]:
                raise serializers.ValidationError(
                    "the second class cannot be more probable than the first"
                )
        chosen = {data["first_class"], second}
        if chosen & set(impossible):
            raise serializers.ValidationError("a chosen class cannot also be impossible")
        if len(set(impossible)) != len(impossible):
            raise serializers.ValidationError("an impossible class is listed twice")
        gamma = self.context["study"].soft_label_gamma
        label = top2_clamp(
            len(names),
            names.index(data["first_class"]),
            data["first_prob"] / 100.0,
            names.index(second) if second else None,
            (data.get("second_prob") or 0.0) / 100.0,
            [names.index(c) for c in impossible],
            gamma=gamma,
        )
        data["second_class"] = second
        data["second_prob"] = data.get("second_prob") if second else None
        data["impossible"] = impossible
        data["soft_label"] = [round(float(x), 10) for x in label]
        data["gamma"] = gamma
        return data

    def derived(self) -> dict:
        return {}


RESPONSE_SERIALIZERS: dict[str, type[TrialResponse]] = {
    Interface.CONSTRUCT: ConstructResponse,
    Interface.SELECT_SHUFFLED: SelectShuffledResponse,
    Interface.INFER: InferResponse,
    Interface.SOFT_LABEL: SoftLabelResponse,
}


def first_error(errors: dict | list | str) -> str:
    """A readable one-line message from DRF's nested error structure."""
    if isinstance(errors, dict):
        field, value = next(iter(errors.items()))
        inner = first_error(value)
        return inner if field == "non_field_errors" else f"{field}: {inner}"
    if isinstance(errors, list) and errors:
        return first_error(errors[0])
    return str(errors)


# --- Researcher API (read-only) ----------------------------------------------------


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
            "soft_label_gamma",
            "condition_count",
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
        return stimulus.image.url if stimulus.image else None


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
