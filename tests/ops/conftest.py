"""Fixtures of the ops tests: the backend sets and an archive destination on each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import s3_client, unique_name
from tests.domain.conftest import SERVERS


@pytest.fixture(params=["embedded", SERVERS])
def backend(request: pytest.FixtureRequest) -> str:
    """The backend set: "embedded" or "servers"."""
    kind: str = request.param
    return kind


@pytest.fixture
def destination(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where archives go: a directory for the embedded backends; a bucket of its own (never
    the COLD tier's) on the S3 server for the servers."""
    if backend == "embedded":
        yield str(tmp_path / "archives")
        return
    endpoint = request.getfixturevalue("s3_endpoint_url")
    client = s3_client(endpoint)
    bucket = unique_name("arch-").lower()
    client.create_bucket(Bucket=bucket)
    yield f"s3://{bucket}/archives?endpoint_url={endpoint}"
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if objects:
            client.delete_objects(Bucket=bucket, Delete={"Objects": objects})
    client.delete_bucket(Bucket=bucket)
