"""The protection of the dashboard's forms that change something (POST).

A POST of the dashboard (retrying deliveries, cancelling a timer) passes the
access-control hook like every page, with its own action, and is then accepted only
when both hold:

1. **Same origin.** Its ``Origin`` header -- which browsers send with every POST -- or,
   without one, its ``Referer`` names the scheme, host and port the request was made
   to; a ``Sec-Fetch-Site`` header, when sent, says ``same-origin``. A page of another
   site cannot forge the request, and neither can a request that says nothing of
   where it comes from.
2. **CSRF token.** Its ``csrf_token`` form field equals the dashboard's token cookie
   (the double-submit pattern): a random token, set as an ``HttpOnly``,
   ``SameSite=Strict`` cookie scoped to the dashboard's prefix and rendered into each
   of its forms. It needs neither the app's session nor its ``SECRET_KEY``.

Behind a reverse proxy the app must see the host and scheme the browser used (e.g.
werkzeug's ``ProxyFix``), or the origin check refuses every POST.
"""

from __future__ import annotations

import hmac
import re
import secrets
from urllib.parse import urlsplit

from flask import g, request, url_for
from flask.wrappers import Response
from markupsafe import Markup

from ..errors import AccessDeniedError

__all__ = ["CSRF_COOKIE", "CSRF_FIELD", "check_post", "csrf_field", "csrf_token", "set_cookie"]

#: The cookie holding the dashboard's CSRF token.
CSRF_COOKIE = "tiered_state_dashboard_csrf"
#: The form field every POST form of the dashboard carries the token in.
CSRF_FIELD = "csrf_token"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
_G_TOKEN = "tiered_state_dashboard_csrf"
_G_NEW = "tiered_state_dashboard_csrf_new"


def csrf_token() -> str:
    """The token of this browser (from its cookie), or a new one the response sets."""
    token = g.get(_G_TOKEN)
    if isinstance(token, str):
        return token
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if _TOKEN.fullmatch(cookie):
        token = cookie
    else:
        token = secrets.token_urlsafe(32)
        setattr(g, _G_NEW, True)
    setattr(g, _G_TOKEN, token)
    return token


def csrf_field() -> Markup:
    """The hidden input carrying the token, for the templates' POST forms."""
    return Markup('<input type="hidden" name="{}" value="{}">').format(CSRF_FIELD, csrf_token())


def set_cookie(response: Response) -> Response:
    """Set the token cookie when this request made a new token."""
    if g.get(_G_NEW):
        response.set_cookie(
            CSRF_COOKIE,
            csrf_token(),
            path=url_for(".index"),
            httponly=True,
            secure=request.is_secure,
            samesite="Strict",
        )
    return response


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def _refuse(reason: str) -> AccessDeniedError:
    return AccessDeniedError(
        f"This dashboard action was refused: {reason}. Its buttons work only from the "
        "dashboard's own pages; reload the page and submit its form again.",
        details={"reason": reason},
    )


def check_post() -> None:
    """Refuse a POST that is not from the dashboard's own origin with its token.

    :raises AccessDeniedError: (403) saying which check failed.
    """
    expected = f"{request.scheme}://{request.host}".lower()
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site != "same-origin":
        raise _refuse(f"the browser says it comes from a {fetch_site} page")
    origin = request.headers.get("Origin")
    if origin is not None:
        if _origin(origin) != expected:
            raise _refuse(f"it comes from {origin[:200]!r}, not from {expected!r}")
    else:
        referrer = request.headers.get("Referer")
        if referrer is None:
            raise _refuse("it names no origin (no Origin or Referer header)")
        if _origin(referrer) != expected:
            raise _refuse(f"it comes from another site than {expected!r}")
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = request.form.get(CSRF_FIELD, "")
    if not _TOKEN.fullmatch(cookie) or not hmac.compare_digest(cookie, sent):
        raise _refuse("its CSRF token is missing or does not match this browser's")
