"""One page of a query's results."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from ..errors import InvalidRequestError

__all__ = ["DEFAULT_PER_PAGE", "MAX_PAGE", "MAX_PER_PAGE", "Page", "validate_paging"]

DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 1000
#: The highest page number: the row offset, ``(page - 1) * per_page``, stays below
#: 10**9, which every database takes (a 64-bit offset overflows from 2**63).
MAX_PAGE = 1_000_000
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Sequence[T]):
    """``items`` of page ``page`` (1-based) of ``total`` results, ``per_page`` per page.

    A page is a sequence of its items: ``len(page)``, ``for record in page``,
    ``page[0]`` and slices work as on ``page.items``; ``total`` counts every result.
    A search counts its matches up to a bound (see
    :data:`flask_tiered_state.domain.search.SEARCH_COUNT_LIMIT`), so that its first page
    costs the same over a thousand states or a million: with more matches than that,
    ``total`` is the bound, ``total_exact`` is False (there are more), ``pages`` counts
    the pages of the bound and ``has_next`` stays True while pages come full.
    """

    items: list[T]
    total: int
    page: int
    per_page: int
    total_exact: bool = True

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> list[T]: ...

    def __getitem__(self, index: int | slice) -> T | list[T]:
        return self.items[index]

    @property
    def pages(self) -> int:
        """The number of pages (0 when there are no results); without ``total_exact``,
        a lower bound."""
        return -(-self.total // self.per_page)

    @property
    def has_next(self) -> bool:
        if self.page < self.pages:
            return True
        return not self.total_exact and len(self.items) == self.per_page

    @property
    def has_prev(self) -> bool:
        return self.page > 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": list(self.items),
            "total": self.total,
            "page": self.page,
            "per_page": self.per_page,
            "pages": self.pages,
            "total_exact": self.total_exact,
        }


def validate_paging(page: object, per_page: object) -> tuple[int, int]:
    """Check ``1 <= page <= 1,000,000`` and ``1 <= per_page <= 1000``; raise
    InvalidRequestError."""
    if type(page) is not int or not 1 <= page <= MAX_PAGE:
        raise InvalidRequestError(
            f"Invalid page {page!r}; page is an integer from 1 to {MAX_PAGE:,} (narrow the "
            "query with filters to reach later results).",
            details={"page": repr(page)[:100], "maximum": MAX_PAGE},
        )
    if type(per_page) is not int or not 1 <= per_page <= MAX_PER_PAGE:
        raise InvalidRequestError(
            f"Invalid per_page {per_page!r}; per_page is an integer from 1 to {MAX_PER_PAGE}.",
            details={"per_page": repr(per_page)[:100], "maximum": MAX_PER_PAGE},
        )
    return page, per_page
