"""The read commands: ``list``, ``show``, ``history``, ``diff``, ``keys``, ``stats``,
``health`` and ``graph``. Each takes ``--json``."""

from __future__ import annotations

import json

import click

from ..errors import StateNotFoundError
from .group import app_manager, command
from .options import json_option, path_filters
from .output import echo_json, page_lines

__all__: list[str] = []


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
@click.option("--page", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--per-page", type=click.IntRange(min=1, max=1000), default=50, show_default=True)
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
    result = app_manager().search_states(
        state_type.lower() if state_type else None, where or None, page=page, per_page=per_page
    )
    if as_json:
        echo_json(result.to_dict())  # the same page object as GET /states
        return
    for line in page_lines(result):
        click.echo(line)


@command("show")
@click.argument("state_id")
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
@click.argument("state_id")
@click.option("--limit", type=click.IntRange(1, 1000), help="Only the latest N, newest first.")
@click.option("--transition", help="Only changes made by this transition.")
@json_option
def history(state_id: str, limit: int | None, transition: str | None, as_json: bool) -> None:
    """Show a state's history of changes."""
    manager = app_manager()
    if transition is not None:
        rows = manager.get_changes_by_transition(state_id, transition)
    elif limit is not None:
        rows = manager.get_recent_changes(state_id, limit)
    else:
        rows = manager.get_state_history(state_id)
    if not rows and manager.get_state(state_id, include_deleted=True) is None:
        raise StateNotFoundError(state_id)
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        who = f"  by {row['actor']}" if row["actor"] else ""
        why = f"  ({row['reason']})" if row["reason"] else ""
        click.echo(
            f"v{row['version']}  {row['created_at']}  {row['transition']}  "
            f"{row['from_status'] or '-'} -> {row['to_status']}{who}{why}"
        )


@command("diff")
@click.argument("state_id")
@click.argument("from_version", type=click.IntRange(min=1))
@click.argument("to_version", type=click.IntRange(min=1))
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
    ids = app_manager().get_keys_by_pattern(pattern)
    if as_json:
        echo_json(ids)
        return
    for state_id in ids:
        click.echo(state_id)


@command("stats")
@json_option
def stats(as_json: bool) -> None:
    """Show storage statistics: tiers, cache and history."""
    result = app_manager().get_storage_stats()
    if as_json:
        echo_json(result)
        return
    for key, value in sorted(result.items()):
        click.echo(f"{key}: {json.dumps(value, sort_keys=True, default=str)}")


@command("health")
@json_option
def health(as_json: bool) -> None:
    """Check every tier; exit 1 when unhealthy (the WARM tier is down)."""
    result = app_manager().get_health_status()
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
    spec = app_manager().get_state_type(state_type.lower())
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
