"""Quality-vs-cost frontier of per-request routing, as RouteLLM defines it, with NE in place of accuracy.

Everything starts from per-request summed log losses (:class:`RequestLosses`): the NE of any assignment
of requests to tiers is then an exact sum, so curves need no re-scoring. A :class:`Curve` gives NE
(lower is better) against the share of requests sent to the strong tier; the others go to the weak
tier. From a curve come RouteLLM's summaries:

- PGR, performance gap recovered: ``(ne_weak - ne) / (ne_weak - ne_strong)``; 0 at the weak tier, 1
  at the strong one.
- APGR: PGR averaged over the strong share from 0 to 1 (trapezoid rule). A random router scores 0.5.
- CPT(x): the smallest strong share at which PGR reaches ``x``.

Shares and discrete requests: at share ``p`` the oracle and score routers send the top
``round(p * R)`` requests (halves rounded up) to the strong tier, and the curve records that realized
share ``k / R``, not ``p``. Passing ``shares=None`` gives every ``k / R`` for ``k = 0..R``: the exact
frontier of the router.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toolkit.metrics import _EPS

__all__ = [
    "Curve",
    "RequestLosses",
    "apgr",
    "assignment_at_share",
    "cost_saved_at_equal_quality",
    "cpt",
    "oracle_curve",
    "pgr",
    "random_curve",
    "score_curve",
]


def _binary_entropy(ctr: float) -> float:
    """Entropy of a Bernoulli(ctr), with the clipping of :func:`metrics.normalized_entropy`."""
    ctr = min(max(ctr, _EPS), 1.0 - _EPS)
    return float(-(ctr * np.log(ctr) + (1.0 - ctr) * np.log(1.0 - ctr)))


def _tier_index(tier: int, num_tiers: int, what: str) -> int:
    """Resolve a tier index (negative counts from the end) or raise ValueError."""
    if not -num_tiers <= tier < num_tiers:
        raise ValueError(f"The {what} tier index {tier} is out of range for {num_tiers} tiers.")
    return tier % num_tiers


@dataclass(frozen=True)
class RequestLosses:
    """Per-request summed log loss of each tier, and what NE needs.

    Attributes:
        loss: float64 ``[R, T]``: sum over request r's candidates of the binary log loss of tier t's
            scores.
        candidates: int64 ``[R]``: candidates per request.
        entropy_per_candidate: Entropy H(ctr) of the background CTR (the mean of all held-out labels):
            NE = total loss / (total candidates * H).
    """

    loss: np.ndarray
    candidates: np.ndarray
    entropy_per_candidate: float

    def __post_init__(self) -> None:
        loss = np.array(self.loss, dtype=np.float64)
        candidates = np.asarray(self.candidates)
        if loss.ndim != 2 or loss.shape[0] == 0 or loss.shape[1] == 0:
            raise ValueError(f"loss must have shape [requests, tiers] with both > 0, got {loss.shape}.")
        if not np.all(np.isfinite(loss)) or np.any(loss < 0):
            raise ValueError("loss must be finite and non-negative (it is a sum of log losses).")
        if candidates.shape != (loss.shape[0],):
            raise ValueError(
                f"candidates must have shape [{loss.shape[0]}] (one count per request), "
                f"got {candidates.shape}."
            )
        if not np.issubdtype(candidates.dtype, np.integer):
            raise ValueError(f"candidates must be integers, got dtype {candidates.dtype}.")
        if np.any(candidates < 0) or candidates.sum() == 0:
            raise ValueError("candidates must be non-negative with a positive total.")
        entropy = float(self.entropy_per_candidate)
        if not np.isfinite(entropy) or entropy <= 0:
            raise ValueError(f"entropy_per_candidate must be finite and positive, got {entropy}.")
        loss.setflags(write=False)
        candidates = candidates.astype(np.int64)
        candidates.setflags(write=False)
        object.__setattr__(self, "loss", loss)
        object.__setattr__(self, "candidates", candidates)
        object.__setattr__(self, "entropy_per_candidate", entropy)

    @classmethod
    def from_scores(cls, labels: np.ndarray, scores: np.ndarray, offsets: np.ndarray) -> RequestLosses:
        """Sum each tier's log loss per request.

        Args:
            labels: ``[C]`` 0/1 click labels of all held-out candidates.
            scores: ``[T, C]`` click probabilities of each tier (cheapest first), clipped to
                ``[1e-7, 1 - 1e-7]`` as :func:`metrics.log_loss` does.
            offsets: ``[R + 1]`` integers; request r owns candidates ``offsets[r]:offsets[r + 1]``.

        Returns:
            The per-request losses; the background CTR is the mean of ``labels``.

        Raises:
            ValueError: On labels other than 0/1, or shapes or offsets that do not fit together.
        """
        y = np.asarray(labels, dtype=np.float64)
        p = np.asarray(scores, dtype=np.float64)
        bounds = np.asarray(offsets)
        if y.ndim != 1 or y.size == 0:
            raise ValueError(f"labels must be a non-empty 1-D array, got shape {y.shape}.")
        if not np.all((y == 0) | (y == 1)):
            raise ValueError("labels must be 0 or 1.")
        if p.ndim != 2 or p.shape[1] != y.size:
            raise ValueError(f"scores must have shape [tiers, {y.size}] (one row per tier), got {p.shape}.")
        if not np.all(np.isfinite(p)):
            raise ValueError("scores must be finite.")
        if bounds.ndim != 1 or bounds.size < 2 or not np.issubdtype(bounds.dtype, np.integer):
            raise ValueError(
                f"offsets must be a 1-D integer array of [requests + 1] bounds, got shape {bounds.shape} "
                f"and dtype {bounds.dtype}."
            )
        if bounds[0] != 0 or bounds[-1] != y.size or np.any(np.diff(bounds) < 0):
            raise ValueError(
                f"offsets must rise from 0 to the number of candidates ({y.size}), "
                f"got {bounds[0]} .. {bounds[-1]} (or a decreasing step)."
            )
        p = np.clip(p, _EPS, 1.0 - _EPS)
        per_candidate = -(y * np.log(p) + (1.0 - y) * np.log(1.0 - p))  # [T, C]
        counts = np.diff(bounds).astype(np.int64)
        request_of = np.repeat(np.arange(counts.size), counts)
        loss = np.stack(
            [np.bincount(request_of, weights=row, minlength=counts.size) for row in per_candidate], axis=1
        )
        return cls(loss=loss, candidates=counts, entropy_per_candidate=_binary_entropy(float(np.mean(y))))

    @property
    def num_requests(self) -> int:
        """Number of requests R."""
        return int(self.loss.shape[0])

    @property
    def num_tiers(self) -> int:
        """Number of tiers T."""
        return int(self.loss.shape[1])

    @property
    def normalizer(self) -> float:
        """Total candidates times the background entropy: NE = total loss / normalizer."""
        return float(self.candidates.sum()) * self.entropy_per_candidate

    def ne(self, assignment: np.ndarray) -> float:
        """NE of serving request r by tier ``assignment[r]``.

        Raises:
            ValueError: If ``assignment`` is not ``[R]`` integers in ``[0, T)``.
        """
        tiers = np.asarray(assignment)
        if tiers.shape != (self.num_requests,) or not np.issubdtype(tiers.dtype, np.integer):
            raise ValueError(
                f"assignment must be [{self.num_requests}] integer tier indices, "
                f"got shape {tiers.shape} and dtype {tiers.dtype}."
            )
        if np.any(tiers < 0) or np.any(tiers >= self.num_tiers):
            raise ValueError(f"assignment holds tier indices outside [0, {self.num_tiers}).")
        return float(self.loss[np.arange(self.num_requests), tiers].sum() / self.normalizer)

    def ne_of_tier(self, t: int) -> float:
        """NE of serving every request by tier ``t`` (negative counts from the end)."""
        t = _tier_index(t, self.num_tiers, "requested")
        return float(self.loss[:, t].sum() / self.normalizer)


@dataclass(frozen=True)
class Curve:
    """NE (and optionally cost) of a router against the share of requests on the strong tier.

    Attributes:
        strong_share: Share of requests on the strong tier, non-decreasing, in ``[0, 1]``.
        ne: NE at each share.
        cost: Mean cost per request at each share, when known.
        label: Name for plots and reports.
    """

    strong_share: np.ndarray
    ne: np.ndarray
    cost: np.ndarray | None = None
    label: str = ""

    def __post_init__(self) -> None:
        share = np.array(self.strong_share, dtype=np.float64)
        ne = np.array(self.ne, dtype=np.float64)
        if share.ndim != 1 or share.size == 0:
            raise ValueError(f"strong_share must be a non-empty 1-D array, got shape {share.shape}.")
        if ne.shape != share.shape:
            raise ValueError(f"ne must have the shape of strong_share {share.shape}, got {ne.shape}.")
        if not np.all(np.isfinite(share)) or np.any(share < 0) or np.any(share > 1):
            raise ValueError("strong_share must lie in [0, 1].")
        if np.any(np.diff(share) < 0):
            raise ValueError("strong_share must be non-decreasing.")
        if not np.all(np.isfinite(ne)):
            raise ValueError("ne must be finite.")
        arrays = [share, ne]
        if self.cost is not None:
            cost = np.array(self.cost, dtype=np.float64)
            if cost.shape != share.shape or not np.all(np.isfinite(cost)):
                raise ValueError(
                    f"cost must be finite with the shape of strong_share {share.shape}, got {cost.shape}."
                )
            arrays.append(cost)
            object.__setattr__(self, "cost", cost)
        for array in arrays:
            array.setflags(write=False)
        object.__setattr__(self, "strong_share", share)
        object.__setattr__(self, "ne", ne)


def _gap(ne_weak: float, ne_strong: float) -> float:
    gap = float(ne_weak) - float(ne_strong)
    if not np.isfinite(gap) or gap <= 0:
        raise ValueError(
            f"The strong tier is not better than the weak one (NE {ne_strong} vs {ne_weak}; lower is "
            "better), so the performance gap is not positive and PGR is undefined."
        )
    return gap


def pgr(ne_router: float, ne_weak: float, ne_strong: float) -> float:
    """Performance gap recovered: ``(ne_weak - ne_router) / (ne_weak - ne_strong)``.

    Raises:
        ValueError: If the strong tier's NE is not below the weak tier's.
    """
    return (float(ne_weak) - float(ne_router)) / _gap(ne_weak, ne_strong)


def _shares_array(shares: np.ndarray | None, num_requests: int) -> np.ndarray:
    if shares is None:
        return np.arange(num_requests + 1, dtype=np.float64) / num_requests
    values = np.asarray(shares, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"shares must be a non-empty 1-D array, got shape {values.shape}.")
    if not np.all(np.isfinite(values)) or np.any(values < 0) or np.any(values > 1):
        raise ValueError("shares must lie in [0, 1].")
    if np.any(np.diff(values) <= 0):
        raise ValueError("shares must be strictly increasing.")
    return values


def _strong_counts(shares: np.ndarray, num_requests: int) -> np.ndarray:
    """Requests on the strong tier at each share: ``round(share * R)``, halves rounded up."""
    return np.floor(shares * num_requests + 0.5).astype(np.int64)


def _router_scores(router_scores: np.ndarray) -> np.ndarray:
    values = np.asarray(router_scores, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"router_scores must be a non-empty 1-D array, got shape {values.shape}.")
    if not np.all(np.isfinite(values)):
        raise ValueError("router_scores must be finite.")
    return values


def _strong_order(scores: np.ndarray) -> np.ndarray:
    """Requests by decreasing score; equal scores by increasing request index."""
    return np.lexsort((np.arange(scores.size), -scores))


def _tier_costs(tier_cost: np.ndarray | None, num_tiers: int) -> np.ndarray | None:
    if tier_cost is None:
        return None
    costs = np.asarray(tier_cost, dtype=np.float64)
    if costs.shape != (num_tiers,) or not np.all(np.isfinite(costs)):
        raise ValueError(f"tier_cost must be [{num_tiers}] finite costs per request, got {costs.shape}.")
    return costs


def _pair(losses: RequestLosses, weak: int, strong: int) -> tuple[int, int]:
    w = _tier_index(weak, losses.num_tiers, "weak")
    s = _tier_index(strong, losses.num_tiers, "strong")
    if w == s:
        raise ValueError(f"The weak and strong tiers must differ, both are tier {w}.")
    return w, s


def assignment_at_share(router_scores: np.ndarray, share: float) -> np.ndarray:
    """Which requests a score router sends to the strong tier at ``share``.

    The ``round(share * R)`` highest-scoring requests (halves rounded up) go to the strong tier; equal
    scores go in order of request index.

    Args:
        router_scores: ``[R]`` scores, higher = more deserving of the strong tier.
        share: Target share of requests on the strong tier, in ``[0, 1]``.

    Returns:
        bool ``[R]``: True where the request goes to the strong tier.
    """
    scores = _router_scores(router_scores)
    if not 0.0 <= float(share) <= 1.0:
        raise ValueError(f"share must lie in [0, 1], got {share}.")
    k = int(_strong_counts(np.array([float(share)]), scores.size)[0])
    strong = np.zeros(scores.size, dtype=bool)
    strong[_strong_order(scores)[:k]] = True
    return strong


def score_curve(
    losses: RequestLosses,
    router_scores: np.ndarray,
    shares: np.ndarray | None = None,
    weak: int = 0,
    strong: int = -1,
    *,
    tier_cost: np.ndarray | None = None,
    label: str = "router",
) -> Curve:
    """Curve of a router that sends the top-scoring requests to the strong tier.

    At each share the requests chosen are those of :func:`assignment_at_share`; this is how a learned
    gate's curve across thresholds (or lambda) is drawn.

    Args:
        losses: Per-request losses of every tier.
        router_scores: ``[R]`` scores, higher = more deserving of the strong tier.
        shares: Strictly increasing target shares in ``[0, 1]``; every ``k / R`` when omitted.
        weak: Index of the weak tier (the rest of the requests go there).
        strong: Index of the strong tier.
        tier_cost: ``[T]`` cost per request of each tier; fills ``Curve.cost`` when given.
        label: Name of the curve.

    Returns:
        The curve at the realized shares ``round(share * R) / R``.
    """
    scores = _router_scores(router_scores)
    if scores.size != losses.num_requests:
        raise ValueError(
            f"router_scores has {scores.size} entries but there are {losses.num_requests} requests."
        )
    w, s = _pair(losses, weak, strong)
    costs = _tier_costs(tier_cost, losses.num_tiers)
    num = losses.num_requests
    counts = _strong_counts(_shares_array(shares, num), num)
    order = _strong_order(scores)
    gain = np.concatenate([[0.0], np.cumsum(losses.loss[order, w] - losses.loss[order, s])])
    ne = (losses.loss[:, w].sum() - gain[counts]) / losses.normalizer
    realized = counts / num
    cost = None if costs is None else (1.0 - realized) * costs[w] + realized * costs[s]
    return Curve(strong_share=realized, ne=ne, cost=cost, label=label)


def oracle_curve(
    losses: RequestLosses,
    shares: np.ndarray | None = None,
    weak: int = 0,
    strong: int = -1,
    *,
    tier_cost: np.ndarray | None = None,
    label: str = "oracle",
) -> Curve:
    """RouteLLM's oracle: the requests whose loss the strong tier reduces most go to it first.

    Arguments as :func:`score_curve`, with the loss reduction ``loss[:, weak] - loss[:, strong]`` as
    the router score.
    """
    w, s = _pair(losses, weak, strong)
    reduction = losses.loss[:, w] - losses.loss[:, s]
    return score_curve(losses, reduction, shares, w, s, tier_cost=tier_cost, label=label)


def random_curve(
    losses: RequestLosses,
    shares: np.ndarray | None = None,
    weak: int = 0,
    strong: int = -1,
    *,
    tier_cost: np.ndarray | None = None,
    label: str = "random",
) -> Curve:
    """Expected curve of sending a random share p of requests to the strong tier (no sampling).

    NE at p is exactly ``((1 - p) * weak_total + p * strong_total) / normalizer``, at the shares asked
    (no rounding to whole requests). Arguments as :func:`score_curve`.
    """
    w, s = _pair(losses, weak, strong)
    costs = _tier_costs(tier_cost, losses.num_tiers)
    p = _shares_array(shares, losses.num_requests)
    ne = ((1.0 - p) * losses.loss[:, w].sum() + p * losses.loss[:, s].sum()) / losses.normalizer
    cost = None if costs is None else (1.0 - p) * costs[w] + p * costs[s]
    return Curve(strong_share=p, ne=ne, cost=cost, label=label)


def apgr(curve: Curve, ne_weak: float, ne_strong: float) -> float:
    """Average PGR over the strong share from 0 to 1 (trapezoid rule): RouteLLM's APGR.

    Raises:
        ValueError: If the curve does not span shares 0 to 1, or the strong tier is not better.
    """
    share = curve.strong_share
    if share.size < 2 or share[0] != 0.0 or share[-1] != 1.0:
        raise ValueError(
            f"APGR needs a curve spanning strong shares 0 to 1; curve {curve.label!r} spans "
            f"{share[0]} to {share[-1]}."
        )
    values = (float(ne_weak) - curve.ne) / _gap(ne_weak, ne_strong)
    return float(np.sum(np.diff(share) * (values[1:] + values[:-1]) / 2.0))


def cpt(curve: Curve, target_pgr: float, ne_weak: float, ne_strong: float) -> float | None:
    """Smallest strong share at which PGR reaches ``target_pgr``: RouteLLM's CPT (e.g. CPT(50%)).

    PGR is interpolated linearly between curve points.

    Returns:
        The share, or None if the curve never reaches the target.

    Raises:
        ValueError: If the curve does not start at share 0, or the strong tier is not better.
    """
    share = curve.strong_share
    if share[0] != 0.0:
        raise ValueError(
            f"CPT needs a curve starting at strong share 0; {curve.label!r} starts at {share[0]}."
        )
    target = float(target_pgr)
    if not np.isfinite(target):
        raise ValueError(f"target_pgr must be finite, got {target_pgr}.")
    values = (float(ne_weak) - curve.ne) / _gap(ne_weak, ne_strong)
    reached = np.flatnonzero(values >= target)
    if reached.size == 0:
        return None
    i = int(reached[0])
    if i == 0:
        return float(share[0])
    # values[i - 1] < target <= values[i]: the crossing lies inside segment i - 1 .. i.
    fraction = (target - values[i - 1]) / (values[i] - values[i - 1])
    return float(share[i - 1] + fraction * (share[i] - share[i - 1]))


def cost_saved_at_equal_quality(
    curve_costs: np.ndarray, curve_ne: np.ndarray, reference_cost: float, reference_ne: float
) -> float | None:
    """Share of the reference's cost saved by the cheapest curve point as good as the reference.

    The curve is the polyline through ``(cost, ne)`` points in the order given (adjacent operating
    points can be mixed), so the cheapest point with ``NE <= reference_ne`` may lie inside a segment.

    Args:
        curve_costs: ``[N]`` mean cost per request of each curve point.
        curve_ne: ``[N]`` NE of each curve point.
        reference_cost: Cost per request of the reference (e.g. the strong tier alone), > 0.
        reference_ne: NE of the reference.

    Returns:
        ``1 - cheapest_cost / reference_cost`` (negative when the curve costs more), or None if the
        curve never reaches the reference's NE.
    """
    costs = np.asarray(curve_costs, dtype=np.float64)
    ne = np.asarray(curve_ne, dtype=np.float64)
    if costs.ndim != 1 or costs.size == 0 or ne.shape != costs.shape:
        raise ValueError(
            f"curve_costs and curve_ne must be 1-D of one non-empty shape, got {costs.shape} and {ne.shape}."
        )
    if not (np.all(np.isfinite(costs)) and np.all(np.isfinite(ne))):
        raise ValueError("curve_costs and curve_ne must be finite.")
    if not (np.isfinite(reference_cost) and reference_cost > 0 and np.isfinite(reference_ne)):
        raise ValueError(
            f"reference_cost must be finite and positive and reference_ne finite, "
            f"got {reference_cost} and {reference_ne}."
        )
    candidates = list(costs[ne <= reference_ne])
    for i in range(costs.size - 1):
        ne0, ne1 = ne[i], ne[i + 1]
        if (ne0 - reference_ne) * (ne1 - reference_ne) < 0:  # the segment crosses the reference NE
            fraction = (reference_ne - ne0) / (ne1 - ne0)
            candidates.append(costs[i] + fraction * (costs[i + 1] - costs[i]))
    if not candidates:
        return None
    return float(1.0 - min(candidates) / reference_cost)
