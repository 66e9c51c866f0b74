"""How the credit system plugs into its state manager: types, validators, callbacks.

:func:`configure` runs once per manager: :meth:`CreditSystem.setup` is the app's
``TieredState(app, setup=...)`` function, which the extension runs with every manager
it builds (at first use, and again after ``TieredState.close``) before anything
else uses it, so the views, the REST API, the dashboard and ``flask state`` all see
the credit system's types, validators and callbacks.

Three ways of reacting to changes are shown:

- named callbacks (``register_callback``), run in the request right after the commit:
  the billing rules of :mod:`example_app.billing` on ``transaction_activated`` /
  ``transaction_expired``;
- asynchronous callbacks (``register_callback(..., asynchronous=True)``), delivered
  at least once from the outbox by ``flask state dispatch``: a receipt for every settled
  payment and a notice when a subscription ends, each recorded once per ``event_id``,
  and :func:`example_app.terms.keep_end_scheduled` on every subscription event, which
  keeps the timer that ends the trial or the paid period in step with the record;
- with ``CREDIT_CRM_URL`` set, every suspension and resumption of a user is sent to a
  CRM by an asynchronous callback (:mod:`example_app.crm`), which fails and is retried
  while the CRM does not answer;
- blinker signals (``flask_tiered_state.signals``): ``state-transitioned`` records a
  notification when a user or a subscription is suspended, with the transition's
  reason (the signal's ``event``), connected for this manager only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask_tiered_state import signals
from flask_tiered_state.domain.callbacks import PAST_TENSE, StateEvent, event_name
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.domain.model import StateTransition, StateType
from flask_tiered_state.errors import StateAlreadyExistsError
from flask_tiered_state.storage.base import StateCategory

from . import billing, crm, terms
from .core import event_notification_id, iso, notification_id, utc_now
from .schemas import (
    FeatureSchema,
    NotificationSchema,
    SessionSchema,
    SubscriptionSchema,
    TransactionSchema,
    UserSchema,
    price_matches_plan,
)

__all__ = ["ASYNC_KEYS", "NOTIFICATION", "CreditSystem", "configure", "notify"]

logger = logging.getLogger("example_app")

#: The app's own state type.
NOTIFICATION = "notification"
#: The keys of the asynchronous callbacks: their names in the outbox, the same in every
#: process (the web app records deliveries for them, ``flask state dispatch`` runs them).
ASYNC_KEYS = {
    "receipt": "credit.payment_receipt",
    "ended": "credit.subscription_ended",
    "end": "credit.subscription_end_timer",
}


@dataclass(frozen=True)
class CreditSystem:
    """The app's part of ``app.extensions["credit_system"]``.

    :param session_ttl_seconds: lifetime of a login session in the HOT tier.
    :param crm_url: where users' suspensions and resumptions are sent (None: nowhere).
    """

    session_ttl_seconds: int
    crm_url: str | None = None

    def setup(self, manager: StateManager) -> None:
        """Configure a newly built manager (the extension's setup function)."""
        configure(manager, session_ttl_seconds=self.session_ttl_seconds, crm_url=self.crm_url)


def notify(
    manager: StateManager,
    kind: str,
    source: dict[str, Any],
    user_id: str,
    message: str,
    *,
    event_id: str | None = None,
) -> None:
    """Record a notification about ``source`` (a record) for ``user_id``, once per
    version of the source -- or, given the ``event_id`` an asynchronous callback
    receives, once per event -- so a redelivered event adds nothing."""
    data = {
        "user_id": user_id,
        "kind": kind,
        "message": message,
        "related_id": source["state_id"],
        "created_at": iso(utc_now()),
    }
    if event_id is None:
        state_id = notification_id(kind, source["state_id"], source["version"])
    else:
        state_id = event_notification_id(kind, event_id)
        data["event_id"] = event_id
    try:
        manager.register_state(state_id, NOTIFICATION, {"name": kind, "data": data})
    except StateAlreadyExistsError:
        logger.debug("Notification %s exists already", state_id)


def _user_suspended(sender: Any, **kwargs: Any) -> None:
    """``state-transitioned`` receiver (sender: the manager): tell a suspended user why.

    The reason is the transition's own (``event.reason``, what the history row records),
    whoever suspended the user: this app's views, the billing rules or the extension's
    REST API, which records a reason without setting ``data.suspended_reason``. (A named
    callback is not used here: it receives the records, not the reason.)
    """
    new = kwargs["new_state"]
    if new["type"] != StateType.USER.value or kwargs["to_status"] != "suspended":
        return
    event: StateEvent = kwargs["event"]
    reason = event.reason or new["data"].get("suspended_reason") or "no reason was given"
    notify(sender, "user_suspended", new, new["state_id"], f"Your account is suspended: {reason}.")


def _subscription_suspended(sender: Any, **kwargs: Any) -> None:
    """``state-transitioned`` receiver (sender: the manager)."""
    new = kwargs["new_state"]
    if new["type"] == StateType.SUBSCRIPTION.value and kwargs["to_status"] == "suspended":
        plan = new["data"]["plan"]
        reason = new["data"].get("suspended_reason") or "suspended"
        notify(
            sender,
            "subscription_suspended",
            new,
            new["data"]["user_id"],
            f"Your {plan} subscription is suspended ({reason}); pay to resume it.",
        )


def configure(
    manager: StateManager, *, session_ttl_seconds: int, crm_url: str | None = None
) -> None:
    """Register the credit system's types, validators, callbacks and receivers."""
    manager.register_state_type(NOTIFICATION, schema=NotificationSchema)
    manager.register_state_type(
        StateType.SESSION,
        schema=SessionSchema,
        home_tier=StateCategory.HOT,
        hot_ttl_seconds=session_ttl_seconds,
    )
    # With master keys (TIERED_STATE_ENCRYPTION_KEYS) a user's name is kept encrypted at
    # rest; names written before the keys were set stay readable as they are.
    encrypted = ["name", "data.full_name"] if manager.data_keys is not None else None
    manager.register_state_type(StateType.USER, schema=UserSchema, encrypted_fields=encrypted)
    manager.register_state_type(
        StateType.TRANSACTION, schema=TransactionSchema, lifecycle=billing.TRANSACTION_LIFECYCLE
    )
    manager.register_state_type(StateType.SUBSCRIPTION, schema=SubscriptionSchema)
    manager.register_validator(StateType.SUBSCRIPTION, price_matches_plan)
    manager.register_state_type(StateType.FEATURE, schema=FeatureSchema)

    def payment_settled(
        state_id: str, old: Any, new: dict[str, Any], transition: StateTransition
    ) -> None:
        billing.on_payment_settled(manager, new)

    def payment_failed(
        state_id: str, old: Any, new: dict[str, Any], transition: StateTransition
    ) -> None:
        waiting = billing.on_payment_failed(manager, new)
        if waiting is not None:
            message = (
                f"Your first payment for {waiting['name']} failed "
                f"({new['data'].get('failure_reason')}); the subscription starts when a "
                "payment succeeds."
            )
            notify(manager, "payment_failed", new, new["data"]["user_id"], message)

    manager.register_callback("transaction_activated", payment_settled)
    manager.register_callback("transaction_expired", payment_failed)
    signals.state_transitioned.connect(_user_suspended, sender=manager)
    signals.state_transitioned.connect(_subscription_suspended, sender=manager)

    # -- asynchronous: delivered by `flask state dispatch`, at least once, by event_id --

    def send_receipt(
        state_id: str, old: Any, new: dict[str, Any], transition: StateTransition, *, event_id: str
    ) -> None:
        data = new["data"]
        if data.get("imported"):
            return
        amount = f"{data['amount_cents'] / 100:.2f} {data['currency']}"
        message = f"Receipt: we received {amount} (payment {state_id}). Thank you!"
        notify(manager, "payment_receipt", new, data["user_id"], message, event_id=event_id)

    def subscription_ended(
        state_id: str, old: Any, new: dict[str, Any], transition: StateTransition, *, event_id: str
    ) -> None:
        trial = old is not None and old["status"] == "created" and old["data"].get("trial_ends_at")
        what = f"free trial of {new['name']}" if trial else f"{new['name']} subscription"
        message = f"Your {what} has ended; subscribe again at any time."
        notify(
            manager, "subscription_expired", new, new["data"]["user_id"], message,
            event_id=event_id,
        )  # fmt: skip

    def subscription_changed(
        state_id: str, old: Any, new: Any, transition: StateTransition, *, event_id: str
    ) -> None:
        terms.keep_end_scheduled(manager, state_id)  # idempotent: compares, then acts

    manager.register_callback(
        "transaction_activated", send_receipt, asynchronous=True, key=ASYNC_KEYS["receipt"]
    )
    manager.register_callback(
        "subscription_expired", subscription_ended, asynchronous=True, key=ASYNC_KEYS["ended"]
    )
    for transition in PAST_TENSE:  # every change of a subscription may move its end
        manager.register_callback(
            event_name(StateType.SUBSCRIPTION.value, transition),
            subscription_changed,
            asynchronous=True,
            key=ASYNC_KEYS["end"],
        )
    if crm_url is not None:
        url = crm_url

        def sync_crm(
            state_id: str, old: Any, new: dict[str, Any], transition: StateTransition,
            *, event_id: str,
        ) -> None:  # fmt: skip
            crm.push_user_change(url, new, transition.value, event_id)

        for transition in (StateTransition.SUSPEND, StateTransition.RESUME):
            manager.register_callback(
                event_name(StateType.USER.value, transition),
                sync_crm,
                asynchronous=True,
                key=crm.CRM_KEY,
                max_attempts=crm.MAX_ATTEMPTS,
            )
