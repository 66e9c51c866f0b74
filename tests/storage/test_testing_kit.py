"""The backend author's kit catches a broken backend and says what a subclass lacks."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

BROKEN_BACKEND = """
import pytest

from flask_tiered_state.storage.base import StateCategory
from flask_tiered_state.storage.memory import MemoryStateRepository
from flask_tiered_state.testing import RepositoryContract


class ForgetfulRepository(MemoryStateRepository):
    def delete(self, key):  # says it deleted, deletes nothing
        return True


class TestForgetful(RepositoryContract):
    @pytest.fixture
    def repository(self):
        repo = ForgetfulRepository(StateCategory.HOT)
        yield repo
        repo.close()
"""


def test_the_contract_fails_a_backend_that_breaks_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_broken=BROKEN_BACKEND)
    result = pytester.runpytest("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=41, failed=2)
    result.stdout.fnmatch_lines(
        [
            "FAILED *TestForgetful::test_delete_reports_existence*",
            "FAILED *TestForgetful::test_delete_unchanged_removes_exactly_the_copies_given*",
        ],
        consecutive=True,
    )


def test_a_subclass_without_a_repository_fixture_is_told_so(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_bare="""
from flask_tiered_state.testing import RepositoryContract

class TestNothing(RepositoryContract):
    pass
"""
    )
    result = pytester.runpytest("-q", "-p", "no:cacheprovider", "-k", "ping")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*TestNothing subclasses RepositoryContract without a repository*"]
    )
