"""Marshmallow schemas: the validators of each state type's ``data`` and of request bodies.

The *state* schemas are registered on the manager as each type's ``data`` schema
(``register_state_type(schema=...)``; ``price_matches_plan`` is a validator of the
whole state, ``register_validator``), so every write of a state, whoever makes it
(these views, the REST blueprint, ``flask state``), is checked. Unknown fields are
refused (marshmallow's default ``RAISE``). The *request* schemas check the JSON
bodies of this app's endpoints before anything is written.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

__all__ = [
    "BILLING_CYCLES",
    "CURRENCIES",
    "FEATURE_KEY_RULE",
    "MAX_TRIAL_DAYS",
    "PLANS",
    "ArchiveRequest",
    "ChangePlanRequest",
    "CreateFeatureRequest",
    "CreatePaymentRequest",
    "CreateSubscriptionRequest",
    "FailPaymentRequest",
    "FeatureSchema",
    "LoginRequest",
    "NotificationSchema",
    "ReasonRequest",
    "RegisterUserRequest",
    "RolloutRequest",
    "SessionSchema",
    "SubscriptionSchema",
    "SuspendRequest",
    "TransactionSchema",
    "UserSchema",
    "price_matches_plan",
]

#: Plan -> billing cycle -> price in cents.
PLANS: dict[str, dict[str, int]] = {
    "basic": {"monthly": 900, "yearly": 9_000},
    "pro": {"monthly": 2_900, "yearly": 29_000},
    "team": {"monthly": 7_900, "yearly": 79_000},
}
BILLING_CYCLES = ("monthly", "yearly")
CURRENCIES = ("EUR", "USD", "GBP")
NOTIFICATION_KINDS = (
    "user_suspended",
    "subscription_suspended",
    "subscription_expired",
    "payment_failed",
    "payment_receipt",
)
#: The longest free trial a new subscription may have.
MAX_TRIAL_DAYS = 30
FEATURE_KEY_RULE = "2 to 40 characters: lowercase letters, digits and '-'"
_FEATURE_KEY = validate.Regexp(r"^[a-z0-9][a-z0-9\-]{1,39}$", error=FEATURE_KEY_RULE)
_PERCENT = validate.Range(min=0, max=100)
_REASON = validate.Length(min=1, max=200)


def _id(**kwargs: Any) -> fields.String:
    return fields.String(validate=validate.Length(min=1, max=200), **kwargs)


# -- state data ------------------------------------------------------------------------


class UserSchema(Schema):
    """``data`` of a user."""

    email = fields.Email(required=True)
    full_name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    country = fields.String(required=True, validate=validate.Regexp(r"^[A-Z]{2}$"))
    registered_at = fields.DateTime(required=True)
    verified_at = fields.DateTime(allow_none=True)
    marketing_opt_in = fields.Boolean()
    suspended_reason = fields.String(allow_none=True, validate=_REASON)


class TransactionSchema(Schema):
    """``data`` of a payment transaction."""

    user_id = _id(required=True)
    subscription_id = _id(allow_none=True)
    kind = fields.String(required=True, validate=validate.OneOf(("subscription", "one_off")))
    amount_cents = fields.Integer(
        required=True, strict=True, validate=validate.Range(min=1, max=10_000_000)
    )
    currency = fields.String(required=True, validate=validate.OneOf(CURRENCIES))
    description = fields.String(validate=validate.Length(max=200))
    occurred_at = fields.DateTime(required=True)
    settled_at = fields.DateTime(allow_none=True)
    failure_reason = fields.String(allow_none=True, validate=_REASON)
    #: Imported history (the demo seed): billing callbacks leave it alone.
    imported = fields.Boolean()


class SubscriptionSchema(Schema):
    """``data`` of a subscription."""

    user_id = _id(required=True)
    plan = fields.String(required=True, validate=validate.OneOf(tuple(PLANS)))
    billing_cycle = fields.String(required=True, validate=validate.OneOf(BILLING_CYCLES))
    price_cents = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    currency = fields.String(required=True, validate=validate.OneOf(CURRENCIES))
    started_at = fields.DateTime(required=True)
    current_period_start = fields.DateTime(allow_none=True)
    current_period_end = fields.DateTime(allow_none=True)
    renewals = fields.Integer(strict=True, validate=validate.Range(min=0))
    last_payment_id = _id(allow_none=True)
    suspended_reason = fields.String(allow_none=True, validate=_REASON)
    #: The end of a free trial; while the subscription is ``created`` it expires then.
    trial_ends_at = fields.DateTime(allow_none=True)


def price_matches_plan(state: dict[str, Any]) -> bool:
    """A plain-callable validator of the whole state: a subscription's price is its
    plan's price."""
    data = state["data"]
    return bool(PLANS[data["plan"]][data["billing_cycle"]] == data["price_cents"])


class FeatureSchema(Schema):
    """``data`` of a feature flag."""

    key = fields.String(required=True, validate=_FEATURE_KEY)
    description = fields.String(required=True, validate=validate.Length(min=1, max=200))
    rollout_percentage = fields.Integer(required=True, strict=True, validate=_PERCENT)


class SessionSchema(Schema):
    """``data`` of a login session (HOT home, expires with its TTL)."""

    user_id = _id(required=True)
    created_at = fields.DateTime(required=True)
    ttl_seconds = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    user_agent = fields.String(allow_none=True, validate=validate.Length(max=300))
    remote_addr = fields.String(allow_none=True, validate=validate.Length(max=64))


class NotificationSchema(Schema):
    """``data`` of a notification (an app-defined state type)."""

    user_id = _id(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(NOTIFICATION_KINDS))
    message = fields.String(required=True, validate=validate.Length(min=1, max=500))
    related_id = _id(allow_none=True)
    created_at = fields.DateTime(required=True)
    #: The event it reports, for notifications sent by asynchronous callbacks.
    event_id = fields.String(allow_none=True, validate=validate.Length(min=1, max=64))


# -- request bodies --------------------------------------------------------------------


class RegisterUserRequest(Schema):
    email = fields.Email(required=True)
    full_name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    country = fields.String(required=True, validate=validate.Regexp(r"^[A-Z]{2}$"))
    marketing_opt_in = fields.Boolean(load_default=False)


class ReasonRequest(Schema):
    reason = fields.String(load_default=None, allow_none=True, validate=_REASON)


class FailPaymentRequest(Schema):
    reason = fields.String(required=True, validate=_REASON)


class SuspendRequest(Schema):
    reason = fields.String(required=True, validate=_REASON)


class CreateSubscriptionRequest(Schema):
    user_id = _id(required=True)
    plan = fields.String(required=True, validate=validate.OneOf(tuple(PLANS)))
    billing_cycle = fields.String(load_default="monthly", validate=validate.OneOf(BILLING_CYCLES))
    currency = fields.String(load_default="EUR", validate=validate.OneOf(CURRENCIES))
    trial_days = fields.Integer(
        load_default=0, strict=True, validate=validate.Range(min=0, max=MAX_TRIAL_DAYS)
    )


class ChangePlanRequest(Schema):
    plan = fields.String(required=True, validate=validate.OneOf(tuple(PLANS)))
    billing_cycle = fields.String(validate=validate.OneOf(BILLING_CYCLES))


class CreatePaymentRequest(Schema):
    user_id = _id(required=True)
    subscription_id = _id(load_default=None, allow_none=True)
    amount_cents = fields.Integer(strict=True, validate=validate.Range(min=1, max=10_000_000))
    currency = fields.String(load_default="EUR", validate=validate.OneOf(CURRENCIES))
    description = fields.String(load_default="", validate=validate.Length(max=200))


class CreateFeatureRequest(Schema):
    key = fields.String(required=True, validate=_FEATURE_KEY)
    description = fields.String(required=True, validate=validate.Length(min=1, max=200))
    rollout_percentage = fields.Integer(load_default=0, strict=True, validate=_PERCENT)


class RolloutRequest(Schema):
    rollout_percentage = fields.Integer(required=True, strict=True, validate=_PERCENT)


class LoginRequest(Schema):
    email = fields.Email(required=True)


class ArchiveRequest(Schema):
    older_than_days = fields.Integer(
        load_default=30, strict=True, validate=validate.Range(min=0, max=36_500)
    )
    limit = fields.Integer(load_default=None, strict=True, validate=validate.Range(min=1))
