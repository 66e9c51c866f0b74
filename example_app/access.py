"""Who may use the demo: a token hook for ``TIERED_STATE_ACCESS_CONTROL``.

Two tokens: ``admin`` may do everything, ``viewer`` may only read (GET). A client sends
one as ``Authorization: Bearer <token>``; a browser asks for it itself (HTTP Basic: any
user name, the token as password), which is how the dashboard and the overview page
are opened. The hook guards the extension's REST API and dashboard, this app's own
``/api/*`` views, ``/`` and the pages under ``/app``; the actor it names (``admin``,
``viewer``) is the one recorded in the history, whatever the client says.

The pages (:mod:`example_app.web`) have a login form instead: a token pasted there is
remembered in the Flask session as its SHA-256 digest (:meth:`TokenAccess.remember`;
the token itself is never put in the cookie, which is signed, not encrypted). That
session counts for the browser's pages only -- ``/app``, ``/`` and the dashboard, whose
forms are CSRF-protected -- never under ``/api``, where a request must carry its token
itself as before.

The actors are also the roles of a role map (:data:`ROLE_PERMISSIONS`), so that
``flask state --as viewer ...`` and ``manager.acting_as("viewer")`` keep a command to what
the viewer token may do over HTTP: read.

The tokens come from ``CREDIT_API_TOKENS`` (``{"admin": "...", "viewer": "..."}``, in the
configuration or as JSON in the environment variable), else from ``api_tokens.json`` in
the instance folder, created with random tokens (mode 0600) the first time the app is
built; ``make run`` prints them, and so
does ``flask --app example_app:create_app api-tokens``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Request, session
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Unauthorized

from flask_tiered_state.errors import AccessDeniedError, ConfigurationError
from flask_tiered_state.roles import RoleBasedAccess

from .http import API_PREFIX

__all__ = [
    "ACTORS",
    "ROLE_PERMISSIONS",
    "SECRET_KEY_FILE",
    "SESSION_KEY",
    "TOKENS_FILE",
    "TokenAccess",
    "load_secret_key",
    "load_tokens",
]

#: The actors a token may stand for, and whether they may change anything.
ACTORS = {"admin": True, "viewer": False}
#: What each actor may do as a role of ``flask state --as`` and ``acting_as``: the admin
#: everything, the viewer what its token may do over HTTP (read states, their history,
#: the dashboard's pages, the operations' lists and checks).
ROLE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "admin": ("*",),
    "viewer": (
        "states.list", "states.read", "states.history", "states.diff", "health", "openapi",
        "dashboard.index", "dashboard.states", "dashboard.state", "dashboard.events",
        "dashboard.tiers", "dashboard.health", "dashboard.backups", "stats", "events.list",
        "timers.list", "audit.verify", "backups.list", "backups.verify", "checkpoints.list",
        "checkpoints.verify",
    ),
}  # fmt: skip
#: The tokens' file in the instance folder.
TOKENS_FILE = "api_tokens.json"
#: The secret key's file in the instance folder (when no SECRET_KEY is configured).
SECRET_KEY_FILE = "secret_key"
#: The Flask session's key holding the digest of the token given to the login page.
SESSION_KEY = "credit_token_sha256"
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


def _create_private_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only, unless it exists (another
    process that created it just now wins: its file is read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)


def load_secret_key(instance_path: str) -> str:
    """The app's secret key (it signs the session cookie and the CSRF tokens): the
    instance folder's file, created with a new random key when missing, so that no two
    installations share one and a published default never signs anything."""
    path = Path(instance_path) / SECRET_KEY_FILE
    if not path.exists():
        _create_private_file(path, secrets.token_hex(32))
    key = path.read_text(encoding="utf-8").strip()
    if len(key) < 32:
        raise ConfigurationError(
            f"{path} holds a secret key of {len(key)} characters; expected at least 32. "
            "Delete the file for a new random key, or set FLASK_SECRET_KEY."
        )
    return key


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
        tokens = {actor: secrets.token_urlsafe(24) for actor in ACTORS}
        _create_private_file(path, json.dumps(tokens, indent=2))
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigurationError(f"{path} is not JSON ({exc}); delete it for new tokens.") from exc
    return _check(stored, str(path))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _is_api(path: str) -> bool:
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


class TokenAccess:
    """The access-control hook: ``hook(request, action)`` -> the actor, or a refusal; and
    the role map of the actors (:data:`ROLE_PERMISSIONS`), which the extension gives the
    manager for ``acting_as`` and ``flask state --as``.

    :param tokens: the token of each actor (:data:`ACTORS`).
    """

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._tokens = tuple((actor, _digest(token)) for actor, token in tokens.items())
        self._roles = RoleBasedAccess(ROLE_PERMISSIONS, identity=self.actor_of)

    # -- the role map (flask_tiered_state.domain.acting.RoleMap) ---------------------------

    @property
    def role_names(self) -> tuple[str, ...]:
        """The actors, as roles."""
        return self._roles.role_names

    def allows(self, role: str, action: str) -> bool:
        """Whether the actor ``role`` may do ``action`` under ``acting_as``."""
        return self._roles.allows(role, action)

    def permissions(self, role: str) -> tuple[str, ...]:
        """The permissions of the actor ``role`` (:data:`ROLE_PERMISSIONS`)."""
        return self._roles.permissions(role)

    def __repr__(self) -> str:  # shown by `flask state stats`: never the tokens
        return f"<TokenAccess of {', '.join(actor for actor, _ in self._tokens)}>"

    def _actor_of_digest(self, given: str) -> str | None:
        found = None
        for actor, digest in self._tokens:  # compare with every token, in constant time
            if hmac.compare_digest(digest, given):
                found = actor
        return found

    def actor_of_token(self, token: str) -> str | None:
        """The actor of ``token``, or None when it is not one of the demo's tokens."""
        return self._actor_of_digest(_digest(token)) if token else None

    def remember(self, token: str) -> str | None:
        """Log the browser in: keep the digest of ``token`` in the Flask session when it
        is a token of the demo; returns its actor (None: not a token, nothing kept)."""
        actor = self.actor_of_token(token)
        if actor is not None:
            session[SESSION_KEY] = _digest(token)
        return actor

    def actor_of(self, request: Request) -> str | None:
        """The actor whose token the request carries (Bearer, or Basic's password), or,
        outside ``/api``, the one the login page remembered in the session."""
        given: str | None = None
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            given = value.strip()
        elif request.authorization is not None and request.authorization.type == "basic":
            given = request.authorization.password
        if given:
            return self.actor_of_token(given)
        if _is_api(request.path):
            return None
        remembered = session.get(SESSION_KEY)
        return self._actor_of_digest(remembered) if isinstance(remembered, str) else None

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
