"""``/app/login`` and ``/app/logout``: a token pasted once, remembered in the session."""

from __future__ import annotations

from flask import current_app, flash, redirect, request, session, url_for
from flask.typing import ResponseReturnValue

from ..access import SESSION_KEY, TokenAccess
from .common import page, web
from .forms import LoginForm

__all__ = ["login", "logout"]


def _next_page() -> str:
    """Where to go after logging in: a page of this site only (never another host)."""
    target = request.args.get("next", "")
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("web.users")


@web.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    """Paste a token (``make run`` prints them): admin may do everything, viewer may
    only look."""
    access = current_app.config.get("TIERED_STATE_ACCESS_CONTROL")
    if not isinstance(access, TokenAccess):
        flash("This app uses an access control of its own: the pages need no token.", "ok")
        return redirect(_next_page())
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        actor = access.remember(form.token.data or "")
        if actor is not None:
            flash(f"Logged in as {actor}.", "ok")
            return redirect(_next_page())
        form.token.errors = [
            "This is not a token of the demo. `make run` prints them; so does "
            "`flask --app example_app:create_app api-tokens`."
        ]
        status = 422
    elif form.errors:
        status = 422
    return page("login.html", status, form=form)


@web.post("/logout")
def logout() -> ResponseReturnValue:
    session.pop(SESSION_KEY, None)
    flash("Logged out: the pages ask for a token again.", "ok")
    return redirect(url_for("web.login"))


@web.context_processor
def _logged_in() -> dict[str, object]:
    return {"logged_in": SESSION_KEY in session}
