"""The HTML viewer of the OpenAPI document at ``<prefix>/docs``: Swagger UI.

Its built files come from the ``swagger-ui-py`` package (the ``apidocs`` extra), read
from where pip installed them and served by the blueprint, behind the access hook like
the document; no CDN is reached at run time. Only its static files are used, never its
own Flask handler. Without the package, ``<prefix>/docs`` answers a 404 saying what to
install.
"""

from __future__ import annotations

import html
import importlib.util
import json
import os

__all__ = ["VIEWER_FILES", "VIEWER_PACKAGE", "viewer_directory", "viewer_page"]

#: The distribution that ships Swagger UI's files (the ``apidocs`` extra).
VIEWER_PACKAGE = "swagger-ui-py"
_MODULE = "swagger_ui"
#: The files of the viewer the blueprint serves (every other name answers 404).
VIEWER_FILES = frozenset(
    {"swagger-ui.css", "swagger-ui-bundle.js", "favicon-16x16.png", "favicon-32x32.png"}
)


def viewer_directory() -> str | None:
    """The directory of Swagger UI's files, or None when the extra is not installed.
    Found without importing the package (its own handlers need PyYAML and Jinja)."""
    spec = importlib.util.find_spec(_MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        directory = os.path.join(location, "static")
        if all(os.path.isfile(os.path.join(directory, name)) for name in VIEWER_FILES):
            return directory
    return None


def viewer_page(document_url: str, docs_url: str) -> str:
    """The viewer's page: Swagger UI on ``document_url``, its files under ``docs_url``."""
    base = html.escape(docs_url, quote=True)
    # JSON in a script: "</" must not end the script element.
    options = json.dumps({"url": document_url, "dom_id": "#swagger-ui", "deepLinking": True})
    options = options.replace("</", "<\\/")
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>flask_tiered_state REST API</title>
<link rel="stylesheet" href="{base}/swagger-ui.css">
<link rel="icon" type="image/png" href="{base}/favicon-32x32.png" sizes="32x32">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{base}/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({options});</script>
</body>
</html>
"""
