"""``keys()`` on Redis servers whose ``SCAN MATCH`` is exponential (CVE-2022-36021).

Redis before 6.0.18, 6.2.11 and 7.0.9 can hang on a pattern of many stars; on such a
server the repository sends only the glob's literal prefix and ``*`` and filters in
Python. The version decision is a pure function; the server used here (7.0.15 or later)
is fixed, so the old versions are what ``INFO server`` is made to report -- a real server
cannot be made older on demand -- and the scans run on the real server either way.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_tiered_state.errors import TierUnavailableError
from flask_tiered_state.storage.redis import RedisStateRepository
from flask_tiered_state.storage.redis.repository import match_is_exponential


@pytest.mark.parametrize(
    ("version", "exponential"),
    [
        ("2.8.24", True),
        ("5.0.14", True),
        ("6.0.17", True),
        ("6.0.18", False),
        ("6.0.20", False),
        ("6.1.9", True),  # an unstable line, never fixed
        ("6.2.0", True),
        ("6.2.10", True),
        ("6.2.11", False),
        ("6.2.14", False),
        ("7.0.0", True),
        ("7.0.8", True),
        ("7.0.9", False),
        ("7.0.15", False),
        ("7.1.240", True),  # unstable builds before 7.2
        ("7.2.0", False),
        ("7.4.2", False),
        ("8.0.0", False),
        ("10.1.0", False),
        ("7.0.9-rc1", False),
        ("255.255.255", False),
        (None, True),  # not reported
        ("", True),
        ("unknown", True),
        ("7.0", True),
        (7, True),
    ],
)
def test_which_versions_match_in_exponential_time(version: object, exponential: bool) -> None:
    assert match_is_exponential(version) is exponential


# -- on the real server ---------------------------------------------------------------------

KEYS = [
    "state:alice", "state:alice.2", "state:bob", "state:a-b_c", "state:aaab", "state:x/y@z",
    "state:", "stat", "session:alice", "a+b=c", "a.b", "zz",
]  # fmt: skip
PATTERNS = [
    "*", "state:*", "state:a*", "state:?ob", "*a*a*a*a*a*b", "*alice*", "a?b*", "state:alice",
    "st*:*", "*:*", "?", "??", "a+b=c", "zz*", "nothing*",
]  # fmt: skip


class ScanSpy:
    """Records the MATCH of every SCAN the repository sends, and the INFO calls."""

    def __init__(self, repo: RedisStateRepository, monkeypatch: pytest.MonkeyPatch) -> None:
        self.matches: list[str] = []
        self.infos: list[str] = []
        self.version: Any = None  # None: the server's own answer
        self.info_error: Exception | None = None
        scan, info = repo.client.scan, repo.client.info

        def spy_scan(*args: Any, **kwargs: Any) -> Any:
            if not kwargs.get("cursor"):  # a listing's first SCAN
                self.matches.append(kwargs["match"])
            return scan(*args, **kwargs)

        def spy_info(section: str | None = None, *args: Any) -> Any:
            self.infos.append(str(section))
            if section == "server" and self.info_error is not None:
                raise self.info_error
            answer = info(section, *args)
            if section == "server" and self.version is not None:
                answer = {**answer, "redis_version": self.version}
            return answer

        monkeypatch.setattr(repo.client, "scan", spy_scan)
        monkeypatch.setattr(repo.client, "info", spy_info)


@pytest.fixture
def make_repo(
    redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., tuple[RedisStateRepository, ScanSpy]]]:
    made: list[RedisStateRepository] = []

    def make(version: Any = None, suffix: str = "") -> tuple[RedisStateRepository, ScanSpy]:
        repo = RedisStateRepository(redis_url, key_prefix=redis_prefix + suffix)
        made.append(repo)
        spy = ScanSpy(repo, monkeypatch)
        spy.version = version
        for key in KEYS:
            repo.store(key, '{"k": 1}')
        return repo, spy

    yield make
    for repo in made:
        repo.close()


def expected(pattern: str) -> set[str]:
    return {key for key in KEYS if fnmatch.fnmatchcase(key, pattern)}


@pytest.mark.redis
@pytest.mark.parametrize("old", ["6.2.6", "7.0.8", "6.0.16", "5.0.7"])
def test_an_old_server_gets_only_the_literal_prefix(
    make_repo: Callable[..., tuple[RedisStateRepository, ScanSpy]], redis_prefix: str, old: str
) -> None:
    repo, spy = make_repo(old)
    assert set(repo.keys("state:a*a*a*b")) == {"state:aaab"}
    assert spy.matches == [f"{redis_prefix}state:a*"]
    assert set(repo.keys("*a*a*a*a*b")) == expected("*a*a*a*a*b") == {"state:aaab"}
    assert spy.matches[-1] == f"{redis_prefix}*"
    assert set(repo.keys("?ta*")) == expected("?ta*")
    assert spy.matches[-1] == f"{redis_prefix}*"


@pytest.mark.redis
def test_a_fixed_server_gets_the_glob(
    make_repo: Callable[..., tuple[RedisStateRepository, ScanSpy]],
    redis_prefix: str,
    redis_url: str,
) -> None:
    with redis.Redis.from_url(redis_url) as client:
        server = client.info("server")["redis_version"]
    if match_is_exponential(server):
        pytest.skip(f"the Redis here ({server}) is itself vulnerable")
    repo, spy = make_repo()
    assert set(repo.keys("state:a*a*a*b")) == {"state:aaab"}
    assert spy.matches == [f"{redis_prefix}state:a*a*a*b"]


@pytest.mark.redis
@pytest.mark.parametrize("pattern", PATTERNS)
def test_old_and_fixed_servers_list_the_same_keys(
    make_repo: Callable[..., tuple[RedisStateRepository, ScanSpy]], pattern: str
) -> None:
    fixed, _ = make_repo("7.0.15")
    old, spy = make_repo("6.2.6")
    assert set(old.keys(pattern)) == set(fixed.keys(pattern)) == expected(pattern)
    assert all(match.endswith("*") for match in spy.matches)


@pytest.mark.redis
def test_a_prefix_with_glob_characters_stays_literal(
    make_repo: Callable[..., tuple[RedisStateRepository, ScanSpy]], redis_prefix: str
) -> None:
    plain, _ = make_repo("6.2.6", suffix="plain:")
    odd, spy = make_repo("6.2.6", suffix="[a]*?\\^:")
    for pattern in ("*", "state:*", "?ta*", "*b"):
        assert set(odd.keys(pattern)) == set(plain.keys(pattern)) == expected(pattern)
    assert spy.matches[0] == redis_prefix + "\\[a\\]\\*\\?\\\\\\^:*"


@pytest.mark.redis
def test_the_version_is_read_once(
    make_repo: Callable[..., tuple[RedisStateRepository, ScanSpy]],
) -> None:
    repo, spy = make_repo("6.2.6")
    for pattern in PATTERNS:
        list(repo.keys(pattern))
    assert spy.infos == ["server"]


@pytest.mark.redis
def test_a_server_that_refuses_info_is_treated_as_old(
    make_repo: Callable[..., tuple[RedisStateRepository, ScanSpy]], redis_prefix: str
) -> None:
    repo, spy = make_repo()
    spy.info_error = redis.ResponseError("NOPERM this user has no permissions to run 'info'")
    assert set(repo.keys("state:a*b")) == expected("state:a*b") == {"state:aaab"}
    assert spy.matches == [f"{redis_prefix}state:a*"]


@pytest.mark.redis
def test_a_lost_connection_while_reading_the_version_is_an_outage_and_not_remembered(
    make_repo: Callable[..., tuple[RedisStateRepository, ScanSpy]], redis_prefix: str
) -> None:
    repo, spy = make_repo()
    spy.info_error = redis.ConnectionError("Connection reset by peer")
    with pytest.raises(TierUnavailableError):
        list(repo.keys("state:*"))
    spy.info_error = None
    spy.version = "6.2.6"
    assert set(repo.keys("state:a*b")) == expected("state:a*b")
    assert spy.matches == [f"{redis_prefix}state:a*"]


_glob = st.text(alphabet="ab*?:.", min_size=1, max_size=12)


@pytest.fixture
def pair(
    make_repo: Callable[..., tuple[RedisStateRepository, ScanSpy]],
) -> tuple[RedisStateRepository, RedisStateRepository]:
    """A repository that believes its server fixed, and one that believes it old."""
    return make_repo("7.0.15")[0], make_repo("6.2.6")[0]


@pytest.mark.redis
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pattern=st.text(alphabet="ab*?:.", min_size=1, max_size=12))
def test_any_glob_lists_the_same_keys_on_both(
    pair: tuple[RedisStateRepository, RedisStateRepository], pattern: str
) -> None:
    fixed, old = pair  # the keys do not change between examples
    assert set(old.keys(pattern)) == set(fixed.keys(pattern)) == expected(pattern)
