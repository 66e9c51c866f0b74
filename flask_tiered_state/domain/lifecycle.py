"""Lifecycles: which transition is allowed from which status, and where it leads.

The default lifecycle (:data:`DEFAULT_LIFECYCLE`):

=========  ===============================  =========
transition allowed from                      to
=========  ===============================  =========
CREATE     (none: a new state)              CREATED
UPDATE     CREATED, ACTIVE, SUSPENDED        unchanged
ACTIVATE   CREATED, SUSPENDED                ACTIVE
SUSPEND    CREATED, ACTIVE                   SUSPENDED
RESUME     SUSPENDED                         ACTIVE
EXPIRE     CREATED, ACTIVE, SUSPENDED        EXPIRED
DELETE     every status but DELETED          DELETED
=========  ===============================  =========

A type may use its own :class:`Lifecycle`, and a lifecycle may carry *guards*:
callables ``guard(current, transition, proposed) -> bool`` run before a transition
(``current`` and ``proposed`` are record dicts); False refuses it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..errors import ConfigurationError, InvalidTransitionError
from .model import StateStatus, StateTransition

__all__ = ["DEFAULT_LIFECYCLE", "Guard", "Lifecycle", "TransitionRule"]

#: ``guard(current_record, transition, proposed_record) -> bool``
Guard = Callable[[Mapping[str, Any], StateTransition, Mapping[str, Any]], bool]
#: ``(allowed from, to)``; ``to`` None keeps the status unchanged.
TransitionRule = tuple[Iterable[StateStatus], "StateStatus | None"]

_S = StateStatus
_T = StateTransition


class Lifecycle:
    """A table of allowed ``(status, transition) -> status``.

    :param rules: for each transition (other than CREATE and ROLLBACK), the statuses it is
        allowed from and the status it leads to (None: unchanged).
    :param initial_status: the status CREATE gives.
    :param guards: per transition, callables that may refuse it.
    """

    __slots__ = ("_allowed", "_guards", "_table", "initial_status", "rules")

    def __init__(
        self,
        rules: Mapping[StateTransition, TransitionRule],
        *,
        initial_status: StateStatus = StateStatus.CREATED,
        guards: Mapping[StateTransition, Iterable[Guard]] | None = None,
    ) -> None:
        self.initial_status = StateStatus(initial_status)
        self.rules: dict[StateTransition, tuple[tuple[StateStatus, ...], StateStatus | None]] = {}
        for transition, (sources, target) in rules.items():
            transition = StateTransition(transition)
            if transition in (_T.CREATE, _T.ROLLBACK, _T.ERASE, _T.RESTORE):
                raise ConfigurationError(
                    f"A lifecycle rule for {transition.value} is not allowed: CREATE always "
                    "leads to initial_status, ROLLBACK follows the other rules, and ERASE and "
                    "RESTORE are allowed from every status."
                )
            self.rules[transition] = (
                tuple(StateStatus(s) for s in sources),
                None if target is None else StateStatus(target),
            )
        self._table: dict[tuple[StateStatus, StateTransition], StateStatus] = {}
        for transition, (sources, target) in self.rules.items():
            for source in sources:
                self._table[(source, transition)] = source if target is None else target
        self._allowed: dict[StateStatus, tuple[str, ...]] = {
            status: tuple(t.value for t in self.rules if (status, t) in self._table)
            for status in StateStatus
        }
        self._guards: dict[StateTransition, tuple[Guard, ...]] = {}
        for transition, fns in (guards or {}).items():
            fns = tuple(fns)
            for fn in fns:
                if not callable(fn):
                    raise ConfigurationError(
                        f"Guards must be callables guard(current, transition, proposed) -> "
                        f"bool; got {fn!r} for {StateTransition(transition).value}."
                    )
            self._guards[StateTransition(transition)] = fns

    def with_guard(self, transition: StateTransition, guard: Guard) -> Lifecycle:
        """A copy of this lifecycle with ``guard`` added to ``transition``."""
        guards = {t: list(g) for t, g in self._guards.items()}
        guards.setdefault(StateTransition(transition), []).append(guard)
        return Lifecycle(self.rules, initial_status=self.initial_status, guards=guards)

    def allowed_transitions(self, status: StateStatus | str) -> list[str]:
        """The transitions allowed from ``status`` (values, in table order)."""
        return list(self._allowed[StateStatus(status)])

    def target(self, state_id: str, status: str, transition: StateTransition) -> StateStatus:
        """The status ``transition`` leads to from ``status``, or
        :class:`~flask_tiered_state.errors.InvalidTransitionError`."""
        current = StateStatus(status)
        result = self._table.get((current, transition))
        if result is None:
            raise InvalidTransitionError(
                state_id, current.value, transition.value, self._allowed[current]
            )
        return result

    def check_guards(
        self,
        transition: StateTransition,
        current: Mapping[str, Any],
        proposed: Mapping[str, Any],
    ) -> None:
        """Run the guards of ``transition``; the first False refuses it."""
        for guard in self._guards.get(transition, ()):
            if not guard(current, transition, proposed):
                status = str(current["status"])
                raise InvalidTransitionError(
                    str(current["state_id"]),
                    status,
                    transition.value,
                    self._allowed[StateStatus(status)],
                    reason=f"refused by guard {getattr(guard, '__name__', repr(guard))}",
                )

    def allows_status_change(self, source: str, target: str) -> bool:
        """True when some transition leads from ``source`` to ``target`` (rollback's rule)."""
        src, dst = StateStatus(source), StateStatus(target)
        return any(
            to is dst
            for (frm, _t), to in self._table.items()
            if frm is src and dst is not _S.DELETED
        )

    def to_mermaid(self, title: str | None = None) -> str:
        """The lifecycle as a Mermaid ``stateDiagram-v2``."""
        lines = ["stateDiagram-v2"]
        if title:
            lines.insert(0, f"---\ntitle: {title}\n---")
        lines.append(f"    [*] --> {self.initial_status.value}: create")
        for (source, transition), target in self._table.items():
            lines.append(f"    {source.value} --> {target.value}: {transition.value}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Lifecycle({len(self._table)} edges, initial={self.initial_status.value})"


_LIVE = (_S.CREATED, _S.ACTIVE, _S.SUSPENDED)

#: The lifecycle every type uses unless it registers its own.
DEFAULT_LIFECYCLE = Lifecycle(
    {
        _T.UPDATE: (_LIVE, None),
        _T.ACTIVATE: ((_S.CREATED, _S.SUSPENDED), _S.ACTIVE),
        # an account can be suspended before its activation
        _T.SUSPEND: ((_S.CREATED, _S.ACTIVE), _S.SUSPENDED),
        _T.RESUME: ((_S.SUSPENDED,), _S.ACTIVE),
        _T.EXPIRE: (_LIVE, _S.EXPIRED),
        _T.DELETE: ((_S.CREATED, _S.ACTIVE, _S.SUSPENDED, _S.EXPIRED), _S.DELETED),
    }
)
