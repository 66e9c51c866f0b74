"""RoleBasedAccess as TIERED_STATE_ACCESS_CONTROL: the role matrix over every action of
the REST API and the dashboard, the identity sources, and the checks of the role map."""

from __future__ import annotations

import itertools
import secrets
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, g, request
from flask.testing import FlaskClient
from werkzeug.local import LocalProxy
from werkzeug.test import TestResponse

from flask_tiered_state.access import API_ACTIONS, TRANSITION_ACTION
from flask_tiered_state.dashboard import DASHBOARD_ACTIONS
from flask_tiered_state.dashboard.forms import CSRF_COOKIE
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.errors import ConfigurationError
from flask_tiered_state.extension import get_app_state
from flask_tiered_state.roles import (
    HTTP_ACTIONS,
    KNOWN_ACTIONS,
    CurrentUserIdentity,
    HeaderIdentity,
    Identity,
    RoleBasedAccess,
)
from tests.conftest import SERVICES, services_config

from .conftest import AppFactory

#: A role map in which every HTTP action is allowed to some roles and denied to others.
ROLES: dict[str, list[str]] = {
    "support": ["states.list", "states.read", "states.history", "dashboard.index",
                "dashboard.state"],
    "agent": ["states.read", "states.transition.suspend", "states.transition.resume",
              "dashboard.states"],
    "auditor": ["states.history", "states.diff", "openapi", "health", "dashboard.events",
                "dashboard.tiers", "dashboard.health", "dashboard.backups"],
    "editor": ["states.register", "states.transition.*", "states.rollback",
               "dashboard.events.retry", "dashboard.timers.cancel"],
    "ops": ["*"],
    "nobody": [],
}  # fmt: skip
ORIGIN = {"Origin": "http://localhost"}
_ids = itertools.count(1)


@dataclass
class Case:
    """One action's request: ``prepare(manager)`` seeds what the request needs (as the
    app's own, trusted code) and returns a state id; ``send(client, headers, state_id)``
    makes the request; ``status`` is its answer when allowed."""

    send: Callable[[FlaskClient, dict[str, str], str], TestResponse]
    status: int = 200
    prepare: Callable[[StateManager], str] | None = None


def seeded(*transitions: str) -> Callable[[StateManager], str]:
    """A new user state, then ``transitions`` applied to it."""

    def prepare(manager: StateManager) -> str:
        state_id = f"u{next(_ids)}"
        manager.register_state(state_id, "user", {"data": {"plan": "free"}})
        for transition in transitions:
            data = {"data": {"plan": "pro"}} if transition == "update" else None
            manager.update_state(state_id, data, transition)
        return state_id

    return prepare


def with_timer(manager: StateManager) -> str:
    state_id = seeded()(manager)
    timer = manager.schedule_transition(state_id, "expire", after=timedelta(hours=1))
    return f"{state_id}/timers/{timer['timer_id']}"


def transition(name: str) -> Callable[[FlaskClient, dict[str, str], str], TestResponse]:
    def send(client: FlaskClient, headers: dict[str, str], state_id: str) -> TestResponse:
        body: dict[str, Any] = {"transition": name}
        if name == "update":
            body["data"] = {"plan": "team"}
        return client.post(f"/api/states/{state_id}/transitions", json=body, headers=headers)

    return send


def dashboard_post(path: str, form: dict[str, str]) -> Callable[..., TestResponse]:
    """A POST from the dashboard's own page: same origin, with the CSRF cookie's token."""

    def send(client: FlaskClient, headers: dict[str, str], state_id: str) -> TestResponse:
        token = secrets.token_urlsafe(32)
        client.set_cookie(CSRF_COOKIE, token, path="/dash/")
        data = {**form, "csrf_token": token}
        return client.post(path.format(state_id), data=data, headers={**headers, **ORIGIN})

    return send


def get(path: str) -> Callable[[FlaskClient, dict[str, str], str], TestResponse]:
    def send(client: FlaskClient, headers: dict[str, str], state_id: str) -> TestResponse:
        return client.get(path.format(state_id), headers=headers)

    return send


#: A request per action that succeeds when the action is allowed.
CASES: dict[str, Case] = {
    "states.list": Case(get("/api/states?type=user")),
    "states.register": Case(
        lambda c, h, _: c.post("/api/states", json={"state_id": f"new{next(_ids)}",
                                                    "type": "user"}, headers=h),
        201,
    ),
    "states.read": Case(get("/api/states/{}"), prepare=seeded()),
    "states.transition.update": Case(transition("update"), prepare=seeded()),
    "states.transition.activate": Case(transition("activate"), prepare=seeded()),
    "states.transition.suspend": Case(transition("SUSPEND"), prepare=seeded()),
    "states.transition.resume": Case(transition("resume"), prepare=seeded("suspend")),
    "states.transition.expire": Case(transition("expire"), prepare=seeded()),
    "states.transition.delete": Case(transition("delete"), prepare=seeded()),
    # A body naming no transition: allowed, the view refuses it (422).
    TRANSITION_ACTION: Case(transition("teleport"), 422, prepare=seeded()),
    "states.history": Case(get("/api/states/{}/history"), prepare=seeded("activate")),
    "states.diff": Case(get("/api/states/{}/diff?from=1&to=2"), prepare=seeded("update")),
    "states.rollback": Case(
        lambda c, h, s: c.post(f"/api/states/{s}/rollback", json={"to_version": 1}, headers=h),
        prepare=seeded("update"),
    ),
    "health": Case(get("/api/health")),
    "openapi": Case(get("/api/openapi.json")),
    "dashboard.index": Case(get("/dash/")),
    "dashboard.states": Case(get("/dash/states")),
    "dashboard.state": Case(get("/dash/states/{}"), prepare=seeded()),
    "dashboard.events": Case(get("/dash/events")),
    "dashboard.tiers": Case(get("/dash/tiers")),
    "dashboard.health": Case(get("/dash/health")),
    "dashboard.backups": Case(get("/dash/backups")),
    "dashboard.events.retry": Case(dashboard_post("/dash/events/retry", {"all_dead": "1"}), 303),
    "dashboard.timers.cancel": Case(
        dashboard_post("/dash/states/{}/cancel", {}), 303, prepare=with_timer
    ),
}  # fmt: skip


def role_app(make_app: AppFactory, roles: dict[str, list[str]] = ROLES, **config: Any) -> Flask:
    access = RoleBasedAccess(roles, identity=HeaderIdentity("X-Roles", actor_header="X-User"))
    return make_app(
        TIERED_STATE_API_PREFIX="/api",
        TIERED_STATE_DASHBOARD_PREFIX="/dash",
        TIERED_STATE_ACCESS_CONTROL=access,
        **config,
    )


def test_the_matrix_covers_every_action_and_each_is_allowed_and_denied_somewhere() -> None:
    assert set(CASES) == set(HTTP_ACTIONS) == {*API_ACTIONS, *DASHBOARD_ACTIONS.values()}
    access = RoleBasedAccess(ROLES, identity="header:X-Roles")
    for action in HTTP_ACTIONS:
        allowed = {role for role in ROLES if access.allows(role, action)}
        assert allowed and allowed != set(ROLES), action


@pytest.fixture(params=["embedded", SERVICES])
def matrix_app(request: pytest.FixtureRequest) -> Flask:
    """The role map's app, on each backend set."""
    config = services_config(request) if request.param == "services" else {}
    # Requested after the services, so the app is closed before their fixtures clean up.
    make_app: AppFactory = request.getfixturevalue("make_app")
    return role_app(make_app, **config)


@pytest.mark.parametrize("role", list(ROLES))
def test_every_action_answers_as_the_role_map_says(matrix_app: Flask, role: str) -> None:
    access = matrix_app.config["TIERED_STATE_ACCESS_CONTROL"]
    manager = get_app_state(matrix_app).manager
    client = matrix_app.test_client()
    headers = {"X-Roles": role, "X-User": f"{role}-user"}
    wrong: list[str] = []
    for action, case in CASES.items():
        state_id = case.prepare(manager) if case.prepare else ""
        rows = manager.history.count()
        response = case.send(client, headers, state_id)
        allowed = access.allows(role, action)
        expected = case.status if allowed else 403
        if response.status_code != expected:
            wrong.append(f"{action}: {response.status_code}, expected {expected}")
        elif not allowed and manager.history.count() != rows:
            wrong.append(f"{action}: denied, but something was written")
        response.close()
    assert wrong == [], f"role {role!r}: " + "; ".join(wrong)


def test_a_denial_names_the_action_and_writes_nothing(make_app: AppFactory) -> None:
    app = role_app(make_app)
    manager = get_app_state(app).manager
    manager.register_state("alice", "user", {"data": {"plan": "free"}})
    client = app.test_client()
    agent = {"X-Roles": "agent", "X-User": "ann"}
    denied = client.post("/api/states/alice/transitions", json={"transition": "delete"},
                         headers=agent)  # fmt: skip
    assert denied.status_code == 403
    assert denied.json is not None
    assert denied.json["error"] == "forbidden"
    assert denied.json["details"]["action"] == "states.transition.delete"
    assert manager.get_state("alice") is not None and manager.history.count() == 1
    page = client.get("/dash/tiers", headers=agent)
    assert page.status_code == 403 and page.mimetype == "text/html"


def test_the_actor_is_recorded_and_several_roles_add_up(make_app: AppFactory) -> None:
    app = role_app(make_app)
    manager = get_app_state(app).manager
    client = app.test_client()
    both = {"X-Roles": "agent, editor", "X-User": "ann@example.com"}
    assert client.post("/api/states", json={"state_id": "bob", "type": "user"},
                       headers=both).status_code == 201  # fmt: skip
    assert client.post("/api/states/bob/transitions", json={"transition": "suspend"},
                       headers=both).status_code == 200  # fmt: skip
    assert client.get("/api/states/bob", headers=both).status_code == 200  # agent reads
    assert client.get("/api/states", headers=both).status_code == 403  # neither lists
    assert [row["actor"] for row in manager.get_state_history("bob")] == ["ann@example.com"] * 2


def test_without_an_identity_the_answer_is_401(make_app: AppFactory) -> None:
    app = role_app(make_app)
    client = app.test_client()
    for headers in ({}, {"X-Roles": " , "}, {"X-Roles": "ops"}):  # no X-User: no identity
        response = client.get("/api/states", headers=headers)
        assert response.status_code == 401, headers
        assert response.json is not None
        assert "X-Roles or X-User header is missing" in response.json["message"]
    page = client.get("/dash/", headers={"X-User": "ann"})
    assert page.status_code == 401 and page.mimetype == "text/html"
    # A role the map does not have grants nothing: identified, so 403.
    assert client.get("/api/states", headers={"X-Roles": "admin", "X-User": "x"}).status_code == 403


def test_the_header_alone_names_the_actor_too(make_app: AppFactory) -> None:
    access = RoleBasedAccess(ROLES, identity="header:X-Roles")
    app = make_app(TIERED_STATE_API_PREFIX="/api", TIERED_STATE_ACCESS_CONTROL=access)
    client = app.test_client()
    response = client.post("/api/states", json={"state_id": "carl", "type": "user"},
                           headers={"X-Roles": "editor,agent"})  # fmt: skip
    assert response.status_code == 201
    history = get_app_state(app).manager.get_state_history("carl")
    assert history[0]["actor"] == "editor,agent"
    message = client.get("/api/states").json
    assert message is not None and "the X-Roles header is missing" in message["message"]


def test_the_extension_gives_the_role_map_to_the_manager(make_app: AppFactory) -> None:
    app = role_app(make_app)
    access = app.config["TIERED_STATE_ACCESS_CONTROL"]
    state = get_app_state(app)
    assert state.manager.roles is access
    state.close()  # a rebuilt manager gets it as well
    assert state.manager.roles is access
    plain = make_app(TIERED_STATE_ACCESS_CONTROL=lambda request, action: True)
    assert get_app_state(plain).manager.roles is None


def test_the_openapi_document_declares_the_identity_header(make_app: AppFactory) -> None:
    app = role_app(make_app)
    document = app.test_client().get("/api/openapi.json", headers={"X-Roles": "ops",
                                                                   "X-User": "o"}).json  # fmt: skip
    assert document is not None
    assert document["components"]["securitySchemes"] == {
        "roleHeader": {
            "type": "apiKey",
            "in": "header",
            "name": "X-Roles",
            "description": "The caller's roles, set by the authenticating proxy.",
        }
    }


# -- identity sources ----------------------------------------------------------------------


def test_a_callable_identity(make_app: AppFactory) -> None:
    users: dict[str, Identity | str] = {"t-ann": Identity("ann", ("support", "agent")),
                                        "t-ops": "ops"}  # fmt: skip

    def identity(req: Any) -> Identity | str | None:
        return users.get(req.headers.get("Authorization", "").removeprefix("Bearer "))

    access = RoleBasedAccess(ROLES, identity=identity)
    app = make_app(TIERED_STATE_API_PREFIX="/api", TIERED_STATE_ACCESS_CONTROL=access)
    client = app.test_client()
    ops = {"Authorization": "Bearer t-ops"}
    ann = {"Authorization": "Bearer t-ann"}
    assert client.post("/api/states", json={"state_id": "d", "type": "user"},
                       headers=ops).status_code == 201  # fmt: skip
    assert client.post("/api/states/d/transitions", json={"transition": "suspend"},
                       headers=ann).status_code == 200  # fmt: skip
    assert client.post("/api/states/d/transitions", json={"transition": "activate"},
                       headers=ann).status_code == 403  # fmt: skip
    response = client.get("/api/states", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401 and response.json is not None
    assert "no identity" in response.json["message"]
    actors = [r["actor"] for r in get_app_state(app).manager.get_state_history("d")]
    assert actors == ["ops", "ann"]


def test_an_identity_source_answering_something_else_is_a_configuration_error() -> None:
    answer: Any = 42
    access = RoleBasedAccess(ROLES, identity=lambda req: answer)
    with Flask(__name__).test_request_context("/"), pytest.raises(ConfigurationError) as info:
        access(request, "states.read")
    assert "must answer an Identity(actor, roles), a role name, or None" in str(info.value)


class User:
    """A stand-in of a Flask-Login user (UserMixin's attributes)."""

    def __init__(self, user_id: str | None, roles: object) -> None:
        self.id, self.roles = user_id, roles
        self.is_authenticated = user_id is not None

    def get_id(self) -> str | None:
        return self.id


class Role:
    """A Flask-Security-like role object."""

    def __init__(self, name: str) -> None:
        self.name = name


def test_a_flask_login_like_current_user(make_app: AppFactory) -> None:
    people = {
        "ann": User("17", ["support", "agent"]),
        "bob": User("18", "editor"),  # one role as a string
        "cat": User("19", [Role("auditor"), Role("unknown")]),
        "anonymous": User(None, []),
        "nobody": User("20", None),
    }
    access = RoleBasedAccess(
        ROLES, identity=CurrentUserIdentity(user=lambda: people.get(g.get("who", "")))
    )
    app = make_app(TIERED_STATE_API_PREFIX="/api", TIERED_STATE_ACCESS_CONTROL=access)

    @app.before_request
    def log_in() -> None:  # what Flask-Login's user loader does, from a header here
        g.who = request.headers.get("X-Who", "")

    get_app_state(app).manager.register_state("e", "user", {"data": {}})
    client = app.test_client()

    def status(who: str, method: str, path: str, **kwargs: Any) -> int:
        return client.open(path, method=method, headers={"X-Who": who}, **kwargs).status_code

    assert status("ann", "GET", "/api/states") == 200
    assert status("bob", "GET", "/api/states") == 403
    assert status("bob", "POST", "/api/states/e/transitions", json={"transition": "expire"}) == 200
    assert status("cat", "GET", "/api/states/e/history") == 200
    assert status("cat", "GET", "/api/states/e") == 403
    assert status("nobody", "GET", "/api/health") == 403  # logged in, no role
    assert status("anonymous", "GET", "/api/health") == 401
    assert status("", "GET", "/api/health") == 401  # no user at all
    history = get_app_state(app).manager.get_state_history("e")
    assert history[-1]["actor"] == "18"  # get_id()


@pytest.fixture
def fake_flask_login(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A module standing in for Flask-Login (not installed here): ``current_user``."""
    module = types.ModuleType("flask_login")
    module.current_user = LocalProxy(lambda: g.get("user"))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "flask_login", module)
    yield


@pytest.mark.usefixtures("fake_flask_login")
def test_identity_flask_login_reads_its_current_user(make_app: AppFactory) -> None:
    access = RoleBasedAccess(ROLES, identity="flask-login")
    app = make_app(TIERED_STATE_API_PREFIX="/api", TIERED_STATE_ACCESS_CONTROL=access)

    @app.before_request
    def log_in() -> None:
        if request.headers.get("X-Who") == "ann":
            g.user = User("ann", ["support"])

    client = app.test_client()
    assert client.get("/api/states", headers={"X-Who": "ann"}).status_code == 200
    assert client.get("/api/health", headers={"X-Who": "ann"}).status_code == 403
    response = client.get("/api/states")
    assert response.status_code == 401 and response.json is not None
    assert response.json["message"] == "The request carries no identity: no user is logged in."
    assert access.openapi_security_schemes == {
        "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "session"}
    }


def test_identity_flask_login_without_flask_login(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "flask_login", None)  # import fails
    with pytest.raises(ConfigurationError, match="needs Flask-Login"):
        RoleBasedAccess(ROLES, identity="flask-login")


# -- the role map's checks -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("roles", "words"),
    [
        ({"support": ["states.raed"]}, "'states.raed', which is not a known action. Did you "
                                       "mean 'states.read'?"),
        ({"ops": ["states.transitions.*"]}, "'states.transitions.*', which matches no known"),
        ({"ops": "*"}, "are a list of actions or patterns"),
        ({"ops": ["states read"]}, "invalid permission 'states read'"),
        ({"ops": [7]}, "invalid permission 7"),
        ({"": ["*"]}, "Invalid role name ''"),
        ({"on call": ["*"]}, "Invalid role name 'on call'"),
        ({}, "non-empty mapping of role name to permissions"),
        (["ops"], "non-empty mapping of role name to permissions"),
    ],
)  # fmt: skip
def test_a_bad_role_map_is_refused_at_construction(roles: Any, words: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        RoleBasedAccess(roles, identity="header:X-Roles")
    assert words in str(info.value)


def test_an_unknown_action_error_lists_the_known_actions() -> None:
    with pytest.raises(ConfigurationError) as info:
        RoleBasedAccess({"ops": ["billing.charge"]}, identity="header:X-Roles")
    message = str(info.value)
    assert all(action in message for action in KNOWN_ACTIONS)
    assert "Pass actions=[...] for actions of your own" in message


@pytest.mark.parametrize("identity", ["header:", "cookie:session", "flask_login", None, 42])
def test_a_bad_identity_is_refused(identity: Any) -> None:
    with pytest.raises(ConfigurationError, match="identity must be a callable"):
        RoleBasedAccess({"ops": ["*"]}, identity=identity)
    with pytest.raises(ConfigurationError, match="header name"):
        HeaderIdentity("X Roles")
    with pytest.raises(ConfigurationError, match="roles_attribute"):
        CurrentUserIdentity(roles_attribute="the roles", user=lambda: None)


def test_patterns_actions_of_ones_own_and_the_bare_transition_action() -> None:
    access = RoleBasedAccess(
        {
            "billing": ["billing.*", "states.read"],
            "mover": ["states.transition.suspend"],
            "ops": ["*"],
            "viewer": ["dashboard.*"],
        },
        identity="header:X-Roles",
        actions=["billing.charge", "billing.refund"],
    )
    assert access.allowed_actions("billing") == ("states.read", "billing.charge", "billing.refund")
    assert access.allows("ops", "something.new")  # "*" allows actions not declared too
    assert not access.allows("billing", "something.new")
    assert not access.allows("ghost", "states.read")
    # A role allowed a transition also gets the action of a body naming none.
    assert access.allowed_actions("mover") == ("states.transition.suspend", TRANSITION_ACTION)
    assert access.allowed_actions("viewer") == tuple(
        a for a in KNOWN_ACTIONS if a.startswith("dashboard.")
    )
    assert access.role_names == ("billing", "mover", "ops", "viewer")
    assert access.permissions("billing") == ("billing.*", "states.read")
    assert repr(access) == (
        "RoleBasedAccess(roles=['billing', 'mover', 'ops', 'viewer'], "
        "identity=HeaderIdentity('X-Roles'))"
    )
    with pytest.raises(ConfigurationError, match="no \\*"):
        RoleBasedAccess({"ops": ["*"]}, identity="header:X-Roles", actions=["billing.*"])
    with pytest.raises(ConfigurationError, match="list of action names"):
        RoleBasedAccess({"ops": ["*"]}, identity="header:X-Roles", actions="billing.charge")


def test_an_identity_checks_its_fields() -> None:
    assert Identity("ann", "support").roles == ("support",)
    assert Identity("ann", ["a", "b"]).roles == ("a", "b")
    for actor, roles in (("", ()), (None, ()), ("ann", 3), ("ann", [1])):
        with pytest.raises(ConfigurationError):
            Identity(actor, roles)  # type: ignore[arg-type]


def test_usable_as_an_import_string(make_app: AppFactory, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    (tmp_path / "my_access.py").write_text(
        "from flask_tiered_state.roles import RoleBasedAccess\n"
        "access = RoleBasedAccess({'ops': ['*']}, identity='header:X-Roles')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    app = make_app(TIERED_STATE_API_PREFIX="/api", TIERED_STATE_ACCESS_CONTROL="my_access:access")
    assert app.test_client().get("/api/states", headers={"X-Roles": "ops"}).status_code == 200
    assert get_app_state(app).manager.roles is sys.modules["my_access"].access
