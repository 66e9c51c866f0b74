"""Sphinx configuration for flask_tiered_state."""

from __future__ import annotations

import importlib.metadata
from typing import Any

from sphinx.application import Sphinx
from sphinx.ext import intersphinx
from sphinx.util import logging

project = "flask_tiered_state"
copyright = "2026, flask_tiered_state developers"
release = importlib.metadata.version("flask-tiered-state")
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_preserve_defaults = True
nitpicky = False
exclude_patterns = ["_build", "_inventories"]

# -- Links to the projects we build on --------------------------------------------------
# Intersphinx would download each project's objects.inv when the docs are built, but CI
# and the development machines reach PyPI, not documentation hosts, and the build runs
# with -W: a failed download would fail it. So the inventories are shipped in
# docs/_inventories, written by docs/gen_inventories.py: Sphinx's own format, listing
# the objects these docs refer to, each with the address of its entry in the project's
# published documentation. Intersphinx reads the local file (the second item) and makes
# the links against the public base URL (the first): the built pages link to the real
# docs, and nothing is fetched. A reference to one of these projects that no inventory
# resolves fails the build (see ``_resolve_external`` below): add the object to
# docs/gen_inventories.py and run it.
_INVENTORIES = {
    "flask": "https://flask.palletsprojects.com/en/stable/",
    "werkzeug": "https://werkzeug.palletsprojects.com/en/stable/",
    "sqlalchemy": "https://docs.sqlalchemy.org/en/20/",
    "redis": "https://redis.readthedocs.io/en/stable/",
    "boto3": "https://boto3.amazonaws.com/v1/documentation/api/latest/",
    "marshmallow": "https://marshmallow.readthedocs.io/en/stable/",
}
intersphinx_mapping = {
    name: (url, f"_inventories/{name}.inv") for name, url in _INVENTORIES.items()
}
#: The top-level names whose references must resolve through the shipped inventories.
EXTERNAL_PREFIXES = (
    "flask.",
    "werkzeug.",
    "sqlalchemy.",
    "redis.",
    "boto3.",
    "S3.",
    "marshmallow.",
)

# -- HTML ------------------------------------------------------------------------------
# Furo: a maintained, responsive theme (readable from phones to wide screens, light and
# dark), with the sidebar + content layout of the Pallets projects' docs.
html_theme = "furo"
html_title = "flask_tiered_state"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {
    "navigation_with_keys": True,
}
pygments_style = "friendly"
pygments_dark_style = "monokai"


def _resolve_external(app: Sphinx, env: Any, node: Any, contnode: Any) -> Any:
    """Resolve a reference to Flask, Werkzeug, SQLAlchemy, redis-py, boto3 or marshmallow
    through the shipped inventories, and warn (failing a -W build) when none has it."""
    target = str(node.get("reftarget", ""))
    if node.get("refdomain") != "py" or not target.startswith(EXTERNAL_PREFIXES):
        return None
    resolved = intersphinx.missing_reference(app, env, node, contnode)
    if resolved is None:
        logging.getLogger(__name__).warning(
            "%s is not in docs/_inventories: add it to docs/gen_inventories.py and run it",
            target,
            location=node,
        )
    return resolved


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("missing-reference", _resolve_external, priority=400)
    return {"parallel_read_safe": True}
