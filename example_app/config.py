"""Configuration of the demo: defaults, then the environment, then ``create_app(config)``.

Every ``TIERED_STATE_*`` setting of the extension is read from an environment variable
of the same name, so the same code runs on the embedded defaults (nothing set) or on
Redis, PostgreSQL and S3::

    TIERED_STATE_HOT_URL=redis://127.0.0.1:6379/0
    TIERED_STATE_WARM_URL=postgresql+psycopg://postgres@127.0.0.1:5432/credit
    TIERED_STATE_COLD_URL='s3://credit-archive/?endpoint_url=http://127.0.0.1:9000'

(the ``endpoint_url`` for MinIO or moto; leave it out for AWS).

(Flask's ``from_prefixed_env`` is not used: it strips the prefix and JSON-decodes the
values, while the extension's settings keep the prefix and parse text themselves.)
``CREDIT_SESSION_TTL_SECONDS`` sets the lifetime of login sessions,
``CREDIT_API_TOKENS`` the access tokens (JSON, ``{"admin": "...", "viewer": "..."}``;
see :mod:`example_app.access`) and ``FLASK_SECRET_KEY`` the secret key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask_tiered_state.errors import ConfigurationError
from flask_tiered_state.settings import SETTINGS

__all__ = ["DEFAULTS", "environment", "from_environment", "positive_int", "session_ttl"]

#: The demo's defaults: the REST API and the dashboard on, sessions of 30 minutes, and
#: cached records read again after 5 seconds: on the embedded defaults there is no Redis
#: to tell the web server's cache what the dispatcher (another process) changed.
DEFAULTS: dict[str, Any] = {
    "SECRET_KEY": "credit-system-demo-only",
    "TIERED_STATE_API_PREFIX": "/api/state",
    "TIERED_STATE_DASHBOARD_PREFIX": "/dashboard",
    "TIERED_STATE_CACHE_TTL_SECONDS": 5,
    "CREDIT_SESSION_TTL_SECONDS": 1800,
    "CREDIT_SEED_USERS": 300,
    "CREDIT_SEED_TRANSACTIONS": 3000,
}

_APP_KEYS = (
    "CREDIT_SESSION_TTL_SECONDS",
    "CREDIT_SEED_USERS",
    "CREDIT_SEED_TRANSACTIONS",
    "CREDIT_API_TOKENS",
)


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """The configuration keys set in ``environ``: every extension setting, the app's
    ``CREDIT_*`` keys and ``FLASK_SECRET_KEY``."""
    config: dict[str, Any] = {}
    for key in (*(setting.key for setting in SETTINGS), *_APP_KEYS):
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
