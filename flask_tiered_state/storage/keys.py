"""Key and pattern rules shared by every tier.

Keys are 1 to 255 characters from ``A-Z a-z 0-9`` and ``_ - . : / @ + =``.
Patterns are globs: ``*`` matches any run of characters (``/`` included), ``?``
exactly one; every other character is literal in every backend, so each backend
escapes what its own matcher treats as special. Matching takes time proportional to
the key's length times the pattern's, never more (see :func:`glob_to_regex`).
"""

from __future__ import annotations

import fnmatch
import re
from functools import lru_cache

from ..errors import InvalidKeyError, InvalidPatternError

__all__ = [
    "KEY_ALPHABET_DESCRIPTION",
    "MAX_KEY_LENGTH",
    "MAX_PATTERN_LENGTH",
    "glob_literal_prefix",
    "glob_to_redis_match",
    "glob_to_regex",
    "glob_to_sql_like",
    "validate_key",
    "validate_keys",
    "validate_pattern",
]

MAX_KEY_LENGTH = 255
#: Patterns are capped like keys: with matching in O(key length * pattern length),
#: the cap bounds the work one pattern can cost per key.
MAX_PATTERN_LENGTH = 255
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
    if not pattern or len(pattern) > MAX_PATTERN_LENGTH:
        raise InvalidPatternError(
            pattern,
            f"Pattern {pattern[:40]!r}{'...' if len(pattern) > 40 else ''} is "
            f"{len(pattern)} characters; patterns are 1 to {MAX_PATTERN_LENGTH} characters.",
        )
    bad = sorted({c for c in pattern if not _PATTERN_RE.fullmatch(c)})
    raise InvalidPatternError(
        pattern,
        f"Pattern {pattern!r} contains {''.join(bad)!r}; patterns may contain "
        f"{KEY_ALPHABET_DESCRIPTION}, plus the wildcards * and ?.",
    )


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """A compiled regex whose ``fullmatch`` accepts exactly the keys the glob matches.

    ``fullmatch`` takes time proportional to ``len(key) * len(pattern)`` at worst,
    whatever the pattern: the translation is the standard library's
    :func:`fnmatch.translate` (its ``[...]`` classes cannot occur, as patterns cannot
    hold brackets), which matches each ``*`` but the last lazily up to the next fixed
    part inside an atomic group (a look-ahead before Python 3.11). Each fixed part is
    so placed at its leftmost fit, which is right for globs, and is never tried again
    when a later part fails: no backtracking over combinations of stars, which made
    ``*a*a*a*a*a*b`` take minutes on a 200-character key as a plain ``.*``
    translation. Use ``fullmatch`` (``search`` would retry at every start).

    :raises InvalidPatternError: ``pattern`` breaks the pattern rules.
    """
    return _compiled_glob(validate_pattern(pattern))


@lru_cache(maxsize=256)
def _compiled_glob(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern))


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
