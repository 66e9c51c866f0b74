"""Building new records from a caller's structure: registration and transitions.

Every record the manager writes is built here (single and batch writes, registration,
transitions, rollback), so this is where the data and metadata a write brings are held
to ``max_json_depth`` (``TIERED_STATE_MAX_JSON_DEPTH``): before the schema, the
validators and the encoders, whose recursion a deeper value could exhaust. The same
walk refuses strings (values and keys, and the name) holding NUL or a lone surrogate,
which PostgreSQL cannot store and SQLite would: every backend refuses them alike.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidTransitionError, JSONTooDeepError, ValidationError
from ..json_codec import DEFAULT_MAX_JSON_DEPTH, check_max_json_depth
from .arguments import check_name_metadata
from .model import StateTransition, utc_now_iso
from .registry import StateTypeSpec
from .validation import ValidatorRegistry, check_json, parse_structure, run_checks

__all__ = ["RecordBuilder", "check_record_json", "unstorable_text"]

_CONTAINERS = (dict, list, tuple)
_SCALARS = frozenset({int, float, bool, type(None)})
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]").search
_SURROGATE = re.compile("[\ud800-\udfff]")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}").fullmatch


def unstorable_text(text: str) -> bool:
    """True when ``text`` holds NUL (U+0000) or a lone surrogate (U+D800 to U+DFFF)."""
    # "in" is a memchr and isascii() a flag: only non-ASCII text pays for the regex.
    return "\x00" in text or (not text.isascii() and _UNSTORABLE(text) is not None)


def check_record_json(value: Any, limit: int, *, what: str, field: str) -> None:
    """Refuse ``value`` (a record's data or metadata) when it nests more than ``limit``
    levels of arrays and objects, as :func:`~flask_tiered_state.json_codec.json_depth`
    counts them, or when a string in it (a key or a value) holds NUL or a lone
    surrogate: one pass, level by level, without recursion.

    :param what: the value as the message names it (``"the data of 'order-1'"``).
    :param field: the field the path of a refused string starts with (``data``).
    :raises JSONTooDeepError: the value nests deeper than ``limit``.
    :raises ValidationError: a string holds NUL or a lone surrogate; the message and
        :attr:`~flask_tiered_state.errors.ValidationError.errors` give its path.
    """
    if not isinstance(value, _CONTAINERS):
        if type(value) is str and unstorable_text(value):
            _refuse_text(value, field, what=what)
        return
    scalars, containers = _SCALARS, _CONTAINERS
    depth, level = 0, [value]
    while level:
        depth += 1
        if depth > limit:
            raise JSONTooDeepError(what, limit, field=field)
        below: list[Any] = []
        # The strings of a level (keys too) are checked at once, joined: one scan in C
        # instead of a call per string; the rare refusal then searches for the path.
        texts: list[Any] = []
        text, keys, push = texts.append, texts.extend, below.append
        for container in level:
            if isinstance(container, dict):
                keys(container)
                items: Any = container.values()
            else:
                items = container
            for item in items:
                kind = type(item)
                if kind is str:
                    text(item)
                elif kind in scalars:
                    continue
                elif kind is dict or kind is list or isinstance(item, containers):
                    push(item)
                elif isinstance(item, str):
                    text(item)
        try:
            joined = "".join(texts)
        except TypeError:  # a key that is not a string: check_json refuses it
            joined = "".join(t for t in texts if isinstance(t, str))
        if unstorable_text(joined):
            found, path, is_key = _first_unstorable(value, field)
            _refuse_text(found, path, what=what, key=is_key)
        level = below


def _first_unstorable(root: Any, field: str) -> tuple[str, str, bool]:
    """The first string of ``root`` holding NUL or a lone surrogate: the string, its path
    (``data.items[3].name``) and whether it is a key. Only called to word an error."""
    stack: list[tuple[Any, str]] = [(root, field)]
    seen: set[int] = set()
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        node_is_dict = isinstance(node, dict)
        pairs = node.items() if node_is_dict else enumerate(node)
        for key, child in pairs:
            step = f"{path}{_step(key)}" if node_is_dict else f"{path}[{key}]"
            if isinstance(key, str) and unstorable_text(key):
                return key, step, True
            if isinstance(child, str) and unstorable_text(child):
                return child, step, False
            if isinstance(child, _CONTAINERS):
                stack.append((child, step))
    raise AssertionError("unreachable: the walk found such a string")  # pragma: no cover


def _escape_surrogate(match: re.Match[str]) -> str:
    return f"\\u{ord(match[0]):04x}"


def _step(key: object) -> str:
    """``.name``, or ``["odd key"]``: one key of a path."""
    text = str(key)
    if _PLAIN_KEY(text):
        return f".{text}"
    shown = json.dumps(text if len(text) <= 40 else f"{text[:40]}...", ensure_ascii=False)
    # json escapes NUL but not lone surrogates, which no UTF-8 answer could carry
    return f"[{_SURROGATE.sub(_escape_surrogate, shown)}]"


def _refuse_text(text: str, path: str, *, what: str, key: bool = False) -> None:
    kind = "a NUL character (U+0000)" if "\x00" in text else "a lone surrogate (U+D800-U+DFFF)"
    string = "key" if key else "string"
    raise ValidationError(
        f"{what[:1].upper()}{what[1:]} is invalid: the {string} at {path} holds {kind}. "
        "Strings of a state (its name, the keys and values of its data and metadata) may "
        "not hold NUL or lone surrogates, which PostgreSQL cannot store; remove them, or "
        "encode binary data (base64).",
        {path: [f"The {string} holds {kind}; strings may not hold NUL or lone surrogates."]},
    )


class RecordBuilder:
    """Checks structures, runs validators and lifecycles, and returns the next record.

    :param max_json_depth: the levels of arrays and objects the data and the metadata
        of a record may nest (each counts itself: ``{"a": [1]}`` is 2).
    """

    def __init__(
        self, validators: ValidatorRegistry, *, max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    ) -> None:
        self.validators = validators
        self.max_json_depth = check_max_json_depth(max_json_depth)

    def _check_json(self, value: dict[str, Any], *, state_id: str, field: str) -> None:
        """``value`` (the data or metadata a write brings) is plain JSON, nested at most
        :attr:`max_json_depth` levels.

        :raises JSONTooDeepError: it nests deeper.
        :raises ValidationError: it is not plain JSON, or a string in it holds NUL or a
            lone surrogate.
        """
        check_record_json(
            value, self.max_json_depth, what=f"the {field} of {state_id!r}", field=field
        )
        check_json(value, state_id=state_id, field=field)

    @staticmethod
    def _check_name(name: str | None, *, what: str) -> None:
        """A name (None: not given) holds no NUL or lone surrogate."""
        if name is not None and unstorable_text(name):
            _refuse_text(name, "name", what=what)

    def _check_data(self, state_id: str, spec: StateTypeSpec, data: dict[str, Any]) -> None:
        """The type's schema, on new data."""
        schema = self.validators.schema(spec.name)
        if schema is not None:
            run_checks((schema,), data, state_id=state_id, state_type=spec.name, what="data")

    def _check_state(self, spec: StateTypeSpec, record: dict[str, Any]) -> None:
        """The type's validators, on the whole proposed record (each gets its own copy,
        so a validator cannot change what is stored)."""
        checks = self.validators.state_checks(spec.name)
        if checks:
            state_id = record["state_id"]
            run_checks(
                checks, copy.deepcopy(record), state_id=state_id, state_type=spec.name,
                what="state",
            )  # fmt: skip

    def new_record(
        self, state_id: str, spec: StateTypeSpec, structure: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """The version-1 record of a registration (status: the lifecycle's initial one)."""
        given = parse_structure(structure, state_id=state_id, state_type=spec.name)
        data = {} if given.data is None else given.data
        metadata = {} if given.metadata is None else given.metadata
        self._check_json(data, state_id=state_id, field="data")
        self._check_json(metadata, state_id=state_id, field="metadata")
        check_name_metadata(given.name, metadata, state_id=state_id)
        self._check_name(given.name, what=f"the name of {state_id!r}")
        self._check_data(state_id, spec, data)
        now = utc_now_iso()
        record = {
            "state_id": state_id,
            "name": state_id if given.name is None else given.name,
            "type": spec.name,
            "status": spec.lifecycle.initial_status.value,
            "data": data,
            "metadata": metadata,
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
        self._check_state(spec, record)
        return record

    def changed_record(
        self,
        current: dict[str, Any],
        spec: StateTypeSpec,
        transition: StateTransition,
        structure: Mapping[str, Any] | None,
        *,
        merge: bool = False,
    ) -> dict[str, Any]:
        """The record after ``transition`` with the changes in ``structure``.

        :raises InvalidTransitionError: the lifecycle (or a guard) refuses it.
        :raises ValidationError: the structure or the resulting data is invalid.
        """
        state_id = current["state_id"]
        status = spec.lifecycle.target(state_id, current["status"], transition)
        given = parse_structure(structure, state_id=state_id, state_type=spec.name, current=current)
        new = dict(current)
        if given.metadata is not None:
            self._check_json(given.metadata, state_id=state_id, field="metadata")
        merged_metadata = (
            {**current["metadata"], **given.metadata}
            if merge and given.metadata is not None
            else given.metadata
        )
        check_name_metadata(given.name, merged_metadata, state_id=state_id)
        self._check_name(given.name, what=f"the name of {state_id!r}")
        if given.name is not None:
            new["name"] = given.name
        if given.data is not None:
            self._check_json(given.data, state_id=state_id, field="data")
            new["data"] = {**current["data"], **given.data} if merge else given.data
        if merged_metadata is not None:
            new["metadata"] = merged_metadata
        new["status"] = status.value
        new["version"] = current["version"] + 1
        new["updated_at"] = utc_now_iso()
        spec.lifecycle.check_guards(transition, current, new)
        if transition is not StateTransition.DELETE:
            if given.data is not None:
                self._check_data(state_id, spec, new["data"])
            self._check_state(spec, new)
        return new

    def erased_record(self, current: dict[str, Any], spec: StateTypeSpec) -> dict[str, Any]:
        """The record an erasure leaves: status ``deleted``, the next version, and without
        the fields ``spec`` encrypts (``data`` and ``metadata`` encrypted whole become
        empty, an encrypted ``name`` becomes the state id)."""
        new = copy.copy(current)
        for path in spec.encrypted_fields:
            if path == ("name",):
                new["name"] = current["state_id"]
            elif len(path) == 1:
                new[path[0]] = {}
            else:
                node = new
                for step in path[:-1]:
                    child = node.get(step)
                    if not isinstance(child, dict):
                        break
                    node[step] = node = dict(child)
                else:
                    node.pop(path[-1], None)
        new["status"] = "deleted"
        new["version"] = current["version"] + 1
        new["updated_at"] = utc_now_iso()
        return new

    def restored_record(
        self,
        current: dict[str, Any],
        spec: StateTypeSpec,
        target: dict[str, Any],
        to_version: int,
    ) -> dict[str, Any]:
        """The record after rolling ``current`` back to ``target`` (version ``to_version``):
        its name, status, data and metadata, with the next version number.

        :raises InvalidTransitionError: no transition leads from the current status to
            the restored one.
        :raises JSONTooDeepError: the restored data or metadata nests deeper than
            :attr:`max_json_depth` (a version recorded under a higher limit).
        :raises ValidationError: a string of the restored version holds NUL or a lone
            surrogate (recorded on SQLite before they were refused).
        """
        state_id, status = current["state_id"], current["status"]
        for field in ("data", "metadata"):
            check_record_json(
                target[field], self.max_json_depth,
                what=f"the {field} of version {to_version} of {state_id!r}", field=field,
            )  # fmt: skip
        self._check_name(target["name"], what=f"the name of version {to_version} of {state_id!r}")
        if not spec.lifecycle.allows_status_change(status, target["status"]):
            raise InvalidTransitionError(
                state_id,
                status,
                StateTransition.ROLLBACK.value,
                spec.lifecycle.allowed_transitions(status),
                reason=f"restoring version {to_version} would change the status from "
                f"{status} to {target['status']}, which no transition allows",
            )
        new = {
            **current,
            "name": target["name"],
            "status": target["status"],
            "data": target["data"],
            "metadata": target["metadata"],
            "version": current["version"] + 1,
            "updated_at": utc_now_iso(),
        }
        self._check_data(state_id, spec, new["data"])
        self._check_state(spec, new)
        return new
