"""Traffic against a running ensemble: replay of generated requests and the summaries printed."""

from toolkit.bench.replay import ReplayResult, replay
from toolkit.bench.summary import Row, demo_rows

__all__ = ["ReplayResult", "Row", "demo_rows", "replay"]
