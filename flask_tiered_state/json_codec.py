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
"""

from __future__ import annotations

import json
import marshal
import re
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = [
    "BACKEND",
    "ORJSON",
    "STDLIB",
    "Codec",
    "check_encodable",
    "dumps",
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


def stdlib_dumps(value: Any) -> str:
    """The canonical JSON text of ``value`` by the standard library.

    :raises TypeError: a value or key JSON has no form for (or keys that do not sort).
    :raises ValueError: NaN or an infinity, a circular reference, or a lone surrogate
        in a string (its text could not be stored as UTF-8).
    """
    text = _canonical(value)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"the lone surrogate {exc.object[exc.start]!r} in a string is not valid Unicode"
            ) from None
    return text


def stdlib_loads(text: str | bytes) -> Any:
    """:func:`json.loads`."""
    return json.loads(text)


def stdlib_check_encodable(value: Any) -> None:
    """Raise TypeError or ValueError exactly where
    ``json.dumps(value, allow_nan=False, separators=(",", ":"))`` raises."""
    _plain(value)


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
                return json.loads(text)
        else:
            data = text
        if _LONG_RUN in data.translate(_DIGITS_AS_ZEROS):
            return json.loads(text)
        try:
            return decode(data)
        except decode_error:  # NaN, lone surrogate escapes, BOMs, other encodings, errors
            return json.loads(text)

    def check_encodable(value: Any) -> None:
        try:
            out = encode(value, option=plain)
        except encode_error:
            _plain(value)
        else:
            if _NULL in out and not _finite(value):
                _plain(value)

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
