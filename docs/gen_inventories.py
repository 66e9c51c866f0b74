"""Write the intersphinx inventories of ``docs/_inventories`` (run it after changing ``PROJECTS``).

Intersphinx normally downloads each project's ``objects.inv`` at build time. Our
builds cannot (CI and the development machines reach PyPI, not the projects'
documentation hosts), and the build runs with ``-W``, so a failed download would fail
it. Instead the inventories are shipped here, one per project, in Sphinx's own format
(version 2, zlib-compressed), and list the objects these docs refer to -- by the names
the docs and autodoc's type hints use (``flask.app.Flask`` as well as ``flask.Flask``)
-- each with the address of its entry in the project's published documentation.
``docs/conf.py`` gives intersphinx the public base URL and this file, and fails the
build on a reference to one of these projects that no inventory resolves: add the
object here (its page and anchor as the project's own docs have them), run this
script, commit the ``.inv`` file.

Run: ``.venv/bin/python docs/gen_inventories.py``
"""

from __future__ import annotations

import zlib
from pathlib import Path

#: Where the inventories are written.
FOLDER = Path(__file__).resolve().parent / "_inventories"

#: project key -> (project name, version, public base URL, {name: (role, uri)}).
#: ``uri`` is relative to the base URL, as in a real ``objects.inv``.
PROJECTS: dict[str, tuple[str, str, str, dict[str, tuple[str, str]]]] = {
    "flask": (
        "Flask",
        "3.1",
        "https://flask.palletsprojects.com/en/stable/",
        {
            "flask.Flask": ("py:class", "api/#flask.Flask"),
            "flask.app.Flask": ("py:class", "api/#flask.Flask"),
            "flask.Blueprint": ("py:class", "api/#flask.Blueprint"),
            "flask.blueprints.Blueprint": ("py:class", "api/#flask.Blueprint"),
            "flask.Request": ("py:class", "api/#flask.Request"),
            "flask.wrappers.Request": ("py:class", "api/#flask.Request"),
            "flask.current_app": ("py:data", "api/#flask.current_app"),
            "flask.Flask.test_cli_runner": ("py:method", "api/#flask.Flask.test_cli_runner"),
        },
    ),
    "werkzeug": (
        "Werkzeug",
        "3.1",
        "https://werkzeug.palletsprojects.com/en/stable/",
        {
            "werkzeug.local.LocalProxy": ("py:class", "local/#werkzeug.local.LocalProxy"),
        },
    ),
    "sqlalchemy": (
        "SQLAlchemy",
        "2.0",
        "https://docs.sqlalchemy.org/en/20/",
        {
            "sqlalchemy.create_engine": (
                "py:function",
                "core/engines.html#sqlalchemy.create_engine",
            ),
            "sqlalchemy.Engine": ("py:class", "core/connections.html#sqlalchemy.engine.Engine"),
            "sqlalchemy.engine.Engine": (
                "py:class",
                "core/connections.html#sqlalchemy.engine.Engine",
            ),
            "sqlalchemy.engine.base.Engine": (
                "py:class",
                "core/connections.html#sqlalchemy.engine.Engine",
            ),
            "sqlalchemy.Connection": (
                "py:class",
                "core/connections.html#sqlalchemy.engine.Connection",
            ),
            "sqlalchemy.engine.Connection": (
                "py:class",
                "core/connections.html#sqlalchemy.engine.Connection",
            ),
            "sqlalchemy.engine.Connection.execution_options": (
                "py:method",
                "core/connections.html#sqlalchemy.engine.Connection.execution_options",
            ),
            "sqlalchemy.MetaData": ("py:class", "core/metadata.html#sqlalchemy.schema.MetaData"),
            "sqlalchemy.Table": ("py:class", "core/metadata.html#sqlalchemy.schema.Table"),
            "sqlalchemy.exc.IntegrityError": (
                "py:exception",
                "core/exceptions.html#sqlalchemy.exc.IntegrityError",
            ),
            "sqlalchemy.sql.base.Executable": (
                "py:class",
                "core/selectable.html#sqlalchemy.sql.expression.Executable",
            ),
            "sqlalchemy.sql.elements.ColumnElement": (
                "py:class",
                "core/sqlelement.html#sqlalchemy.sql.expression.ColumnElement",
            ),
        },
    ),
    "redis": (
        "redis-py",
        "6",
        "https://redis.readthedocs.io/en/stable/",
        {
            "redis.Redis": ("py:class", "connections.html#redis.Redis"),
            "redis.ConnectionPool": (
                "py:class",
                "connections.html#redis.connection.ConnectionPool",
            ),
            "redis.connection.ConnectionPool": (
                "py:class",
                "connections.html#redis.connection.ConnectionPool",
            ),
        },
    ),
    "boto3": (
        "Boto3",
        "1",
        "https://boto3.amazonaws.com/v1/documentation/api/latest/",
        {
            "boto3.session.Session": (
                "py:class",
                "reference/core/session.html#boto3.session.Session",
            ),
            "boto3.session.Session.client": (
                "py:method",
                "reference/core/session.html#boto3.session.Session.client",
            ),
            "S3.Client.put_object": (
                "py:method",
                "reference/services/s3/client/put_object.html#S3.Client.put_object",
            ),
            "S3.Client.delete_objects": (
                "py:method",
                "reference/services/s3/client/delete_objects.html#S3.Client.delete_objects",
            ),
        },
    ),
    "marshmallow": (
        "marshmallow",
        "3",
        "https://marshmallow.readthedocs.io/en/stable/",
        {
            "marshmallow.Schema": ("py:class", "marshmallow.schema.html#marshmallow.Schema"),
            "marshmallow.schema.Schema": (
                "py:class",
                "marshmallow.schema.html#marshmallow.Schema",
            ),
            "marshmallow.ValidationError": (
                "py:exception",
                "marshmallow.exceptions.html#marshmallow.exceptions.ValidationError",
            ),
            "marshmallow.exceptions.ValidationError": (
                "py:exception",
                "marshmallow.exceptions.html#marshmallow.exceptions.ValidationError",
            ),
        },
    ),
}


def render(project: str, version: str, objects: dict[str, tuple[str, str]]) -> bytes:
    """An ``objects.inv`` (version 2) of ``objects``: ``{name: (domain:role, uri)}``."""
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    lines = "".join(f"{name} {role} 1 {uri} -\n" for name, (role, uri) in sorted(objects.items()))
    return header.encode() + zlib.compress(lines.encode())


def main() -> None:
    FOLDER.mkdir(exist_ok=True)
    for key, (project, version, _base, objects) in PROJECTS.items():
        (FOLDER / f"{key}.inv").write_bytes(render(project, version, objects))


if __name__ == "__main__":
    main()
