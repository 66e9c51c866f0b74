"""Acting as a role: the manager's side of role-based access.

``with manager.acting_as("support"):`` makes each public call of the
:class:`~flask_tiered_state.domain.manager.StateManager` that reads or changes states
check its *action* -- the names the access-control hook is asked about
(``states.read``, ``states.transition.suspend``, ...; see :mod:`flask_tiered_state.access`)
and those of :data:`NON_HTTP_ACTIONS` -- against the manager's role map, and raise
:class:`~flask_tiered_state.errors.AccessDeniedError` for an action the role may not do,
before anything is read or written. Outside ``acting_as`` nothing is checked: the
application's own code is trusted.

The acting role is held in a context variable, so it is per thread and per asyncio task
(a task starts with a copy of its creator's context), and it applies to one manager
only. A new thread starts without it (run its work through
``contextvars.copy_context().run`` to carry it over).

The role map is any :class:`RoleMap`; :class:`flask_tiered_state.roles.RoleBasedAccess`
is one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..errors import AccessDeniedError, ConfigurationError, InvalidRequestError
from .arguments import UPDATE_TRANSITIONS, check_actor_reason
from .model import StateTransition

__all__ = [
    "ACTING",
    "NON_HTTP_ACTIONS",
    "Acting",
    "RoleMap",
    "acting_scope",
    "authorize",
    "current_acting",
    "transition_actions",
]

#: The actions the manager and the ``flask state`` commands check besides those of the
#: REST API (:data:`flask_tiered_state.access.API_ACTIONS`), which no HTTP route has:
#: ``states.erase`` (``erase_state``), ``states.promote`` / ``states.demote``
#: (``promote_to_hot`` / ``demote_to_cold``), ``stats`` (``get_storage_stats``,
#: ``get_performance_metrics``), ``events.list`` / ``events.retry`` (``get_events`` /
#: ``retry_events``), ``events.dispatch`` (``flask state dispatch``), ``timers.list``
#: (``get_scheduled``), ``tables.upgrade`` (``flask state init-db``), ``audit.verify`` /
#: ``audit.seal`` (``flask state audit verify`` / ``seal``), ``keys.rotate`` (``flask
#: state rotate-keys``) and ``backups.create`` / ``backups.list`` / ``backups.verify`` /
#: ``backups.restore`` (:class:`~flask_tiered_state.ops.backup.BackupManager`, ``flask state
#: backup ...``; ``restore_records``), ``gc`` (``flask state gc``,
#: :class:`~flask_tiered_state.ops.retention.GarbageCollector`), ``checkpoints.create`` /
#: ``checkpoints.list`` / ``checkpoints.verify``
#: (:class:`~flask_tiered_state.ops.capture.StateCapture`, ``flask state checkpoint ...``;
#: a checkpoint's restore is ``backups.restore``) and ``recovery.run``
#: (:class:`~flask_tiered_state.ops.recovery.RecoveryHandler`, ``flask state recover``).
NON_HTTP_ACTIONS = (
    "states.erase",
    "states.promote",
    "states.demote",
    "stats",
    "events.list",
    "events.retry",
    "events.dispatch",
    "timers.list",
    "tables.upgrade",
    "audit.verify",
    "audit.seal",
    "keys.rotate",
    "backups.create",
    "backups.list",
    "backups.verify",
    "backups.restore",
    "gc",
    "checkpoints.create",
    "checkpoints.list",
    "checkpoints.verify",
    "recovery.run",
)


def transition_actions(transition: StateTransition | None) -> tuple[str, ...]:
    """The action of a transition (``states.transition.suspend``); for None -- an
    operation on transitions not known in advance, such as cancelling a timer by id --
    the actions of every transition the API applies."""
    steps = UPDATE_TRANSITIONS if transition is None else (transition,)
    return tuple(f"states.transition.{step.value}" for step in steps)


@runtime_checkable
class RoleMap(Protocol):
    """What the manager needs of a role map (:class:`~flask_tiered_state.roles.RoleBasedAccess`)."""

    @property
    def role_names(self) -> tuple[str, ...]:
        """The roles, in the order they were given."""

    def allows(self, role: str, action: str) -> bool:
        """Whether ``role`` may do ``action``."""

    def permissions(self, role: str) -> tuple[str, ...]:
        """The permissions of ``role`` as configured (action names and patterns)."""


@dataclass(frozen=True, slots=True)
class Acting:
    """One ``acting_as`` block: for which manager, as which role, recorded as whom."""

    owner: object
    role: str
    actor: str


#: The open ``acting_as`` blocks of this context, innermost last.
ACTING: ContextVar[tuple[Acting, ...]] = ContextVar("tiered_state_acting_as", default=())


def current_acting(owner: object) -> Acting | None:
    """The innermost ``acting_as`` block of ``owner`` in this context, or None."""
    for frame in reversed(ACTING.get()):
        if frame.owner is owner:
            return frame
    return None


@contextmanager
def acting_scope(
    owner: object, roles: RoleMap | None, role: str, actor: str | None
) -> Iterator[Acting]:
    """Act as ``role`` (recorded as ``actor``, by default the role's name) for the calls
    of ``owner`` made in this block; blocks nest, the innermost applies.

    :raises ConfigurationError: ``owner`` has no role map.
    :raises InvalidRequestError: ``role`` is not one of the map's roles, or ``actor`` is
        not a string of 1 to 200 characters.
    """
    if roles is None:
        raise ConfigurationError(
            f"acting_as({role!r}) needs a role map, and this manager has none: set "
            "TIERED_STATE_ACCESS_CONTROL to a RoleBasedAccess (flask_tiered_state.roles), "
            "or call manager.set_roles(RoleBasedAccess(...))."
        )
    known = roles.role_names
    if not isinstance(role, str) or role not in known:
        raise InvalidRequestError(
            f"Unknown role {role!r} for acting_as; the role map has: {', '.join(known)}.",
            details={"role": repr(role)[:200], "roles": list(known)},
        )
    check_actor_reason(actor, None)
    if actor == "":
        raise InvalidRequestError("actor must not be empty; leave it out to record the role.")
    frame = Acting(owner, role, role if actor is None else actor)
    token = ACTING.set((*ACTING.get(), frame))
    try:
        yield frame
    finally:
        ACTING.reset(token)


def authorize(
    owner: object, roles: RoleMap | None, actions: tuple[str, ...], actor: str | None
) -> str | None:
    """Check ``actions`` against the role ``owner`` acts as; the actor to record.

    Outside ``acting_as`` (of ``owner``) nothing is checked and ``actor`` is returned
    as it is; inside, every action must be allowed, and ``actor`` defaults to the
    acting actor.

    :raises AccessDeniedError: the role may not do one of ``actions``.
    """
    if not ACTING.get():  # the usual case: nobody acts as a role
        return actor
    frame = current_acting(owner)
    if frame is None:
        return actor
    for action in actions:
        if roles is None or not roles.allows(frame.role, action):
            allowed = roles.permissions(frame.role) if roles is not None else ()
            raise AccessDeniedError(
                f"Role {frame.role!r} may not do {action!r} (acting_as, as "
                f"{frame.actor!r}); it may do: {', '.join(allowed) or 'nothing'}.",
                details={"role": frame.role, "action": action, "allowed": list(allowed)},
            )
    return frame.actor if actor is None else actor
