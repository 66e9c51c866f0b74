"""Field encryption at rest: sealed in every tier and history row, opened on the way out,
refused searches, erasure by destroying the state's data key, and master key rotation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flask_tiered_state import generate_master_key
from flask_tiered_state.domain.encryption import TOKEN_PREFIX, MasterKeys, check_encrypted_fields
from flask_tiered_state.domain.idempotency import fingerprint
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.errors import (
    ConfigurationError,
    EncryptedFieldError,
    EncryptionKeyError,
    IdempotencyKeyReusedError,
    InvalidRequestError,
    InvalidTransitionError,
    StateErasedError,
)
from flask_tiered_state.storage.base import StateCategory
from tests.domain.conftest import build_test_store

SECRET = "hunter2-secret"
CARD = "4111111111111111"
FIELDS = ["data.password", "data.card.number"]


def user(password: str = SECRET, plan: str = "pro") -> dict[str, Any]:
    return {
        "name": "Alice",
        "data": {"password": password, "card": {"number": CARD, "exp": "12/30"}, "plan": plan},
    }


@pytest.fixture
def key() -> str:
    return generate_master_key()


@pytest.fixture
def secure(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, key: str
) -> Iterator[StateManager]:
    """A manager on each backend whose users keep a password and a card number encrypted,
    and whose sessions (HOT-home) keep all of their data encrypted."""
    store = build_test_store(backend, request, tmp_path)
    manager = StateManager.create(store=store, encryption_keys=[key])
    manager.register_state_type("user", encrypted_fields=FIELDS)
    manager.register_state_type("session", home_tier=StateCategory.HOT, encrypted_fields=["data"])
    try:
        yield manager
    finally:
        manager.close()


def stored_texts(manager: StateManager, state_id: str) -> list[str]:
    """Every stored copy of a state: each tier's value and every history row, as text."""
    texts = []
    repositories = manager.store.get_repositories()
    for category in StateCategory:
        entry = repositories.by_category(category).fetch("state:" + state_id)
        if entry is not None:
            texts.append(entry.value)
    with manager.history.engine.connect() as connection:
        t = manager.history.table
        for old, new in connection.execute(
            sa.select(t.c.old_record, t.c.new_record).where(t.c.state_id == state_id)
        ):
            texts.append(json.dumps(old))
            texts.append(json.dumps(new))
    return texts


def test_the_fields_are_sealed_in_storage_and_opened_by_every_read(secure: StateManager) -> None:
    created = secure.register_state("alice", "user", user())
    assert created["data"]["password"] == SECRET
    secure.update_state("alice", {"data": {"plan": "team"}}, merge=True)
    texts = stored_texts(secure, "alice")
    assert texts and not any(SECRET in t or CARD in t for t in texts)
    assert any(TOKEN_PREFIX in t for t in texts)
    assert any('"exp": "12/30"' in t or '"exp":"12/30"' in t for t in texts)  # not encrypted

    state = secure.get_state("alice")
    assert state is not None
    assert state["data"] == {
        "password": SECRET,
        "card": {"number": CARD, "exp": "12/30"},
        "plan": "team",
    }
    assert secure.batch_get_state(["alice"])["alice"] == state
    history = secure.get_state_history("alice")
    assert [h["new_record"]["data"]["password"] for h in history] == [SECRET, SECRET]
    assert history[1]["old_record"]["data"]["card"]["number"] == CARD
    assert secure.get_history_page("alice").items[0]["new_record"]["data"]["password"] == SECRET
    assert secure.get_recent_changes("alice")[0]["new_record"]["data"]["password"] == SECRET
    diff = secure.diff_versions("alice", 1, 2)
    assert diff["changed"] == {"data.plan": {"from": "pro", "to": "team"}}


def test_writes_reread_and_rollback_work_on_the_plaintext(secure: StateManager) -> None:
    secure.register_state("alice", "user", user())
    secure.update_state("alice", {"data": {"password": "second"}}, merge=True)
    rolled = secure.rollback_state("alice", 1)
    assert rolled["data"]["password"] == SECRET
    assert secure.get_state("alice")["data"]["password"] == SECRET  # type: ignore[index]
    batch = secure.batch_update_state({"alice": {"data": {"plan": "free"}}}, merge=True)
    assert batch["alice"]["data"]["password"] == SECRET
    upserted = secure.batch_set_state({"bob": {"type": "user", **user("bobs")}})
    assert upserted["bob"]["data"]["password"] == "bobs"
    assert not any("bobs" in t for t in stored_texts(secure, "bob"))


def test_searches_open_results_and_refuse_encrypted_fields(secure: StateManager) -> None:
    secure.register_state("alice", "user", user())
    found = secure.search_states("user", {"data.plan": "pro"})
    assert [r["data"]["password"] for r in found] == [SECRET]
    for path in ("data.password", "data.card", "data.card.number", "data"):
        with pytest.raises(EncryptedFieldError) as refused:
            secure.search_states("user", {path: "x"})
        assert refused.value.http_status == 400
        assert "encrypted" in refused.value.message
    with pytest.raises(EncryptedFieldError):  # without a type: every type's fields count
        secure.search_states(None, {"data.password": SECRET})


def test_hot_home_types_are_sealed_in_the_hot_tier(secure: StateManager) -> None:
    secure.register_state("s1", "session", {"data": {"token": SECRET}})
    assert not any(SECRET in t for t in stored_texts(secure, "s1"))
    assert secure.get_state("s1")["data"] == {"token": SECRET}  # type: ignore[index]


def test_idempotent_replays_open_the_kept_result(secure: StateManager) -> None:
    first = secure.register_state("alice", "user", user(), idempotency_key="k-1")
    again = secure.register_state("alice", "user", user(), idempotency_key="k-1")
    assert again == first
    with secure.history.engine.connect() as connection:
        kept = connection.execute(sa.select(secure.idempotency.table.c.result)).scalars().all()
    assert kept and not any(SECRET in str(k) for k in kept)
    # the parameters' fingerprint is keyed: a database reader cannot test guesses against it
    plain = fingerprint(
        "register_state",
        {"state_id": "alice", "state_type": "user", "initial_data": user(), "actor": None,
         "reason": None},
    )  # fmt: skip
    with secure.history.engine.connect() as connection:
        stored = connection.execute(sa.select(secure.idempotency.table.c.fingerprint)).scalar_one()
    assert stored != plain
    with pytest.raises(IdempotencyKeyReusedError):
        secure.register_state("alice", "user", user("other"), idempotency_key="k-1")


def test_asynchronous_callbacks_get_the_plaintext(secure: StateManager) -> None:
    from flask_tiered_state.domain.dispatcher import EventDispatcher

    seen: list[Any] = []

    def record(state_id: str, old: Any, new: Any, transition: Any, *, event_id: str) -> None:
        seen.append((old["data"]["password"], new["data"]["password"]))

    secure.register_callback("user_updated", record, asynchronous=True)
    secure.register_state("alice", "user", user())
    secure.update_state("alice", {"data": {"plan": "x"}}, merge=True)
    with EventDispatcher(secure) as dispatcher:
        dispatcher.run_once()
    assert seen == [(SECRET, SECRET)]


def test_erasure_destroys_every_copy_and_keeps_the_history(secure: StateManager) -> None:
    secure.register_state("alice", "user", user())
    secure.update_state("alice", {"data": {"plan": "team"}}, merge=True)
    erased = secure.erase_state("alice", reason="GDPR art. 17 request", actor="dpo")
    assert erased["status"] == "deleted" and erased["version"] == 3
    assert erased["data"] == {"card": {"exp": "12/30"}, "plan": "team"}
    history = secure.get_state_history("alice")
    assert [h["transition"] for h in history] == ["create", "update", "erase"]
    assert history[2]["actor"] == "dpo" and history[2]["reason"] == "GDPR art. 17 request"
    for row in history:
        for record in (row["old_record"], row["new_record"]):
            if record is not None:
                assert record["data"].get("password") is None
                assert record["data"]["card"].get("number") is None
    # a manager of another process, with the same master key, cannot read it either
    assert secure.data_keys is not None
    other = StateManager.create(
        store=secure.store, encryption_keys=secure.data_keys.master, close_store=False
    )
    other.register_state_type("user", encrypted_fields=FIELDS)
    assert other.get_state_history("alice")[0]["new_record"]["data"]["password"] is None
    with pytest.raises(StateErasedError):
        secure.erase_state("alice", reason="twice")
    with pytest.raises(InvalidTransitionError):
        secure.rollback_state("alice", 1)


def test_erasure_needs_a_reason_and_an_encrypted_type(secure: StateManager) -> None:
    secure.register_state("f1", "feature", {"data": {"on": True}})
    with pytest.raises(InvalidRequestError, match="encrypts no field"):
        secure.erase_state("f1", reason="why not")
    with pytest.raises(InvalidRequestError, match="reason"):
        secure.erase_state("f1", reason="  ")
    assert secure.get_state("f1")["version"] == 1  # type: ignore[index]


def test_a_sealed_value_copied_to_another_state_does_not_decrypt(secure: StateManager) -> None:
    secure.register_state("alice", "user", user())
    secure.register_state("mallory", "user", user("mallorys"))
    alice = json.loads(secure.store.warm.fetch("state:alice").value)
    mallory = json.loads(secure.store.warm.fetch("state:mallory").value)
    mallory["data"]["password"] = alice["data"]["password"]
    secure.store.cache.clear()
    secure.store.warm.store("state:mallory", json.dumps(mallory))
    secure.store.cache.clear()
    with pytest.raises(EncryptionKeyError, match="does not authenticate"):
        secure.get_state("mallory")


def test_rotation_rewraps_the_data_keys(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, key: str
) -> None:
    store = build_test_store(backend, request, tmp_path)
    old = StateManager.create(store=store, encryption_keys=[key], close_store=False)
    old.register_state_type("user", encrypted_fields=FIELDS)
    for i in range(25):
        old.register_state(f"u{i}", "user", user(f"pw-{i}"))
    old.close()

    newest = generate_master_key()
    both = StateManager.create(store=store, encryption_keys=[newest, key], close_store=False)
    both.register_state_type("user", encrypted_fields=FIELDS)
    assert both.data_keys is not None
    assert both.data_keys.count_to_rotate() == 25
    report = both.data_keys.rotate(chunk_size=10)
    assert report.rewrapped == 25 and both.data_keys.count_to_rotate() == 0
    assert both.data_keys.rotate().rewrapped == 0  # resumable: nothing left
    both.close()

    store.cache.clear()
    only_new = StateManager.create(store=store, encryption_keys=[newest])
    only_new.register_state_type("user", encrypted_fields=FIELDS)
    try:
        assert only_new.get_state("u7")["data"]["password"] == "pw-7"  # type: ignore[index]
        assert only_new.get_state_history("u3")[0]["new_record"]["data"]["password"] == "pw-3"
    finally:
        only_new.close()


def test_a_removed_master_key_is_named(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, key: str
) -> None:
    store = build_test_store(backend, request, tmp_path)
    first = StateManager.create(store=store, encryption_keys=[key], close_store=False)
    first.register_state_type("user", encrypted_fields=FIELDS)
    first.register_state("alice", "user", user())
    first.close()
    store.cache.clear()
    other = StateManager.create(store=store, encryption_keys=[generate_master_key()])
    other.register_state_type("user", encrypted_fields=FIELDS)
    try:
        with pytest.raises(EncryptionKeyError, match="rotate-keys"):
            other.get_state("alice")
    finally:
        other.close()


def test_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="Fernet key"):
        MasterKeys(["not a key"])
    with pytest.raises(ConfigurationError, match="no key"):
        MasterKeys([])
    with pytest.raises(ConfigurationError, match="inside"):
        check_encrypted_fields(["data", "data.password"], type_name="user")
    with pytest.raises(ConfigurationError, match="field path"):
        check_encrypted_fields(["password"], type_name="user")
    with pytest.raises(ConfigurationError, match="field path"):
        check_encrypted_fields("data.password", type_name="user")
    assert check_encrypted_fields(["data.card.number"], type_name="user") == (
        ("data", "card", "number"),
    )


def test_encrypted_fields_without_keys_are_refused(embedded_manager: StateManager) -> None:
    with pytest.raises(ConfigurationError, match="TIERED_STATE_ENCRYPTION_KEYS"):
        embedded_manager.register_state_type("user", encrypted_fields=["data.password"])


def provide_keys() -> list[str]:
    return [PROVIDED]


PROVIDED = generate_master_key()


def test_key_sources() -> None:
    from flask_tiered_state.domain.encryption import load_master_keys

    one, two = generate_master_key(), generate_master_key()
    assert load_master_keys(None) is None and load_master_keys("") is None
    from_text = load_master_keys(f"{one}, {two}")
    assert from_text is not None and len(from_text.key_ids) == 2
    assert load_master_keys([one]).newest_id == from_text.newest_id  # type: ignore[union-attr]
    called = load_master_keys(lambda: [two, one])
    assert called is not None and called.key_ids == from_text.key_ids[::-1]
    imported = load_master_keys("tests.domain.test_encryption:provide_keys")
    assert imported is not None and imported.key_ids == MasterKeys([PROVIDED]).key_ids
    with pytest.raises(ConfigurationError, match="cannot be imported"):
        load_master_keys("tests.domain.nowhere:keys")
    with pytest.raises(ConfigurationError, match="repeats"):
        load_master_keys([one, one])


def test_a_bad_setting_is_refused_at_init_app_without_quoting_it(tmp_path: Path) -> None:
    from flask import Flask

    from flask_tiered_state import TieredState

    app = Flask(__name__, instance_path=str(tmp_path))
    app.config["TIERED_STATE_ENCRYPTION_KEYS"] = ["my-secret-but-not-a-fernet-key"]
    with pytest.raises(ConfigurationError) as refused:
        TieredState(app)
    assert "TIERED_STATE_ENCRYPTION_KEYS" in refused.value.message
    assert "my-secret" not in str(refused.value)


def test_the_setting_configures_the_apps_manager(tmp_path: Path) -> None:
    from flask import Flask

    from flask_tiered_state import TieredState, current_state_manager

    app = Flask(__name__, instance_path=str(tmp_path))
    app.config["TIERED_STATE_ENCRYPTION_KEYS"] = generate_master_key()
    TieredState(app)
    with app.app_context():
        manager = current_state_manager
        manager.register_state_type("user", encrypted_fields=["data.password"])
        manager.register_state("alice", "user", {"data": {"password": SECRET}})
        assert SECRET not in manager.store.warm.fetch("state:alice").value
        assert manager.get_state("alice")["data"]["password"] == SECRET  # type: ignore[index]


def test_a_state_written_before_its_type_encrypted_gets_a_key_at_its_next_change(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, key: str
) -> None:
    store = build_test_store(backend, request, tmp_path)
    manager = StateManager.create(store=store, encryption_keys=[key])
    try:
        manager.register_state("old", "user", user())  # the type encrypts nothing yet
        assert SECRET in store.warm.fetch("state:old").value
        manager.register_state_type("user", encrypted_fields=FIELDS)
        assert manager.get_state("old")["data"]["password"] == SECRET  # type: ignore[index]
        manager.update_state("old", {"data": {"plan": "team"}}, merge=True)
        assert SECRET not in store.warm.fetch("state:old").value
        assert manager.get_state("old")["data"]["password"] == SECRET  # type: ignore[index]
        history = manager.get_state_history("old")
        assert [h["new_record"]["data"]["password"] for h in history] == [SECRET, SECRET]
    finally:
        manager.close()


def test_a_taken_id_keeps_its_key_and_a_refused_batch_leaves_none(secure: StateManager) -> None:
    from flask_tiered_state.errors import InvalidStateTypeError, StateAlreadyExistsError

    secure.register_state("alice", "user", user())
    with pytest.raises(StateAlreadyExistsError):
        secure.register_state("alice", "user", user("another"))
    assert secure.get_state("alice")["data"]["password"] == SECRET  # type: ignore[index]
    assert secure.data_keys is not None
    before = secure.data_keys.counts()
    with pytest.raises(InvalidStateTypeError):
        secure.batch_set_state(
            {"new-1": {"type": "user", **user("n1")}, "new-2": {"type": "nope-no-type"}}
        )
    assert secure.data_keys.counts() == before  # no key of a state that was not written
