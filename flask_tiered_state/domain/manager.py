"""The :class:`StateManager`: typed, validated, audited domain states over a TieredStore.

This module builds and holds managers (the default instance, ``create``, ``close``);
the API is assembled from mixins of one purpose each, all over
:class:`~flask_tiered_state.domain.manager_base.ManagerBase`:

- :mod:`.manager_config`: state types, validators, named callbacks;
- :mod:`.manager_reads`: ``get_state``, batches of ids, searches, key patterns, counts;
- :mod:`.manager_history`: history queries, recent activity, diffs;
- :mod:`.manager_mutations`: register, update (every transition), delete, roll back;
- :mod:`.manager_batches`: upserts, one transition for many states, deletes;
- :mod:`.manager_tiers`: moves between tiers, storage figures, health, metrics.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from .batch import BatchWriter
from .callbacks import CallbackDispatcher, CallbackRegistry
from .history import DEFAULT_HISTORY_TABLE, HistoryRepository, define_history_table
from .instances import DefaultInstance
from .manager_batches import BatchesMixin
from .manager_config import ConfigurationMixin
from .manager_history import HistoryQueriesMixin
from .manager_mutations import MutationsMixin
from .manager_reads import ReadsMixin
from .manager_tiers import TiersMixin
from .operations import OperationStats
from .records import RecordBuilder
from .registry import TypeRegistry
from .search import StateSearch
from .validation import ValidatorRegistry
from .writer import RecordWriter

if TYPE_CHECKING:
    from ..storage.store import TieredStore

__all__ = ["StateManager"]

logger = logging.getLogger("flask_tiered_state.domain")

_instances: DefaultInstance[StateManager] = DefaultInstance()


class StateManager(
    ConfigurationMixin,
    ReadsMixin,
    HistoryQueriesMixin,
    MutationsMixin,
    BatchesMixin,
    TiersMixin,
):
    """Keeps an application's domain states: typed, validated, audited, tiered.

    **Which instance you get.** :meth:`StateManager.create` builds an independent
    manager; the Flask extension creates one per app that way and installs a resolver
    with :meth:`set_context_resolver`. :meth:`get_instance` and ``StateManager()``
    return, in this order:

    1. inside a Flask app context whose app has the extension, that app's manager
       (so app factories and several apps in one process each see their own);
    2. otherwise the process-wide *default* instance, created thread-safely on first
       use from ``**components`` (for example ``store=build_store(...)``), or with no
       components from embedded defaults: SQLite, memory HOT and a directory for COLD,
       all in a temporary directory that :meth:`reset_instance` removes. The embedded
       default is **not durable**; it is meant for scripts and tests.

    Components passed when the instance already exists must be the ones it has, else
    :class:`~flask_tiered_state.errors.ConfigurationError` (call :meth:`reset_instance`
    first). :meth:`reset_instance` closes and drops the default instance; calling it
    twice is safe.

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
    ) -> StateManager:
        """A new, independent manager over ``store`` (not the default instance); see the
        class doc for the options. The Flask extension builds each app's manager so."""
        self = object.__new__(cls)
        self._setup(
            store,
            history_table=history_table,
            create_tables=create_tables,
            hot_ttl_seconds=hot_ttl_seconds,
            max_attempts=max_attempts,
            close_store=close_store,
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
    ) -> None:
        warm = getattr(store, "warm", None)
        if warm is None or not hasattr(warm, "unit_of_work") or not hasattr(warm, "table"):
            raise ConfigurationError(
                f"The store's WARM tier must be a SQLStateRepository (history lives in its "
                f"database); got {warm!r}."
            )
        for name, value in (("hot_ttl_seconds", hot_ttl_seconds), ("max_attempts", max_attempts)):
            if type(value) is not int or value < 1:
                raise ConfigurationError(f"{name} must be a positive integer, not {value!r}.")
        self.store = store
        self.closed = False
        self._close_store = close_store
        self._temp_dir: Path | None = None
        self._max_attempts = max_attempts
        self.types = TypeRegistry()
        self.validators = ValidatorRegistry()
        self.callbacks = CallbackRegistry()
        self.dispatcher = CallbackDispatcher(self, self.callbacks)
        table = define_history_table(warm.table.metadata, history_table)
        self.history = HistoryRepository(warm.engine, table)
        if create_tables:
            self.history.create()
        self._writer = RecordWriter(
            store, self.history, self.types, default_hot_ttl_seconds=hot_ttl_seconds
        )
        self._records = RecordBuilder(self.validators)
        self._batch = BatchWriter(self._writer, self._records)
        self._search = StateSearch(warm)
        self._ops = OperationStats()

    @classmethod
    def get_instance(cls, **components: Any) -> StateManager:
        """The current app's manager, else the process-wide default (see the class doc)."""
        manager, built = _instances.get(lambda: cls._build_default(components))
        if not built:
            manager._check_components(components)
        return manager

    @classmethod
    def _build_default(cls, components: dict[str, Any]) -> StateManager:
        if components.get("store") is not None:
            return cls.create(**components)
        from ..storage.factory import build_store

        temp_dir = Path(tempfile.mkdtemp(prefix="tiered_state_"))
        try:
            manager = cls.create(**{**components, "store": build_store(local_dir=temp_dir)})
        except BaseException:
            shutil.rmtree(temp_dir, ignore_errors=True)
            raise
        manager._temp_dir = temp_dir
        logger.info("Created the embedded default StateManager in %s (not durable).", temp_dir)
        return manager

    def _check_components(self, components: Mapping[str, Any]) -> None:
        store = components.get("store")
        if components and (set(components) != {"store"} or store is not self.store):
            raise ConfigurationError(
                f"StateManager already exists; components {sorted(components)} can only be "
                "given when it is created. Call StateManager.reset_instance() first, or use "
                "StateManager.create(...) for an independent manager."
            )

    @classmethod
    def reset_instance(cls) -> None:
        """Close and drop the process-wide default instance (safe to call twice)."""
        _instances.reset()

    @classmethod
    def set_context_resolver(cls, resolver: Callable[[], StateManager | None] | None) -> None:
        """Install the hook that returns the current app's manager (or None); the Flask
        extension installs it. None removes it."""
        _instances.resolver = resolver

    def close(self) -> None:
        """Release the store (when owned) and the embedded default's files."""
        if self.closed:
            return
        self.closed = True
        if self._close_store:
            self.store.close()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<StateManager {state} history={self.history.table.name!r}>"
