"""``flask state ...``: inspect and operate an app's domain states.

The group is registered twice over on purpose, as the same object: the
``flask.commands`` entry point (``flask_tiered_state.cli:state_cli``) makes
``flask state`` appear for every app (the commands load the app like any Flask
command), and ``init_app`` adds it to ``app.cli`` when ``TIERED_STATE_CLI`` is True,
so ``app.test_cli_runner()`` and custom command groups see it too. Either way each
command first checks the app: without the extension, or with
``TIERED_STATE_CLI = False``, it exits with one line saying so.

Commands print text for people (``stats`` as tables), the same with or without a
terminal; ``--json`` prints stable, machine-readable output on stdout instead, and a
command with a REST twin prints the body of its route, built by the same function
(``history`` and ``health`` by :mod:`flask_tiered_state.api.routes`' ``*_body``).
Commands over several states show a progress bar on stderr (its label alone without
a terminal). Exit status: 0 done; 1 failed or refused (one ``Error: ...`` line, a
validation error's field messages under it); 2 bad usage (click's, and a value the
library refuses by its form: a state id, glob, filter, JSON, transition or type
name; see :func:`bad_usage` and :func:`checked`). ``flask state --as ROLE <command>``
runs the command inside the manager's ``acting_as(ROLE)``.

``events`` and ``timers`` are groups that list when called alone and act through
their subcommands (``events retry``, ``timers cancel``); ``dispatch`` runs the
:class:`~flask_tiered_state.domain.dispatcher.EventDispatcher` until SIGTERM or
SIGINT (or, with ``--once``, until nothing is left to do).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime, timezone
from types import FrameType
from typing import Any, TypeVar

import click
from click.core import ParameterSource
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from sqlalchemy.exc import SQLAlchemyError

from .api.routes import health_body, history_body, recent_history_body
from .app_state import AppState, get_app_state
from .domain.arguments import (
    MAX_ROW_ID,
    MAX_VERSION,
    UPDATE_TRANSITIONS,
    check_actor_reason,
    check_transition,
)
from .domain.context import correlation_scope
from .domain.dispatcher import DispatchReport, EventDispatcher
from .domain.manager import StateManager
from .domain.model import state_key, validate_state_id
from .domain.paging import DEFAULT_PER_PAGE, MAX_PAGE, MAX_PER_PAGE, Page
from .domain.timers import TIMER_STATUSES
from .errors import (
    InvalidKeyError,
    InvalidPatternError,
    InvalidRequestError,
    InvalidStateTypeError,
    JSONTooDeepError,
    StateNotFoundError,
    TieredStateError,
    ValidationError,
)
from .json_codec import check_json_depth

__all__ = ["state_cli"]

# -- the group, its command decorator and the app's manager --------------------------------


F = TypeVar("F", bound=Callable[..., Any])

#: Where ``--as`` keeps its role for the commands (``meta`` is shared by the contexts of
#: one invocation).
_AS_ROLE = "flask_tiered_state.as_role"


def _remember_role(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.meta[_AS_ROLE] = value


#: The ``flask state`` command group.
state_cli = AppGroup(
    "state",
    help="Inspect and operate the app's domain states.",
    params=[
        click.Option(
            ["--as", "as_role"],
            metavar="ROLE",
            expose_value=False,
            callback=_remember_role,
            help="Act as ROLE of the app's role map (TIERED_STATE_ACCESS_CONTROL = "
            "RoleBasedAccess(...)): what the role may not do is refused.",
        )
    ],
)


def app_state() -> AppState:
    """The current app's :class:`AppState`; exit 1 when the app has no extension or no CLI."""
    try:
        state = get_app_state()
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    if not state.settings.cli:
        raise click.ClickException(
            f"The 'flask state' commands are disabled for app {state.app_name!r} "
            "(TIERED_STATE_CLI = False)."
        )
    return state


def app_manager() -> StateManager:
    """The current app's manager; exit 1 when the app has no extension or no CLI."""
    return app_state().manager


def acting_role() -> AbstractContextManager[object]:
    """The manager acting as the role of ``flask state --as ROLE``; nothing without it.

    :raises click.UsageError: (exit 2) the app has no role map, or not that role.
    """
    ctx = click.get_current_context(silent=True)
    role = None if ctx is None else ctx.meta.get(_AS_ROLE)
    if role is None:
        return nullcontext()
    manager = app_manager()
    roles = manager.roles
    if roles is None:
        raise click.UsageError(
            f"--as {role} needs a role map, and app {app_state().app_name!r} has none: set "
            "TIERED_STATE_ACCESS_CONTROL to a RoleBasedAccess (see the Security page of the "
            "docs)."
        )
    if role not in roles.role_names:
        raise click.BadParameter(
            f"unknown role {role!r}; the app's roles are: {', '.join(roles.role_names)}.",
            param_hint="'--as'",
        )
    return manager.acting_as(role)


#: Exit status of a command that ran and failed (or was refused): ``Error: ...``.
EXIT_FAILED = 1

#: Library errors about the form of a value (the REST API answers them 400 or 422).
_FORM_ERRORS = (InvalidRequestError, InvalidKeyError, InvalidPatternError, InvalidStateTypeError)


@contextmanager
def bad_usage(param_hint: str) -> Iterator[None]:
    """The library's refusal of a command-line value's form (a state id, glob, filter,
    transition or type name) as bad usage (exit 2) naming the option or argument."""
    try:
        yield
    except _FORM_ERRORS as exc:
        if exc.http_status not in (400, 422):  # about the state as it is: a failure
            raise
        ctx = click.get_current_context(silent=True)
        raise click.BadParameter(exc.message, ctx, param_hint=param_hint) from None


def checked(check: Callable[[Any], object]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click parameter callback: ``check(value)`` (of each value of a repeated one)
    before the command runs; the library's refusal is bad usage (exit 2)."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return value
        for item in value if isinstance(value, tuple) else (value,):
            try:
                check(item)
            except _FORM_ERRORS as exc:
                raise click.BadParameter(exc.message, ctx, param) from None
        return value

    return callback


#: Callbacks of the options and arguments the library's own checks refuse by form.
STATE_ID = checked(validate_state_id)
TRANSITION = checked(lambda value: check_transition(value, UPDATE_TRANSITIONS, what="transition"))
ANY_TRANSITION = checked(lambda value: check_transition(value, what="transition"))
ACTOR = checked(lambda value: check_actor_reason(value, None))
REASON = checked(lambda value: check_actor_reason(None, value))


def field_lines(errors: Any, path: str = "") -> list[str]:
    """A validation error's field messages as ``path: message`` lines, by field name,
    nested fields joined by dots (``data.plan: Unknown field.``), as REST's
    ``details.errors`` has them."""
    if isinstance(errors, dict):
        lines: list[str] = []
        for name, value in sorted(errors.items(), key=lambda item: str(item[0])):
            lines += field_lines(value, f"{path}.{name}" if path else str(name))
        return lines
    if isinstance(errors, (list, tuple)) and all(isinstance(e, str) for e in errors):
        return [f"{path or '_schema'}: {' '.join(errors)}"]
    if isinstance(errors, (list, tuple)):
        return [line for e in errors for line in field_lines(e, path)]
    return [f"{path or '_schema'}: {errors}"]


class CommandError(click.ClickException):
    """A failure (exit 1): one ``Error: <message>`` line on stderr, then ``details``,
    each indented by two spaces (a validation error's field messages)."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.details = list(details)

    def format_message(self) -> str:
        return "\n".join([self.message, *(f"  {line}" for line in self.details)])


def command_error(exc: TieredStateError) -> click.ClickException:
    """The click exception a library error exits with: 1 and one ``Error:`` line (a
    validation error's field messages under it)."""
    if isinstance(exc, ValidationError):
        return CommandError(exc.message, field_lines(exc.errors))
    return CommandError(exc.message)


def _guarded(fn: F) -> Callable[..., Any]:
    """``fn`` under a ``cli-<hex>`` correlation id (and acting as the role of ``--as``),
    its library errors (and a database's refusal) exiting 1 with one ``Error:`` line (see
    :func:`command_error`)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            with correlation_scope(f"cli-{uuid.uuid4().hex}"), acting_role():
                return fn(*args, **kwargs)
        except TieredStateError as exc:
            raise command_error(exc) from None
        except SQLAlchemyError as exc:
            raise CommandError(database_refusal(exc)) from None

    return run


def database_refusal(exc: SQLAlchemyError) -> str:
    """``The database refused: <the driver's first line>``."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip()
    return f"The database refused: {text.splitlines()[0] if text else type(cause).__name__}"


def command(name: str, group: click.Group = state_cli) -> Callable[[F], F]:
    """A ``flask state`` command (of ``group``) that runs under a ``cli-<hex>``
    correlation id and whose library errors exit 1 with one line."""

    def decorate(fn: F) -> F:
        group.command(name)(_guarded(fn))
        return fn

    return decorate


def listing_group(name: str) -> Callable[[F], click.Group]:
    """A ``flask state NAME`` group whose own callback lists (it runs without a
    subcommand) and whose subcommands act; it gets the context as first argument."""

    def decorate(fn: F) -> click.Group:
        return state_cli.group(name, invoke_without_command=True)(
            with_appcontext(click.pass_context(_guarded(fn)))
        )

    return decorate


def refuse_listing_options(ctx: click.Context) -> None:
    """Bad usage when the listing's own options come with a subcommand."""
    given = [
        max(param.opts, key=len)
        for param in ctx.command.params
        if param.name is not None
        and ctx.get_parameter_source(param.name) not in (None, ParameterSource.DEFAULT)
    ]
    if given:
        raise click.UsageError(
            f"{', '.join(given)} {'belongs' if len(given) == 1 else 'belong'} to the listing "
            f"('flask state {ctx.info_name}'), not "
            f"to '{ctx.invoked_subcommand}'; give a subcommand's options after its name."
        )


# -- options and their parsing -------------------------------------------------------------


#: ``--json``: print machine-readable output.
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def json_object(text: str | None, what: str) -> dict[str, Any] | None:
    """``text`` parsed as a JSON object (None stays None); bad usage otherwise."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"{what} must be JSON: {exc}") from None
    except RecursionError:
        limit = app_manager().max_json_depth
        error = JSONTooDeepError(what, limit, field=what.lstrip("-"), parsed=False)
        raise click.BadParameter(error.message) from None
    if not isinstance(value, dict):
        raise click.BadParameter(f"{what} must be a JSON object, not {type(value).__name__}.")
    try:
        check_json_depth(value, app_manager().max_json_depth, what=what, field=what.lstrip("-"))
    except JSONTooDeepError as exc:
        raise click.BadParameter(exc.message) from None
    return value


def known_type(manager: StateManager, name: str, param_hint: str = "'--type'") -> str:
    """A state type's name given on the command line (any case), if the app has it; bad
    usage (exit 2) otherwise."""
    with bad_usage(param_hint):
        return manager.get_state_type(name.lower()).name


def path_filters(items: Iterable[str]) -> dict[str, Any]:
    """``PATH=VALUE`` items as search filters; a value is JSON when it parses, else text."""
    filters: dict[str, Any] = {}
    for item in items:
        path, sep, text = item.partition("=")
        if not sep or not path:
            raise click.BadParameter(f"{item!r} is not PATH=VALUE.", param_hint="--filter")
        try:
            filters[path] = json.loads(text)
        except (ValueError, RecursionError):
            filters[path] = text
    return filters


# -- printing ------------------------------------------------------------------------------


def echo_json(value: Any) -> None:
    """Print ``value`` as stable JSON: keys sorted, indented by two spaces."""
    click.echo(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str))


def count(number: int, noun: str, plural: str | None = None) -> str:
    """``"1 state"``, ``"2 states"``; ``plural`` when it is not ``noun + "s"``."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def record_line(record: dict[str, Any]) -> str:
    """One state on one line: id, type, status, version, last change."""
    return (
        f"{record['state_id']}  {record['type']}  {record['status']}  "
        f"v{record['version']}  {record['updated_at']}"
    )


def moment(epoch: float | None) -> str:
    """Epoch seconds as an ISO 8601 UTC time to the second; ``-`` for None."""
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds")


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """Rows as aligned text columns under ``headers``."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(head), *(len(row[i]) for row in cells)]) for i, head in enumerate(headers)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [list(headers), *cells]
    ]


def shortened(text: str | None, width: int = 60) -> str:
    """``text`` on one line, cut to ``width`` characters; ``-`` for none."""
    if not text:
        return "-"
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 3] + "..."


def page_lines(page: Page[dict[str, Any]]) -> list[str]:
    """A search result page as text: one line per state, then where the page is.

    A search without results says so (its page object has ``pages == 0``, as over the
    REST API); a page past the last one says how many pages there are.
    """
    if page.total == 0:
        return ["No states match."]
    if not page.items:
        verb = "matches" if page.total == 1 else "match"
        return [
            f"Page {page.page} is past the last page ({page.pages}); "
            f"{count(page.total, 'state')} {verb}."
        ]
    if page.total_exact:
        summary = f"page {page.page} of {page.pages}, {count(page.total, 'state')}"
    else:
        summary = f"page {page.page} of {page.pages:,}+, {page.total:,}+ states"
    return [*(record_line(record) for record in page.items), summary]


# -- reading commands ----------------------------------------------------------------------


@command("list")
@click.option("--type", "state_type", help="Only states of this type.")
@click.option("--status", help="Only states in this status.")
@click.option(
    "--filter",
    "filters",
    multiple=True,
    metavar="PATH=VALUE",
    help="Equality filter on a dotted path (data.plan=pro); repeatable.",
)
@click.option("--page", type=click.IntRange(1, MAX_PAGE), default=1, show_default=True)
@click.option("--per-page", type=click.IntRange(1, MAX_PER_PAGE), default=50, show_default=True)
@json_option
def list_states(
    state_type: str | None,
    status: str | None,
    filters: tuple[str, ...],
    page: int,
    per_page: int,
    as_json: bool,
) -> None:
    """List states, newest first."""
    where = path_filters(filters)
    if status is not None:
        where["status"] = status.lower()
    manager = app_manager()
    name = None if state_type is None else known_type(manager, state_type)
    with bad_usage("'--filter'" if filters else "'--status'"):
        result = manager.search_states(name, where or None, page=page, per_page=per_page)
    if as_json:
        echo_json(result.to_dict())  # the same page object as GET /states
        return
    for line in page_lines(result):
        click.echo(line)


@command("show")
@click.argument("state_id", callback=STATE_ID)
@click.option("--include-deleted", is_flag=True, help="Show a deleted state's tombstone.")
@json_option
def show(state_id: str, include_deleted: bool, as_json: bool) -> None:
    """Show a state's current record."""
    record = app_manager().get_state(state_id, include_deleted=include_deleted)
    if record is None:
        raise StateNotFoundError(state_id)
    if as_json:
        echo_json(record)
        return
    for key in ("state_id", "name", "type", "status", "version", "created_at", "updated_at"):
        click.echo(f"{key}: {record[key]}")
    click.echo(f"data: {json.dumps(record['data'], sort_keys=True, ensure_ascii=False)}")
    click.echo(f"metadata: {json.dumps(record['metadata'], sort_keys=True, ensure_ascii=False)}")


@command("history")
@click.argument("state_id", callback=STATE_ID)
@click.option("--page", type=click.IntRange(1, MAX_PAGE), default=1, show_default=True)
@click.option(
    "--per-page", type=click.IntRange(1, MAX_PER_PAGE), default=DEFAULT_PER_PAGE, show_default=True
)
@click.option("--limit", type=click.IntRange(1, 1000), help="Only the latest N, newest first.")
@click.option("--transition", callback=ANY_TRANSITION, help="Only changes made by this transition.")
@json_option
def history(
    state_id: str,
    page: int,
    per_page: int,
    limit: int | None,
    transition: str | None,
    as_json: bool,
) -> None:
    """Show a state's history of changes, a page at a time, oldest first."""
    manager = app_manager()
    if limit is not None:
        ctx = click.get_current_context()
        others = [
            f"--{name.replace('_', '-')}"
            for name in ("page", "per_page", "transition")
            if ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)
        ]
        if others:
            raise click.UsageError(
                f"--limit (the latest N changes) goes alone, not with {', '.join(others)}; "
                "page through the history with --page and --per-page instead."
            )
        body = recent_history_body(manager, state_id, limit)
    else:
        body = history_body(
            manager, state_id, transition=transition and transition.lower(), page=page,
            per_page=per_page,
            link=api_link("state_history"),
        )  # fmt: skip
    if as_json:
        echo_json(body)  # the body of GET .../history, built by the same function
        return
    for row in body["items"]:
        who = f"  by {row['actor']}" if row["actor"] else ""
        why = f"  ({row['reason']})" if row["reason"] else ""
        click.echo(
            f"v{row['version']}  {row['created_at']}  {row['transition']}  "
            f"{row['from_status'] or '-'} -> {row['to_status']}{who}{why}"
        )
    if "page" in body:
        click.echo(history_summary(body))


def history_summary(page: dict[str, Any]) -> str:
    """Where a page of history (as :func:`history_body` has it) is: ``page 1 of 3, 120
    changes``; or why it is empty."""
    total, pages = page["total"], page["pages"]
    if total == 0:
        return "No changes match."
    if not page["items"]:
        return f"Page {page['page']} is past the last page ({pages}); {count(total, 'change')}."
    return f"page {page['page']} of {pages}, {count(total, 'change')}"


def api_link(endpoint: str) -> Callable[[dict[str, Any]], str] | None:
    """A link builder for the REST API's ``endpoint`` in the current app, as its views
    build their ``next`` links (a path under ``APPLICATION_ROOT``); None when the app
    does not serve the API (``TIERED_STATE_API_PREFIX`` unset)."""
    from .api.routes import BLUEPRINT_NAME

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    name = f"{BLUEPRINT_NAME}.{endpoint}"
    if name not in app.view_functions:
        return None
    adapter = app.url_map.bind("localhost", script_name=app.config["APPLICATION_ROOT"])

    def link(values: dict[str, Any]) -> str:
        return str(adapter.build(name, values))

    return link


@command("diff")
@click.argument("state_id", callback=STATE_ID)
@click.argument("from_version", type=click.IntRange(1, MAX_VERSION))
@click.argument("to_version", type=click.IntRange(1, MAX_VERSION))
@json_option
def diff(state_id: str, from_version: int, to_version: int, as_json: bool) -> None:
    """Show what changed between two versions."""
    result = app_manager().diff_versions(state_id, from_version, to_version)
    if as_json:
        echo_json(result)
        return
    for path, value in result["added"].items():
        click.echo(f"+ {path} = {json.dumps(value, ensure_ascii=False)}")
    for path, value in result["removed"].items():
        click.echo(f"- {path} = {json.dumps(value, ensure_ascii=False)}")
    for path, change in result["changed"].items():
        click.echo(
            f"~ {path}: {json.dumps(change['from'], ensure_ascii=False)} -> "
            f"{json.dumps(change['to'], ensure_ascii=False)}"
        )
    if not (result["added"] or result["removed"] or result["changed"]):
        click.echo("no differences")


@command("keys")
@click.argument("pattern")
@json_option
def keys(pattern: str, as_json: bool) -> None:
    """List the ids of stored states matching a glob (* and ?), tombstones included."""
    with bad_usage("'PATTERN'"):
        ids = app_manager().get_keys_by_pattern(pattern)
    if as_json:
        echo_json(ids)
        return
    for state_id in ids:
        click.echo(state_id)


@command("stats")
@json_option
def stats(as_json: bool) -> None:
    """Show storage statistics: tiers, cache, movements, invalidation and history."""
    result = app_manager().get_storage_stats()
    if as_json:
        echo_json(result)
        return
    for line in stats_lines(result):
        click.echo(line)


#: The columns of the tiers' table in ``flask state stats``: field, heading.
TIER_COLUMNS = (
    ("backend", "backend"),
    ("available", "available"),
    ("key_count", "keys"),
    ("bytes", "size"),
    ("hits", "hits"),
    ("misses", "misses"),
    ("hit_rate", "hit rate"),
)


def stat_value(name: str, value: Any) -> str:
    """One figure of the statistics as text: rates as percentages, byte counts as sizes,
    booleans as yes/no, None as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)) and name.endswith("rate"):
        return f"{value * 100:.1f} %"
    if isinstance(value, int) and name.split(".")[-1] in ("bytes", "max_bytes"):
        return size_text(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return str(value)


def flat_items(value: dict[str, Any], path: str = "") -> list[tuple[str, Any]]:
    """A nested mapping's leaves as ``(dotted.path, value)`` pairs, in order."""
    pairs: list[tuple[str, Any]] = []
    for name, item in value.items():
        key = f"{path}.{name}" if path else str(name)
        if isinstance(item, dict) and item:
            pairs += flat_items(item, key)
        else:
            pairs.append((key, item))
    return pairs


def tier_health(health: Any) -> str:
    """A tier's health entry in a few words: ``ok``, or its failures and next check."""
    if not isinstance(health, dict):
        return stat_value("health", health)
    if health.get("healthy", True) and not health.get("failures"):
        return "ok"
    parts = [f"{count(int(health.get('failures') or 0), 'failure')}"]
    if health.get("next_check_in_seconds") is not None:
        parts.append(f"next check in {health['next_check_in_seconds']:.1f} s")
    if health.get("pending_drops"):
        parts.append(f"{health['pending_drops']} pending drops")
    state = "healthy" if health.get("healthy", True) else "failing"
    return f"{state} ({', '.join(parts)})"


def stats_lines(result: dict[str, Any]) -> list[str]:
    """``get_storage_stats()`` as text: a table of the tiers (their other figures
    listed under it), then each other section as a table of its figures."""
    lines: list[str] = []
    tiers: dict[str, Any] = result.get("tiers") or {}
    if tiers:
        lines.append("Tiers")
        rows = [
            (tier, *(stat_value(field, info.get(field)) for field, _ in TIER_COLUMNS),
             tier_health(info.get("health")))
            for tier, info in tiers.items()
        ]  # fmt: skip
        lines += table(("tier", *(head for _, head in TIER_COLUMNS), "health"), rows)
        shown = {field for field, _ in TIER_COLUMNS} | {"category", "health"}
        for tier, info in tiers.items():
            others = [(k, v) for k, v in info.items() if k not in shown]
            health = info.get("health")
            if isinstance(health, dict) and health.get("last_error"):
                others.append(("last_error", health["last_error"]))
            if others:
                lines.append(
                    f"  {tier}: " + ", ".join(f"{k.replace('_', ' ')} {stat_value(k, v)}"
                                              for k, v in others)
                )  # fmt: skip
    for section, value in result.items():
        if section == "tiers":
            continue
        title = section.replace("_", " ").capitalize()
        if isinstance(value, dict):
            lines.append("")
            lines.append(title)
            lines += table(
                ("figure", "value"),
                [(name.replace("_", " "), stat_value(name, item))
                 for name, item in flat_items(value)],
            )  # fmt: skip
        else:
            lines.append("")
            lines.append(f"{title}: {stat_value(section, value)}")
    return lines


@command("health")
@json_option
def health(as_json: bool) -> None:
    """Check every tier; exit 1 when unhealthy (the WARM tier is down)."""
    result = health_body(app_manager())  # the body of GET /health
    if as_json:
        echo_json(result)
    else:
        click.echo(f"status: {result['status']}")
        for tier, info in result["tiers"].items():
            up = "available" if info["available"] else "UNAVAILABLE"
            click.echo(f"  {tier} ({info['backend']}): {up}")
    if result["status"] == "unhealthy":
        click.get_current_context().exit(1)


@command("graph")
@click.argument("state_type")
@json_option
def graph(state_type: str, as_json: bool) -> None:
    """Print a type's lifecycle as a Mermaid stateDiagram-v2."""
    manager = app_manager()
    spec = manager.get_state_type(known_type(manager, state_type, "'STATE_TYPE'"))
    mermaid = spec.lifecycle.to_mermaid()
    if not as_json:
        click.echo(mermaid)
        return
    edges = [
        {"from": source.value, "transition": transition.value,
         "to": (target or source).value}
        for transition, (sources, target) in spec.lifecycle.rules.items()
        for source in sources
    ]  # fmt: skip
    echo_json(
        {
            "type": spec.name,
            "initial_status": spec.lifecycle.initial_status.value,
            "transitions": edges,
            "mermaid": mermaid,
        }
    )


# -- commands that change states or tables -------------------------------------------------


@command("transition")
@click.argument("state_id", callback=STATE_ID)
@click.argument("transition", callback=TRANSITION)
@click.option("--data", "data_json", metavar="JSON", help="New data (a JSON object).")
@click.option("--metadata", "metadata_json", metavar="JSON", help="New metadata (JSON object).")
@click.option("--name", help="A new display name.")
@click.option("--merge", is_flag=True, help="Merge --data/--metadata into the current ones.")
@click.option(
    "--expected-version",
    type=click.IntRange(1, MAX_VERSION),
    help="Refuse unless at this version.",
)
@click.option("--actor", callback=ACTOR, help="Who makes the change (recorded in history).")
@click.option("--reason", callback=REASON, help="Why (recorded in history).")
@json_option
def transition(
    state_id: str,
    transition: str,
    data_json: str | None,
    metadata_json: str | None,
    name: str | None,
    merge: bool,
    expected_version: int | None,
    actor: str | None,
    reason: str | None,
    as_json: bool,
) -> None:
    """Apply TRANSITION (activate, suspend, resume, expire, delete, update) to a state."""
    changes: dict[str, Any] = {}
    if data_json is not None:
        changes["data"] = json_object(data_json, "--data")
    if metadata_json is not None:
        changes["metadata"] = json_object(metadata_json, "--metadata")
    if name is not None:
        changes["name"] = name
    record = app_manager().update_state(
        state_id,
        changes or None,
        transition,
        expected_version=expected_version,
        actor=actor,
        reason=reason,
        merge=merge,
    )
    if as_json:
        echo_json(record)
    else:
        click.echo(f"{state_id}: {transition.lower()} -> {record['status']} (version "
                   f"{record['version']})")  # fmt: skip


@command("rollback")
@click.argument("state_id", callback=STATE_ID)
@click.argument("to_version", type=click.IntRange(1, MAX_VERSION))
@click.option("--actor", callback=ACTOR, help="Who makes the change (recorded in history).")
@click.option("--reason", callback=REASON, help="Why (recorded in history).")
@json_option
def rollback(
    state_id: str, to_version: int, actor: str | None, reason: str | None, as_json: bool
) -> None:
    """Restore version TO_VERSION of a state as a new version."""
    record = app_manager().rollback_state(state_id, to_version, actor=actor, reason=reason)
    if as_json:
        echo_json(record)
    else:
        click.echo(f"{state_id}: restored version {to_version} as version {record['version']} "
                   f"({record['status']})")  # fmt: skip


#: How many ids of each outcome ``promote`` / ``demote`` list in their text output.
LISTED_IDS = 20


def embedded_warning(manager: StateManager, promoting: bool) -> str | None:
    """The warning of ``promote`` / ``demote`` in embedded mode (the HOT tier is this
    process's memory, with no invalidation channel): other processes do not see it."""
    if manager.get_repositories().hot.backend != "memory":
        return None
    if promoting:
        return (
            "Warning: embedded mode: the HOT tier is this command's own memory, so these "
            "copies end with it and the app's other processes (its server) do not see them. "
            "Promote inside the app's process, or set TIERED_STATE_HOT_URL to a redis:// URL."
        )
    return (
        "Warning: embedded mode: the app's other processes (its server) are not told of "
        "this change; they serve their cached copies (local cache, in-memory HOT tier) "
        "until those expire. Set TIERED_STATE_HOT_URL to a redis:// URL for a shared HOT tier."
    )


def id_list(ids: Sequence[str]) -> str:
    """Ids separated by commas, the first :data:`LISTED_IDS` of them."""
    shown = ", ".join(ids[:LISTED_IDS])
    more = len(ids) - LISTED_IDS
    return f"{shown} and {more} more (--json lists them all)" if more > 0 else shown


def _move(
    ids: tuple[str, ...],
    pattern: str | None,
    as_json: bool,
    verb: str,
    move: Callable[[StateManager, str], bool],
) -> None:
    """Move each state on its own and report each id's outcome: moved, unchanged (it
    was there already), or failed and why; exit 1 when any failed."""
    manager = app_manager()
    manager.authorize("states.promote" if verb == "promoted" else "states.demote")
    targets = list(dict.fromkeys(ids))
    if pattern is not None:
        with bad_usage("'--pattern'"):
            matched = manager.get_keys_by_pattern(pattern)
        targets = list(dict.fromkeys([*targets, *matched]))
    if not targets and pattern is None:
        raise click.UsageError("Give one or more STATE_IDS, or --pattern.")
    if not targets:
        click.echo(f"No state id matches {pattern!r}.", err=True)
    moved: list[str] = []
    unchanged: list[str] = []
    failed: dict[str, str] = {}
    bar: Any = nullcontext(targets)
    if len(targets) > 1 or (pattern is not None and targets):
        bar = click.progressbar(
            targets, label=f"{verb.capitalize()} {count(len(targets), 'state')}", file=sys.stderr
        )
    with bar as states:
        for state_id in states:
            try:
                (moved if move(manager, state_id) else unchanged).append(state_id)
            except TieredStateError as exc:
                failed[state_id] = exc.message
            except SQLAlchemyError as exc:
                failed[state_id] = database_refusal(exc)
    warning = embedded_warning(manager, promoting=verb == "promoted") if moved else None
    if warning is not None:
        click.echo(warning, err=True)
    if as_json:
        echo_json({"moved": moved, "unchanged": unchanged, "failed": failed})
    else:
        click.echo(f"{verb}: {len(moved)}, unchanged: {len(unchanged)}, failed: {len(failed)}")
        if moved:
            click.echo(f"  {verb}: {id_list(moved)}")
        if unchanged:
            where = "in HOT" if verb == "promoted" else "in COLD"
            click.echo(f"  unchanged (already {where}): {id_list(unchanged)}")
        for state_id, message in failed.items():
            click.echo(f"  failed: {state_id}: {message}")
    if failed:
        raise CommandError(
            f"{len(failed)} of {count(len(targets), 'state')} failed "
            f"({len(moved)} {verb}, {len(unchanged)} unchanged)."
        )


@command("promote")
@click.argument("state_ids", nargs=-1, callback=STATE_ID)
@click.option("--pattern", help="Also every state id matching this glob.")
@click.option("--ttl", type=click.IntRange(min=1), help="TTL of the HOT copy, in seconds.")
@json_option
def promote(
    state_ids: tuple[str, ...], pattern: str | None, ttl: int | None, as_json: bool
) -> None:
    """Copy states to the HOT tier."""
    _move(state_ids, pattern, as_json, "promoted",
          lambda m, i: m.promote_to_hot(i, ttl_seconds=ttl))  # fmt: skip


@command("demote")
@click.argument("state_ids", nargs=-1, callback=STATE_ID)
@click.option("--pattern", help="Also every state id matching this glob.")
@json_option
def demote(state_ids: tuple[str, ...], pattern: str | None, as_json: bool) -> None:
    """Move states to the COLD tier (archive)."""
    _move(state_ids, pattern, as_json, "demoted", lambda m, i: m.demote_to_cold(i))


@command("init-db")
@json_option
def init_db(as_json: bool) -> None:
    """Create or upgrade the tables in the WARM database (for apps without migrations)."""
    from .migrations import upgrade

    manager = app_manager()
    manager.authorize("tables.upgrade")
    engine = manager.store.warm.engine
    where = engine.url.render_as_string()
    try:
        revision = upgrade(engine)
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        first_line = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause)
        raise click.ClickException(
            f"Could not create or upgrade the tables in {where}: {first_line}"
        ) from None
    if as_json:
        echo_json({"revision": revision, "database": where})
    else:
        click.echo(f"The tables in {where} are at revision {revision}.")


# -- asynchronous callbacks' deliveries and timers ----------------------------------------


#: What ``flask state events --status`` takes: the delivery statuses and ``failed``.
EVENT_STATUSES = ("pending", "failed", "dead", "delivered")


def delivery_status(row: dict[str, Any]) -> str:
    """A delivery's status as listed: a pending one whose attempt failed is ``failed``."""
    return "failed" if row["status"] == "pending" and row["attempts"] > 0 else str(row["status"])


def counts_line(counts: dict[str, int]) -> str:
    return (
        f"pending: {counts['pending']} (failed: {counts['failed']}), dead: {counts['dead']}, "
        f"delivered: {counts['delivered']}"
    )


@listing_group("events")
@click.option(
    "--status",
    type=click.Choice(EVENT_STATUSES, case_sensitive=False),
    help="Only deliveries in this status (failed: pending after a failed attempt).",
)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@json_option
def events(ctx: click.Context, status: str | None, limit: int, as_json: bool) -> None:
    """List the deliveries of asynchronous callbacks, newest first, and their counts."""
    if ctx.invoked_subcommand is not None:
        refuse_listing_options(ctx)
        return
    manager = app_manager()
    rows = manager.get_events(status.lower() if status else None, limit=limit)
    counts = manager.outbox.counts()
    if as_json:
        echo_json({"deliveries": rows, "counts": counts})
        return
    if rows:
        headers = ("ID", "EVENT", "CALLBACK", "STATE", "VERSION", "STATUS", "ATTEMPTS",
                   "NEXT ATTEMPT", "LAST ERROR")  # fmt: skip
        lines = table(
            headers,
            (
                (row["id"], row["event"], row["callback"], row["state_id"], row["version"],
                 delivery_status(row), row["attempts"],
                 moment(row["next_attempt_at"]) if row["status"] == "pending" else "-",
                 shortened(row["last_error"]))
                for row in rows
            ),
        )  # fmt: skip
        for line in lines:
            click.echo(line)
    else:
        click.echo("No deliveries match.")
    click.echo(counts_line(counts))


@command("retry", group=events)
@click.argument("delivery_ids", nargs=-1, type=click.IntRange(1, MAX_ROW_ID))
@click.option("--all-dead", is_flag=True, help="Every dead delivery.")
@json_option
def retry_events(delivery_ids: tuple[int, ...], all_dead: bool, as_json: bool) -> None:
    """Make deliveries (by id, or every dead one) due now, with fresh attempts."""
    if bool(delivery_ids) == all_dead:
        raise click.UsageError("Give delivery ids or --all-dead, one of them.")
    manager = app_manager()
    ids = list(dict.fromkeys(delivery_ids))
    retried = manager.retry_events(all_dead=True) if all_dead else manager.retry_events(ids)
    missed = (
        f"{len(ids) - retried} of {len(ids)} deliveries were not retried: no delivery has the "
        "id, or it was delivered already (see 'flask state events')."
    )
    if ids and retried == 0:
        raise click.ClickException(missed)
    if as_json:
        echo_json({"retried": retried})
    else:
        click.echo(f"Retried {count(retried, 'delivery', 'deliveries')}: due now, "
                   "attempts counted from zero.")  # fmt: skip
    if ids and retried < len(ids):
        raise click.ClickException(missed)


@listing_group("timers")
@click.option("--state", "state_id", callback=STATE_ID, help="Only the timers of this state.")
@click.option(
    "--status",
    type=click.Choice((*TIMER_STATUSES, "all"), case_sensitive=False),
    default="scheduled",
    show_default=True,
    help="Only timers in this status; all: every one.",
)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@json_option
def timers(
    ctx: click.Context, state_id: str | None, status: str, limit: int, as_json: bool
) -> None:
    """List durable timers (scheduled transitions), soonest due first."""
    if ctx.invoked_subcommand is not None:
        refuse_listing_options(ctx)
        return
    manager = app_manager()
    wanted = None if status.lower() == "all" else status.lower()
    rows = manager.get_scheduled(state_id, status=wanted, limit=limit)
    if (
        not rows
        and state_id is not None
        and manager.get_state(state_id, include_deleted=True) is None
    ):
        raise StateNotFoundError(state_id)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("No timers match.")
        return
    headers = ("TIMER", "STATE", "TRANSITION", "DUE", "STATUS", "IF VERSION", "REASON",
               "OUTCOME")  # fmt: skip
    lines = table(
        headers,
        (
            (row["timer_id"], row["state_id"], row["transition"], moment(row["due_at"]),
             row["status"], row["if_version"] if row["if_version"] is not None else "-",
             shortened(row["reason"], 40), shortened(row["outcome"]))
            for row in rows
        ),
    )  # fmt: skip
    for line in lines:
        click.echo(line)


@command("cancel", group=timers)
@click.argument("timer_id", required=False)
@click.option(
    "--state", "state_id", callback=STATE_ID, help="Every scheduled timer of this state instead."
)
@click.option(
    "--transition",
    callback=ANY_TRANSITION,
    help="With --state: only its timers of this transition.",
)
@json_option
def cancel_timers(
    timer_id: str | None, state_id: str | None, transition: str | None, as_json: bool
) -> None:
    """Cancel a scheduled timer by id, or the scheduled timers of a state."""
    if (timer_id is None) == (state_id is None):
        raise click.UsageError("Give a TIMER_ID or --state, one of them.")
    if transition is not None and state_id is None:
        raise click.UsageError("--transition goes with --state.")
    manager = app_manager()
    if timer_id is not None:
        cancelled = manager.cancel_scheduled(timer_id)
    else:
        assert state_id is not None
        if manager.get_state(state_id, include_deleted=True) is None:
            raise StateNotFoundError(state_id)
        cancelled = manager.cancel_scheduled(state_id=state_id, transition=transition)
    if timer_id is not None and cancelled == 0:
        raise click.ClickException(
            f"No scheduled timer has the id {timer_id!r}: it does not exist, or it ran or "
            "was cancelled already (see 'flask state timers --status all')."
        )
    if as_json:
        echo_json({"cancelled": cancelled})
    else:
        click.echo(f"Cancelled {count(cancelled, 'timer')}.")


# -- the dispatcher ------------------------------------------------------------------------


class AppDispatcher(EventDispatcher):
    """An :class:`EventDispatcher` whose every pass runs in a new app context, as a
    request does: asynchronous callbacks can use ``current_app`` or Flask-SQLAlchemy's
    ``db.session`` (removed again at the end of the pass)."""

    def __init__(self, app: Flask, manager: StateManager, **options: Any) -> None:
        super().__init__(manager, **options)
        self.app = app

    def run_once(self) -> DispatchReport:
        with self.app.app_context():
            return super().run_once()


def totals_line(report: DispatchReport) -> str:
    with report.lock:
        done = report.to_dict()
    return (
        f"delivered {done['delivered']}, failed {done['failed']}, dead {done['dead']}; "
        f"timers applied {done['timers_applied']}, skipped {done['timers_skipped']}, "
        f"failed {done['timers_failed']}; {count(done['passes'], 'pass', 'passes')}"
    )


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[list[str]]:
    """Set ``stop`` on the first SIGTERM or SIGINT (names collected in the list yielded)
    and put the previous handlers back, so that a second signal acts as without us:
    SIGINT interrupts, SIGTERM terminates. Outside the main thread no handler is set."""
    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for number, handler in previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)

    def handle(number: int, frame: FrameType | None) -> None:
        received.append(signal.Signals(number).name)
        stop.set()
        restore()

    for number in previous:
        signal.signal(number, handle)
    try:
        yield received
    finally:
        restore()


@command("dispatch")
@click.option("--once", is_flag=True, help="Stop when nothing is left to do.")
@click.option(
    "--batch",
    type=click.IntRange(1, 1000),
    default=100,
    show_default=True,
    help="Deliveries (and timers) claimed per pass and thread.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Threads (PostgreSQL only; 1 on SQLite).",
)
@click.option(
    "--poll",
    type=click.FloatRange(0, 3600, min_open=True),
    default=0.5,
    show_default=True,
    help="Seconds a thread waits after a pass that found nothing.",
)
@click.option(
    "--report-every",
    type=click.FloatRange(0, 86400, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds between two lines of totals on stderr.",
)
@json_option
def dispatch(
    once: bool, batch: int, concurrency: int, poll: float, report_every: float, as_json: bool
) -> None:
    """Deliver events to asynchronous callbacks and apply due timers until SIGTERM or
    SIGINT (the pass under way finishes), or with --once until nothing is left to do."""
    state = app_state()
    manager = state.manager
    manager.authorize("events.dispatch")  # the dispatcher's own threads act as nobody
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with AppDispatcher(
        app,
        manager,
        batch=batch,
        concurrency=concurrency,
        poll_interval=poll,
        retention_seconds=state.settings.event_retention_seconds,
    ) as dispatcher:
        callbacks = manager.callbacks.all_asynchronous()
        click.echo(
            f"Dispatching for app {state.app_name!r} on "
            f"{dispatcher.engine.url.render_as_string()} ({dispatcher.engine.dialect.name}): "
            f"batch {batch}, concurrency {concurrency}, poll {poll:g} s, "
            f"{count(len(callbacks), 'asynchronous callback')}"
            f"{'' if once else '; SIGTERM or Ctrl-C stops after the pass under way'}.",
            err=True,
        )
        if not callbacks:
            click.echo(
                "Warning: no asynchronous callback is registered in this process, so every "
                "delivery fails here; register them in the app factory that --app loads.",
                err=True,
            )
        stop = threading.Event()
        failure: list[BaseException] = []

        def work() -> None:
            try:
                dispatcher.run(stop, once=once)
            except BaseException as exc:  # reported by the command, in the main thread
                failure.append(exc)

        worker = threading.Thread(target=work, name="tiered-state-dispatch", daemon=True)
        with stop_on_signals(stop) as received:
            worker.start()
            next_report = time.monotonic() + report_every
            while worker.is_alive():
                worker.join(max(0.0, next_report - time.monotonic()))
                if worker.is_alive() and time.monotonic() >= next_report:
                    click.echo(f"So far: {totals_line(dispatcher.report)}", err=True)
                    next_report = time.monotonic() + report_every
    report = dispatcher.report
    if failure:
        click.echo(f"Stopped by an error: {totals_line(report)}", err=True)
        error = failure[0]
        if isinstance(error, TieredStateError):
            raise click.ClickException(f"The dispatcher stopped: {error.message}")
        if isinstance(error, SQLAlchemyError):
            cause = getattr(error, "orig", None) or error
            text = str(cause).strip()
            raise click.ClickException(
                f"The dispatcher stopped: {text.splitlines()[0] if text else type(cause).__name__}"
            )
        raise error
    if as_json:
        echo_json(report.to_dict())
        return
    how = f"Stopped by {received[0]}" if received else ("Done" if once else "Stopped")
    click.echo(f"{how}: {totals_line(report)}")


# -- encryption: master key rotation and erasure -----------------------------------


@command("rotate-keys")
@click.option(
    "--chunk-size",
    type=click.IntRange(1, 10_000),
    default=1000,
    show_default=True,
    help="Data keys re-wrapped per transaction.",
)
@json_option
def rotate_keys(chunk_size: int, as_json: bool) -> None:
    """Re-wrap every state's data key with the newest master key.

    Run it after putting a new key first in TIERED_STATE_ENCRYPTION_KEYS; when it reports
    nothing left on older keys, remove them. Records and history rows are not rewritten:
    they are encrypted with the states' data keys, which stay the same. Safe while the app
    serves (compare-and-set per key) and resumable: a stopped run goes on where it was.
    """
    manager = app_manager()
    manager.authorize("keys.rotate")
    data_keys = manager.data_keys
    if data_keys is None:
        raise click.ClickException(
            "No master keys: TIERED_STATE_ENCRYPTION_KEYS is not set, so there is nothing to "
            "rotate."
        )
    total = data_keys.count_to_rotate()
    with click.progressbar(
        length=total,
        label=f"Re-wrapping {total} data keys",
        file=sys.stderr,
    ) as bar:
        report = data_keys.rotate(chunk_size=chunk_size, progress=bar.update)
    left = data_keys.count_to_rotate()
    newest = data_keys.master.newest_id
    if as_json:
        echo_json({**report.to_dict(), "left": left, "master_key_id": newest})
        return
    click.echo(
        f"rotate-keys: {count(report.rewrapped, 'data key')} re-wrapped with master key "
        f"{newest}; {report.already_current} changed meanwhile; {left} left on older keys."
    )
    if left == 0:
        click.echo(
            "Every data key is wrapped by the newest master key: the older keys can be removed "
            "from TIERED_STATE_ENCRYPTION_KEYS."
        )
    else:
        raise click.ClickException(
            f"{count(left, 'data key')} still wrapped by older keys; run again."
        )


@command("erase")
@click.argument("state_id", callback=STATE_ID)
@click.option("--reason", required=True, help="Why (recorded in the history; required).")
@click.option("--actor", help="Who erases it (recorded in the history).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
def erase(state_id: str, reason: str, actor: str | None, yes: bool, as_json: bool) -> None:
    """Erase a state: destroy its data key, so that no copy of its encrypted fields (in any
    tier, history row or backup) can be read again; the erasure is recorded in the history."""
    manager = app_manager()
    if manager.store.get_entry(state_key(validate_state_id(state_id))) is None:
        raise StateNotFoundError(state_id)  # before asking (a raw read: no action checked)
    if not yes:
        click.confirm(
            f"Erase {state_id}? Its encrypted fields become unreadable everywhere, for good",
            abort=True,
            err=True,
        )
    record = manager.erase_state(state_id, reason=reason, actor=actor)
    if as_json:
        echo_json(record)
    else:
        click.echo(
            f"{state_id}: erased (version {record['version']}); its encrypted fields can no "
            "longer be read."
        )


# -- the tamper-evident history ------------------------------------------------------------


@state_cli.group("audit")
def audit() -> None:
    """Verify the sealed history chains, and seal rows written without a seal."""


@command("verify", group=audit)
@click.argument("state_ids", nargs=-1, callback=STATE_ID)
@click.option("--type", "state_type", help="Only states of this type.")
@click.option(
    "--allow-unsealed", is_flag=True, help="States with unsealed rows do not fail the check."
)
@json_option
def audit_verify(
    state_ids: tuple[str, ...], state_type: str | None, allow_unsealed: bool, as_json: bool
) -> None:
    """Check every history chain (or those of STATE_IDS) against its seals and the current
    records; exit 1 on any break, naming each broken state's first bad version."""
    from .domain.audit import BROKEN, NOT_FOUND, UNSEALED, VERIFIED, AuditVerifier

    manager = app_manager()
    manager.authorize("audit.verify")
    verifier = AuditVerifier.for_manager(manager)
    if state_type is not None:
        state_type = known_type(manager, state_type)
    ids = list(dict.fromkeys(state_ids))
    total = len(ids) if ids else verifier.count_states()
    counts = dict.fromkeys((VERIFIED, UNSEALED, BROKEN, NOT_FOUND), 0)
    flagged = []
    with click.progressbar(
        length=total, label=f"Verifying {count(total, 'state')}", file=sys.stderr
    ) as bar:
        for result in verifier.verify(
            state_type=state_type, state_ids=ids or None, progress=bar.update
        ):
            counts[result.status] += 1
            if result.status != VERIFIED:
                flagged.append(result)
    checked = sum(counts.values())
    if as_json:
        echo_json(
            {
                "checked": checked,
                "counts": counts,
                "states": [result.to_dict() for result in flagged],
                "key_ids": list(verifier.sealer.key_ids),
            }
        )
        if counts[BROKEN] or counts[NOT_FOUND] or (counts[UNSEALED] and not allow_unsealed):
            click.get_current_context().exit(1)
        return
    for result in flagged:
        click.echo(f"{result.state_id}  {result.summary()}")
        for problem in result.problems:
            click.echo(f"  version {result.version}: {problem.detail}")
    parts = [f"{counts[VERIFIED]} verified", f"{counts[BROKEN]} broken",
             f"{counts[UNSEALED]} unsealed"]  # fmt: skip
    if counts[NOT_FOUND]:
        parts.append(f"{counts[NOT_FOUND]} not found")
    click.echo(f"Checked {count(checked, 'state')}: {', '.join(parts)}.")
    reasons = []
    if counts[BROKEN] or counts[NOT_FOUND]:
        reasons.append(
            f"{count(counts[BROKEN] + counts[NOT_FOUND], 'state')} failed the audit: the "
            "history or the current record was changed outside the application, or is missing."
        )
    if counts[UNSEALED] and not allow_unsealed:
        reasons.append(
            f"{count(counts[UNSEALED], 'state')} with rows written without a seal: 'flask "
            "state audit seal' seals the rows written before TIERED_STATE_AUDIT_KEYS was set "
            "(or pass --allow-unsealed)."
        )
    if reasons:
        raise click.ClickException(" ".join(reasons))


@command("seal", group=audit)
@json_option
def audit_seal(as_json: bool) -> None:
    """Seal every history row written without a seal (before TIERED_STATE_AUDIT_KEYS was
    set), with the newest key; an interrupted run continues where it stopped."""
    from .domain.audit import AuditVerifier

    manager = app_manager()
    manager.authorize("audit.seal")
    verifier = AuditVerifier.for_manager(manager)
    total = verifier.count_unsealed()
    with click.progressbar(
        length=total, label=f"Sealing {count(total, 'row')}", file=sys.stderr
    ) as bar:
        report = verifier.seal_unsealed(progress=bar.update)
    key_id = verifier.sealer.key_ids[0]
    if as_json:
        echo_json({**report.to_dict(), "key_id": key_id})
        return
    click.echo(
        f"Sealed {count(report.rows, 'row')} of {count(report.states, 'state')} with key id "
        f"{key_id}."
    )


# -- backups -------------------------------------------------------------------------------


def backup_manager(state: AppState, destination: str | None = None) -> Any:
    """The app's :class:`~flask_tiered_state.ops.backup.BackupManager` for ``destination``
    (default: TIERED_STATE_BACKUP_URL, else ``<instance_path>/backups``)."""
    from .ops.backup import BackupManager, backup_url_setting

    if destination is not None:
        destination = backup_url_setting("--to/--from", destination)
    where = destination or state.settings.backup_url
    if where is None:
        where = os.path.join(state.instance_path, "backups")
    return BackupManager(manager=state.manager, destination=where)


class PhaseBars:
    """Progress of a backup operation on stderr: one bar per phase (records, history,
    events, verify), as :data:`~flask_tiered_state.ops.backup.Progress` reports them."""

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.phase: str | None = None
        self.bar: Any = None

    def __call__(self, phase: str, advance: int, total: int | None) -> None:
        if phase != self.phase:
            self.close()
            self.phase = phase
            self.bar = click.progressbar(
                length=total or 0, label=f"{self.verb} {phase}", file=sys.stderr
            )
            self.bar.__enter__()
        if advance and self.bar is not None:
            self.bar.update(advance)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None

    def __enter__(self) -> PhaseBars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def size_text(size: int) -> str:
    """Bytes as ``12.3 MB``."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def tier_list(text: str | None) -> list[str] | None:
    """``--tiers hot,warm`` as a list (None: not given)."""
    if text is None:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


@state_cli.group("backup")
def backup() -> None:
    """Create, list, verify and restore backups (where: TIERED_STATE_BACKUP_URL, else the
    instance folder's backups/)."""


@command("create", group=backup)
@click.option("--to", "destination", metavar="DEST", help="A directory or s3://bucket/prefix.")
@click.option(
    "--tiers", default="hot,warm,cold", show_default=True, help="The tiers to read (a list)."
)
@click.option("--type", "types", multiple=True, help="Only states of this type (repeatable).")
@click.option("--pattern", default="*", show_default=True, help="Only state ids matching it.")
@click.option("--history", is_flag=True, help="Include the history rows (seals included).")
@click.option("--events", is_flag=True, help="Include the deliveries not delivered yet.")
@click.option("--incremental", is_flag=True, help="Only the changes since the newest backup there.")
@json_option
def backup_create(
    destination: str | None,
    tiers: str,
    types: tuple[str, ...],
    pattern: str,
    history: bool,
    events: bool,
    incremental: bool,
    as_json: bool,
) -> None:
    """Back up every state, read from the tiers directly, into one checksummed archive."""
    state = app_state()
    state.manager.authorize("backups.create")
    backups = backup_manager(state, destination)
    with PhaseBars("Backing up") as bars:
        summary = backups.create_backup(
            tiers=tier_list(tiers) or (),
            types=list(types) or None,
            pattern=pattern,
            include_history=history,
            include_events=events,
            incremental=incremental,
            progress=bars,
        )
    if as_json:
        echo_json({**summary, "destination": backups.destination.url})
        return
    counts = summary["counts"]
    by_tier = ", ".join(f"{tier} {n}" for tier, n in counts["by_tier"].items())
    parts = [f"{count(counts['records'], 'record')} ({by_tier})"]
    if "history" in counts:
        parts.append(count(counts["history"], "history row"))
    if "events" in counts:
        parts.append(count(counts["events"], "undelivered event"))
    kind = f"incremental on {summary['parent_id']}" if summary["incremental"] else "full"
    click.echo(
        f"Backup {summary['backup_id']} ({kind}): {', '.join(parts)}; "
        f"{size_text(summary['bytes'])} in {summary['duration_seconds']:.1f} s, written to "
        f"{backups.destination.url}."
    )


@command("list", group=backup)
@click.option("--from", "destination", metavar="DEST", help="A directory or s3://bucket/prefix.")
@json_option
def backup_list(destination: str | None, as_json: bool) -> None:
    """The complete backups, newest first."""
    state = app_state()
    state.manager.authorize("backups.list")
    backups = backup_manager(state, destination)
    found = backups.list_backups()
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo(f"No backups in {backups.destination.url}.")
        return
    rows = [
        (
            b["backup_id"],
            str(b["created_at"])[:19],
            f"incremental on {b['parent_id']}" if b["incremental"] else "full",
            b["sections"].get("records", 0),
            b["sections"].get("history", "-"),
            b["sections"].get("events", "-"),
            size_text(b["bytes"]),
        )
        for b in found
    ]
    for line in table(("backup", "created", "kind", "records", "history", "events", "size"), rows):
        click.echo(line)


@command("verify", group=backup)
@click.argument("backup_id")
@click.option("--from", "destination", metavar="DEST", help="A directory or s3://bucket/prefix.")
@json_option
def backup_verify(backup_id: str, destination: str | None, as_json: bool) -> None:
    """Check a backup's checksums and counts, and that its encrypted states open with the
    current keys; exit 1 on any problem."""
    state = app_state()
    state.manager.authorize("backups.verify")
    backups = backup_manager(state, destination)
    with PhaseBars("Verifying") as bars:
        report = backups.verify_backup(backup_id, progress=bars)
    if as_json:
        echo_json(report)
        if not report["ok"]:
            click.get_current_context().exit(1)
        return
    enc = report["encryption"]
    for problem in report["problems"]:
        where = f"{problem['file']} at byte {problem['offset']}: " if problem["file"] else ""
        click.echo(f"  {where}{problem['message']}")
    erased = f", {enc['erased']} erased" if enc["erased"] else ""
    encrypted = (
        f"; {enc['readable']} of {count(enc['states'], 'encrypted state')} readable{erased}"
        if enc["states"]
        else ""
    )
    if enc.get("plaintext"):
        encrypted += f"; {enc['plaintext']} written before encryption (plaintext)"
    if not report["ok"]:
        raise click.ClickException(
            f"Backup {backup_id} failed verification: {count(len(report['problems']), 'problem')}."
        )
    click.echo(f"Backup {backup_id}: OK, {count(report['records'], 'record')} checked{encrypted}.")


@command("restore", group=backup)
@click.argument("backup_id")
@click.option("--from", "destination", metavar="DEST", help="A directory or s3://bucket/prefix.")
@click.option(
    "--mode",
    type=click.Choice(["missing", "overwrite-older", "replace"]),
    default="missing",
    show_default=True,
    help="Which present records to replace.",
)
@click.option("--tiers", help="Only the records the backup found in these tiers (a list).")
@click.option("--history", is_flag=True, help="First insert the archived history rows missing.")
@click.option("--events", is_flag=True, help="Insert the archived undelivered events missing.")
@click.option("--actor", help="Who restores (recorded in each restored state's history).")
@click.option(
    "--dry-run/--apply", default=True, help="Only report what would be done (the default)."
)
@json_option
def backup_restore(
    backup_id: str,
    destination: str | None,
    mode: str,
    tiers: str | None,
    history: bool,
    events: bool,
    actor: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Restore a backup (an incremental one with the backups it builds on) through the
    write path: compare-and-set, a 'restore' history row per state. A dry run unless
    --apply."""
    state = app_state()
    state.manager.authorize("backups.restore")
    backups = backup_manager(state, destination)
    with PhaseBars("Restoring" if not dry_run else "Planning") as bars:
        report = backups.restore_backup(
            backup_id,
            mode=mode,
            tiers=tier_list(tiers),
            dry_run=dry_run,
            actor=actor,
            restore_history=history,
            restore_events=events,
            progress=bars,
        )
    if as_json:
        echo_json(report)
        return
    would = "would be " if dry_run else ""
    click.echo(
        f"restore of {backup_id} ({mode}): "
        + ("dry run, nothing changed (--apply applies it)." if dry_run else "applied.")
    )
    for line in table(("outcome", "states"), [(k, v) for k, v in report["counts"].items() if v]):
        click.echo(line)
    for section in ("history", "events"):
        done = report[section]
        if done is not None:
            click.echo(
                f"{section.capitalize()}: {done['inserted']} of {done['archived']} rows "
                f"{would}inserted ({done['present']} present)."
            )
    for state_id, why in report["errors"].items():
        click.echo(f"  {state_id}: {why}")
    if report["missing_keys"]:
        click.echo(
            f"{count(report['missing_keys'], 'encrypted state')} {would}restored without a data "
            "key here: their encrypted fields read as None."
        )
    if report["counts"].get("failed"):
        raise click.ClickException(f"{count(report['counts']['failed'], 'state')} failed.")


# -- retention -----------------------------------------------------------------------------


@command("gc")
@click.option(
    "--dry-run/--apply",
    default=True,
    help="Only report what would be done (the default), or do it.",
)
@json_option
def gc(dry_run: bool, as_json: bool) -> None:
    """Apply the retention settings: archive the older history rows to the COLD tier
    (TIERED_STATE_HISTORY_RETENTION), prune delivered deliveries and finished timers
    (TIERED_STATE_EVENT_RETENTION_SECONDS) and old backups (TIERED_STATE_BACKUP_RETENTION).
    A dry run unless --apply; safe to stop and to run again."""
    from .ops.retention import GarbageCollector

    state = app_state()
    manager = state.manager
    manager.authorize("gc")
    settings = state.settings
    collector = GarbageCollector(
        manager,
        history=settings.history_retention,
        event_retention_seconds=settings.event_retention_seconds,
        backups=_backup_catalog(state) if settings.backup_retention else None,
        backup_policy=settings.backup_retention or None,
    )
    total = collector.count_states()
    label = f"{'Planning' if dry_run else 'Collecting'} {count(total, 'state')}"
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        report = collector.run(dry_run=dry_run, progress=bar.update)
    if as_json:
        echo_json(report.to_dict())
        return
    for line in gc_lines(report, settings.event_retention_seconds):
        click.echo(line)
    if not settings.history_retention:
        click.echo("(TIERED_STATE_HISTORY_RETENTION is not set: every history row stays.)")


def _backup_catalog(state: AppState) -> Any:
    """The app's backups (their retention needs them)."""
    return backup_manager(state)


def gc_lines(report: Any, event_retention_seconds: float) -> list[str]:
    """A :class:`~flask_tiered_state.ops.retention.GcReport` as text."""
    would = "would be " if report.dry_run else ""
    lines = ["gc: dry run, nothing changed (--apply applies it)." if report.dry_run else "gc:"]
    rows = [
        (
            name,
            "-" if c.policy is None else c.policy.describe(),
            c.states,
            c.states_archived,
            c.rows_archived,
            c.rows_held,
            c.rows_skipped,
            "-" if report.dry_run else c.chunks,
            "-" if report.dry_run else c.bytes,
        )
        for name, c in sorted(report.history.items())
    ]
    if rows:
        lines += table(
            ("type", "keeps", "states", "archived", "rows", "held", "skipped", "chunks",
             "bytes"),
            rows,
        )  # fmt: skip
    archived = report.rows_archived
    states = sum(c.states_archived for c in report.history.values())
    if archived:
        lines.append(
            f"History: {count(archived, 'row')} of {count(states, 'state')} {would}archived "
            "to the COLD tier."
        )
    else:
        lines.append("History: nothing to archive.")
    if report.deliveries_pruned is not None:
        days = event_retention_seconds / 86400
        deliveries = count(report.deliveries_pruned, "delivered delivery", "delivered deliveries")
        lines.append(
            f"Events: {deliveries} and {count(report.timers_pruned or 0, 'finished timer')} "
            f"older than {days:g} day{'' if days == 1 else 's'} {would}pruned."
        )
    if report.backups_removed is not None:
        removed = report.backups_removed
        lines.append(
            f"Backups: {len(removed)} of {len(removed) + (report.backups_kept or 0)} {would}"
            f"removed{': ' + ', '.join(removed) if removed else ''}."
        )
    return lines


# -- checkpoints and recovery ------------------------------------------------------------


def state_capture(state: AppState, destination: str | None = None) -> Any:
    """The app's :class:`~flask_tiered_state.ops.capture.StateCapture`, keeping checkpoints
    where backups go (``destination``, else TIERED_STATE_BACKUP_URL, else
    ``<instance_path>/backups``)."""
    from .ops.backup import backup_url_setting
    from .ops.capture import StateCapture

    if destination is not None:
        destination = backup_url_setting("--to/--from", destination)
    where = destination or state.settings.backup_url
    if where is None:
        where = os.path.join(state.instance_path, "backups")
    return StateCapture.for_manager(state.manager, where)


def estimated_keys(manager: StateManager, tiers: Sequence[str]) -> int:
    """The keys the tiers hold (for a progress bar's length; 0 when a tier cannot say)."""
    total = 0
    for repository in manager.get_repositories():
        if repository.category.value in tiers:
            try:
                total += repository.stats().key_count
            except TieredStateError:
                return 0
    return total


@state_cli.group("checkpoint")
def checkpoint() -> None:
    """Take, list, verify and restore checkpoints: the tiers captured at one instant
    (where: TIERED_STATE_BACKUP_URL, else the instance folder's backups/)."""


@command("create", group=checkpoint)
@click.option("--to", "destination", metavar="DEST", help="A directory or s3://bucket/prefix.")
@click.option("--pattern", default="*", show_default=True, help="Only keys matching this glob.")
@click.option(
    "--scope",
    type=click.Choice(["consistent", "full", "hot"]),
    default="consistent",
    show_default=True,
    help="consistent: every tier at one instant (WARM read in one snapshot); full: every "
    "tier, the highest version of each key; hot: the HOT tier only.",
)
@click.option("--label", help="A note kept in the manifest.")
@json_option
def checkpoint_create(
    destination: str | None, pattern: str, scope: str, label: str | None, as_json: bool
) -> None:
    """Capture the tiers into a checkpoint, read directly (no cache filled, nothing
    promoted)."""
    state = app_state()
    manager = state.manager
    manager.authorize("checkpoints.create")
    capture = state_capture(state, destination)
    tiers = ("hot",) if scope == "hot" else ("hot", "warm", "cold")
    total = estimated_keys(manager, tiers)
    with click.progressbar(length=total, label="Capturing", file=sys.stderr) as bar:
        if scope == "hot":
            manifest = capture.capture_hot_state(pattern, label=label, progress=bar.update)
        else:
            manifest = capture.capture_full_state(
                pattern, consistent=scope == "consistent", label=label, progress=bar.update
            )
    if as_json:
        echo_json(manifest)
        return
    counts = manifest["counts"]
    by_tier = ", ".join(f"{tier} {n}" for tier, n in counts["by_tier"].items())
    cut = manifest.get("cut") or {}
    when = f", cut at {moment(cut['taken_at'])}" if cut.get("taken_at") else ""
    left = f"; {counts['after_cut']} written after the cut left out" if counts["after_cut"] else ""
    corrupt = f"; {count(counts['corrupt'], 'corrupt copy', 'corrupt copies')} skipped" if (
        counts["corrupt"]
    ) else ""  # fmt: skip
    click.echo(
        f"Checkpoint {manifest['archive_id']} ({scope}{when}): "
        f"{count(counts['records'], 'record')} ({by_tier}){left}{corrupt}; "
        f"{manifest['duration_seconds']:.1f} s, written to {capture.destination.url}."
    )


@command("list", group=checkpoint)
@click.option("--from", "destination", metavar="DEST", help="A directory or s3://bucket/prefix.")
@json_option
def checkpoint_list(destination: str | None, as_json: bool) -> None:
    """The complete checkpoints, newest first."""
    state = app_state()
    capture = state_capture(state, destination)
    found = capture.list_checkpoints()
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo(f"No checkpoints in {capture.destination.url}.")
        return
    rows = [
        (
            m["archive_id"],
            str(m["created_at"])[:19],
            m.get("scope", "-"),
            m.get("pattern", "*"),
            m.get("counts", {}).get("records", "-"),
            m.get("label") or "-",
        )
        for m in found
    ]
    for line in table(("checkpoint", "created", "scope", "pattern", "records", "label"), rows):
        click.echo(line)


@command("verify", group=checkpoint)
@click.argument("checkpoint_id")
@click.option("--from", "destination", metavar="DEST", help="A directory or s3://bucket/prefix.")
@json_option
def checkpoint_verify(checkpoint_id: str, destination: str | None, as_json: bool) -> None:
    """Check every chunk and every record of a checkpoint against its checksums; exit 1
    naming the file and the byte offset of the first damage."""
    state = app_state()
    capture = state_capture(state, destination)
    report = capture.verify_checkpoint(checkpoint_id)
    if as_json:
        echo_json(report)
        return
    by_tier = ", ".join(f"{tier} {n}" for tier, n in report["by_tier"].items())
    click.echo(f"Checkpoint {checkpoint_id}: OK, {count(report['records'], 'record')} ({by_tier}).")


@command("restore", group=checkpoint)
@click.argument("checkpoint_id")
@click.option("--from", "destination", metavar="DEST", help="A directory or s3://bucket/prefix.")
@click.option(
    "--mode",
    type=click.Choice(["replace", "overwrite-older", "missing"]),
    default="replace",
    show_default=True,
    help="replace: every key as at the checkpoint; overwrite-older: only keys older now; "
    "missing: only keys absent now.",
)
@click.option("--tiers", help="Only the records captured from these tiers (a list).")
@click.option("--actor", help="Who restores (recorded in each restored state's history).")
@click.option("--reason", help="Why (recorded in each restored state's history).")
@click.option(
    "--dry-run/--apply", default=True, help="Only report what would be done (the default)."
)
@json_option
def checkpoint_restore(
    checkpoint_id: str,
    destination: str | None,
    mode: str,
    tiers: str | None,
    actor: str | None,
    reason: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Put a checkpoint back: verified whole first, then each state written through the
    write path (compare-and-set, a 'restore' history row). A dry run unless --apply."""
    state = app_state()
    capture = state_capture(state, destination)
    manifest = capture.verify_checkpoint(checkpoint_id)
    with click.progressbar(
        length=manifest["records"],
        label="Planning" if dry_run else "Restoring",
        file=sys.stderr,
    ) as bar:
        report = capture.restore_checkpoint(
            checkpoint_id,
            mode=mode,
            tiers=tier_list(tiers) or ("hot", "warm", "cold"),
            dry_run=dry_run,
            actor=actor,
            reason=reason,
            progress=bar.update,
        )
    if as_json:
        echo_json(report)
        if report["counts"].get("failed"):
            click.get_current_context().exit(1)
        return
    counts = ", ".join(f"{n} {outcome}" for outcome, n in report["counts"].items() if n)
    done = "dry run" if dry_run else "restored"
    tail = " (--apply restores)" if dry_run else ""
    click.echo(f"Checkpoint {checkpoint_id} ({mode}), {done}: {counts or 'nothing to do'}{tail}.")
    for key, error in report["errors"].items():
        click.echo(f"  {key}: {error}")
    if report["counts"].get("failed"):
        raise click.ClickException(
            f"{count(report['counts']['failed'], 'record')} could not be restored."
        )


@command("recover")
@click.option(
    "--pattern",
    "patterns",
    multiple=True,
    metavar="GLOB",
    help="Keys to recover (repeatable; default: TIERED_STATE_CRITICAL_KEYS).",
)
@click.option("--dry-run", is_flag=True, help="Find and verify the copies; place nothing.")
@json_option
def recover(patterns: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Place verified HOT copies of the critical keys from WARM or COLD (after HOT lost
    them); exit 1 when a key is missing everywhere or has no good copy."""
    from .ops.recovery import RecoveryHandler

    state = app_state()
    handler = RecoveryHandler.for_manager(state.manager, state.settings.critical_keys)
    report = handler.recover_critical_state(list(patterns) or None, dry_run=dry_run)
    if as_json:
        echo_json(report.to_dict())
        if not report.ok:
            click.get_current_context().exit(1)
        return
    click.echo(f"Recovery of {', '.join(report.patterns)}: {report.summary()}.")
    for key in report.missing:
        click.echo(f"  missing everywhere: {key}")
    for pattern in report.unmatched:
        click.echo(f"  matched nothing: {pattern}")
    for copy in report.corrupt:
        click.echo(f"  corrupt: {copy['key']} in {copy['tier']}")
    if not report.ok:
        raise click.ClickException(
            f"{count(len(report.missing) + len(report.failed_keys), 'critical key')} could "
            "not be placed in HOT."
        )
