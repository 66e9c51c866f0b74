"""The commands that change states or tables: ``transition``, ``rollback``,
``promote``, ``demote`` and ``init-db``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from ..domain.manager import StateManager
from ..errors import TieredStateError
from .group import app_manager, command
from .options import json_object, json_option
from .output import echo_json

__all__: list[str] = []


@command("transition")
@click.argument("state_id")
@click.argument("transition")
@click.option("--data", "data_json", metavar="JSON", help="New data (a JSON object).")
@click.option("--metadata", "metadata_json", metavar="JSON", help="New metadata (JSON object).")
@click.option("--name", help="A new display name.")
@click.option("--merge", is_flag=True, help="Merge --data/--metadata into the current ones.")
@click.option(
    "--expected-version", type=click.IntRange(min=1), help="Refuse unless at this version."
)
@click.option("--actor", help="Who makes the change (recorded in history).")
@click.option("--reason", help="Why (recorded in history).")
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
@click.argument("state_id")
@click.argument("to_version", type=click.IntRange(min=1))
@click.option("--actor", help="Who makes the change (recorded in history).")
@click.option("--reason", help="Why (recorded in history).")
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


def _move(
    ids: tuple[str, ...],
    pattern: str | None,
    as_json: bool,
    verb: str,
    move: Callable[[StateManager, str], bool],
) -> None:
    manager = app_manager()
    targets = list(dict.fromkeys(ids))
    if pattern is not None:
        targets = list(dict.fromkeys([*targets, *manager.get_keys_by_pattern(pattern)]))
    if not targets:
        raise click.UsageError("Give one or more STATE_IDS, or --pattern.")
    moved: list[str] = []
    unchanged: list[str] = []
    failed: dict[str, str] = {}
    if len(targets) == 1 and pattern is None:
        (moved if move(manager, targets[0]) else unchanged).append(targets[0])
    else:
        with click.progressbar(
            targets,
            label=f"{verb.capitalize()} {len(targets)} states",
            file=sys.stderr,
        ) as bar:
            for state_id in bar:
                try:
                    (moved if move(manager, state_id) else unchanged).append(state_id)
                except TieredStateError as exc:
                    failed[state_id] = exc.message
    if as_json:
        echo_json({"moved": moved, "unchanged": unchanged, "failed": failed})
    else:
        click.echo(f"{verb}: {len(moved)}, unchanged: {len(unchanged)}, failed: {len(failed)}")
        for state_id, message in failed.items():
            click.echo(f"  {state_id}: {message}", err=True)
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(targets)} states failed.")


@command("promote")
@click.argument("state_ids", nargs=-1)
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
@click.argument("state_ids", nargs=-1)
@click.option("--pattern", help="Also every state id matching this glob.")
@json_option
def demote(state_ids: tuple[str, ...], pattern: str | None, as_json: bool) -> None:
    """Move states to the COLD tier (archive)."""
    _move(state_ids, pattern, as_json, "demoted", lambda m, i: m.demote_to_cold(i))


@command("init-db")
@json_option
def init_db(as_json: bool) -> None:
    """Create or upgrade the tables in the WARM database (for apps without migrations)."""
    from ..migrations import upgrade

    manager = app_manager()
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
