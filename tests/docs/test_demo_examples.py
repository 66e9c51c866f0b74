"""Every example of docs/rest-api.rst and docs/cli.rst runs against a freshly seeded demo.

The examples are the ``.. code-block:: console`` blocks of the two pages. Each ``$ ``
line is a command (it goes on on the next line after a ``\\`` or inside a quote), and
the lines up to the next command are what it prints. The commands of a page run in page order
against one demo app (``example_app``) seeded as ``flask --app example_app:create_app
seed-demo`` seeds it, so an example may use what an earlier one on its page made:

- ``curl -si ... "$API/..."`` is sent through Flask's test client (``$TOKEN`` is the
  demo's admin token). Its output is the status line (its status must be the answer's), the headers
  shown (each must be in the answer), a blank line and the body: JSON, shown indented
  and shortened with ``...``, matched as a pattern (see :func:`json_problems`); a long
  string may be wrapped at a space.
- ``flask ... state ...`` (and the demo's own ``flask`` commands) run through click's
  runner; every line shown must be printed, in order (``...`` inside a line matches any
  text, a line of ``...`` any lines; runs of spaces count as one; a time shown
  matches any time, and a backup's or checkpoint's id any id, which then stands for
  it in the commands that follow). It must exit with 0, or 1 when an ``Error:`` line is
  shown, 2 when a ``Usage:`` line is, or with what an ``echo $?`` after it shows. A
  line ``^C`` is Ctrl-C: SIGINT is sent to the command once it handles the signal, a
  second and a half later (a ``dispatch --report-every 1`` has printed its totals by
  then).
- ``sqlite3 instance/... "SQL"`` runs the SQL on the demo's SQLite database (the WARM
  tier's file of its instance folder), as the ``sqlite3`` shell does: a change made
  behind the application's back. The rows it selects print as the shell prints them
  (``|`` between the columns).
- ``dd if=/dev/zero of=instance/... bs=1 seek=N count=M conv=notrunc`` overwrites ``M``
  bytes at offset ``N`` of a file of the instance folder with zeros: a damaged file.
- After either of these the app is built again, as the next ``flask`` command would be
  in a process of its own, so that no copy cached in memory hides the change.
- ``export NAME=value`` sets a variable of the later commands; ``# ...`` is a comment.

A block that cannot run against the demo is preceded by a comment ``.. not-run: why``;
the reason is required, and everything else runs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask

from example_app import create_app
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.extension import get_app_state

from ..conftest import s3_client
from ..example_app.conftest import demo_environment
from .support import DOCS

PAGES = ("rest-api", "cli")
TOKENS = {"admin": "admin-token-of-the-docs-examples", "viewer": "viewer-token-of-the-docs"}
ELLIPSIS = "..."
_BLOCK_RE = re.compile(r"^(?P<indent> *)\.\. code-block:: console\s*$")
_NOT_RUN_RE = re.compile(r"^ *\.\. not-run: *(?P<reason>.*)$")
_MORE = "\u2026more"  # a bare ``...`` in an object or a list, after parsing
#: The S3 server of ``make run-services`` (moto's), which the test's moto server stands for;
#: the examples' bucket is that of ``make run-services`` too.
DEMO_S3 = "http://127.0.0.1:9100"
DEMO_BUCKET = "credit-demo"
#: A line of an example's output: the terminal's echo of Ctrl-C.
CTRL_C = "^C"
#: A backup's or checkpoint's id: made when it is taken, so the docs' ids stand for the
#: ones printed in their place, in the outputs and the commands that follow.
ARCHIVE_ID = re.compile(r"\d{8}T\d{12}Z-[0-9a-f]{6}")
#: A time of a state or an archive, ISO 8601: any other time matches it.
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:\+00:00|Z)?")


@dataclass
class Command:
    """One ``$`` command of an example and the lines shown after it."""

    line: int
    text: str
    output: list[str] = field(default_factory=list)


@dataclass
class Example:
    """A console block: its commands, and why it does not run (``None``: it runs)."""

    page: str
    line: int
    commands: list[Command]
    not_run: str | None


def examples(page: str, text: str | None = None) -> list[Example]:
    """The console blocks of ``docs/<page>.rst`` (or of ``text``), in page order."""
    if text is None:
        text = (DOCS / f"{page}.rst").read_text(encoding="utf-8")
    lines = text.splitlines()
    found: list[Example] = []
    for index, line in enumerate(lines):
        match = _BLOCK_RE.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        body: list[tuple[int, str]] = []
        cursor = index + 1
        while cursor < len(lines) and (
            not lines[cursor].strip() or len(lines[cursor]) - len(lines[cursor].lstrip()) > indent
        ):
            body.append((cursor + 1, lines[cursor]))
            cursor += 1
        margin = min(len(b) - len(b.lstrip()) for _, b in body if b.strip())
        previous = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        reason = _NOT_RUN_RE.match(previous)
        found.append(
            Example(
                page,
                index + 1,
                _commands([(n, b[margin:]) for n, b in body]),
                reason["reason"].strip() if reason else None,
            )
        )
    return found


def _commands(body: list[tuple[int, str]]) -> list[Command]:
    commands: list[Command] = []
    continued = False
    for number, line in body:
        if continued:
            commands[-1].text += "\n" + line.strip()
        elif line.startswith("$ "):
            commands.append(Command(number, line[2:].strip()))
        else:
            if commands:
                commands[-1].output.append(line)
            continue
        text = commands[-1].text
        continued = text.endswith("\\") or (not text.startswith("#") and _open_quote(text))
    for command in commands:
        while command.output and not command.output[-1].strip():
            command.output.pop()
    return commands


def _open_quote(text: str) -> bool:
    """Whether a command goes on on the next line: a quote is still open."""
    try:
        shlex.split(text)
    except ValueError:
        return True
    return False


# -- matching ---------------------------------------------------------------------------


def _regex(pattern: str) -> str:
    """``...`` matches any text; an archive id any archive id (captured), a time any
    time of the same form."""
    pieces: list[str] = []
    for piece in re.split(f"({ARCHIVE_ID.pattern}|{TIME.pattern})", pattern):
        if ARCHIVE_ID.fullmatch(piece):
            pieces.append(f"({ARCHIVE_ID.pattern})")
        elif TIME.fullmatch(piece):
            pieces.append(TIME.pattern)
        else:
            pieces.append(".*".join(re.escape(part) for part in piece.split(ELLIPSIS)))
    return "".join(pieces)


def text_matches(pattern: str, actual: str) -> bool:
    """``pattern`` with each ``...`` matching any text (nothing included), and an
    archive id any archive id."""
    return re.fullmatch(_regex(pattern), actual, re.S) is not None


def archive_ids(documented: list[str], actual: list[str]) -> dict[str, str]:
    """The archive ids the docs show, each mapped to the one printed in its place."""
    found: dict[str, str] = {}
    cursor = 0
    for line in documented:
        shown = ARCHIVE_ID.findall(line)
        if not shown:
            continue
        for index in range(cursor, len(actual)):
            match = re.fullmatch(_regex(" ".join(line.split())), " ".join(actual[index].split()))
            if match:
                found.update(zip(shown, match.groups(), strict=True))
                cursor = index + 1
                break
    return found


def lines_problems(documented: list[str], actual: list[str]) -> list[str]:
    """What of the ``documented`` lines is not in ``actual``, in order (a line ``...``
    stands for any lines)."""

    def match(d: int, a: int) -> bool:
        if d == len(documented):
            return a == len(actual)
        if documented[d].strip() == ELLIPSIS:
            return any(match(d + 1, rest) for rest in range(a, len(actual) + 1))
        return (  # runs of spaces are one: tables may be aligned otherwise
            a < len(actual)
            and text_matches(" ".join(documented[d].split()), " ".join(actual[a].split()))
            and match(d + 1, a + 1)
        )

    if match(0, 0):
        return []
    return [
        "it prints:\n" + "\n".join(actual) + "\nnot what the docs show:\n" + "\n".join(documented)
    ]


def parse_pattern(text: str) -> Any:
    """A JSON pattern: JSON in which a bare ``...`` stands for more members or items."""
    out: list[str] = []
    stack: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == '"':
            end = index + 1
            while text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            out.append(re.sub(r"\s*\n\s*", " ", text[index : end + 1]))  # wrapped at a space
            index = end + 1
            continue
        if text.startswith(ELLIPSIS, index):
            before = "".join(out).rstrip()[-1:]
            if before == ":":  # a value left out: any value
                out.append(f'"{ELLIPSIS}"')
            else:  # a member or item left out: any others
                out.append(f'"{_MORE}": null' if stack[-1] == "{" else f'"{_MORE}"')
            index += len(ELLIPSIS)
            continue
        if char in "{[":
            stack.append(char)
        elif char in "}]":
            stack.pop()
        out.append(char)
        index += 1
    return json.loads("".join(out))


def json_problems(pattern: Any, actual: Any, path: str = "$") -> list[str]:
    """How ``actual`` differs from ``pattern``: an object without ``...`` has exactly its
    keys, with ``...`` at least them; a list's ``...`` stands for any items; the string
    ``"..."`` matches any value, and ``...`` inside a string any text."""
    if pattern == ELLIPSIS:
        return []
    if isinstance(pattern, dict):
        if not isinstance(actual, dict):
            return [f"{path}: {json.dumps(actual)} is not an object"]
        keys = set(pattern) - {_MORE}
        problems = [f"{path}: no {key!r}" for key in sorted(keys - set(actual))]
        if _MORE not in pattern:
            problems += [f"{path}: {key!r} is not shown" for key in sorted(set(actual) - keys)]
        for key in sorted(keys & set(actual)):
            problems += json_problems(pattern[key], actual[key], f"{path}.{key}")
        return problems
    if isinstance(pattern, list):
        if isinstance(actual, list) and _MORE not in pattern and len(pattern) == len(actual):
            return [
                problem
                for number, (item, got) in enumerate(zip(pattern, actual, strict=True))
                for problem in json_problems(item, got, f"{path}[{number}]")
            ]
        if not isinstance(actual, list) or not _list_matches(pattern, actual, path):
            more = json.dumps(_MORE)
            shown = json.dumps(pattern).replace(f"{more}: null", ELLIPSIS).replace(more, ELLIPSIS)
            return [f"{path}: {json.dumps(actual)} does not match {shown}"]
        return []
    if isinstance(pattern, str) and isinstance(actual, str) and ELLIPSIS in pattern:
        return [] if text_matches(pattern, actual) else [f"{path}: {actual!r} is not {pattern!r}"]
    if pattern != actual or type(pattern) is not type(actual):
        return [f"{path}: {json.dumps(actual)} is not {json.dumps(pattern)}"]
    return []


def _list_matches(pattern: list[Any], actual: list[Any], path: str) -> bool:
    if not pattern:
        return not actual
    if pattern[0] == _MORE:
        return any(_list_matches(pattern[1:], actual[n:], path) for n in range(len(actual) + 1))
    return (
        bool(actual)
        and not json_problems(pattern[0], actual[0], path)
        and _list_matches(pattern[1:], actual[1:], path)
    )


# -- running ----------------------------------------------------------------------------


class Demo:
    """The demo app on the embedded defaults, its instance folder in ``folder``, seeded
    as ``flask --app example_app:create_app seed-demo`` seeds it."""

    def __init__(
        self, folder: Path, monkeypatch: pytest.MonkeyPatch, s3_endpoint_url: str = DEMO_S3
    ) -> None:
        self.monkeypatch = monkeypatch
        self.s3_endpoint_url = s3_endpoint_url
        self.folder = folder
        monkeypatch.setattr(Flask, "auto_find_instance_path", lambda app: str(folder))
        self.variables: dict[str, str] = {}
        self.ids: dict[str, str] = {}
        self.app = create_app({"TESTING": True})
        seeded = self.app.test_cli_runner().invoke(args=["seed-demo"])
        assert seeded.exit_code == 0, seeded.output

    def close(self) -> None:
        get_app_state(self.app).close()
        StateManager.reset_instance()

    def configure(self, name: str, value: str) -> None:
        """An exported setting: the app is built again with it, on the same data."""
        self.monkeypatch.setenv(name, value)
        self.reload()

    def reload(self) -> None:
        """Build the app again, on the same data (a new process would)."""
        self.close()
        self.app = create_app({"TESTING": True})

    def instance_file(self, path: str) -> Path:
        """A path of the docs (``instance/...``) as the demo's file."""
        if not path.startswith("instance/"):
            raise ValueError(f"the example uses another file than the demo's: {path}")
        return self.folder.parent / path

    def run(self, commands: list[Command], where: str) -> list[str]:
        """Run the commands in order; what went otherwise than documented."""
        problems: list[str] = []
        for index, command in enumerate(commands):
            following = commands[index + 1] if index + 1 < len(commands) else None
            try:
                found = self._run_one(command, following)
            except Exception as exc:  # a broken example is reported, not raised
                found = [f"{type(exc).__name__}: {exc}"]
            problems += [f"{where}:{command.line}: $ {command.text}\n  {p}" for p in found]
        return problems

    def _run_one(self, command: Command, following: Command | None) -> list[str]:
        text = command.text
        if text.startswith("#") or text == "echo $?":
            return []  # a comment; an exit status, checked with its command
        words = shlex.split(self._expand(text.replace("\\\n", "")))  # as a shell does
        if words[0] == "export":
            name, _, value = words[1].partition("=")
            self.variables[name] = TOKENS["admin"] if name == "TOKEN" else value
            if name.startswith(("TIERED_STATE_", "CREDIT_")):
                self.configure(name, value)
            return []
        if words[0] == "curl":
            return self._curl(words[1:], command.output)
        if words[0] in ("sqlite3", "dd"):
            problems = (self._sqlite if words[0] == "sqlite3" else self._dd)(
                words[1:], command.output
            )
            self.reload()
            return problems
        if words[0] == "flask":
            status = None
            if following is not None and following.text == "echo $?":
                status = int(following.output[0])
            return self._flask(words[1:], command.output, status)
        return [f"the test does not know the command {words[0]!r}"]

    def _expand(self, text: str) -> str:
        text = text.replace(DEMO_S3, self.s3_endpoint_url)
        for shown, made in self.ids.items():
            text = text.replace(shown, made)
        for name, value in self.variables.items():
            text = text.replace(f"${name}", value).replace(f"${{{name}}}", value)
        return text

    def _curl(self, words: list[str], output: list[str]) -> list[str]:
        method, url, body = "GET", "", None
        headers: dict[str, str] = {}
        iterator = iter(words)
        for word in iterator:
            if word in ("-s", "-i", "-si", "-is"):
                continue
            if word == "-X":
                method = next(iterator)
            elif word == "-H":
                name, _, value = next(iterator).partition(":")
                headers[name.strip()] = value.strip()
            elif word in ("-d", "--data"):
                body = next(iterator)
                method = "POST" if method == "GET" else method
            elif word == "--oauth2-bearer":
                headers["Authorization"] = f"Bearer {next(iterator)}"
            elif word.startswith("http"):
                url = word
            else:
                return [f"the test does not know the curl option {word!r}"]
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        response = self.app.test_client().open(target, method=method, headers=headers, data=body)
        if not output or not output[0].startswith("HTTP/1.1 "):
            return ["a curl example shows its status line (curl -si)"]
        problems: list[str] = []
        if output[0][len("HTTP/1.1 ") :] != response.status:
            problems.append(f"it answers {response.status}, the docs say {output[0]}")
        blank = output.index("") if "" in output else len(output)
        for header in output[1:blank]:
            name, _, value = header.partition(":")
            got = response.headers.get(name.strip())
            if got is None or not text_matches(value.strip(), got):
                problems.append(f"header {name}: {got!r}, the docs say {value.strip()!r}")
        shown = "\n".join(output[blank + 1 :]).strip()
        if shown:
            problems += json_problems(parse_pattern(shown), response.get_json())
        return problems

    def _sqlite(self, words: list[str], output: list[str]) -> list[str]:
        path, sql = words
        with sqlite3.connect(self.instance_file(path)) as connection:
            rows = connection.execute(sql).fetchall()
        connection.close()
        printed = ["|".join("" if v is None else str(v) for v in row) for row in rows]
        return lines_problems(output, printed)

    def _dd(self, words: list[str], output: list[str]) -> list[str]:
        options = dict(word.partition("=")[::2] for word in words)
        if options.pop("if", None) != "/dev/zero" or options.pop("conv", None) != "notrunc":
            return ["the test runs dd if=/dev/zero ... conv=notrunc only"]
        options.pop("status", None)
        if options.pop("bs", "1") != "1" or set(options) != {"of", "seek", "count"}:
            return ["the test runs dd with bs=1, of=, seek= and count= only"]
        with self.instance_file(options["of"]).open("r+b") as file:
            file.seek(int(options["seek"]))
            file.write(bytes(int(options["count"])))
        return lines_problems(output, [])

    def _flask(self, words: list[str], output: list[str], status: int | None) -> list[str]:
        if words[:1] == ["--app"]:
            if words[1] != "example_app:create_app":
                return [f"the example runs another app than the demo: {words[1]}"]
            words = words[2:]
        if CTRL_C in output:
            output = [line for line in output if line != CTRL_C]
            _interrupt_once_handled()
        result = self.app.test_cli_runner().invoke(args=words, prog_name="flask")
        if status is None:
            status = 0
            if any(line.startswith("Usage:") for line in output):
                status = 2
            elif any(line.startswith("Error:") for line in output):
                status = 1
        problems: list[str] = []
        if result.exit_code != status:
            problems.append(f"it exits with {result.exit_code}, not {status}: {result.output}")
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            problems.append(f"it raised {result.exception!r}")
        printed = result.output.splitlines()
        self.ids.update(archive_ids(output, printed))
        shown = [self._expand(line) for line in output]
        return problems + lines_problems(shown, printed)


def _interrupt_once_handled(after: float = 1.5, wait: float = 60.0) -> None:
    """Ctrl-C: SIGINT to this process ``after`` seconds after the command (running in
    this main thread) set its own SIGINT handler -- never while the test's is in place."""
    before = signal.getsignal(signal.SIGINT)

    def interrupt() -> None:
        deadline = time.monotonic() + wait
        while signal.getsignal(signal.SIGINT) is before:
            if time.monotonic() > deadline:
                return  # the command never handled it: it fails on its own
            time.sleep(0.02)
        time.sleep(after)
        if signal.getsignal(signal.SIGINT) is not before:
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, name="ctrl-c", daemon=True).start()


@pytest.fixture
def demo_bucket(s3_endpoint_url: str) -> Iterator[str]:
    """The bucket of ``make run-services`` on the test's moto server, removed afterwards."""
    client = s3_client(s3_endpoint_url)
    client.create_bucket(Bucket=DEMO_BUCKET)
    yield s3_endpoint_url
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=DEMO_BUCKET):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=DEMO_BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=DEMO_BUCKET)


@pytest.fixture
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demo_bucket: str) -> Iterator[Demo]:
    """A freshly seeded demo; the environment's settings left out, the tokens known, the
    S3 bucket of ``make run-services`` on the test's moto server."""
    demo_environment(monkeypatch, TOKENS)
    instance = Demo(tmp_path / "instance", monkeypatch, demo_bucket)
    yield instance
    instance.close()


def run_page(demo: Demo, page: str, text: str | None = None) -> list[str]:
    problems: list[str] = []
    for example in examples(page, text):
        if example.not_run is None:
            problems += demo.run(example.commands, f"docs/{page}.rst")
    return problems


@pytest.mark.parametrize("page", PAGES)
def test_every_example_runs_against_the_seeded_demo(page: str, demo: Demo) -> None:
    found = examples(page)
    assert sum(1 for e in found if e.not_run is None) >= 10, "the page has few runnable examples"
    assert all(e.not_run for e in found if e.not_run is not None), "a not-run needs its reason"
    problems = run_page(demo, page)
    assert not problems, "\n\n".join(problems)


BROKEN_CLI = """
.. code-block:: console

    $ flask --app example_app:create_app state transition feature-dark-mode suspend
    feature-dark-mode: suspend -> suspended (version 4)
    $ flask --app example_app:create_app state transition feature-dark-mode resume
    Error: State 'feature-dark-mode' is suspended: ...
    $ flask --app example_app:create_app state transition feature-dark-mode resume
    $ echo $?
    1
    $ flask --app billing state show alice
    $ rm -rf instance
"""


def test_a_broken_example_fails(demo: Demo) -> None:
    """A wrong status, output or exit status, another app or an unknown command is
    reported, with the page and line of the command."""
    text = (DOCS / "rest-api.rst").read_text(encoding="utf-8")
    request = """'"data": {"email": "alice@example.com", "full_name": "Alice Liddell", '"""
    tampered = text.replace(request, """'"data": {"plan": "pro", '""")
    assert tampered != text
    problems = run_page(demo, "rest-api", tampered)
    assert any(
        "it answers 422 UNPROCESSABLE ENTITY, the docs say HTTP/1.1 201" in p for p in problems
    )

    found = [p.partition("\n  ")[2] for p in run_page(demo, "cli", BROKEN_CLI)]
    assert [p.partition(":")[0] for p in found] == [
        "it prints",  # version 3, not 4
        "it exits with 0, not 1",  # resuming a suspended flag works: no error
        "it prints",
        "it prints",  # the refusal of a second resume, not shown
        "the example runs another app than the demo",
        "the test does not know the command 'rm'",
    ]


def test_the_matchers() -> None:
    pattern = parse_pattern('{"a": 1, "b": ["x", ...], "c": "id-...", ...}')
    assert json_problems(pattern, {"a": 1, "b": ["x", "y"], "c": "id-42", "d": 0}) == []
    assert json_problems(pattern, {"a": 2, "b": ["y"], "c": "ix-42"}) == [
        "$.a: 2 is not 1",
        '$.b: ["y"] does not match ["x", ...]',
        "$.c: 'ix-42' is not 'id-...'",
    ]
    assert json_problems(parse_pattern('{"a": "..."}'), {"a": [1], "b": 2}) == [
        "$: 'b' is not shown"
    ]
    assert lines_problems(["v1 ...", "...", "page 1"], ["v1 x", "v2", "v3", "page 1"]) == []
    assert lines_problems(["v1 ...", "page 1"], ["v1 x", "v2", "page 1"]) != []
