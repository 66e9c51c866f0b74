"""Alembic migrations of the library's tables, shipped in the package.

Two ways to use them:

**Without migrations of your own** -- ``flask state init-db``, or in code::

    from flask_tiered_state.migrations import upgrade
    upgrade(engine)

runs the packaged revisions with ``alembic.command`` on that engine (the package's own
``env.py``, no ``alembic.ini``), recording the revision in its own table
:data:`VERSION_TABLE`, so it never touches
an app's ``alembic_version``. Tables that already exist without a recorded revision
(created at first use by ``TIERED_STATE_CREATE_TABLES``) are adopted: the baseline
is stamped, later revisions run.

**With Flask-Migrate / Alembic** -- add the packaged revisions as a second version
location in ``migrations/alembic.ini``::

    [alembic]
    path_separator = space
    version_locations = %(here)s/versions flask_tiered_state:migrations/versions

(``path_separator = space``, because the package location itself contains a colon.)

They form their own branch (label ``tiered_state``), so upgrade with
``flask db upgrade heads``. If your ``db.metadata`` holds our tables (``TieredState(app,
db=db)``), pass :func:`include_object` to ``context.configure(...)`` in ``env.py`` (or
``Migrate(app, db, include_object=include_object)``) so autogenerate leaves them to
this branch.

**The app's first revision needs its own branch.** With the packaged location
configured, the database has a head, ``ts0001``, before the app has any revision; a
plain ``flask db migrate`` would make the app's first revision follow ``ts0001`` and
write it into the *installed package's* ``versions`` directory (lost at the next
reinstall, and shared by every app using that environment). Start the app's branch
from ``base`` in the app's own directory once::

    flask db upgrade heads
    flask db migrate -m "initial" --head base --branch-label app \\
        --version-path migrations/versions
    flask db upgrade heads

and from then on follow the app's head::

    flask db migrate -m "add customers" --head app@head
    flask db upgrade heads

When our tables already exist (created at first use or by ``init-db``) without a
revision in ``alembic_version``, mark them as migrated instead: ``flask db stamp
ts0001``. See "Tables and migrations" in ``docs/operations.rst``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext

__all__ = [
    "BASELINE_REVISION",
    "BRANCH_LABEL",
    "ENVIRONMENT_LOCATION",
    "HEAD_REVISION",
    "SCRIPT_LOCATION",
    "TABLES",
    "VERSION_LOCATION",
    "VERSION_TABLE",
    "current_revision",
    "downgrade",
    "include_object",
    "upgrade",
]

#: The directory of the packaged revisions (``versions/``).
SCRIPT_LOCATION = Path(__file__).resolve().parent
#: The alembic environment (``env.py``) :func:`upgrade` runs them with: a folder, not a
#: package, so that importing the package never runs it.
ENVIRONMENT_LOCATION = SCRIPT_LOCATION / "environment"
#: The packaged revisions, as a version location for an app's ``alembic.ini``.
VERSION_LOCATION = "flask_tiered_state:migrations/versions"
#: Where :func:`upgrade` records the revision (never the app's ``alembic_version``).
VERSION_TABLE = "tiered_state_alembic_version"
BRANCH_LABEL = "tiered_state"
BASELINE_REVISION = "ts0001"
#: The newest packaged revision.
HEAD_REVISION = "ts0005"
#: The tables the revisions manage.
TABLES = (
    "tiered_state_entries",
    "tiered_state_history",
    "tiered_state_entries_drops",
    "tiered_state_deliveries",
    "tiered_state_idempotency",
    "tiered_state_timers",
    "tiered_state_data_keys",
)
#: The tables of the baseline revision.
BASELINE_TABLES = TABLES[:2]


def _config(connection: sa.Connection) -> Config:
    """An alembic configuration that runs the packaged revisions on ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(ENVIRONMENT_LOCATION))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", str(SCRIPT_LOCATION / "versions"))
    config.attributes.update(connection=connection, version_table=VERSION_TABLE)
    return config


def _recorded(connection: sa.Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def current_revision(engine: sa.Engine) -> str | None:
    """The revision recorded in :data:`VERSION_TABLE`, or None."""
    with engine.connect() as connection:
        return _recorded(connection)


def upgrade(engine: sa.Engine, revision: str = "heads") -> str | None:
    """Create or upgrade the tables to ``revision``; return the revision reached.

    Existing tables without a recorded revision (created by the code at first use) are
    adopted: stamped with the revision whose schema they have, then upgraded. All in
    one transaction.
    """
    with engine.begin() as connection:
        config = _config(connection)
        if _recorded(connection) is None:
            adopted = _adoptable(connection)
            if adopted is not None:
                command.stamp(config, adopted)
        command.upgrade(config, revision)
        return _recorded(connection)


def _adoptable(connection: sa.Connection) -> str | None:
    """The revision whose schema existing tables without a recorded revision have."""
    existing = set(sa.inspect(connection).get_table_names())
    # Later revisions check what is there, so the baseline is always the one to stamp.
    return BASELINE_REVISION if existing.issuperset(BASELINE_TABLES) else None


def downgrade(engine: sa.Engine, revision: str = "base") -> str | None:
    """Downgrade to ``revision`` (``"base"`` drops the tables and their data)."""
    with engine.begin() as connection:
        command.downgrade(_config(connection), revision)
        return _recorded(connection)


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """An autogenerate filter that leaves the library's tables to its own branch."""
    ours = (*TABLES, VERSION_TABLE)
    if type_ == "table":
        return name not in ours
    table = getattr(obj, "table", None)
    return getattr(table, "name", None) not in ours
