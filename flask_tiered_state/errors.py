"""The exception hierarchy of flask_tiered_state.

Every exception the library raises on purpose is a :class:`TieredStateError`.
Each carries a machine-readable :attr:`~TieredStateError.code`, the HTTP status
the JSON error handlers answer with, a whole-sentence :attr:`message` and
optional structured :attr:`details`. Where a builtin fits, the exception also
derives from it (``InvalidKeyError`` is a ``ValueError``), so generic code that
catches builtins keeps working.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

__all__ = [
    "AccessDeniedError",
    "AlreadyAtVersionError",
    "ArchiveCorruptError",
    "ArchiveNotFoundError",
    "CallbackError",
    "ConcurrencyError",
    "ConfigurationError",
    "DeadlineExceededError",
    "DispatcherBusyError",
    "EncryptedFieldError",
    "EncryptionKeyError",
    "IdempotencyKeyInUseError",
    "IdempotencyKeyReusedError",
    "IntegrityError",
    "InvalidKeyError",
    "InvalidPatternError",
    "InvalidRequestError",
    "InvalidStateTypeError",
    "InvalidTransitionError",
    "JSONTooDeepError",
    "OutcomeUnknownError",
    "QuotaExceededError",
    "RateLimitedError",
    "StateAlreadyExistsError",
    "StateErasedError",
    "StateNotFoundError",
    "StateTooLargeError",
    "StorageError",
    "TierUnavailableError",
    "TieredStateError",
    "ValidationError",
    "VersionNotFoundError",
]


class TieredStateError(Exception):
    """Root of every error raised by flask_tiered_state.

    :param message: a whole sentence naming the input, the rule and the fix.
    :param details: structured context for API clients (JSON-serialisable).
    """

    #: Stable machine-readable identifier, used as ``error`` in JSON bodies.
    code: ClassVar[str] = "tiered_state_error"
    #: The HTTP status the JSON error handlers answer with.
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, *, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        """The JSON body of this error (without the correlation id)."""
        return {"error": self.code, "message": self.message, "details": self.details}


class ConfigurationError(TieredStateError, ValueError):
    """A ``TIERED_STATE_*`` setting or a constructor argument is invalid."""

    code = "configuration_error"
    http_status = 500


class InvalidRequestError(TieredStateError, ValueError):
    """An argument of a public call is malformed (page number, filter path, ...)."""

    code = "invalid_request"
    http_status = 400


class JSONTooDeepError(InvalidRequestError):
    """A JSON value nests arrays and objects more deeply than
    ``TIERED_STATE_MAX_JSON_DEPTH`` allows (or too deeply to be parsed at all).

    400 rather than 413: the value is refused for its shape, not its size; a smaller
    value of the same shape is refused too.

    :param what: the value, as the message names it (``"the data of 'order-1'"``,
        ``"the request body"``).
    :param limit: the levels allowed.
    :param field: the record field (``data``, ``metadata``) or ``body``.
    :param parsed: False: the value could not even be read (a JSON parser or encoder ran
        out of recursion), so how deep it is was not measured.
    """

    code = "json_too_deep"
    http_status = 400

    def __init__(self, what: str, limit: int, *, field: str, parsed: bool = True) -> None:
        how = (
            f"nests arrays and objects more than {limit} levels deep"
            if parsed
            else "nests arrays and objects too deeply to be processed"
        )
        super().__init__(
            f"{what[:1].upper()}{what[1:]} {how}; at most {limit} levels are allowed "
            "(TIERED_STATE_MAX_JSON_DEPTH). Flatten the value, or raise the setting.",
            details={"field": field, "limit": limit},
        )
        self.field, self.limit = field, limit


# --------------------------------------------------------------------------- storage


class StorageError(TieredStateError):
    """Base of the errors raised by the storage layer."""

    code = "storage_error"
    http_status = 500


class TierUnavailableError(StorageError):
    """A tier's backend could not be reached or answered with an error.

    :param tier: the tier's name (``"hot"``, ``"warm"``, ``"cold"``) or backend name.
    """

    code = "tier_unavailable"
    http_status = 503

    def __init__(
        self, tier: str, message: str, *, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message, details={"tier": tier, **(details or {})})
        self.tier = tier


class DeadlineExceededError(TierUnavailableError):
    """A call ran past its time budget (``TIERED_STATE_CALL_TIMEOUT_SECONDS``) or a
    database timeout (statement or lock); nothing more is waited for."""

    code = "deadline_exceeded"
    http_status = 503


class OutcomeUnknownError(TierUnavailableError):
    """A write reached the database, but its reply was lost and whether it committed
    could not be found out (the database did not answer the check either).

    Caches and copies are left consistent with either outcome. Read the state again, or
    retry with the same ``expected_version``: a
    :class:`ConcurrencyError` naming the next version then means the first attempt
    was applied.
    """

    code = "outcome_unknown"
    http_status = 503

    def __init__(
        self,
        tier: str,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        failure: TierUnavailableError | None = None,
    ) -> None:
        super().__init__(tier, message, details=details)
        #: What to raise once the write is known not to have committed.
        self.failure = failure or TierUnavailableError(tier, message, details=details)


class IntegrityError(StorageError):
    """A stored value does not match its checksum; the corrupt value is never returned."""

    code = "integrity_error"
    http_status = 500

    def __init__(self, key: str, message: str, *, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message, details={"key": key, **(details or {})})
        self.key = key


class InvalidKeyError(StorageError, ValueError):
    """A key breaks the key rules (length or allowed characters)."""

    code = "invalid_key"
    http_status = 400

    def __init__(self, key: object, message: str) -> None:
        super().__init__(message, details={"key": repr(key)})
        self.key = key


class InvalidPatternError(StorageError, ValueError):
    """A key pattern breaks the pattern rules."""

    code = "invalid_pattern"
    http_status = 400

    def __init__(self, pattern: object, message: str) -> None:
        super().__init__(message, details={"pattern": repr(pattern)})
        self.pattern = pattern


class StateTooLargeError(StorageError, ValueError):
    """A value is larger than ``TIERED_STATE_MAX_STATE_BYTES`` allows."""

    code = "state_too_large"
    http_status = 413

    def __init__(self, key: str, size: int, limit: int) -> None:
        super().__init__(
            f"The value for {key!r} is {size} bytes; at most {limit} bytes are allowed "
            "(TIERED_STATE_MAX_STATE_BYTES).",
            details={"key": key, "size": size, "limit": limit},
        )
        self.key, self.size, self.limit = key, size, limit


class ArchiveCorruptError(StorageError):
    """A backup or checkpoint archive (:mod:`~flask_tiered_state.ops.archive`) fails its
    checks: a chunk's bytes differ from the sha256 its manifest records, a file is
    missing or truncated, or the manifest itself is damaged. Nothing of the damaged chunk
    is returned.

    :param archive_id: the archive.
    :param file: the file inside the archive (``records-000003.jsonl.gz``, ``manifest.json``).
    :param offset: the byte offset in ``file`` where the damage starts (the first byte of the
        first block whose checksum differs), or None when the file is missing.
    """

    code = "archive_corrupt"
    http_status = 422

    def __init__(self, archive_id: str, file: str, offset: int | None, message: str) -> None:
        super().__init__(
            message, details={"archive_id": archive_id, "file": file, "offset": offset}
        )
        self.archive_id, self.file, self.offset = archive_id, file, offset


class ArchiveNotFoundError(StorageError, LookupError):
    """No complete archive (one with its manifest) has the given id at the destination."""

    code = "archive_not_found"
    http_status = 404

    def __init__(self, archive_id: str, message: str) -> None:
        super().__init__(message, details={"archive_id": archive_id})
        self.archive_id = archive_id


# --------------------------------------------------------------------------- domain


class StateNotFoundError(TieredStateError, LookupError):
    """No state exists under the given id."""

    code = "not_found"
    http_status = 404

    def __init__(self, state_id: str, message: str | None = None) -> None:
        super().__init__(
            message or f"No state with id {state_id!r} exists.", details={"state_id": state_id}
        )
        self.state_id = state_id


class VersionNotFoundError(TieredStateError, LookupError):
    """A state exists but has no recorded version with the given number."""

    code = "version_not_found"
    http_status = 404

    def __init__(
        self, state_id: str, version: int, available: Sequence[int], hint: str = ""
    ) -> None:
        shown = ", ".join(str(v) for v in available) or "none"
        super().__init__(
            f"State {state_id!r} has no version {version}; recorded versions: {shown}.{hint}",
            details={"state_id": state_id, "version": version, "available": list(available)},
        )
        self.state_id, self.version = state_id, version


class AlreadyAtVersionError(InvalidRequestError):
    """A rollback to the version the state is at: nothing earlier to restore. A conflict
    with the state's current version (409), as an InvalidRequestError for callers that
    caught one before it had its own class."""

    code = "already_at_version"
    http_status = 409

    def __init__(self, state_id: str, version: int) -> None:
        super().__init__(
            f"Cannot roll {state_id!r} back to version {version}: it is at version {version} "
            "already; to_version must be an earlier version.",
            details={"state_id": state_id, "to_version": version, "version": version},
        )
        self.state_id, self.version = state_id, version


class StateAlreadyExistsError(TieredStateError):
    """``register_state`` was called with an id that is already taken."""

    code = "already_exists"
    http_status = 409

    def __init__(self, state_id: str, message: str | None = None) -> None:
        super().__init__(
            message or f"A state with id {state_id!r} already exists; use update_state instead.",
            details={"state_id": state_id},
        )
        self.state_id = state_id


class InvalidStateTypeError(TieredStateError, ValueError):
    """A state type is not registered."""

    code = "invalid_state_type"
    http_status = 422

    def __init__(self, state_type: object, known: Sequence[str]) -> None:
        super().__init__(
            f"Unknown state type {state_type!r}; known types: {', '.join(sorted(known))}. "
            "Register new types with register_state_type().",
            details={"state_type": repr(state_type), "known": sorted(known)},
        )
        self.state_type = state_type


class InvalidTransitionError(TieredStateError):
    """The lifecycle does not allow a transition from the state's current status."""

    code = "invalid_transition"
    http_status = 409

    def __init__(
        self,
        state_id: str,
        status: str,
        transition: str,
        allowed: Sequence[str],
        reason: str | None = None,
    ) -> None:
        allowed_text = ", ".join(allowed) or "none"
        why = f" ({reason})" if reason else ""
        super().__init__(
            f"State {state_id!r} is {status}: transition {transition} is not allowed{why}. "
            f"Allowed from {status}: {allowed_text}.",
            details={
                "state_id": state_id,
                "status": status,
                "transition": transition,
                "allowed": list(allowed),
            },
        )
        self.state_id, self.status, self.transition = state_id, status, transition
        self.allowed = list(allowed)


class ValidationError(TieredStateError, ValueError):
    """State data failed validation; :attr:`errors` maps fields to messages."""

    code = "validation_error"
    http_status = 422

    def __init__(self, message: str, errors: Mapping[str, Any] | None = None) -> None:
        super().__init__(message, details={"errors": dict(errors or {})})
        self.errors: dict[str, Any] = dict(errors or {})


class ConcurrencyError(TieredStateError):
    """A compare-and-set write found another version than the caller expected."""

    code = "concurrency_conflict"
    http_status = 409

    def __init__(self, key: str, expected: int | None, actual: int | None) -> None:
        super().__init__(
            f"{key!r} is at version {actual}, not the expected version {expected}; "
            "read it again and retry with the current version.",
            details={"key": key, "expected_version": expected, "actual_version": actual},
        )
        self.key, self.expected, self.actual = key, expected, actual


class QuotaExceededError(TieredStateError):
    """A state type holds its ``max_states`` live states already; a new one is refused
    until some are deleted (or expire), or the quota is raised."""

    code = "quota_exceeded"
    http_status = 409

    def __init__(self, state_type: str, limit: int, count: int) -> None:
        super().__init__(
            f"State type {state_type!r} holds {count} states, its quota is {limit} "
            "(register_state_type(..., max_states=N), or TIERED_STATE_MAX_STATES_PER_TYPE "
            "for types registered without one); delete states or raise the quota.",
            details={"state_type": state_type, "max_states": limit, "count": count},
        )
        self.state_type, self.limit, self.count = state_type, limit, count


class CallbackError(TieredStateError):
    """A callback raised; reported through the ``callback-failed`` signal, never re-raised
    into the mutation that triggered it."""

    code = "callback_error"
    http_status = 500


class IdempotencyKeyReusedError(TieredStateError):
    """An idempotency key was sent again with other parameters than its first use."""

    code = "idempotency_key_reused"
    http_status = 422


class IdempotencyKeyInUseError(TieredStateError):
    """A request with the same idempotency key is still running."""

    code = "idempotency_key_in_use"
    http_status = 409


class DispatcherBusyError(TieredStateError):
    """Another event dispatcher runs where only one may (SQLite)."""

    code = "dispatcher_busy"
    http_status = 409


# --------------------------------------------------------------------------- HTTP-facing


class AccessDeniedError(TieredStateError, PermissionError):
    """The access-control hook refused the request."""

    code = "forbidden"
    http_status = 403


class RateLimitedError(TieredStateError):
    """Too many requests; retry after :attr:`retry_after` seconds."""

    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, details={"retry_after": retry_after})
        self.retry_after = retry_after


class EncryptionKeyError(TieredStateError):
    """An encrypted value cannot be read or written with the configured keys: its data
    key is wrapped by a master key missing from ``TIERED_STATE_ENCRYPTION_KEYS``, or the
    ciphertext does not authenticate (it was altered)."""

    code = "encryption_key_error"
    http_status = 500


class EncryptedFieldError(InvalidRequestError):
    """A search or a filter names a field its type keeps encrypted."""

    code = "encrypted_field"
    http_status = 400


class StateErasedError(TieredStateError):
    """The state was erased (:meth:`~flask_tiered_state.domain.manager.StateManager.erase_state`):
    its data key is destroyed, so nothing encrypted of it can be read or written again."""

    code = "state_erased"
    http_status = 410

    def __init__(self, state_id: str, message: str | None = None) -> None:
        super().__init__(
            message
            or f"State {state_id!r} was erased: its data key was destroyed and its encrypted "
            "fields can no longer be read or changed.",
            details={"state_id": state_id},
        )
        self.state_id = state_id
