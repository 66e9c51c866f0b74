"""The processes of the tier directory's race test (spawned: a fresh interpreter each)."""

from __future__ import annotations

import multiprocessing
import random
import time
import traceback
from dataclasses import dataclass
from typing import Any

from flask_tiered_state.storage.factory import build_store
from flask_tiered_state.storage.store import TieredStore
from tests.conftest import s3_url

#: multiprocessing context of the workers: a fresh interpreter, no inherited sockets.
CONTEXT = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class Where:
    """The servers and names the test's stores share."""

    redis_url: str
    key_prefix: str
    database_url: str
    s3_bucket: str
    s3_endpoint_url: str


def open_store(where: Where) -> TieredStore:
    return build_store(
        hot_url=where.redis_url,
        key_prefix=where.key_prefix,
        warm_url=where.database_url,
        cold_url=s3_url(where.s3_bucket, where.s3_endpoint_url),
    )


def hot_writer(where: Where, keys: list[str], seconds: float, pause: float, out: Any) -> None:
    """Write a random half of the keys HOT-home, round after round (``pause`` seconds
    apart, so that moves win some races), for ``seconds``; puts each key's last
    acknowledged round."""
    errors: list[str] = []
    rounds = 0
    last: dict[str, int] = {}
    chooser = random.Random(7)
    try:
        with open_store(where) as store:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                rounds += 1
                chosen = chooser.sample(keys, len(keys) // 2)
                store.batch_set(
                    {key: {"round": rounds} for key in chosen}, category="hot", ttl_seconds=600
                )
                last.update(dict.fromkeys(chosen, rounds))
                time.sleep(pause)
    except Exception:
        errors.append(traceback.format_exc())
    out.put({"rounds": rounds, "last": last, "errors": errors})


def mover(where: Where, keys: list[str], stop: Any, out: Any) -> None:
    """Demote every key to COLD and promote it back, until ``stop``; puts the counts."""
    errors: list[str] = []
    demoted = promoted = 0
    try:
        with open_store(where) as store:
            while not stop.is_set():
                demoted += store.batch_demote(keys)
                promoted += store.batch_promote(keys)
    except Exception:
        errors.append(traceback.format_exc())
    out.put({"demoted": demoted, "promoted": promoted, "errors": errors})
