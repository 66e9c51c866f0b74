"""The JSON codec of the store: the canonical text of values and the decoding of stored text.

With the ``fast`` extra installed, :func:`dumps`, :func:`loads` and
:func:`check_encodable` run through orjson, and hand every value or text orjson could
answer differently to the standard library, so they give the results of :mod:`json`
(the same text, the same values, the same errors). Without orjson they are the
standard library's. :data:`BACKEND` says which is active; :data:`STDLIB` and
:data:`ORJSON` are both codecs, for comparing them.

One difference remains: with orjson a :class:`uuid.UUID` may be written as its string,
a plain :class:`enum.Enum` member as its value and an ``orjson.Fragment`` verbatim, where
the standard library refuses all three (finding them would cost a walk of every value).

Depth: the standard library's encoder and decoder recurse once per level of arrays and
objects, so a value nested close to the interpreter's recursion limit (1000) makes them
raise :class:`RecursionError`. Here :func:`dumps` and :func:`check_encodable` raise
ValueError for it instead, like for any other value JSON cannot hold, and :func:`loads`
decodes such a text on a fresh thread's stack, so text that was once written can always
be read back. :func:`json_depth` measures the nesting without recursion, and
:func:`check_json_depth` enforces ``TIERED_STATE_MAX_JSON_DEPTH``
(:data:`DEFAULT_MAX_JSON_DEPTH`) on the records the manager writes.
"""

from __future__ import annotations

import json
import marshal
import re
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from .errors import ConfigurationError, JSONTooDeepError

__all__ = [
    "BACKEND",
    "DEFAULT_MAX_JSON_DEPTH",
    "MAX_JSON_DEPTH",
    "ORJSON",
    "STDLIB",
    "Codec",
    "check_encodable",
    "check_json_depth",
    "check_max_json_depth",
    "dumps",
    "json_depth",
    "loads",
    "stdlib_check_encodable",
    "stdlib_dumps",
    "stdlib_loads",
]


class Codec(NamedTuple):
    """One implementation of the codec's three functions."""

    #: "orjson" or "json".
    name: str
    #: The canonical text of a value: sorted keys, no spaces, non-ASCII kept, no NaN.
    dumps: Callable[[Any], str]
    #: The value of a JSON text, as :func:`json.loads` gives it.
    loads: Callable[[str | bytes], Any]
    #: Raise exactly where ``json.dumps(value, allow_nan=False)`` raises.
    check_encodable: Callable[[Any], None]


_canonical = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode
_plain = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


_TOO_DEEP_TO_ENCODE = "the value nests arrays and objects too deeply to be encoded"


def stdlib_dumps(value: Any) -> str:
    """The canonical JSON text of ``value`` by the standard library.

    :raises TypeError: a value or key JSON has no form for (or keys that do not sort).
    :raises ValueError: NaN or an infinity, a circular reference, a lone surrogate
        in a string (its text could not be stored as UTF-8), or nesting deep enough to
        exhaust the interpreter's recursion limit.
    """
    try:
        text = _canonical(value)
    except RecursionError:
        raise ValueError(_TOO_DEEP_TO_ENCODE) from None
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"the lone surrogate {exc.object[exc.start]!r} in a string is not valid Unicode"
            ) from None
    return text


def _json_loads(text: str | bytes) -> Any:
    """:func:`json.loads`, also of a text nested too deeply for the caller's stack."""
    try:
        return json.loads(text)
    except RecursionError:
        pass
    # The decoder recurses once per level: a text that was encoded near the recursion
    # limit cannot be decoded deeper in a call stack, but can on a new thread's stack.
    outcome: list[Any] = []
    failure: list[Exception] = []

    def decode() -> None:
        try:
            outcome.append(json.loads(text))
        except Exception as exc:  # re-raised on the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=decode, name="tiered-state-json-decode", daemon=True)
    thread.start()
    thread.join()
    if outcome:
        return outcome[0]
    if failure and not isinstance(failure[0], RecursionError):
        raise failure[0]
    raise ValueError("the JSON text nests arrays and objects too deeply to be decoded")


def stdlib_loads(text: str | bytes) -> Any:
    """:func:`json.loads`; a text nested too deeply for the caller's stack is decoded on
    a thread of its own.

    :raises ValueError: the text is not JSON, or nests too deeply to be decoded at all.
    """
    return _json_loads(text)


def stdlib_check_encodable(value: Any) -> None:
    """Raise TypeError or ValueError exactly where
    ``json.dumps(value, allow_nan=False, separators=(",", ":"))`` raises (ValueError for
    nesting that exhausts the recursion limit, where json raises RecursionError)."""
    try:
        _plain(value)
    except RecursionError:
        raise ValueError(_TOO_DEEP_TO_ENCODE) from None


STDLIB = Codec("json", stdlib_dumps, stdlib_loads, stdlib_check_encodable)

# orjson writes floats of exponent -5 to -9 unlike repr() ("0.00001", "1e-7" for
# "1e-05", "1e-07"); its output holding one goes to the standard library. False alarms
# (in strings) only cost speed. The lookbehind keeps timestamps like "10.00001" out,
# while the search still starts from the literal prefix (fast).
_SMALL_EXPONENT = re.compile(rb"e-[6-9](?![0-9])").search
_EXPONENT_MINUS_5 = re.compile(rb"0\.0000(?<![0-9]0\.0000)").search
# orjson reads integers outside [-2**63, 2**64) as floats; texts with a run of 19 or
# more digits go to the standard library. The run is found by mapping every digit to
# "0" and everything else to " ": measured 5x faster than a regex search for
# [0-9]{19}, which costs as much as json.loads itself.
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_LONG_RUN = b"0" * 19
# orjson also writes NaN and infinities as null. When its output holds a null, the
# value's marshal form (a third of the standard library's encoding time) shows whether
# it has one: every float there is its 8 IEEE bytes, little-endian, and a non-finite
# one ends in [F0-FF][7F|FF], bytes UTF-8 text never holds. Others (from integers)
# are false alarms, which only cost speed.
_NULL = b"null"
_NON_FINITE_TAIL = re.compile(rb"[\xf0-\xff][\x7f\xff]").search


def _finite(value: Any) -> bool:
    """False when ``value`` (which orjson encoded) may hold NaN or an infinity."""
    try:
        packed = marshal.dumps(value)
    except ValueError:  # a type marshal does not know (UUID, Enum): ask the stdlib
        return False
    return not ((b"\x7f" in packed or b"\xff" in packed) and _NON_FINITE_TAIL(packed))


def _probes() -> list[Any]:
    """Values whose text shows how an orjson version spells floats and strings."""
    floats = [s * 1.2345678901234567 * 10.0**e for e in range(-20, 24) for s in (1, -1)]
    return [
        *floats,
        *(10.0**exponent for exponent in range(-20, 24)),
        [0.0, -0.0, 0.1, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 1e300],
        [0, -1, 2**63 - 1, -(2**63), 2**64 - 1, True, False, ""],
        {"é": 1, "z": 2, "a": 3, "\U0001f600": 4, "\u2028": 5, '\x7f\x00\x1f\t\n"\\/': 6},
    ]


def _orjson_codec() -> Codec | None:
    try:
        import orjson
    except ImportError:  # the "fast" extra is not installed
        return None
    encode, decode = orjson.dumps, orjson.loads
    encode_error, decode_error = orjson.JSONEncodeError, orjson.JSONDecodeError
    # No default and no OPT_NON_STR_KEYS: whatever orjson would convert its own way
    # (datetimes, dataclasses, subclasses of builtins, non-str keys, which the
    # standard library sorts before converting) makes it raise, and falls back.
    plain = (
        orjson.OPT_PASSTHROUGH_DATETIME
        | orjson.OPT_PASSTHROUGH_DATACLASS
        | orjson.OPT_PASSTHROUGH_SUBCLASS
    )
    canonical = plain | orjson.OPT_SORT_KEYS

    def dumps(value: Any) -> str:
        try:
            out = encode(value, option=canonical)
        except encode_error:  # also integers beyond 64 bits and lone surrogates
            return stdlib_dumps(value)
        if (_NULL in out and not _finite(value)) or _SMALL_EXPONENT(out) or _EXPONENT_MINUS_5(out):
            return stdlib_dumps(value)
        return out.decode()

    def loads(text: str | bytes) -> Any:
        if isinstance(text, str):
            try:
                data = text.encode()
            except UnicodeEncodeError:  # lone surrogates, which only json reads
                return _json_loads(text)
        else:
            data = text
        if _LONG_RUN in data.translate(_DIGITS_AS_ZEROS):
            return _json_loads(text)
        try:
            return decode(data)
        except decode_error:  # NaN, lone surrogate escapes, BOMs, other encodings, errors
            return _json_loads(text)

    def check_encodable(value: Any) -> None:
        try:
            out = encode(value, option=plain)
        except encode_error:  # also nesting beyond orjson's 254 levels
            stdlib_check_encodable(value)
        else:
            if _NULL in out and not _finite(value):
                stdlib_check_encodable(value)

    # The float and string spelling is orjson's own choice and has changed between
    # versions (before 3.11.7: "1e16" for "1e+16"); a version that spells a probe
    # otherwise than the standard library, unnoticed by the checks above, is not used.
    if any(dumps(probe) != _canonical(probe) for probe in _probes()):
        return None
    return Codec("orjson", dumps, loads, check_encodable)


#: The orjson codec, or None when orjson is not installed.
ORJSON: Codec | None = _orjson_codec()
_ACTIVE = STDLIB if ORJSON is None else ORJSON
#: The active codec: "orjson" with the ``fast`` extra installed, else "json".
BACKEND: str = _ACTIVE.name
#: The canonical JSON text of a value (see :func:`stdlib_dumps`), by the active codec.
dumps: Callable[[Any], str] = _ACTIVE.dumps
#: The value of a JSON text, equal to :func:`json.loads`, by the active codec.
loads: Callable[[str | bytes], Any] = _ACTIVE.loads
#: :func:`stdlib_check_encodable`, by the active codec.
check_encodable: Callable[[Any], None] = _ACTIVE.check_encodable


# -- depth ------------------------------------------------------------------------------

#: The default of ``TIERED_STATE_MAX_JSON_DEPTH``: levels of arrays and objects a
#: state's data or metadata may nest.
DEFAULT_MAX_JSON_DEPTH = 64
#: The largest ``TIERED_STATE_MAX_JSON_DEPTH``: deeper values come close to the
#: interpreter's recursion limit (1000) in the code that handles records -- pickling
#: (two frames a level), ``copy.deepcopy`` for validators, indented JSON output.
MAX_JSON_DEPTH = 256

_CONTAINERS = (dict, list, tuple)
_SCALARS = frozenset({str, int, float, bool, type(None)})


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """How many levels of arrays and objects ``value`` nests, counted without recursion:
    0 for a scalar, 1 for ``{}`` or ``[1]``, 2 for ``{"a": [1]}``.

    Dicts, lists and tuples (and their subclasses) count as levels; dict keys do not.
    The count stops past ``limit``: a deeper value (or one that contains itself)
    gives ``limit + 1``. It visits each container's items once, level by level.
    """
    depth = 0
    level = [value] if isinstance(value, _CONTAINERS) else []
    scalars, containers = _SCALARS, _CONTAINERS
    while level:
        depth += 1
        if depth > limit:
            return depth
        below: list[Any] = []
        for container in level:
            for item in container.values() if isinstance(container, dict) else container:
                kind = type(item)
                if kind in scalars:
                    continue
                if kind is dict or kind is list or isinstance(item, containers):
                    below.append(item)
        level = below
    return depth


def check_json_depth(value: Any, limit: int, *, what: str, field: str) -> None:
    """Refuse ``value`` when it nests more than ``limit`` levels (see :func:`json_depth`).

    :param what: the value as the message names it (``"the data of 'order-1'"``).
    :param field: the field named in the error's details (``data``, ``metadata``).
    :raises JSONTooDeepError: the value is deeper than ``limit``.
    """
    if json_depth(value, limit) > limit:
        raise JSONTooDeepError(what, limit, field=field)


def check_max_json_depth(value: object, name: str = "max_json_depth") -> int:
    """``value`` as a depth limit: an int from 1 to :data:`MAX_JSON_DEPTH`.

    :raises ConfigurationError: it is not.
    """
    if type(value) is not int or not 1 <= value <= MAX_JSON_DEPTH:
        raise ConfigurationError(
            f"{name} must be an int from 1 to {MAX_JSON_DEPTH} (levels of arrays and "
            f"objects a state's data may nest), not {value!r}."
        )
    return value
