"""How :class:`~flask_tiered_state.storage.redis.repository.RedisStateRepository` lays a
value and its metadata out in ONE Redis string, and the Lua scripts that version it.

Layout (ASCII header, one line, then the value's UTF-8 bytes)::

    TS1 <sha256 hex> <category> <stored_at> <ttl or -> <version>\\n<value>

The version comes last in the header so a Lua script can splice a version it computes
between a client-built head and tail. Size is the length of the value bytes, so it is
not stored. A read is one ``GET`` and a split; the checksum is verified before the value
is returned.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from functools import lru_cache
from hashlib import sha256
from typing import NamedTuple

from ...errors import IntegrityError
from ..base import StateCategory, StateMetadata, StoredValue

__all__ = [
    "DELETE_STALE_LUA",
    "DELETE_UNCHANGED_LUA",
    "DROP_STALE_AND_PUBLISH_LUA",
    "MAGIC",
    "MSET_EX_LUA",
    "MSET_NEXT_LUA",
    "SET_VERSIONED_LUA",
    "STORE_COPIES_LUA",
    "EncodedWrite",
    "decode_entry",
    "encode_head",
    "encode_write",
    "plan_writes",
    "redis_literal",
]

MAGIC = b"TS1"
_CATEGORIES = {c.value.encode("ascii"): c for c in StateCategory}
_REDIS_SPECIAL = frozenset("*?[]\\^")
_stored, _metadata = StoredValue._make, StateMetadata._make


def redis_literal(text: str) -> str:
    """``text`` escaped so that ``SCAN MATCH`` treats every character literally."""
    return "".join("\\" + c if c in _REDIS_SPECIAL else c for c in text)


def encode_head(checksum: str, category: bytes, stored_at: float, ttl: int | None) -> bytes:
    """The header up to (not including) the version: ``version + b"\\n" + value`` follows."""
    return b"TS1 %s%s" % (checksum.encode("ascii"), _head_rest(category, stored_at, ttl))


@lru_cache(maxsize=64)
def _head_rest(category: bytes, stored_at: float, ttl: int | None) -> bytes:
    # The part after the checksum, shared by every value of a batch (one stored_at).
    return b" %s %r %s " % (category, stored_at, b"-" if ttl is None else b"%d" % ttl)


class EncodedWrite(NamedTuple):
    """One value ready to be sent: the stored string is ``head + version + tail``."""

    key: str
    name: str  # the Redis key (prefix + key)
    head: bytes
    tail: bytes  # b"\n" + the value's UTF-8 bytes
    checksum: str
    stored_at: float
    ttl: int | None
    version: int | None  # None: the server assigns previous + 1

    def payload(self, version: int) -> bytes:
        return b"%s%d%s" % (self.head, version, self.tail)

    def metadata(self, category: StateCategory, version: int) -> StateMetadata:
        size = len(self.tail) - 1
        return StateMetadata(self.checksum, size, version, category, self.stored_at, self.ttl)


def encode_write(
    key: str,
    name: str,
    value: str,
    category: bytes,
    ttl: int | None,
    version: int | None,
    stored_at: float | None = None,
) -> EncodedWrite:
    """Hash ``value`` and build the parts of its stored string (``stored_at``: now, or
    the one time a batch shares)."""
    body = value.encode("utf-8")
    checksum = sha256(body).hexdigest()
    if stored_at is None:
        stored_at = time.time()
    head = encode_head(checksum, category, stored_at, ttl)
    return EncodedWrite(key, name, head, b"\n" + body, checksum, stored_at, ttl, version)


def plan_writes(
    items: Sequence[EncodedWrite], chunk: int
) -> Iterator[tuple[int | None, bool, list[EncodedWrite]]]:
    """``(ttl, server assigns the version?, writes)`` groups of at most ``chunk`` writes,
    one command each. A key written twice in one batch starts a new segment, so the
    writes to one key keep their order."""
    segments: list[dict[tuple[int | None, bool], list[EncodedWrite]]] = [{}]
    seen: set[str] = set()
    for item in items:
        if item.name in seen:
            segments.append({})
            seen.clear()
        seen.add(item.name)
        segments[-1].setdefault((item.ttl, item.version is None), []).append(item)
    for segment in segments:
        for (ttl, auto), group in segment.items():
            for start in range(0, len(group), chunk):
                yield ttl, auto, group[start : start + chunk]


def _corrupt(key: str, where: str, why: str) -> IntegrityError:
    return IntegrityError(
        key,
        f"The value stored for {key!r} in {where} is corrupt ({why}); it was not returned. "
        "Write the key again or restore it from another tier.",
        details={"location": where},
    )


def decode_entry(key: str, raw: bytes | str, where: str) -> StoredValue:
    """Split, verify and wrap one stored string; raise :class:`IntegrityError` when the
    header is damaged or the value does not match its checksum."""
    if isinstance(raw, str):  # a client created with decode_responses=True
        raw = raw.encode("utf-8")
    try:
        header, body = raw.split(b"\n", 1)
        magic, checksum, category, stored_at, ttl, version = header.split(b" ")
    except ValueError:
        raise _corrupt(key, where, "its header is missing or damaged") from None
    digest = sha256(body).hexdigest()
    if digest.encode("ascii") != checksum or magic != MAGIC:
        raise _corrupt(key, where, f"sha256 {digest} does not match the stored checksum")
    try:
        # _make: batch reads decode a value per key, and it skips a Python-level __new__
        return _stored(
            (
                key,
                body.decode("utf-8"),
                _metadata(
                    (
                        digest,
                        len(body),
                        int(version),
                        _CATEGORIES[category],
                        float(stored_at),
                        None if ttl == b"-" else int(ttl),
                    )
                ),
            )
        )
    except (KeyError, ValueError):  # UnicodeDecodeError is a ValueError
        raise _corrupt(key, where, "its header is damaged") from None


# Lua 5.1 inside Redis. A current value whose header cannot be parsed counts as -1, which
# the client reports as an integrity problem for compare-and-set and as "no version" (so the
# next one is 1) otherwise. Versions are formatted with %d: Lua's tostring would give 1e+15.

_CURRENT_VERSION = r"""
local function current_version(key)
  local old = redis.call('GET', key)
  if not old then return 0 end
  local v = string.match(old, '^TS1 [^\n]* (%d+)\n')
  if v then return tonumber(v) end
  return -1
end
local function put(key, payload, ttl)
  if ttl > 0 then
    redis.call('SET', key, payload, 'EX', ttl)
  else
    redis.call('SET', key, payload)
  end
end
"""

#: KEYS[1]; ARGV: head, tail (b"\n" + value), ttl (0 = none), expected ('' = any),
#: version ('' = current + 1). Returns {1, version} or {0, current version}.
SET_VERSIONED_LUA = (
    _CURRENT_VERSION
    + r"""
local current = current_version(KEYS[1])
if ARGV[4] ~= '' and tonumber(ARGV[4]) ~= current then
  return {0, current}
end
local version
if ARGV[5] ~= '' then version = tonumber(ARGV[5]) else version = math.max(current, 0) + 1 end
put(KEYS[1], ARGV[1] .. string.format('%d', version) .. ARGV[2], tonumber(ARGV[3]))
return {1, version}
"""
)

#: KEYS: the keys; ARGV[1]: ttl (0 = none); then head, tail per key. Returns the versions.
MSET_NEXT_LUA = (
    _CURRENT_VERSION
    + r"""
local ttl = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local version = math.max(current_version(key), 0) + 1
  put(key, ARGV[2 * i] .. string.format('%d', version) .. ARGV[2 * i + 1], ttl)
  out[i] = version
end
return out
"""
)

#: KEYS: the keys; ARGV[1]: ttl in seconds; then one complete payload per key.
MSET_EX_LUA = r"""
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[i + 1], 'EX', ttl)
end
return #KEYS
"""

#: KEYS: the keys; ARGV: checksum, version per key. Deletes each key whose stored header
#: still carries that checksum and version (a compare-and-delete). Returns 1 (deleted) or
#: 0 (left alone) per key.
DELETE_UNCHANGED_LUA = r"""
local out = {}
for i, key in ipairs(KEYS) do
  local head = redis.call('GETRANGE', key, 0, 255)
  local sum, version = string.match(head, '^TS1 (%x+) [^\n]* (%d+)\n')
  if sum == ARGV[2 * i - 1] and version == ARGV[2 * i] then
    redis.call('UNLINK', key)
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

#: KEYS: the keys; ARGV: version, checksum ('' = none), written_at per key: a StaleCopy
#: fence. Without a checksum, a copy older than the version is stale; with one, a copy
#: stored before written_at that is not exactly that version and checksum. A copy whose
#: header cannot be read is stale too. Returns how many were deleted.
_DROP_STALE_FUNCTION = r"""
local function drop_stale(first_key, before_args)
  local n = 0
  for i = first_key, #KEYS do
    local key, a = KEYS[i], before_args + 3 * (i - first_key)
    local head = redis.call('GETRANGE', key, 0, 255)
    if head ~= '' then
      local sum, at, version = string.match(head, '^TS1 (%x+) %a+ ([^ ]+) [^ ]+ (%d+)\n')
      local fence, want = tonumber(ARGV[a + 1]), ARGV[a + 2]
      local stale = version == nil
      if not stale then
        version = tonumber(version)
        if want == '' then
          stale = version < fence
        else
          stale = tonumber(at) < tonumber(ARGV[a + 3]) and (version ~= fence or sum ~= want)
        end
      end
      if stale then
        redis.call('UNLINK', key)
        n = n + 1
      end
    end
  end
  return n
end
"""
DELETE_STALE_LUA = _DROP_STALE_FUNCTION + "return drop_stale(1, 0)\n"

#: :data:`DELETE_STALE_LUA`, the tier directory's marks and the announcements in one
#: script: one command for a write's whole drop (a pipeline of three costs the client and
#: the server more than the work). ARGV[1]: '1' when KEYS[1] is the tier directory;
#: ARGV[2]: m, how many bit offsets to set in it; ARGV[3]: the channel; ARGV[4]: p, how
#: many messages; then the m offsets, the p messages, and each key's three fence values.
#: Returns how many copies were deleted.
DROP_STALE_AND_PUBLISH_LUA = (
    _DROP_STALE_FUNCTION
    + r"""
local m, p = tonumber(ARGV[2]), tonumber(ARGV[4])
local first_key = 1
if ARGV[1] == '1' then
  first_key = 2
  if m > 0 then
    local ops = {}
    for i = 1, m do
      ops[#ops + 1] = 'SET'; ops[#ops + 1] = 'u1'; ops[#ops + 1] = ARGV[4 + i]; ops[#ops + 1] = 1
    end
    redis.call('BITFIELD', KEYS[1], unpack(ops))
  end
end
local n = drop_stale(first_key, 4 + m + p)
for i = 1, p do redis.call('PUBLISH', ARGV[3], ARGV[4 + m + i]) end
return n
"""
)

#: KEYS: the keys; ARGV[1]: ttl (0 = none); then version, complete payload per key. Sets
#: each key only where it is absent or holds an older version (a copy never replaces a
#: value as new or newer; an unreadable header counts as older). Returns 1 (set) or 0
#: (left alone) per key.
STORE_COPIES_LUA = r"""
local ttl = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local head = redis.call('GETRANGE', key, 0, 255)
  local current = nil
  if head ~= '' then current = tonumber(string.match(head, '^TS1 [^\n]* (%d+)\n')) end
  if head == '' or current == nil or current < tonumber(ARGV[2 * i]) then
    if ttl > 0 then
      redis.call('SET', key, ARGV[2 * i + 1], 'EX', ttl)
    else
      redis.call('SET', key, ARGV[2 * i + 1])
    end
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""
