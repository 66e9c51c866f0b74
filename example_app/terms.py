"""When subscriptions end: trials and billing periods, as durable timers.

A subscription ends by itself, through an EXPIRE the dispatcher (``flask state
dispatch``) applies at the right moment with the actor ``scheduler``:

- a free trial (``data.trial_ends_at``) ends the subscription at that moment while it is
  still ``created`` (nobody paid);
- a paid period (``data.current_period_end``) ends an ``active`` or ``suspended``
  subscription unless a renewal moved the end first.

:func:`keep_end_scheduled` makes the timers of a subscription match its current record:
the one EXPIRE it needs, at its end, and no other. The credit system runs it as an
*asynchronous* callback of every subscription event (see :mod:`example_app.wiring`), so
the timer follows each change durably: the change's transaction records the delivery,
and a process that dies before the timer is set leaves the delivery to the next
dispatcher. Running it twice for one event changes nothing the second time.

Each timer carries ``if_version``, the subscription's version when it was set: a change
that lands before its event was handled (a renewal paid a second before the end) makes
the old timer skip rather than expire a subscription someone just acted on; the
change's own event then sets the timer it needs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.domain.model import StateStatus, StateTransition, StateType

from .core import parse_iso

__all__ = ["PERIOD_ENDED", "TRIAL_ENDED", "keep_end_scheduled", "scheduled_end"]

#: The reasons recorded in the history of a subscription that ended by itself.
TRIAL_ENDED = "trial ended"
PERIOD_ENDED = "billing period ended"
_EXPIRE = StateTransition.EXPIRE
_PAID = (StateStatus.ACTIVE.value, StateStatus.SUSPENDED.value)


def scheduled_end(subscription: dict[str, Any]) -> tuple[datetime, str] | None:
    """When a subscription ends by itself, and why; None when it does not (it is
    waiting for its first payment without a trial, or it has ended)."""
    data, status = subscription["data"], subscription["status"]
    if status == StateStatus.CREATED.value and data.get("trial_ends_at"):
        return parse_iso(data["trial_ends_at"]), TRIAL_ENDED
    if status in _PAID and data.get("current_period_end"):
        return parse_iso(data["current_period_end"]), PERIOD_ENDED
    return None


def keep_end_scheduled(manager: StateManager, subscription_id: str) -> dict[str, Any] | None:
    """Schedule the EXPIRE the subscription needs now, cancelling any other; returns the
    timer (None: it needs none)."""
    subscription = manager.get_state(subscription_id)
    if subscription is not None and subscription["type"] != StateType.SUBSCRIPTION.value:
        return None
    wanted = None if subscription is None else scheduled_end(subscription)
    kept: dict[str, Any] | None = None
    for timer in manager.get_scheduled(subscription_id):
        if timer["transition"] != _EXPIRE.value:
            continue
        if (
            kept is None
            and wanted is not None
            and subscription is not None
            and timer["due_at"] == wanted[0].timestamp()
            and timer["reason"] == wanted[1]
            and timer["if_version"] == subscription["version"]
        ):
            kept = timer
        else:
            manager.cancel_scheduled(timer["timer_id"])
    if kept is None and wanted is not None and subscription is not None:
        at, reason = wanted
        kept = manager.schedule_transition(
            subscription_id, _EXPIRE, at=at, reason=reason, if_version=subscription["version"]
        )
    return kept
