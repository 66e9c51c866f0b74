"""No input makes an endpoint of the app answer 500: every route, every method, junk."""

from __future__ import annotations

import itertools

from flask import Flask

from .conftest import active_user, admin_client

JUNK_BODIES = (
    None,
    "",
    "{",
    "[]",
    "null",
    '"text"',
    "1e999",
    '{"email": 5}',
    '{"reason": "' + "x" * 300 + '"}',
    '{"rollout_percentage": true}',
)
JUNK_IDS = ("x", "bad id!", "usr-" + "9" * 16, "a" * 201, "%00")


def test_every_route_answers_junk_with_json_4xx(credit_app: Flask) -> None:
    client = admin_client(credit_app)
    real_id = active_user(client)["state_id"]
    rules = [r for r in credit_app.url_map.iter_rules() if r.rule.startswith("/api/")]
    rules = [r for r in rules if not r.rule.startswith("/api/state/")]  # the extension's own
    assert len(rules) > 25
    checked = 0
    for rule in rules:
        values = (*JUNK_IDS, real_id) if rule.arguments else ("",)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            for value, body in itertools.product(values, JUNK_BODIES):
                path = rule.rule
                for argument in rule.arguments:
                    path = path.replace(f"<{argument}>", value)
                response = client.open(
                    path, method=method, data=body, content_type="application/json"
                )
                assert response.status_code < 500, (method, path, body, response.get_json())
                if response.status_code >= 400:
                    assert response.is_json and response.get_json()["error"], (method, path)
                checked += 1
    assert checked > 1000
