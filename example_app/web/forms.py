"""The pages' forms (Flask-WTF): the fields to render and check.

The CSRF token of every POST of the pages is checked once, before the view, by
:func:`example_app.web.common.guard` (Flask-WTF's ``validate_csrf``; a button-only form
carries nothing else), so the forms leave their own CSRF field out: several forms share
a page under prefixes, and all carry the token as ``csrf_token``.

A form checks only what a form must (a field is there, a number is a number, a choice
is one of the choices); the rules of the data are the JSON API's: :func:`load` runs the
same marshmallow request schema (:mod:`example_app.schemas`) on the form's values and
puts its messages on the fields, and the domain functions check the rest.
"""

from __future__ import annotations

from typing import Any

import marshmallow
from flask_wtf import FlaskForm
from wtforms import BooleanField, IntegerField, PasswordField, SelectField, StringField
from wtforms.validators import InputRequired, Optional

from flask_tiered_state.errors import ValidationError

from ..schemas import BILLING_CYCLES, CURRENCIES, MAX_TRIAL_DAYS, PLANS

__all__ = [
    "CreateFeatureForm",
    "FailPaymentForm",
    "LoginForm",
    "OpenSessionForm",
    "PageForm",
    "PayForm",
    "ReasonForm",
    "RegisterForm",
    "RolloutForm",
    "SubscribeForm",
    "SuspendForm",
    "apply_errors",
    "domain_errors",
    "load",
]

# Plain values, each its own label: WTForms 3.3 deprecates (value, label) tuples, which
# its stubs (types-WTForms 3.2) still require, hence Any.
_PLANS: Any = list(PLANS)
_CYCLES: Any = list(BILLING_CYCLES)
_CURRENCIES: Any = list(CURRENCIES)


class PageForm(FlaskForm):
    """A form of the pages: the CSRF token is checked by the blueprint's guard."""

    class Meta:
        csrf = False


class LoginForm(PageForm):
    token = PasswordField("Token", validators=[InputRequired("Paste a token of the demo.")])


class RegisterForm(PageForm):
    email = StringField("Email")
    full_name = StringField("Full name")
    country = StringField("Country (2 capital letters, e.g. GB)")
    marketing_opt_in = BooleanField("Send me news")


class SuspendForm(PageForm):
    reason = StringField("Reason")


class ReasonForm(PageForm):
    reason = StringField("Reason (optional)")


class SubscribeForm(PageForm):
    plan = SelectField("Plan", choices=_PLANS)
    billing_cycle = SelectField("Billing cycle", choices=_CYCLES)
    currency = SelectField("Currency", choices=_CURRENCIES)
    trial_days = IntegerField(
        f"Free trial (days, 0 to {MAX_TRIAL_DAYS})",
        default=0,
        validators=[Optional()],
    )


class PayForm(PageForm):
    """A one-off payment (a subscription's is made by its "pay" button)."""

    amount_cents = IntegerField("Amount (cents)", validators=[Optional()])
    currency = SelectField("Currency", choices=_CURRENCIES)
    description = StringField("Description")


class FailPaymentForm(PageForm):
    reason = StringField("Why it failed", default="card declined")


class CreateFeatureForm(PageForm):
    key = StringField("Key")
    description = StringField("Description")
    rollout_percentage = IntegerField("Rollout (%)", default=0, validators=[Optional()])


class RolloutForm(PageForm):
    rollout_percentage = IntegerField("Rollout (%)", validators=[Optional()])


class OpenSessionForm(PageForm):
    email = StringField("Email of an active user")


def apply_errors(form: FlaskForm, errors: dict[str, Any]) -> None:
    """Put ``errors`` (field -> messages, as marshmallow gives them) on the form's
    fields; messages of other keys go to the form's own ``form_errors``."""
    for name, messages in errors.items():
        listed = messages if isinstance(messages, list) else [messages]
        text = [m if isinstance(m, str) else str(m) for m in listed]
        field = form._fields.get(name)
        if field is not None:
            field.errors = [*field.errors, *text]
        else:
            form.form_errors.extend(f"{name}: {message}" for message in text)


def load(
    form: FlaskForm, schema: marshmallow.Schema, extra: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The form's values checked as the JSON API checks its body: ``form.validate()``
    (types, choices) and then ``schema``; None, with the messages on the fields,
    when either refuses.

    Empty optional fields are left out, so the schema's defaults apply as in JSON.
    """
    valid = form.validate()
    refused = {name for name, field in form._fields.items() if field.errors}
    body: dict[str, Any] = dict(extra or {})
    for name, field in form._fields.items():
        if name not in schema.fields or name in refused:
            continue
        value = field.data
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        body[name] = value.strip() if isinstance(value, str) else value
    try:
        loaded: dict[str, Any] = schema.load(body, partial=tuple(refused))
    except marshmallow.ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        apply_errors(form, {k: v for k, v in messages.items() if k not in refused})
        return None
    return loaded if valid else None


def domain_errors(form: FlaskForm, exc: ValidationError) -> None:
    """Put the field messages of a manager's :class:`ValidationError` on the form."""
    apply_errors(form, exc.errors or {"_schema": [exc.message]})
