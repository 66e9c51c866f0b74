"""Who may use the demo: a token hook for ``TIERED_STATE_ACCESS_CONTROL``.

Two tokens: ``admin`` may do everything, ``viewer`` may only read (GET). A client sends
one as ``Authorization: Bearer <token>``; a browser asks for it itself (HTTP Basic: any
user name, the token as password), which is how the dashboard and the overview page
are opened. The hook guards the extension's REST API and dashboard, this app's own
``/api/*`` views and ``/``; the actor it names (``admin``, ``viewer``) is the one
recorded in the history, whatever the client says.

The tokens come from ``CREDIT_API_TOKENS`` (``{"admin": "...", "viewer": "..."}``, in the
configuration or as JSON in the environment variable), else from ``api_tokens.json`` in
the instance folder, created with random tokens (mode 0600) the first time the app is
built; ``make run`` prints them, and so
does ``flask --app example_app:create_app api-tokens``.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Request
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Unauthorized

from flask_tiered_state.errors import AccessDeniedError, ConfigurationError

__all__ = ["ACTORS", "TOKENS_FILE", "TokenAccess", "load_tokens"]

#: The actors a token may stand for, and whether they may change anything.
ACTORS = {"admin": True, "viewer": False}
#: The tokens' file in the instance folder.
TOKENS_FILE = "api_tokens.json"
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_REALM = "Flask Credit System"


def _check(tokens: object, where: str) -> dict[str, str]:
    if (
        not isinstance(tokens, Mapping)
        or not tokens
        or not all(
            actor in ACTORS and isinstance(token, str) and len(token) >= 16
            for actor, token in tokens.items()
        )
    ):
        raise ConfigurationError(
            f"{where} must map actors ({', '.join(ACTORS)}) to tokens of at least 16 characters."
        )
    return dict(tokens)


def load_tokens(config: Mapping[str, Any], instance_path: str) -> dict[str, str]:
    """The tokens by actor: ``CREDIT_API_TOKENS``, else the instance folder's file (created
    with new random tokens, readable by its owner only, when missing).

    :raises ConfigurationError: the tokens are not a mapping of known actors to tokens.
    """
    configured = config.get("CREDIT_API_TOKENS")
    if isinstance(configured, str):  # from the environment; not JSON is refused below
        with contextlib.suppress(ValueError):
            configured = json.loads(configured)
    if configured is not None:
        return _check(configured, "CREDIT_API_TOKENS")
    path = Path(instance_path) / TOKENS_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tokens = {actor: secrets.token_urlsafe(24) for actor in ACTORS}
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it just now: read theirs
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(tokens, file, indent=2)
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigurationError(f"{path} is not JSON ({exc}); delete it for new tokens.") from exc
    return _check(stored, str(path))


class TokenAccess:
    """The access-control hook: ``hook(request, action)`` -> the actor, or a refusal.

    :param tokens: the token of each actor (:data:`ACTORS`).
    """

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._tokens = tuple((actor, token.encode()) for actor, token in tokens.items())

    def __repr__(self) -> str:  # shown by `flask state stats`: never the tokens
        return f"<TokenAccess of {', '.join(actor for actor, _ in self._tokens)}>"

    def actor_of(self, request: Request) -> str | None:
        """The actor whose token the request carries (Bearer, or Basic's password)."""
        given: str | None = None
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            given = value.strip()
        elif request.authorization is not None and request.authorization.type == "basic":
            given = request.authorization.password
        if not given:
            return None
        found = None
        for actor, token in self._tokens:  # compare with every token, in constant time
            if hmac.compare_digest(token, given.encode()):
                found = actor
        return found

    def __call__(self, request: Request, action: str) -> str:
        actor = self.actor_of(request)
        if actor is None:
            raise Unauthorized(
                "Send a token of the demo: 'Authorization: Bearer <token>' (make run prints "
                "them; so does 'flask --app example_app:create_app api-tokens').",
                www_authenticate=WWWAuthenticate("basic", {"realm": _REALM}),
            )
        if not ACTORS[actor] and request.method not in _READ_METHODS:
            raise AccessDeniedError(
                f"The {actor} token may only read; {action!r} changes states. Use the admin token.",
                details={"action": action, "actor": actor},
            )
        return actor
