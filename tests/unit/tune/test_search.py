"""The tune search on a made-up throughput surface: it climbs, it stops, it resumes without re-measuring."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from toolkit.errors import ToolkitError
from toolkit.spec import spec_from_dict
from toolkit.tune.measure import idle_instances
from toolkit.tune.report import verdict
from toolkit.tune.search import (
    CHANCE,
    Measure,
    Point,
    SearchResult,
    SearchStopError,
    brute_force,
    confirm,
    luck,
    quick_search,
    wins_needed,
)
from toolkit.tune.space import SearchSpace, ServingConfig
from toolkit.tune.store import PointStore

SPACE = SearchSpace(
    router_instances=(2, 3, 4, 6),
    local_tiers=("inprocess",),
    tier_threads=(1,),
    tier_instances=(1, 2, 3),
    queue_timeout_ms=(50.0, 100.0, 200.0),
    admission=("router",),
)
START = ServingConfig(router_instances=2, tier_instances=1, queue_timeout_ms=100.0)


def surface(config: ServingConfig) -> Point:
    """Throughput peaks at 4 routers and 2 tier instances; 6 routers misses the SLO."""
    if config.router_instances == 6:
        return Point(config, 0.0, math.nan)
    throughput = 1000.0 - 100.0 * (config.router_instances - 4) ** 2 - 80.0 * (config.tier_instances - 2) ** 2
    throughput += 5.0 * (config.queue_timeout_ms == 200.0)  # within the margin: not worth a move
    return Point(config, throughput, 40.0)


class Counting:
    def __init__(self) -> None:
        self.calls: list[ServingConfig] = []

    def __call__(self, config: ServingConfig) -> Point:
        self.calls.append(config)
        return surface(config)


def test_quick_search_climbs_to_the_best_point_measuring_a_fraction_of_the_space() -> None:
    measure = Counting()
    result = quick_search(SPACE, START, measure)
    assert result.best is not None and result.best.config == ServingConfig(
        router_instances=4, tier_instances=2
    )
    assert result.baseline is not None and result.baseline.config == START
    assert len(measure.calls) == len(set(measure.calls)) < SPACE.size  # each point once
    assert result.best.throughput / result.baseline.throughput == pytest.approx(1000 / 520)


def test_quick_search_stops_at_the_point_budget_with_the_best_so_far() -> None:
    result = quick_search(SPACE, START, Counting(), max_points=3)
    assert len(result.points) == 3 and result.best is not None


def test_brute_force_measures_every_point_once_starting_where_asked() -> None:
    measure = Counting()
    result = brute_force(SPACE, measure, start=START)
    assert measure.calls[0] == START and sorted(map(str, measure.calls)) == sorted(map(str, SPACE))
    assert result.best is not None and result.best.config.router_instances == 4


def test_an_interrupted_search_resumes_without_remeasuring(tmp_path: Path) -> None:
    record = tmp_path / "tune.json"
    context = {"slo_ms": 50.0, "spec": "tiny.yaml"}
    first = Counting()

    def interrupted(config: ServingConfig) -> Point:
        if len(first.calls) == 4:
            raise KeyboardInterrupt
        return first(config)

    with pytest.raises(KeyboardInterrupt):
        quick_search(SPACE, START, PointStore(record, context).measured(interrupted))
    second = Counting()
    resumed = quick_search(SPACE, START, PointStore(record, context).measured(second))
    assert not set(first.calls) & set(second.calls)  # nothing measured twice
    assert resumed.best is not None and resumed.best.config == ServingConfig(
        router_instances=4, tier_instances=2
    )
    other = Counting()
    quick_search(SPACE, START, PointStore(record, {**context, "slo_ms": 20.0}).measured(other))
    assert other.calls[0] == START  # another SLO does not reuse the record


def test_a_damaged_record_is_one_line_naming_the_file(tmp_path: Path) -> None:
    record = tmp_path / "tune.json"
    record.write_text("{not json")
    with pytest.raises(ToolkitError, match="tune.json: not a readable tune record"):
        PointStore(record, {})


def test_a_configuration_becomes_a_spec_overlay_the_loader_accepts(tiny_spec_dict) -> None:
    config = ServingConfig(
        router_instances=4,
        local_tiers="bls",
        tier_threads=2,
        tier_instances=2,
        queue_timeout_ms=50.0,
        admission="batcher",
    )
    assert config.key == (
        "router_instances=4,local_tiers=bls,tier_threads=2,tier_instances=2,queue_timeout_ms=50,"
        "admission=batcher"
    )
    data = {**tiny_spec_dict, "triton": {**tiny_spec_dict["triton"], **config.overlay()["triton"]}}
    spec = spec_from_dict(data)
    assert ServingConfig.from_spec(spec) == config
    assert config.apply(spec_from_dict(tiny_spec_dict)).triton == spec.triton


def test_a_space_refuses_values_out_of_order_or_a_single_router() -> None:
    with pytest.raises(ValueError, match="router_instances: expected distinct values"):
        SearchSpace(router_instances=(3, 2))
    with pytest.raises(ValueError, match="at least 2"):
        SearchSpace(router_instances=(1, 2))
    with pytest.raises(ValueError, match="local_tiers: 'grpc'"):
        SearchSpace(local_tiers=("grpc",))
    with pytest.raises(ValueError, match="admission: 'client' is not one of router, batcher"):
        SearchSpace(admission=("client", "router"))
    assert SearchSpace().admission == ("batcher", "router")
    with pytest.raises(ValueError, match="tier_threads: at least 1"):
        SearchSpace(tier_threads=(0, 1))
    assert SearchSpace().with_start(ServingConfig(router_instances=5)).router_instances == (2, 3, 4, 5)


def test_a_measure_that_stops_the_search_keeps_what_was_measured_and_says_why() -> None:
    measure = Counting()

    def budgeted(config: ServingConfig) -> Point:
        if len(measure.calls) == 3:
            raise SearchStopError("budget")
        return measure(config)

    quick = quick_search(SPACE, START, budgeted)
    assert quick.stopped == "budget" and len(quick.points) == 3
    assert quick.chosen is not None and quick.best == max(quick.points, key=lambda p: p.throughput)
    measure.calls.clear()
    brute = brute_force(SPACE, budgeted, start=START)
    assert brute.stopped == "budget" and [p.config for p in brute.points] == measure.calls
    assert quick_search(SPACE, START, Counting()).stopped is None


def test_changes_lists_the_knobs_that_differ_from_another_configuration() -> None:
    moved = ServingConfig(router_instances=4, tier_threads=2)
    assert moved.changes(ServingConfig()) == {"router_instances": (2, 4), "tier_threads": (1, 2)}
    assert moved.changes(moved) == {}


def _drifting() -> tuple[list[ServingConfig], Measure]:
    """The start is as fast as router_instances=3, but the machine slows down while the search runs,
    so the start (measured first) looks fastest; measured again, alternating, they tie."""
    calls: list[ServingConfig] = []

    def measure(config: ServingConfig) -> Point:
        calls.append(config)
        slowdown = 1.0 - 0.1 * min(len(calls), 4)
        base = {2: 1000.0, 3: 1000.0, 4: 700.0}[config.router_instances]
        return Point(config, base * slowdown, 10.0)

    return calls, measure


def test_confirm_measures_the_best_again_alternating_and_keeps_the_start_on_a_tie() -> None:
    space = SearchSpace(
        router_instances=(2, 3, 4),
        local_tiers=("inprocess",),
        tier_threads=(1,),
        tier_instances=(1,),
        queue_timeout_ms=(100.0,),
        admission=("router",),
    )
    calls, measure = _drifting()
    result = brute_force(space, measure, start=ServingConfig())
    searched = len(calls)

    confirm(result, lambda r: measure, rounds=2, top=2)

    again = calls[searched:]
    start, three = ServingConfig(), ServingConfig(router_instances=3)
    assert again == [start, three, three, start]  # forwards, then backwards
    assert set(result.confirmed) == {ServingConfig(), ServingConfig(router_instances=3)}
    assert result.best is not None and result.best.config == ServingConfig()  # within the margin
    assert result.baseline is not None and result.baseline.throughput == result.best.throughput


FAST = ServingConfig(router_instances=4)


def _confirm_two(start_runs: list[float], fast_runs: list[float]) -> SearchResult:
    """The start and a faster configuration confirmed once per run given, with those throughputs."""
    result = SearchResult([Point(START, 900.0, 10.0), Point(FAST, 880.0, 12.0)], START, None)
    figures = {START: iter(start_runs), FAST: iter(fast_runs)}
    confirm(result, lambda r: lambda c: Point(c, next(figures[c]), 11.0), rounds=len(start_runs))
    return result


def test_confirm_moves_to_a_configuration_whose_median_beats_the_start() -> None:
    result = _confirm_two([700.0, 720.0, 690.0], [900.0, 950.0, 760.0])

    assert result.best is not None and result.best.config == FAST
    assert result.best.throughput == 900.0 and result.baseline.throughput == 700.0
    assert len(result.confirmed[FAST]) == 3


def test_confirm_keeps_the_start_when_the_faster_median_lost_a_round_of_three() -> None:
    # fast's median beats the start's by 29% and it won 2 of 3 rounds: a coin toss does that half the time
    result = _confirm_two([700.0, 720.0, 690.0], [900.0, 950.0, 600.0])

    assert result.best is not None and result.best.config == START


@pytest.mark.parametrize("rounds", range(1, 13))
def test_the_wins_needed_are_the_fewest_a_coin_toss_reaches_at_most_one_time_in_eight(rounds: int) -> None:
    def tail(k: int) -> float:
        return sum(math.comb(rounds, i) for i in range(k, rounds + 1)) / 2**rounds

    needed = wins_needed(rounds)
    assert 1 <= needed <= rounds
    assert tail(needed) <= CHANCE or needed == rounds
    assert tail(needed - 1) > CHANCE
    assert (needed == rounds) is (rounds <= 5)
    assert luck(rounds) == tail(needed)


def test_confirm_stopped_midway_keeps_only_complete_rounds() -> None:
    start, fast = ServingConfig(), ServingConfig(router_instances=4)
    result = SearchResult([Point(start, 900.0, 10.0), Point(fast, 800.0, 12.0)], start, None)
    seen: list[ServingConfig] = []

    def measure(config: ServingConfig) -> Point:
        if len(seen) == 3:
            raise SearchStopError("budget")
        seen.append(config)
        return Point(config, 500.0, 10.0)

    confirm(result, lambda r: measure, rounds=2)

    assert result.stopped == "budget" and {len(v) for v in result.confirmed.values()} == {1}


@pytest.mark.parametrize(("stopped", "confirmed"), [("budget", True), ("interrupted", False)])
def test_a_search_cut_by_the_budget_is_confirmed_and_an_interrupted_one_is_not(
    stopped: str, confirmed: bool
) -> None:
    start, fast = ServingConfig(), ServingConfig(router_instances=4)
    result = SearchResult([Point(start, 900.0, 10.0), Point(fast, 800.0, 12.0)], start, None, stopped)

    confirm(result, lambda r: lambda c: Point(c, 500.0, 10.0), rounds=1)

    assert bool(result.confirmed) is confirmed


def test_confirm_keeps_the_start_when_the_faster_median_won_only_a_minority_of_the_rounds() -> None:
    # fast's median (700) beats the start's (610) by 15%, but it beat the start only in round 2 of 3
    result = _confirm_two([1000.0, 600.0, 610.0], [900.0, 700.0, 590.0])

    assert result.best is not None and result.best.config == START


PER_TIER = SearchSpace(
    router_instances=(2,),
    local_tiers=("bls",),
    tier_threads=(1,),
    tier_instances=(1,),
    queue_timeout_ms=(100.0,),
    admission=("router",),
    tier_counts=(("lite", (1, 2)), ("xl", (1, 2, 3))),
)
PER_TIER_START = ServingConfig(local_tiers="bls", tier_counts=(("lite", 1), ("xl", 1)))


def test_per_tier_counts_are_knobs_of_their_own_after_the_shared_count() -> None:
    assert PER_TIER.knobs == (
        "router_instances",
        "local_tiers",
        "tier_threads",
        "tier_instances",
        "instances.lite",
        "instances.xl",
        "queue_timeout_ms",
        "admission",
    )
    assert PER_TIER.size == 6 == len(set(PER_TIER))
    assert PER_TIER_START.key.endswith(",admission=router,instances.lite=1,instances.xl=1")
    assert PER_TIER.neighbours(PER_TIER_START.with_value("instances.xl", 2), "instances.xl") == [
        PER_TIER_START,
        PER_TIER_START.with_value("instances.xl", 3),
    ]
    wider = PER_TIER.with_start(PER_TIER_START.with_value("instances.lite", 4))
    assert wider.values("instances.lite") == (1, 2, 4) and wider.values("instances.xl") == (1, 2, 3)
    moved = PER_TIER_START.with_value("instances.xl", 3)
    assert moved.changes(PER_TIER_START) == {"instances.xl": (1, 3)}
    assert moved.changes(ServingConfig(local_tiers="bls")) == {
        "instances.lite": (None, 1),
        "instances.xl": (None, 3),
    }
    with pytest.raises(ValueError, match="the start's knobs"):
        PER_TIER.with_start(ServingConfig())
    with pytest.raises(ValueError, match="instances.xl: at least 1"):
        SearchSpace(tier_counts=(("xl", (0, 1)),))
    with pytest.raises(ValueError, match="given twice"):
        SearchSpace(tier_counts=(("xl", (1,)), ("xl", (2,))))


def test_quick_search_moves_the_one_tier_whose_instances_pay() -> None:
    calls: list[ServingConfig] = []

    def measure(config: ServingConfig) -> Point:
        calls.append(config)
        xl = int(config.value("instances.xl"))
        return Point(config, 300.0 * min(xl, 2) + 10.0 * int(config.value("instances.lite")), 10.0)

    result = quick_search(PER_TIER, PER_TIER_START, measure)

    assert result.best is not None and result.best.config == PER_TIER_START.with_value("instances.xl", 2)
    assert len(calls) == len(set(calls)) < PER_TIER.size


def test_a_record_of_per_tier_points_reads_back_as_the_same_configurations(tmp_path: Path) -> None:
    record = tmp_path / "tune.json"
    PointStore(record, {}).measured(lambda c: Point(c, 100.0, 5.0))(PER_TIER_START)
    again = Counting()

    point = PointStore(record, {}).measured(again)(PER_TIER_START)

    assert point == Point(PER_TIER_START, 100.0, 5.0) and not again.calls
    assert point.config.tier_counts == (("lite", 1), ("xl", 1))


def test_per_tier_counts_apply_to_the_spec_and_read_back_from_it(tiny_spec_dict) -> None:
    spec = spec_from_dict(tiny_spec_dict)
    config = ServingConfig.from_spec(spec, ["xl"]).with_value("instances.xl", 3)

    tuned = config.apply(spec)

    assert tuned.tier_instances("xl") == 3 and tuned.tier_instances("lite") == spec.triton.tier_instances
    assert ServingConfig.from_spec(tuned, ["xl"]) == config
    assert ServingConfig.from_spec(spec, ["xl"]).tier_counts == (("xl", spec.triton.tier_instances),)
    with pytest.raises(KeyError):
        ServingConfig(tier_counts=(("huge", 2),)).apply(spec)


def test_quick_search_does_not_move_a_knob_that_is_idle_where_it_stands() -> None:
    calls: list[ServingConfig] = []

    def measure(config: ServingConfig) -> Point:
        calls.append(config)
        path = "bls" if config.local_tiers == "bls" else "inprocess"
        return Point(config, 100.0, 10.0, tier_calls=(("lite", path, 7), ("xl", path, 3)))

    space = dataclasses.replace(PER_TIER, local_tiers=("bls", "inprocess"))
    start = dataclasses.replace(PER_TIER_START, local_tiers="inprocess")
    result = quick_search(space, start, measure, idle=idle_instances)

    assert {c.local_tiers for c in calls} == {"bls", "inprocess"}
    assert all(c.tier_counts == start.tier_counts for c in calls)  # no instance count measured
    assert result.skipped == {"tier_instances": 1, "instances.lite": 1, "instances.xl": 1}
    assert (
        "Not searched from where the router called none of their models" in verdict(result, 20.0, 0.05).text
    )


def test_tier_instance_knobs_are_idle_only_where_the_router_called_no_model_of_theirs() -> None:
    idle = idle_instances
    routed = Point(PER_TIER_START, 100.0, 10.0, tier_calls=(("lite", "inprocess", 9), ("xl", "bls", 4)))
    local = Point(PER_TIER_START, 100.0, 10.0, tier_calls=(("lite", "inprocess", 9), ("xl", "inprocess", 4)))
    unread = Point(PER_TIER_START, 100.0, 10.0)

    assert idle(routed, "instances.lite") and not idle(routed, "instances.xl")
    assert not idle(routed, "tier_instances")  # it also sets the preprocess and gate instances
    assert idle(local, "tier_instances") and idle(local, "instances.xl")
    assert not idle(local, "router_instances") and not idle(local, "queue_timeout_ms")
    assert not any(idle(unread, knob) for knob in PER_TIER.knobs)  # nothing read: search it all


def test_a_record_keeps_what_the_router_called(tmp_path: Path) -> None:
    record = tmp_path / "tune.json"
    point = Point(START, 100.0, 5.0, tier_calls=(("lite", "bls", 3), ("xl", "inprocess", 2)))
    PointStore(record, {}).measured(lambda c: point)(START)

    assert PointStore(record, {}).measured(Counting())(START) == point


KINDS = dataclasses.replace(PER_TIER, tier_kinds=(("lite", ("cpu", "gpu")), ("standard", ("cpu", "gpu"))))
KINDS_START = dataclasses.replace(PER_TIER_START, tier_kinds=(("lite", "gpu"), ("standard", "gpu")))


def test_per_tier_kinds_are_knobs_after_the_per_tier_counts() -> None:
    assert KINDS.knobs[3:7] == ("tier_instances", "instances.lite", "instances.xl", "kind.lite")
    assert KINDS.knobs[7:] == ("kind.standard", "queue_timeout_ms", "admission")
    assert KINDS.size == 4 * PER_TIER.size == len(set(KINDS))
    assert KINDS_START.key.endswith(",instances.xl=1,kind.lite=gpu,kind.standard=gpu")
    on_cpu = KINDS_START.with_value("kind.lite", "cpu")
    assert KINDS.neighbours(KINDS_START, "kind.lite") == [on_cpu]
    assert on_cpu.changes(KINDS_START) == {"kind.lite": ("gpu", "cpu")}
    assert ServingConfig.from_values({k: on_cpu.value(k) for k in on_cpu.knobs}) == on_cpu
    with pytest.raises(ValueError, match="kind.lite: 'tpu' is not one of cpu, gpu"):
        SearchSpace(tier_kinds=(("lite", ("gpu", "tpu")),))
    with pytest.raises(ValueError, match="tier_kinds: a tier is given twice"):
        SearchSpace(tier_kinds=(("lite", ("cpu",)), ("lite", ("gpu",))))


def test_per_tier_kinds_apply_to_the_spec_read_back_from_it_and_from_the_record(
    tiny_spec_dict, tmp_path: Path
) -> None:
    tiny_spec_dict["triton"]["target"] = "gpu"
    spec = spec_from_dict(tiny_spec_dict)
    start = ServingConfig.from_spec(spec, kinds=["lite", "xl"])
    assert start.tier_kinds == (("lite", "gpu"), ("xl", "gpu"))  # the target's, where the spec sets none
    config = start.with_value("kind.lite", "cpu")

    tuned = config.apply(spec)

    assert [t.instance_kind for t in tuned.tiers] == ["cpu", "", "gpu"]
    assert ServingConfig.from_spec(tuned, kinds=["lite", "xl"]) == config
    record = tmp_path / "tune.json"
    PointStore(record, {}).measured(lambda c: Point(c, 100.0, 5.0))(config)
    assert PointStore(record, {}).points[config.key].config == config
    with pytest.raises(KeyError):
        ServingConfig(tier_kinds=(("huge", "cpu"),)).apply(spec)


def test_quick_search_moves_a_tier_to_the_kind_that_pays() -> None:
    def measure(config: ServingConfig) -> Point:
        lite_on_cpu = config.value("kind.lite") == "cpu"
        standard_on_cpu = config.value("kind.standard") == "cpu"
        return Point(config, 400.0 + 150.0 * lite_on_cpu - 100.0 * standard_on_cpu, 10.0)

    result = quick_search(KINDS, KINDS_START, measure)

    assert result.best is not None and result.best.config == KINDS_START.with_value("kind.lite", "cpu")
    assert idle_instances(Point(KINDS_START, 1.0, 1.0, tier_calls=(("xl", "bls", 1),)), "kind.lite") is False
