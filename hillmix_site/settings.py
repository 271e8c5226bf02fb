"""Settings from environment variables, with defaults that run on a laptop.

No DATABASE_URL: SQLite in the project folder. No REDIS_URL: Celery runs tasks
in-process (eager). Set both and the same code runs on PostgreSQL and real workers.
"""

from pathlib import Path

import environ
from celery.schedules import crontab

from hillmix_site.client_address import trusted_networks

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env("SECRET_KEY", default="insecure-local-development-key-change-me-in-production")
if not DEBUG and (len(SECRET_KEY) < 32 or SECRET_KEY.startswith("insecure-")):
    raise environ.ImproperlyConfigured("Set SECRET_KEY (32+ characters) when DEBUG is off.")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "axes",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "datasets",
    "elicitation",
    "training",
    "recruitment",  # Prolific: submissions, approvals, the bonus ledger
    "hillmix_site",  # role groups and login rules
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "hillmix_site.errors.refuse_nul_in_path",  # a 400, not a 500 from PostgreSQL
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "hillmix_site.csp.PolicyByAreaMiddleware",
    # Last, as its documentation asks: turns a locked-out login into a 429.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "hillmix_site.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "hillmix_site.wsgi.application"

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several threads (the dev server, in-process tasks) write at once.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
# The languages a study's participant pages can be shown in (Study.language); each
# besides English has a complete catalogue under locale/ (tests/test_i18n.py).
LANGUAGES = [("en", "English"), ("de", "Deutsch")]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "media/"
MEDIA_ROOT = env.path("MEDIA_ROOT", default=BASE_DIR / "media")
# Nothing under MEDIA_ROOT is public: Django serves stimuli under opaque keys while
# their study is live, and other files only to users with permission
# (hillmix_site.media). A front proxy must not serve MEDIA_ROOT itself.

# --- Transport and browser security (README "Security") ------------------------
# HTTPS only unless DEBUG: secure cookies, plain HTTP redirected, HSTS. SECURE_COOKIES=false
# is for plain-HTTP loopback benchmarks only (and turns the redirect off with it).
HTTPS_ONLY = env.bool("SECURE_COOKIES", default=not DEBUG)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS_ONLY
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Behind a TLS-terminating proxy (docker compose's nginx, a PaaS router), which sets
# X-Forwarded-Proto itself (deploy/nginx.conf):
if env.bool("BEHIND_TLS_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=HTTPS_ONLY)
# A year, the length browsers' preload lists ask for; subdomains included. Preloading
# commits the whole registered domain to HTTPS, so it is the site owner's choice
# (SECURE_HSTS_PRELOAD=true) and its check is silenced while it is off.
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000 if HTTPS_ONLY else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
# A failed CSRF check on a save is answered in JSON, as the save's other refusals are.
CSRF_FAILURE_VIEW = "hillmix_site.errors.csrf_failure"
# Content-Security-Policy (django-csp): scripts, styles, images and requests from this
# site only, no plugins, no framing, forms post here. json_script data blocks are not
# executed, so they need no exception. Staff pages (hillmix_site.csp.STAFF_PREFIXES)
# also allow inline style attributes: the admin templates lay out tables and modules
# with them, and the API docs page has a <style> block. Scripts stay 'self' there.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# bench/load.py's floor view (a bare one-row write); never on in a deployment.
HILLMIX_BENCH_FLOOR = env.bool("HILLMIX_BENCH_FLOOR", default=False)

# New participant sessions one address may start per minute (a lab's NAT shares one).
HILLMIX_SESSION_STARTS_PER_MINUTE = env.int("HILLMIX_SESSION_STARTS_PER_MINUTE", default=30)
# Proxies (addresses or CIDR networks, comma-separated) whose X-Forwarded-For is believed
# when they are the socket peer, e.g. the TLS proxy in front of gunicorn: the limit above
# then counts each real client, not the proxy. Empty: the socket peer is the client.
HILLMIX_TRUSTED_PROXIES = env.list("HILLMIX_TRUSTED_PROXIES", default=[])
trusted_networks(tuple(HILLMIX_TRUSTED_PROXIES))  # a malformed entry stops the start

LOGIN_URL = "admin:login"

# --- Logins -------------------------------------------------------------------
# django-axes counts failed logins (admin and /api/token/, both through authenticate())
# and refuses further tries from that username and address for a cool-off period,
# even with the right password.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("HILLMIX_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("HILLMIX_LOGIN_COOLOFF_HOURS", default=1.0)
# Counted per username and address together: one address cannot go on guessing one
# user's password, and failures from elsewhere never lock a user out at their own
# address (locking by username alone would let anyone do that; by address alone, one
# guessed login would lock out everyone behind a shared office or campus address).
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_HTTP_RESPONSE_CODE = 429
AXES_CLIENT_IP_CALLABLE = "hillmix_site.auth.axes_client_address"
# API tokens older than this are refused; POST /api/token/rotate/ or a new login issues
# a fresh one, and a password change drops the old one (hillmix_site.auth).
HILLMIX_TOKEN_TTL_HOURS = env.float("HILLMIX_TOKEN_TTL_HOURS", default=7 * 24.0)

# --- Celery -----------------------------------------------------------------
REDIS_URL = env("REDIS_URL", default="")
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = REDIS_URL or None
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Celery beat (docker-compose's `beat` service) runs these on a schedule.
CELERY_BEAT_SCHEDULE = {
    # Recruiter ids are dropped HILLMIX_RECRUITER_ID_RETENTION_DAYS after a study closes.
    "drop-expired-recruiter-ids": {
        "task": "elicitation.tasks.drop_expired_recruiter_ids",
        "schedule": crontab(hour=3, minute=17),
    },
}
# Days after a study closes until its recruiter ids (PROLIFIC_PID, STUDY_ID, SESSION_ID)
# are dropped: long enough to pay, bonus and answer queries; the data stays pseudonymous.
HILLMIX_RECRUITER_ID_RETENTION_DAYS = env.int("HILLMIX_RECRUITER_ID_RETENTION_DAYS", default=90)

# --- REST framework ---------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "hillmix_site.auth.ExpiringTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Each view names the Django permission it needs; staff status alone grants nothing.
    "DEFAULT_PERMISSION_CLASSES": ["hillmix_site.permissions.ModelPermission"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    # Swagger UI from the installed sidecar package: the docs work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SERVE_PERMISSIONS": ["hillmix_site.permissions.CanUseApi"],
    "TITLE": "HILL-Mix API",
    "DESCRIPTION": "Studies, stimuli and human judgments of mixup images.",
    "VERSION": "0.1.0",
}

# --- Data quality flags (defaults; the study dashboard can override them) ------
HILLMIX_QUALITY = {
    "max_quiz_attempts": env.int("HILLMIX_MAX_QUIZ_ATTEMPTS", default=2),
    "min_median_rt_ms": env.float("HILLMIX_MIN_MEDIAN_RT_MS", default=1500.0),
    "max_repeat_disagreement": env.float("HILLMIX_MAX_REPEAT_DISAGREEMENT", default=0.2),
}

# --- Data beside the project -------------------------------------------------
SHARED_DATA_DIR = Path(env("HILLMIX_SHARED_DATA", default=str(BASE_DIR.parent / "shared" / "data")))

HILLMIX_CIFAR10H_PROBS = Path(
    env("HILLMIX_CIFAR10H_PROBS", default=str(SHARED_DATA_DIR / "cifar10h" / "cifar10h-probs.npy"))
)
# A training task is stopped after this many seconds (soft limit a minute earlier).
HILLMIX_TRAINING_TIME_LIMIT = env.int("HILLMIX_TRAINING_TIME_LIMIT", default=6 * 3600)
# Where a job whose device is "auto" trains on this worker: auto (CUDA when visible), cpu, cuda.
HILLMIX_TRAIN_DEVICE = env.str("HILLMIX_TRAIN_DEVICE", default="auto")

# --- Import folders and bounds ----------------------------------------------
# Server folders the admin may import datasets from (uploads need none); the
# import_dataset command, run from a shell on the server, is not limited to them.
HILLMIX_IMPORT_DIRS = [
    Path(p)
    for p in env.list(
        "HILLMIX_IMPORT_DIRS", default=[str(SHARED_DATA_DIR), str(BASE_DIR / "imports")]
    )
]
# What one import may hold and what one training job may ask for; above them the
# admin form and the API answer with an error naming the bound.
HILLMIX_LIMITS = {
    "max_images": env.int("HILLMIX_MAX_IMAGES", default=100_000),
    "max_image_pixels": env.int("HILLMIX_MAX_IMAGE_PIXELS", default=1024 * 1024),
    "max_import_bytes": env.int("HILLMIX_MAX_IMPORT_BYTES", default=512 * 1024 * 1024),
    "max_epochs": env.int("HILLMIX_MAX_EPOCHS", default=500),
    "max_seeds": env.int("HILLMIX_MAX_SEEDS", default=20),
    "min_batch_size": env.int("HILLMIX_MIN_BATCH_SIZE", default=8),
    "max_batch_size": env.int("HILLMIX_MAX_BATCH_SIZE", default=4096),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    # One line per task is noise for in-process tasks; workers log their own.
    "loggers": {
        "celery.app.trace": {"level": "WARNING"},
        "kombu.connection": {"level": "ERROR"},  # the in-memory broker has no hostname
        # Lockouts are warnings; each successful or failed login is not worth a line.
        "axes": {"level": "WARNING"},
        # Its request lines name Prolific submissions (recruiter ids): never logged.
        "httpx": {"level": "WARNING"},
    },
}

# Prolific (recruitment app): the API's base URL (tests point it at a local server),
# the lab's token from the environment, or the Fernet keys (newest first) under which
# a stored token is encrypted, and the client's request rate.
PROLIFIC_API_URL = env("PROLIFIC_API_URL", default="https://api.prolific.com/api/v1/")
PROLIFIC_API_TOKEN = env("PROLIFIC_API_TOKEN", default="")
PROLIFIC_TOKEN_KEYS = env.list("PROLIFIC_TOKEN_KEYS", default=[])
PROLIFIC_REQUESTS_PER_SECOND = env.float("PROLIFIC_REQUESTS_PER_SECOND", default=4.0)
