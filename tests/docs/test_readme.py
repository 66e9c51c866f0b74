"""The README's example runs and prints what the README says; its commands and links exist."""

from __future__ import annotations

import re
from pathlib import Path

from .support import DOCS, README, ROOT, run_python

FENCE_RE = re.compile(r"^```(?P<lang>\w*)\n(?P<body>.*?)^```$", re.M | re.S)


def fences(text: str) -> list[tuple[str, str]]:
    return [(m["lang"], m["body"]) for m in FENCE_RE.finditer(text)]


def example() -> tuple[str, str]:
    """The README's python block and the text block that follows it."""
    blocks = fences(README.read_text(encoding="utf-8"))
    python = [i for i, (lang, _) in enumerate(blocks) if lang == "python"]
    assert len(python) == 1, "the README has one python example"
    index = python[0]
    assert blocks[index + 1][0] == "text", "the example is followed by its output"
    return blocks[index][1], blocks[index + 1][1]


def test_the_example_runs_and_prints_what_the_readme_says(tmp_path: Path) -> None:
    code, output = example()
    assert len(code.splitlines()) <= 25
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == output


def test_the_example_keeps_its_data_out_of_the_working_directory(tmp_path: Path) -> None:
    code, _ = example()
    assert run_python(code, tmp_path).returncode == 0
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["example.py"]


def test_the_two_commands_are_make_targets() -> None:
    text = README.read_text(encoding="utf-8")
    assert "$ make run\n$ make test\n" in text
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("run", "test", "docs", "bench"):
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile has no {target!r} target"


def test_the_links_reach_every_docs_page() -> None:
    text = README.read_text(encoding="utf-8")
    links = set(re.findall(r"\]\((docs/[^)]+)\)", text))
    assert all((ROOT / link).is_file() for link in links), links
    pages = {f"docs/{p.name}" for p in DOCS.glob("*.rst")}
    assert pages <= links, f"pages the README does not link: {sorted(pages - links)}"
