"""Searching the serving space: coordinate descent from the spec's configuration, or every point.

A search only sees a ``measure`` function (configuration -> :class:`Point`), so the same code runs
against the real server and, in tests, against a made-up throughput surface.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from toolkit.tune.space import KNOBS, SearchSpace, ServingConfig


@dataclass(frozen=True)
class Point:
    """One measured configuration.

    Attributes:
        config: What was deployed.
        throughput: The highest answered requests/s whose p99 met the SLO with no failed request
            (0 when no load level did).
        p99_ms: The p99 latency at that load (NaN when no load level met the SLO).
        failed: Failed requests at that load.
        seconds: How long the measurement took.
    """

    config: ServingConfig
    throughput: float
    p99_ms: float
    failed: int = 0
    seconds: float = 0.0

    @property
    def meets_slo(self) -> bool:
        """Whether some load level met the SLO."""
        return self.throughput > 0 and self.failed == 0 and not math.isnan(self.p99_ms)


Measure = Callable[[ServingConfig], Point]


@dataclass
class SearchResult:
    """Every point a search measured, in order, and the best of them.

    Attributes:
        points: The measured points, first to last.
        start: The configuration the search began at.
        chosen: Where coordinate descent settled (None: take the best measured point).
    """

    points: list[Point] = field(default_factory=list)
    start: ServingConfig | None = None
    chosen: Point | None = None

    @property
    def best(self) -> Point | None:
        """The chosen point, else the one with the highest throughput that met the SLO (None if none did).

        Coordinate descent only moves for a gain above its margin, so a point measured a little
        faster within the noise does not replace the one it settled on.
        """
        if self.chosen is not None and self.chosen.meets_slo:
            return self.chosen
        return max((p for p in self.points if p.meets_slo), key=lambda p: p.throughput, default=None)

    @property
    def baseline(self) -> Point | None:
        """The starting configuration's point."""
        return next((p for p in self.points if p.config == self.start), None)


def _better(candidate: Point, incumbent: Point, margin: float) -> bool:
    """Whether ``candidate`` beats ``incumbent`` by more than ``margin`` (a share of its throughput)."""
    if not candidate.meets_slo:
        return False
    if not incumbent.meets_slo:
        return True
    return candidate.throughput > incumbent.throughput * (1.0 + margin)


def quick_search(
    space: SearchSpace,
    start: ServingConfig,
    measure: Measure,
    margin: float = 0.05,
    max_points: int | None = None,
) -> SearchResult:
    """Coordinate descent from ``start``: move one knob a step at a time while throughput improves.

    Knobs are visited in :data:`~toolkit.tune.space.KNOBS` order; for each, the neighbours one step
    down and up are measured and the search moves to the better one when it beats the current point
    by more than ``margin`` (measurements on a shared machine move by several percent), then keeps
    going in that direction. A sweep over every knob without a move ends the search.

    Args:
        space: The values each knob may take (``start``'s are added).
        start: The first configuration measured.
        measure: Deploys, serves and loads one configuration.
        margin: Share of throughput a move must gain.
        max_points: Stop after this many measured points (None: no limit).
    """
    space = space.with_start(start)
    result = SearchResult(start=start)
    seen: dict[ServingConfig, Point] = {}

    def take(config: ServingConfig) -> Point | None:
        if config in seen:
            return seen[config]
        if max_points is not None and len(seen) >= max_points:
            return None
        point = measure(config)
        seen[config] = point
        result.points.append(point)
        return point

    current = take(start)
    if current is None:
        return result
    result.chosen = current
    moved = True
    while moved:
        moved = False
        for knob in KNOBS:
            while True:
                candidates = [p for c in space.neighbours(current.config, knob) if (p := take(c)) is not None]
                better = [p for p in candidates if _better(p, current, margin)]
                if not better:
                    break
                current = max(better, key=lambda p: p.throughput)
                moved = True
    result.chosen = current
    return result


def brute_force(
    space: Iterable[ServingConfig], measure: Measure, start: ServingConfig | None = None
) -> SearchResult:
    """Measure every configuration of ``space`` (``start`` first when given)."""
    configs = list(space)
    if start is not None:
        configs = [start, *(c for c in configs if c != start)]
    result = SearchResult(start=start or (configs[0] if configs else None))
    for config in configs:
        result.points.append(measure(config))
    return result
