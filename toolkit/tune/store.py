"""Every measured point of a search on disk, so that an interrupted search resumes where it stopped."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError
from toolkit.tune.search import Measure, Point
from toolkit.tune.space import ServingConfig

FORMAT = 1


class PointStore:
    """Measured points of one search, kept in a JSON file and rewritten atomically after each.

    Points are keyed by the configuration and by ``context`` (what else decides the measurement: the
    SLO, the load steps, the spec's file), so a file written for another search is not reused.

    Args:
        path: The JSON file (created on the first point).
        context: What the points depend on besides their configuration.

    Raises:
        ToolkitError: The file exists but is unreadable or of another format.
    """

    def __init__(self, path: Path, context: dict[str, Any]) -> None:
        self.path = path
        self.context = context
        self.points: dict[str, Point] = {}
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ToolkitError(
                    f"{path}: not a readable tune record ({exc}); remove it to start over"
                ) from None
            if data.get("format") != FORMAT:
                raise ToolkitError(f"{path}: tune record format {data.get('format')!r}, expected {FORMAT}")
            if data.get("context") == context:
                for row in data.get("points", []):
                    row = dict(row)
                    tag = row.pop("tag", "")
                    point = Point(
                        **{
                            **row,
                            "config": ServingConfig.from_dict(row["config"]),
                            "curve": tuple(tuple(step) for step in row.get("curve", ())),
                            "tier_calls": tuple(tuple(call) for call in row.get("tier_calls", ())),
                        }
                    )
                    self.points[_key(point.config, tag)] = point

    @property
    def search_points(self) -> list[Point]:
        """The search's points (not the confirmation runs), in the order measured."""
        return [p for key, p in self.points.items() if "#" not in key]

    def measured(self, measure: Measure, tag: str = "") -> Measure:
        """``measure`` that answers from the record when it can and records every new point.

        Args:
            measure: Measures a configuration.
            tag: Keeps another measurement of the same configuration apart (a confirmation round).
        """

        def cached(config: ServingConfig) -> Point:
            key = _key(config, tag)
            if key in self.points:
                return self.points[key]
            point = measure(config)
            self.points[key] = point
            self._write()
            return point

        return cached

    def _write(self) -> None:
        rows = [
            {**dataclasses.asdict(p), **({"tag": key.partition("#")[2]} if "#" in key else {})}
            for key, p in self.points.items()
        ]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        tmp.write_text(
            json.dumps({"format": FORMAT, "context": self.context, "points": rows}, indent=2) + "\n",
            encoding="utf-8",
        )
        os.replace(tmp, self.path)


def _key(config: ServingConfig, tag: str) -> str:
    return f"{config.key}#{tag}" if tag else config.key
