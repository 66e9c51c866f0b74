"""The listings of :class:`~.s3_repository.S3StateRepository`: which keys of a batch
exist (for ``store_many`` and ``delete_many``), ``keys`` and ``stats``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from .base import TierStats
from .keys import glob_literal_prefix, glob_to_regex, validate_pattern
from .s3_connection import DRIVER_ERRORS, S3TierBase

__all__ = ["DELETE_CHUNK", "LIST_FOR_NEW_KEYS", "LIST_PAGE_SIZE", "S3Listing"]

DELETE_CHUNK = 1000
#: Page size of the listing ``delete_many`` counts with (two pages per chunk at most).
LIST_PAGE_SIZE = 1000
#: store_many lists the key range of at least this many unversioned keys it does not
#: remember, so that the new ones cost one PUT (instead of a HEAD and a PUT).
LIST_FOR_NEW_KEYS = 8


class S3Listing(S3TierBase):
    """The listings of :class:`~.s3_repository.S3StateRepository`."""

    def _new_keys(self, keys: list[str]) -> set[str]:
        """Which of ``keys`` a listing of their key range (one per chunk) did not find.

        Such a key's next version is 1, so it is written without the HEAD that would
        read its version; below :data:`LIST_FOR_NEW_KEYS` keys the HEADs are cheaper.
        """
        if len(keys) < LIST_FOR_NEW_KEYS:
            return set()
        names, cut = sorted(self.prefix + k for k in keys), len(self.prefix)
        new: set[str] = set()
        for start in range(0, len(names), DELETE_CHUNK):
            chunk = names[start : start + DELETE_CHUNK]
            present = self._existing(chunk, "to write")
            new.update(n[cut:] for n in chunk if n not in present)
        return new

    def _existing(self, names: list[str], purpose: str = "to delete") -> set[str]:
        """Which of the sorted object names exist: one listing of their key range (at most
        two pages, so sparse ranges stay cheap), then HEADs for names past the listing."""
        wanted, last = set(names), names[-1]
        found: set[str] = set()
        listed_to: str | None = None
        prefix = os.path.commonprefix(names)  # noqa: RUF071 - a string prefix, not a path
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if len(names[0]) > 1:
            kwargs["StartAfter"] = names[0][:-1]  # sorts just before names[0]
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            pages = paginator.paginate(**kwargs, PaginationConfig={"PageSize": LIST_PAGE_SIZE})
            for number, page in enumerate(pages, 1):
                listed = [o["Key"] for o in page.get("Contents", [])]
                found.update(wanted.intersection(listed))
                listed_to = listed[-1] if listed else None
                if not page.get("IsTruncated") or (listed_to or "") >= last:
                    return found
                if number == 2:
                    break
        except DRIVER_ERRORS as exc:
            raise self._unavailable(exc, f"listing keys {purpose}") from exc
        rest = [n[len(self.prefix) :] for n in names if listed_to is None or n > listed_to]
        heads = self._executor().map(self._head, rest)
        return found | {self.prefix + k for k, (_, etag) in zip(rest, heads, strict=True) if etag}

    # -- scans -----------------------------------------------------------------

    def keys(self, pattern: str = "*") -> Iterator[str]:
        """Matching keys, listed lazily under the pattern's literal prefix."""
        regex, cut = glob_to_regex(validate_pattern(pattern)), len(self.prefix)
        names = self._objects(self.prefix + glob_literal_prefix(pattern), "listing keys")
        return filter(regex.fullmatch, (obj["Key"][cut:] for obj in names))

    def _objects(self, list_prefix: str, what: str) -> Iterator[Any]:
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=list_prefix):
                yield from page.get("Contents", [])
        except DRIVER_ERRORS as exc:
            raise self._unavailable(exc, what) from exc

    def stats(self) -> TierStats:
        """Object count and bytes under the prefix; lists every object (O(objects))."""
        count = size = 0
        for obj in self._objects(self.prefix, "listing objects for stats"):
            count, size = count + 1, size + obj["Size"]
        extra = {"bucket": self.bucket, "prefix": self.prefix, "endpoint_url": self.endpoint_url,
                 "storage_class": self.storage_class}  # fmt: skip
        return TierStats(self.backend, self.category, count, size, extra)
