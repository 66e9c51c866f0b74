"""The demo's CRM sync: when ``CREDIT_CRM_URL`` is set, every suspension and resumption
of a user is POSTed there as JSON by an asynchronous callback, delivered at least once by
``flask state dispatch``.

The request carries the event's id as its ``Idempotency-Key``, so a CRM that keeps the
keys it has seen applies a redelivered event once. A CRM that does not answer makes the
delivery fail: it is tried again later, with backoff, and is *dead* after
:data:`MAX_ATTEMPTS` failures, waiting for ``flask state events retry`` -- what
``flask state events`` lists (docs/cli.rst shows it with a CRM that is down).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from flask_tiered_state.errors import ConfigurationError

__all__ = ["CRM_KEY", "MAX_ATTEMPTS", "TIMEOUT_SECONDS", "crm_url", "push_user_change"]

#: The callback's key in the outbox (the same in every process).
CRM_KEY = "credit.crm_sync"
#: Attempts before a delivery to the CRM is dead.
MAX_ATTEMPTS = 5
#: How long one request may take.
TIMEOUT_SECONDS = 5.0


def crm_url(config: Mapping[str, Any]) -> str | None:
    """``CREDIT_CRM_URL``: an http(s) URL, or None (no CRM sync).

    :raises ConfigurationError: naming the key, its value and what is expected.
    """
    value = config.get("CREDIT_CRM_URL")
    if value is None or value == "":
        return None
    if isinstance(value, str):
        parts = urlsplit(value)
        if parts.scheme in ("http", "https") and parts.hostname:
            return value
    raise ConfigurationError(
        f"CREDIT_CRM_URL is {value!r}; expected an http:// or https:// URL, or nothing "
        "(no CRM sync).",
        details={"key": "CREDIT_CRM_URL"},
    )


def push_user_change(url: str, user: Mapping[str, Any], transition: str, event_id: str) -> None:
    """POST a user's new status to the CRM.

    :raises OSError: the CRM did not answer, or answered an HTTP error (urllib's
        ``URLError`` / ``HTTPError``): the delivery fails and is tried again.
    """
    body = {
        "event_id": event_id,
        "user_id": user["state_id"],
        "status": user["status"],
        "transition": transition,
        "version": user["version"],
    }
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json", "Idempotency-Key": event_id},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
        response.read()
