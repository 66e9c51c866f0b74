"""Users: register -> verify (ACTIVATE) -> suspend -> resume, over HTTP."""

from __future__ import annotations

from flask.testing import FlaskClient

from example_app.core import user_id_for

from .conftest import active_user, error, ok


def test_the_user_lifecycle_and_its_history(client: FlaskClient) -> None:
    body = {"email": "Ada@Example.com", "full_name": "Ada Lovelace", "country": "GB"}
    user = ok(client.post("/api/users", json=body), 201)
    user_id = user["state_id"]
    assert user_id == user_id_for("ada@example.com")
    assert user["status"] == "created" and user["data"]["email"] == "ada@example.com"

    # The actor is the token's (admin), never what the client claims in a header.
    verify = client.post(f"/api/users/{user_id}/verify", json={}, headers={"X-Actor": "mailer"})
    verified = ok(verify)
    assert verified["status"] == "active" and verified["data"]["verified_at"]
    suspended = ok(client.post(f"/api/users/{user_id}/suspend", json={"reason": "fraud check"}))
    assert suspended["status"] == "suspended"
    assert suspended["data"]["suspended_reason"] == "fraud check"
    resumed = ok(client.post(f"/api/users/{user_id}/resume", json={"reason": "cleared"}))
    assert resumed["status"] == "active" and resumed["data"]["suspended_reason"] is None
    assert ok(client.get(f"/api/users/{user_id}")) == resumed

    rows = ok(client.get(f"/api/users/{user_id}/history"))["items"]
    assert [(r["transition"], r["to_status"]) for r in rows] == [
        ("create", "created"),
        ("activate", "active"),
        ("suspend", "suspended"),
        ("resume", "active"),
    ]
    assert rows[1]["actor"] == "admin" and rows[2]["reason"] == "fraud check"


def test_an_admin_suspension_records_a_notification(client: FlaskClient) -> None:
    user_id = active_user(client)["state_id"]
    ok(client.post(f"/api/users/{user_id}/suspend", json={"reason": "fraud check"}))
    items = ok(client.get(f"/api/users/{user_id}/notifications"))["items"]
    assert [(n["data"]["kind"], n["data"]["related_id"]) for n in items] == [
        ("user_suspended", user_id)
    ]
    assert "fraud check" in items[0]["data"]["message"]


def test_listing_users_by_status_and_country(client: FlaskClient) -> None:
    ada = active_user(client, "ada@example.com")
    ok(
        client.post(
            "/api/users", json={"email": "bob@example.com", "full_name": "Bob", "country": "DE"}
        ),
        201,
    )
    active = ok(client.get("/api/users?status=active"))
    assert [u["state_id"] for u in active["items"]] == [ada["state_id"]]
    german = ok(client.get("/api/users?country=DE&per_page=1"))
    assert german["total"] == 1 and german["items"][0]["name"] == "Bob"


def test_a_second_registration_of_an_email_is_a_conflict(client: FlaskClient) -> None:
    active_user(client, "ada@example.com")
    body = {"email": "ADA@example.com", "full_name": "Imposter", "country": "GB"}
    found = error(client.post("/api/users", json=body), 409, "already_exists")
    assert "ada@example.com" in found["message"]


def test_bad_input_is_a_json_4xx(client: FlaskClient) -> None:
    bad = {"email": "not-an-email", "full_name": "", "country": "gb", "admin": True}
    errors = error(client.post("/api/users", json=bad), 422, "validation_error")["details"]
    assert set(errors["errors"]) == {"email", "full_name", "country", "admin"}
    error(
        client.post("/api/users", data="{not json", content_type="application/json"),
        400,
        "invalid_request",
    )
    error(client.post("/api/users", json=[1, 2]), 400, "invalid_request")
    error(client.get("/api/users/usr-0000000000000000"), 404, "not_found")
    error(client.get("/api/users/bad id!"), 400, "invalid_request")
    error(client.get("/api/users?page=0"), 400, "invalid_request")
    error(client.delete("/api/users"), 405, "method_not_allowed")
    error(client.get("/api/no-such-endpoint"), 404, "not_found")


def test_refused_transitions_are_conflicts(client: FlaskClient) -> None:
    user_id = active_user(client)["state_id"]
    refused = error(client.post(f"/api/users/{user_id}/verify", json={}), 409, "invalid_transition")
    assert "already verified" in refused["message"]
    error(client.post(f"/api/users/{user_id}/resume", json={}), 409, "invalid_transition")
    error(client.post(f"/api/users/{user_id}/suspend", json={}), 422, "validation_error")
