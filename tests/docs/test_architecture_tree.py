"""The folder tree of ``docs/architecture.rst`` is the package's: every folder and
module it names exists, and every one that exists is named."""

from __future__ import annotations

import re
from pathlib import Path

from .support import DOCS, ROOT, blocks

PACKAGE = ROOT / "flask_tiered_state"


def documented_tree(text: str) -> dict[str, str]:
    """``{path in the package: its description}`` from the tree block."""
    tree = next(
        b.body
        for b in blocks(text)
        if b.name == "code-block" and b.body.startswith("flask_tiered_state/")
    )
    entries: dict[str, str] = {}
    parents: list[tuple[int, str]] = []
    for line in tree.splitlines()[1:]:
        indent = len(line) - len(line.lstrip())
        parents = [(i, p) for i, p in parents if i < indent]
        prefix = "".join(p for _, p in parents)
        words = line.split()
        names = []
        for word in words:  # the names come first, the description after them
            if not re.fullmatch(r"[\w]+(\.py|/)", word):
                break
            names.append(word)
        description = " ".join(words[len(names) :])
        for name in names:
            entries[prefix + name] = description
        if len(names) == 1 and names[0].endswith("/"):
            parents.append((indent, names[0]))
    return entries


def actual_tree() -> set[str]:
    found = set()
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if "versions" in relative.parts or (
            path.name == "__init__.py" and relative.parent == Path()
        ):
            continue
        folder = "".join(part + "/" for part in relative.parent.parts)
        if folder:
            found.add(folder)
        if path.name != "__init__.py":
            found.add(folder + path.name)
    return found


def test_the_tree_names_what_exists_and_everything_that_does() -> None:
    documented = documented_tree((DOCS / "architecture.rst").read_text("utf-8"))
    named = set(documented)
    for folder, description in documented.items():
        # a folder whose modules are not listed below it lists them in its description
        if folder.endswith("/") and not any(n.startswith(folder) and n != folder for n in named):
            for word in re.findall(r"[a-z_]+", re.sub(r"\([^)]*\)", "", description)):
                if (PACKAGE / folder / f"{word}.py").exists():
                    named.add(f"{folder}{word}.py")
    actual = actual_tree()
    # folders of the Flask adapters and the domain are named, their modules need not be
    summarised = ("api/", "cli/", "dashboard/", "domain/", "migrations/", "observability/", "ops/")
    missing = {p for p in actual - named if not p.startswith(summarised) or p.endswith("/")}
    assert not missing, (
        f"modules the tree in docs/architecture.rst does not name: {sorted(missing)}"
    )
    assert not named - actual, f"the tree names what does not exist: {sorted(named - actual)}"
