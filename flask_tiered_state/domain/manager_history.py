"""Reading the history: one state's rows, recent activity, and diffs between versions."""

from __future__ import annotations

from typing import Any

from ..errors import StateNotFoundError, VersionNotFoundError
from .arguments import check_positive_int, check_transition
from .diff import diff_records
from .manager_base import ManagerBase
from .model import StateTransition, validate_state_id

__all__ = ["HistoryQueriesMixin"]

#: The most rows one history query returns.
MAX_HISTORY_LIMIT = 1000


class HistoryQueriesMixin(ManagerBase):
    """``get_state_history``, ``get_recent_changes``, ``get_changes_by_transition``,
    ``get_recent_activity`` and ``diff_versions``."""

    def get_state_history(self, state_id: str) -> list[dict[str, Any]]:
        """Every history row of ``state_id``, oldest version first ([] for unknown ids)."""
        return self.history.for_state(validate_state_id(state_id))

    def get_recent_changes(self, state_id: str, limit: int = 10) -> list[dict[str, Any]]:
        """The latest ``limit`` (1-1000) history rows of ``state_id``, newest first."""
        validate_state_id(state_id)
        return self.history.recent(
            state_id, check_positive_int(limit, "limit", maximum=MAX_HISTORY_LIMIT)
        )

    def get_changes_by_transition(
        self, state_id: str, transition_type: StateTransition | str
    ) -> list[dict[str, Any]]:
        """The history rows of ``state_id`` recorded by ``transition_type``, oldest first."""
        validate_state_id(state_id)
        transition = check_transition(transition_type, what="transition_type")
        return self.history.by_transition(state_id, transition.value)

    def get_recent_activity(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest ``limit`` (1-1000) history rows across all states, newest first.

        Rows are light: ``state_id, version, transition, from_status, to_status, actor,
        reason, correlation_id, created_at``, without the old and new records (read those
        with :meth:`get_state_history` or :meth:`get_recent_changes`). The query reads the
        history's primary key index backwards, so its cost does not grow with the
        history. Every type is covered, sessions and archived states included.
        """
        return self.history.latest(check_positive_int(limit, "limit", maximum=MAX_HISTORY_LIMIT))

    def diff_versions(self, state_id: str, from_version: int, to_version: int) -> dict[str, Any]:
        """Dotted paths added, removed and changed from one recorded version to another."""
        validate_state_id(state_id)
        check_positive_int(from_version, "from_version")
        check_positive_int(to_version, "to_version")
        records = self.history.records_at(state_id, [from_version, to_version])
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
