"""``flask state rotate-keys`` and ``flask state erase``: their output, ``--json``, exit
codes and refusals, on apps that share one WARM database (the embedded SQLite file)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from flask import Flask

from flask_tiered_state import generate_master_key
from flask_tiered_state.domain.data_keys import DataKeys, RotationReport
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.extension import TieredState, get_app_state

from .conftest import AppFactory

SECRET = "hunter2-secret"


def set_up_types(manager: StateManager) -> None:
    if manager.data_keys is not None:  # without master keys, encrypted fields are refused
        manager.register_state_type("user", encrypted_fields=["data.password", "data.card.number"])


@pytest.fixture
def keyed_app(make_app: AppFactory, tmp_path: Path) -> Callable[..., Flask]:
    """``keyed_app(*master_keys)``: an app on the test's shared SQLite file and COLD
    directory, whose users encrypt a password and a card number."""

    def factory(*keys: str) -> Flask:
        extension = TieredState()
        extension.manager_setup(set_up_types)
        return make_app(
            extension=extension,
            TIERED_STATE_LOCAL_DIR=str(tmp_path / "local"),
            TIERED_STATE_ENCRYPTION_KEYS=list(keys) or None,
        )

    return factory


def manager_of(app: Flask) -> StateManager:
    return get_app_state(app).manager


def data_keys_of(app: Flask) -> DataKeys:
    data_keys = manager_of(app).data_keys
    assert data_keys is not None
    return data_keys


def invoke(app: Flask, *args: str, input: str | None = None) -> Result:
    return app.test_cli_runner().invoke(args=["state", *args], input=input)


def add_users(app: Flask, *state_ids: str) -> None:
    for state_id in state_ids:
        data = {"password": f"{SECRET}-{state_id}", "card": {"number": "4111", "exp": "12/30"}}
        manager_of(app).register_state(state_id, "user", {"data": data})


def password(app: Flask, state_id: str) -> Any:
    state = manager_of(app).get_state(state_id, include_deleted=True)
    assert state is not None
    return state["data"].get("password")


# -- rotate-keys ---------------------------------------------------------------------


def test_rotate_keys_without_master_keys_exits_1_saying_so(keyed_app: Any) -> None:
    app = keyed_app()
    result = invoke(app, "rotate-keys")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: No master keys: TIERED_STATE_ENCRYPTION_KEYS is not set, so there is nothing "
        "to rotate."
    )


def test_rotate_keys_rewraps_reports_and_a_second_run_rewraps_nothing(keyed_app: Any) -> None:
    old, new = generate_master_key(), generate_master_key()
    add_users(keyed_app(old), "alice", "bob", "carol")
    both = keyed_app(new, old)
    newest = data_keys_of(both).master.newest_id

    first = invoke(both, "rotate-keys")
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines() == [
        f"rotate-keys: 3 data keys re-wrapped with master key {newest}; 0 changed meanwhile; "
        "0 left on older keys.",
        "Every data key is wrapped by the newest master key: the older keys can be removed "
        "from TIERED_STATE_ENCRYPTION_KEYS.",
    ]
    assert "Re-wrapping 3 data keys" in first.stderr  # the progress bar
    again = invoke(both, "rotate-keys", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout) == {
        "rewrapped": 0, "already_current": 0, "left": 0, "master_key_id": newest,
    }  # fmt: skip
    assert password(keyed_app(new), "bob") == f"{SECRET}-bob"  # the old key is not needed


def test_a_stopped_rotation_goes_on_where_it_was(keyed_app: Any) -> None:
    old, new = generate_master_key(), generate_master_key()
    add_users(keyed_app(old), *(f"u{n}" for n in range(5)))
    both = keyed_app(new, old)

    def stop_after_first_chunk(done: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        data_keys_of(both).rotate(chunk_size=2, progress=stop_after_first_chunk)
    assert data_keys_of(both).count_to_rotate() == 3
    result = invoke(both, "rotate-keys", "--chunk-size", "2", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rewrapped"] == 3
    assert json.loads(invoke(both, "rotate-keys", "--json").stdout)["rewrapped"] == 0


def test_keys_made_by_an_old_process_meanwhile_exit_1_and_a_rerun_finishes(
    keyed_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = generate_master_key(), generate_master_key()
    not_redeployed = keyed_app(old)  # a process still configured with the old key only
    add_users(not_redeployed, "alice")
    both = keyed_app(new, old)
    rotate = DataKeys.rotate

    def rotate_while_the_old_process_writes(self: DataKeys, **options: Any) -> RotationReport:
        report = rotate(self, **options)
        add_users(not_redeployed, "late")
        return report

    monkeypatch.setattr(DataKeys, "rotate", rotate_while_the_old_process_writes)
    stopped = invoke(both, "rotate-keys")
    assert stopped.exit_code == 1
    assert "1 data key re-wrapped" in stopped.stdout
    assert stopped.stderr.strip().splitlines()[-1] == (
        "Error: 1 data key still wrapped by older keys; run again."
    )
    monkeypatch.setattr(DataKeys, "rotate", rotate)
    done = invoke(both, "rotate-keys", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["rewrapped"] == 1 and json.loads(done.stdout)["left"] == 0


def test_a_key_wrapped_by_a_removed_master_key_exits_1_naming_it(keyed_app: Any) -> None:
    removed = generate_master_key()
    add_users(keyed_app(removed), "alice")
    result = invoke(keyed_app(generate_master_key(), generate_master_key()), "rotate-keys")
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("Error: The data key of state 'alice' is wrapped by master key ")
    assert "which TIERED_STATE_ENCRYPTION_KEYS does not hold" in line
    assert "Put the old key back" in line


# -- erase ----------------------------------------------------------------------------


def test_erase_asks_first_and_no_changes_nothing(keyed_app: Any) -> None:
    app = keyed_app(generate_master_key())
    add_users(app, "alice")
    result = invoke(app, "erase", "alice", "--reason", "GDPR", input="n\n")
    assert result.exit_code == 1
    assert "Erase alice? Its encrypted fields become unreadable everywhere, for good" in (
        result.stderr
    )
    assert "Aborted!" in result.stderr
    assert password(app, "alice") == f"{SECRET}-alice"
    assert manager_of(app).get_state_history("alice")[-1]["version"] == 1
    assert not data_keys_of(app).is_erased("alice")


def test_erase_after_yes_destroys_the_key_and_records_who_and_why(keyed_app: Any) -> None:
    key = generate_master_key()
    app = keyed_app(key)
    add_users(app, "alice")
    result = invoke(app, "erase", "alice", "--reason", "GDPR art. 17", "--actor", "dpo",
                    input="y\n")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "alice: erased (version 2); its encrypted fields can no longer be read."
    ]
    last = manager_of(app).get_state_history("alice")[-1]
    assert (last["transition"], last["actor"], last["reason"]) == ("erase", "dpo", "GDPR art. 17")
    assert password(keyed_app(key), "alice") is None  # another process cannot read it either


def test_erase_yes_json_prints_the_erased_record(keyed_app: Any) -> None:
    app = keyed_app(generate_master_key())
    add_users(app, "alice")
    result = invoke(app, "erase", "alice", "--reason", "GDPR", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert "Erase alice?" not in result.output
    record = json.loads(result.stdout)
    assert (record["state_id"], record["status"], record["version"]) == ("alice", "deleted", 2)
    assert record["data"] == {"card": {"exp": "12/30"}}  # what the type does not encrypt
    assert SECRET not in result.output


def test_erase_refusals_exit_1_with_one_line(keyed_app: Any) -> None:
    app = keyed_app(generate_master_key())
    add_users(app, "alice")
    manager_of(app).register_state("flag", "feature", {"data": {"on": True}})

    unknown = invoke(app, "erase", "nobody", "--reason", "GDPR", "--yes")
    assert unknown.exit_code == 1
    assert unknown.output.strip() == "Error: No state with id 'nobody' exists."

    plain = invoke(app, "erase", "flag", "--reason", "GDPR", "--yes")
    assert plain.exit_code == 1
    assert plain.output.strip().startswith(
        "Error: State 'flag' is of type 'feature', which encrypts no field: erasing destroys "
        "the state's data key"
    )
    assert manager_of(app).get_state("flag")["version"] == 1  # type: ignore[index]

    assert invoke(app, "erase", "alice", "--reason", "GDPR", "--yes").exit_code == 0
    twice = invoke(app, "erase", "alice", "--reason", "GDPR", "--yes")
    assert twice.exit_code == 1
    assert "State 'alice' was erased" in twice.output

    blank = invoke(app, "erase", "alice", "--reason", "  ", "--yes")
    assert blank.exit_code == 1 and "needs a reason" in blank.output
    missing = invoke(app, "erase", "alice", "--yes")
    assert missing.exit_code == 2 and "Missing option '--reason'" in missing.output


def test_erase_without_master_keys_exits_1(keyed_app: Any) -> None:
    app = keyed_app()
    manager_of(app).register_state("alice", "feature", {"data": {"on": True}})
    result = invoke(app, "erase", "alice", "--reason", "GDPR", "--yes")
    assert result.exit_code == 1
    assert "encrypts no field" in result.output
