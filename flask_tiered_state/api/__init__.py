"""The REST blueprint (``TIERED_STATE_API_PREFIX``) and its OpenAPI document."""

from __future__ import annotations

from .openapi import build_openapi
from .routes import ROUTES, Route, create_api_blueprint

__all__ = ["ROUTES", "Route", "build_openapi", "create_api_blueprint"]
