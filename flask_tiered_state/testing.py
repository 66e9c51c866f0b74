"""A backend author's kit: the :class:`~flask_tiered_state.storage.base.StateRepository`
contract as a pytest base class, as flask-caching's ``GenericCacheTests`` is used.

Subclass :class:`RepositoryContract` in a test module and give it a ``repository``
fixture that yields an *empty* repository of your backend (and closes it afterwards);
pytest then runs every test of the contract on it::

    import pytest
    from flask_tiered_state.testing import RepositoryContract

    class TestMyBackend(RepositoryContract):
        @pytest.fixture
        def repository(self, tmp_path):
            repo = MyRepository(tmp_path / "data")
            yield repo
            repo.close()

The kit needs pytest and hypothesis (``pip install flask-tiered-state[testing]``).
The project's own backends pass it on their real servers (``tests/storage/test_contract.py``).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .errors import (
    ConcurrencyError,
    InvalidKeyError,
    InvalidPatternError,
    InvalidRequestError,
)
from .storage.base import (
    ANY_COPY,
    StaleCopy,
    StateCategory,
    StateMetadata,
    StateRepository,
    StoredValue,
    TierStats,
    WriteRequest,
    checksum_of,
)
from .storage.keys import glob_to_regex

__all__ = ["RepositoryContract"]

_IO_SETTINGS = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_json_documents = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
_key_alphabet = st.sampled_from(list("ab_.:/+=-A"))
_keys_strategy = st.lists(
    st.text(alphabet=_key_alphabet, min_size=1, max_size=6), min_size=1, max_size=8, unique=True
)
_pattern_strategy = st.text(alphabet=st.sampled_from(list("ab_.:/+=-A*?")), min_size=1, max_size=6)


def _doc(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _fresh_key(prefix: str = "k") -> str:
    return f"{prefix}:{uuid.uuid4().hex[:12]}"


class RepositoryContract:
    """The tests every tier backend passes. Subclass it (as ``Test...``) and define the
    ``repository`` fixture: an empty repository, closed after the test."""

    @pytest.fixture
    def repository(self) -> StateRepository:
        raise NotImplementedError(
            f"{type(self).__name__} subclasses RepositoryContract without a repository "
            "fixture; define one that yields an empty repository of your backend."
        )

    # ----------------------------------------------------------------------- round trips

    def test_store_then_fetch_returns_value_and_metadata(self, repository: StateRepository) -> None:
        value = _doc({"name": "alice", "balance": 12.5, "tags": ["a", "ü"]})
        before = time.time()
        written = repository.store("user:1", value)
        got = repository.fetch("user:1")

        assert isinstance(got, StoredValue)
        assert got.key == "user:1"
        assert got.value == value
        assert isinstance(written, StateMetadata)
        assert got.metadata.checksum == checksum_of(value) == written.checksum
        assert got.metadata.size == len(value.encode()) == written.size
        assert got.metadata.version == written.version == 1
        assert got.metadata.category is repository.category
        assert before - 1 <= got.metadata.stored_at <= time.time() + 1

    def test_fetch_missing_key_returns_none(self, repository: StateRepository) -> None:
        assert repository.fetch("absent:key") is None

    def test_version_increments_when_not_given(self, repository: StateRepository) -> None:
        assert repository.store("v:1", _doc(1)).version == 1
        assert repository.store("v:1", _doc(2)).version == 2
        assert repository.store("v:1", _doc(3)).version == 3
        fetched = repository.fetch("v:1")
        assert fetched is not None and fetched.metadata.version == 3 and fetched.value == _doc(3)

    def test_explicit_version_is_stored_as_given(self, repository: StateRepository) -> None:
        assert repository.store("moved", _doc({"a": 1}), version=42).version == 42
        fetched = repository.fetch("moved")
        assert fetched is not None and fetched.metadata.version == 42
        assert repository.store("moved", _doc({"a": 2})).version == 43

    def test_expected_version_is_compare_and_set(self, repository: StateRepository) -> None:
        assert repository.store("cas", _doc("a"), expected_version=0).version == 1
        with pytest.raises(ConcurrencyError) as info:
            repository.store("cas", _doc("b"), expected_version=0)
        assert info.value.actual == 1
        assert repository.store("cas", _doc("b"), expected_version=1).version == 2
        with pytest.raises(ConcurrencyError):
            repository.store("cas", _doc("c"), expected_version=1)
        fetched = repository.fetch("cas")
        assert fetched is not None and fetched.value == _doc("b")

    def test_fetch_many_returns_only_present_keys(self, repository: StateRepository) -> None:
        for i in range(5):
            repository.store(f"many:{i}", _doc({"i": i}))
        got = repository.fetch_many(["many:0", "many:3", "nope", "many:4"])
        assert set(got) == {"many:0", "many:3", "many:4"}
        assert got["many:3"].value == _doc({"i": 3})
        assert repository.fetch_many([]) == {}

    def test_store_many_stores_every_item_with_its_version(
        self, repository: StateRepository
    ) -> None:
        items = [WriteRequest(f"batch:{i:03}", _doc({"i": i})) for i in range(250)]
        items.append(WriteRequest("batch:explicit", _doc("x"), version=7))
        written = repository.store_many(items)
        assert len(written) == 251
        assert written["batch:explicit"].version == 7
        assert written["batch:000"].version == 1
        got = repository.fetch_many([i.key for i in items])
        assert {k: v.value for k, v in got.items()} == {i.key: i.value for i in items}
        again = repository.store_many([WriteRequest("batch:000", _doc("new"))])
        assert again["batch:000"].version == 2

    def test_delete_reports_existence(self, repository: StateRepository) -> None:
        repository.store("gone", _doc(1))
        assert repository.delete("gone") is True
        assert repository.fetch("gone") is None
        assert repository.delete("gone") is False

    def test_delete_many_counts_existing(self, repository: StateRepository) -> None:
        keys = [f"del:{i}" for i in range(30)]
        repository.store_many([WriteRequest(k, _doc(k)) for k in keys])
        assert repository.delete_many([*keys[:20], "del:missing"]) == 20
        assert set(repository.keys("del:*")) == set(keys[20:])
        assert repository.delete_many([]) == 0

    def test_stats_counts_keys(self, repository: StateRepository) -> None:
        repository.store_many([WriteRequest(f"s:{i}", _doc(i)) for i in range(7)])
        stats = repository.stats()
        assert isinstance(stats, TierStats)
        assert stats.key_count == 7
        assert stats.category is repository.category
        assert stats.backend == repository.backend

    def test_ping_answers(self, repository: StateRepository) -> None:
        assert repository.ping() is True

    # ----------------------------------------------------------------------- patterns

    def test_keys_glob_semantics(self, repository: StateRepository) -> None:
        keys = ["user:1", "user:12", "user:2", "user_x", "userAx", "a.b", "aXb", "p+q/r=s@t"]
        repository.store_many([WriteRequest(k, _doc(k)) for k in keys])
        assert sorted(repository.keys("user:?")) == ["user:1", "user:2"]
        assert sorted(repository.keys("user:*")) == ["user:1", "user:12", "user:2"]
        # '_' and '.' are literal, unlike in SQL LIKE and regexes
        assert sorted(repository.keys("user_*")) == ["user_x"]
        assert sorted(repository.keys("a.b")) == ["a.b"]
        assert sorted(repository.keys("p+q/*")) == ["p+q/r=s@t"]
        # matching is case-sensitive everywhere
        assert sorted(repository.keys("USER:*")) == []
        assert sorted(repository.keys("*")) == sorted(keys)

    @_IO_SETTINGS
    @given(keys=_keys_strategy, pattern=_pattern_strategy)
    def test_pattern_matches_exactly_the_glob_keys(
        self, repository: StateRepository, keys: list[str], pattern: str
    ) -> None:
        namespace = f"p{uuid.uuid4().hex[:6]}/"
        full = [namespace + k for k in keys]
        repository.store_many([WriteRequest(k, "1") for k in full])
        try:
            expected = {k for k in full if glob_to_regex(namespace + pattern).fullmatch(k)}
            assert set(repository.keys(namespace + pattern)) == expected
            assert set(repository.scan_keys(namespace + pattern)) == expected
        finally:
            repository.delete_many(full)

    def test_scan_keys_streams_what_keys_lists(self, repository: StateRepository) -> None:
        keys = [f"scan:{i:02d}" for i in range(40)] + ["user:1", "user:12", "user_x", "a.b"]
        repository.store_many([WriteRequest(k, "1") for k in keys])
        for pattern in ["*", "scan:*", "scan:1?", "user:?", "user_*", "a.b", "USER:*"]:
            streamed = repository.scan_keys(pattern)
            assert iter(streamed) is streamed, "scan_keys returns an iterator"
            assert set(streamed) == set(repository.keys(pattern)), pattern
        assert set(repository.scan_keys()) == set(keys)

    def test_patterns_with_many_stars_answer_promptly(self, repository: StateRepository) -> None:
        # A matcher that backtracks over placements of the stars (``*`` as ``.*``)
        # spends minutes on one key here, even on a key the pattern matches (the last
        # one, for the second pattern); a linear matcher takes microseconds.
        late_b, early_b = "a" * 199 + "b", "aaaaab" + "a" * 194
        keys = ["a" * 200, late_b, "b" + "a" * 199, "ab" * 100, early_b]
        repository.store_many([WriteRequest(k, "1") for k in keys])
        for pattern, expected in [
            ("*a*a*a*a*a*b", [late_b, "ab" * 100]),
            ("*a*a*a*a*a*b*", [late_b, "ab" * 100, early_b]),
        ]:
            started = time.perf_counter()
            found = sorted(repository.keys(pattern))
            seconds = time.perf_counter() - started
            assert found == sorted(expected), pattern
            assert seconds < 5, f"keys({pattern!r}) took {seconds:.1f} s over 5 keys"

    @_IO_SETTINGS
    @given(value=_json_documents)
    def test_any_json_document_round_trips(self, repository: StateRepository, value: Any) -> None:
        key = _fresh_key("rt")
        text = _doc(value)
        repository.store(key, text)
        fetched = repository.fetch(key)
        assert fetched is not None
        assert fetched.value == text
        assert json.loads(fetched.value) == json.loads(text)
        repository.delete(key)

    # ----------------------------------------------------------------------- conditional writes

    def test_store_copies_never_replaces_a_value_as_new_or_newer(
        self, repository: StateRepository
    ) -> None:
        absent, older, same, newer = (_fresh_key(n) for n in ("absent", "older", "same", "newer"))
        repository.store(older, _doc("v2"), version=2)
        repository.store(same, _doc("v5 here"), version=5)
        repository.store(newer, _doc("v9"), version=9)
        written = repository.store_copies(
            [WriteRequest(k, _doc(f"copy of {k}"), version=5) for k in (absent, older, same, newer)]
        )
        assert sorted(written) == sorted([absent, older])
        assert all(m.version == 5 for m in written.values())
        found = repository.fetch_many([absent, older, same, newer])
        assert {k: (v.value, v.metadata.version) for k, v in found.items()} == {
            absent: (_doc(f"copy of {absent}"), 5),
            older: (_doc(f"copy of {older}"), 5),
            same: (_doc("v5 here"), 5),
            newer: (_doc("v9"), 9),
        }
        assert written[absent].checksum == checksum_of(_doc(f"copy of {absent}"))

    def test_store_copies_needs_every_version(self, repository: StateRepository) -> None:
        with pytest.raises(InvalidRequestError, match="version"):
            repository.store_copies([WriteRequest(_fresh_key(), _doc(1))])
        assert repository.store_copies([]) == {}

    def test_delete_unchanged_removes_exactly_the_copies_given(
        self, repository: StateRepository
    ) -> None:
        kept, changed, gone, absent = (_fresh_key(n) for n in ("kept", "changed", "gone", "absent"))
        copies = [repository.store(k, _doc(k), version=3) for k in (kept, changed, gone)]
        seen = {
            k: StoredValue(k, _doc(k), m)
            for k, m in zip((kept, changed, gone), copies, strict=True)
        }
        repository.store(changed, _doc("rewritten"), version=3)  # same version, other value
        repository.delete(gone)
        ghost = StoredValue(absent, _doc(1), copies[0])
        assert repository.delete_unchanged([seen[kept], seen[changed], seen[gone], ghost]) == [kept]
        assert repository.fetch(kept) is None
        assert repository.fetch(changed).value == _doc("rewritten")  # type: ignore[union-attr]
        assert repository.delete_unchanged([]) == []

    def test_delete_stale_follows_the_fence(self, repository: StateRepository) -> None:
        names = ("older", "equal", "newer", "other", "mine", "later", "absent")
        keys = {n: _fresh_key(n) for n in names}
        for name in ("older", "equal", "newer", "other", "mine"):
            version = {"older": 4, "newer": 6}.get(name, 5)
            repository.store(keys[name], _doc(name), version=version)
        written_at = time.time() + 0.001
        time.sleep(0.01)
        repository.store(keys["later"], _doc("later"), version=1)  # stored after the write
        mine = checksum_of(_doc("mine"))
        fences = {
            # compare-and-set writes: the version alone decides
            keys["older"]: StaleCopy(5),  # older than the version: stale
            keys["equal"]: StaleCopy(5),  # same version: kept
            keys["newer"]: StaleCopy(5),  # newer: kept
            # last-writer-wins writes: every copy but the writer's own, stored before it
            keys["other"]: StaleCopy(5, mine, written_at),  # another value: stale
            keys["mine"]: StaleCopy(5, mine, written_at),  # the writer's own copy: kept
            keys["later"]: StaleCopy(5, mine, written_at),  # stored after the write: kept
            keys["absent"]: StaleCopy(5),
        }
        assert repository.delete_stale(fences) == 2
        assert sorted(repository.fetch_many(list(keys.values()))) == sorted(
            keys[n] for n in ("equal", "newer", "mine", "later")
        )
        assert repository.delete_stale({keys["newer"]: StaleCopy(6, mine, time.time() + 1)}) == 1
        assert repository.delete_stale({keys["equal"]: ANY_COPY}) == 1
        assert repository.delete_stale({}) == 0

    @_IO_SETTINGS
    @given(
        stored=st.integers(1, 8),
        fence=st.integers(1, 8),
        exact=st.booleans(),
        same_value=st.booleans(),
        before=st.booleans(),
    )
    def test_delete_stale_agrees_with_the_fence_rule(
        self,
        repository: StateRepository,
        stored: int,
        fence: int,
        exact: bool,
        same_value: bool,
        before: bool,
    ) -> None:
        key = _fresh_key("fence")
        metadata = repository.store(key, _doc("value"), version=stored)
        checksum = metadata.checksum if same_value else checksum_of(_doc("another"))
        written_at = metadata.stored_at + (60 if before else -60)
        rule = StaleCopy(fence, checksum, written_at) if exact else StaleCopy(fence)
        removes = rule.removes(stored, metadata.checksum, metadata.stored_at)
        assert repository.delete_stale({key: rule}) == int(removes)
        repository.delete(key)

    # ----------------------------------------------------------------------- bad input

    @pytest.mark.parametrize(
        "key", ["", "x" * 256, "has space", "star*", "q?", "br[a]ck", "back\\slash", "é", 12, None]
    )
    def test_invalid_keys_are_refused_by_name(self, repository: StateRepository, key: Any) -> None:
        with pytest.raises(InvalidKeyError) as info:
            repository.store(key, _doc(1))
        assert "key" in info.value.message.lower()
        with pytest.raises(InvalidKeyError):
            repository.fetch(key)

    @pytest.mark.parametrize("pattern", ["", "a b", "[ab]", "x\\*", 5])
    def test_invalid_patterns_are_refused(self, repository: StateRepository, pattern: Any) -> None:
        with pytest.raises(InvalidPatternError):
            list(repository.keys(pattern))

    @pytest.mark.parametrize("pattern", ["", "a b", "[ab]", "x\\*", 5])
    def test_scan_keys_refuses_a_bad_pattern_at_the_call(
        self, repository: StateRepository, pattern: Any
    ) -> None:
        with pytest.raises(InvalidPatternError):
            repository.scan_keys(pattern)  # before the first key is asked for

    def test_fetch_many_rejects_a_bare_string(self, repository: StateRepository) -> None:
        with pytest.raises(InvalidKeyError):
            repository.fetch_many("user:1")

    def test_category_is_a_state_category(self, repository: StateRepository) -> None:
        assert isinstance(repository.category, StateCategory)
