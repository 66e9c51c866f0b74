"""Sphinx configuration for flask_tiered_state."""

from __future__ import annotations

import importlib.metadata

project = "flask_tiered_state"
copyright = "2026, flask_tiered_state developers"
release = importlib.metadata.version("flask-tiered-state")
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_preserve_defaults = True
# No intersphinx: the build must work offline (CI machines reach no documentation hosts).
nitpicky = False
html_theme = "alabaster"
html_static_path = ["_static"]
exclude_patterns = ["_build"]
