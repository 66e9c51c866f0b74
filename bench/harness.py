"""Timing, result rows and the Markdown table.

A benchmark runs the library and its raw baseline in ONE process on the same data,
interleaving their rounds (A B, B A, A B, ...) so that machine noise, which on a
shared 2-core box comes in bursts, lands on both sides. Each side's figure is the
median of its rounds; the ratio is the median of the per-round ratios, each pairing
two samples taken back to back (see :func:`paired_ratio`). The garbage collector is
paused inside timed sections, as :mod:`timeit` does: a collection of this process's
large heap (botocore, SQLAlchemy) would bill whichever side happened to trigger it.
"""

from __future__ import annotations

import gc
import itertools
import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "Benchmark",
    "Row",
    "Settings",
    "chunked",
    "compare",
    "cycling",
    "interleave",
    "median_per",
    "paired_ratio",
    "render_table",
    "timed",
]

T = TypeVar("T")
#: A round: runs once and returns the seconds of its timed part.
Round = Callable[[], float]


@dataclass(frozen=True)
class Settings:
    """How hard to run. ``quick`` is for the smoke test: fewer rounds, smaller sizes."""

    quick: bool = False
    #: Overrides every benchmark's own round count when set.
    rounds: int | None = None

    def pick(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def rounds_for(self, full: int, quick: int = 3) -> int:
        if self.rounds is not None:
            return max(1, self.rounds)
        return self.pick(full, quick)


@dataclass(frozen=True)
class Row:
    """One line of the table: the library's and the baseline's cost per ``unit``.

    :param target: the largest acceptable ratio; None makes the row informational.
    :param floor: the smallest acceptable ratio, for "flat within +-x%" targets, or
        alone (``target`` None) for "at least x times faster" ones.
    :param status: a verdict set outright: "SKIP" or "ERROR" when the benchmark could not
        run (``note`` says why), "PASS" or "FAIL" for a check that is not a ratio.
    """

    benchmark: str
    library: float | None
    raw: float | None
    unit: str = "op"
    target: float | None = None
    floor: float | None = None
    note: str = ""
    status: str | None = None
    #: The median of per-round ratios (see :func:`compare`); else library / raw.
    paired: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.paired is not None:
            return self.paired
        if self.library is None or self.raw is None or self.raw <= 0:
            return None
        return self.library / self.raw

    @property
    def verdict(self) -> str:
        if self.status is not None:
            return self.status
        ratio = self.ratio
        if ratio is None or not math.isfinite(ratio):
            return "ERROR"
        if self.target is None and self.floor is None:
            return "info"
        # judged as printed: two decimals are all the precision a shared machine gives
        shown = round(ratio, 2)
        if (self.target is not None and shown > self.target) or (
            self.floor is not None and shown < self.floor
        ):
            return "FAIL"
        return "PASS"

    @property
    def target_text(self) -> str:
        if self.target is None:
            return "-" if self.floor is None else f">= {self.floor:g}x"
        if self.floor is not None:
            return f"{self.floor:.2f}-{self.target:.2f}x"
        return f"<= {self.target:g}x"


@dataclass(frozen=True)
class Benchmark:
    """A named benchmark: ``run(env, settings)`` returns its rows."""

    name: str
    description: str
    run: Callable[[Any, Settings], list[Row]]
    #: Services it needs ("redis", "postgres", "s3"), for the listing of ``--list``.
    needs: tuple[str, ...] = ()


def timed(body: Callable[[], object], setup: Callable[[], object] | None = None) -> Round:
    """A round that runs ``setup`` untimed, then times ``body`` with the GC paused
    (a collection triggered by one side's garbage would bill the other side)."""

    def run() -> float:
        if setup is not None:
            setup()
        enabled = gc.isenabled()
        gc.disable()
        try:
            start = time.perf_counter()
            body()
            return time.perf_counter() - start
        finally:
            if enabled:
                gc.enable()

    return run


def cycling(
    chunks: Sequence[T], body: Callable[[T], object], setup: Callable[[], object] | None = None
) -> Round:
    """A round that times ``body`` on the next of ``chunks`` (cycling), after ``setup``.

    Small rounds interleave finely: a burst of noise from another process then spans
    rounds of every variant instead of whole runs of one.
    """
    source = itertools.cycle(chunks)

    def run() -> float:
        chunk = next(source)
        return timed(lambda: body(chunk), setup)()

    return run


def chunked(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """``items`` in consecutive slices of ``size`` (the last one may be shorter)."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def interleave(
    variants: Mapping[str, Round], *, rounds: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Run every variant ``rounds`` times, alternating the order each round (A B C,
    C B A, A B C, ...), after ``warmup`` untimed rounds; seconds per round by name."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    for number in range(rounds):
        for name in names if number % 2 == 0 else reversed(names):
            samples[name].append(variants[name]())
    return samples


def median_per(samples: Sequence[float], units: float) -> float:
    """The median round, per unit of work."""
    return statistics.median(samples) / units


def paired_ratio(library: Sequence[float], raw: Sequence[float]) -> float:
    """The median of round-by-round ratios. Round ``i`` of both sides ran back to back,
    so a burst of load from another process inflates both sides of one pair and
    mostly cancels out, where a ratio of separate medians keeps it."""
    return statistics.median(a / b for a, b in zip(library, raw, strict=True) if b > 0)


def compare(
    benchmark: str,
    samples: Mapping[str, Sequence[float]],
    library: str,
    raw: str,
    *,
    units: float = 1,
    unit: str = "op",
    target: float | None = None,
    floor: float | None = None,
    note: str = "",
) -> Row:
    """A row comparing two variants of one :func:`interleave` run: the medians per
    ``unit`` and their paired ratio."""
    return Row(
        benchmark,
        median_per(samples[library], units),
        median_per(samples[raw], units),
        unit=unit,
        target=target,
        floor=floor,
        note=note,
        paired=paired_ratio(samples[library], samples[raw]),
    )


# -- output -------------------------------------------------------------------


def format_seconds(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    if seconds >= 1e-6:
        return f"{seconds * 1e6:.1f} µs"
    return f"{seconds * 1e9:.0f} ns"


def _cell(seconds: float | None, unit: str) -> str:
    text = format_seconds(seconds)
    return text if text == "-" else f"{text}/{unit}"


def render_table(rows: Iterable[Row]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| benchmark | library | raw baseline | ratio | target | verdict |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        ratio = row.ratio
        name = " ".join((row.benchmark + (f" ({row.note})" if row.note else "")).split())
        verdict = row.verdict
        cells = [
            name.replace("|", "\\|"),
            _cell(row.library, row.unit),
            _cell(row.raw, row.unit),
            "-" if ratio is None else f"{ratio:.2f}x",
            row.target_text,
            f"**{verdict}**" if verdict == "FAIL" else verdict,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
