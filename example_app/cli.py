"""``flask seed-demo``, ``archive-transactions``, ``api-tokens``, ``banner`` and ``reset-demo``."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.errors import TieredStateError
from flask_tiered_state.extension import get_app_state

from .access import SECRET_KEY_FILE, TOKENS_FILE, TokenAccess, load_tokens
from .archive import archivable_transactions, archive_transactions
from .config import backends, positive_int
from .seed import seed_demo

__all__ = [
    "archive_command",
    "banner_command",
    "reset_command",
    "seed_command",
    "tokens_command",
]


def _manager() -> StateManager:
    return get_app_state().manager


@contextmanager
def _bar(label: str, length: int) -> Iterator[Callable[[int], None]]:
    if length == 0:
        yield lambda n: None
        return
    # Labels padded to align the bars on a terminal; without one click prints the
    # label alone, on a line of its own, so it is left as it is.
    padded = label.ljust(20) if sys.stdout.isatty() else label
    with click.progressbar(length=length, label=padded) as bar:
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
    tokens = _tokens()
    if as_json:
        click.echo(json.dumps(tokens, sort_keys=True))
        return
    _echo_tokens(tokens)


def _tokens() -> dict[str, str]:
    app = current_app
    if not isinstance(app.config.get("TIERED_STATE_ACCESS_CONTROL"), TokenAccess):
        raise click.ClickException(
            "This app is guarded by its own TIERED_STATE_ACCESS_CONTROL, not the demo's tokens."
        )
    return load_tokens(app.config, app.instance_path)


def _echo_tokens(tokens: dict[str, str]) -> None:
    for actor, token in tokens.items():
        click.echo(f"  {actor:<6} token         {token}")
    click.echo(
        "  Browser: paste a token on the /app/ login page. curl: -H 'Authorization: Bearer "
        "<token>'."
    )


@click.command("banner")
@click.option("--host", default="127.0.0.1", show_default=True, help="The server's address.")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@with_appcontext
def banner_command(host: str, port: int) -> None:
    """Print where the demo is served, the backend of each tier and the tokens."""
    state = get_app_state()
    settings = state.settings
    base = f"http://{host}:{port}"
    click.echo(f"  Flask Credit System   {base}/")
    pages = [rule.rule for rule in current_app.url_map.iter_rules() if rule.endpoint == "web.home"]
    if pages:
        click.echo(f"  Pages in a browser    {base}{pages[0]}")
    if settings.dashboard_prefix:
        click.echo(f"  State dashboard       {base}{settings.dashboard_prefix}/")
    if settings.api_prefix:
        click.echo(f"  REST API (OpenAPI)    {base}{settings.api_prefix}/openapi.json")
    try:
        health = state.manager.get_health_status()["tiers"]
    except TieredStateError:
        health = {}
    for tier, where in backends(settings, state.local_dir).items():
        answers = health.get(tier, {}).get("available", True)
        note = "" if answers else "   (not answering now: see the dashboard's health page)"
        click.echo(f"  {tier.upper():<4} tier             {where}{note}")
    click.echo("  Stop with Ctrl+C.")
    _echo_tokens(_tokens())


#: The embedded WARM tier's files in the local directory (SQLite's and its journals).
_SQLITE_FILES = ("tiered_state.sqlite3", "tiered_state.sqlite3-wal", "tiered_state.sqlite3-shm")
#: The SQL tables of flask_tiered_state all start with this (entries, history, outbox, ...).
_TABLE_PREFIX = "tiered_state_"


@click.command("reset-demo")
@click.option(
    "--keep-tokens", is_flag=True, help="Keep ./instance/api_tokens.json and ./instance/secret_key."
)
@click.confirmation_option(prompt="Delete the demo's data (states, history, backups)?")
@with_appcontext
def reset_command(keep_tokens: bool) -> None:
    """Delete the demo's data, so that the next `make run` seeds it afresh.

    Removes what the demo made where its configuration points: the embedded SQLite file
    and COLD directory, the backups directory of the instance folder and (unless
    --keep-tokens) the tokens' file; with Redis, the keys under TIERED_STATE_KEY_PREFIX
    (never the other keys: nothing is flushed); with a WARM database, its tiered_state_*
    tables; with S3, the COLD tier's objects (those under the URL's prefix).
    """
    app = current_app
    state = get_app_state()
    settings = state.settings
    manager = state.manager
    removed: list[str] = []
    repositories = manager.get_repositories()
    if settings.cold_url:
        cold = repositories.cold
        keys = list(cold.keys("*"))
        cold.delete_many(keys)
        removed.append(f"{len(keys)} COLD objects ({_shown_url(settings.cold_url)})")
    state.close()  # the connections, before the tables and files go
    if settings.hot_url != "memory://":
        removed.append(_reset_redis(settings.hot_url, settings.key_prefix))
    if settings.warm_url:
        removed.append(_drop_tables(settings.warm_url))
    local = state.local_dir
    for name in _SQLITE_FILES:
        if (local / name).exists():
            (local / name).unlink()
            removed.append(str(local / name))
    # The backups' default place (a TIERED_STATE_BACKUP_URL of one's own is left alone).
    backups = [] if settings.backup_url else [Path(app.instance_path) / "backups"]
    for folder in (local / "cold", *backups):
        if folder.is_dir():
            shutil.rmtree(folder)
            removed.append(f"{folder}/")
    for kept in (TOKENS_FILE, SECRET_KEY_FILE):  # a new secret key logs every browser out
        path = Path(app.instance_path) / kept
        if not keep_tokens and path.exists():
            path.unlink()
            removed.append(str(path))
    for folder in (local, Path(app.instance_path)):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    click.echo("Removed: " + ("; ".join(removed) if removed else "nothing (no demo data)") + ".")


def _shown_url(url: str) -> str:
    from .config import masked_url

    return masked_url(url)


def _reset_redis(url: str, prefix: str) -> str:
    """Delete the keys under ``prefix`` (SCAN, never KEYS or FLUSHDB)."""
    if not prefix:
        raise click.ClickException(
            "TIERED_STATE_KEY_PREFIX is empty: the demo's Redis keys cannot be told from "
            "others', so none is deleted. Delete them yourself."
        )
    import redis

    client: Any = redis.Redis.from_url(url)
    try:
        count = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=_glob_escape(prefix) + "*", count=1000):
            batch.append(key)
            if len(batch) == 1000:
                count += client.delete(*batch)
                batch = []
        if batch:
            count += client.delete(*batch)
    finally:
        client.close()
    return f"{count} Redis keys under {prefix!r} ({_shown_url(url)})"


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _drop_tables(url: str) -> str:
    """Drop the flask_tiered_state tables (``tiered_state_*``) of the WARM database."""
    import sqlalchemy as sa

    from flask_tiered_state.storage.sql.engine import build_engine

    engine = build_engine(url, connect_timeout=5)  # postgresql:// means psycopg 3, as the tier's
    try:
        metadata = sa.MetaData()
        names = [
            name for name in sa.inspect(engine).get_table_names() if name.startswith(_TABLE_PREFIX)
        ]
        metadata.reflect(engine, only=names)
        metadata.drop_all(engine)
    finally:
        engine.dispose()
    return f"{len(names)} tables {_TABLE_PREFIX}* ({_shown_url(url)})"
