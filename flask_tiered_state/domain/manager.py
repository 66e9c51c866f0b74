"""The :class:`StateManager`: typed, validated, audited domain states over a TieredStore.

One class, one job: the public API of the domain layer. It composes what are concepts
of their own -- the type registry, the lifecycles, the validators, the record builder,
the writer of records and history rows, the batch writer, the history repository, the
search, the callback dispatcher -- and adds the read-modify-write loop, the after-commit
delivery of events, and the instances (the default one, ``create``, ``close``).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from .. import signals
from ..errors import (
    AlreadyAtVersionError,
    ConcurrencyError,
    ConfigurationError,
    InvalidRequestError,
    JSONTooDeepError,
    StateErasedError,
    StateNotFoundError,
    TieredStateError,
    ValidationError,
    VersionNotFoundError,
)
from ..json_codec import DEFAULT_MAX_JSON_DEPTH, check_max_json_depth
from ..storage.base import StateCategory, StateRepositories
from ..storage.checks import int_option, seconds_option
from ..storage.deadlines import within_budget
from ..storage.keys import validate_pattern
from .acting import ACTING, Acting, RoleMap, acting_scope, authorize, transition_actions
from .arguments import (
    MAX_ROW_ID,
    UPDATE_TRANSITIONS,
    check_actor_reason,
    check_positive_int,
    check_transition,
    check_version,
)
from .audit import HistorySealer
from .audit import KeySource as AuditKeySource
from .batch import BatchWriter
from .callbacks import (
    CallbackDispatcher,
    CallbackRegistry,
    StateEvent,
    event_name,
    parse_event_name,
)
from .context import get_correlation_id
from .data_keys import DataKeys, define_data_key_table
from .diff import diff_records
from .encryption import KeySource, MasterKeys, RecordCipher, load_master_keys
from .history import DEFAULT_HISTORY_TABLE, HistoryRepository, define_history_table
from .history_archive import HistoryArchive
from .idempotency import (
    IdempotencyKeys,
    check_idempotency_key,
    define_idempotency_table,
    fingerprint,
)
from .instances import DefaultInstance
from .lifecycle import Lifecycle
from .model import (
    KEY_PREFIX,
    StateStatus,
    StateTransition,
    new_state_id,
    state_key,
    validate_state_id,
)
from .operations import OperationStats, health_status
from .outbox import Outbox, check_status, define_delivery_table
from .paging import DEFAULT_PER_PAGE, Page, validate_paging
from .quotas import StateQuotas
from .records import RecordBuilder
from .registry import DEFAULT, DEFAULT_MAX_STATES, StateTypeSpec, TypeRegistry, UseDefault
from .restore import RecordRestorer, RestoreResult, check_archived
from .restore import check_mode as check_restore_mode
from .search import COUNT_FIELDS, StateSearch
from .timers import Timers, define_timer_table
from .validation import STRUCTURE_FIELDS, ValidatorRegistry
from .writer import Completion, RecordWriter, Write

if TYPE_CHECKING:
    from ..storage.store import TieredStore

__all__ = ["StateManager"]

logger = logging.getLogger("flask_tiered_state.domain")
#: Where :meth:`StateManager.log_state_operation` writes its records.
operations_logger = logging.getLogger("flask_tiered_state.operations")

_instances: DefaultInstance[StateManager] = DefaultInstance()
_DELETED = StateStatus.DELETED.value
_T = TypeVar("_T")
#: ``build(current_record, spec) -> new_record`` of one read-modify-write.
_Build = Callable[[dict[str, Any], StateTypeSpec], dict[str, Any]]
#: The most rows one history query returns.
MAX_HISTORY_LIMIT = 1000
#: States per transaction of batch_update_state, by default and at most.
DEFAULT_CHUNK_SIZE = 500
MAX_CHUNK_SIZE = 5000
#: The components that name an application's own clients (see :meth:`StateManager.get_instance`).
CLIENT_COMPONENTS = ("redis_manager", "database_manager", "s3_manager", "bucket", "s3_prefix")
#: ``factory(components) -> StateManager``: builds the process-wide default instance.
DefaultFactory = Callable[[dict[str, Any]], "StateManager"]


class StateManager:
    """Keeps an application's domain states: typed, validated, audited, tiered.

    **Which instance you get.** :meth:`StateManager.create` builds an independent
    manager; the Flask extension creates one per app that way and installs a resolver
    with :meth:`set_context_resolver`. :meth:`get_instance` and ``StateManager()``
    return, in this order:

    1. inside a Flask app context whose app has the extension, that app's manager
       (so app factories and several apps in one process each see their own);
    2. outside any app context, the manager of the one app of this process that has
       the extension (a worker thread of that app sees the app's states); with
       several such apps, :class:`~flask_tiered_state.errors.ConfigurationError` asking
       for ``with app.app_context():``;
    3. otherwise the process-wide *default* instance, created thread-safely on first
       use: from ``**components`` (``store=build_store(...)``, or the application's own
       clients, see :meth:`get_instance`) and the ``TIERED_STATE_*`` environment
       variables. Without a WARM database or a ``TIERED_STATE_LOCAL_DIR`` the data lives
       in a new temporary directory, which is logged at WARNING as not durable; the
       library never deletes it.

    Components passed when the instance already exists must be the ones it was made
    from (the same objects), else :class:`~flask_tiered_state.errors.ConfigurationError`
    (call :meth:`reset_instance` first). :meth:`reset_instance` closes and drops the
    default instance (its data stays); calling it twice is safe.

    **Records** are dicts (``state_id, name, type, status, data, metadata, version,
    created_at, updated_at``) stored under ``state:{state_id}`` in the type's home tier.
    ``version`` starts at 1 and grows by exactly one per mutation.

    **Deletion** is the DELETE transition: the record stays as a tombstone with status
    ``deleted`` and keeps its history. :meth:`get_state` returns None for it
    (``include_deleted=True`` returns the tombstone), searches skip it, and its id is
    never reused: registering it again raises
    :class:`~flask_tiered_state.errors.StateAlreadyExistsError`.

    **Home tiers.** USER, TRANSACTION, SUBSCRIPTION and FEATURE live in WARM; SESSION
    lives in HOT with a TTL (``hot_ttl_seconds``). Apps add types with
    :meth:`register_state_type`.

    **Atomicity and concurrency.** A mutation writes the record (compare-and-set on
    the version read) and its history row in one store transaction: one SQL
    transaction for WARM-home types; for HOT-home types the HOT write is applied just
    before the SQL commit and undone if that commit fails. So history has exactly one
    row per successful mutation and none for a failed one. With ``expected_version`` a
    mismatch raises :class:`~flask_tiered_state.errors.ConcurrencyError` at once;
    without it a lost race re-reads (bypassing the local cache) and retries up to
    ``max_attempts`` times before raising it.

    **Events.** After commit, the signals of :mod:`flask_tiered_state.signals` are sent
    (sender: this manager) and the callbacks named ``{type}_{past tense}`` run; one
    that raises is logged and reported through ``callback-failed``, and never undoes
    the change.

    **Search** (:meth:`search_states`, :meth:`get_states_by_type`, :meth:`count_states`)
    runs in the WARM database and covers WARM-home types; HOT-home types and states
    archived with :meth:`demote_to_cold` are read by id. :meth:`get_recent_activity`
    lists the latest changes across all states.

    **Batches.** :meth:`batch_set_state` upserts (registers absent ids, updates
    existing ones) and :meth:`batch_delete_state` deletes, each in one transaction with
    a history row per item, after every item was validated;
    :meth:`batch_update_state` applies one transition to many states, one transaction
    per chunk.

    :param store: the :class:`~flask_tiered_state.storage.store.TieredStore`; its WARM
        tier must be a SQLStateRepository (history lives in that database).
    :param history_table: the history table's name.
    :param create_tables: create the history table where missing.
    :param hot_ttl_seconds: TTL of HOT-home records (sessions) whose type sets none.
    :param max_attempts: read-modify-write attempts when racing without expected_version.
    :param close_store: :meth:`close` also closes the store.
    :param operation_log_level: the level of :meth:`log_state_operation`'s records
        (``logging.INFO``); None logs none.
    :param default_max_states: the quota of live states of each type registered without
        ``max_states``, the built-in ones included (see :mod:`.quotas`); None: no quota.
    :param max_json_depth: the levels of arrays and objects the data and the metadata
        of a state may nest (``TIERED_STATE_MAX_JSON_DEPTH``, 1 to 256); a write bringing
        deeper ones raises :class:`~flask_tiered_state.errors.JSONTooDeepError`.
    :param audit_keys: the HMAC keys that seal each history row
        (``TIERED_STATE_AUDIT_KEYS``, see :mod:`.audit`), newest first; None writes the
        rows unsealed.
    """

    # -- instances ---------------------------------------------------------------

    def __new__(cls, **components: Any) -> StateManager:
        return cls.get_instance(**components)

    def __init__(self, **components: Any) -> None:
        """No-op: ``StateManager()`` returns an instance already set up."""

    @classmethod
    def create(
        cls,
        *,
        store: TieredStore,
        history_table: str = DEFAULT_HISTORY_TABLE,
        create_tables: bool = True,
        hot_ttl_seconds: int = 3600,
        max_attempts: int = 5,
        close_store: bool = True,
        operation_log_level: int | None = logging.INFO,
        idempotency_ttl_seconds: float = 86400.0,
        default_max_states: int | None = DEFAULT_MAX_STATES,
        max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
        encryption_keys: KeySource | MasterKeys = None,
        audit_keys: HistorySealer | AuditKeySource = None,
    ) -> StateManager:
        """A new, independent manager over ``store`` (not the default instance); see the
        class doc for the options. The Flask extension builds each app's manager so."""
        self = object.__new__(cls)
        self._setup(
            store,
            default_max_states=default_max_states,
            idempotency_ttl_seconds=idempotency_ttl_seconds,
            history_table=history_table,
            create_tables=create_tables,
            hot_ttl_seconds=hot_ttl_seconds,
            max_attempts=max_attempts,
            close_store=close_store,
            operation_log_level=operation_log_level,
            max_json_depth=max_json_depth,
            encryption_keys=encryption_keys,
            audit_keys=audit_keys,
        )
        return self

    def _setup(
        self,
        store: TieredStore,
        *,
        history_table: str,
        create_tables: bool,
        hot_ttl_seconds: int,
        max_attempts: int,
        close_store: bool,
        operation_log_level: int | None,
        idempotency_ttl_seconds: float,
        default_max_states: int | None = DEFAULT_MAX_STATES,
        max_json_depth: int,
        encryption_keys: KeySource | MasterKeys = None,
        audit_keys: HistorySealer | AuditKeySource = None,
    ) -> None:
        warm = getattr(store, "warm", None)
        if warm is None or not hasattr(warm, "unit_of_work") or not hasattr(warm, "table"):
            raise ConfigurationError(
                f"The store's WARM tier must be a SQLStateRepository (history lives in its "
                f"database); got {warm!r}."
            )
        int_option("hot_ttl_seconds", hot_ttl_seconds)
        int_option("max_attempts", max_attempts)
        check_max_json_depth(max_json_depth)
        if operation_log_level is not None and (
            type(operation_log_level) is not int or operation_log_level < 0
        ):
            raise ConfigurationError(
                "operation_log_level must be a logging level (logging.INFO, an int >= 0) or "
                f"None, not {operation_log_level!r}."
            )
        self.store = store
        self.closed = False
        self._close_store = close_store
        #: The level of :meth:`log_state_operation`'s records; None: none.
        self.operation_log_level = operation_log_level
        #: What the default instance was made from (:meth:`get_instance` compares).
        self._components: dict[str, Any] = {}
        self._max_attempts = max_attempts
        self.types = TypeRegistry(default_max_states=default_max_states)
        self.validators = ValidatorRegistry()
        self.callbacks = CallbackRegistry()
        self.dispatcher = CallbackDispatcher(self, self.callbacks)
        metadata = warm.table.metadata
        table = define_history_table(metadata, history_table)
        self.history = HistoryRepository(warm.engine, table)
        #: The deliveries of asynchronous callbacks (see :mod:`.outbox`).
        self.outbox = Outbox(warm.engine, define_delivery_table(metadata), table, self.callbacks)
        #: The idempotency keys (see :mod:`.idempotency`).
        self.idempotency = IdempotencyKeys(
            warm.engine,
            define_idempotency_table(metadata),
            ttl=seconds_option("idempotency_ttl_seconds", idempotency_ttl_seconds) or 86400.0,
        )
        #: The durable timers (see :mod:`.timers`).
        self.timers = Timers(warm.engine, define_timer_table(metadata))
        master = (
            encryption_keys
            if isinstance(encryption_keys, MasterKeys)
            else load_master_keys(encryption_keys)
        )
        #: The per-state data keys of encrypted fields; None without master keys.
        self.data_keys = (
            None
            if master is None
            else DataKeys(warm.engine, define_data_key_table(metadata), master)
        )
        #: Seals records for storage and opens stored ones (see :mod:`.encryption`).
        self.cipher = RecordCipher(self.types, self.data_keys)
        if create_tables:
            for part in (self.history, self.outbox, self.idempotency, self.timers):
                part.create()
            if self.data_keys is not None:
                self.data_keys.create()
        #: Seals the history rows (``audit_keys``, see :mod:`.audit`); None: unsealed.
        self.audit_sealer = HistorySealer.of(audit_keys)
        self._writer = RecordWriter(
            store,
            self.history,
            self.types,
            default_hot_ttl_seconds=hot_ttl_seconds,
            outbox=self.outbox,
            cipher=self.cipher,
            sealer=self.audit_sealer,
        )
        self._records = RecordBuilder(self.validators, max_json_depth=max_json_depth)
        #: The levels of arrays and objects a state's data and metadata may nest.
        self.max_json_depth: int = self._records.max_json_depth
        self._batch = BatchWriter(self._writer, self._records)
        self._search = StateSearch(warm)
        self._quotas = StateQuotas(self._search.count_type)
        self._ops = OperationStats()
        self._roles: RoleMap | None = None  # checked under acting_as only

    @classmethod
    def get_instance(cls, **components: Any) -> StateManager:
        """The current app's manager, else the process-wide default (see the class doc).

        ``components`` make the default instance when it does not exist yet: ``store=``
        a :class:`~flask_tiered_state.storage.store.TieredStore`, or the application's
        own clients -- ``redis_manager=`` a ``redis.Redis`` or ``redis.ConnectionPool``
        (HOT), ``database_manager=`` a SQLAlchemy ``Engine``, a Flask-SQLAlchemy ``db`` or
        a URL (WARM), ``s3_manager=`` a boto3 S3 client with ``bucket=`` (and
        ``s3_prefix=``) (COLD), ``metrics_collector=`` a
        :class:`~flask_tiered_state.observability.metrics.MetricsCollector` -- and the
        options of :meth:`create`. Later calls with the same objects return the same
        instance; other objects raise :class:`ConfigurationError`.
        """
        manager, built = _instances.get(lambda: cls._build_default(components))
        if not built:
            manager._check_components(components)
        return manager

    @classmethod
    def _build_default(cls, components: Mapping[str, Any]) -> StateManager:
        given = dict(components)
        if given.get("store") is not None:
            mixed = sorted(set(given) & {*CLIENT_COMPONENTS, "metrics_collector"})
            if mixed:
                raise ConfigurationError(
                    f"Give store= or the clients that make one ({', '.join(mixed)}), not both."
                )
            manager = cls.create(**given)
        else:
            factory = _instances.factory
            if factory is None:  # pragma: no cover - flask_tiered_state installs it
                raise ConfigurationError("No default factory: pass store=build_store(...).")
            manager = factory(dict(given))
        manager._components = given
        return manager

    def _check_components(self, components: Mapping[str, Any]) -> None:
        if not components:
            return
        if set(components) == {"store"} and components["store"] is self.store:
            return
        made = self._components
        if components.keys() == made.keys() and all(
            components[k] is made[k]
            or (isinstance(made[k], (str, int, float, bool)) and components[k] == made[k])
            for k in components
        ):
            return
        raise ConfigurationError(
            f"StateManager already exists, made from {sorted(made) or 'no components'}; "
            f"components {sorted(components)} other than those (the same objects) can only "
            "be given when it is created. Call StateManager.reset_instance() first, or use "
            "StateManager.create(...) for an independent manager."
        )

    @classmethod
    def reset_instance(cls) -> None:
        """Close and drop the process-wide default instance (safe to call twice). Its
        data stays where it was written."""
        _instances.reset()

    @classmethod
    def set_context_resolver(cls, resolver: Callable[[], StateManager | None] | None) -> None:
        """Install the hook that returns the current app's manager (or None); the Flask
        extension installs it. None removes it."""
        _instances.resolver = resolver

    @classmethod
    def set_default_factory(cls, factory: DefaultFactory | None) -> None:
        """Install ``factory(components) -> StateManager``, which builds the default
        instance (:mod:`flask_tiered_state.app_state` installs one that reads the
        ``TIERED_STATE_*`` environment variables)."""
        _instances.factory = factory

    def close(self) -> None:
        """Release the store (when owned). Data is never deleted."""
        if self.closed:
            return
        self.closed = True
        if self._close_store:
            self.store.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<StateManager {state} history={self.history.table.name!r}>"

    # -- collaborators, timing, the after-commit delivery --------------------
    @property
    def call_timeout(self) -> float | None:
        """The time budget of each call on one state: the store's (``call_timeout``)."""
        return self.store.call_timeout

    def log_state_operation(
        self,
        operation: str,
        state_id: str,
        transition_type: StateTransition | str | None,
        duration_ms: float,
        *,
        tier: StateCategory | str | None = None,
        report_slow: bool = True,
    ) -> None:
        """Log one operation and add it to :meth:`get_performance_metrics`.

        The record goes to the ``flask_tiered_state.operations`` logger at
        :attr:`operation_log_level` (INFO by default; ``TIERED_STATE_OPERATION_LOG_LEVEL``),
        with ``operation``, ``state_id``, ``transition_type`` (the transition's name),
        ``duration_ms`` and ``correlation_id`` as attributes of the ``LogRecord``, so
        structured (JSON) formatters pick them up.

        An operation slower than the store's slow-operation threshold
        (``TIERED_STATE_SLOW_OPERATION_MS``) is also logged at WARNING on the
        ``flask_tiered_state.slow`` logger, with ``tier`` (the state's home tier), and
        counted (see :mod:`flask_tiered_state.observability.slow`), unless
        ``report_slow`` is False (the other states of a batch, reported once).
        """
        level = self.operation_log_level
        if level is not None and operations_logger.isEnabledFor(level):
            transition = getattr(transition_type, "value", transition_type)
            operations_logger.log(
                level,
                "state operation %s on %r (%s) took %.3f ms",
                operation,
                state_id,
                transition,
                duration_ms,
                extra={
                    "operation": operation,
                    "state_id": state_id,
                    "transition_type": transition,
                    "duration_ms": duration_ms,
                    "correlation_id": get_correlation_id(),
                },
            )
        self._ops.record(operation, duration_ms)
        slow = getattr(self.store, "slow_operations", None)
        if report_slow and slow is not None and duration_ms >= slow.threshold_ms:
            slow.report(
                "manager",
                operation,
                duration_ms / 1000.0,
                tier=getattr(tier, "value", tier),
                state_id=state_id,
            )

    def _committed(
        self, write: Write, actor: str | None, reason: str | None, started: float
    ) -> None:
        """After commit: deliver the event, count the state and record the operation."""
        new = write.new
        self._quotas.committed(write.spec, write.transition, new, self._writer.ttl_for(write.spec))
        name = event_name(write.spec.name, write.transition)
        if self.dispatcher.wants(name):
            self.dispatcher.dispatch(
                StateEvent(
                    name=name,
                    state_id=new["state_id"],
                    state_type=write.spec.name,
                    transition=write.transition,
                    old_state=write.old,
                    new_state=new,
                    version=new["version"],
                    correlation_id=get_correlation_id(),
                    actor=actor,
                    reason=reason,
                    event_id=write.event_id,
                )
            )
        # The states of one batch share ``started``: a slow batch is reported once.
        first = getattr(self, "_slow_started", None) is not started
        self._slow_started = started
        self.log_state_operation(
            write.transition.value,
            new["state_id"],
            write.transition,
            (time.perf_counter() - started) * 1000.0,
            tier=write.spec.home_tier,
            report_slow=first,
        )

    @staticmethod
    def _ids(state_ids: Iterable[str]) -> list[str]:
        """The distinct valid ids of an iterable (not a string), in order."""
        if isinstance(state_ids, (str, bytes)) or not isinstance(state_ids, Iterable):
            raise InvalidRequestError(
                f"Expected an iterable of state ids, not {type(state_ids).__name__}.",
                details={"state_ids": repr(state_ids)[:200]},
            )
        return list(dict.fromkeys(validate_state_id(i) for i in state_ids))

    # -- configuration: state types, validators, named callbacks ---------------
    def register_state_type(
        self,
        name: str,
        *,
        lifecycle: Lifecycle | None = None,
        schema: Any = None,
        home_tier: StateCategory = StateCategory.WARM,
        hot_ttl_seconds: int | None = None,
        max_states: int | UseDefault | None = DEFAULT,
        encrypted_fields: Iterable[str] | None = None,
    ) -> StateTypeSpec:
        """Add a state type (or replace a type's settings, built-in ones included).

        :param lifecycle: its :class:`~flask_tiered_state.domain.lifecycle.Lifecycle`
            (default: the default lifecycle).
        :param schema: a marshmallow Schema (class or instance) for its ``data``.
        :param home_tier: where its records are durably kept.
        :param hot_ttl_seconds: TTL when the home tier is HOT.
        :param max_states: the most live (not deleted) states of the type; a registration
            past it raises :class:`~flask_tiered_state.errors.QuotaExceededError`. Left
            out: the manager's ``default_max_states`` (``TIERED_STATE_MAX_STATES_PER_TYPE``);
            None: no quota. See :mod:`flask_tiered_state.domain.quotas` for how states
            are counted.
        :param encrypted_fields: the fields kept encrypted at rest, as dotted paths:
            ``["data.password", "data.card.number"]``, or ``["data"]`` for all of the data
            (``"name"`` and ``"metadata"`` too). Needs ``TIERED_STATE_ENCRYPTION_KEYS``;
            searches on these fields are refused. See :mod:`.encryption`.
        """
        if encrypted_fields is not None and self.data_keys is None:
            listed = list(encrypted_fields) if not isinstance(encrypted_fields, str) else []
            if listed:
                raise ConfigurationError(
                    f"Type {str(getattr(name, 'value', name))!r} encrypts {listed!r} but no "
                    "master key is configured: set TIERED_STATE_ENCRYPTION_KEYS (make a key "
                    "with flask_tiered_state.generate_master_key()) or pass "
                    "encryption_keys= to StateManager.create."
                )
        spec = self.types.register(
            name,
            lifecycle=lifecycle,
            schema=schema,
            home_tier=home_tier,
            hot_ttl_seconds=hot_ttl_seconds,
            max_states=max_states,
            encrypted_fields=encrypted_fields,
        )
        self.validators.set_schema(spec.name, schema)
        return spec

    def get_state_type(self, state_type: object) -> StateTypeSpec:
        """The settings of a type, or InvalidStateTypeError listing the known ones."""
        return self.types.get(state_type)

    def register_validator(self, state_type: object, validator: Any) -> None:
        """Run ``validator`` on the whole proposed state (``{"state_id", "name", "type",
        "status", "data", "metadata", "version", ...}``) of every registration,
        transition, update and rollback of the type (not deletes): a
        ``callable(state) -> bool`` (False rejects), a callable raising
        :class:`marshmallow.ValidationError`, or a marshmallow Schema class or instance.
        A type's ``schema`` (:meth:`register_state_type`) checks ``data`` only."""
        self.validators.register(self.types.get(state_type).name, validator)

    def unregister_validator(self, state_type: object, validator: Any) -> bool:
        """Remove a validator of the type; True if it was registered."""
        return self.validators.unregister(self.types.get(state_type).name, validator)

    def register_callback(
        self,
        event_name: str,
        fn: Callable[..., Any],
        *,
        asynchronous: bool = False,
        max_attempts: int = 5,
        backoff: float = 1.0,
        key: str | None = None,
    ) -> None:
        """Call ``fn(state_id, old_state, new_state, transition_type)`` after each committed
        change named ``event_name`` (``{type}_{past tense}``, e.g. ``user_suspended``).

        Synchronous (the default): called in this process right after the commit; one
        that raises is logged and never undoes the change.

        ``asynchronous=True``: the change's transaction records a delivery in the outbox,
        and a dispatcher (``flask state dispatch``) calls ``fn(state_id, old_state,
        new_state, transition_type, event_id=...)`` at least once, in commit order per
        state, retrying a failure after ``backoff`` seconds (doubling, with jitter) up to
        ``max_attempts`` attempts, then keeping it as dead. Make its effect idempotent
        by ``event_id``. ``key`` names it across processes (default ``module:qualname``).
        """
        parse_event_name(event_name, self.types.names())
        self.callbacks.register(
            event_name, fn, asynchronous=asynchronous, max_attempts=max_attempts,
            backoff=backoff, key=key,
        )  # fmt: skip

    def unregister_callback(self, event_name: str, fn: Callable[..., Any]) -> bool:
        """Remove a callback; True if it was registered."""
        parse_event_name(event_name, self.types.names())
        return self.callbacks.unregister(event_name, fn)

    # -- reads: by id, by ids, searches, patterns, counts ----------------------
    @within_budget
    def get_state(
        self,
        state_id: str,
        *,
        include_deleted: bool = False,
        auto_promote: bool = True,
        as_of: datetime | None = None,
    ) -> dict[str, Any] | None:
        """The record of ``state_id``, or None (also for a deleted state, unless
        ``include_deleted``). The dict is the caller's own copy.

        :param auto_promote: False: this read neither counts towards nor triggers the
            automatic promotion of the record to HOT (a report or a scan reading many
            states once).
        :param as_of: a timezone-aware datetime: the record as it was then -- the version
            last committed at or before it, read from the history (rows archived to COLD
            by ``flask state gc`` included); None if the state did not exist yet. Also
            checks the action ``states.history``.
        """
        self.authorize("states.read")
        validate_state_id(state_id)
        if as_of is not None:
            return self._state_as_of(state_id, as_of, include_deleted)
        started = time.perf_counter()
        record: dict[str, Any] | None = self.store.get(
            KEY_PREFIX + state_id, auto_promote=auto_promote
        )
        self._ops.record("read", (time.perf_counter() - started) * 1000.0)
        if record is None or (record["status"] == _DELETED and not include_deleted):
            return None
        return self.cipher.open(record)

    def batch_get_state(
        self, state_ids: Iterable[str], *, include_deleted: bool = False
    ) -> dict[str, dict[str, Any]]:
        """The records of the ids that exist (one round trip per tier per chunk)."""
        self.authorize("states.read")
        ids = self._ids(state_ids)
        started = time.perf_counter()
        found = self.store.batch_get([KEY_PREFIX + i for i in ids])
        self._ops.record("batch_read", (time.perf_counter() - started) * 1000.0)
        cut = len(KEY_PREFIX)
        kept = {
            key[cut:]: record
            for key, record in found.items()
            if record is not None and (include_deleted or record["status"] != _DELETED)
        }
        return dict(zip(kept, self.cipher.open_many(list(kept.values())), strict=True))

    def search_states(
        self,
        state_type: object = None,
        filters: Mapping[str, Any] | None = None,
        *,
        page: int = 1,
        per_page: int = 50,
    ) -> Page[dict[str, Any]]:
        """States whose fields equal ``filters`` (dotted paths, AND), newest first.

        Runs in the WARM database; see :mod:`flask_tiered_state.domain.search` for the
        paths allowed and what is covered.
        """
        self.authorize("states.list")
        page, per_page = validate_paging(page, per_page)
        type_name = None
        if state_type is not None:
            spec = self.types.get(state_type)
            if spec.home_tier is not StateCategory.WARM:
                raise InvalidRequestError(
                    f"States of type {spec.name!r} live in the {spec.home_tier.value} tier and "
                    "are not searchable; search covers types whose home tier is warm. Read "
                    "them by id with get_state.",
                    details={"state_type": spec.name, "home_tier": spec.home_tier.value},
                )
            type_name = spec.name
        if filters:
            self.cipher.check_search(
                self.types.names() if type_name is None else [type_name],
                (str(path).split(".") for path in filters),
            )
        found = self._search.search(type_name, filters, page=page, per_page=per_page)
        return dataclasses.replace(found, items=self.cipher.open_many(found.items))

    def get_states_by_type(
        self, state_type: object, *, page: int = 1, per_page: int = 50
    ) -> Page[dict[str, Any]]:
        """The states of one type (not deleted), newest first."""
        if state_type is None:
            raise InvalidRequestError("get_states_by_type needs a state type, not None.")
        return self.search_states(state_type, None, page=page, per_page=per_page)

    def get_keys_by_pattern(self, pattern: str) -> list[str]:
        """The ids of stored states (tombstones included) matching a glob of ``*`` and
        ``?`` over state ids, sorted."""
        self.authorize("states.list")
        validate_pattern(pattern)
        cut = len(KEY_PREFIX)
        return [key[cut:] for key in self.store.keys(KEY_PREFIX + pattern)]

    def count_states(
        self, *, by: Sequence[str] | str = ("type", "status"), include_deleted: bool = False
    ) -> dict[str, Any]:
        """How many states there are of each type and status, in one SQL query.

        Counts what searches cover: the states of types whose home tier is WARM, held in
        the WARM tier (not sessions, not archived states), without deleted ones unless
        ``include_deleted``. Groups without states are left out.

        :param by: the fields to group by, outermost first: ``("type", "status")``,
            ``("status", "type")``, ``("type",)`` or ``("status",)``.
        :returns: with two fields, nested dicts such as
            ``{"user": {"active": 12, "created": 3}, "feature": {"active": 5}}``; with
            one, ``{"user": 15, "feature": 5}``.
        :raises InvalidRequestError: ``by`` names another field, or one twice.
        """
        self.authorize("states.list")
        fields = _check_group_fields(by)
        if type(include_deleted) is not bool:
            raise InvalidRequestError(
                f"include_deleted must be True or False, not {include_deleted!r}.",
                details={"include_deleted": repr(include_deleted)},
            )
        warm = [
            name
            for name in self.types.names()
            if self.types.get(name).home_tier is StateCategory.WARM
        ]
        counts: dict[str, Any] = {}
        if not warm:
            return counts
        for *keys, count in self._search.counts(fields, warm, include_deleted=include_deleted):
            node = counts
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = count
        return counts

    # -- history: queries, recent activity, diffs ------------------------------
    def get_state_history(
        self, state_id: str, *, include_archived: bool = False
    ) -> list[dict[str, Any]]:
        """Every history row of ``state_id``, oldest version first ([] for unknown ids).

        :param include_archived: also the rows ``flask state gc`` archived to the COLD tier
            (see :mod:`flask_tiered_state.ops.retention`), in their place, each marked
            ``"archived": True``; without it only the rows still in the history table.
        """
        self.authorize("states.history")
        rows = self.history.for_state(validate_state_id(state_id))
        if include_archived is not False:
            if include_archived is not True:
                raise InvalidRequestError(
                    f"include_archived must be True or False, not {include_archived!r}.",
                    details={"include_archived": repr(include_archived)},
                )
            rows = self._archive().merged(state_id, rows)
        return self.cipher.open_history(rows)

    def _archive(self) -> HistoryArchive:
        """The history rows archived to COLD (read directly, never cached)."""
        return HistoryArchive(self.store.get_repositories().cold)

    def _state_as_of(
        self, state_id: str, as_of: datetime, include_deleted: bool
    ) -> dict[str, Any] | None:
        self.authorize("states.history")
        if not isinstance(as_of, datetime) or as_of.tzinfo is None:
            raise InvalidRequestError(
                f"as_of must be a timezone-aware datetime (e.g. datetime(2026, 1, 31, "
                f"tzinfo=timezone.utc)), not {as_of!r}."[:300],
                details={"as_of": repr(as_of)[:200]},
            )
        row = self._archive().row_as_of(self.history, state_id, as_of)
        if row is None:
            return None
        record: dict[str, Any] = row["new_record"]
        if record["status"] == _DELETED and not include_deleted:
            return None
        return self.cipher.open(record)

    def get_history_page(
        self,
        state_id: str,
        *,
        transition: StateTransition | str | None = None,
        page: int = 1,
        per_page: int = DEFAULT_PER_PAGE,
    ) -> Page[dict[str, Any]]:
        """One page of the history rows of ``state_id`` (of one ``transition``), oldest
        version first; ``total`` counts them all (0 for unknown ids).

        ``page`` is 1 to 1,000,000 and ``per_page`` 1 to 1,000, as in :meth:`search_states`.
        """
        self.authorize("states.history")
        validate_state_id(state_id)
        page, per_page = validate_paging(page, per_page)
        step = None if transition is None else check_transition(transition, what="transition")
        rows, total = self.history.page(
            state_id,
            None if step is None else step.value,
            offset=(page - 1) * per_page,
            limit=per_page,
        )
        return Page(self.cipher.open_history(rows), total, page, per_page)

    def get_recent_changes(self, state_id: str, limit: int = 10) -> list[dict[str, Any]]:
        """The latest ``limit`` (1-1000) history rows of ``state_id``, newest first."""
        self.authorize("states.history")
        validate_state_id(state_id)
        return self.cipher.open_history(
            self.history.recent(
                state_id, check_positive_int(limit, "limit", maximum=MAX_HISTORY_LIMIT)
            )
        )

    def get_changes_by_transition(
        self, state_id: str, transition_type: StateTransition | str
    ) -> list[dict[str, Any]]:
        """The history rows of ``state_id`` recorded by ``transition_type``, oldest first."""
        self.authorize("states.history")
        validate_state_id(state_id)
        transition = check_transition(transition_type, what="transition_type")
        return self.cipher.open_history(self.history.by_transition(state_id, transition.value))

    def get_recent_activity(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest ``limit`` (1-1000) history rows across all states, newest first.

        Rows are light: ``state_id, version, transition, from_status, to_status, actor,
        reason, correlation_id, created_at``, without the old and new records (read those
        with :meth:`get_state_history` or :meth:`get_recent_changes`). The query reads the
        history's primary key index backwards, so its cost does not grow with the
        history. Every type is covered, sessions and archived states included.
        """
        self.authorize("states.history")
        return self.history.latest(check_positive_int(limit, "limit", maximum=MAX_HISTORY_LIMIT))

    def diff_versions(self, state_id: str, from_version: int, to_version: int) -> dict[str, Any]:
        """Dotted paths added, removed and changed from one recorded version to another."""
        self.authorize("states.diff")
        validate_state_id(state_id)
        check_version(from_version, "from_version")
        check_version(to_version, "to_version")
        records = self._records_at(state_id, [from_version, to_version])
        for version in (from_version, to_version):
            if version not in records:
                available = self.history.versions(state_id)
                if not available:
                    raise StateNotFoundError(state_id)
                raise VersionNotFoundError(state_id, version, available)
        return {
            "state_id": state_id,
            "from_version": from_version,
            "to_version": to_version,
            **diff_records(records[from_version], records[to_version]),
        }

    # -- changes: register, update (every transition), delete, roll back -------
    @within_budget
    def register_state(
        self,
        state_id: str | None = None,
        state_type: object = None,
        initial_data: Mapping[str, Any] | None = None,
        *,
        actor: str | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Create a state (CREATE) from ``{"name", "type", "data", "metadata"}``.

        Without ``state_id`` (None) the state gets a new id, a UUIDv7 whose text sorts by
        creation time; the returned record carries it. ``name`` defaults to the id. The
        type's schema runs on ``data`` and its validators on the new record.

        :param idempotency_key: a key naming this request (see :mod:`.idempotency`): a
            repeat with the same key and parameters returns the first result and applies
            nothing; with other parameters it raises
            :class:`~flask_tiered_state.errors.IdempotencyKeyReusedError`; while the first
            runs, :class:`~flask_tiered_state.errors.IdempotencyKeyInUseError`. Every
            mutation takes one.
        :raises StateAlreadyExistsError: the id is taken, or was used by a deleted or
            expired state (ids are never reused).
        """
        started = time.perf_counter()
        if state_type is None:
            raise InvalidRequestError(
                "register_state needs a state type: register_state(state_id, state_type, "
                "initial_data), or register_state(state_type=..., initial_data=...) for a "
                "generated id."
            )
        generated = state_id is None
        if state_id is None:
            state_id = new_state_id()
        validate_state_id(state_id)
        actor = self.authorize("states.register", actor=actor)
        check_actor_reason(actor, reason)
        spec = self.types.get(state_type)
        parameters = {
            "state_id": None if generated else state_id, "state_type": spec.name,
            "initial_data": initial_data, "actor": actor, "reason": reason,
        }  # fmt: skip

        def run(completion: Completion | None) -> dict[str, Any]:
            record = self._records.new_record(state_id, spec, initial_data)
            self._quotas.check(spec)
            key = state_key(state_id)
            write = Write(key, spec, StateTransition.CREATE, None, record, 0)
            try:
                self._writer.commit([write], actor=actor, reason=reason, completion=completion)
            except ConcurrencyError:
                raise self._writer.already_exists(state_id, key) from None
            self._committed(write, actor, reason, started)
            return record

        return self._idempotent(idempotency_key, "register_state", parameters, run, _first_record)

    @within_budget
    def update_state(
        self,
        state_id: str,
        new_data: Mapping[str, Any] | None,
        transition: StateTransition | str = StateTransition.UPDATE,
        *,
        expected_version: int | None = None,
        actor: str | None = None,
        reason: str | None = None,
        merge: bool = False,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Apply ``transition`` to a state, with the changes in ``new_data``.

        ``name``, ``data`` and ``metadata``, when given, replace the record's (with
        ``merge=True``, ``data`` and ``metadata`` are merged key by key instead);
        fields not given are kept. Validators run when ``data`` is given.

        :raises StateNotFoundError: no state has the id.
        :raises InvalidTransitionError: the lifecycle does not allow it from the status.
        :raises ConcurrencyError: ``expected_version`` is not the state's version.
        """
        started = time.perf_counter()
        validate_state_id(state_id)
        step = check_transition(transition, UPDATE_TRANSITIONS, what="transition")
        actor = self.authorize(f"states.transition.{step.value}", actor=actor)
        check_actor_reason(actor, reason)
        if expected_version is not None:
            check_version(expected_version, "expected_version")

        def build(current: dict[str, Any], spec: StateTypeSpec) -> dict[str, Any]:
            return self._records.changed_record(current, spec, step, new_data, merge=merge)

        parameters = {
            "state_id": state_id, "new_data": new_data, "transition": step.value,
            "expected_version": expected_version, "actor": actor, "reason": reason,
            "merge": merge,
        }  # fmt: skip
        return self._idempotent(
            idempotency_key,
            "update_state",
            parameters,
            lambda completion: self._mutate(
                state_id, step, build, expected_version, actor, reason, started, completion
            ),
            _first_record,
        )

    def delete_state(
        self,
        state_id: str,
        *,
        actor: str | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """The DELETE transition: returns the tombstone (status ``deleted``)."""
        return self.update_state(
            state_id, None, StateTransition.DELETE, actor=actor, reason=reason,
            idempotency_key=idempotency_key,
        )  # fmt: skip

    @within_budget
    def rollback_state(
        self,
        state_id: str,
        to_version: int,
        *,
        actor: str | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Restore ``name, status, data, metadata`` of an earlier version, as a new
        recorded mutation (ROLLBACK) with the next version number.

        Allowed where the lifecycle allows the status change it implies (some
        transition leads from the current status to the restored one); validators run
        on the restored data.
        """
        started = time.perf_counter()
        validate_state_id(state_id)
        check_version(to_version, "to_version")
        actor = self.authorize("states.rollback", actor=actor)
        check_actor_reason(actor, reason)

        def build(current: dict[str, Any], spec: StateTypeSpec) -> dict[str, Any]:
            if to_version == current["version"]:
                raise AlreadyAtVersionError(state_id, to_version)
            if to_version > current["version"]:  # not recorded (yet): 404, as for diff
                raise VersionNotFoundError(
                    state_id,
                    to_version,
                    self.history.versions(state_id),
                    f" It is at version {current['version']}; to_version must be an "
                    "earlier version.",
                )
            target = self._records_at(state_id, [to_version]).get(to_version)
            if target is None:
                raise VersionNotFoundError(state_id, to_version, self.history.versions(state_id))
            return self._records.restored_record(current, spec, target, to_version)

        parameters = {
            "state_id": state_id,
            "to_version": to_version,
            "actor": actor,
            "reason": reason,
        }
        return self._idempotent(
            idempotency_key,
            "rollback_state",
            parameters,
            lambda completion: self._mutate(
                state_id, StateTransition.ROLLBACK, build, None, actor, reason, started,
                completion,
            ),
            _first_record,
        )  # fmt: skip

    @within_budget
    def erase_state(
        self,
        state_id: str,
        *,
        reason: str,
        actor: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Erase a state (the right to be forgotten) without breaking its audit trail.

        The state's data key is destroyed in the same transaction as a new version is
        recorded (transition ``erase``, status ``deleted``, event ``<type>_erased``) whose
        record keeps only the fields the type does not encrypt. Every copy of the encrypted
        fields -- in every tier, in every history row, in backups -- stays ciphertext that
        nothing can decrypt any more: they read as None. The history rows themselves stay
        (who changed what and when), so the history still verifies. Allowed from every
        status; the id is never reused.

        :param reason: why (recorded in the history; required).
        :raises InvalidRequestError: the type encrypts no field, so nothing could be erased
            by destroying its key.
        :raises StateErasedError: the state was erased already.
        """
        started = time.perf_counter()
        validate_state_id(state_id)
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidRequestError(
                "erase_state needs a reason (a non-empty string): it is recorded in the history.",
                details={"reason": repr(reason)},
            )
        actor = self.authorize("states.erase", actor=actor)
        check_actor_reason(actor, reason)
        data_keys = self.data_keys

        def build(current: dict[str, Any], spec: StateTypeSpec) -> dict[str, Any]:
            if not spec.encrypted_fields or data_keys is None:
                raise InvalidRequestError(
                    f"State {state_id!r} is of type {spec.name!r}, which encrypts no field: "
                    "erasing destroys the state's data key, which only encrypted fields have. "
                    "Register the type with encrypted_fields (e.g. ['data']) so that its states "
                    "can be erased.",
                    details={"state_id": state_id, "state_type": spec.name},
                )
            if data_keys.is_erased(state_id):
                raise StateErasedError(state_id)
            return self._records.erased_record(current, spec)

        def run(completion: Completion | None) -> dict[str, Any]:
            def destroy(connection: Any, writes: Sequence[Write]) -> None:
                assert data_keys is not None  # build refused the erasure otherwise
                data_keys.erase(connection, state_id)
                if completion is not None:
                    completion(connection, writes)

            erased = self._mutate(
                state_id, StateTransition.ERASE, build, None, actor, reason, started, destroy
            )
            assert data_keys is not None
            data_keys.forget(state_id)
            return erased

        parameters = {"state_id": state_id, "actor": actor, "reason": reason}
        return self._idempotent(idempotency_key, "erase_state", parameters, run, _first_record)

    def restore_records(
        self,
        records: Iterable[Mapping[str, Any]],
        *,
        mode: str = "missing",
        actor: str | None = None,
        reason: str | None = None,
        dry_run: bool = False,
    ) -> RestoreResult:
        """Write archived records (stored forms, as a backup holds them) back, each as a
        mutation of its own (transition ``restore``: history row, seal, events), in one
        transaction; what :class:`~flask_tiered_state.ops.backup.BackupManager` restores
        with. See :mod:`.restore` for the modes, the outcomes and the versions.

        :param records: at most 5,000 stored-form records, one per state.
        :param mode: ``missing``, ``overwrite-older`` or ``replace``.
        :param dry_run: only say what would be done.
        :raises InvalidRequestError: an unknown mode, or a malformed record.
        """
        started = time.perf_counter()
        actor = self.authorize("backups.restore", actor=actor)
        check_actor_reason(actor, reason)
        check_restore_mode(mode)
        if type(dry_run) is not bool:
            raise InvalidRequestError(f"dry_run must be True or False, not {dry_run!r}.")
        archived = check_archived(records)
        restorer = RecordRestorer(
            self.store, self._writer, self.history, self.types, self.cipher, self.data_keys
        )
        result = restorer.restore(archived, mode=mode, actor=actor, reason=reason, dry_run=dry_run)
        for write in result.committed:
            self._committed(write, actor, reason, started)
        return result

    def _idempotent(
        self,
        idempotency_key: str | None,
        operation: str,
        parameters: Mapping[str, Any],
        run: Callable[[Completion | None], _T],
        result_of: Callable[[Sequence[Write]], Any],
    ) -> _T:
        """``run(completion)``, under ``idempotency_key`` when given (see
        :mod:`.idempotency`): ``completion`` stores ``result_of(writes)`` with the key in
        the mutation's transaction; a replay returns the stored result."""
        if idempotency_key is None:
            return run(None)
        key = check_idempotency_key(idempotency_key)
        budget = self.store.call_timeout or 60.0
        try:
            digest = fingerprint(operation, parameters)
        except RecursionError:  # json recurses per level; the records' check comes later
            raise JSONTooDeepError(
                f"a value given to {operation}", self.max_json_depth, field="parameters",
                parsed=False,
            ) from None  # fmt: skip
        digests = digest if self.data_keys is None else self.data_keys.master.keyed(digest)
        lease = self.idempotency.begin(key, operation, digests, lease_seconds=budget + 5.0)
        if lease.replayed:  # results are kept as stored (sealed): open them
            replayed: _T = self._opened_result(result_of, lease.result)
            return replayed
        stored: list[bool] = []

        def completion(connection: Any, writes: Sequence[Write]) -> None:
            self.idempotency.complete(connection, lease, result_of(writes))
            stored.append(True)

        try:
            result = run(completion)
        except BaseException:
            self.idempotency.release(lease)
            raise
        if not stored:  # nothing was written (an empty batch): remember the answer anyway
            with self.history.engine.begin() as connection:
                self.idempotency.complete(connection, lease, result)
        return result

    def _mutate(
        self,
        state_id: str,
        transition: StateTransition,
        build: _Build,
        expected_version: int | None,
        actor: str | None,
        reason: str | None,
        started: float,
        completion: Completion | None = None,
    ) -> dict[str, Any]:
        key = state_key(state_id)
        fresh = False
        last_version = 0
        for attempt in range(self._max_attempts):
            read = self._writer.read(key, fresh=fresh)
            if read is None:
                raise StateNotFoundError(state_id)
            current, stored, home_version = read
            last_version = current["version"]
            if expected_version is not None and current["version"] != expected_version:
                if not fresh:  # the cached copy may be stale: look again before refusing
                    fresh = True
                    continue
                raise ConcurrencyError(state_id, expected_version, current["version"])
            spec = self.types.get(current["type"])
            new = build(current, spec)
            write = Write(key, spec, transition, current, new, home_version, stored_old=stored)
            try:
                self._writer.commit([write], actor=actor, reason=reason, completion=completion)
            except ConcurrencyError:
                fresh = True
                if expected_version is not None:
                    latest = self._writer.read(key, fresh=True)
                    actual = None if latest is None else latest.record["version"]
                    raise ConcurrencyError(state_id, expected_version, actual) from None
                time.sleep(random.uniform(0, 0.002 * 2**attempt))
                continue
            self._committed(write, actor, reason, started)
            return new
        latest = self._writer.read(key, fresh=True)
        raise ConcurrencyError(
            state_id, last_version, None if latest is None else latest.record["version"]
        )

    def _opened_result(self, result_of: Callable[..., Any], result: Any) -> Any:
        """An idempotency key's stored result, as ``result_of`` made it, opened."""
        if result_of is _first_record:
            return self.cipher.open(result)
        if result_of is _records_by_id:
            return dict(zip(result, self.cipher.open_many(list(result.values())), strict=True))
        return result

    def _records_at(self, state_id: str, versions: Sequence[int]) -> dict[int, dict[str, Any]]:
        """The recorded records of ``versions`` of a state, opened."""
        found = self.history.records_at(state_id, versions)
        if len(found) < len(set(versions)):  # older versions may be archived in COLD
            missing = [v for v in versions if v not in found]
            found.update(
                self._archive().records_at(state_id, missing, self.history.versions(state_id))
            )
        return dict(zip(found, self.cipher.open_many(list(found.values())), strict=True))

    # -- batches: upserts, one transition for many states, deletes --------------
    def batch_set_state(
        self,
        items: Mapping[str, Mapping[str, Any]],
        *,
        state_type: object = None,
        actor: str | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Upsert many states in one transaction: an absent id is registered (CREATE), an
        existing one updated (UPDATE, replacing the fields given). Each item is a state
        structure; its ``type`` (or ``state_type``) is required for new ids. Every item is
        validated before anything is written; all are written, with their history rows,
        or none."""
        started = time.perf_counter()
        actor = self.authorize("states.register", "states.transition.update", actor=actor)
        check_actor_reason(actor, reason)

        def run(completion: Completion | None) -> dict[str, dict[str, Any]]:
            writes = self._batch.upsert(
                items, state_type, max_attempts=self._max_attempts, actor=actor, reason=reason,
                completion=completion, check=self._check_batch_quotas,
            )  # fmt: skip
            for write in writes:
                self._committed(write, actor, reason, started)
            return {w.new["state_id"]: w.new for w in writes}

        parameters = {
            "items": items, "state_type": getattr(state_type, "value", state_type),
            "actor": actor, "reason": reason,
        }  # fmt: skip
        return self._idempotent(idempotency_key, "batch_set_state", parameters, run, _records_by_id)

    def _check_batch_quotas(self, writes: Sequence[Write]) -> None:
        """The quotas of the types of a batch's planned registrations."""
        adding: dict[str, tuple[StateTypeSpec, int]] = {}
        for write in writes:
            if write.transition is StateTransition.CREATE:
                spec, count = adding.get(write.spec.name, (write.spec, 0))
                adding[write.spec.name] = (spec, count + 1)
        for spec, count in adding.values():
            self._quotas.check(spec, count)

    def batch_update_state(
        self,
        items: Mapping[str, Mapping[str, Any] | None],
        transition: StateTransition | str = StateTransition.UPDATE,
        *,
        actor: str | None = None,
        reason: str | None = None,
        merge: bool = False,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        idempotency_key: str | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Apply the same ``transition`` to many existing states, each with its changes:
        ``items`` maps state ids to what :meth:`update_state` takes as ``new_data``
        (a state structure, or None for no change of fields).

        The states go in chunks of ``chunk_size``, each in one store transaction: the
        chunk's records are read with one round trip per tier (none for records in the
        local cache), every item is checked -- lifecycle, guards and validators --
        before anything of the chunk is written, then the records are written
        (compare-and-set on the versions read) with one history row each. A chunk is
        written completely or not at all; a chunk that loses a race with another writer
        is read again and retried. Signals and callbacks follow each chunk's commit, in
        the order of ``items``.

        Refusals raise what :meth:`update_state` raises, naming the state:
        :class:`~flask_tiered_state.errors.StateNotFoundError`,
        :class:`~flask_tiered_state.errors.InvalidTransitionError`,
        :class:`~flask_tiered_state.errors.ValidationError`,
        :class:`~flask_tiered_state.errors.ConcurrencyError`. Nothing of the failing
        chunk is written, while earlier chunks stay committed: the error's
        ``details["batch_committed"]`` counts the items committed before it (always the
        first ones of ``items``). The ids and the shape of every item are checked before
        the first chunk.

        :param merge: merge ``data`` and ``metadata`` key by key, as in
            :meth:`update_state`.
        :param chunk_size: states per transaction (1 to 5,000).
        :param idempotency_key: as in :meth:`register_state`; with a key the whole batch
            is one transaction (at most 5,000 states), so it is applied once or not at all.
        :returns: the new records, by state id, in the order of ``items``.
        """
        step = check_transition(transition, UPDATE_TRANSITIONS, what="transition")
        actor = self.authorize(f"states.transition.{step.value}", actor=actor)
        check_actor_reason(actor, reason)
        check_positive_int(chunk_size, "chunk_size", maximum=MAX_CHUNK_SIZE)
        if type(merge) is not bool:
            raise InvalidRequestError(
                f"merge must be True or False, not {merge!r}.", details={"merge": repr(merge)}
            )
        _check_update_items(items)
        if idempotency_key is not None:
            if len(items) > MAX_CHUNK_SIZE:
                raise InvalidRequestError(
                    f"With an idempotency key a batch is one transaction, of at most "
                    f"{MAX_CHUNK_SIZE} states; this one has {len(items)}. Split it, with a "
                    "key per part.",
                    details={"items": len(items), "maximum": MAX_CHUNK_SIZE},
                )
            chunk_size = max(len(items), 1)

        def run(completion: Completion | None) -> dict[str, dict[str, Any]]:
            done: dict[str, dict[str, Any]] = {}
            started = time.perf_counter()
            chunks = self._batch.update(
                items, step, merge=merge, chunk_size=chunk_size,
                max_attempts=self._max_attempts, actor=actor, reason=reason,
                completion=completion,
            )  # fmt: skip
            try:
                for writes in chunks:
                    for write in writes:
                        self._committed(write, actor, reason, started)
                        done[write.new["state_id"]] = write.new
                    started = time.perf_counter()
            except TieredStateError as exc:
                exc.details.setdefault("batch_committed", len(done))
                raise
            return done

        parameters = {
            "items": items, "transition": step.value, "actor": actor, "reason": reason,
            "merge": merge,
        }  # fmt: skip
        return self._idempotent(
            idempotency_key, "batch_update_state", parameters, run, _records_by_id
        )

    def batch_delete_state(
        self,
        state_ids: Iterable[str],
        *,
        actor: str | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> int:
        """Delete (DELETE transition, tombstones) the live states among ``state_ids`` in
        one transaction; missing and already deleted ids are skipped. Returns how many
        were deleted."""
        started = time.perf_counter()
        actor = self.authorize("states.transition.delete", actor=actor)
        check_actor_reason(actor, reason)
        ids = self._ids(state_ids)

        def run(completion: Completion | None) -> int:
            writes = self._batch.delete(
                ids, max_attempts=self._max_attempts, actor=actor, reason=reason,
                completion=completion,
            )  # fmt: skip
            for write in writes:
                self._committed(write, actor, reason, started)
            return len(writes)

        parameters = {"state_ids": ids, "actor": actor, "reason": reason}
        return self._idempotent(idempotency_key, "batch_delete_state", parameters, run, len)

    # -- timers and the outbox ----------------------------------------------------
    def schedule_transition(
        self,
        state_id: str,
        transition: StateTransition | str,
        *,
        at: datetime | None = None,
        after: timedelta | None = None,
        reason: str | None = None,
        if_version: int | None = None,
    ) -> dict[str, Any]:
        """Apply ``transition`` to a state later: at ``at`` (an aware datetime) or
        ``after`` a timedelta from now (see :mod:`.timers`). A dispatcher applies it, at
        most once and never early, through the lifecycle, with the actor ``scheduler``;
        with ``if_version`` only while the state is still at that version.

        :returns: the timer: ``timer_id``, ``state_id``, ``transition``, ``due_at``
            (epoch seconds), ``status`` ...
        :raises StateNotFoundError: no state has the id.
        """
        validate_state_id(state_id)
        step = check_transition(transition, UPDATE_TRANSITIONS, what="transition")
        self.authorize(f"states.transition.{step.value}")
        check_actor_reason(None, reason)
        if (at is None) == (after is None):
            raise InvalidRequestError("schedule_transition takes at= or after=, one of them.")
        if at is not None:
            if not isinstance(at, datetime) or at.tzinfo is None:
                raise InvalidRequestError(
                    f"at must be a timezone-aware datetime (datetime.now(timezone.utc) + ...), "
                    f"not {at!r}."
                )
            due_at = at.timestamp()
        else:
            if not isinstance(after, timedelta) or after.total_seconds() < 0:
                raise InvalidRequestError(f"after must be a timedelta >= 0, not {after!r}.")
            due_at = time.time() + after.total_seconds()
        if if_version is not None:
            check_version(if_version, "if_version")
        if self.store.get(state_key(state_id)) is None:  # exists? (not a states.read)
            raise StateNotFoundError(state_id)
        return self.timers.schedule(
            state_id, step.value, due_at, reason=reason, if_version=if_version
        )

    def cancel_scheduled(
        self,
        timer_id: str | None = None,
        *,
        state_id: str | None = None,
        transition: StateTransition | str | None = None,
    ) -> int:
        """Cancel scheduled timers: one by ``timer_id``, or a state's (of one
        ``transition``); returns how many were cancelled."""
        if timer_id is not None and not (isinstance(timer_id, str) and 1 <= len(timer_id) <= 32):
            raise InvalidRequestError(
                f"timer_id must be the timer_id schedule_transition returned (32 characters), "
                f"not {timer_id!r}."[:300]
            )
        if state_id is not None:
            validate_state_id(state_id)
        step = None if transition is None else check_transition(transition, what="transition")
        self.authorize(*transition_actions(step))
        return self.timers.cancel(
            timer_id=timer_id, state_id=state_id, transition=None if step is None else step.value
        )

    def get_scheduled(
        self, state_id: str | None = None, *, status: str | None = "scheduled", limit: int = 100
    ) -> list[dict[str, Any]]:
        """Timers, soonest first: of one state (or all), of one status (``scheduled``,
        ``applied``, ``skipped``, ``failed``, ``cancelled``; None: every one)."""
        self.authorize("timers.list")
        if state_id is not None:
            validate_state_id(state_id)
        return self.timers.listing(
            state_id=state_id, status=status,
            limit=check_positive_int(limit, "limit", maximum=MAX_HISTORY_LIMIT),
        )  # fmt: skip

    def get_events(self, status: str | None = None, *, limit: int = 100) -> list[dict[str, Any]]:
        """Deliveries of asynchronous callbacks, newest first: ``pending``, ``failed``
        (pending after a failed attempt), ``dead``, ``delivered`` (kept for the
        retention period), or None for every one."""
        self.authorize("events.list")
        if status is not None:
            check_status(status)
        return self.outbox.listing(
            status, check_positive_int(limit, "limit", maximum=MAX_HISTORY_LIMIT)
        )

    def retry_events(self, ids: Iterable[int] | None = None, *, all_dead: bool = False) -> int:
        """Make deliveries (by id, or every dead one) due now with fresh attempts; returns
        how many."""
        self.authorize("events.retry")
        chosen = None
        if ids is not None:
            chosen = [check_positive_int(i, "delivery id", maximum=MAX_ROW_ID) for i in ids]
        return self.outbox.retry(chosen, all_dead=all_dead)

    # -- tiers, figures and health ---------------------------------------------
    @within_budget
    def promote_to_hot(self, state_id: str, *, ttl_seconds: int | None = None) -> bool:
        """Copy a state to the HOT tier; False when nothing was moved.

        :raises StateNotFoundError: no record exists under ``state_id``.
        """
        self.authorize("states.promote")
        return self._move(state_id, hot=True, ttl_seconds=ttl_seconds)

    @within_budget
    def demote_to_cold(self, state_id: str) -> bool:
        """Move a state to the COLD tier (archive); False when nothing was moved. An
        archived state is read and updated as usual but is not searchable.

        :raises StateNotFoundError: no record exists under ``state_id``.
        """
        self.authorize("states.demote")
        return self._move(state_id, hot=False, ttl_seconds=None)

    def _move(self, state_id: str, *, hot: bool, ttl_seconds: int | None) -> bool:
        key = state_key(validate_state_id(state_id))
        if hot:
            moved = self.store.promote_to_hot(key, ttl_seconds=ttl_seconds)
        else:
            moved = self.store.demote_to_cold(key)
        if not moved:
            if self.store.get_entry(key) is None:
                raise StateNotFoundError(state_id)
            return False
        signal = signals.state_promoted if hot else signals.state_demoted
        self.dispatcher.send(signal, None, state_id=state_id, key=key)
        return True

    def get_repositories(self) -> StateRepositories:
        """The store's repositories, for direct tier access."""
        return self.store.get_repositories()

    def get_storage_stats(self) -> dict[str, Any]:
        """The store's statistics (tiers, cache) and the history row count."""
        self.authorize("stats")
        return {**self.store.stats(), "history_rows": self.history.count()}

    def get_health_status(self, *, include_errors: bool = False) -> dict[str, Any]:
        """``{"status", "state_count", "cache_hit_rate", "cache_lookups", "tiers": {...}}``;
        status is ``healthy``, ``degraded`` (HOT or COLD down) or ``unhealthy`` (WARM
        down). Each tier is checked now; see
        :func:`~flask_tiered_state.domain.operations.health_status` for its entry.

        :param include_errors: also give each tier's ``last_error`` (backend text).
        """
        self.authorize("health")
        return health_status(self.store, self._search.count, include_errors=include_errors)

    def get_performance_metrics(self) -> dict[str, Any]:
        """Per-operation counts and durations (``operations``: each committed change by
        its transition -- ``create``, ``update``, ... --, ``read`` for :meth:`get_state`
        and ``batch_read`` for :meth:`batch_get_state`), plus the store's metrics."""
        self.authorize("stats")
        return {"operations": self._ops.snapshot(), "store": self.store.metrics()}

    # -- acting as a role (see :mod:`.acting`) --------------------------------
    @property
    def roles(self) -> RoleMap | None:
        """The role map :meth:`acting_as` checks against, or None."""
        return self._roles

    def set_roles(self, roles: RoleMap | None) -> None:
        """Give the manager its role map (a
        :class:`~flask_tiered_state.roles.RoleBasedAccess`); None removes it. The Flask
        extension gives each app's manager the ``TIERED_STATE_ACCESS_CONTROL`` hook when
        that is a ``RoleBasedAccess``.

        :raises ConfigurationError: ``roles`` is not a role map.
        """
        if roles is not None and not isinstance(roles, RoleMap):
            raise ConfigurationError(
                f"set_roles takes a RoleBasedAccess (flask_tiered_state.roles) or None, not "
                f"{type(roles).__name__}."
            )
        self._roles = roles

    def acting_as(self, role: str, *, actor: str | None = None) -> AbstractContextManager[Acting]:
        """A block whose calls of this manager act as ``role``: each public call that reads
        or changes states, history, timers, deliveries or tiers checks its action
        (``states.read``, ``states.transition.suspend``, ...; see :ref:`roles`) against
        the role map and raises :class:`~flask_tiered_state.errors.AccessDeniedError`,
        before it reads or writes anything, when the role may not do it. Changes made
        without an ``actor`` record ``actor`` (default: the role's name).

        Per thread and per asyncio task; blocks nest (the innermost applies). Outside
        such a block nothing is checked. Registering types, validators and callbacks,
        and the raw store (:attr:`store`, :meth:`get_repositories`), are not checked.

        :raises ConfigurationError: the manager has no role map (:meth:`set_roles`).
        :raises InvalidRequestError: the map has no such role, or ``actor`` is not 1 to 200
            characters.
        """
        return acting_scope(self, self._roles, role, actor)

    def authorize(self, *actions: str, actor: str | None = None) -> str | None:
        """Check ``actions`` against the role of the current :meth:`acting_as` block, as
        the manager's own calls do (for an application's operations of its own); the
        actor to record: ``actor``, else the acting one. Outside ``acting_as``, no check
        and ``actor`` as given.

        :raises AccessDeniedError: the acting role may not do one of ``actions``.
        """
        if not ACTING.get():  # nobody acts as a role: the cost of every call stays tiny
            return actor
        return authorize(self, self._roles, actions, actor)


def _first_record(writes: Sequence[Write]) -> dict[str, Any]:
    """The result an idempotency key keeps: the record as stored (encrypted fields sealed)."""
    return writes[0].new_as_stored


def _records_by_id(writes: Sequence[Write]) -> dict[str, dict[str, Any]]:
    return {w.new["state_id"]: w.new_as_stored for w in writes}


def _check_group_fields(by: object) -> tuple[str, ...]:
    fields = (by,) if isinstance(by, str) else by
    allowed = ", ".join(repr(f) for f in COUNT_FIELDS)
    if (
        not isinstance(fields, (tuple, list))
        or not 1 <= len(fields) <= len(COUNT_FIELDS)
        or any(f not in COUNT_FIELDS for f in fields)
        or len(set(fields)) != len(fields)
    ):
        raise InvalidRequestError(
            f"Invalid by={by!r}: count_states groups by {allowed}, or both (each at most "
            "once), e.g. by=('type', 'status').",
            details={"by": repr(by), "allowed": list(COUNT_FIELDS)},
        )
    return tuple(fields)


def _check_update_items(items: object) -> None:
    """Ids and item shapes, before anything is read or written."""
    if not isinstance(items, Mapping):
        raise InvalidRequestError(
            "batch_update_state takes a mapping of state id to the changes (a state "
            f"structure, or None), not {type(items).__name__}.",
            details={"items": type(items).__name__},
        )
    for state_id, changes in items.items():
        validate_state_id(state_id)
        if changes is not None and not isinstance(changes, Mapping):
            raise ValidationError(
                f"The state structure for {state_id!r} must be a mapping with the keys "
                f"{', '.join(STRUCTURE_FIELDS)}, or None, not {type(changes).__name__}.",
                {"_schema": [f"Expected a mapping, got {type(changes).__name__}."]},
            )
