"""Starting the demo: a bad setting is one ``Error:`` line and exit status 1 for every
``flask`` command (no traceback), a ``.env`` file is read, the banner and the home page
name the backends and the port in use, and ``reset-demo`` deletes the demo's data only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from example_app import create_app
from example_app.access import SECRET_KEY_FILE, load_secret_key
from example_app.config import masked_url
from flask_tiered_state.errors import ConfigurationError
from flask_tiered_state.extension import get_app_state
from tests.conftest import free_port

from .conftest import ADMIN, TOKENS

ROOT = Path(__file__).resolve().parents[2]
FLASK = [sys.executable, "-m", "flask", "--app", "example_app:create_app"]


def flask(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``flask --app example_app:create_app ARGS`` in ``cwd``, with the demo importable, its
    data under ``cwd`` and only the environment given (plus the tokens)."""
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TIERED_STATE_", "FLASK_", "CREDIT_"))
    }
    environ.update(
        PYTHONPATH=str(ROOT),
        CREDIT_API_TOKENS=json.dumps(TOKENS),
        TIERED_STATE_LOCAL_DIR=str(cwd / "local"),
        **(env or {}),
    )
    return subprocess.run(
        [*FLASK, *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=120
    )


def assert_one_line(result: subprocess.CompletedProcess[str], line: str) -> None:
    assert result.returncode == 1, result
    assert result.stderr == f"Error: {line}\n"
    assert "Traceback" not in result.stdout + result.stderr


BAD_VALUE = "TIERED_STATE_CACHE_MAX_ENTRIES is 0; expected an integer >= 1."


@pytest.mark.parametrize(
    "command",
    [
        ["seed-demo"],
        ["run", "--port", "0"],
        ["routes"],
        ["state", "stats"],
        ["api-tokens"],
    ],
)
def test_a_bad_setting_is_one_line_and_exit_status_1(tmp_path: Path, command: list[str]) -> None:
    result = flask(tmp_path, *command, env={"TIERED_STATE_CACHE_MAX_ENTRIES": "0"})
    assert_one_line(result, BAD_VALUE)


def test_flask_help_with_a_bad_setting_is_the_one_line_then_the_commands(tmp_path: Path) -> None:
    # Flask lists the commands it has without the app, as for an app it cannot import.
    result = flask(tmp_path, "--help", env={"TIERED_STATE_CACHE_MAX_ENTRIES": "0"})
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr == f"Error: {BAD_VALUE}\n\n", result.stderr
    assert result.returncode == 0 and "Commands:" in result.stdout
    assert " routes " in result.stdout and " seed-demo " not in result.stdout


def test_with_good_settings_help_lists_the_apps_commands_and_they_run(tmp_path: Path) -> None:
    listed = flask(tmp_path, "--help")
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr
    assert " seed-demo " in listed.stdout and " state " in listed.stdout
    for command in (["routes"], ["state", "stats"], ["state", "--help"]):
        result = flask(tmp_path, *command)
        assert result.returncode == 0 and "Error" not in result.stderr, (command, result)


def test_a_misspelt_variable_and_a_bad_app_setting_are_one_line_too(tmp_path: Path) -> None:
    result = flask(tmp_path, "seed-demo", env={"TIERED_STATE_REDIS_ULR": "redis://x"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(
        "Error: Unknown environment variable(s): TIERED_STATE_REDIS_ULR (did you mean "
        "TIERED_STATE_HOT_URL?)."
    )
    assert result.stderr.count("\n") == 1
    result = flask(tmp_path, "run", env={"CREDIT_SESSION_TTL_SECONDS": "-3"})
    assert_one_line(result, "CREDIT_SESSION_TTL_SECONDS is '-3'; expected a positive whole number.")


def test_the_flask_command_reads_a_dot_env_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TIERED_STATE_CACHE_MAX_ENTRIES=0\n", encoding="utf-8")
    assert_one_line(flask(tmp_path, "api-tokens"), BAD_VALUE)
    tokens = {"admin": "admin-token-from-the-env-file", "viewer": "viewer-token-from-env-file"}
    (tmp_path / ".env").write_text(f"CREDIT_API_TOKENS='{json.dumps(tokens)}'\n", encoding="utf-8")
    environ = {k: v for k, v in os.environ.items() if k != "CREDIT_API_TOKENS"}
    result = subprocess.run(
        [*FLASK, "api-tokens", "--json"],
        cwd=tmp_path,
        env={**environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == tokens


def test_make_run_serves_on_the_port_given() -> None:
    for port, expected in ((None, "5000"), ("5001", "5001")):
        args = ["make", "-n", "run", *([f"PORT={port}"] if port else [])]
        # Not the flags of a `make test` this may run under (they could set PORT).
        environ = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "PORT")}
        dry = subprocess.run(
            args, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60
        )
        assert dry.returncode == 0, dry.stderr
        assert f"banner --port {expected}" in dry.stdout
        assert f"run --host 127.0.0.1 --port {expected}" in dry.stdout


# -- the banner and the home page name what is in use --------------------------------------


def demo(config: dict[str, Any], tmp_path: Path) -> Flask:
    app = create_app({"TIERED_STATE_LOCAL_DIR": str(tmp_path / "local"), **config})
    app.instance_path = str(tmp_path / "instance")
    return app


def test_the_banner_names_the_port_and_the_embedded_tiers(tmp_path: Path) -> None:
    app = demo({}, tmp_path)
    result = app.test_cli_runner().invoke(args=["banner", "--port", "5001"])
    assert result.exit_code == 0, result.output
    assert "Flask Credit System   http://127.0.0.1:5001/\n" in result.output
    assert "http://127.0.0.1:5001/dashboard/" in result.output
    assert "HOT  tier             embedded (process memory)" in result.output
    assert "WARM tier             embedded (SQLite file " in result.output
    assert "COLD tier             embedded (directory " in result.output
    assert TOKENS["admin"] in result.output
    get_app_state(app).close()


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.s3
def test_the_banner_names_the_servers_with_passwords_masked(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from tests.conftest import services_config

    config = services_config(request)
    warm = sa.make_url(config["TIERED_STATE_WARM_URL"]).set(password="warm-secret")
    app = demo(
        # PostgreSQL trusts local connections: the password is not asked for.
        {**config, "TIERED_STATE_WARM_URL": warm.render_as_string(hide_password=False)},
        tmp_path,
    )
    result = app.test_cli_runner().invoke(args=["banner"])
    assert result.exit_code == 0, result.output
    prefix = config["TIERED_STATE_KEY_PREFIX"]
    hot = config["TIERED_STATE_HOT_URL"]
    assert f"HOT  tier             {hot} (keys {prefix}*)\n" in result.output
    assert f"WARM tier             {warm.render_as_string()}\n" in result.output
    assert f"COLD tier             {config['TIERED_STATE_COLD_URL']}\n" in result.output
    assert "secret" not in result.output and "embedded" not in result.output
    assert "not answering" not in result.output
    assert "http://127.0.0.1:5000/" in result.output
    get_app_state(app).close()


def test_the_banner_says_which_server_does_not_answer(tmp_path: Path) -> None:
    app = demo(
        {
            "TIERED_STATE_HOT_URL": f"redis://127.0.0.1:{free_port()}/0",  # nobody listens
            "TIERED_STATE_WARM_URL": f"sqlite:///{tmp_path / 'warm.sqlite3'}",
        },
        tmp_path,
    )
    result = app.test_cli_runner().invoke(args=["banner"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if " tier " in line}
    assert "not answering" in lines["HOT"]
    assert "not answering" not in lines["WARM"] + lines["COLD"]
    assert "embedded" not in lines["HOT"] + lines["WARM"]
    get_app_state(app).close()


def test_masked_url_hides_passwords_and_secret_parameters() -> None:
    assert masked_url("postgresql+psycopg://demo:pw@db:5432/credit") == (
        "postgresql+psycopg://demo:***@db:5432/credit"
    )
    assert masked_url("redis://:pw@cache:6379/0") == "redis://:***@cache:6379/0"
    assert masked_url("s3://b/p/?endpoint_url=http://s3:9000&aws_secret_access_key=k") == (
        "s3://b/p/?endpoint_url=http://s3:9000&aws_secret_access_key=***"
    )
    assert masked_url("redis://cache:6379/0") == "redis://cache:6379/0"


def test_the_home_page_shows_the_address_in_use_and_the_backends(tmp_path: Path) -> None:
    app = demo({"TESTING": True}, tmp_path)
    page = app.test_client().get("/", headers=ADMIN, base_url="http://127.0.0.1:5001")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "localhost:5000" not in html and ":5000" not in html
    assert "curl -X POST http://127.0.0.1:5001/api/users" in html
    assert "HOT <code>embedded (process memory)</code>" in html
    assert "WARM <code>embedded (SQLite file" in html
    get_app_state(app).close()


# -- reset-demo ----------------------------------------------------------------------------


def register_users(app: Flask, count: int) -> list[str]:
    """Users registered through the demo's API; their ids."""
    client = app.test_client()
    ids = []
    for n in range(count):
        response = client.post(
            "/api/users",
            json={"email": f"user{n}@example.com", "full_name": f"User {n}", "country": "GB"},
            headers=ADMIN,
        )
        assert response.status_code == 201, response.get_json()
        ids.append(response.get_json()["state_id"])
    return ids


def test_reset_demo_removes_the_embedded_data_and_the_tokens(tmp_path: Path) -> None:
    app = create_app(
        {"TESTING": True, "TIERED_STATE_LOCAL_DIR": str(tmp_path / "instance" / "tiered_state")}
    )
    app.instance_path = str(tmp_path / "instance")
    (tmp_path / "instance" / "api_tokens.json").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "instance" / "api_tokens.json").write_text("{}", encoding="utf-8")
    (tmp_path / "instance" / "backups").mkdir()
    (tmp_path / "instance" / "unrelated.txt").write_text("mine", encoding="utf-8")
    (alice,) = register_users(app, 1)
    with app.app_context():
        get_app_state(app).manager.demote_to_cold(alice)
    assert (tmp_path / "instance" / "tiered_state" / "tiered_state.sqlite3").exists()
    result = app.test_cli_runner().invoke(args=["reset-demo", "--yes"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "instance").iterdir()) == ["unrelated.txt"]
    with app.app_context():
        assert get_app_state(app).manager.get_state(alice) is None  # a fresh start
    get_app_state(app).close()


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.s3
def test_reset_demo_on_servers_deletes_the_demos_keys_tables_and_objects_only(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_engine: Any, redis_url: str
) -> None:
    import redis

    from tests.conftest import s3_client, services_config

    config = services_config(request)
    with postgres_engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE not_the_demos (id int)"))
    client = redis.Redis.from_url(redis_url)
    other = config["TIERED_STATE_KEY_PREFIX"].rstrip(":") + "-other:key"
    client.set(other, "kept")
    app = demo({"TESTING": True, **config}, tmp_path)
    alice, bob = register_users(app, 2)
    with app.app_context():
        manager = get_app_state(app).manager
        manager.promote_to_hot(alice)
        manager.demote_to_cold(bob)
    prefix = config["TIERED_STATE_KEY_PREFIX"]
    assert list(client.scan_iter(match=prefix + "*"))
    s3 = s3_client(request.getfixturevalue("s3_endpoint_url"))
    bucket = request.getfixturevalue("s3_bucket")
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) > 0
    result = app.test_cli_runner().invoke(args=["reset-demo", "--yes"])
    assert result.exit_code == 0, result.output
    assert list(client.scan_iter(match=prefix + "*")) == []
    assert client.get(other) == b"kept"
    client.delete(other)
    client.close()
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    tables = sa.inspect(postgres_engine).get_table_names()
    assert tables == ["not_the_demos"]
    with app.app_context():
        assert get_app_state(app).manager.get_state(bob) is None
    get_app_state(app).close()


# -- the secret key ----------------------------------------------------------------------


def test_without_a_secret_key_each_instance_makes_its_own_and_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLASK_SECRET_KEY")
    first, second = (tmp_path / "one", tmp_path / "two")
    assert load_secret_key(str(first)) != load_secret_key(str(second))
    key = (first / SECRET_KEY_FILE).read_text(encoding="utf-8")
    assert len(key) == 64 and load_secret_key(str(first)) == key  # kept across starts
    assert (first / SECRET_KEY_FILE).stat().st_mode & 0o777 == 0o600
    (second / SECRET_KEY_FILE).write_text("short", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="at least 32"):
        load_secret_key(str(second))


def test_the_app_signs_with_the_instance_key_or_the_configured_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLASK_SECRET_KEY")
    monkeypatch.setattr(Flask, "auto_find_instance_path", lambda self: str(tmp_path / "inst"))
    app = create_app({"TESTING": True, "TIERED_STATE_LOCAL_DIR": str(tmp_path / "local")})
    assert app.config["SECRET_KEY"] == (tmp_path / "inst" / SECRET_KEY_FILE).read_text("utf-8")
    get_app_state(app).close()
    monkeypatch.setenv("FLASK_SECRET_KEY", "configured-secret-key-0123456789abcdef")
    app = create_app({"TESTING": True, "TIERED_STATE_LOCAL_DIR": str(tmp_path / "local2")})
    assert app.config["SECRET_KEY"] == "configured-secret-key-0123456789abcdef"
    get_app_state(app).close()
