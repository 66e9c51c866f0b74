"""What the dashboard shows of the backups and checkpoints: read from the manifests at
the app's backup destination (``TIERED_STATE_BACKUP_URL``, else
``<instance_path>/backups``, as ``flask state backup`` uses it), never verified here.

A page view does bounded work: it lists the archive ids once and reads at most
:data:`MAX_MANIFESTS` manifests, newest first (ids sort by creation time). Older pages
are reached with a cursor (``before=<backup id>``), so every page costs the same.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..app_state import AppState
from ..errors import ArchiveCorruptError, ArchiveNotFoundError, TieredStateError
from ..http_errors import public_error
from ..ops.archive import ArchiveReader, Destination, check_archive_id, open_destination
from ..ops.backup import BACKUP_KIND
from ..ops.capture import KIND as CHECKPOINT_KIND

__all__ = ["MAX_MANIFESTS", "PER_PAGE", "Listing", "destination_of", "read_listing"]

logger = logging.getLogger(__name__)

#: Backups per page.
PER_PAGE = 50
#: The most manifests one page view reads.
MAX_MANIFESTS = 500


@dataclass
class Listing:
    """One page of backups (newest first) and the newest checkpoint found."""

    destination: str
    backups: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: dict[str, Any] | None = None
    #: The id to pass as ``before=`` for the next (older) page, or None: no older ones.
    older: str | None = None
    #: True when the scan stopped at MAX_MANIFESTS before reaching the oldest archive.
    truncated: bool = False
    #: Archives whose manifest is damaged (left out; ``flask state backup verify`` names
    #: the damage).
    damaged: list[str] = field(default_factory=list)
    #: Why the destination could not be read, or None.
    error: str | None = None


def destination_of(state: AppState) -> str:
    """The app's backup destination, as the ``flask state backup`` commands pick it."""
    return state.settings.backup_url or os.path.join(state.instance_path, "backups")


def _shown_url(destination: Destination | str) -> str:
    """The destination for the page: without its query (an S3 ``endpoint_url`` names a
    host)."""
    url = destination.url if not isinstance(destination, str) else destination
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query="")) if parts.scheme == "s3" else url


def _backup_row(manifest: dict[str, Any]) -> dict[str, Any]:
    sections = manifest.get("sections") or {}
    size = 0
    for section in sections.values():
        for chunk in section.get("chunks", []) if isinstance(section, dict) else []:
            size += int(chunk.get("bytes", 0))
    counts = manifest.get("counts") or {}
    options = manifest.get("options") or {}
    return {
        "id": manifest.get("backup_id") or manifest.get("archive_id"),
        "archive_id": manifest.get("archive_id"),
        "kind": "incremental" if manifest.get("incremental") else "full",
        "parent_id": manifest.get("parent_id"),
        "created_at": manifest.get("created_at"),
        "records": counts.get("records", 0),
        "history": counts.get("history"),
        "events": counts.get("events"),
        "tiers": options.get("tiers") or [],
        "bytes": size,
        # The manifest records a verification only when a tool wrote one; nothing is
        # verified on a page view (that reads every chunk).
        "verified_at": manifest.get("verified_at"),
    }


def _checkpoint_row(manifest: dict[str, Any]) -> dict[str, Any]:
    counts = manifest.get("counts") or {}
    cut = manifest.get("cut") or {}
    return {
        "id": manifest.get("archive_id"),
        "created_at": manifest.get("created_at"),
        "taken_at": cut.get("taken_at") if isinstance(cut, dict) else None,
        "scope": manifest.get("scope"),
        "label": manifest.get("label"),
        "records": counts.get("records", 0),
        "by_tier": counts.get("by_tier") or {},
    }


def read_listing(
    state: AppState,
    *,
    before: str | None = None,
    per_page: int = PER_PAGE,
    max_manifests: int = MAX_MANIFESTS,
) -> Listing:
    """Up to ``per_page`` backups older than the archive ``before`` (newest first; all
    from the newest when None), and, on the first page, the newest checkpoint. A
    destination that cannot be read gives a Listing whose ``error`` says so (logged
    with the details).

    :raises InvalidRequestError: ``before`` is not an archive id.
    """
    if before is not None:
        check_archive_id(before)
    target = destination_of(state)
    listing = Listing(destination=_shown_url(target))
    try:
        destination = open_destination(target)
        listing.destination = _shown_url(destination)
        ids = sorted(destination.archive_ids(), reverse=True)
        read = 0
        checkpoint_wanted = before is None  # the first page shows the newest checkpoint
        if before is not None:
            ids = [i for i in ids if i < before]  # ids sort by creation time
        for archive_id in ids:
            wants_backup = len(listing.backups) <= per_page
            if not wants_backup and not checkpoint_wanted:
                break
            if read >= max_manifests:
                listing.truncated = True
                break
            read += 1
            try:
                manifest = ArchiveReader(destination, archive_id).manifest
            except ArchiveNotFoundError:
                continue  # being written, or a crashed run: not listed
            except ArchiveCorruptError:
                listing.damaged.append(archive_id)
                continue
            kind = manifest.get("kind")
            if kind == BACKUP_KIND and wants_backup:
                listing.backups.append(_backup_row(manifest))
            elif kind == CHECKPOINT_KIND and checkpoint_wanted:
                listing.checkpoint = _checkpoint_row(manifest)
                checkpoint_wanted = False
    except TieredStateError as exc:
        message, _ = public_error(exc)
        logger.warning("The dashboard cannot read the backups at %s: %s", listing.destination,
                       exc.message)  # fmt: skip
        listing.error = (
            f"The backup destination {listing.destination} cannot be read right now "
            f"({message if exc.http_status < 500 else 'see the log for the cause'}). "
            "Backups and checkpoints are listed again once it answers."
        )
        listing.backups = []
        listing.checkpoint = None
        return listing
    if len(listing.backups) > per_page:
        listing.backups = listing.backups[:per_page]
        listing.older = str(listing.backups[-1]["archive_id"])
    return listing
