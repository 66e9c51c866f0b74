"""A lifecycle as a graph laid out for an inline SVG, rendered on the server.

Statuses are placed on a fixed grid (the status set is the :class:`StateStatus`
enum); each (source, target) pair of the lifecycle's table becomes one arrow
labelled with every transition that takes it, and transitions that keep the status
(``update``) are listed apart instead of drawn as loops. A pair with arrows both ways
is drawn as two curves bending apart, and labels that would overlap slide along
their arrows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..domain.lifecycle import Lifecycle
from ..domain.model import StateStatus

__all__ = ["HEIGHT", "WIDTH", "Edge", "LifecycleGraph", "Node", "layout"]

WIDTH, HEIGHT = 760, 330
NODE_W, NODE_H = 118, 40
START = (36.0, 170.0)
_POSITIONS: dict[str, Point] = {
    StateStatus.CREATED.value: (160.0, 170.0),
    StateStatus.ACTIVE.value: (380.0, 72.0),
    StateStatus.SUSPENDED.value: (680.0, 72.0),
    StateStatus.EXPIRED.value: (380.0, 268.0),
    StateStatus.DELETED.value: (680.0, 268.0),
}
_BEND = 34.0
Point = tuple[float, float]
_LABEL_W, _LABEL_H = 64.0, 16.0


@dataclass(frozen=True, slots=True)
class Node:
    status: str
    x: float
    y: float
    current: bool
    #: Reachable in one transition from the current status.
    next: bool

    @property
    def left(self) -> float:
        return self.x - NODE_W / 2

    @property
    def top(self) -> float:
        return self.y - NODE_H / 2


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    label: str
    #: The SVG path (``M x y Q cx cy x y``).
    path: str
    label_x: float
    label_y: float
    #: Allowed from the current status.
    next: bool


@dataclass(frozen=True, slots=True)
class LifecycleGraph:
    nodes: list[Node]
    edges: list[Edge]
    #: Transitions that keep the status, with the statuses they are allowed from.
    loops: list[tuple[str, list[str]]]
    current: str | None
    allowed: list[str]
    width: int = WIDTH
    height: int = HEIGHT
    node_width: int = NODE_W
    node_height: int = NODE_H
    start: Point = START


def _clip(cx: float, cy: float, dx: float, dy: float, half_w: float, half_h: float) -> float:
    """How far along (dx, dy) from a box centre its border is (as a fraction)."""
    scales = [half_w / abs(dx) if dx else math.inf, half_h / abs(dy) if dy else math.inf]
    return min(scales)


def _arrow(a: Point, b: Point, bend: float, start_is_dot: bool) -> tuple[str, Point, Point, Point]:
    (x1, y1), (x2, y2) = a, b
    length = math.hypot(x2 - x1, y2 - y1) or 1.0
    nx, ny = -(y2 - y1) / length, (x2 - x1) / length
    mx, my = (x1 + x2) / 2 + nx * bend, (y1 + y2) / 2 + ny * bend
    half = (4.0, 4.0) if start_is_dot else (NODE_W / 2 + 2, NODE_H / 2 + 2)
    t1 = _clip(x1, y1, mx - x1, my - y1, *half)
    t2 = _clip(x2, y2, mx - x2, my - y2, NODE_W / 2 + 6, NODE_H / 2 + 6)
    s = (x1 + (mx - x1) * t1, y1 + (my - y1) * t1)
    e = (x2 + (mx - x2) * t2, y2 + (my - y2) * t2)
    path = f"M {s[0]:.1f} {s[1]:.1f} Q {mx:.1f} {my:.1f} {e[0]:.1f} {e[1]:.1f}"
    return path, s, (mx, my), e


def _point(s: Point, c: Point, e: Point, t: float) -> Point:
    u = 1 - t
    return (
        u * u * s[0] + 2 * u * t * c[0] + t * t * e[0],
        u * u * s[1] + 2 * u * t * c[1] + t * t * e[1],
    )


def _free(x: float, y: float, taken: list[tuple[float, float]]) -> bool:
    return all(abs(x - ox) >= _LABEL_W or abs(y - oy) >= _LABEL_H for ox, oy in taken)


def layout(lifecycle: Lifecycle, current: str | None = None) -> LifecycleGraph:
    """The graph of ``lifecycle`` with ``current`` (a status value) highlighted."""
    pairs: dict[tuple[str, str], list[str]] = {}
    loops: dict[str, list[str]] = {}
    for transition, (froms, to) in lifecycle.rules.items():
        for origin in froms:
            if to is None or to is origin:
                loops.setdefault(transition.value, []).append(origin.value)
            else:
                pairs.setdefault((origin.value, to.value), []).append(transition.value)
    allowed = lifecycle.allowed_transitions(current) if current in _POSITIONS else []
    initial = lifecycle.initial_status.value
    used = {initial} | {s for pair in pairs for s in pair}
    nodes = [
        Node(status, x, y, status == current, (current, status) in pairs)
        for status, (x, y) in _POSITIONS.items()
        if status in used
    ]
    edges: list[Edge] = []
    taken: list[tuple[float, float]] = []
    path, s, c, e = _arrow(START, _POSITIONS[initial], 0.0, True)
    edges.append(Edge("", initial, "create", path, *_point(s, c, e, 0.5), False))
    taken.append((edges[0].label_x, edges[0].label_y))
    for (source, target), names in pairs.items():
        bend = _BEND if (target, source) in pairs else 0.0
        path, s, c, e = _arrow(_POSITIONS[source], _POSITIONS[target], bend, False)
        spot = _point(s, c, e, 0.5)
        for t in (0.5, 0.35, 0.65, 0.25, 0.75):
            candidate = _point(s, c, e, t)
            if _free(*candidate, taken):
                spot = candidate
                break
        taken.append(spot)
        label = " / ".join(names)
        edges.append(Edge(source, target, label, path, *spot, source == current))
    return LifecycleGraph(
        nodes=nodes,
        edges=edges,
        loops=sorted(loops.items()),
        current=current,
        allowed=allowed,
    )
