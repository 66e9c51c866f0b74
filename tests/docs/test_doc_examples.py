"""The code examples of the docs run, and print what the docs say they print.

Two markers (reST comments) select the examples:

- ``.. tested-example`` before a ``.. code-block:: python``: the block runs as a
  script; when the next block after it is a ``.. code-block:: text``, that is its
  exact expected output.
- ``.. tested-pytest-example`` before python code-blocks with a ``:caption:`` file
  name each: the files are written side by side and pytest runs them; every test
  must pass.

Each example runs in a fresh interpreter in a temporary directory, on the
embedded defaults, with warnings as errors.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .support import DOCS, Block, blocks, example_env, run_python

SCRIPT = "tested-example"
PYTEST = "tested-pytest-example"


def _is_python(block: Block) -> bool:
    return (block.name, block.argument) == ("code-block", "python")


def scripts() -> list[tuple[str, Block, Block | None]]:
    found: list[tuple[str, Block, Block | None]] = []
    for page in sorted(DOCS.glob("*.rst")):
        page_blocks = blocks(page.read_text(encoding="utf-8"))
        for index, block in enumerate(page_blocks):
            if (block.name, block.argument) != ("comment", SCRIPT):
                continue
            code = page_blocks[index + 1]
            assert _is_python(code), f"{page.name}:{block.line}: '.. {SCRIPT}' needs python next"
            after = page_blocks[index + 2] if index + 2 < len(page_blocks) else None
            is_output = after is not None and (after.name, after.argument) == ("code-block", "text")
            found.append((f"{page.stem}:{code.line}", code, after if is_output else None))
    return found


def pytest_examples() -> list[tuple[str, dict[str, str]]]:
    found: list[tuple[str, dict[str, str]]] = []
    for page in sorted(DOCS.glob("*.rst")):
        page_blocks = blocks(page.read_text(encoding="utf-8"))
        for index, block in enumerate(page_blocks):
            if (block.name, block.argument) != ("comment", PYTEST):
                continue
            files: dict[str, str] = {}
            for code in page_blocks[index + 1 :]:
                if not _is_python(code) or "caption" not in code.options:
                    break
                files[code.options["caption"]] = code.body
            assert files, f"{page.name}:{block.line}: '.. {PYTEST}' needs captioned files"
            found.append((f"{page.stem}:{block.line}", files))
    return found


SCRIPTS = scripts()
PYTEST_EXAMPLES = pytest_examples()


def test_the_docs_have_tested_examples() -> None:
    names = [name for name, *_ in SCRIPTS] + [name for name, _ in PYTEST_EXAMPLES]
    pages = {name.partition(":")[0] for name in names}
    assert {"quickstart", "concepts", "operations", "security", "testing", "seed-api"} <= pages


@pytest.mark.parametrize(("code", "output"), [s[1:] for s in SCRIPTS], ids=[s[0] for s in SCRIPTS])
def test_example(code: Block, output: Block | None, tmp_path: Path) -> None:
    result = run_python(code.body, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    if output is not None:
        assert result.stdout == output.body


@pytest.mark.parametrize(
    "files", [e[1] for e in PYTEST_EXAMPLES], ids=[e[0] for e in PYTEST_EXAMPLES]
)
def test_pytest_example(files: dict[str, str], tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    for name, body in files.items():
        (work / name).write_text(body, encoding="utf-8")
    # at least the tests the files define (a subclass of a test class inherits more)
    tests = sum(len(re.findall(r"^\s*def test_", body, re.M)) for body in files.values())
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"],
        cwd=work,
        env=example_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    passed = re.fullmatch(r"(\d+) passed in [\d.]+s", summary)
    assert passed is not None and int(passed[1]) >= tests, summary
