import hashlib
import secrets

from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.validators import MaxValueValidator
from django.db import models

from datasets.models import Pair, Stimulus, StimulusSet

from . import interfaces

# Adaptive budget, max per pair and repeat spacing: a session longer than this is no
# session a person finishes.
MAX_ADAPTIVE_SETTING = 1000

# An interface is stored by its registry name; the fields' choices are the registry's
# (a callable, so a new interface module changes no migration).
INTERFACE_MAX_LENGTH = 20


def new_public_id() -> str:
    return secrets.token_hex(8)


def new_session_secret() -> str:
    """The secret a participant's browser holds for its session: 32 random bytes."""
    return secrets.token_urlsafe(32)


def secret_hash(secret: str) -> str:
    """What the database keeps of a session secret (SHA-256, hex): a leaked row or
    backup opens no session. No salt or stretching is needed for 256 random bits."""
    return hashlib.sha256(secret.encode()).hexdigest()


def unheld_secret_hash() -> str:
    """The hash of a secret no browser holds: a session made outside the participant
    flow (an import) can be opened by nobody until it is given a secret."""
    return secret_hash(new_session_secret())


def new_session_token() -> str:
    """The old clear-text session token (kept: migration 0001 names it)."""
    return secrets.token_urlsafe(24)


def session_reference(token_hash: str) -> str:
    """A non-secret name of a session, derived from its secret's hash: the trial page
    sends it back with every answer, so an answer from a page showing another session
    is refused. Knowing it opens nothing."""
    return hashlib.sha256(f"reference:{token_hash}".encode()).hexdigest()[:22]


def language_choices() -> list[tuple[str, str]]:
    """A study's languages: settings.LANGUAGES (a callable, so adding a catalogue under
    locale/ changes no migration)."""
    return list(settings.LANGUAGES)


class StudyQuerySet(models.QuerySet):
    def update(self, **kwargs) -> int:
        """As QuerySet.update; a new status also sets closed_at (now, or kept, when it
        closes; cleared otherwise), as Study.save does."""
        if "status" in kwargs and "closed_at" not in kwargs:
            from django.db.models.functions import Coalesce, Now

            closing = kwargs["status"] == Study.Status.CLOSED
            kwargs["closed_at"] = Coalesce(models.F("closed_at"), Now()) if closing else None
        return super().update(**kwargs)


class Study(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"
        # Open to participants, but every session started is a pilot (Session.Kind):
        # never research data, deleted with one action before going live.
        PILOT = "pilot"
        LIVE = "live"
        CLOSED = "closed"

    class OnWithdrawal(models.TextChoices):
        """What happens to a participant's answers when they withdraw (the consent page
        says which)."""

        ERASE = "erase", "Erase their answers"
        KEEP = "keep", "Keep the answers given so far"

    class ConstructStart(models.TextChoices):
        LOW = "0.1", "Start at lam 0.1"
        HIGH = "0.9", "Start at lam 0.9"
        RANDOM = "random", "0.1 or 0.9, random per trial"

    slug = models.SlugField(max_length=80, unique=True)
    title = models.CharField(max_length=200)
    interface = models.CharField(max_length=INTERFACE_MAX_LENGTH, choices=interfaces.choices)
    stimulus_set = models.ForeignKey(StimulusSet, on_delete=models.PROTECT, related_name="studies")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    consent_text = models.TextField(help_text="Shown above the consent boxes (plain text).")
    consent_items = models.JSONField(
        default=list, help_text='Statements to tick, e.g. ["I am 18 or older", "I agree"].'
    )
    instruction_pages = models.JSONField(
        default=list, help_text="A list of pages, each a string of plain text."
    )
    quiz = models.JSONField(
        default=list,
        blank=True,
        help_text='[{"question": "...", "options": ["a", "b"], "answer": 0}, ...]',
    )
    feedback_questions = models.JSONField(default=list, blank=True)
    condition_count = models.PositiveSmallIntegerField(
        default=1, help_text="How many conditions (batches) the stimulus set is dealt into."
    )
    repeat_trials = models.PositiveSmallIntegerField(default=0)
    ask_confidence = models.BooleanField(default=False)
    construct_start = models.CharField(
        max_length=10, choices=ConstructStart.choices, default=ConstructStart.RANDOM
    )
    class SliderStart(models.TextChoices):
        MIDDLE = "50", "In the middle (50)"
        RANDOM = "random", "Anywhere on the scale, random per trial"

    # Where the Infer mixing slider starts. A random start (chosen per trial when the
    # session starts, stored in its trial order and with each answer) keeps a shared
    # resting point from pulling answers towards it.
    slider_start = models.CharField(
        max_length=10, choices=SliderStart.choices, default=SliderStart.MIDDLE
    )
    soft_label_gamma = models.FloatField(default=0.1)
    completion_code = models.CharField(max_length=50, blank=True)
    completion_url = models.URLField(max_length=500, blank=True)
    stale_after_minutes = models.PositiveIntegerField(
        default=60, help_text="In-progress sessions idle this long no longer hold a place."
    )
    participants_per_condition = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Target per condition: when every condition holds this many completed or "
        "active sessions (excluded ones never count), newcomers see a 'study full' page. "
        "Empty: no limit.",
    )
    full_return_url = models.URLField(
        max_length=500,
        blank=True,
        help_text="Where the 'study full' page sends people back to the recruiter "
        "(e.g. the recruiter's return link). Empty: the page asks them to return the study.",
    )
    language = models.CharField(
        max_length=10,
        choices=language_choices,
        default="en",
        help_text="The language of the participant pages and their messages (texts you "
        "write, such as the consent text, are shown as written).",
    )
    class Design(models.TextChoices):
        FIXED = "fixed", "Fixed: every session shows its condition's stimuli in random order"
        ADAPTIVE = "adaptive", "Adaptive: each next trial is the most informative one"

    # Adaptive studies (issue 18, DESIGN section 8): each next trial is chosen when it
    # is served (services.adaptive), by expected information gain about each pair's
    # psychometric curve, under these constraints.
    design = models.CharField(max_length=10, choices=Design.choices, default=Design.FIXED)
    # The same bound on every database (SQLite has no small-integer range of its own):
    # no one finishes a session of more trials than this.
    adaptive_budget = models.PositiveSmallIntegerField(
        default=60,
        validators=[MaxValueValidator(MAX_ADAPTIVE_SETTING)],
        help_text="Adaptive: trials per session (repeats included).",
    )
    adaptive_max_per_pair = models.PositiveSmallIntegerField(
        default=3,
        validators=[MaxValueValidator(MAX_ADAPTIVE_SETTING)],
        help_text="Adaptive: each participant sees a pair at most this often (repeats aside).",
    )
    adaptive_repeat_spacing = models.PositiveSmallIntegerField(
        default=10,
        validators=[MaxValueValidator(MAX_ADAPTIVE_SETTING)],
        help_text="Adaptive: a repeat (there are 'repeat trials' of them) comes "
        "at least this many trials after the trial it repeats.",
    )
    class Objective(models.TextChoices):
        CURVE = "curve", "The whole curve: information about each pair's midpoint and slope"
        MIDPOINT = "midpoint", "Midpoints: every pair's midpoint to +-0.05 first"

    adaptive_objective = models.CharField(
        max_length=10,
        choices=Objective.choices,
        default=Objective.CURVE,
        help_text="Adaptive: what the next trial should tell most about (adaptive.chooser).",
    )
    adaptive_noise = models.JSONField(
        default=dict, blank=True, help_text="Adaptive: the response noise per interface "
        "(adaptive.hmix_fit.fit_noise, fitted to H-Mix); empty: the defaults."
    )
    on_withdrawal = models.CharField(
        max_length=10,
        choices=OnWithdrawal.choices,
        default=OnWithdrawal.ERASE,
        help_text="What a participant's withdrawal does to their answers; the consent "
        "page tells them. Either way the session is marked withdrawn and gives its place "
        "back.",
    )
    closed_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="When the study closed: recruiter ids are dropped "
        "HILLMIX_RECRUITER_ID_RETENTION_DAYS later.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Bumped by every save: per-process caches of a study (live.study_catalog)
    # compare it to know when to reload.
    updated_at = models.DateTimeField(auto_now=True)

    objects = StudyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "studies"
        permissions = [("import_hmix", "Can import the published H-Mix data")]

    def __str__(self) -> str:
        return self.slug

    def save(self, *args, **kwargs) -> None:
        self.closed_at = closed_at_for(self.status, self.closed_at)
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "status" in update_fields:
            kwargs["update_fields"] = {*update_fields, "closed_at"}
        super().save(*args, **kwargs)

    @property
    def preview_key(self) -> str:
        """The secret part of the study's preview link (views.preview): an HMAC of the
        study under SECRET_KEY, so it needs no column and no one guesses it."""
        from django.utils.crypto import salted_hmac

        return salted_hmac("elicitation.preview", str(self.pk)).hexdigest()[:32]

    @property
    def accepts_participants(self) -> bool:
        """Open to newcomers: live, or piloting (their sessions are pilots)."""
        return self.status in (Study.Status.LIVE, Study.Status.PILOT)

    @property
    def is_adaptive(self) -> bool:
        return self.design == Study.Design.ADAPTIVE

    @property
    def is_grid(self) -> bool:
        return interfaces.get(self.interface).grid

    def clean(self) -> None:
        """A study that can run: a valid participant flow (study_rules.flow_errors) and,
        once participants have started, nothing their sessions depend on changed
        (study_rules.locked_changes; copy the study as a new one instead)."""
        from .study_rules import LOCKED_ONCE_STARTED, flow_errors, locked_changes, noise_errors

        errors = flow_errors(
            self.consent_items,
            self.instruction_pages,
            self.quiz,
            self.feedback_questions,
            live=self.accepts_participants,
        )
        fields = [*LOCKED_ONCE_STARTED, "quiz"]
        stored = Study.objects.filter(pk=self.pk).values(*fields).first() if self.pk else None
        if stored and self.sessions.exists():
            changed = locked_changes(stored, {f: getattr(self, f) for f in fields})
            if changed:
                errors[NON_FIELD_ERRORS] = [
                    "Participants have started this study, so these cannot change: "
                    f"{'; '.join(changed)}. Use the action 'Copy as a new draft study' "
                    "to run the changed design as a new study."
                ]
        if self.design == Study.Design.ADAPTIVE:
            from adaptive.model import INTERFACES as ADAPTIVE_INTERFACES

            # 0 would end every session before its first trial, with the completion code.
            for name in ("adaptive_budget", "adaptive_max_per_pair"):
                if getattr(self, name) is not None and getattr(self, name) < 1:
                    errors[name] = ["An adaptive study needs at least 1."]
            if problems := noise_errors(self.adaptive_noise):
                errors["adaptive_noise"] = problems

            if self.interface not in ADAPTIVE_INTERFACES:
                errors["design"] = [
                    "An adaptive design needs an interface whose answers tell about a "
                    f"pair's curve: {', '.join(ADAPTIVE_INTERFACES)}."
                ]
        if errors:
            raise ValidationError(errors)


def closed_at_for(status: str, closed_at):
    """A study's closed_at for `status`: kept (or now) while closed, None otherwise."""
    from django.utils import timezone

    if status != Study.Status.CLOSED:
        return None
    return closed_at or timezone.now()


class Condition(models.Model):
    """A batch of trials: an ordered list of pairs (grid interfaces) or stimuli."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="conditions")
    name = models.CharField(max_length=50)
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["study", "position"]
        constraints = [
            models.UniqueConstraint(fields=["study", "name"], name="unique_condition_name"),
        ]

    def __str__(self) -> str:
        return f"{self.study.slug}/{self.name}"


class ConditionItem(models.Model):
    condition = models.ForeignKey(Condition, on_delete=models.CASCADE, related_name="items")
    position = models.PositiveIntegerField()
    pair = models.ForeignKey(Pair, on_delete=models.PROTECT)
    stimulus = models.ForeignKey(Stimulus, on_delete=models.PROTECT, null=True, blank=True)

    class Meta:
        ordering = ["condition", "position"]
        constraints = [
            models.UniqueConstraint(fields=["condition", "position"], name="unique_item_position"),
        ]

    def __str__(self) -> str:
        return f"{self.condition} #{self.position}"


class Participant(models.Model):
    """A pseudonymous person. `public_id` is what every export shows; the recruiter's
    id is kept apart and only for resuming and paying."""

    public_id = models.CharField(max_length=32, unique=True, default=new_public_id)
    recruiter_pid = models.CharField(max_length=100, null=True, blank=True, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        permissions = [
            ("view_recruiter_ids", "Can see recruiter ids (e.g. Prolific PIDs)"),
            (
                "handle_data_requests",
                "Can erase a participant's data or export it for an access request",
            ),
        ]

    def __str__(self) -> str:
        return self.public_id


class Session(models.Model):
    class State(models.TextChoices):
        INSTRUCTIONS = "instructions"  # the quiz, if any, is their last screen
        TRIALS = "trials"
        FEEDBACK = "feedback"
        COMPLETE = "complete"

    class Kind(models.TextChoices):
        """Who the session is: only LIVE sessions are research data. Pilots, previews
        (Prolific's unfilled placeholders, the researcher's preview link) and simulated
        participants stay out of exports, aggregates, balance and payments by default."""

        LIVE = "live"
        PILOT = "pilot"
        PREVIEW = "preview"
        SIMULATED = "simulated"

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="sessions")
    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="sessions")
    # The SHA-256 of the secret the participant's browser holds (never the secret).
    token_hash = models.CharField(max_length=64, unique=True, default=unheld_secret_hash)
    condition = models.ForeignKey(Condition, on_delete=models.PROTECT, related_name="sessions")
    recruiter_study_id = models.CharField(max_length=100, blank=True)
    recruiter_session_id = models.CharField(max_length=100, blank=True)
    start_address = models.CharField(
        max_length=64,
        blank=True,
        db_index=True,
        help_text="Salted hash of the address that started the session (rate limiting only).",
    )
    trial_order = models.JSONField(
        help_text="One entry per trial: condition item position, repeat flag and what the "
        "participant is shown (start lam, shuffled order)."
    )
    position = models.PositiveIntegerField(default=0, help_text="Index of the next trial.")
    state = models.CharField(max_length=15, choices=State.choices, default=State.INSTRUCTIONS)
    quiz_attempts = models.PositiveSmallIntegerField(default=0)
    quiz_log = models.JSONField(default=list, blank=True)
    feedback = models.JSONField(default=dict, blank=True)
    excluded = models.BooleanField(default=False)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.LIVE)
    # Set when the participant withdrew (services.consent.withdraw): the session gives
    # its place back, is never paid, and its answers went as the study's on_withdrawal
    # says.
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(fields=["study", "participant"], name="one_session_per_study"),
        ]
        # Not last_seen_at: every saved answer moves it, and with it in an index
        # PostgreSQL rewrites all of this table's indexes per answer instead of
        # updating the row in place (a HOT update).
        indexes = [models.Index(fields=["condition", "state"], name="session_condition_state")]

    def __str__(self) -> str:
        return f"{self.study.slug}:{self.participant.public_id}"

    @property
    def trial_count(self) -> int:
        return len(self.trial_order)

    @property
    def reference(self) -> str:
        return session_reference(self.token_hash)

    def new_secret(self) -> str:
        """Give the session a fresh secret and return it (only its hash is kept, and
        saved by the caller): the secret is on hand only right now, to set the cookie.
        Also left as `self.token` for whoever holds this instance."""
        self.token = new_session_secret()
        self.token_hash = secret_hash(self.token)
        return self.token


class Judgment(models.Model):
    """One answer to one trial, saved the moment it is given."""

    # No single-column indexes on session and study: the (session, trial_index) and
    # (study, interface) indexes below serve those lookups, and every index is paid
    # for on each saved answer.
    session = models.ForeignKey(
        Session, on_delete=models.PROTECT, related_name="judgments", db_index=False
    )
    study = models.ForeignKey(
        Study, on_delete=models.PROTECT, related_name="judgments", db_index=False
    )
    trial_index = models.PositiveIntegerField()
    interface = models.CharField(max_length=INTERFACE_MAX_LENGTH, choices=interfaces.choices)
    pair = models.ForeignKey(Pair, on_delete=models.PROTECT)
    stimulus = models.ForeignKey(Stimulus, on_delete=models.PROTECT, null=True, blank=True)
    is_repeat = models.BooleanField(default=False)
    response = models.JSONField(help_text="The validated answer; its schema is the interface's.")
    lam = models.FloatField(
        null=True, help_text="Chosen (grid) or perceived (infer) lam of the pair's first image."
    )
    confidence = models.FloatField(null=True, blank=True, help_text="0-1")
    rt_ms = models.FloatField()
    client_started_at = models.BigIntegerField(null=True, blank=True, help_text="epoch ms")
    client_answered_at = models.BigIntegerField(null=True, blank=True, help_text="epoch ms")
    idempotency_key = models.UUIDField(unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["session", "trial_index"]
        constraints = [
            models.UniqueConstraint(fields=["session", "trial_index"], name="one_answer_per_trial"),
        ]
        indexes = [models.Index(fields=["study", "interface"])]
        permissions = [("export_judgments", "Can export judgments")]

    def __str__(self) -> str:
        return f"{self.session} trial {self.trial_index}"


class ImageLoadFailure(models.Model):
    """A trial whose images a participant's browser could not load, even after retries:
    nothing could be answered, so nothing was stored as a judgment; the researcher sees
    these on the session's admin page."""

    session = models.ForeignKey(
        Session, on_delete=models.CASCADE, related_name="image_failures"
    )
    trial_index = models.PositiveIntegerField()
    failed = models.PositiveSmallIntegerField(help_text="How many of the trial's images failed.")
    attempts = models.PositiveSmallIntegerField(help_text="Loads tried per image.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["session", "created_at"]

    def __str__(self) -> str:
        return f"{self.session} trial {self.trial_index}: {self.failed} image(s)"


class AuditLog(models.Model):
    """Who did what to personal or research data, and when: exports, views of
    recruiter ids, erasures, withdrawals, payments. Written by services.audit.record
    only; read-only in the admin. The username is copied so the entry still names
    who acted after their account is deleted."""

    class Action:
        """The actions recorded (a plain CharField, so a new action needs no migration)."""

        EXPORT = "export"
        VIEW_RECRUITER_IDS = "view_recruiter_ids"
        ACCESS_EXPORT = "access_export"
        ERASE = "erase"
        WITHDRAW = "withdraw"
        DROP_RECRUITER_IDS = "drop_recruiter_ids"
        DELETE_NON_LIVE = "delete_non_live"
        PAYMENT = "payment"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    username = models.CharField(
        max_length=150, blank=True, help_text="Who acted (empty: a participant or the system)."
    )
    action = models.CharField(max_length=40, db_index=True)
    study = models.ForeignKey(
        Study, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    detail = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.username or '-'} {self.action}"


class LogPosteriorField(models.Field):
    """A log posterior on adaptive.model.make_grid()'s grid: a float64 numpy array (G,).

    Stored as ``double precision[]`` on PostgreSQL, so a save adds its judgment's
    log-likelihood inside its one statement (services.judgments); elsewhere (SQLite) as
    the array's little-endian bytes, updated by the save's transaction. Reads give a
    numpy array either way."""

    description = "float64 array (double precision[] on PostgreSQL, bytes elsewhere)"

    def db_type(self, connection) -> str:
        return "double precision[]" if connection.vendor == "postgresql" else "blob"

    def from_db_value(self, value, expression, connection):
        return self.to_python(value)

    def to_python(self, value):
        import numpy as np

        if value is None or isinstance(value, np.ndarray):
            return value
        if isinstance(value, bytes | bytearray | memoryview):
            return np.frombuffer(bytes(value), dtype="<f8").astype(np.float64)
        return np.asarray(value, dtype=np.float64)

    def get_db_prep_value(self, value, connection, prepared: bool = False):
        import numpy as np

        if value is None:
            return None
        values = np.asarray(self.to_python(value), dtype="<f8")
        if connection.vendor == "postgresql":
            return values.tolist()
        return values.tobytes()


class PairPosterior(models.Model):
    """An adaptive study's posterior over one pair's psychometric curve
    share(lam) = sigmoid(k (lam - m)), per pool of sessions: the log posterior on
    adaptive.model.make_grid()'s (m, log k) grid (float64, m-major, up to an additive
    constant: readers subtract its maximum), the prior plus the log-likelihood of every
    saved judgment of the pair from a session of the pool, added by the save itself
    (services.judgments), so it always equals the one recomputed from the stored
    judgments (selectors.recomputed_posteriors).

    Pools keep what is not research data out of the live posterior: live sessions add
    to and choose from ``live`` (what every reader of "the study's posterior" reads),
    pilots from ``pilot``, simulated participants from ``simulated``; previews choose
    from ``live`` and add nothing (adaptive_design.pool_of)."""

    class Pool(models.TextChoices):
        LIVE = "live"
        PILOT = "pilot"
        SIMULATED = "simulated"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="posteriors")
    pair = models.ForeignKey(Pair, on_delete=models.CASCADE, related_name="+")
    pool = models.CharField(max_length=10, choices=Pool.choices, default=Pool.LIVE)
    log_posterior = LogPosteriorField()
    judgment_count = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["study", "pair", "pool"], name="one_posterior_per_pair_and_pool"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.study.slug}/{self.pair_id}/{self.pool}: {self.judgment_count} judgments"
