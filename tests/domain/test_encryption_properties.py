"""Properties of sealing: opening a sealed record gives the record back, whatever its
JSON; the sealed form holds no encrypted value; nothing outside the listed fields
changes."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_tiered_state import generate_master_key
from flask_tiered_state.domain.data_keys import DataKeys, define_data_key_table
from flask_tiered_state.domain.encryption import TOKEN_PREFIX, MasterKeys, RecordCipher
from flask_tiered_state.domain.registry import TypeRegistry

KEYS = st.sampled_from(["password", "card", "number", "pin", "note", "x"])
SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
VALUES = st.recursive(
    SCALARS | FLOATS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)
PATHS = st.lists(
    st.sampled_from(
        ["data.password", "data.card.number", "data.card", "metadata.note", "name", "data"]
    ),
    max_size=3,
    unique=True,
).filter(
    lambda paths: not any(a != b and (b + ".").startswith(a + ".") for a in paths for b in paths)
)


def make_cipher(tmp: Path, fields: list[str]) -> RecordCipher:
    engine = sa.create_engine(f"sqlite:///{tmp / f'keys-{uuid.uuid4().hex}.sqlite3'}")
    table = define_data_key_table(sa.MetaData())
    keys = DataKeys(engine, table, MasterKeys([generate_master_key()]))
    keys.create()
    types = TypeRegistry()
    types.register("thing", encrypted_fields=fields)
    return RecordCipher(types, keys)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fields=PATHS,
    data=st.dictionaries(KEYS, VALUES, max_size=5),
    metadata=st.dictionaries(KEYS, VALUES, max_size=3),
    name=st.text(min_size=1, max_size=30),
)
def test_open_inverts_seal(
    tmp_path: Path, fields: list[str], data: dict[str, Any], metadata: dict[str, Any], name: str
) -> None:
    cipher = make_cipher(tmp_path, fields)
    record = {
        "state_id": "s-1", "name": name, "type": "thing", "status": "active", "data": data,
        "metadata": metadata, "version": 3, "created_at": "t", "updated_at": "t",
    }  # fmt: skip
    original = json.loads(json.dumps(record))
    (sealed,) = cipher.seal_many([record])
    assert record == original  # the caller's record is not modified
    # a stored value goes through JSON text and back
    stored = json.loads(json.dumps(sealed))
    assert cipher.open(stored) == original
    for field in fields:
        node: Any = stored
        for step in field.split("."):
            node = node.get(step) if isinstance(node, dict) else None
        present = True
        probe: Any = original
        for step in field.split("."):
            if not isinstance(probe, dict) or step not in probe:
                present = False
                break
            probe = probe[step]
        if present:
            assert isinstance(node, str) and node.startswith(TOKEN_PREFIX)
    untouched = {k for k in ("status", "version", "type", "state_id")}
    assert all(stored[k] == original[k] for k in untouched)
