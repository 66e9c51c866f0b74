"""The SQL repository's DocumentSearch capability, on PostgreSQL and SQLite.

The property test compares every query with a model in Python: equality that includes
the JSON type, the key range, exclusions, grouping and the page order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_tiered_state.errors import InvalidRequestError
from flask_tiered_state.storage.base import DocumentQuery, DocumentSearch, WriteRequest
from flask_tiered_state.storage.sql import SQLStateRepository
from tests.storage.test_sql_repository import PG, Clock, _url


@pytest.fixture(params=[PG, "sqlite"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SQLStateRepository]:
    clock = Clock()
    repository = SQLStateRepository(_url(request, request.param, tmp_path), clock=clock)
    repository.clock = clock  # type: ignore[attr-defined]
    yield repository
    repository.close()


def put(
    repo: SQLStateRepository, documents: dict[str, dict[str, Any]], ttl: int | None = None
) -> None:
    repo.store_many([WriteRequest(k, json.dumps(v), ttl_seconds=ttl) for k, v in documents.items()])


def test_the_repository_declares_the_capability(repo: SQLStateRepository) -> None:
    assert isinstance(repo, DocumentSearch)


def test_equality_includes_the_json_type(repo: SQLStateRepository) -> None:
    put(
        repo,
        {
            "s:int": {"at": "1", "v": 1},
            "s:true": {"at": "2", "v": True},
            "s:false": {"at": "7", "v": False},
            "s:text": {"at": "3", "v": "1"},
            "s:null": {"at": "4", "v": None},
            "s:float": {"at": "5", "v": 1.0},
            "s:nested": {"at": "6", "v": {"w": 1}},
        },
    )

    def keys(value: Any, path: tuple[str, ...] = ("v",)) -> list[str]:
        values, total = repo.search_documents(
            DocumentQuery("s:", equal=((path, value),)), newest_by="at", offset=0, limit=10
        )
        assert total == len(values)
        return [json.loads(v)["at"] for v in values]

    assert keys(1) == ["5", "1"]  # 1 and 1.0 are one JSON number
    assert keys(True) == ["2"]
    assert keys(False) == ["7"]
    assert keys("1") == ["3"]
    assert keys(None) == ["4"]
    assert keys(1, ("v", "w")) == ["6"]
    assert keys(2) == []


def test_prefix_exclusions_choices_and_expiry(repo: SQLStateRepository) -> None:
    put(
        repo,
        {
            "s:a": {"at": "1", "type": "user", "status": "active"},
            "s:b": {"at": "2", "type": "user", "status": "deleted"},
            "s:c": {"at": "3", "type": "flag", "status": "active"},
            "t:d": {"at": "4", "type": "user", "status": "active"},  # another prefix
        },
    )
    put(repo, {"s:e": {"at": "5", "type": "user", "status": "active"}}, ttl=10)
    query = DocumentQuery("s:", not_equal=(("status", "deleted"),), one_of=(("type", ("user",)),))
    values, total = repo.search_documents(query, newest_by="at", offset=0, limit=10)
    assert [json.loads(v)["at"] for v in values] == ["5", "1"] and total == 2
    repo.clock.advance(11)  # type: ignore[attr-defined]
    values, total = repo.search_documents(query, newest_by="at", offset=0, limit=10)
    assert [json.loads(v)["at"] for v in values] == ["1"] and total == 1
    assert sorted(repo.count_documents(DocumentQuery("s:"), ["type", "status"])) == [
        ("flag", "active", 1),
        ("user", "active", 1),
        ("user", "deleted", 1),
    ]
    assert repo.count_documents(DocumentQuery(""), []) == [(4,)]


def test_a_page_past_the_end_still_counts(repo: SQLStateRepository) -> None:
    put(repo, {f"s:{n}": {"at": f"{n:02}"} for n in range(5)})
    assert repo.search_documents(DocumentQuery("s:"), newest_by="at", offset=10, limit=2) == ([], 5)
    values, total = repo.search_documents(DocumentQuery("s:"), newest_by="at", offset=1, limit=2)
    assert [json.loads(v)["at"] for v in values] == ["03", "02"] and total == 5


def test_contradictory_equalities_match_nothing(repo: SQLStateRepository) -> None:
    put(repo, {"s:a": {"at": "1", "v": 1}})
    for equal in (
        ((("v",), 1), (("v",), 2)),
        ((("v",), 1), (("v",), True)),
        ((("v",), True), (("v",), 1)),
        ((("v",), 1), (("v", "w"), 1)),
    ):
        query = DocumentQuery("s:", equal=equal)
        assert repo.search_documents(query, newest_by="at", offset=0, limit=5) == ([], 0)


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda r: r.count_documents(DocumentQuery("s:"), ["a b"]), "Invalid document field"),
        (lambda r: r.count_documents(DocumentQuery("s:"), ["x'--"]), "Invalid document field"),
        (lambda r: r.count_documents(DocumentQuery("s'"), []), "Invalid key prefix"),
        (
            lambda r: r.count_documents(DocumentQuery("s:", equal=((('a"b',), 1),)), []),
            "Invalid document path",
        ),
        (lambda r: r.count_documents(DocumentQuery("s:", equal=(((), 1),)), []), "document path"),
        (lambda r: r.count_documents({"key_prefix": "s:"}, []), "DocumentQuery"),
        (
            lambda r: r.search_documents(DocumentQuery("s:"), newest_by="at", offset=-1, limit=1),
            "offset must be",
        ),
        (
            lambda r: r.search_documents(DocumentQuery("s:"), newest_by="at", offset=0, limit=0),
            "limit must be",
        ),
    ],
)
def test_bad_queries_are_refused_by_name(repo: SQLStateRepository, call: Any, words: str) -> None:
    with pytest.raises(InvalidRequestError, match=words):
        call(repo)


# --------------------------------------------------------------------------- property

SCALARS = st.sampled_from([None, True, False, 0, 1, 2, "1", "a", "true"])
DOCUMENTS = st.dictionaries(
    st.sampled_from(["s:1", "s:2", "s:3", "s:4", "s:5", "t:1"]),
    st.fixed_dictionaries(
        {"at": st.sampled_from(["1", "2", "3"]), "kind": st.sampled_from(["x", "y"])},
        optional={"v": SCALARS, "o": st.fixed_dictionaries({}, optional={"w": SCALARS})},
    ),
    max_size=6,
)
EQUALS = st.lists(st.tuples(st.sampled_from([("v",), ("o", "w"), ("kind",)]), SCALARS), max_size=2)


def _value_at(document: dict[str, Any], path: tuple[str, ...]) -> tuple[bool, Any]:
    node: Any = document
    for segment in path:
        if not isinstance(node, dict) or segment not in node:
            return False, None
        node = node[segment]
    return True, node


def _same_json(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return type(a) is type(b) and a == b
    if isinstance(a, str) or isinstance(b, str):
        return type(a) is type(b) and a == b
    return bool(a == b)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(documents=DOCUMENTS, equal=EQUALS, exclude=st.sampled_from([None, "x", "y"]))
def test_search_matches_a_model(
    repo: SQLStateRepository,
    documents: dict[str, dict[str, Any]],
    equal: list[tuple[tuple[str, ...], Any]],
    exclude: str | None,
) -> None:
    repo.delete_many(list(repo.keys("*")))
    put(repo, documents)
    query = DocumentQuery(
        "s:",
        equal=tuple(equal),
        not_equal=() if exclude is None else (("kind", exclude),),
    )
    expected = sorted(
        (
            (key, d)
            for key, d in documents.items()
            if key.startswith("s:")
            and d["kind"] != exclude
            and all(
                (found := _value_at(d, path))[0] and _same_json(found[1], value)
                for path, value in equal
            )
        ),
        key=lambda item: (-int(item[1]["at"]), item[0]),
    )
    values, total = repo.search_documents(query, newest_by="at", offset=0, limit=10)
    assert [json.loads(v) for v in values] == [d for _, d in expected]
    assert total == len(expected)
    counts = {kind: n for kind, n in repo.count_documents(query, ["kind"])}
    assert counts == {
        kind: n for kind in ("x", "y") if (n := sum(1 for _, d in expected if d["kind"] == kind))
    }


@pytest.mark.postgres
@pytest.mark.parametrize("isolation", [None, "AUTOCOMMIT"])
def test_repeated_searches_are_never_prepared_and_leave_the_driver_alone(
    postgres_url: str, postgres_engine: sa.Engine, isolation: str | None
) -> None:
    """psycopg prepares a statement on its sixth run on a connection, and PostgreSQL may
    then plan it generically, blind to the filter's selectivity. A search is never
    prepared -- it runs in a transaction, and psycopg forgets its counts at the rollback
    -- also on an app's engine in AUTOCOMMIT isolation, and the driver's
    ``prepare_threshold`` is never touched (an app's engine keeps its own)."""
    options = {} if isolation is None else {"isolation_level": isolation}
    engine = sa.create_engine(postgres_url, pool_size=1, max_overflow=0, **options)
    repo = SQLStateRepository(engine)
    thresholds: list[Any] = []

    def look(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "counted" in statement or "GROUP BY" in statement:
            thresholds.append(conn.connection.driver_connection.prepare_threshold)

    try:
        for i in range(6):
            repo.store(f"s:{i}", json.dumps({"at": str(i), "v": i % 2}))
        with engine.connect() as conn:
            driver: Any = conn.connection.driver_connection
            autocommit = driver.autocommit
        assert autocommit is (isolation == "AUTOCOMMIT")
        sa.event.listen(engine, "before_cursor_execute", look)
        query = DocumentQuery("s:", equal=((("v",), 1),))
        for _ in range(8):
            values, total = repo.search_documents(query, newest_by="at", offset=0, limit=2)
            assert [json.loads(v)["at"] for v in values] == ["5", "3"] and total == 3
            assert repo.count_documents(query, ["v"]) == [("1", 3)]
        sa.event.remove(engine, "before_cursor_execute", look)
        assert thresholds == [5] * 16  # psycopg's default, as the app configured it
        with engine.connect() as conn:  # the one pooled connection the searches used
            prepared = conn.exec_driver_sql(
                "SELECT statement FROM pg_prepared_statements "
                "WHERE statement LIKE '%%counted%%' OR statement LIKE '%%GROUP BY%%'"
            ).all()
            assert id(conn.connection.driver_connection) == id(driver)  # the same connection
            assert driver.autocommit is autocommit
        assert prepared == []
    finally:
        repo.close()
        engine.dispose()
