"""Role-based access: a ready-made access-control hook, and the role map of ``acting_as``.

:class:`RoleBasedAccess` maps role names to the actions they may do -- action names
(:data:`KNOWN_ACTIONS`) or patterns with ``*`` -- and finds who sends a request with an
*identity source*: a header set by an authenticating proxy, Flask-Login's
``current_user``, or a callable of your own::

    access = RoleBasedAccess(
        {"support": ["states.read", "states.history"], "ops": ["*"]},
        identity="header:X-Roles",
    )
    app.config["TIERED_STATE_ACCESS_CONTROL"] = access

As the hook, it answers the actor (recorded in history) when one of the identity's roles
allows the action, False (403) when none does, and raises werkzeug's ``Unauthorized``
(401) when the request carries no identity. The extension also gives it to the app's
manager, so ``with manager.acting_as("support"):`` and ``flask state --as support ...``
check the same map (see :mod:`flask_tiered_state.domain.acting`).
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flask import Request
from werkzeug.exceptions import Unauthorized

from .access import API_ACTIONS, TRANSITION_ACTION, TRANSITION_ACTIONS
from .api.openapi import SECURITY_SCHEMES_ATTRIBUTE
from .dashboard import DASHBOARD_ACTIONS
from .domain.acting import NON_HTTP_ACTIONS
from .errors import ConfigurationError

__all__ = [
    "HTTP_ACTIONS",
    "KNOWN_ACTIONS",
    "CurrentUserIdentity",
    "HeaderIdentity",
    "Identity",
    "IdentitySource",
    "RoleBasedAccess",
]

#: The actions the REST API and the dashboard ask the hook about.
HTTP_ACTIONS: tuple[str, ...] = tuple(dict.fromkeys((*API_ACTIONS, *DASHBOARD_ACTIONS.values())))
#: Every action a role map may name: :data:`HTTP_ACTIONS`, then those only the manager
#: and the ``flask state`` commands check (``states.erase``, ``stats``, ``events.list``,
#: ...; :data:`~flask_tiered_state.domain.acting.NON_HTTP_ACTIONS`).
KNOWN_ACTIONS: tuple[str, ...] = tuple(dict.fromkeys((*HTTP_ACTIONS, *NON_HTTP_ACTIONS)))

_ROLE_NAME = re.compile(r"[A-Za-z0-9_.:@-]{1,100}")
_ACTION = re.compile(r"[A-Za-z0-9_.:*-]{1,200}")
_SEPARATORS = re.compile(r"[\s,]+")


class Identity:
    """Who sends a request: the actor recorded in history, and the role names.

    :param actor: a non-empty name (a user id, an e-mail address, a service name).
    :param roles: role names (one name may be given as a string); names the role map
        does not have grant nothing.
    :raises ConfigurationError: an empty actor, or roles that are not strings.
    """

    __slots__ = ("actor", "roles")

    def __init__(self, actor: str, roles: Iterable[str] | str = ()) -> None:
        if not isinstance(actor, str) or not actor:
            raise ConfigurationError(f"An Identity's actor is a non-empty string, not {actor!r}.")
        given: object = (roles,) if isinstance(roles, str) else roles
        names = tuple(given) if isinstance(given, Iterable) else None
        if names is None or not all(isinstance(n, str) for n in names):
            raise ConfigurationError(
                f"An Identity's roles are role names (strings), not {roles!r}."
            )
        self.actor: str = actor
        self.roles: tuple[str, ...] = names

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Identity):
            return NotImplemented
        return (self.actor, self.roles) == (other.actor, other.roles)

    def __hash__(self) -> int:
        return hash((self.actor, self.roles))

    def __repr__(self) -> str:
        return f"Identity({self.actor!r}, {self.roles!r})"


#: ``identity(request) -> Identity | str | None``: a string is one role name, recorded
#: as the actor too; None means the request carries no identity (401).
IdentitySource = Callable[[Request], Identity | str | None]


class HeaderIdentity:
    """The roles a trusted proxy names in a request header (``X-Roles: support, billing``:
    separated by commas or spaces), and the actor in another header or, without one, the
    roles themselves. Only behind a proxy that authenticates every request and sets (or
    removes) these headers: any client can send them.

    :param header: the header naming the roles.
    :param actor_header: the header naming the user, recorded as the actor; when given,
        a request without it carries no identity.
    """

    def __init__(self, header: str = "X-Roles", *, actor_header: str | None = None) -> None:
        for what, value in (("header", header), ("actor_header", actor_header)):
            if value is not None and (
                not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9-]{1,100}", value)
            ):
                raise ConfigurationError(
                    f"HeaderIdentity's {what} is a header name (letters, digits and -), "
                    f"not {value!r}."
                )
        self.header = header
        self.actor_header = actor_header
        needed = (
            f"the {header} header is" if actor_header is None
            else f"the {header} or {actor_header} header is"
        )  # fmt: skip
        #: The 401's message.
        self.missing_message = (
            f"The request carries no identity: {needed} missing (the authenticating proxy "
            "in front of the app sets it)."
        )
        #: Declared in the OpenAPI document (see :mod:`flask_tiered_state.api.openapi`).
        self.openapi_security_schemes = {
            "roleHeader": {
                "type": "apiKey",
                "in": "header",
                "name": header,
                "description": "The caller's roles, set by the authenticating proxy.",
            }
        }

    def __call__(self, request: Request) -> Identity | None:
        roles = tuple(r for r in _SEPARATORS.split(request.headers.get(self.header, "")) if r)
        if not roles:
            return None
        if self.actor_header is None:
            return Identity(",".join(roles), roles)
        actor = request.headers.get(self.actor_header, "").strip()
        return Identity(actor, roles) if actor else None

    def __repr__(self) -> str:
        extra = "" if self.actor_header is None else f", actor_header={self.actor_header!r}"
        return f"HeaderIdentity({self.header!r}{extra})"


class CurrentUserIdentity:
    """The logged-in user of Flask-Login (``flask_login.current_user``), or of anything
    alike: an object with ``is_authenticated``, ``get_id()`` (the actor) and a roles
    attribute holding a role name, role names, or role objects with a ``name`` (as
    Flask-Security's). An anonymous user carries no identity (401).

    :param roles_attribute: the user's attribute holding the roles.
    :param user: a callable returning the current user (default: Flask-Login's
        ``current_user``, imported here; Flask-Login is not a dependency of this library).
    :raises ConfigurationError: without ``user``, when Flask-Login is not installed.
    """

    missing_message = "The request carries no identity: no user is logged in."

    def __init__(
        self, *, roles_attribute: str = "roles", user: Callable[[], object] | None = None
    ) -> None:
        if not isinstance(roles_attribute, str) or not roles_attribute.isidentifier():
            raise ConfigurationError(
                f"roles_attribute is the name of the user's attribute holding the roles, not "
                f"{roles_attribute!r}."
            )
        self.roles_attribute = roles_attribute
        #: Returns the current user.
        self.user: Callable[[], object] = user or _flask_login_user()
        #: Flask's default session cookie: what Flask-Login's login rides on.
        self.openapi_security_schemes = {
            "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "session"}
        }

    def __call__(self, request: Request) -> Identity | None:
        user = self.user()
        if user is None or not getattr(user, "is_authenticated", False):
            return None
        actor = user.get_id()  # type: ignore[attr-defined]
        if actor is None or str(actor) == "":
            return None
        held = getattr(user, self.roles_attribute, None)
        if held is None:
            held = ()
        elif isinstance(held, str) or not isinstance(held, Iterable):
            held = (held,)
        roles = []
        for role in held:
            name = role if isinstance(role, str) else getattr(role, "name", None)
            if isinstance(name, str):
                roles.append(name)
        return Identity(str(actor), tuple(roles))

    def __repr__(self) -> str:
        return f"CurrentUserIdentity(roles_attribute={self.roles_attribute!r})"


def _flask_login_user() -> Callable[[], object]:
    try:
        flask_login = importlib.import_module("flask_login")
    except ImportError:
        raise ConfigurationError(
            "identity='flask-login' needs Flask-Login (pip install Flask-Login), or pass "
            "CurrentUserIdentity(user=<a callable returning the current user>)."
        ) from None
    proxy = flask_login.current_user  # a LocalProxy: the user of the current request

    def current_user() -> object:
        return proxy

    return current_user


def _source(identity: object) -> Callable[[Request], object]:
    if isinstance(identity, str):
        kind, _, argument = identity.partition(":")
        if kind == "header" and argument:
            return HeaderIdentity(argument)
        if identity == "flask-login":
            return CurrentUserIdentity()
    elif callable(identity):
        return identity
    raise ConfigurationError(
        f"identity must be a callable identity(request) -> Identity | str | None, "
        f"'header:<Header-Name>' (roles from a header a proxy sets) or 'flask-login' "
        f"(Flask-Login's current_user), not {identity!r}."
    )


def _pattern(text: str) -> re.Pattern[str]:
    """``*`` matches any characters (dots included); everything else is literal."""
    return re.compile(".*".join(re.escape(part) for part in text.split("*")))


class RoleBasedAccess:
    """An access-control hook from a role map, usable as ``TIERED_STATE_ACCESS_CONTROL``
    and as the role map of :meth:`StateManager.acting_as
    <flask_tiered_state.domain.manager.StateManager.acting_as>`.

    :param roles: role name -> its permissions: action names (:data:`KNOWN_ACTIONS`,
        and ``actions``) or patterns where ``*`` matches anything (``"states.transition.*"``,
        ``"dashboard.*"``, ``"*"``). A role allowed some ``states.transition.<name>`` also
        gets ``states.transition`` (a transition request whose body names none the API
        accepts), so that its bad requests answer 400 or 422 rather than 403.
    :param identity: who sends a request: a callable ``identity(request) -> Identity |
        str | None`` (a string is one role name, also the actor), ``"header:X-Roles"``
        (:class:`HeaderIdentity`), or ``"flask-login"`` (:class:`CurrentUserIdentity`).
    :param actions: action names of your own, for views that call the hook themselves.
    :param security_schemes: the OpenAPI security schemes to declare; by default the
        identity source's (``openapi_security_schemes``), else the library's default.
    :raises ConfigurationError: a permission names no known action (a typo must not
        silently deny), or a role name, the identity or an action is malformed.
    """

    def __init__(
        self,
        roles: Mapping[str, Iterable[str]],
        *,
        identity: IdentitySource | str,
        actions: Iterable[str] = (),
        security_schemes: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        extra = _check_actions(actions)
        self.known_actions: tuple[str, ...] = tuple(dict.fromkeys((*KNOWN_ACTIONS, *extra)))
        if not isinstance(roles, Mapping) or not roles:
            raise ConfigurationError(
                "RoleBasedAccess takes a non-empty mapping of role name to permissions, e.g. "
                '{"support": ["states.read"], "ops": ["*"]}; got ' + repr(roles)[:200] + "."
            )
        self._permissions: dict[str, tuple[str, ...]] = {}
        self._allowed: dict[str, frozenset[str]] = {}
        self._patterns: dict[str, tuple[re.Pattern[str], ...]] = {}
        for role, permissions in roles.items():
            self._add_role(role, permissions)
        self.identity = _source(identity)
        declared = security_schemes
        if declared is None:
            declared = getattr(self.identity, SECURITY_SCHEMES_ATTRIBUTE, None)
        #: The OpenAPI security schemes the API's document declares for this hook.
        self.openapi_security_schemes = declared

    def _add_role(self, role: object, permissions: object) -> None:
        if not isinstance(role, str) or not _ROLE_NAME.fullmatch(role):
            raise ConfigurationError(
                f"Invalid role name {role!r}: 1 to 100 letters, digits and _ . : @ -."
            )
        if isinstance(permissions, str) or not isinstance(permissions, Iterable):
            raise ConfigurationError(
                f"The permissions of role {role!r} are a list of actions or patterns, e.g. "
                f'["states.read", "states.transition.*"]; not {permissions!r}.'
            )
        given = tuple(permissions)
        allowed: set[str] = set()
        patterns = []
        for permission in given:
            if not isinstance(permission, str) or not _ACTION.fullmatch(permission):
                raise ConfigurationError(
                    f"Role {role!r} has an invalid permission {permission!r}: an action name "
                    "or a pattern with *, e.g. 'states.read' or 'states.transition.*'."
                )
            if "*" in permission:
                pattern = _pattern(permission)
                matched = [a for a in self.known_actions if pattern.fullmatch(a)]
                patterns.append(pattern)
            else:
                matched = [permission] if permission in self.known_actions else []
            if not matched:
                raise ConfigurationError(self._unknown(role, permission))
            allowed.update(matched)
        if allowed & set(TRANSITION_ACTIONS):
            allowed.add(TRANSITION_ACTION)
        self._permissions[role] = given
        self._allowed[role] = frozenset(allowed)
        self._patterns[role] = tuple(patterns)

    def _unknown(self, role: str, permission: str) -> str:
        what = "matches no known action" if "*" in permission else "is not a known action"
        close = difflib.get_close_matches(permission, self.known_actions, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return (
            f"Role {role!r} has the permission {permission!r}, which {what}.{hint} Known "
            f"actions: {', '.join(self.known_actions)}. Pass actions=[...] for actions of "
            "your own."
        )

    # -- the role map (what acting_as checks) -------------------------------------------

    @property
    def role_names(self) -> tuple[str, ...]:
        """The roles, in the order they were given."""
        return tuple(self._permissions)

    def permissions(self, role: str) -> tuple[str, ...]:
        """The permissions of ``role`` as given (() for an unknown role)."""
        return self._permissions.get(role, ())

    def allowed_actions(self, role: str) -> tuple[str, ...]:
        """The known actions ``role`` may do, in the order of :attr:`known_actions`."""
        allowed = self._allowed.get(role, frozenset())
        return tuple(a for a in self.known_actions if a in allowed)

    def allows(self, role: str, action: str) -> bool:
        """Whether ``role`` may do ``action`` (an unknown role may do nothing; an action
        not known is allowed by a pattern matching it)."""
        if action in self._allowed.get(role, ()):
            return True
        return any(p.fullmatch(action) for p in self._patterns.get(role, ()))

    # -- the hook -------------------------------------------------------------------------

    def identify(self, request: Request) -> Identity | None:
        """Who sends ``request``, from the identity source; None when it does not say.

        :raises ConfigurationError: the source answered something else than an
            Identity, a role name or None.
        """
        found = self.identity(request)
        if found is None or isinstance(found, Identity):
            return found
        if isinstance(found, str) and found:
            return Identity(found, (found,))
        raise ConfigurationError(
            f"The identity source {self.identity!r} answered {found!r}; it must answer an "
            "Identity(actor, roles), a role name, or None."
        )

    def __call__(self, request: Request, action: str) -> str | bool:
        """The hook: the identity's actor when one of its roles allows ``action``, else
        False (403).

        :raises Unauthorized: the request carries no identity (401).
        """
        who = self.identify(request)
        if who is None:
            raise Unauthorized(
                getattr(
                    self.identity,
                    "missing_message",
                    "The request carries no identity (the identity source found none).",
                )
            )
        if any(self.allows(role, action) for role in who.roles):
            return who.actor
        return False

    def __repr__(self) -> str:
        return f"RoleBasedAccess(roles={list(self._permissions)!r}, identity={self.identity!r})"


def _check_actions(actions: Iterable[str]) -> tuple[str, ...]:
    if isinstance(actions, str) or not isinstance(actions, Iterable):
        raise ConfigurationError(f"actions is a list of action names, not {actions!r}.")
    names = tuple(actions)
    for name in names:
        if not isinstance(name, str) or "*" in name or not _ACTION.fullmatch(name):
            raise ConfigurationError(
                f"Invalid action name {name!r} in actions: 1 to 200 letters, digits and "
                "_ . : - (no *)."
            )
    return names
