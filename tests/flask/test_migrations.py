"""The packaged Alembic migrations create exactly the tables the code defines.

When the storage or history tables change, this test fails until a new revision
brings the migrated schema back in line with the code.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from flask_tiered_state import migrations
from flask_tiered_state.domain.data_keys import define_data_key_table
from flask_tiered_state.domain.history import define_history_table
from flask_tiered_state.domain.idempotency import define_idempotency_table
from flask_tiered_state.domain.outbox import define_delivery_table
from flask_tiered_state.domain.timers import define_timer_table
from flask_tiered_state.storage.sql import SQLStateRepository


def code_metadata(engine: sa.Engine) -> sa.MetaData:
    """The tables as the running code defines them for this engine's dialect."""
    repository = SQLStateRepository(engine, create_tables=False)
    metadata = repository.table.metadata
    define_history_table(metadata)
    define_delivery_table(metadata)
    define_idempotency_table(metadata)
    define_timer_table(metadata)
    define_data_key_table(metadata)
    return metadata


def schema_diff(engine: sa.Engine, metadata: sa.MetaData) -> list[Any]:
    def ours(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        return not (type_ == "table" and name == migrations.VERSION_TABLE)

    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_object": ours}
        )
        return list(compare_metadata(context, metadata))


@pytest.fixture
def engine(sql_engine: sa.Engine) -> sa.Engine:
    return sql_engine


def test_upgrade_creates_exactly_the_code_tables(engine: sa.Engine) -> None:
    assert migrations.upgrade(engine) == migrations.HEAD_REVISION
    assert migrations.current_revision(engine) == migrations.HEAD_REVISION
    assert set(sa.inspect(engine).get_table_names()) == {
        *migrations.TABLES,
        migrations.VERSION_TABLE,
    }
    assert schema_diff(engine, code_metadata(engine)) == []


def test_the_comparison_can_fail(engine: sa.Engine) -> None:
    migrations.upgrade(engine)
    metadata = code_metadata(engine)
    sa.Index("ix_extra", metadata.tables["tiered_state_history"].c.actor)
    assert [d[0] for d in schema_diff(engine, metadata)] == ["add_index"]


def test_upgrade_adopts_tables_created_by_the_code(engine: sa.Engine) -> None:
    metadata = code_metadata(engine)
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(
            metadata.tables["tiered_state_entries"].insert(),
            {"key": "k", "value": "{}", "checksum": "c", "size": 2, "version": 1,
             "category": "warm", "stored_at": 1.0, "last_accessed": 1.0},
        )  # fmt: skip
    assert migrations.upgrade(engine) == migrations.HEAD_REVISION
    with engine.connect() as connection:
        count = connection.execute(sa.text("SELECT count(*) FROM tiered_state_entries"))
        assert count.scalar_one() == 1


def test_upgrade_twice_and_downgrade_to_base(engine: sa.Engine) -> None:
    migrations.upgrade(engine)
    assert migrations.upgrade(engine) == migrations.HEAD_REVISION
    assert migrations.downgrade(engine) is None
    assert set(sa.inspect(engine).get_table_names()) == {migrations.VERSION_TABLE}


def test_the_version_location_works_for_an_apps_alembic() -> None:
    config = Config()
    config.set_main_option("script_location", str(migrations.SCRIPT_LOCATION))
    config.set_main_option("path_separator", "space")
    config.set_main_option(
        "version_locations", f"/nonexistent/versions {migrations.VERSION_LOCATION}"
    )
    script = ScriptDirectory.from_config(config)
    revision = script.get_revision(migrations.BRANCH_LABEL + "@head")
    assert revision is not None and revision.revision == migrations.HEAD_REVISION


def test_the_documented_first_revision_is_written_into_the_apps_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The procedure of the migrations docstring and docs/operations.rst, on plain Alembic
    (what ``flask db migrate`` runs), with a copy of the packaged revisions standing in
    for the installed package so the pitfall can be shown without touching it."""
    installed = tmp_path / "site-packages" / "versions"
    shutil.copytree(
        migrations.SCRIPT_LOCATION / "versions",
        installed,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    app_dir = tmp_path / "migrations"
    ini = str(tmp_path / "alembic.ini")
    command.init(Config(ini), str(app_dir))
    config = Config(ini)
    config.set_main_option("script_location", str(app_dir))
    config.set_main_option("path_separator", "space")
    config.set_main_option("version_locations", f"{app_dir / 'versions'} {installed}")
    app_versions = app_dir / "versions"

    plain = command.revision(config, "plain")  # no --head: follows ours, in the package
    assert plain is not None and not isinstance(plain, list)
    assert Path(plain.path).parent == installed
    assert plain.down_revision == migrations.HEAD_REVISION
    Path(plain.path).unlink()

    first = command.revision(
        config, "initial", head="base", branch_label="app", version_path=str(app_versions)
    )
    assert first is not None and not isinstance(first, list)
    assert Path(first.path).parent == app_versions and first.down_revision is None
    second = command.revision(config, "add customers", head="app@head")
    assert second is not None and not isinstance(second, list)
    assert Path(second.path).parent == app_versions
    assert second.down_revision == first.revision
    heads = set(ScriptDirectory.from_config(config).get_heads())
    assert heads == {migrations.HEAD_REVISION, second.revision}
    assert sorted(p.name for p in installed.glob("*.py")) == [
        "ts0001_initial.py",
        "ts0002_event_ids_and_drops.py",
        "ts0003_outbox_idempotency_timers.py",
        "ts0004_data_keys_and_history_seals.py",
        "ts0005_search_order_index.py",
    ]
    capsys.readouterr()


def test_include_object_leaves_our_tables_to_our_branch() -> None:
    metadata = sa.MetaData()
    table = sa.Table("tiered_state_history", metadata, sa.Column("id", sa.Integer))
    other = sa.Table("invoices", metadata, sa.Column("id", sa.Integer))
    assert not migrations.include_object(table, table.name, "table", False, None)
    assert not migrations.include_object(table.c.id, "id", "column", False, None)
    assert not migrations.include_object(None, migrations.VERSION_TABLE, "table", True, None)
    assert migrations.include_object(other, other.name, "table", False, None)
    assert migrations.include_object(other.c.id, "id", "column", False, None)
