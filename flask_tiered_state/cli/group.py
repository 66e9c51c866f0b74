"""The ``flask state`` group, its command decorator and the app's manager."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import click
from flask.cli import AppGroup

from ..domain.context import correlation_scope
from ..domain.manager import StateManager
from ..errors import TieredStateError

__all__ = ["app_manager", "command", "state_cli"]

F = TypeVar("F", bound=Callable[..., Any])

#: The ``flask state`` command group.
state_cli = AppGroup("state", help="Inspect and operate the app's domain states.")


def app_manager() -> StateManager:
    """The current app's manager; exit 1 when the app has no extension or no CLI."""
    from ..extension import get_app_state

    try:
        state = get_app_state()
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    if not state.settings.cli:
        raise click.ClickException(
            f"The 'flask state' commands are disabled for app {state.app_name!r} "
            "(TIERED_STATE_CLI = False)."
        )
    return state.manager


def command(name: str) -> Callable[[F], F]:
    """A ``flask state`` command that runs under a ``cli-<hex>`` correlation id and
    whose library errors exit 1 with one line."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                with correlation_scope(f"cli-{uuid.uuid4().hex}"):
                    return fn(*args, **kwargs)
            except TieredStateError as exc:
                raise click.ClickException(exc.message) from None

        state_cli.command(name)(run)
        return fn

    return decorate
