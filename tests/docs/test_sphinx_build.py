"""The documentation builds without a single warning (what ``make docs`` runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .support import DOCS


def test_the_docs_build_without_warnings(tmp_path: Path) -> None:
    pytest.importorskip("sphinx", reason="sphinx is in the dev extra (make test installs it)")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS),
         str(tmp_path / "html"), "-d", str(tmp_path / "doctrees")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert (tmp_path / "html" / "configuration.html").is_file()
