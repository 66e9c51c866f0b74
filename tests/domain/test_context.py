"""The correlation id context."""

from __future__ import annotations

import threading

import pytest

from flask_tiered_state.domain.context import (
    correlation_scope,
    get_correlation_id,
    reset_correlation_id,
    set_correlation_id,
)
from flask_tiered_state.errors import InvalidRequestError


def test_scope_nests_and_restores() -> None:
    assert get_correlation_id() is None
    with correlation_scope("outer"):
        with correlation_scope("inner"):
            assert get_correlation_id() == "inner"
        assert get_correlation_id() == "outer"
    assert get_correlation_id() is None


def test_threads_see_their_own() -> None:
    seen: list[str | None] = []
    with correlation_scope("main"):
        thread = threading.Thread(target=lambda: seen.append(get_correlation_id()))
        thread.start()
        thread.join()
    assert seen == [None]


def test_set_and_reset() -> None:
    token = set_correlation_id("req-1")
    assert get_correlation_id() == "req-1"
    reset_correlation_id(token)
    assert get_correlation_id() is None


@pytest.mark.parametrize("bad", ["", "x" * 201, "line\nbreak", 5])
def test_bad_ids(bad: object) -> None:
    with pytest.raises(InvalidRequestError, match="correlation id"):
        set_correlation_id(bad)  # type: ignore[arg-type]
