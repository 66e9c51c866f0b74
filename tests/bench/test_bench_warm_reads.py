"""The raw side of the WARM read benchmarks does the library's integrity check: it reads
each value's checksum and refuses a value that does not match it, as the WARM tier does
(issue 16: the comparator is the same work done by hand). No timing is asserted here."""

from __future__ import annotations

import hashlib
import io
import math

import pytest

from bench.batch import RawPostgres, integrity_digests
from bench.env import BenchEnv
from bench.harness import Settings
from bench.runner import ALL, run
from bench.storage_tiers import WARM_READ_TARGET, CoreReader, IntegrityMismatch, checked_loads
from bench.stores import build_bench_store


def test_checked_loads_decodes_a_matching_value_and_refuses_another() -> None:
    text = '{"a":1,"b":"ü"}'
    checksum = hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert checked_loads("k", text, checksum) == {"a": 1, "b": "ü"}
    with pytest.raises(IntegrityMismatch, match="'k' does not match its checksum"):
        checked_loads("k", '{"a":2,"b":"ü"}', checksum)


def test_every_integrity_candidate_gives_a_stable_hex_digest() -> None:
    digests = integrity_digests()
    assert {"sha256", "blake2b-16", "blake2b-32"} <= set(digests)
    lengths = {"sha256": 64, "blake2b-16": 32, "blake2b-32": 64, "xxh3_128": 32}
    for name, digest in digests.items():
        value = digest(b"value")
        assert value == digest(b"value") != digest(b"valuf")
        assert len(value) == lengths[name] and int(value, 16) >= 0


def test_the_raw_warm_reads_refuse_a_value_that_fails_its_checksum(
    redis_url: str, postgres_url: str
) -> None:
    import psycopg

    from flask_tiered_state.errors import IntegrityError
    from flask_tiered_state.storage.base import StateCategory

    with BenchEnv(redis_url=redis_url) as env:
        url = env.database("integrity")
        store = build_bench_store(env, "integrity", database_url=url)
        store.batch_set({"k:1": {"a": 1}, "k:2": {"a": 2}}, category=StateCategory.WARM)
        table = store.warm.table.name
        core, raw = CoreReader(env, url, table), RawPostgres(env, url, table)
        assert core.read_checked("k:2") == {"a": 2}
        assert raw.fetch_checked(["k:1", "k:2"]) == {"k:1": {"a": 1}, "k:2": {"a": 2}}
        core.end_round()
        with psycopg.connect(env.libpq_url(url), autocommit=True) as conn:
            conn.execute(f'UPDATE "{table}" SET value = %s WHERE key = %s', ('{"a":9}', "k:2"))
        with pytest.raises(IntegrityMismatch):
            core.read_checked("k:2")
        with pytest.raises(IntegrityMismatch):
            raw.fetch_checked(["k:1", "k:2"])
        assert core.read("k:2") == {"a": 9}  # the unchecked read, for contrast
        store.cache.clear()
        with pytest.raises(IntegrityError):  # what the raw side mirrors
            store.get("k:2")


def test_quick_get_warm_holds_the_store_to_the_checked_read(
    redis_url: str, postgres_url: str
) -> None:
    with BenchEnv(redis_url=redis_url) as env:
        rows = run([b for b in ALL if b.name == "get_warm"], Settings(quick=True), env,
                   log=io.StringIO())  # fmt: skip
    first = rows[0]
    assert "Core SELECT value, checksum + sha256 check + json.loads" in first.benchmark
    assert first.target == WARM_READ_TARGET == 1.2
    one_select = [r for r in rows if "vs one SQLAlchemy Core SELECT" in r.benchmark]
    assert len(one_select) == 1 and one_select[0].target is None
    for row in rows:
        assert row.status is None and row.ratio is not None and math.isfinite(row.ratio)
