"""The archive format of backups and checkpoints (flask_tiered_state.ops.archive):
chunked, compressed, checksummed, manifest last; in a directory and in S3 (moto's
server)."""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flask_tiered_state.errors import (
    ArchiveCorruptError,
    ArchiveNotFoundError,
    ConfigurationError,
    InvalidRequestError,
)
from flask_tiered_state.ops.archive import (
    BLOCK_SIZE,
    MANIFEST,
    ArchiveReader,
    ArchiveWriter,
    LocalDestination,
    S3Destination,
    delete_archive,
    list_archives,
    new_archive_id,
    open_destination,
)
from tests.conftest import s3_client, unique_name


def items(count: int, width: int = 40) -> Iterator[dict[str, Any]]:
    """Items that do not compress to nothing (each has its own digits)."""
    for number in range(count):
        yield {"key": f"state:{number:06d}", "value": f"{number * 7919:0{width}d}", "n": number}


def write(destination: Any, count: int = 100, *, kind: str = "backup", **options: Any) -> str:
    archive_id = new_archive_id()
    with ArchiveWriter(destination, archive_id, kind, **options) as writer:
        writer.add("records", items(count))
        writer.add("history", [{"state_id": "a", "version": 1}])
        writer.close({"note": "test"})
    return archive_id


@pytest.fixture(params=["directory", pytest.param("s3", marks=pytest.mark.s3)])
def destination(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A directory, or a bucket of its own on moto's S3 server."""
    if request.param == "directory":
        yield LocalDestination(tmp_path / "archives")
        return
    endpoint = request.getfixturevalue("s3_endpoint_url")
    client = s3_client(endpoint)
    bucket = unique_name("arch-").lower()
    client.create_bucket(Bucket=bucket)
    yield open_destination(f"s3://{bucket}/archives/?endpoint_url={endpoint}")
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if objects:
            client.delete_objects(Bucket=bucket, Delete={"Objects": objects})
    client.delete_bucket(Bucket=bucket)


def flip(destination: Any, archive_id: str, name: str, offset: int) -> None:
    """Change one bit of one byte of a file of the archive."""
    data = bytearray(destination.read(archive_id, name))
    data[offset] ^= 0x01
    destination.write(archive_id, name, bytes(data))


def test_items_come_back_in_order_across_chunks(destination: Any) -> None:
    archive_id = new_archive_id()
    with ArchiveWriter(destination, archive_id, "backup", chunk_items=7) as writer:
        assert writer.add("records", items(50)) == 50
        assert writer.add("records", items(3)) == 3  # a section goes on
        assert writer.add("empty", []) == 0
        manifest = writer.close({"source": {"tier": "warm"}})
    reader = ArchiveReader(destination, archive_id)
    assert list(reader.items("records")) == [*items(50), *items(3)]
    assert list(reader.items("empty")) == []
    assert reader.sections == {"records": 53, "empty": 0}
    assert reader.manifest == manifest
    chunks = manifest["sections"]["records"]["chunks"]
    assert [c["items"] for c in chunks] == [7] * 7 + [1, 3]
    assert all(c["file"].startswith("records-") and c["file"].endswith(".jsonl.gz") for c in chunks)
    assert manifest["kind"] == "backup" and manifest["source"] == {"tier": "warm"}
    assert manifest["created_at"] <= manifest["completed_at"]
    report = reader.verify()
    assert report["ok"] and report["sections"]["records"]["found"] == 53


def test_a_chunk_closes_early_past_its_bytes(tmp_path: Path) -> None:
    archive_id = write(tmp_path, 200, chunk_items=1000, chunk_bytes=2048)
    chunks = ArchiveReader(tmp_path, archive_id).manifest["sections"]["records"]["chunks"]
    assert len(chunks) > 5
    assert all(c["raw_bytes"] < 2048 + 200 for c in chunks)


def test_chunks_are_gzip_json_lines(tmp_path: Path) -> None:
    """The format is plain: any gzip and JSON tool reads a chunk."""
    archive_id = write(tmp_path, 10)
    lines = gzip.decompress((tmp_path / archive_id / "records-000000.jsonl.gz").read_bytes())
    assert [json.loads(line) for line in lines.splitlines()] == list(items(10))
    manifest = json.loads((tmp_path / archive_id / MANIFEST).read_text())
    assert manifest["format"] == "flask-tiered-state-archive" and manifest["format_version"] == 1


def test_listing_is_newest_first_by_kind_and_skips_incomplete_archives(destination: Any) -> None:
    first = write(destination, 5)
    checkpoint = write(destination, 5, kind="checkpoint")
    second = write(destination, 5)
    incomplete = new_archive_id()
    writer = ArchiveWriter(destination, incomplete, "backup")
    writer.add("records", items(5))  # never closed: a crash before the manifest
    assert [m["archive_id"] for m in list_archives(destination, "backup")] == [second, first]
    assert [m["archive_id"] for m in list_archives(destination)] == [second, checkpoint, first]
    with pytest.raises(ArchiveNotFoundError, match="without its manifest"):
        ArchiveReader(destination, incomplete)
    delete_archive(destination, second)
    assert [m["archive_id"] for m in list_archives(destination, "backup")] == [first]


def test_a_failed_write_leaves_nothing(destination: Any) -> None:
    archive_id = new_archive_id()

    def failing() -> Iterator[dict[str, Any]]:
        yield from items(30)
        raise RuntimeError("the source went away")

    with pytest.raises(RuntimeError), ArchiveWriter(destination, archive_id, "backup",
                                                    chunk_items=10) as writer:  # fmt: skip
        writer.add("records", failing())
    assert list(destination.archive_ids()) == []


def test_one_flipped_byte_is_refused_with_the_file_and_offset(destination: Any) -> None:
    archive_id = write(destination, 3000, chunk_items=1000)
    bad = 5000 + 123
    flip(destination, archive_id, "records-000001.jsonl.gz", bad)
    reader = ArchiveReader(destination, archive_id)
    seen = 0
    with pytest.raises(ArchiveCorruptError) as caught:
        for _ in reader.items("records"):
            seen += 1
    error = caught.value
    assert seen == 1000  # the first chunk was whole; nothing of the damaged one came out
    assert (error.archive_id, error.file) == (archive_id, "records-000001.jsonl.gz")
    assert error.offset is not None and error.offset <= bad < error.offset + BLOCK_SIZE
    assert f"byte offset {error.offset}" in error.message and archive_id in error.message
    report = reader.verify()
    assert not report["ok"]
    assert [(e["file"], e["offset"]) for e in report["errors"]] == [
        ("records-000001.jsonl.gz", error.offset)
    ]
    assert list(reader.items("history")) == [{"state_id": "a", "version": 1}]


def test_truncated_and_missing_chunks_are_refused(tmp_path: Path) -> None:
    archive_id = write(tmp_path, 2000, chunk_items=1000)
    chunk = tmp_path / archive_id / "records-000000.jsonl.gz"
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) - 10])
    with pytest.raises(ArchiveCorruptError, match=f"it has {len(data) - 10} bytes") as caught:
        list(ArchiveReader(tmp_path, archive_id).items("records"))
    assert caught.value.offset is not None and caught.value.offset <= len(data) - 10
    (tmp_path / archive_id / "records-000001.jsonl.gz").unlink()
    report = ArchiveReader(tmp_path, archive_id).verify()
    assert [(e["file"], e["offset"]) for e in report["errors"]][1] == (
        "records-000001.jsonl.gz",
        None,
    )


def test_an_altered_manifest_is_refused_and_not_listed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    archive_id = write(tmp_path, 10)
    path = tmp_path / archive_id / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["sections"]["records"]["items"] = 11
    path.write_text(json.dumps(manifest))
    with pytest.raises(ArchiveCorruptError, match="does not match its own checksum") as caught:
        ArchiveReader(tmp_path, archive_id)
    assert caught.value.file == MANIFEST
    with caplog.at_level(logging.WARNING, logger="flask_tiered_state.ops.archive"):
        assert list_archives(tmp_path) == []
    assert archive_id in caplog.text
    path.write_text("{not json")
    with pytest.raises(ArchiveCorruptError, match="is not JSON"):
        ArchiveReader(tmp_path, archive_id)


def test_bad_arguments_are_refused_with_what_is_allowed(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match=r"Archive id '\.\./x' is not valid"):
        ArchiveWriter(tmp_path, "../x", "backup")
    with pytest.raises(InvalidRequestError, match="Archive kind 'Backup!' is not valid"):
        ArchiveWriter(tmp_path, new_archive_id(), "Backup!")
    with pytest.raises(InvalidRequestError, match="chunk_items must be an integer"):
        ArchiveWriter(tmp_path, new_archive_id(), "backup", chunk_items=0)
    writer = ArchiveWriter(tmp_path, new_archive_id(), "backup")
    with pytest.raises(InvalidRequestError, match="Archive section 'a/b' is not valid"):
        writer.add("a/b", [])
    with pytest.raises(InvalidRequestError, match="takes JSON objects"):
        writer.add("records", [1, 2])  # type: ignore[list-item]
    with pytest.raises(InvalidRequestError, match="sets kind, sections itself"):
        writer.close({"kind": "x", "sections": {}})
    writer.close()
    with pytest.raises(InvalidRequestError, match="closed already"):
        writer.close()
    with pytest.raises(InvalidRequestError, match="exists already"):
        ArchiveWriter(tmp_path, writer.archive_id, "backup")
    with pytest.raises(InvalidRequestError, match="has no section 'nope'; it has records"):
        list(ArchiveReader(tmp_path, writer.archive_id).items("nope"))
    with pytest.raises(ArchiveNotFoundError):
        ArchiveReader(tmp_path, new_archive_id())


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("ftp://host/x", "has the scheme 'ftp'"),
        ("s3://UPPER/x", "3-63 characters"),
        ("s3://bucket/x?secret=1", "carries secret"),
        ("file://elsewhere/x", "names the host 'elsewhere'"),
        ("", "is not valid"),
        (5, "is not valid"),
    ],
)
def test_bad_destinations_are_refused(target: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        open_destination(target)


def test_destinations_from_text(tmp_path: Path) -> None:
    local = open_destination(f"file://{tmp_path}/a")
    assert isinstance(local, LocalDestination) and local.root == tmp_path / "a"
    assert isinstance(open_destination(str(tmp_path)), LocalDestination)
    assert isinstance(open_destination(tmp_path), LocalDestination)
    remote = open_destination("s3://my-backups/prod?endpoint_url=http://127.0.0.1:1")
    assert isinstance(remote, S3Destination)
    assert (remote.bucket, remote.prefix) == ("my-backups", "prod/")
    assert "secret" not in remote.url
