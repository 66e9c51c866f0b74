"""The StateRepository contract (:mod:`flask_tiered_state.testing`), run against every
backend on its real server: the ``repository`` fixture of ``conftest.py`` yields each
of them in turn."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flask_tiered_state.storage.base import StateRepository
from flask_tiered_state.testing import RepositoryContract


class TestEveryBackend(RepositoryContract):
    @pytest.fixture
    def repository(self, repository: StateRepository) -> Iterator[StateRepository]:
        yield repository  # conftest's, parametrised over the six backends
