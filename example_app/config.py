"""Configuration of the demo: defaults, then the environment, then ``create_app(config)``.

Every ``TIERED_STATE_*`` setting of the extension is read from the environment variable
of the same name (:func:`~flask_tiered_state.settings.config_from_environment`, which
refuses a misspelt ``TIERED_STATE_*`` variable), so the same code runs on the embedded
defaults (nothing set) or on Redis, PostgreSQL and S3 (``make run-services`` sets these
for the servers of this machine)::

    TIERED_STATE_HOT_URL=redis://127.0.0.1:6379/0
    TIERED_STATE_WARM_URL=postgresql+psycopg://postgres@127.0.0.1:5432/credit
    TIERED_STATE_COLD_URL='s3://credit-archive/?endpoint_url=http://127.0.0.1:9000'

(the ``endpoint_url`` for MinIO or moto; leave it out for AWS). The ``flask`` command
also reads them from a ``.env`` file in the working directory (python-dotenv, as Flask
does).

``CREDIT_SESSION_TTL_SECONDS`` sets the lifetime of login sessions,
``CREDIT_API_TOKENS`` the access tokens (JSON, ``{"admin": "...", "viewer": "..."}``;
see :mod:`example_app.access`), ``CREDIT_CRM_URL`` where users' suspensions are sent
(:mod:`example_app.crm`; unset: nowhere) and ``FLASK_SECRET_KEY`` the secret key
(without it, a random key kept in ``instance/secret_key``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flask_tiered_state.errors import ConfigurationError
from flask_tiered_state.settings import TieredStateSettings, config_from_environment

__all__ = [
    "APP_KEYS",
    "DEFAULTS",
    "backends",
    "environment",
    "from_environment",
    "masked_url",
    "positive_int",
    "session_ttl",
]

#: The demo's defaults: the REST API and the dashboard on, sessions of 30 minutes, and
#: cached records read again after 5 seconds: on the embedded defaults there is no Redis
#: to tell the web server's cache what the dispatcher (another process) changed. No rate
#: limits: `make run` serves one person on 127.0.0.1 and does not install Flask-Limiter
#: (the ``ratelimit`` extra; set TIERED_STATE_RATE_LIMIT=true with it to try them).
DEFAULTS: dict[str, Any] = {
    "TIERED_STATE_API_PREFIX": "/api/state",
    "TIERED_STATE_RATE_LIMIT": False,
    "TIERED_STATE_DASHBOARD_PREFIX": "/dashboard",
    "TIERED_STATE_CACHE_TTL_SECONDS": 5,
    "CREDIT_SESSION_TTL_SECONDS": 1800,
    "CREDIT_SEED_USERS": 300,
    "CREDIT_SEED_TRANSACTIONS": 3000,
}

#: The app's own keys read from the environment (besides the extension's settings).
APP_KEYS = (
    "CREDIT_SESSION_TTL_SECONDS",
    "CREDIT_SEED_USERS",
    "CREDIT_SEED_TRANSACTIONS",
    "CREDIT_API_TOKENS",
    "CREDIT_CRM_URL",
)


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """The configuration keys set in ``environ``: every extension setting, the app's
    ``CREDIT_*`` keys and ``FLASK_SECRET_KEY``.

    :raises ConfigurationError: a ``TIERED_STATE_*`` variable is not a setting.
    """
    config = config_from_environment(environ)
    for key in APP_KEYS:
        if key in environ:
            config[key] = environ[key]
    if "FLASK_SECRET_KEY" in environ:
        config["SECRET_KEY"] = environ["FLASK_SECRET_KEY"]
    return config


def session_ttl(config: Mapping[str, Any]) -> int:
    """``CREDIT_SESSION_TTL_SECONDS`` as a positive integer."""
    return positive_int(config, "CREDIT_SESSION_TTL_SECONDS")


def positive_int(config: Mapping[str, Any], key: str) -> int:
    """``config[key]`` as a positive integer (digits in a string accepted).

    :raises ConfigurationError: naming the key and what is expected.
    """
    value = config.get(key)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            f"{key} is {value!r}; expected a positive whole number.", details={"key": key}
        )
    return value


def environment() -> dict[str, Any]:
    """:func:`from_environment` of this process's environment."""
    return from_environment(os.environ)


#: Query parameters of a backend URL whose values are secrets.
_SECRET_PARAMETER_RE = re.compile(r"secret|password|passwd|token|key", re.IGNORECASE)


def masked_url(url: str) -> str:
    """``url`` with its password (and query parameters named like secrets) as ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:***@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        masked = [(k, "***" if _SECRET_PARAMETER_RE.search(k) else v) for k, v in pairs]
        query = urlencode(masked, safe="/:*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is under it (``./instance/...``)."""
    try:
        return f"./{path.relative_to(Path.cwd())}"
    except ValueError:
        return str(path)


def backends(settings: TieredStateSettings, local_dir: Path) -> dict[str, str]:
    """What each tier (``hot``, ``warm``, ``cold``) runs on: its URL with secrets masked,
    or ``embedded (...)`` and where for a tier left on its embedded default."""
    hot = settings.hot_url
    return {
        "hot": "embedded (process memory)"
        if hot == "memory://"
        else f"{masked_url(hot)} (keys {settings.key_prefix}*)",
        "warm": masked_url(settings.warm_url)
        if settings.warm_url
        else f"embedded (SQLite file {_shown(local_dir / 'tiered_state.sqlite3')})",
        "cold": masked_url(settings.cold_url)
        if settings.cold_url
        else f"embedded (directory {_shown(local_dir / 'cold')}/)",
    }
