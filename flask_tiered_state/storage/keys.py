"""Key and pattern rules shared by every tier.

Keys are 1 to 255 characters from ``A-Z a-z 0-9`` and ``_ - . : / @ + =``.
Patterns are globs: ``*`` matches any run of characters (``/`` included), ``?``
exactly one; every other character is literal in every backend, so each backend
escapes what its own matcher treats as special.
"""

from __future__ import annotations

import re
from functools import lru_cache

from ..errors import InvalidKeyError, InvalidPatternError

__all__ = [
    "KEY_ALPHABET_DESCRIPTION",
    "MAX_KEY_LENGTH",
    "glob_literal_prefix",
    "glob_to_redis_match",
    "glob_to_regex",
    "glob_to_sql_like",
    "validate_key",
    "validate_keys",
    "validate_pattern",
]

MAX_KEY_LENGTH = 255
KEY_ALPHABET_DESCRIPTION = "letters A-Z a-z, digits 0-9 and _ - . : / @ + ="
_KEY_RE = re.compile(r"[A-Za-z0-9_\-.:/@+=]{1,255}")
#: Many keys joined by newlines (a character no key may hold), checked in one pass.
_KEY_LINES_RE = re.compile(r"(?:[A-Za-z0-9_\-.:/@+=]{1,255}\n)+")
_PATTERN_RE = re.compile(r"[A-Za-z0-9_\-.:/@+=*?]{1,255}")
_REDIS_SPECIAL = frozenset("*?[]\\^")
SQL_LIKE_ESCAPE = "\\"


def validate_key(key: object) -> str:
    """Return ``key`` if it follows the key rules, else raise :class:`InvalidKeyError`."""
    if type(key) is str and _KEY_RE.fullmatch(key):
        return key
    if not isinstance(key, str):
        raise InvalidKeyError(key, f"Keys must be strings, not {type(key).__name__} ({key!r}).")
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidKeyError(
            key, f"Key {key[:40]!r} is {len(key)} characters; keys are 1 to 255 characters."
        )
    bad = sorted({c for c in key if not _KEY_RE.fullmatch(c)})
    raise InvalidKeyError(
        key,
        f"Key {key!r} contains {''.join(bad)!r}; keys may contain only {KEY_ALPHABET_DESCRIPTION}.",
    )


def validate_keys(keys: object) -> list[str]:
    """Validate a sequence of keys (not a bare string) and return it as a list."""
    if isinstance(keys, (str, bytes)) or not hasattr(keys, "__iter__"):
        raise InvalidKeyError(keys, f"Expected a sequence of keys, got {type(keys).__name__}.")
    listed = list(keys)
    # One regex pass over the joined keys instead of one call per key (batches of
    # thousands); any doubt falls back to the per-key check and its exact error.
    if set(map(type, listed)) == {str}:
        lines = "\n".join(listed) + "\n"
        # (the count: a key holding a newline must not pass as two keys)
        if lines.count("\n") == len(listed) and _KEY_LINES_RE.fullmatch(lines):
            return listed
    return [validate_key(k) for k in listed]


def validate_pattern(pattern: object) -> str:
    """Return ``pattern`` if it is a valid glob, else raise :class:`InvalidPatternError`."""
    if isinstance(pattern, str) and _PATTERN_RE.fullmatch(pattern):
        return pattern
    if not isinstance(pattern, str):
        raise InvalidPatternError(
            pattern, f"Patterns must be strings, not {type(pattern).__name__}."
        )
    if not pattern or len(pattern) > MAX_KEY_LENGTH:
        raise InvalidPatternError(pattern, "Patterns are 1 to 255 characters.")
    bad = sorted({c for c in pattern if not _PATTERN_RE.fullmatch(c)})
    raise InvalidPatternError(
        pattern,
        f"Pattern {pattern!r} contains {''.join(bad)!r}; patterns may contain "
        f"{KEY_ALPHABET_DESCRIPTION}, plus the wildcards * and ?.",
    )


@lru_cache(maxsize=256)
def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """A compiled regex matching exactly the keys the glob matches."""
    parts = []
    for char in pattern:
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.DOTALL)


def glob_literal_prefix(pattern: str) -> str:
    """The longest literal prefix of the glob (before its first wildcard)."""
    for index, char in enumerate(pattern):
        if char in "*?":
            return pattern[:index]
    return pattern


def glob_to_redis_match(pattern: str) -> str:
    """The glob as a Redis ``SCAN MATCH`` pattern (literals escaped)."""
    out = []
    for char in pattern:
        if char in "*?":
            out.append(char)
        elif char in _REDIS_SPECIAL:
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def glob_to_sql_like(pattern: str) -> str:
    """The glob as a SQL ``LIKE`` pattern using ``\\`` as the escape character."""
    out = []
    for char in pattern:
        if char == "*":
            out.append("%")
        elif char == "?":
            out.append("_")
        elif char in "%_\\":
            out.append(SQL_LIKE_ESCAPE + char)
        else:
            out.append(char)
    return "".join(out)
