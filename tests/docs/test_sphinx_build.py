"""The documentation builds without a single warning (what ``make docs`` runs), links to
the docs of the libraries it builds on, and reads without sideways scrolling."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .support import DOCS, load_docs_module

#: A laptop's browser window.
DESKTOP = {"width": 1280, "height": 800}


@dataclass(frozen=True)
class Build:
    html: Path
    result: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """The HTML docs, built once for the tests of this module."""
    pytest.importorskip("sphinx", reason="sphinx is in the docs extra (make test installs it)")
    folder = tmp_path_factory.mktemp("docs")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS),
         str(folder / "html"), "-d", str(folder / "doctrees")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    return Build(folder / "html", result)


def test_the_docs_build_without_warnings(build: Build) -> None:
    assert build.result.returncode == 0, build.result.stderr
    assert build.result.stderr == ""
    assert (build.html / "configuration.html").is_file()


def test_the_pages_link_to_the_docs_of_the_libraries(build: Build) -> None:
    """Intersphinx links, made from the inventories in docs/_inventories, point at the
    projects' published docs; and the theme is Furo with our stylesheet."""
    html = "\n".join(page.read_text("utf-8") for page in build.html.glob("*.html"))
    gen = load_docs_module("gen_inventories")
    for key, (_project, _version, base, _objects) in gen.PROJECTS.items():
        assert f'href="{base}' in html, f"no link to the {key} docs ({base})"
    index = (build.html / "index.html").read_text("utf-8")
    assert "_static/styles/furo.css" in index
    assert "_static/custom.css" in index


def test_the_shipped_inventories_are_up_to_date() -> None:
    gen = load_docs_module("gen_inventories")
    for key, (project, version, _base, objects) in gen.PROJECTS.items():
        shipped = (DOCS / "_inventories" / f"{key}.inv").read_bytes()
        assert shipped == gen.render(project, version, objects), (
            f"docs/_inventories/{key}.inv is out of date; run: .venv/bin/python "
            "docs/gen_inventories.py"
        )


#: Every code block, table and the page itself that is wider than its box on screen.
_SCROLLING = """() => {
  const wide = (el) => el.scrollWidth > el.clientWidth + 1;
  const found = [...document.querySelectorAll("pre, .table-wrapper, table")]
    .filter(wide)
    .map((el) => el.tagName.toLowerCase() + ": " + el.textContent.trim().slice(0, 70));
  if (wide(document.documentElement)) found.push("the page itself");
  return found;
}"""


@pytest.mark.browser
def test_nothing_scrolls_sideways_on_a_desktop_screen(build: Build, browser: Any) -> None:
    """No code block or table is clipped behind a horizontal scroll bar, and the
    sidebar shows the project's name on one line."""
    assert build.result.returncode == 0, build.result.stderr
    page = browser.new_page(viewport=DESKTOP)
    clipped: dict[str, list[str]] = {}
    for path in sorted(build.html.glob("*.html")):
        page.goto(path.as_uri())
        found = page.evaluate(_SCROLLING)
        if found:
            clipped[path.name] = found
    assert not clipped, f"clipped at {DESKTOP['width']} px: {clipped}"
    page.goto((build.html / "index.html").as_uri())
    title = page.locator(".sidebar-brand-text")
    assert title.inner_text() == "flask_tiered_state"
    height = title.evaluate("el => el.getBoundingClientRect().height")
    line = title.evaluate("el => parseFloat(getComputedStyle(el).lineHeight)")
    assert height <= line * 1.2, f"the sidebar title wraps: {height} px for lines of {line} px"
    page.close()
