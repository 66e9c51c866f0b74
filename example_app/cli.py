"""``flask seed-demo``, ``flask archive-transactions`` and ``flask api-tokens``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
from flask import current_app
from flask.cli import with_appcontext

from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.errors import TieredStateError
from flask_tiered_state.extension import get_app_state

from .access import TokenAccess, load_tokens
from .archive import archivable_transactions, archive_transactions
from .config import positive_int
from .seed import seed_demo

__all__ = ["archive_command", "seed_command", "tokens_command"]


def _manager() -> StateManager:
    return get_app_state().manager


@contextmanager
def _bar(label: str, length: int) -> Iterator[Callable[[int], None]]:
    if length == 0:
        yield lambda n: None
        return
    with click.progressbar(length=length, label=label.ljust(20)) as bar:
        yield bar.update


@click.command("seed-demo")
@click.option(
    "--users",
    type=click.IntRange(1, 100_000),
    default=None,
    help="Users to create [default: CREDIT_SEED_USERS, 300].",
)
@click.option(
    "--transactions",
    type=click.IntRange(0, 1_000_000),
    default=None,
    help="Payment transactions [default: CREDIT_SEED_TRANSACTIONS, 3000].",
)
@click.option(
    "--seed",
    type=int,
    default=2024,
    show_default=True,
    help="Random seed: the same seed gives the same data set.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@with_appcontext
def seed_command(users: int | None, transactions: int | None, seed: int, as_json: bool) -> None:
    """Create the demo data set (idempotent: a second run adds nothing)."""
    config = current_app.config
    users = users or positive_int(config, "CREDIT_SEED_USERS")
    if transactions is None:
        transactions = positive_int(config, "CREDIT_SEED_TRANSACTIONS")
    started = time.perf_counter()
    try:
        report = seed_demo(
            _manager(),
            users=users,
            transactions=transactions,
            seed=seed,
            progress=_bar if not as_json else _quiet,
        )
    except TieredStateError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(report.to_dict(), sort_keys=True))
        return
    seconds = time.perf_counter() - started
    created = ", ".join(f"{n} {kind}s" for kind, n in report.created.items())
    moved = sum(report.transitioned.values())
    click.echo(f"Seeded in {seconds:.1f} s: created {created}; {moved} transitions.")


@contextmanager
def _quiet(label: str, length: int) -> Iterator[Callable[[int], None]]:
    yield lambda n: None


@click.command("archive-transactions")
@click.option(
    "--older-than-days",
    type=click.IntRange(0, 36_500),
    default=30,
    show_default=True,
    help="Archive failed payments at least this old.",
)
@click.option("--limit", type=click.IntRange(1), default=None, help="Archive at most this many.")
@click.option("--dry-run", is_flag=True, help="Only count what would be archived.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@with_appcontext
def archive_command(older_than_days: int, limit: int | None, dry_run: bool, as_json: bool) -> None:
    """Move old expired (failed) payment transactions to the COLD tier."""
    manager = _manager()
    try:
        candidates = archivable_transactions(manager, older_than_days, limit=limit)
        moved: list[str] = []
        if not dry_run and candidates:
            with _bar("Archiving", len(candidates)) if not as_json else _quiet("", 0) as advance:
                moved = archive_transactions(
                    manager, candidates, progress=lambda state_id, done: advance(1)
                )
    except TieredStateError as exc:
        raise click.ClickException(str(exc)) from exc
    result = {
        "older_than_days": older_than_days,
        "candidates": len(candidates),
        "archived": len(moved),
        "dry_run": dry_run,
    }
    if as_json:
        click.echo(json.dumps({**result, "ids": moved}, sort_keys=True))
    elif dry_run:
        click.echo(f"{len(candidates)} failed payments older than {older_than_days} days.")
    else:
        click.echo(f"Archived {len(moved)} of {len(candidates)} failed payments to the COLD tier.")


@click.command("api-tokens")
@click.option("--json", "as_json", is_flag=True, help="Print the tokens as JSON.")
@with_appcontext
def tokens_command(as_json: bool) -> None:
    """Print the demo's access tokens (admin: everything; viewer: read only)."""
    app = current_app
    if not isinstance(app.config.get("TIERED_STATE_ACCESS_CONTROL"), TokenAccess):
        raise click.ClickException(
            "This app is guarded by its own TIERED_STATE_ACCESS_CONTROL, not the demo's tokens."
        )
    tokens = load_tokens(app.config, app.instance_path)
    if as_json:
        click.echo(json.dumps(tokens, sort_keys=True))
        return
    for actor, token in tokens.items():
        click.echo(f"  {actor:<6} token         {token}")
    click.echo(
        "  Browser: any user name, a token as the password. curl: -H 'Authorization: Bearer "
        "<token>'."
    )
