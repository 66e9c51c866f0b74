"""State types: each with a home tier, an optional schema and a lifecycle.

=============  =========  ==========================
type           home tier  notes
=============  =========  ==========================
user           WARM
transaction    WARM
subscription   WARM
feature        WARM
session        HOT        expires after its hot TTL
=============  =========  ==========================

Each type has a quota, ``max_states``: the most live (not deleted) states it may hold
(see :mod:`.quotas`); a type registered without one gets the registry's default
(``TIERED_STATE_MAX_STATES_PER_TYPE``), ``max_states=None`` means no quota.

The *home tier* holds a record's durable truth; upper tiers only cache it. Apps add
types (or replace a built-in type's settings) with ``register_state_type``. Type
names are 1 to 64 characters: a lowercase letter, then lowercase letters, digits
and ``_`` (they start callback event names such as ``invoice_created``).
"""

from __future__ import annotations

import enum
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from ..errors import ConfigurationError, InvalidRequestError, InvalidStateTypeError
from ..storage.base import StateCategory
from ..storage.checks import int_option
from .encryption import check_encrypted_fields
from .lifecycle import DEFAULT_LIFECYCLE, Lifecycle
from .model import StateType

__all__ = [
    "DEFAULT",
    "DEFAULT_MAX_STATES",
    "TYPE_NAME_RULE",
    "StateTypeSpec",
    "TypeRegistry",
    "UseDefault",
]

#: The default quota of a type (``TIERED_STATE_MAX_STATES_PER_TYPE``).
DEFAULT_MAX_STATES = 100_000


class UseDefault(enum.Enum):
    """The type of :data:`DEFAULT`."""

    TOKEN = "default"


#: ``max_states=DEFAULT`` (the default of the argument): the registry's default quota.
DEFAULT: Final = UseDefault.TOKEN

TYPE_NAME_RULE = "1 to 64 characters: a lowercase letter, then lowercase letters, digits and _"
_TYPE_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")


@dataclass(frozen=True, slots=True)
class StateTypeSpec:
    """How one state type is kept.

    :param hot_ttl_seconds: TTL of HOT-home records; None uses the manager's default.
    :param max_states: the most live states of the type; None: no quota.
    :param encrypted_fields: the paths of the fields kept encrypted at rest
        (``("data", "password")``; see :mod:`.encryption`).
    """

    name: str
    lifecycle: Lifecycle
    home_tier: StateCategory
    hot_ttl_seconds: int | None = None
    schema: Any = None
    max_states: int | None = None
    encrypted_fields: tuple[tuple[str, ...], ...] = ()


class TypeRegistry:
    """The known state types of one manager; reads take no lock.

    :param default_max_states: the quota of the built-in types and of the types
        registered without ``max_states``; None: no quota.
    """

    def __init__(self, *, default_max_states: int | None = DEFAULT_MAX_STATES) -> None:
        self.default_max_states = _check_max_states("the default", default_max_states)
        self._lock = threading.Lock()
        self._types: dict[str, StateTypeSpec] = {}
        self._encrypted: dict[str, tuple[tuple[str, ...], ...]] = {}
        for builtin in StateType:
            home = StateCategory.HOT if builtin is StateType.SESSION else StateCategory.WARM
            self._types[builtin.value] = StateTypeSpec(
                builtin.value, DEFAULT_LIFECYCLE, home, max_states=default_max_states
            )

    def register(
        self,
        name: object,
        *,
        lifecycle: Lifecycle | None = None,
        schema: Any = None,
        home_tier: StateCategory = StateCategory.WARM,
        hot_ttl_seconds: int | None = None,
        max_states: int | UseDefault | None = DEFAULT,
        encrypted_fields: Iterable[str] | None = None,
    ) -> StateTypeSpec:
        """Add a type or replace one's settings (``max_states``: see the class)."""
        type_name = str(name.value) if isinstance(name, StateType) else name
        if not isinstance(type_name, str) or not _TYPE_NAME_RE.fullmatch(type_name):
            raise InvalidRequestError(
                f"Invalid state type name {name!r}; type names are {TYPE_NAME_RULE}.",
                details={"name": repr(name), "rule": TYPE_NAME_RULE},
            )
        if lifecycle is not None and not isinstance(lifecycle, Lifecycle):
            raise ConfigurationError(
                f"lifecycle for type {type_name!r} must be a Lifecycle, not {lifecycle!r}."
            )
        try:
            tier = StateCategory(home_tier)
        except ValueError:
            raise ConfigurationError(
                f"home_tier for type {type_name!r} must be a StateCategory (hot, warm, cold), "
                f"not {home_tier!r}."
            ) from None
        int_option(f"hot_ttl_seconds of type {type_name!r}", hot_ttl_seconds, optional=True)
        quota = (
            self.default_max_states
            if max_states is DEFAULT
            else _check_max_states(f"type {type_name!r}", max_states)
        )
        paths = check_encrypted_fields(encrypted_fields, type_name=type_name)
        spec = StateTypeSpec(
            type_name, lifecycle or DEFAULT_LIFECYCLE, tier, hot_ttl_seconds, schema, quota, paths
        )
        with self._lock:
            self._types = {**self._types, type_name: spec}
            self._encrypted = {n: t.encrypted_fields for n, t in self._types.items()}
        return spec

    def encrypted_paths(self, type_name: object) -> tuple[tuple[str, ...], ...]:
        """The encrypted field paths of the type named ``type_name``; () when none or
        unknown (a dict lookup: called for every record read)."""
        return self._encrypted.get(type_name, ()) if isinstance(type_name, str) else ()

    def get(self, state_type: object) -> StateTypeSpec:
        """The spec of ``state_type`` (a StateType or its name), or InvalidStateTypeError."""
        if isinstance(state_type, StateType):
            state_type = state_type.value
        spec = self._types.get(state_type) if isinstance(state_type, str) else None
        if spec is None:
            raise InvalidStateTypeError(state_type, list(self._types))
        return spec

    def names(self) -> list[str]:
        return sorted(self._types)


def _check_max_states(what: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            f"max_states of {what} must be an integer of at least 1, or None for no quota; "
            f"got {value!r}."
        )
    return value
