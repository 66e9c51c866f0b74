"""Reading the documentation sources: paths, reST directives and code blocks."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"

_DIRECTIVE_RE = re.compile(r"^(?P<indent> *)\.\. (?P<name>[\w:-]+):: ?(?P<arg>.*)$")
_COMMENT_RE = re.compile(r"^\.\. (?P<text>[^\s:][^:]*)$")


def load_docs_module(name: str) -> ModuleType:
    """Import ``docs/<name>.py`` (the docs folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"docs_{name}", DOCS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Block:
    """A directive (or a marker comment) of a reST page and the body indented below it."""

    name: str
    argument: str
    options: dict[str, str]
    body: str
    line: int


def blocks(text: str) -> list[Block]:
    """Every top-level directive and marker comment (``.. word``) of ``text``, in order."""
    lines = text.splitlines()
    found: list[Block] = []
    for index, line in enumerate(lines):
        match = _DIRECTIVE_RE.match(line)
        comment = _COMMENT_RE.match(line)
        if match and not match["indent"]:
            name, argument = match["name"], match["arg"].strip()
        elif comment:
            name, argument = "comment", comment["text"].strip()
        else:
            continue
        options: dict[str, str] = {}
        body: list[str] = []
        cursor = index + 1
        while cursor < len(lines) and lines[cursor].startswith("    :"):
            key, _, value = lines[cursor].strip()[1:].partition(":")
            options[key] = value.strip()
            cursor += 1
        while cursor < len(lines) and (not lines[cursor].strip() or lines[cursor][:1] == " "):
            body.append(lines[cursor])
            cursor += 1
        found.append(Block(name, argument, options, _dedent(body), index + 1))
    return found


def _dedent(lines: list[str]) -> str:
    content = [line for line in lines if line.strip()]
    if not content:
        return ""
    margin = min(len(line) - len(line.lstrip()) for line in content)
    return "\n".join(line[margin:] for line in lines).strip("\n") + "\n"


def example_env(tmp_path: Path) -> dict[str, str]:
    """The environment of an example: temporary files go below ``tmp_path/tmp``."""
    temp = tmp_path / "tmp"
    temp.mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(temp)}


def run_python(
    code: str, tmp_path: Path, *, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as ``work/example.py`` below ``tmp_path`` in a fresh interpreter, with
    ``work`` as its working directory and warnings as errors."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    script = work / "example.py"
    script.write_text(code, encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        cwd=work,
        env=example_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
