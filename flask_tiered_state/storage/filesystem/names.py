"""Key <-> file name mapping of :class:`~.repository.FilesystemStateRepository`.

A name uses only ``a-z 0-9 - _ %``: lower-case letters, digits and ``-`` stand for
themselves, an upper-case letter ``X`` is ``_x``, ``_`` is ``__`` and every other key
character is ``%`` and two hex digits (``/`` is ``%2f``, ``.`` is ``%2e``). So a name never
holds a path separator, is never ``.`` or ``..``, two keys never share a name even on a
case-insensitive file system, and the mapping is reversible. It maps character by
character, so the encoding of a key's prefix is a prefix of the key's encoding.

An encoding longer than :data:`SEGMENT` characters (a file name must stay under 255 bytes)
continues in subdirectories of exactly :data:`SEGMENT` characters each; the value file
ends in :data:`SUFFIX`. Directory names have no ``.``, so they never clash with files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from ...errors import InvalidKeyError
from ..keys import validate_key

__all__ = ["SEGMENT", "SUFFIX", "decode_key", "encode_key", "relative_parts", "walk"]

SEGMENT = 200
SUFFIX = ".st"

_ENCODE = {c: c for c in "abcdefghijklmnopqrstuvwxyz0123456789-"}
_ENCODE.update({c: "_" + c.lower() for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"})
_ENCODE.update({c: f"%{ord(c):02x}" for c in ".:/@+="})
_ENCODE["_"] = "__"
_TABLE = str.maketrans(_ENCODE)
_ESCAPE = re.compile(r"_(.)|%([0-9a-f]{2})", re.DOTALL)


def encode_key(key: str) -> str:
    """The file-name form of a valid key, before it is split into segments."""
    return key.translate(_TABLE)


def _unescape(match: re.Match[str]) -> str:
    letter, code = match.groups()
    if code:
        return chr(int(code, 16))
    return "_" if letter == "_" else letter.upper()


def decode_key(encoded: str) -> str | None:
    """The key an encoded name stands for, or None when ``encoded`` is not the canonical
    encoding of a valid key (a foreign file)."""
    key = _ESCAPE.sub(_unescape, encoded)
    try:
        validate_key(key)
    except InvalidKeyError:
        return None
    return key if encode_key(key) == encoded else None


def relative_parts(key: str) -> list[str]:
    """The path of a valid key's file below the root, as path components."""
    encoded = encode_key(key)
    parts = [encoded[i : i + SEGMENT] for i in range(0, len(encoded), SEGMENT)]
    parts[-1] += SUFFIX
    return parts


def walk(directory: str, prefix: str, encoded: str = "") -> Iterator[tuple[str, os.DirEntry[str]]]:
    """``(key, DirEntry)`` of every value file below ``directory`` whose encoded key
    starts with ``prefix`` (an encoded key prefix). Subdirectories that cannot hold such
    keys are not entered; names that are not a canonical encoding (foreign files, the
    ``.lock`` and ``.tmp-*`` files) are skipped. ``encoded`` is what ``directory`` stands
    for (its path below the root)."""
    with os.scandir(directory) as entries:
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            if name.endswith(SUFFIX):
                full = encoded + name[: -len(SUFFIX)]
                if 0 < len(full) - len(encoded) <= SEGMENT and full.startswith(prefix):
                    key = decode_key(full)
                    if key is not None:
                        yield key, entry
            elif len(name) == SEGMENT and entry.is_dir(follow_symlinks=False):
                full = encoded + name
                if full.startswith(prefix) or prefix.startswith(full):
                    yield from walk(entry.path, prefix, full)
