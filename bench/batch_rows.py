"""What the batch benchmarks share: their targets, the store they measure, the JSON
codec rows and the table rows comparing the store, its repository and the raw clients."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from importlib import import_module
from typing import Any

from .data import dumps
from .env import BenchEnv
from .harness import Row, compare
from .stores import build_bench_store

__all__ = [
    "COLD_KEYS",
    "RAW_TARGET",
    "REPOSITORY_TARGET",
    "S3_WORKERS",
    "Dumps",
    "Loads",
    "batch_rows",
    "best_raw",
    "decoded",
    "full_store",
    "note_codec",
    "orjson_codec",
    "orjson_rows",
    "write_requests",
]

RAW_TARGET = 1.3
REPOSITORY_TARGET = 1.5
#: S3StateRepository's default ``max_workers``; the raw side gets the same pool.
S3_WORKERS = 16
#: Keys per COLD batch in a full run (see the note ``batch_cold`` prints).
COLD_KEYS = 1000
_REPO_CALL = {"batch_get": "fetch_many", "batch_set": "store_many"}


def full_store(env: BenchEnv, name: str) -> tuple[Any, str]:
    """A store on Redis, a new PostgreSQL database and a new bucket; and the database URL."""
    url = env.database(name)
    return build_bench_store(env, name, database_url=url, s3=True), url


Loads = Callable[[str | bytes], Any]
Dumps = Callable[[Any], str]


def orjson_codec() -> tuple[Loads, Dumps] | None:
    """orjson's ``loads`` and a ``dumps`` giving :func:`~bench.data.dumps`'s text; None
    when orjson is not installed (its rows are then left out)."""
    try:
        import orjson
    except ImportError:
        return None

    def dumps_sorted(value: Any) -> str:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()

    return orjson.loads, dumps_sorted


def note_codec(env: BenchEnv) -> None:
    try:  # the codec module is newer than this benchmark
        backend = getattr(import_module("flask_tiered_state.json_codec"), "BACKEND", "json")
    except ImportError:
        backend = "json"
    library = "json (stdlib)" if backend == "json" else str(backend)
    if orjson_codec() is None:
        rows = "orjson is not installed, so the rows 'with orjson' are left out."
    else:
        rows = (
            "The HOT and WARM batch rows 'with orjson' repeat the raw side with orjson.loads "
            "/ orjson.dumps (sorted keys): what the codec alone is worth."
        )
    text = f"JSON codec of the library: {library}. {rows}"
    if text not in env.notes:
        env.note(text)


def orjson_rows(
    samples: Mapping[str, Sequence[float]], text: str, same_with_json: str
) -> list[tuple[str, str, str]]:
    """Info rows (see :func:`batch_rows`) for the ``orjson`` variant, when it ran."""
    if "orjson" not in samples:
        return []
    return [
        (f"TieredStore vs {text}", "store", "orjson"),
        (f"{text} vs the same with json", "orjson", same_with_json),
    ]


def decoded(found: Mapping[str, Any]) -> dict[str, Any]:
    return {key: json.loads(stored.value) for key, stored in found.items()}


def write_requests(
    values: Mapping[str, Any], ttl: int | None = None, version: int | None = None
) -> Any:
    from flask_tiered_state.storage.base import WriteRequest

    return [WriteRequest(k, dumps(v), version=version, ttl_seconds=ttl) for k, v in values.items()]


def best_raw(samples: Mapping[str, Sequence[float]], names: Sequence[str]) -> str:
    """The raw variant with the lowest median round."""
    return min(names, key=lambda name: statistics.median(samples[name]))


def batch_rows(
    tier: str,
    op: str,
    samples: Mapping[str, Sequence[float]],
    size: int,
    raws: Mapping[str, str],
    extra: Sequence[tuple[str, str, str]] = (),
) -> list[Row]:
    """Store vs the best raw variant (``raws``: name -> description), store vs
    repository, repository vs best raw, then ``extra`` info rows (text, a, b)."""
    best = best_raw(samples, list(raws))
    unit = f"{size} keys"
    label = f"{tier} {op} {size}"
    rows = [
        compare(f"{label}: TieredStore vs best raw ({raws[best]})", samples, "store", best,
                unit=unit, target=RAW_TARGET),
        compare(f"{label}: TieredStore vs repository {_REPO_CALL[op]}", samples, "store",
                "repository", unit=unit, target=REPOSITORY_TARGET),
        compare(f"{label}: repository {_REPO_CALL[op]} vs best raw", samples, "repository",
                best, unit=unit),
    ]  # fmt: skip
    rows += [
        compare(f"{label}: {raws[name]} vs best raw", samples, name, best, unit=unit)
        for name in raws
        if name != best
    ]
    rows += [compare(f"{label}: {text}", samples, a, b, unit=unit) for text, a, b in extra]
    return rows
