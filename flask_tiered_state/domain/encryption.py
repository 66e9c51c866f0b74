"""Field-level encryption at rest: the master keys, and sealing and opening records.

A type lists the fields it keeps encrypted (``register_state_type(...,
encrypted_fields=["data.password", "data.card.number"])``; ``"data"``, ``"metadata"`` and
``"name"`` encrypt the whole field). The manager *seals* every record before it reaches
the store: each listed field that is present is replaced by a token
``"tsenc1:<base64url(nonce | ciphertext | tag)>"``, the field's JSON encrypted with
AES-256-GCM under the state's own *data key*, with the state id and the field's path as
associated data (a token copied to another state or field does not decrypt). Every tier,
every cache, the history rows and whatever copies them (backups, the outbox's events)
hold that sealed form; the manager *opens* records on the way out.

The data keys (envelope encryption, see :mod:`.data_keys`) are random 256-bit keys, one
per state, kept in the WARM database wrapped (Fernet: AES-128-CBC + HMAC-SHA256) by the
*master keys* of ``TIERED_STATE_ENCRYPTION_KEYS``, newest first. Rotating the master key
re-wraps the data keys (``flask state rotate-keys``); erasing a state destroys its data
key, and with it every copy of its encrypted fields.

The primitives are the ``cryptography`` package's (``pip install
flask-tiered-state[encryption]``): :class:`~cryptography.hazmat.primitives.ciphers.aead.AESGCM`
and :class:`~cryptography.fernet.MultiFernet`. Nothing here is home-made cryptography.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import importlib
import json
import os
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, EncryptedFieldError, EncryptionKeyError
from ..json_codec import loads

if TYPE_CHECKING:
    from .data_keys import DataKeys
    from .registry import TypeRegistry

__all__ = [
    "ERASED",
    "MAX_ENCRYPTED_FIELDS",
    "TOKEN_PREFIX",
    "MasterKeys",
    "RecordCipher",
    "check_encrypted_fields",
    "generate_master_key",
    "load_master_keys",
]

#: The prefix of an encrypted field's stored value (format 1: AES-256-GCM).
TOKEN_PREFIX = "tsenc1:"
#: The most fields one type encrypts.
MAX_ENCRYPTED_FIELDS = 64
#: What an encrypted field of an erased state reads as.
ERASED = None
_ROOTS = ("name", "data", "metadata")
_SEGMENT = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NONCE_BYTES = 12
_KEY_ID_LABEL = b"flask-tiered-state master key id"
_FINGERPRINT_LABEL = b"flask-tiered-state idempotency fingerprint"
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def aead() -> Any:
    """The AEAD module of ``cryptography`` (AES-GCM)."""
    return _crypto()[1]


def _crypto() -> Any:
    try:
        from cryptography import fernet
        from cryptography.hazmat.primitives.ciphers import aead
    except ImportError as exc:  # pragma: no cover - the extra is installed in tests
        raise ConfigurationError(
            "Encryption needs the cryptography package: pip install "
            "'flask-tiered-state[encryption]'."
        ) from exc
    return fernet, aead


def generate_master_key() -> str:
    """A new master key for ``TIERED_STATE_ENCRYPTION_KEYS`` (a Fernet key: 32 random
    bytes, URL-safe base64)."""
    fernet, _ = _crypto()
    key: bytes = fernet.Fernet.generate_key()
    return key.decode("ascii")


class MasterKeys:
    """The master keys, newest first: the newest wraps new data keys, every one unwraps.

    :param keys: Fernet keys (``generate_master_key()``), as text or bytes.
    :raises ConfigurationError: no key, or a key that is not a Fernet key.
    """

    def __init__(self, keys: Sequence[str | bytes]) -> None:
        fernet, _ = _crypto()
        if not keys:
            raise ConfigurationError(
                "TIERED_STATE_ENCRYPTION_KEYS holds no key; give at least one, e.g. "
                "flask_tiered_state.generate_master_key()."
            )
        self._fernets: dict[str, Any] = {}
        self._fingerprint_keys: list[bytes] = []
        order: list[str] = []
        for index, key in enumerate(keys):
            raw = key.encode("ascii", "replace") if isinstance(key, str) else key
            if not isinstance(raw, bytes):
                raise ConfigurationError(
                    f"TIERED_STATE_ENCRYPTION_KEYS[{index}] is a {type(key).__name__}; master "
                    "keys are text (a Fernet key: 44 characters of URL-safe base64)."
                )
            try:
                made = fernet.Fernet(raw)
                secret = base64.urlsafe_b64decode(raw)
            except (ValueError, binascii.Error):
                raise ConfigurationError(
                    f"TIERED_STATE_ENCRYPTION_KEYS[{index}] is not a Fernet key (32 bytes as "
                    "44 characters of URL-safe base64); make one with "
                    "flask_tiered_state.generate_master_key()."
                ) from None
            key_id = hmac.new(secret, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]
            if key_id in self._fernets:
                raise ConfigurationError(
                    f"TIERED_STATE_ENCRYPTION_KEYS[{index}] repeats an earlier key."
                )
            self._fernets[key_id] = made
            order.append(key_id)
            self._fingerprint_keys.append(
                hmac.new(secret, _FINGERPRINT_LABEL, hashlib.sha256).digest()
            )
        #: The ids of the keys (an HMAC of a fixed label, never the key), newest first.
        self.key_ids: tuple[str, ...] = tuple(order)
        self._invalid_token = fernet.InvalidToken

    @property
    def newest_id(self) -> str:
        return self.key_ids[0]

    def keyed(self, digest: str) -> tuple[str, ...]:
        """``digest`` (of a call's parameters, which may hold secrets) under an HMAC key
        derived from each master key, newest first: what an idempotency key keeps instead
        of a plain hash, which a database reader could test guessed secrets against."""
        return tuple(
            hmac.new(derived, digest.encode("ascii"), hashlib.sha256).hexdigest()
            for derived in self._fingerprint_keys
        )

    def wrap(self, data_key: bytes) -> tuple[str, str]:
        """``(wrapped data key, id of the master key that wrapped it)``, by the newest."""
        token: bytes = self._fernets[self.newest_id].encrypt(data_key)
        return token.decode("ascii"), self.newest_id

    def unwrap(self, wrapped: str, key_id: str, *, state_id: str) -> bytes:
        """The data key ``wrapped`` by the master key ``key_id``.

        :raises EncryptionKeyError: that master key is not configured, or the wrapped key
            does not authenticate.
        """
        made = self._fernets.get(key_id)
        if made is None:
            raise EncryptionKeyError(
                f"The data key of state {state_id!r} is wrapped by master key {key_id!r}, "
                f"which TIERED_STATE_ENCRYPTION_KEYS does not hold (it holds "
                f"{', '.join(self.key_ids)}). Put the old key back (after the newest) and run "
                "'flask state rotate-keys' before removing it.",
                details={"state_id": state_id, "key_id": key_id},
            )
        try:
            data_key: bytes = made.decrypt(wrapped.encode("ascii"))
        except (self._invalid_token, UnicodeEncodeError):
            raise EncryptionKeyError(
                f"The data key of state {state_id!r} does not authenticate with master key "
                f"{key_id!r}: the stored key was altered.",
                details={"state_id": state_id, "key_id": key_id},
            ) from None
        return data_key


KeySource = Sequence[str | bytes] | str | Callable[[], Sequence[str | bytes]] | None


def load_master_keys(value: KeySource) -> MasterKeys | None:
    """The master keys of the setting ``TIERED_STATE_ENCRYPTION_KEYS``: None (no
    encryption), a list of keys newest first, one key, a text of keys separated by commas
    (from the environment), or a callable (or ``"module:function"``) returning the list --
    where a KMS or a secrets manager plugs in; it is called once, at start-up."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str) and ":" in value:  # Fernet keys hold no ':'; an import string
        module, _, name = value.partition(":")
        try:
            value = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(
                f"TIERED_STATE_ENCRYPTION_KEYS names {value!r}, which cannot be imported: {exc}."
            ) from None
    given: Any = value() if callable(value) else value
    if isinstance(given, bytes):
        given = given.decode("ascii", "replace")
    if isinstance(given, str):
        given = [part.strip() for part in given.split(",") if part.strip()]
    value = given
    if not isinstance(value, Sequence):
        raise ConfigurationError(
            f"TIERED_STATE_ENCRYPTION_KEYS must be a list of keys (newest first), a text of "
            f"keys separated by commas, or a callable returning the list; got "
            f"{type(value).__name__}."
        )
    return MasterKeys(list(value))


def check_encrypted_fields(fields: object, *, type_name: str) -> tuple[tuple[str, ...], ...]:
    """The paths of ``encrypted_fields`` (``"data.card.number"`` -> ``("data", "card",
    "number")``), checked: rooted at ``name``, ``data`` or ``metadata``, segments of
    ``[A-Za-z0-9_-]``, none inside another, at most :data:`MAX_ENCRYPTED_FIELDS`.

    :raises ConfigurationError: a path breaks a rule.
    """
    if fields is None:
        return ()
    if isinstance(fields, str) or not isinstance(fields, Iterable):
        raise ConfigurationError(
            f"encrypted_fields of type {type_name!r} must be a list of field paths such as "
            f"['data.password'], not {fields!r}."
        )
    paths: list[tuple[str, ...]] = []
    for field in fields:
        if not isinstance(field, str):
            raise ConfigurationError(
                f"encrypted_fields of type {type_name!r}: {field!r} is not a field path."
            )
        parts = tuple(field.split("."))
        if parts[0] not in _ROOTS or not all(_SEGMENT.fullmatch(p) for p in parts[1:]):
            raise ConfigurationError(
                f"encrypted_fields of type {type_name!r}: {field!r} is not a field path; paths "
                "are 'name', 'data', 'metadata', or 'data.<key>' / 'metadata.<key>' with dotted "
                "keys of letters, digits, '_' and '-'."
            )
        if parts[0] == "name" and len(parts) > 1:
            raise ConfigurationError(
                f"encrypted_fields of type {type_name!r}: 'name' is text and has no keys "
                f"({field!r})."
            )
        paths.append(parts)
    if len(paths) > MAX_ENCRYPTED_FIELDS:
        raise ConfigurationError(
            f"Type {type_name!r} lists {len(paths)} encrypted fields; at most "
            f"{MAX_ENCRYPTED_FIELDS}. Encrypt a parent field instead."
        )
    for path in paths:
        for other in paths:
            if other is not path and other[: len(path)] == path:
                raise ConfigurationError(
                    f"encrypted_fields of type {type_name!r}: {'.'.join(other)!r} is inside "
                    f"{'.'.join(path)!r}, which is encrypted whole; list one of them."
                )
    return tuple(dict.fromkeys(paths))


def overlaps(path: Sequence[str], encrypted: Iterable[Sequence[str]]) -> str | None:
    """The encrypted field ``path`` (a filter's) is, is inside, or contains; else None."""
    for field in encrypted:
        size = min(len(field), len(path))
        if tuple(field[:size]) == tuple(path[:size]):
            return ".".join(field)
    return None


class RecordCipher:
    """Seals records for storage and opens stored ones, per their type's encrypted fields.

    Records of types without encrypted fields pass through unchanged (the same object),
    so they cost a dict lookup. Sealing copies the containers on the paths it replaces; the
    caller's record is never modified.

    :param types: the manager's type registry (which fields each type encrypts).
    :param data_keys: the per-state data keys; None when no master key is configured.
    """

    def __init__(self, types: TypeRegistry, data_keys: DataKeys | None) -> None:
        self.types = types
        self.data_keys = data_keys

    # -- which records ------------------------------------------------------------

    def paths_of(self, type_name: object) -> tuple[tuple[str, ...], ...]:
        """The encrypted paths of a type (by name); () for unknown types."""
        return self.types.encrypted_paths(type_name)

    def holds_ciphertext(self, record: Mapping[str, Any]) -> bool:
        """Whether a stored record has an encrypted field: False for a type that encrypts
        nothing, an erased record, and one written before its type encrypted fields (its
        values are plaintext and read as they are)."""
        for path in self.paths_of(record.get("type")):
            node: Any = record
            for step in path:
                node = node.get(step) if isinstance(node, Mapping) else None
            if isinstance(node, str) and node.startswith(TOKEN_PREFIX):
                return True
        return False

    def check_search(self, type_names: Iterable[str], paths: Iterable[Sequence[str]]) -> None:
        """Refuse filters on fields the types keep encrypted.

        :raises EncryptedFieldError: naming the filter, the type and the field.
        """
        wanted = list(paths)
        for type_name in type_names:
            encrypted = self.paths_of(type_name)
            if not encrypted:
                continue
            for path in wanted:
                field = overlaps(path, encrypted)
                if field is not None:
                    shown = ".".join(path)
                    raise EncryptedFieldError(
                        f"Cannot search on {shown!r}: type {type_name!r} keeps {field!r} "
                        "encrypted, and the database only holds its ciphertext. Filter on a "
                        "field that is not encrypted, or keep a searchable digest of the value "
                        "in a field of its own.",
                        details={"filter": shown, "state_type": type_name, "field": field},
                    )

    # -- sealing --------------------------------------------------------------------

    def seal_many(self, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The stored forms of ``records`` (one key lookup for all of them)."""
        return self.seal(records)[0]

    def seal(
        self, records: Sequence[dict[str, Any]], *, new_ids: Collection[str] = ()
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The stored forms of ``records``, and the data key rows to insert with them.

        ``new_ids`` are states being registered: they cannot have a data key yet, so theirs
        is made here, without a round trip, and its row (:meth:`DataKeys.insert`) must
        commit in the records' transaction; the others' keys are read (or made) by
        :meth:`DataKeys.for_writing`.
        """
        paths = [self.paths_of(r.get("type")) for r in records]
        if not any(paths):
            return list(records), []
        keys = self._keys()
        made, rows = keys.made(
            [
                r["state_id"]
                for r, p in zip(records, paths, strict=True)
                if p and r["state_id"] in new_ids
            ]
        )
        existing = keys.for_writing(
            [
                r["state_id"]
                for r, p in zip(records, paths, strict=True)
                if p and r["state_id"] not in made
            ]
        )
        sealed = []
        for record, fields in zip(records, paths, strict=True):
            if not fields:
                sealed.append(record)
                continue
            state_id = record["state_id"]
            cipher = made.get(state_id) or existing[state_id]
            copy = dict(record)
            for path in fields:
                _replace(copy, path, _Encrypt(cipher, state_id, path))
            sealed.append(copy)
        return sealed, rows

    # -- opening --------------------------------------------------------------------

    def open(self, stored: dict[str, Any] | None) -> dict[str, Any] | None:
        """The record a stored form holds (the same object when nothing is encrypted)."""
        if stored is None or not self.paths_of(stored.get("type")):
            return stored
        opened: dict[str, Any] = self.open_many([stored])[0]
        return opened

    def open_many(self, stored: Sequence[dict[str, Any] | None]) -> list[Any]:
        """The records of stored forms, in order (one key lookup for all of them)."""
        paths = [() if s is None else self.paths_of(s.get("type")) for s in stored]
        ids = [s["state_id"] for s, p in zip(stored, paths, strict=True) if p and s is not None]
        if not ids:
            return list(stored)
        keys = self._keys().for_reading(ids)
        opened: list[Any] = []
        for record, fields in zip(stored, paths, strict=True):
            if record is None or not fields:
                opened.append(record)
                continue
            state_id = record["state_id"]
            copy = dict(record)
            for path in fields:
                _replace(copy, path, _Decrypt(keys.get(state_id), state_id, path))
            opened.append(copy)
        return opened

    def open_history(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """History rows with their ``old_record`` and ``new_record`` opened."""
        records: list[Any] = []
        for row in rows:
            records.append(row.get("old_record"))
            records.append(row.get("new_record"))
        if not any(r is not None and self.paths_of(r.get("type")) for r in records):
            return list(rows)
        opened = self.open_many(records)
        return [
            {**row, "old_record": opened[2 * i], "new_record": opened[2 * i + 1]}
            for i, row in enumerate(rows)
        ]

    def _keys(self) -> DataKeys:
        if self.data_keys is None:
            raise ConfigurationError(
                "A state type has encrypted fields but TIERED_STATE_ENCRYPTION_KEYS is not set; "
                "configure master keys (flask_tiered_state.generate_master_key())."
            )
        return self.data_keys


def _associated(state_id: str, path: tuple[str, ...]) -> bytes:
    return f"{state_id}\x1f{'.'.join(path)}".encode()


def _replace(record: dict[str, Any], path: tuple[str, ...], change: Callable[[Any], Any]) -> None:
    """Replace the value at ``path`` by ``change(value)`` in ``record``, copying the dicts
    on the way (they may be shared with the caller); nothing when it is absent."""
    node = record
    for step in path[:-1]:
        child = node.get(step)
        if not isinstance(child, dict):
            return
        child = dict(child)
        node[step] = child
        node = child
    last = path[-1]
    if last in node:
        node[last] = change(node[last])


class _Encrypt:
    """Seals one field's value (the JSON of it) with a state's AES-GCM key."""

    __slots__ = ("associated", "cipher")

    def __init__(self, cipher: Any, state_id: str, path: tuple[str, ...]) -> None:
        self.cipher = cipher
        self.associated = _associated(state_id, path)

    def __call__(self, value: Any) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed: bytes = self.cipher.encrypt(nonce, _dumps(value).encode("utf-8"), self.associated)
        text = binascii.b2a_base64(nonce + sealed, newline=False).translate(_TO_URLSAFE)
        return TOKEN_PREFIX + text.decode("ascii")


class _Decrypt:
    """Opens one field's token with a state's AES-GCM key (None: the state was erased)."""

    __slots__ = ("cipher", "path", "state_id")

    def __init__(self, cipher: Any, state_id: str, path: tuple[str, ...]) -> None:
        self.cipher = cipher
        self.state_id = state_id
        self.path = path

    def __call__(self, value: Any) -> Any:
        if not (isinstance(value, str) and value.startswith(TOKEN_PREFIX)):
            return value  # written before the field was encrypted
        if self.cipher is None:  # erased: a name stays text (the id), the rest reads as None
            return self.state_id if self.path == ("name",) else ERASED
        try:
            # URL-safe base64, decoded by binascii: a third of base64.urlsafe_b64decode's time
            raw = binascii.a2b_base64(value[len(TOKEN_PREFIX) :].encode().translate(_FROM_URLSAFE))
            plain = self.cipher.decrypt(
                raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _associated(self.state_id, self.path)
            )
        except Exception:  # InvalidTag, bad base64: the stored value was altered
            raise EncryptionKeyError(
                f"The encrypted field {'.'.join(self.path)!r} of state {self.state_id!r} does "
                "not authenticate with its data key: the stored value was altered or copied "
                "from another state or field.",
                details={"state_id": self.state_id, "field": ".".join(self.path)},
            ) from None
        return loads(plain)
