"""Feature flags (create, roll out, enable, kill) and login sessions (open, close)."""

from __future__ import annotations

from flask import current_app, redirect, request, url_for
from flask.typing import ResponseReturnValue

from .. import accounts
from .. import features as flags
from ..core import user_id_for
from ..schemas import CreateFeatureRequest, LoginRequest, RolloutRequest
from .common import actor, attempt, manager, page, submit, web
from .forms import CreateFeatureForm, OpenSessionForm, RolloutForm

__all__ = [
    "close_session",
    "create_feature",
    "disable",
    "enable",
    "features",
    "open_session",
    "rollout",
    "session_page",
    "sessions",
]


def render_features(
    status: int = 200,
    create_form: CreateFeatureForm | None = None,
    failed_rollout: tuple[str, RolloutForm] | None = None,
) -> ResponseReturnValue:
    found = flags.list_features(manager())
    rollout_forms = {
        flag["data"]["key"]: RolloutForm(
            prefix=f"rollout-{flag['data']['key']}",
            rollout_percentage=flag["data"]["rollout_percentage"],
        )
        for flag in found
    }
    if failed_rollout is not None:
        rollout_forms[failed_rollout[0]] = failed_rollout[1]
    email = request.args.get("email", "").strip()
    checked = None
    if email:
        user_id = user_id_for(email)
        checked = {
            "email": email,
            "user_id": user_id,
            "known": manager().get_state(user_id) is not None,
            "results": [flags.evaluate(flag, user_id) for flag in found],
        }
    return page(
        "features.html",
        status,
        features=found,
        create_form=create_form or CreateFeatureForm(prefix="create"),
        rollout_forms=rollout_forms,
        checked=checked,
    )


@web.get("/features")
def features() -> ResponseReturnValue:
    """Every flag, and whether each is on for one user (``?email=``)."""
    return render_features()


@web.post("/features")
def create_feature() -> ResponseReturnValue:
    form = CreateFeatureForm(prefix="create")
    return submit(
        form,
        CreateFeatureRequest(),
        lambda body: flags.create_feature(manager(), body, actor=actor()),
        "Flag created (off until enabled).",
        again=lambda status: render_features(status, create_form=form),
        then=lambda _: redirect(url_for("web.features")),
    )


@web.post("/features/<key>/rollout")
def rollout(key: str) -> ResponseReturnValue:
    flags.get_feature(manager(), key)  # an unknown flag is a 404, not a form error
    form = RolloutForm(prefix=f"rollout-{key}")
    return submit(
        form,
        RolloutRequest(),
        lambda body: flags.set_rollout(manager(), key, body["rollout_percentage"], actor=actor()),
        lambda flag: f"{key}: rollout set to {flag['data']['rollout_percentage']}%.",
        again=lambda status: render_features(status, failed_rollout=(key, form)),
        then=lambda _: redirect(url_for("web.features")),
    )


@web.post("/features/<key>/enable")
def enable(key: str) -> ResponseReturnValue:
    attempt(lambda: flags.enable_feature(manager(), key, actor=actor()), f"{key} is on.")
    return redirect(url_for("web.features"))


@web.post("/features/<key>/disable")
def disable(key: str) -> ResponseReturnValue:
    attempt(lambda: flags.disable_feature(manager(), key, actor=actor()), f"{key} is off.")
    return redirect(url_for("web.features"))


# -- login sessions ------------------------------------------------------------------


def _ttl() -> int:
    ttl: int = current_app.extensions["credit_system"].session_ttl_seconds
    return ttl


@web.get("/sessions")
def sessions(form: OpenSessionForm | None = None, status: int = 200) -> ResponseReturnValue:
    """Open a user's login session, or look one up by its id."""
    wanted = request.args.get("session_id", "").strip()
    if wanted:
        return redirect(url_for("web.session_page", session_id=wanted))
    return page("sessions.html", status, form=form or OpenSessionForm(), ttl=_ttl())


@web.post("/sessions")
def open_session() -> ResponseReturnValue:
    form = OpenSessionForm()
    return submit(
        form,
        LoginRequest(),
        lambda body: accounts.login(
            manager(),
            body["email"],
            ttl_seconds=_ttl(),
            user_agent=request.user_agent.string,
            remote_addr=request.remote_addr,
        ),
        "Logged in: a SESSION state in the HOT tier, gone when its TTL runs out.",
        again=lambda status: sessions(form, status),
        then=lambda opened: redirect(url_for("web.session_page", session_id=opened["state_id"])),
    )


@web.get("/sessions/<session_id>")
def session_page(session_id: str) -> ResponseReturnValue:
    record = accounts.get_session(manager(), session_id)
    return page("session.html", session=record, user=manager().get_state(record["data"]["user_id"]))


@web.post("/sessions/<session_id>/close")
def close_session(session_id: str) -> ResponseReturnValue:
    attempt(lambda: accounts.logout(manager(), session_id), "Logged out: the session is deleted.")
    return redirect(url_for("web.sessions"))
