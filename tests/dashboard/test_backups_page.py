"""The Backups page and the overview's last backup / checkpoint card: what the manifests at
the backup destination say, newest first, with paging; a destination that cannot be read
is a message on the page, not an error."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_tiered_state.dashboard import backups as listing_module
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.extension import get_app_state
from flask_tiered_state.ops.archive import ArchiveWriter
from flask_tiered_state.ops.backup import BackupManager
from flask_tiered_state.ops.capture import StateCapture
from tests.conftest import free_port, s3_url

from .conftest import build_app, populate
from .test_pages import html


def backup_ids(page: str) -> list[str]:
    if 'id="backups"' not in page:
        return []
    table = page.split('id="backups"', 1)[1].split("</table>", 1)[0]
    return re.findall(r'<tr data-id="([^"]+)">', table)


def row(page: str, backup_id: str) -> list[str]:
    """The cells of one backup's row, tags stripped."""
    text = page.split(f'<tr data-id="{backup_id}">', 1)[1].split("</tr>", 1)[0]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", text, re.S)
    return [re.sub(r"<[^>]+>", "", c).strip() for c in cells]


@pytest.fixture
def app(backend: dict[str, Any], tmp_path: Path) -> Iterator[Flask]:
    """A populated app (each backend) whose backups go to a directory of this test."""
    app = build_app(tmp_path, TIERED_STATE_BACKUP_URL=str(tmp_path / "backups"), **backend)
    populate(get_app_state(app).manager)
    yield app
    get_app_state(app).close()
    StateManager.reset_instance()


def backups_of(app: Flask) -> BackupManager:
    state = get_app_state(app)
    return BackupManager(manager=state.manager, destination=state.settings.backup_url or "")


def test_no_backups_says_how_to_create_one(app: Flask) -> None:
    page = html(app, "/dash/backups")
    assert backup_ids(page) == []
    assert "No backups yet" in page and "flask state backup create" in page
    assert "No checkpoint yet" in page and "flask state checkpoint create" in page
    overview = html(app, "/dash/")
    card = overview.split('id="archives"', 1)[1].split("</section>", 1)[0]
    assert "Last backup:" in card and "flask state backup create" in card
    assert "Last checkpoint:" in card and "flask state checkpoint create" in card


def test_one_backup_is_listed_with_its_manifest_counts(app: Flask) -> None:
    manager = get_app_state(app).manager
    made = backups_of(app).create_backup(include_history=True)
    page = html(app, "/dash/backups")
    assert backup_ids(page) == [made["backup_id"]]
    cells = row(page, made["backup_id"])
    records = made["counts"]["records"]
    assert records == 14  # 12 users, a subscription, a session
    assert cells[1] == "full"
    assert cells[3] == str(records)
    assert cells[4] == str(made["counts"]["history"]) and int(cells[4]) > records
    assert cells[5] == "—"  # events were not included
    assert cells[6] == "hot, warm, cold"
    assert re.fullmatch(r"\d+(\.\d)? (B|KiB|MiB)", cells[7]), cells[7]
    assert cells[8] == "not recorded"  # nothing is verified on a page view
    assert "No backups yet" not in page
    overview = html(app, "/dash/")
    card = overview.split('id="archives"', 1)[1].split("</section>", 1)[0]
    assert made["backup_id"] in card and f"{records} states" in card
    assert manager.get_state("user-01") is not None  # the page changed nothing


def test_several_backups_newest_first_with_the_last_checkpoint(app: Flask) -> None:
    manager = get_app_state(app).manager
    backups = backups_of(app)
    full = backups.create_backup()
    manager.update_state("user-05", {"data": {"plan": "team"}}, "update")
    incremental = backups.create_backup(incremental=True)
    capture = StateCapture.for_manager(manager, get_app_state(app).settings.backup_url or "")
    checkpoint = capture.capture_full_state(label="before the migration")
    last = backups.create_backup(tiers=("warm",))
    page = html(app, "/dash/backups")
    assert backup_ids(page) == [last["backup_id"], incremental["backup_id"], full["backup_id"]]
    assert row(page, incremental["backup_id"])[1].startswith("incremental")
    # What its manifest counts (an incremental one overlaps its parent by a margin).
    assert row(page, incremental["backup_id"])[3] == str(incremental["counts"]["records"])
    assert row(page, last["backup_id"])[6] == "warm"
    section = page.split('id="checkpoint"', 1)[1].split("</section>", 1)[0]
    assert checkpoint["archive_id"] in section and "before the migration" in section
    assert str(checkpoint["counts"]["records"]) in section
    overview = html(app, "/dash/")
    card = overview.split('id="archives"', 1)[1].split("</section>", 1)[0]
    assert last["backup_id"] in card and checkpoint["archive_id"] in card


def test_pages_of_backups_follow_an_older_cursor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = build_app(tmp_path, TIERED_STATE_BACKUP_URL=str(tmp_path / "backups"))
    try:
        monkeypatch.setattr(listing_module, "PER_PAGE", 2)
        get_app_state(app).manager.register_state("user-x", "user", {"name": "X"})
        backups = backups_of(app)
        made = [backups.create_backup()["backup_id"] for _ in range(5)]
        newest_first = made[::-1]
        seen: list[str] = []
        url = "/dash/backups"
        for _ in range(3):
            page = html(app, url)
            seen += backup_ids(page)
            older = re.search(r'rel="next" href="([^"]+)"', page)
            if older is None:
                break
            url = older.group(1).replace("&amp;", "&")
        assert seen == newest_first
        assert 'rel="next"' not in page and 'rel="first"' in page
        assert html(app, "/dash/backups?before=../etc", 400)  # not an archive id
    finally:
        get_app_state(app).close()
        StateManager.reset_instance()


def test_incomplete_and_damaged_archives_are_not_listed(app: Flask) -> None:
    destination = get_app_state(app).settings.backup_url or ""
    made = backups_of(app).create_backup()
    crashed = ArchiveWriter(destination, "20000101T000000000000Z-000000", "backup")
    crashed.add("records", [{"key": "a"}])  # never closed: no manifest
    damaged = Path(destination) / "20000101T000000000001Z-000001"
    damaged.mkdir()
    (damaged / "manifest.json").write_text("{not json")
    page = html(app, "/dash/backups")
    assert backup_ids(page) == [made["backup_id"]]
    assert "20000101T000000000001Z-000001" in page.split('id="damaged"', 1)[1]


def test_an_unreadable_destination_is_a_message_not_an_error(tmp_path: Path) -> None:
    dead = s3_url("backups", f"http://127.0.0.1:{free_port()}")
    app = build_app(tmp_path, TIERED_STATE_BACKUP_URL=dead)
    try:
        started = time.monotonic()
        page = html(app, "/dash/backups")
        assert "cannot be read right now" in page
        assert 'id="destination-error"' in page and "s3://backups/" in page
        assert "127.0.0.1" not in page  # no endpoint host on the page
        overview = html(app, "/dash/")
        assert "cannot be read right now" in overview.split('id="archives"', 1)[1]
        assert time.monotonic() - started < 30
    finally:
        get_app_state(app).close()
        StateManager.reset_instance()


def test_backups_on_s3_are_listed(tmp_path: Path, s3_bucket: str, s3_endpoint_url: str) -> None:
    url = s3_url(s3_bucket, s3_endpoint_url, "dashboard-backups/")
    app = build_app(tmp_path, TIERED_STATE_BACKUP_URL=url)
    try:
        get_app_state(app).manager.register_state("user-x", "user", {"name": "X"})
        made = backups_of(app).create_backup()
        page = html(app, "/dash/backups")
        assert backup_ids(page) == [made["backup_id"]]
        assert f"s3://{s3_bucket}/dashboard-backups/" in page and s3_endpoint_url not in page
    finally:
        get_app_state(app).close()
        StateManager.reset_instance()


def test_the_page_needs_its_action(tmp_path: Path) -> None:
    asked: list[str] = []

    def hook(request: Any, action: str) -> object:
        asked.append(action)
        return action != "dashboard.backups"

    app = build_app(tmp_path, TIERED_STATE_ACCESS_CONTROL=hook)
    try:
        response = app.test_client().get("/dash/backups")
        assert response.status_code == 403 and response.mimetype == "text/html"
        assert "denied by the access-control hook" in response.get_data(as_text=True)
        assert asked == ["dashboard.backups"]
        assert app.test_client().get("/dash/").status_code == 200
    finally:
        get_app_state(app).close()
        StateManager.reset_instance()
