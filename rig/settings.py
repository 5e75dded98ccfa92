"""Settings for rig, read from the environment (see README "Configuration").

Defaults make `make up` work on a fresh machine; production must set DEBUG=0 and a real
SECRET_KEY, and the process refuses to start otherwise.
"""

from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from agents.node.env import env_bool, env_int, env_list, env_str
from agents.node.protocol import REPORT_MAX_BYTES
from rig.env import database_from_url
from rig.logs import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent
RUN_DIR = Path(env_str("RIG_RUN_DIR", str(BASE_DIR / ".run")))

_DEV_SECRET_KEY = "dev-only-insecure-secret-key-change-me"  # noqa: S105 - refused when DEBUG=0
# Production unless told otherwise: a forgotten variable must never mean the development key,
# every host, or private destinations. `make up` and `make test` set DEBUG=1 themselves.
DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY", _DEV_SECRET_KEY)
if not DEBUG and (
    SECRET_KEY == _DEV_SECRET_KEY or len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5
):
    raise ImproperlyConfigured(
        "SECRET_KEY must be set when DEBUG=0: at least 50 characters, not the development key "
        "(python -c 'import secrets; print(secrets.token_urlsafe(48))')"
    )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["*"] if DEBUG else [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "accounts",
    "streams",
    "agents",
    "webhooks",
    "dashboard",
]

MIDDLEWARE = [
    "rig.logs.RequestLogMiddleware",
    # Preflights are answered here, before size checks, authentication or any view.
    "corsheaders.middleware.CorsMiddleware",
    "rig.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Django's own, passed by on the routes only machines call (rig.middleware.MACHINE_PATHS).
    "rig.middleware.BrowserSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "rig.middleware.BrowserAuthenticationMiddleware",
    "rig.middleware.BrowserMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "rig.urls"
WSGI_APPLICATION = "rig.wsgi.application"
APPEND_SLASH = False  # routes accept both forms themselves; a redirected POST loses its body

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {
    "default": database_from_url(env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"))
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
# Throttle counters are shared in Redis (rig.cache), so every worker and host counts against one
# limit; development (DEBUG) keeps a per-process memory cache unless RIG_CACHE_REDIS=1.
CACHES = {
    "default": (
        {
            "BACKEND": "rig.cache.ResilientRedisCache",
            "LOCATION": env_str("RIG_CACHE_URL", REDIS_URL),
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
        if env_bool("RIG_CACHE_REDIS", not DEBUG)
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 8},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
# The dashboard's and Swagger UI's files are served by rig itself (whitenoise), straight from
# the apps' static folders: no collectstatic step, no CDN.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
STATIC_ROOT = env_str("RIG_STATIC_ROOT", "") or None  # only for an optional collectstatic

# The dashboard (dashboard/) signs in with a session and CSRF; the JSON API keeps JWT.
LOGIN_URL = "/app/login"
LOGIN_REDIRECT_URL = "/app/"
CSRF_FAILURE_VIEW = "dashboard.views.base.csrf_failure"
SESSION_COOKIE_AGE = env_int("RIG_SESSION_DAYS", 14) * 24 * 3600

# HTTPS in production (behind a TLS proxy: RIG_TRUSTED_PROXIES > 0 trusts its
# X-Forwarded-Proto). nginx-rtmp's hooks and the agents' calls stay plain HTTP on the node's
# network (nginx-rtmp cannot do TLS), so their paths are never redirected: a redirected hook
# is a refused publish.
SECURE_SSL_REDIRECT = env_bool("RIG_SSL_REDIRECT", not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^agents/", r"^healthz/?$", r"^readyz/?$", r"^metrics/?$"]
SECURE_HSTS_SECONDS = env_int("RIG_HSTS_SECONDS", 0 if DEBUG else 31_536_000)
# The control plane's own host and its subdomains (never the parent domain).
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("RIG_HSTS_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("RIG_HSTS_PRELOAD", True)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = not DEBUG
RIG_TRUSTED_PROXIES = env_int("RIG_TRUSTED_PROXIES", 0)  # reverse proxies in front of rig
if RIG_TRUSTED_PROXIES > 0:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
X_FRAME_OPTIONS = "DENY"

# CORS for API clients served from other origins (a dashboard elsewhere): the listed origins
# may call the API with a bearer token. Empty: none. Pages under /app/ and /admin/ never.
CORS_ALLOWED_ORIGINS = env_list("RIG_CORS_ORIGINS", [])
CORS_URLS_REGEX = r"^/(?!app/|admin/).*$"
CORS_ALLOW_METHODS = ["GET", "POST", "PATCH", "DELETE"]
CORS_ALLOW_HEADERS = ["authorization", "content-type"]
CORS_EXPOSE_HEADERS = ["Retry-After", "X-Request-ID"]
CORS_PREFLIGHT_MAX_AGE = env_int("RIG_CORS_MAX_AGE_S", 3600)

# Bodies larger than this are refused with 413 before any parsing.
RIG_MAX_BODY_BYTES = env_int("RIG_MAX_BODY_BYTES", 64 * 1024)
# rig.middleware enforces each route's cap first; a node's status report may be larger.
DATA_UPLOAD_MAX_MEMORY_SIZE = max(RIG_MAX_BODY_BYTES, REPORT_MAX_BYTES)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.UserJWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rig.api.SafeJSONParser"],
    # Answers are ASCII JSON (\uXXXX escapes): an echoed lone surrogate cannot break them.
    "UNICODE_JSON": False,
    # Clients are told apart by REMOTE_ADDR, or by the X-Forwarded-For entry the last
    # RIG_TRUSTED_PROXIES proxies added: a forged header is no new identity for the throttles.
    "NUM_PROXIES": RIG_TRUSTED_PROXIES,
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "rig.api.JSONOnlyNegotiation",
    "DEFAULT_METADATA_CLASS": None,
    "EXCEPTION_HANDLER": "rig.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "rig.schema.RigAutoSchema",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_THROTTLE_RATES": {
        "login": env_str("RIG_THROTTLE_LOGIN", "10/min"),
        "login_account": env_str("RIG_THROTTLE_LOGIN_ACCOUNT", "30/hour"),
        "password": env_str("RIG_THROTTLE_PASSWORD", "10/min"),
        "signup": env_str("RIG_THROTTLE_SIGNUP", "5/min"),
        "webhook_test": env_str("RIG_THROTTLE_WEBHOOK_TEST", "10/min"),
    },
}

SPECTACULAR_SETTINGS = {
    "TITLE": "rig HTTP API",
    "VERSION": "1",
    "DESCRIPTION": (
        "Multi-tenant live restreaming: one RTMP ingest, fanned out to every destination.\n\n"
        "JSON in, JSON out. Every success is HTTP 200 with the envelope "
        "`{message, payload}`; the payload's shape is documented per operation. Every error is "
        "`{message, errorCode, details}` (the `Error` schema lists the codes). Paths work with "
        "and without a trailing slash. Users authenticate with `Authorization: Bearer <JWT>` "
        "(`jwtAuth`, from `/accounts/auth/local`); ingest nodes with their node token "
        "(`nodeToken`)."
    ),
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",  # assets served by rig itself: /docs works without internet
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No call to the public validator service; keep the token across reloads of /docs.
    "SWAGGER_UI_SETTINGS": {
        "deepLinking": True,
        "persistAuthorization": True,
        "validatorUrl": None,
    },
    "COMPONENT_SPLIT_PATCH": False,  # PATCH bodies are documented with their real required fields
    "PREPROCESSING_HOOKS": ["rig.schema.clean_routes"],
    # A relay's state is in several payloads (provisionStatus' items, the relay API): one name.
    "ENUM_NAME_OVERRIDES": {
        "RelayStateEnum": "agents.node.protocol.RELAY_STATES",
        "ReportedRelayStateEnum": "agents.node.protocol.REPORTED_STATES",
        "ServiceEnum": "streams.models.Service",
        "RecordingStateEnum": "streams.models.Recording.State",
    },
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env_int("RIG_JWT_ACCESS_MINUTES", 60)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env_int("RIG_JWT_REFRESH_DAYS", 14)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "SIGNING_KEY": env_str("RIG_JWT_SIGNING_KEY", SECRET_KEY),
    "USER_ID_FIELD": "id",
    "USER_ID_CLAIM": "sub",
}

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_TASK_ALWAYS_EAGER = env_bool("RIG_CELERY_EAGER", False)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = env_str("RIG_CELERY_QUEUE", "rig")
# Webhook deliveries wait on other people's servers: their own queue and worker, so a slow
# receiver never holds up a node nudge or the node watch.
RIG_WEBHOOK_QUEUE = env_str("RIG_WEBHOOK_QUEUE", f"{CELERY_TASK_DEFAULT_QUEUE}-webhooks")
CELERY_TASK_ROUTES = {"webhooks.tasks.*": {"queue": RIG_WEBHOOK_QUEUE}}
# Tasks are hints: with the broker down, give up rather than retry. Requests never wait for the
# broker anyway: rig.enqueue sends from a thread of its own (inline with RIG_ENQUEUE_INLINE).
CELERY_TASK_PUBLISH_RETRY = False
RIG_ENQUEUE_INLINE = env_bool("RIG_ENQUEUE_INLINE", False)
# Node heartbeats: agents report every 2 s; a node silent for RIG_NODE_STALE_S is lost (its
# sessions end), checked every RIG_NODE_CHECK_S by `celery beat`.
RIG_NODE_STALE_S = env_int("RIG_NODE_STALE_S", 10)
RIG_NODE_CHECK_S = env_int("RIG_NODE_CHECK_S", 5)
# Where the nodes reach the API: the node watch declares nobody lost while it does not answer.
RIG_API_URL = env_str("RIG_API_URL", "")
# A live stream's relay states are shown as `unknown` once its node is silent this long.
RIG_RELAY_REPORT_FRESH_S = env_int("RIG_RELAY_REPORT_FRESH_S", 5)
CELERY_BEAT_SCHEDULE = {
    "nodes-check": {
        "task": "agents.tasks.nodes_check",
        "schedule": float(RIG_NODE_CHECK_S),
        "options": {"expires": float(RIG_NODE_CHECK_S)},  # a backlog of checks is pointless
    },
    # Recordings past RIG_RECORDING_RETENTION_DAYS are deleted, file and row.
    "recordings-expire": {
        "task": "agents.tasks.recordings_expire",
        "schedule": 3600.0,
        "options": {"expires": 3600.0},
    },
    # Webhook deliveries that were never enqueued (broker down) or whose retry is due.
    "webhook-deliveries-sweep": {
        "task": "webhooks.tasks.delivery_sweep",
        "schedule": 60.0,
        "options": {"expires": 60.0},
    },
}

# Fernet keys for secrets at rest (rig.crypto), newest first; empty: one derived from SECRET_KEY.
RIG_ENCRYPTION_KEYS = [
    k.strip() for k in env_str("RIG_ENCRYPTION_KEYS", "").split(",") if k.strip()
]

# Where OBS connects when no ingest node has been chosen yet (a node's own URL wins).
RIG_INGEST_URL = env_str("RIG_INGEST_URL", "rtmp://127.0.0.1:1935/live")

# Ingest bases of the supported platforms: settings so tests can point them at loopback.
RIG_SERVICE_INGEST = {
    "YouTube": env_str("RIG_YOUTUBE_INGEST", "rtmps://a.rtmps.youtube.com:443/live2"),
    "Twitch": env_str("RIG_TWITCH_INGEST", "rtmp://live.twitch.tv/app"),
    "Facebook": env_str("RIG_FACEBOOK_INGEST", "rtmps://live-api-s.facebook.com:443/rtmp"),
    "Kick": env_str(
        "RIG_KICK_INGEST", "rtmps://fa723fc1b171.global-contribute.live-video.net:443/app"
    ),
}
# Custom destinations and webhook URLs pointing at loopback/private/link-local hosts (SSRF
# guard, rig/ssrf.py); dev allows.
RIG_ALLOW_PRIVATE_DESTINATIONS = env_bool("RIG_ALLOW_PRIVATE_DESTINATIONS", DEBUG)
# How long checking a user's URL may wait for DNS.
RIG_DNS_TIMEOUT_S = float(env_int("RIG_DNS_TIMEOUT_MS", 2000)) / 1000
RIG_MAX_DESTINATIONS_PER_STREAM = env_int("RIG_MAX_DESTINATIONS_PER_STREAM", 20)
RIG_MAX_STREAMS_PER_USER = env_int("RIG_MAX_STREAMS_PER_USER", 50)
# Webhooks: endpoints per user, deliveries kept per endpoint, and how a delivery is attempted
# (timeout; backoff base * 2^(attempt-1) with jitter, capped; attempts before it is failed).
RIG_MAX_WEBHOOKS_PER_USER = env_int("RIG_MAX_WEBHOOKS_PER_USER", 10)
RIG_WEBHOOK_DELIVERIES_KEPT = env_int("RIG_WEBHOOK_DELIVERIES_KEPT", 50)
RIG_WEBHOOK_TIMEOUT_MS = env_int("RIG_WEBHOOK_TIMEOUT_MS", 5000)
RIG_WEBHOOK_BACKOFF_MS = env_int("RIG_WEBHOOK_BACKOFF_MS", 2000)
RIG_WEBHOOK_BACKOFF_MAX_S = env_int("RIG_WEBHOOK_BACKOFF_MAX_S", 600)
RIG_WEBHOOK_MAX_ATTEMPTS = env_int("RIG_WEBHOOK_MAX_ATTEMPTS", 6)
# How long a worker waits for a node's agent to accept a nudge (the agent's poll is the backstop).
RIG_NUDGE_TIMEOUT_S = float(env_int("RIG_NUDGE_TIMEOUT_MS", 2000)) / 1000
# Recordings: kept this many days (a beat task deletes older ones), and each user's storage.
RIG_RECORDING_RETENTION_DAYS = env_int("RIG_RECORDING_RETENTION_DAYS", 30)
RIG_RECORDING_QUOTA_MB = env_int("RIG_RECORDING_QUOTA_MB", 10240)
# How long GET /streams/{id}/snapshot waits for the node's picture (it decodes a keyframe).
RIG_SNAPSHOT_TIMEOUT_S = float(env_int("RIG_SNAPSHOT_TIMEOUT_MS", 8000)) / 1000

# Plain text with the request id for development; RIG_LOG_FORMAT=json for one object per line.
LOGGING = logging_config(
    level=env_str("RIG_LOG_LEVEL", "INFO"), fmt=env_str("RIG_LOG_FORMAT", "plain")
)
# A live session its node has not vouched for (agents report their publishers every 2 s) for
# this long is over: ended if the node says the publisher is gone, else open to a new publish.
RIG_PUBLISHER_STALE_S = env_int("RIG_PUBLISHER_STALE_S", 10)
# Publish sessions each stream keeps as history (GET /streams/{id}/sessions).
RIG_SESSIONS_KEPT = env_int("RIG_SESSIONS_KEPT", 200)
RIG_SESSIONS_PAGE = 50

# /metrics is open to loopback clients; with a token set, it needs `Authorization: Bearer <it>`.
RIG_METRICS_TOKEN = env_str("RIG_METRICS_TOKEN", "")
# Seconds /readyz waits for the broker's Redis before calling it down.
RIG_READYZ_TIMEOUT_S = float(env_int("RIG_READYZ_TIMEOUT_MS", 1000)) / 1000
