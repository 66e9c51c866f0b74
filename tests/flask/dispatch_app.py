"""An app for ``python -m flask --app tests.flask.dispatch_app state dispatch``, run in a
process of its own by the CLI tests.

Its settings are the ``TIERED_STATE_*`` environment variables. Its one asynchronous
callback, on ``user_suspended``, sleeps ``DISPATCH_APP_DELAY`` seconds (so a test can
signal the dispatcher while a pass is under way), then appends the event id to the file
named by ``DISPATCH_APP_EFFECTS``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from flask import Flask

from flask_tiered_state.app_state import environment_config
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.extension import TieredState


def record_effect(
    state_id: str, old: dict[str, Any] | None, new: dict[str, Any] | None, transition: Any,
    *, event_id: str,
) -> None:  # fmt: skip
    time.sleep(float(os.environ.get("DISPATCH_APP_DELAY", "0")))
    with Path(os.environ["DISPATCH_APP_EFFECTS"]).open("a", encoding="utf-8") as effects:
        effects.write(f"{event_id}\n")


def setup(manager: StateManager) -> None:
    manager.register_callback("user_suspended", record_effect, asynchronous=True)


def create_app() -> Flask:
    app = Flask(__name__, instance_path=os.environ["TIERED_STATE_LOCAL_DIR"])
    app.config.update(environment_config(os.environ))
    TieredState(app, setup=setup)
    return app
