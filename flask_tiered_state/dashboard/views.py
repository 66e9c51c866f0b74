"""The dashboard's views: overview, states, one state, events, tiers, health; and the
two POST actions, retrying deliveries and cancelling a timer (guarded by
:mod:`.forms`)."""

from __future__ import annotations

import re
import time
from typing import Any

from flask import redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from ..app_state import get_app_state
from ..domain.audit import AuditVerifier
from ..domain.manager import StateManager
from ..domain.model import validate_state_id
from ..domain.outbox import check_status
from ..errors import InvalidRequestError, StateNotFoundError, TieredStateError
from . import backups as backup_listing
from . import movements
from .lifecycle import layout
from .queries import (
    EVENT_FILTERS,
    LISTED_STATUSES,
    counts_by_type,
    deliveries,
    history_page,
    parse_filters,
    placement,
    recent_activity,
    searchable_types,
    state_timers,
)

__all__ = [
    "backups",
    "cancel_timer",
    "events",
    "health",
    "index",
    "lookup",
    "retry_events",
    "state",
    "states",
    "tiers",
]

T = "tiered_state_dashboard/"
PER_PAGE_CHOICES = (25, 50, 100)
EVENT_LIMIT_CHOICES = (50, 100, 500)
#: At most this many deliveries are retried by one POST naming them.
MAX_RETRY_IDS = 1000
_TIMER_ID = re.compile(r"[0-9a-f]{32}")


def _manager() -> StateManager:
    return get_app_state().manager


def _int_arg(name: str, default: int, minimum: int = 1, maximum: int = 1_000_000) -> int:
    text = request.args.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or not minimum <= int(text) <= maximum:
        raise InvalidRequestError(
            f"Query parameter {name}={text!r} is invalid; give an integer from {minimum} to "
            f"{maximum}.",
            details={"parameter": name, "value": text},
        )
    return int(text)


def _flag(name: str) -> int | None:
    """A count a redirect after a POST put in the query string, for a banner."""
    text = request.args.get(name, "")
    return int(text) if text.isdigit() and len(text) < 10 else None


def index() -> ResponseReturnValue:
    manager = _manager()
    _, other = searchable_types(manager)
    return render_template(
        T + "index.html",
        counts=counts_by_type(manager),
        statuses=LISTED_STATUSES,
        other_types=other,
        health=manager.get_health_status(),
        activity=recent_activity(manager),
        archives=backup_listing.read_listing(
            get_app_state(), per_page=1, max_manifests=INDEX_MAX_MANIFESTS
        ),
    )


#: The most archive manifests the overview reads for its last backup / checkpoint card.
INDEX_MAX_MANIFESTS = 100


def states() -> ResponseReturnValue:
    manager = _manager()
    warm, other = searchable_types(manager)
    form = {
        "type": request.args.get("type", "").strip(),
        "status": request.args.get("status", "").strip(),
        "q": request.args.get("q", "").strip(),
    }
    per_page = _int_arg("per_page", PER_PAGE_CHOICES[0], maximum=max(PER_PAGE_CHOICES))
    page_number = _int_arg("page", 1)
    error: str | None = None
    page: Any = None
    try:
        filters = parse_filters(form["q"])
        if form["status"]:
            filters["status"] = form["status"]
        page = manager.search_states(
            form["type"] or None, filters or None, page=page_number, per_page=per_page
        )
    except TieredStateError as exc:
        if exc.http_status >= 500:
            raise
        error = exc.message  # a bad type, status or filter: shown above the form
    html = render_template(
        T + "states.html",
        form=form,
        page=page,
        error=error,
        types=warm,
        other_types=other,
        statuses=LISTED_STATUSES,
        per_page=per_page,
        per_page_choices=PER_PAGE_CHOICES,
    )
    return html, 400 if error else 200


def lookup() -> ResponseReturnValue:
    state_id = request.args.get("state_id", "").strip()
    validate_state_id(state_id)
    return redirect(url_for(".state", state_id=state_id))


def state(state_id: str) -> ResponseReturnValue:
    manager = _manager()
    record = manager.get_state(state_id, include_deleted=True)
    if record is None:
        raise StateNotFoundError(state_id)
    history = history_page(manager, state_id, _int_arg("page", 1))
    latest = record["version"]  # every change records its version: the newest row's
    diff_from = _int_arg("from", max(latest - 1, 1))
    diff_to = _int_arg("to", latest)
    # The versions to choose from: this page's (the page bounds the list), and the pair
    # compared, wherever it is.
    versions = sorted({row["version"] for row in history} | {diff_from, diff_to})
    diff: dict[str, Any] | None = None
    diff_error: str | None = None
    status = 200
    if "from" in request.args or "to" in request.args:
        try:
            diff = manager.diff_versions(state_id, diff_from, diff_to)
        except TieredStateError as exc:
            diff_error, status = exc.message, exc.http_status
    spec = manager.get_state_type(record["type"])
    scheduled, finished = state_timers(manager, state_id)
    html = render_template(
        T + "state.html",
        record=record,
        spec=spec,
        history=history,
        versions=versions,
        diff=diff,
        diff_error=diff_error,
        diff_from=diff_from,
        diff_to=diff_to,
        graph=layout(spec.lifecycle, record["status"]),
        where=placement(manager, state_id, spec.home_tier),
        scheduled=scheduled,
        finished=finished,
        cancelled=_flag("cancelled"),
        now=time.time(),
        audit=_audit_badge(manager, state_id),
    )
    return html, status


#: The most history rows the state page verifies for its audit badge.
BADGE_MAX_ROWS = 2000


def _audit_badge(manager: StateManager, state_id: str) -> dict[str, str]:
    """The state's tamper-evidence badge: ``status`` (verified, broken, unsealed, no_key,
    unavailable), its ``text`` and a ``title`` with the details."""
    if manager.audit_sealer is None:
        title = "TIERED_STATE_AUDIT_KEYS is not set: the history is not sealed."
        return {"status": "no_key", "text": "no audit key", "title": title}
    try:
        rows = manager.history.count(state_id)
        if rows > BADGE_MAX_ROWS:  # a page view stays bounded: verify long ones from the CLI
            title = f"flask state audit verify {state_id} checks its {rows} rows."
            return {"status": "unchecked", "text": f"history of {rows} rows not verified here",
                    "title": title}  # fmt: skip
        result = AuditVerifier.for_manager(manager).verify_state(state_id)
    except TieredStateError as exc:
        return {"status": "unavailable", "text": "history not verified", "title": exc.message}
    if result.status == "broken":
        text = f"history broken at version {result.version} ({', '.join(result.what)})"
        title = "; ".join(p.detail for p in result.problems)
    elif result.status == "unsealed":
        text = f"history unsealed ({result.unsealed_rows} of {result.rows} rows)"
        title = "Rows written before TIERED_STATE_AUDIT_KEYS was set: flask state audit seal."
    else:
        text = "history verified"
        title = f"{result.rows} rows, every seal and the current record match."
    return {"status": result.status, "text": text, "title": title}


def cancel_timer(state_id: str, timer_id: str) -> ResponseReturnValue:
    """POST: cancel one of the state's scheduled timers, back to the state's page."""
    validate_state_id(state_id)
    if not _TIMER_ID.fullmatch(timer_id):
        raise InvalidRequestError(
            f"Invalid timer id {timer_id[:100]!r}: a timer id is 32 hexadecimal digits.",
            details={"timer_id": timer_id[:100]},
        )
    cancelled = _manager().cancel_scheduled(timer_id, state_id=state_id)
    target = url_for(".state", state_id=state_id, cancelled=cancelled, _anchor="timers")
    return redirect(target, 303)


def events() -> ResponseReturnValue:
    manager = _manager()
    status = request.args.get("status", "").strip().lower() or None
    if status is not None:
        check_status(status)
    limit = _int_arg("limit", EVENT_LIMIT_CHOICES[1], maximum=max(EVENT_LIMIT_CHOICES))
    return render_template(
        T + "events.html",
        rows=deliveries(manager, status, limit),
        counts=manager.outbox.counts(),
        lag=manager.outbox.oldest_pending_age(time.time()),
        status=status,
        filters=EVENT_FILTERS,
        limit=limit,
        limit_choices=EVENT_LIMIT_CHOICES,
        retried=_flag("retried"),
        now=time.time(),
    )


def retry_events() -> ResponseReturnValue:
    """POST: make the chosen deliveries (``id`` fields) or every dead one
    (``all_dead=1``) due now with fresh attempts, back to the events page."""
    manager = _manager()
    if request.form.get("all_dead") == "1":
        retried = manager.retry_events(all_dead=True)
    else:
        ids = request.form.getlist("id")
        if not ids or len(ids) > MAX_RETRY_IDS or not all(i.isdigit() and len(i) < 19 for i in ids):
            raise InvalidRequestError(
                f"Choose the deliveries to retry: 1 to {MAX_RETRY_IDS} delivery ids (whole "
                "numbers), or all_dead=1 for every dead delivery.",
                details={"ids": [i[:30] for i in ids[:20]]},
            )
        retried = manager.retry_events([int(i) for i in ids])
    back = request.form.get("status", "")
    status = back if back in EVENT_FILTERS else None
    return redirect(url_for(".events", status=status, retried=retried), 303)


def tiers() -> ResponseReturnValue:
    manager = _manager()
    stats = manager.get_storage_stats()
    return render_template(
        T + "tiers.html",
        stats=stats,
        recent_moves=movements.recent_for(manager),
        metrics=manager.get_performance_metrics().get("operations", {}),
    )


def health() -> ResponseReturnValue:
    status = _manager().get_health_status(include_errors=True)
    return render_template(T + "health.html", health=status, meanings=TIER_DOWN_MEANINGS)


#: What a tier that does not answer means for the app, on the health page.
TIER_DOWN_MEANINGS = {
    "hot": "Reads and writes skip it: WARM serves every WARM-home state; states whose home "
    "is HOT (sessions) cannot be read or written. It is checked again with backoff and "
    "used again as soon as it answers.",
    "warm": "The durable home of most states is down: their writes fail and reads find "
    "only cached copies.",
    "cold": "Archived states cannot be read, and nothing can be archived.",
}


def backups() -> ResponseReturnValue:
    """The backups at the app's backup destination, newest first, and the newest
    checkpoint: read from their manifests, never verified here."""
    before = request.args.get("before", "").strip() or None
    per_page = backup_listing.PER_PAGE
    listing = backup_listing.read_listing(get_app_state(), before=before, per_page=per_page)
    return render_template(
        T + "backups.html",
        listing=listing,
        before=before,
        per_page=per_page,
        max_manifests=backup_listing.MAX_MANIFESTS,
    )
