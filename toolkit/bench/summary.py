"""What the demo prints: quality and latency of each tier alone and of the routed mix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toolkit.bench.replay import ReplayResult
from toolkit.data.requests import RequestSet
from toolkit.metrics import normalized_entropy, roc_auc


@dataclass(frozen=True)
class Row:
    """One line of the demo table."""

    label: str
    requests: int
    share: float | None
    ne: float
    auc: float
    ne_informative: float
    ne_other: float
    p50_ms: float
    p99_ms: float
    failed: int


def _row(
    label: str, result: ReplayResult, requests: RequestSet, mask: np.ndarray | None, share: float | None
) -> Row:
    ctr = float(requests.labels.mean())
    req_mask = np.ones(requests.num_requests, bool) if mask is None else mask
    cand_mask = np.repeat(req_mask, requests.candidates_per_request)
    ok = cand_mask & np.isfinite(result.scores)
    informative = np.repeat(requests.informative, requests.candidates_per_request)

    def ne(where: np.ndarray) -> float:
        return (
            normalized_entropy(requests.labels[where], result.scores[where], ctr)
            if where.any()
            else float("nan")
        )

    latency = result.latency_ms[req_mask & np.isfinite(result.latency_ms)]
    p50, p99 = np.percentile(latency, [50, 99]) if latency.size else (float("nan"), float("nan"))
    return Row(
        label=label,
        requests=int(req_mask.sum()),
        share=share,
        ne=ne(ok),
        auc=roc_auc(requests.labels[ok], result.scores[ok]) if ok.any() else float("nan"),
        ne_informative=ne(ok & informative),
        ne_other=ne(ok & ~informative),
        p50_ms=float(p50),
        p99_ms=float(p99),
        failed=int((~np.isfinite(result.latency_ms[req_mask])).sum()),
    )


def demo_rows(
    requests: RequestSet, routed: ReplayResult, forced: dict[str, ReplayResult], tier_names: tuple[str, ...]
) -> list[Row]:
    """Rows: each tier forced on every request, the routed mix, then the routed requests per serving tier.

    All NEs share the background CTR of the replayed requests, so they compare directly; the
    informative/other split uses the generator's ground truth.
    """
    rows = [
        _row(f"{name} (forced)", forced[name], requests, None, None) for name in tier_names if name in forced
    ]
    rows.append(_row("routed", routed, requests, None, 1.0))
    served_by = routed.request_tier(requests.offsets)
    for index, name in enumerate(tier_names):
        mask = served_by == index
        if mask.any():
            rows.append(_row(f"  served by {name}", routed, requests, mask, float(mask.mean())))
    return rows
