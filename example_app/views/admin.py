"""``/api/admin``: operations of the demo (archiving old failed payments)."""

from __future__ import annotations

from flask import Blueprint
from flask.typing import ResponseReturnValue

from ..archive import archivable_transactions, archive_transactions
from ..http import load_body
from ..schemas import ArchiveRequest
from .common import manager

__all__ = ["admin"]

admin = Blueprint("admin", __name__, url_prefix="/admin")


@admin.post("/archive-transactions")
def archive() -> ResponseReturnValue:
    body = load_body(ArchiveRequest())
    candidates = archivable_transactions(manager(), body["older_than_days"], limit=body["limit"])
    moved = archive_transactions(manager(), candidates)
    return {
        "older_than_days": body["older_than_days"],
        "candidates": len(candidates),
        "archived": len(moved),
        "ids": moved[:100],
    }
