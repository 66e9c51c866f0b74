"""Issue 13, findings 2 and 3 at the manager: every integer argument is bounded by what
the storage holds, filter values a backend cannot compare are refused, a state's name
and metadata are capped, history pages, and each type has a quota of live states.

Every refusal is a named library error (never a database error), on both backend sets.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_tiered_state.domain.arguments import (
    MAX_METADATA_BYTES,
    MAX_METADATA_KEYS,
    MAX_NAME_LENGTH,
    MAX_VERSION,
)
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.domain.paging import MAX_PAGE
from flask_tiered_state.domain.quotas import REFRESH_SECONDS
from flask_tiered_state.errors import (
    ConfigurationError,
    InvalidRequestError,
    QuotaExceededError,
    ValidationError,
    VersionNotFoundError,
)
from flask_tiered_state.storage.base import StateCategory
from tests.domain.conftest import build_test_store

BEYOND_VERSIONS = [MAX_VERSION + 1, 2**63, 2**80]


@pytest.fixture
def alice(manager: StateManager) -> dict[str, Any]:
    manager.register_state("alice", "user", {"data": {"n": 1}})
    return manager.update_state("alice", {"data": {"n": 2}})


# -- finding 2: integer arguments bounded by the storage -------------------------------


@pytest.mark.parametrize("version", BEYOND_VERSIONS)
def test_diff_versions_beyond_the_history_column_are_refused(
    manager: StateManager, alice: dict[str, Any], version: int
) -> None:
    with pytest.raises(InvalidRequestError, match=f"at most {MAX_VERSION}"):
        manager.diff_versions("alice", 1, version)
    with pytest.raises(InvalidRequestError, match="from_version"):
        manager.diff_versions("alice", version, 1)


def test_the_highest_version_is_looked_up(manager: StateManager, alice: dict[str, Any]) -> None:
    with pytest.raises(VersionNotFoundError):
        manager.diff_versions("alice", 1, MAX_VERSION)


@pytest.mark.parametrize("version", BEYOND_VERSIONS)
def test_version_arguments_of_mutations_are_bounded(
    manager: StateManager, alice: dict[str, Any], version: int
) -> None:
    with pytest.raises(InvalidRequestError, match="to_version"):
        manager.rollback_state("alice", version)
    with pytest.raises(InvalidRequestError, match="expected_version"):
        manager.update_state("alice", {"data": {}}, expected_version=version)
    with pytest.raises(InvalidRequestError, match="if_version"):
        manager.schedule_transition(
            "alice", "suspend", after=timedelta(hours=1), if_version=version
        )
    assert manager.get_state("alice") == alice  # nothing was written


@pytest.mark.parametrize("page", [MAX_PAGE + 1, 288230376151711744, 2**63])
def test_pages_whose_offset_would_overflow_are_refused(
    manager: StateManager, alice: dict[str, Any], page: int
) -> None:
    with pytest.raises(InvalidRequestError, match="page is an integer from 1 to 1,000,000"):
        manager.search_states("user", page=page, per_page=753)
    with pytest.raises(InvalidRequestError, match="page"):
        manager.get_history_page("alice", page=page)


def test_the_last_page_allowed_is_searched(manager: StateManager, alice: dict[str, Any]) -> None:
    result = manager.search_states("user", page=MAX_PAGE, per_page=1000)
    assert (result.items, result.total) == ([], 1)


# -- finding 2: filter values the backends cannot compare ------------------------------


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (math.inf, "finite"),
        (-math.inf, "finite"),
        (math.nan, "finite"),
        (2**63, "integers"),
        (-(2**63) - 1, "integers"),
        (10**30, "integers"),
        ("a\x00b", "NUL"),
        ("\ud800", "surrogate"),
    ],
)
@pytest.mark.parametrize("path", ["data.n", "name", "metadata.a.b"])
def test_filter_values_no_backend_can_compare_are_refused(
    manager: StateManager, alice: dict[str, Any], path: str, value: object, why: str
) -> None:
    with pytest.raises(InvalidRequestError, match=why) as caught:
        manager.search_states("user", {path: value})
    assert caught.value.details["path"] == path


@pytest.mark.parametrize("value", [2**63 - 1, -(2**63), 1.5e308, -1.5e308, "é ✓"])
def test_filter_values_at_the_bounds_are_searched(
    manager: StateManager, alice: dict[str, Any], value: object
) -> None:
    assert manager.search_states("user", {"data.n": value}).total == 0


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=20),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=_SCALARS)
def test_any_scalar_filter_value_is_searched_or_refused_by_name(
    manager: StateManager, alice: dict[str, Any], value: object
) -> None:
    """Property: a search either runs (and finds alice exactly when her n equals the
    value) or raises InvalidRequestError -- never a database or driver error."""
    try:
        page = manager.search_states("user", {"data.n": value})
    except InvalidRequestError:
        return
    assert page.total == (1 if value == 2 and type(value) is int else 0)


# -- finding 3: names, metadata, reasons and actors are capped -------------------------


def test_a_million_character_name_is_refused(manager: StateManager) -> None:
    with pytest.raises(ValidationError, match=f"at most {MAX_NAME_LENGTH}") as caught:
        manager.register_state("bob", "user", {"name": "x" * 1_000_000})
    assert "name" in caught.value.errors
    assert manager.get_state("bob") is None
    manager.register_state("bob", "user", {"name": "x" * MAX_NAME_LENGTH})
    with pytest.raises(ValidationError, match="name"):
        manager.update_state("bob", {"name": "y" * (MAX_NAME_LENGTH + 1)})


def test_metadata_is_capped_in_keys_and_bytes(manager: StateManager) -> None:
    too_many = {f"k{i}": i for i in range(MAX_METADATA_KEYS + 1)}
    with pytest.raises(ValidationError, match=f"at most {MAX_METADATA_KEYS}"):
        manager.register_state("carol", "user", {"metadata": too_many})
    too_big = {"blob": "x" * MAX_METADATA_BYTES}
    with pytest.raises(ValidationError, match=f"at most {MAX_METADATA_BYTES}"):
        manager.register_state("carol", "user", {"metadata": too_big})
    half = {"blob": "x" * (MAX_METADATA_BYTES // 2)}
    manager.register_state("carol", "user", {"metadata": half})
    with pytest.raises(ValidationError, match="metadata"):  # merged, it is too big
        manager.update_state("carol", {"metadata": {"more": "y" * (MAX_METADATA_BYTES // 2)}},
                             merge=True)  # fmt: skip
    with pytest.raises(ValidationError, match="metadata"):
        manager.batch_set_state({"dave": {"type": "user", "metadata": too_many}})


def test_actor_and_reason_are_capped(manager: StateManager, alice: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError, match="actor"):
        manager.update_state("alice", None, actor="a" * 201)
    with pytest.raises(InvalidRequestError, match="reason"):
        manager.update_state("alice", None, reason="r" * 10_001)


# -- finding 3: history pages ----------------------------------------------------------


def test_history_pages_oldest_first(manager: StateManager, alice: dict[str, Any]) -> None:
    for n in range(3, 8):
        manager.update_state("alice", {"data": {"n": n}})
    first = manager.get_history_page("alice", per_page=3)
    assert [row["version"] for row in first] == [1, 2, 3]
    assert (first.total, first.pages, first.has_next) == (7, 3, True)
    last = manager.get_history_page("alice", page=3, per_page=3)
    assert [row["version"] for row in last] == [7]
    assert not last.has_next
    updates = manager.get_history_page("alice", transition="UPDATE", per_page=2)
    assert ([row["version"] for row in updates], updates.total) == ([2, 3], 6)
    assert manager.get_history_page("nobody").total == 0


# -- finding 3: per-type quotas --------------------------------------------------------


def test_a_types_quota_refuses_registrations_past_it(manager: StateManager) -> None:
    manager.register_state_type("ticket", max_states=3)
    for n in range(3):
        manager.register_state(f"t{n}", "ticket")
    with pytest.raises(QuotaExceededError) as caught:
        manager.register_state("t3", "ticket")
    assert caught.value.details == {"state_type": "ticket", "max_states": 3, "count": 3}
    assert caught.value.http_status == 409 and caught.value.code == "quota_exceeded"
    assert manager.get_state("t3") is None
    manager.update_state("t0", {"data": {"still": "allowed"}})  # changes are never refused
    manager.delete_state("t0")
    manager.register_state("t3", "ticket")  # a deletion made room
    with pytest.raises(QuotaExceededError):
        manager.batch_set_state({"t4": {"type": "ticket"}})
    assert manager.get_state("t4") is None
    manager.batch_set_state({"t1": {"data": {"x": 1}}})  # an update: no new state


def test_a_batch_is_refused_whole_when_its_new_states_pass_the_quota(
    manager: StateManager,
) -> None:
    manager.register_state_type("ticket", max_states=3)
    manager.register_state("t0", "ticket")
    with pytest.raises(QuotaExceededError):
        manager.batch_set_state({f"t{n}": {} for n in range(4)}, state_type="ticket")
    assert manager.batch_get_state([f"t{n}" for n in range(1, 4)]) == {}


def test_hot_home_types_have_quotas_too(manager: StateManager) -> None:
    manager.register_state_type("visit", home_tier=StateCategory.HOT, max_states=2)
    manager.register_state("v1", "visit", {"data": {"blob": "x" * 1000}})
    manager.register_state("v2", "visit")
    with pytest.raises(QuotaExceededError):
        manager.register_state("v3", "visit")
    manager.delete_state("v1")
    manager.register_state("v3", "visit")


def test_the_default_quota_covers_the_built_in_types_sessions_included(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    manager = StateManager.create(
        store=build_test_store("embedded", request, tmp_path), default_max_states=3
    )
    try:
        for n in range(3):
            manager.register_state(f"s{n}", "session", {"data": {"blob": "x" * 1000}})
        with pytest.raises(QuotaExceededError, match="'session'"):
            manager.register_state("s3", "session")
        manager.register_state("u0", "user")  # each type has its own count
        manager.register_state_type("ticket")  # registered without max_states: the default
        assert manager.get_state_type("ticket").max_states == 3
        manager.register_state_type("unbounded", max_states=None)
        for n in range(4):
            manager.register_state(f"x{n}", "unbounded")
    finally:
        manager.close()


@pytest.mark.parametrize("bad", [0, -1, 1.5, "10", True])
def test_a_quota_is_a_positive_integer(embedded_manager: StateManager, bad: object) -> None:
    with pytest.raises(ConfigurationError, match="max_states"):
        embedded_manager.register_state_type("ticket", max_states=bad)  # type: ignore[arg-type]


@pytest.fixture
def two_managers(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[StateManager, StateManager]]:
    """Two managers (two processes' worth) over the same PostgreSQL tables."""
    store_a = build_test_store("servers", request, tmp_path / "a")
    store_b = build_test_store("servers", request, tmp_path / "b")
    a, b = StateManager.create(store=store_a), StateManager.create(store=store_b)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.s3
def test_warm_quotas_count_what_other_processes_registered(
    two_managers: tuple[StateManager, StateManager],
) -> None:
    a, b = two_managers
    for manager in (a, b):
        manager.register_state_type("ticket", max_states=3)
    a.register_state("t0", "ticket")
    b.register_state("t1", "ticket")
    b.register_state("t2", "ticket")
    time.sleep(REFRESH_SECONDS)  # a's kept count (1) is stale now: it counts again
    with pytest.raises(QuotaExceededError, match="holds 3 states"):
        a.register_state("t3", "ticket")
    with pytest.raises(QuotaExceededError):  # b counted its own registrations
        b.register_state("t3", "ticket")
