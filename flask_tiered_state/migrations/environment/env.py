"""The alembic environment of the packaged revisions.

Run only through :func:`flask_tiered_state.migrations.upgrade` and ``downgrade``
(``alembic.command`` on a connection they pass in ``config.attributes``); an app's own
alembic environment uses just the ``versions`` directory.
"""

from __future__ import annotations

from alembic import context

_attributes = context.config.attributes
context.configure(connection=_attributes["connection"], version_table=_attributes["version_table"])
with context.begin_transaction():
    context.run_migrations()
