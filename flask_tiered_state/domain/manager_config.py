"""Configuring a manager: state types, validators and named callbacks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..storage.base import StateCategory
from .callbacks import parse_event_name
from .lifecycle import Lifecycle
from .manager_base import ManagerBase
from .registry import StateTypeSpec

__all__ = ["ConfigurationMixin"]


class ConfigurationMixin(ManagerBase):
    """``register_state_type``, validators and callbacks of the manager."""

    def register_state_type(
        self,
        name: str,
        *,
        lifecycle: Lifecycle | None = None,
        schema: Any = None,
        home_tier: StateCategory = StateCategory.WARM,
        hot_ttl_seconds: int | None = None,
    ) -> StateTypeSpec:
        """Add a state type (or replace a type's settings, built-in ones included).

        :param lifecycle: its :class:`~flask_tiered_state.domain.lifecycle.Lifecycle`
            (default: the default lifecycle).
        :param schema: a marshmallow Schema (class or instance) for its ``data``.
        :param home_tier: where its records are durably kept.
        :param hot_ttl_seconds: TTL when the home tier is HOT.
        """
        spec = self.types.register(
            name,
            lifecycle=lifecycle,
            schema=schema,
            home_tier=home_tier,
            hot_ttl_seconds=hot_ttl_seconds,
        )
        self.validators.set_schema(spec.name, schema)
        return spec

    def get_state_type(self, state_type: object) -> StateTypeSpec:
        """The settings of a type, or InvalidStateTypeError listing the known ones."""
        return self.types.get(state_type)

    def register_validator(self, state_type: object, validator: Any) -> None:
        """Run ``validator`` on the ``data`` of every register and update of the type: a
        ``callable(data) -> bool`` (False rejects), a callable raising
        :class:`marshmallow.ValidationError`, or a marshmallow Schema class or instance."""
        self.validators.register(self.types.get(state_type).name, validator)

    def unregister_validator(self, state_type: object, validator: Any) -> bool:
        """Remove a validator of the type; True if it was registered."""
        return self.validators.unregister(self.types.get(state_type).name, validator)

    def register_callback(self, event_name: str, fn: Callable[..., Any]) -> None:
        """Call ``fn(state_id, old_state, new_state, transition_type)`` after each committed
        change named ``event_name`` (``{type}_{past tense}``, e.g. ``user_suspended``)."""
        parse_event_name(event_name, self.types.names())
        self.callbacks.register(event_name, fn)

    def unregister_callback(self, event_name: str, fn: Callable[..., Any]) -> bool:
        """Remove a callback; True if it was registered."""
        parse_event_name(event_name, self.types.names())
        return self.callbacks.unregister(event_name, fn)
