"""docs/cli.rst documents every ``flask state`` command with all its options and arguments,
and nothing that does not exist."""

from __future__ import annotations

import click

from flask_tiered_state.cli import state_cli

from .support import DOCS, blocks

PAGE = DOCS / "cli.rst"
PROGRAM = "flask state "


def documented(text: str) -> dict[str, set[str]]:
    """``{command: {"--option", "ARGUMENT", ...}}`` from the page's program/option directives."""
    found: dict[str, set[str]] = {}
    current: set[str] | None = None
    for block in blocks(text):
        if block.name == "program":
            assert block.argument.startswith(PROGRAM), block.argument
            current = found.setdefault(block.argument[len(PROGRAM) :], set())
        elif block.name == "option":
            assert current is not None, f"option {block.argument!r} before any program"
            current.add(block.argument.split()[0])
    return found


def actual(group: click.Group, prefix: str = "") -> dict[str, set[str]]:
    """The same for the real click group (``--help`` left out); a subgroup's commands
    are ``"group command"``."""
    commands: dict[str, set[str]] = {}
    for name, command in group.commands.items():
        names: set[str] = set()
        for param in command.params:
            if isinstance(param, click.Argument):
                names.add(param.human_readable_name)
            else:
                names.add(max(param.opts, key=len))
        commands[prefix + name] = names
        if isinstance(command, click.Group):
            commands.update(actual(command, f"{prefix}{name} "))
    return commands


def differences(docs: dict[str, set[str]], real: dict[str, set[str]]) -> list[str]:
    found = [f"command {c!r} is not documented" for c in sorted(real.keys() - docs.keys())]
    found += [f"{c!r} is documented but does not exist" for c in sorted(docs.keys() - real.keys())]
    for command in sorted(docs.keys() & real.keys()):
        for name in sorted(real[command] - docs[command]):
            found.append(f"flask state {command}: {name} is not documented")
        for name in sorted(docs[command] - real[command]):
            found.append(f"flask state {command}: {name} is documented but does not exist")
    return found


def test_every_command_option_and_argument_is_documented() -> None:
    docs = documented(PAGE.read_text(encoding="utf-8"))
    assert differences(docs, actual(state_cli)) == []


def test_the_check_notices_missing_and_invented_entries() -> None:
    docs = documented(PAGE.read_text(encoding="utf-8"))
    real = actual(state_cli)
    docs.pop("init-db")
    docs["list"].discard("--per-page")
    docs["show"].add("--color")
    assert differences(docs, real) == [
        "command 'init-db' is not documented",
        "flask state list: --per-page is not documented",
        "flask state show: --color is documented but does not exist",
    ]
