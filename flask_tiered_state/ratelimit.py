"""Rate limits of the REST API and the dashboard, through Flask-Limiter (the ``ratelimit`` extra).

Each route of the two blueprints has its own budget per client: the actor the
access-control hook names for the request, else the remote address (a request the hook
denies counts against its address, so guessing credentials is limited too). GET, HEAD and
OPTIONS routes take ``TIERED_STATE_RATE_LIMIT_READS``, the others
``TIERED_STATE_RATE_LIMIT_WRITES``; ``TIERED_STATE_RATE_LIMIT_ROUTES`` replaces either for
single routes, named by their access-control action. A request over its budget answers
429 with ``Retry-After`` (seconds) in the blueprint's error format: the JSON body of
:mod:`flask_tiered_state.http_errors` on the API, the error page on the dashboard.

**A guest beside the app's own Flask-Limiter.** The extension builds its own
:class:`flask_limiter.Limiter` per app, with its own key prefix, limits on its blueprints
only, and empty default, application and meta limits, so neither the app's
``RATELIMIT_*`` limits nor its ``Limiter`` instance are taken over; the app's limiter,
if any, keeps limiting whatever it limits. Flask-Limiter checks in a ``before_request``
function of the app, which the extension's limiter adds (only when limits are on).

The counters live in ``TIERED_STATE_RATE_LIMIT_STORAGE_URL`` (a storage URL of the
``limits`` library): ``memory://`` counts per process; ``redis://`` shares the counts
between workers and hosts. When that storage fails, the counts go on in process memory
and the storage is tried again with growing pauses (Flask-Limiter's in-memory fallback);
a request never fails because of it.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

from flask import Blueprint, Flask, current_app, g, make_response, request
from flask.sansio.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue
from flask.wrappers import Response

from .errors import ConfigurationError, RateLimitedError, TieredStateError
from .observability.logging import get_logger
from .setting_values import RATE_LIMIT_EXTRA, rate_limits_installed

if TYPE_CHECKING:
    from flask_limiter import Limiter, RateLimitExceeded

    from .settings import TieredStateSettings

__all__ = [
    "EXTRA",
    "READ_METHODS",
    "available",
    "get_limiter",
    "limit_blueprint",
    "rate_limits_on",
]

#: The methods that take the reads' limit; every other one takes the writes'.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: What to install for rate limits.
EXTRA = RATE_LIMIT_EXTRA

_PREFIX = "TIERED_STATE_"
_G_KEY = "tiered_state_rate_limit_key"
# Moving window: no burst of twice the limit at a window's edge, on memory and Redis alike.
_STRATEGY = "moving-window"

logger = get_logger(__name__)

#: The limiter of each app with limits on.
_limiters: weakref.WeakKeyDictionary[Flask, Limiter] = weakref.WeakKeyDictionary()
#: Blueprint name -> its routes' access-control actions by endpoint (``request.endpoint``).
_actions: dict[str, Mapping[str, str]] = {}
#: The names of each app's rate-limited blueprints, to check TIERED_STATE_RATE_LIMIT_ROUTES
#: against their actions once all of them are mounted.
_mounted: weakref.WeakKeyDictionary[Flask, set[str]] = weakref.WeakKeyDictionary()


def available() -> bool:
    """True when Flask-Limiter (the ``ratelimit`` extra) can be imported."""
    return rate_limits_installed()


def rate_limits_on(settings: TieredStateSettings, app: Flask) -> bool:
    """Whether ``app``'s blueprints are rate-limited: ``TIERED_STATE_RATE_LIMIT``, or for
    None, when Flask-Limiter is installed and the app is not ``TESTING``."""
    if settings.rate_limit is None:
        return available() and not app.testing
    return settings.rate_limit


# --------------------------------------------------------------------------- blueprints


def limit_blueprint(
    blueprint: Blueprint,
    actions: Mapping[str, str],
    respond: Callable[[TieredStateError], ResponseReturnValue] | None = None,
) -> None:
    """Rate-limit every route of ``blueprint`` (call before it is registered).

    :param actions: the access-control action of each endpoint (named with or without
        the blueprint's name), which names the route in ``TIERED_STATE_RATE_LIMIT_ROUTES``
        and is passed to the hook that names the client.
    :param respond: answers the :class:`~flask_tiered_state.errors.RateLimitedError` of a
        refused request (default: the JSON error body); ``Retry-After`` is added.
    """
    _actions[blueprint.name] = actions
    if available():
        from flask_limiter import RateLimitExceeded

        def exceeded(exc: RateLimitExceeded) -> Response:
            return _answer_exceeded(exc, respond)

        blueprint.register_error_handler(RateLimitExceeded, exceeded)

    def install(state: BlueprintSetupState) -> None:
        _install(cast(Flask, state.app), blueprint)

    blueprint.record_once(install)


def get_limiter(app: Flask) -> Limiter | None:
    """The extension's own :class:`flask_limiter.Limiter` of ``app``; None when its
    limits are off."""
    return _limiters.get(app)


def _install(app: Flask, blueprint: Blueprint) -> None:
    from .app_state import get_app_state

    settings = get_app_state(app).settings
    if not rate_limits_on(settings, app):
        if settings.rate_limit is None and not app.testing:
            logger.warning(
                "The %s blueprint of app %r has no rate limits: Flask-Limiter is not "
                "installed. Install %r, or set TIERED_STATE_RATE_LIMIT = False to say so.",
                blueprint.name,
                app.name,
                EXTRA,
            )
        return
    mounted = _mounted.setdefault(app, set())
    mounted.add(blueprint.name)
    if len(mounted) >= (settings.api_prefix is not None) + (settings.dashboard_prefix is not None):
        _check_route_limits(settings, mounted)
    limiter = _limiters.get(app)
    if limiter is None:
        limiter = _limiters[app] = _create_limiter(app, settings)
    limiter.limit(_route_limit_text, key_func=_client_key)(blueprint)


def _check_route_limits(settings: TieredStateSettings, blueprints: set[str]) -> None:
    """Refuse ``TIERED_STATE_RATE_LIMIT_ROUTES`` keys that name no route of the mounted
    blueprints (a typo would keep the default limit without a word)."""
    known = {action for name in blueprints for action in _actions[name].values()}
    unknown = sorted(set(settings.rate_limit_routes) - known)
    if unknown:
        key = _PREFIX + "RATE_LIMIT_ROUTES"
        raise ConfigurationError(
            f"{key} names {', '.join(map(repr, unknown))}, which is no action of the mounted "
            f"routes; the actions are {', '.join(sorted(known))}.",
            details={"key": key, "unknown": unknown},
        )


def _create_limiter(app: Flask, settings: TieredStateSettings) -> Limiter:
    from flask_limiter import Limiter
    from limits.errors import ConfigurationError as LimitsConfigurationError

    # The "" limits (none) keep the app's RATELIMIT_DEFAULT / _APPLICATION / _META /
    # _IN_MEMORY_FALLBACK out of this limiter: they belong to the app's own Limiter.
    limiter = Limiter(
        _client_key,
        default_limits=[""],
        application_limits=[""],
        meta_limits=[""],
        in_memory_fallback=[""],
        in_memory_fallback_enabled=True,
        storage_uri=settings.rate_limit_storage_url,
        strategy=_STRATEGY,
        key_prefix=f"{settings.key_prefix}ratelimit",
        headers_enabled=False,
        swallow_errors=False,
        fail_on_first_breach=True,
        on_breach=_no_breach_response,
        request_identifier=_endpoint,
    )
    # init_app writes RATELIMIT_ENABLED into app.config; left there it would switch on
    # an own Limiter the app creates later with enabled=False.
    had_enabled = "RATELIMIT_ENABLED" in app.config
    try:
        limiter.init_app(app)  # builds the storage (its client), connecting nothing
    except LimitsConfigurationError as exc:
        key = _PREFIX + "RATE_LIMIT_STORAGE_URL"
        raise ConfigurationError(
            f"{key} is {settings.rate_limit_storage_url!r}, which the limits library refuses: "
            f"{exc}. Use memory://, or redis://host:6379/0 with the Redis client "
            "(flask-tiered-state[redis]).",
            details={"key": key},
        ) from None
    finally:
        if not had_enabled:
            app.config.pop("RATELIMIT_ENABLED", None)
    return limiter


def _endpoint() -> str:
    return request.endpoint or ""


def _no_breach_response(_limit: Any) -> None:
    """No response of the app's ``RATELIMIT_ON_BREACH``: the blueprint answers 429."""
    return None


def _settings() -> TieredStateSettings:
    from .app_state import get_app_state

    return get_app_state().settings


def _action() -> str | None:
    actions = _actions.get(request.blueprint or "", {})
    endpoint = request.endpoint or ""
    return actions.get(endpoint) or actions.get(endpoint.rpartition(".")[2])


def _route_limit() -> tuple[str | None, str]:
    """The limit of the current request's route, and the setting it comes from."""
    settings = _settings()
    action = _action()
    if action is not None and action in settings.rate_limit_routes:
        return settings.rate_limit_routes[action], _PREFIX + "RATE_LIMIT_ROUTES"
    if request.method in READ_METHODS:
        return settings.rate_limit_reads, _PREFIX + "RATE_LIMIT_READS"
    return settings.rate_limit_writes, _PREFIX + "RATE_LIMIT_WRITES"


def _route_limit_text() -> str:
    return _route_limit()[0] or ""


def _client_key() -> str:
    """``actor:<name>`` for an actor the access-control hook names, else
    ``address:<remote address>``; worked out once per request."""
    key = g.get(_G_KEY)
    if not isinstance(key, str):
        actor = _named_actor()
        key = f"actor:{actor}" if actor else f"address:{request.remote_addr or 'unknown'}"
        setattr(g, _G_KEY, key)
    return key


def _named_actor() -> str | None:
    """The actor the hook names for this request; the limits are checked before the view,
    so the hook is asked here unless it already answered."""
    from .access import check_access, current_actor

    actor = current_actor()
    hook = _settings().access_control
    action = _action()
    if actor is not None or hook is None or action is None:
        return actor
    try:
        return check_access(hook, action)
    except Exception:
        # Denied, or the hook failed: count against the address; the view's own call of
        # the hook answers the 403 (or the failure).
        return None


def _answer_exceeded(
    exc: RateLimitExceeded, respond: Callable[[TieredStateError], ResponseReturnValue] | None
) -> Response:
    """429 in the blueprint's format, with ``Retry-After``."""
    limiter = _limiters.get(current_app._get_current_object())  # type: ignore[attr-defined]
    current = limiter.current_limit if limiter is not None else None
    if current is not None and current.breached:
        retry_after = max(1.0, current.window.reset_time - time.time())
        limit, source = str(current.limit), _route_limit()[1]
    else:  # the app's own Limiter refused the request
        retry_after = float(exc.limit.limit.get_expiry())
        limit, source = str(exc.limit.limit), "the app's own rate limits"
    seconds = math.ceil(retry_after)
    error = RateLimitedError(
        f"Too many requests to this route from this client: the limit is {limit} "
        f"({source}). Retry in {seconds} seconds.",
        retry_after=seconds,
    )
    error.details["limit"] = limit
    if respond is None:
        from .http_errors import handle_tiered_state_error

        response = handle_tiered_state_error(error)
    else:
        response = make_response(respond(error))
    response.headers["Retry-After"] = str(seconds)
    return response
