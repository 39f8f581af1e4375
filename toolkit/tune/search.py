"""Searching the serving space: coordinate descent from the spec's configuration, or every point.

A search only sees a ``measure`` function (configuration -> :class:`Point`), so the same code runs
against the real server and, in tests, against a made-up throughput surface.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from toolkit.tune.space import SearchSpace, ServingConfig


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
        curve: Every load step measured, in order: (requests/s, p99 ms, failed requests).
        tier_calls: The router's tier calls during the load, as ``(tier, path, calls)`` with path
            ``inprocess`` (in the router's own process) or ``bls`` (the tier model); empty when not
            read.
    """

    config: ServingConfig
    throughput: float
    p99_ms: float
    failed: int = 0
    seconds: float = 0.0
    curve: tuple[tuple[float, float, int], ...] = ()
    tier_calls: tuple[tuple[str, str, int], ...] = ()

    @property
    def meets_slo(self) -> bool:
        """Whether some load level met the SLO."""
        return self.throughput > 0 and self.failed == 0 and not math.isnan(self.p99_ms)

    @property
    def slo_throughput(self) -> float:
        """The throughput when the point met the SLO, else 0 (how a run counts in a median)."""
        return self.throughput if self.meets_slo else 0.0


Measure = Callable[[ServingConfig], Point]

Idle = Callable[[Point, str], bool]
"""Whether moving a knob away from a measured point cannot change anything (the search skips it)."""


class SearchStopError(Exception):
    """Raised by a measure to end the search early; what was measured before stays in the result.

    Args:
        reason: Why, for the report (``budget``, ``interrupted``).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class SearchResult:
    """Every point a search measured, in order, and the best of them.

    Attributes:
        points: The measured points, first to last.
        start: The configuration the search began at.
        chosen: Where coordinate descent settled (None: take the best measured point).
        stopped: Why the search ended before it was done (``budget``, ``interrupted``,
            ``max_points``), or None when it ran to its end.
        confirmed: Configurations measured again after the search (:func:`confirm`), each with
            its runs; their scores are then the medians of those runs.
        skipped: Knobs quick search did not move because they were idle at the point it stood
            at, with how many times.
    """

    points: list[Point] = field(default_factory=list)
    start: ServingConfig | None = None
    chosen: Point | None = None
    stopped: str | None = None
    confirmed: dict[ServingConfig, list[Point]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    def score(self, config: ServingConfig) -> Point | None:
        """``config``'s point: the median of its confirmation runs when it has some, else its search point.

        A confirmation run that met the SLO at no load step counts as 0 requests/s.
        """
        runs = self.confirmed.get(config)
        if not runs:
            return next((p for p in self.points if p.config == config), None)
        met = [p for p in runs if p.meets_slo]
        return Point(
            config,
            statistics.median(p.slo_throughput for p in runs),
            statistics.median(p.p99_ms for p in met) if met else math.nan,
            sum(p.failed for p in runs),
            sum(p.seconds for p in runs),
            runs[-1].curve,
        )

    @property
    def best(self) -> Point | None:
        """The chosen point, else the one with the highest throughput that met the SLO (None if none did).

        Coordinate descent only moves for a gain above its margin, so a point measured a little
        faster within the noise does not replace the one it settled on.
        """
        if self.chosen is not None:
            chosen = self.score(self.chosen.config)
            if chosen is not None and chosen.meets_slo:
                return chosen
        return max((p for p in self.points if p.meets_slo), key=lambda p: p.throughput, default=None)

    @property
    def baseline(self) -> Point | None:
        """The starting configuration's point (its confirmed median when it was confirmed)."""
        return None if self.start is None else self.score(self.start)


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
    idle: Idle | None = None,
) -> SearchResult:
    """Coordinate descent from ``start``: move one knob a step at a time while throughput improves.

    Knobs are visited in the space's order (:attr:`~toolkit.tune.space.SearchSpace.knobs`); for
    each, the neighbours one step down and up are measured and the search moves to the better one
    when it beats the current point by more than ``margin`` (measurements on a shared machine move
    by several percent), then keeps going in that direction. A sweep over every knob without a move
    ends the search.

    Args:
        space: The values each knob may take (``start``'s are added).
        start: The first configuration measured.
        measure: Deploys, serves and loads one configuration.
        margin: Share of throughput a move must gain.
        max_points: Stop after this many measured points (None: no limit).
        idle: Says when a knob cannot matter at the current point (tier instances the router
            does not call); such a knob is not moved from there.

    A :class:`SearchStopError` from ``measure`` ends the search where it stands: the result holds every
    point measured so far and the best configuration coordinate descent had reached.
    """
    space = space.with_start(start)
    result = SearchResult(start=start)
    seen: dict[ServingConfig, Point] = {}

    def take(config: ServingConfig) -> Point | None:
        if config in seen:
            return seen[config]
        if result.stopped:
            return None
        if max_points is not None and len(seen) >= max_points:
            result.stopped = "max_points"
            return None
        try:
            point = measure(config)
        except SearchStopError as stop:
            result.stopped = stop.reason
            return None
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
        for knob in space.knobs:
            while True:
                if idle is not None and idle(current, knob):
                    result.skipped[knob] = result.skipped.get(knob, 0) + 1
                    break
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
    """Measure every configuration of ``space`` (``start`` first when given).

    A :class:`SearchStopError` from ``measure`` ends it with the points measured so far.
    """
    configs = list(space)
    if start is not None:
        configs = [start, *(c for c in configs if c != start)]
    result = SearchResult(start=start or (configs[0] if configs else None))
    for config in configs:
        try:
            result.points.append(measure(config))
        except SearchStopError as stop:
            result.stopped = stop.reason
            break
    return result


CHANCE = 0.125
"""How often a configuration no faster than the start may pass :func:`confirm`'s test by luck: it
must beat the start in so many of the paired rounds that a coin toss per round would win as many
at most this often: every round of up to 5, then 5 of 6, 6 of 7, 7 of 8 or 9."""


def _tail(rounds: int, wins: int) -> float:
    return sum(math.comb(rounds, k) for k in range(wins, rounds + 1)) / 2**rounds


def wins_needed(rounds: int, chance: float = CHANCE) -> int:
    """The paired rounds a configuration must win for :func:`confirm` to prefer it to the start.

    The smallest count ``k`` for which ``rounds`` fair coin tosses give ``k`` or more heads with a
    probability of at most ``chance`` (a one-sided sign test); ``rounds`` when even that is likelier.
    """
    return next((k for k in range(rounds + 1) if _tail(rounds, k) <= chance), rounds)


def luck(rounds: int) -> float:
    """How often a configuration no faster than the start wins :func:`wins_needed` of ``rounds`` rounds."""
    return _tail(rounds, wins_needed(rounds))


def confirm(
    result: SearchResult,
    measure_round: Callable[[int], Measure],
    rounds: int,
    top: int = 3,
    margin: float = 0.05,
) -> SearchResult:
    """Measure the best configurations again, alternating, and choose among them by the medians.

    A search's points were measured minutes apart on a machine whose speed drifts, and the best of
    many noisy measurements is the luckiest as often as the fastest. This measures the ``top``
    configurations that met the SLO (the starting one always among them) ``rounds`` more times
    each, one round after another, in turn forwards and backwards (A, B, C, C, B, A, ...), so that
    drift and the place in a round hit them alike, and chooses the highest median. A configuration
    other than the start must beat the start's median by more than ``margin`` and beat the start's
    run in as many rounds as :func:`wins_needed` asks: on a machine whose runs of one configuration
    spread wider than the gain, a win in most rounds is still a coin toss, and the start stays. A
    search the budget cut short is still confirmed (the caller keeps room for it); an interrupted
    one is not. A :class:`SearchStopError` ends the confirmation with the rounds it completed.

    Args:
        result: The search's result; updated in place and returned.
        measure_round: The measure for confirmation round ``r`` (a record keeps rounds apart).
        rounds: Confirmation runs per configuration (0: none).
        top: How many configurations to confirm, the start included.
        margin: Share of throughput a configuration must gain over the start.
    """
    ranked = sorted((p for p in result.points if p.meets_slo), key=lambda p: -p.throughput)
    configs = list(dict.fromkeys([p.config for p in ranked]))[:top]
    if result.start is not None and result.baseline is not None and result.start not in configs:
        configs = [*configs[: top - 1], result.start]
    if rounds < 1 or len(configs) < 2 or result.stopped == "interrupted":
        return result
    runs: dict[ServingConfig, list[Point]] = {c: [] for c in configs}
    try:
        for r in range(rounds):
            measure = measure_round(r)
            for config in configs if r % 2 == 0 else reversed(configs):
                runs[config].append(measure(config))
    except SearchStopError as stop:
        result.stopped = stop.reason
    complete = min(len(v) for v in runs.values())
    if complete == 0:
        return result
    result.confirmed = {c: v[:complete] for c, v in runs.items()}
    scores = {c: result.score(c) for c in configs}
    best = max(configs, key=lambda c: scores[c].throughput if scores[c].meets_slo else -1.0)
    start = scores.get(result.start) if result.start is not None else None
    if start is not None and best != result.start:
        paired = zip(result.confirmed[best], result.confirmed[result.start], strict=True)
        wins = sum(mine.slo_throughput > theirs.slo_throughput for mine, theirs in paired)
        if not _better(scores[best], start, margin) or wins < wins_needed(complete):
            best = result.start
    result.chosen = scores[best]
    return result
