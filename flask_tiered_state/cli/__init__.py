"""``flask state ...``: inspect and operate an app's domain states.

The group is registered twice over on purpose, as the same object: the
``flask.commands`` entry point (``flask_tiered_state.cli:state_cli``) makes
``flask state`` appear for every app (the commands load the app like any Flask
command), and ``init_app`` adds it to ``app.cli`` when ``TIERED_STATE_CLI`` is True,
so ``app.test_cli_runner()`` and custom command groups see it too. Either way each
command first checks the app: without the extension, or with
``TIERED_STATE_CLI = False``, it exits with one line saying so.

Read commands take ``--json`` (stable, machine-readable output on stdout);
commands over several states show a progress bar on stderr. Errors exit with
status 1 and one line (``Error: ...``); bad usage exits with 2.

The package: :mod:`.group` (the group, the command decorator, the app's manager),
:mod:`.options` (shared options and argument parsing), :mod:`.output` (printing),
:mod:`.read_commands` and :mod:`.write_commands`.
"""

from __future__ import annotations

# Importing the command modules registers their commands on the group.
from . import read_commands, write_commands  # noqa: F401
from .group import state_cli

__all__ = ["state_cli"]
