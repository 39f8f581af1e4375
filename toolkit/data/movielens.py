"""Request logs from a real public dataset: MovieLens-100k, as the ``recbole`` wheel ships it.

MovieLens-100k (GroupLens Research, University of Minnesota; F. Maxwell Harper and Joseph A. Konstan,
"The MovieLens Datasets: History and Context", ACM TiiS 5(4), 2015) holds 100,000 ratings (1-5) of
1,682 movies by 943 users, September 1997 to April 1998, with user age, gender, occupation and zip
code and each movie's release date and genres. Its licence allows research use with that citation
and forbids redistribution and commercial use without permission, so the toolkit never copies it:
it reads the atomic files (``ml-100k.inter``, ``.user``, ``.item``) that RecBole's PyPI wheel
(MIT-licensed) carries, from the installed package (``pip install --no-deps recbole==1.2.1``), with
no network access and without importing RecBole.

The ratings become ranking requests, the way an ads request log looks:

- A user's ratings in time order are cut into sessions of ``session_size`` consecutive ratings; one
  session is one request at the time of its first rating. Its candidates are the session's movies
  (label 1 when rated 4 or 5, else 0: shown, not liked) and a random number of movies the user
  never rated (label 0: not chosen), drawn in proportion to their popularity so far.
- User features are known at request time only: age, gender, occupation, how many movies the
  user rated before, their mean rating and share of 4-5 ratings, days since their first rating and
  hours since their previous one; the history is the movies rated before the request, oldest first.
- Movie features are known at request time only: release year, ratings so far (log), mean rating
  so far, genre and release decade.
- Requests are ordered by time and split in time: the first ``train_share`` train, the next
  ``calibration_share`` calibrate (quantization and the routing gate), the rest are held out.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from toolkit.data.requests import RequestSet
from toolkit.errors import DataError
from toolkit.spec.schema import Spec

RECBOLE = "recbole==1.2.1"
"""The wheel that carries the files (installed without its dependencies: it is only read)."""

USER_DENSE = (
    "age",
    "log_prior_ratings",
    "prior_mean_rating",
    "prior_liked_share",
    "log_days_active",
    "log_hours_since_last",
)
USER_SPARSE = ("user_id", "gender", "occupation", "age_bucket")
AD_DENSE = ("release_year", "log_movie_ratings", "movie_mean_rating")
AD_SPARSE = ("movie_id", "genre", "decade")

PROVENANCE = (
    "MovieLens-100k, GroupLens Research, University of Minnesota (https://grouplens.org/datasets/movielens/"
    "100k/); cite F. M. Harper and J. A. Konstan, The MovieLens Datasets: History and Context, ACM TiiS "
    "5(4), 2015. Research use only; not to be redistributed or used commercially without permission. "
    "Read from the atomic files in RecBole's wheel (recbole/dataset_example/ml-100k, MIT licence)."
)


@dataclass(frozen=True)
class MovieLensOptions:
    """How the ratings become requests.

    Attributes:
        session_size: Consecutive ratings of a user that make one request.
        negatives: Inclusive range of unrated movies added to each request.
        train_share: Share of the requests (oldest first) for training.
        calibration_share: Share after those for calibration; the rest are held out.
        seed: Seed of the negative sampling.
    """

    session_size: int = 5
    negatives: tuple[int, int] = (5, 25)
    train_share: float = 0.7
    calibration_share: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        low, high = self.negatives
        if self.session_size < 1 or low < 0 or high < low:
            raise ValueError("session_size must be >= 1 and negatives a range 0 <= low <= high")
        if not (
            self.train_share > 0
            and self.calibration_share >= 0
            and self.train_share + self.calibration_share < 1
        ):
            raise ValueError("train_share > 0, calibration_share >= 0 and their sum < 1 are required")


@dataclass(frozen=True)
class Ratings:
    """The raw tables, as arrays."""

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    time: np.ndarray
    age: dict[int, int]
    gender: dict[int, int]
    occupation: dict[int, int]
    year: dict[int, int]
    genre: dict[int, int]


def dataset_folder() -> Path:
    """Where the installed ``recbole`` package keeps ``ml-100k``.

    Raises:
        DataError: ``recbole`` is not installed or its wheel lacks the files.
    """
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"MovieLens-100k is read from the recbole wheel, which is not installed: "
            f"pip install --no-deps {RECBOLE}"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / "ml-100k"
    missing = [n for n in ("ml-100k.inter", "ml-100k.user", "ml-100k.item") if not (folder / n).is_file()]
    if missing:
        raise DataError(
            f"{folder}: {', '.join(missing)} missing; reinstall with pip install --no-deps {RECBOLE}"
        )
    return folder


def _rows(path: Path, columns: int) -> list[list[str]]:
    """The rows of an atomic file (its header line skipped), each with at least ``columns`` fields."""
    lines = path.read_text(encoding="latin-1").splitlines()
    rows = [line.split("\t") for line in lines[1:] if line]
    for number, row in enumerate(rows, start=2):
        if len(row) < columns:
            raise ValueError(f"line {number} has {len(row)} fields, expected {columns}")
    if not rows:
        raise ValueError("no rows under the header")
    return rows


def read_ratings(folder: Path | None = None) -> Ratings:
    """Read the ratings, users and movies of ``ml-100k`` (default: from the recbole wheel).

    Raises:
        DataError: A file is missing or does not parse (the file and what is wrong named).
    """
    folder = folder or dataset_folder()
    path = folder / "ml-100k.inter"
    try:
        rows = np.array([r[:4] for r in _rows(path, 4)], dtype=np.float64)
        path = folder / "ml-100k.user"
        users = _rows(path, 4)
        age = {int(r[0]): int(r[1]) for r in users}
        path = folder / "ml-100k.item"
        items = _rows(path, 1)
        genres: dict[str, int] = {}
        year, genre = {}, {}
        for r in items:
            item = int(r[0])
            year[item] = int(r[2]) if len(r) > 2 and r[2].isdigit() else 0
            first = r[3].split(" ")[0] if len(r) > 3 and r[3] else ""
            genre[item] = genres.setdefault(first, len(genres) + 1) if first else 0
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not readable as MovieLens-100k's atomic file ({exc})") from None
    occupations = {name: i + 1 for i, name in enumerate(sorted({r[3] for r in users}))}
    return Ratings(
        user=rows[:, 0].astype(np.int64),
        item=rows[:, 1].astype(np.int64),
        rating=rows[:, 2],
        time=rows[:, 3].astype(np.int64),
        age=age,
        gender={int(r[0]): 1 if r[2] == "M" else 2 for r in users},
        occupation={int(r[0]): occupations[r[3]] for r in users},
        year=year,
        genre=genre,
    )


def build_requests(
    ratings: Ratings, options: MovieLensOptions, history_length: int
) -> tuple[RequestSet, np.ndarray]:
    """Turn the ratings into time-ordered requests.

    Ratings are ordered by time; those within one second (MovieLens's resolution, where a user often
    rates several movies) in a seeded random order, so no artificial order (by movie id, say) leaks
    into the sessions. A request at time t knows only the ratings strictly before t: its history, its
    user and movie features and its pool of negatives come from those.

    Returns:
        The requests (raw ids) and each request's time (Unix seconds), non-decreasing.
    """
    if history_length < 1:
        raise ValueError(f"history_length must be at least 1, got {history_length}")
    rng = np.random.default_rng(options.seed)
    order = np.lexsort((rng.permutation(len(ratings.time)), ratings.time))
    user, item, rating, when = (a[order] for a in (ratings.user, ratings.item, ratings.rating, ratings.time))
    by_user: dict[int, list[int]] = {}
    for i, u in enumerate(user):
        by_user.setdefault(int(u), []).append(i)
    sessions: list[tuple[int, int, list[int]]] = []
    for u, rows in by_user.items():
        for start in range(0, len(rows), options.session_size):
            part = rows[start : start + options.session_size]
            sessions.append((part[0], u, part))
    sessions.sort()
    seen_by_user = {u: set(item[rows].tolist()) for u, rows in by_user.items()}
    max_item = int(item.max())
    count = np.zeros(max_item + 1)
    total = np.zeros(max_item + 1)
    done = 0
    user_rows: dict[int, list[int]] = {u: [] for u in by_user}
    out: dict[str, list] = {k: [] for k in ("ud", "us", "hist", "ad", "as", "label", "n", "time")}
    for first_row, u, part in sessions:
        now = int(when[first_row])
        while done < len(when) and when[done] < now:
            count[item[done]] += 1
            total[item[done]] += rating[done]
            user_rows[int(user[done])].append(done)
            done += 1
        before = user_rows[u]
        prior = rating[before]
        history = item[before][-history_length:]
        out["ud"].append(
            [
                ratings.age[u],
                np.log1p(len(before)),
                prior.mean() if len(prior) else 0.0,
                (prior >= 4).mean() if len(prior) else 0.0,
                np.log1p((now - when[before[0]]) / 86400.0) if before else 0.0,
                np.log1p((now - when[before[-1]]) / 3600.0) if before else 0.0,
            ]
        )
        out["us"].append([u, ratings.gender[u], ratings.occupation[u], 1 + ratings.age[u] // 10])
        out["hist"].append(np.pad(history, (history_length - len(history), 0)))
        shown = item[part]
        popular = np.flatnonzero(count > 0)
        pool = popular[~np.isin(popular, list(seen_by_user[u]))]
        wanted = int(rng.integers(options.negatives[0], options.negatives[1] + 1))
        negatives = (
            rng.choice(pool, size=min(wanted, len(pool)), replace=False, p=count[pool] / count[pool].sum())
            if len(pool)
            else np.zeros(0, dtype=np.int64)
        )
        candidates = np.concatenate([shown, negatives]).astype(np.int64)
        labels = np.concatenate(
            [(rating[part] >= 4).astype(np.float32), np.zeros(len(negatives), np.float32)]
        )
        mix = rng.permutation(len(candidates))
        candidates, labels = candidates[mix], labels[mix]
        for m in candidates:
            m = int(m)
            out["ad"].append(
                [
                    ratings.year.get(m, 0),
                    np.log1p(count[m]),
                    total[m] / count[m] if count[m] else 0.0,
                ]
            )
            year = ratings.year.get(m, 0)
            out["as"].append([m, ratings.genre.get(m, 0), 1 + max(year - 1900, 0) // 10 if year else 0])
        out["label"].append(labels)
        out["n"].append(len(candidates))
        out["time"].append(now)
    offsets = np.concatenate([[0], np.cumsum(out["n"])]).astype(np.int64)
    requests = RequestSet(
        user_dense=np.array(out["ud"], dtype=np.float32),
        user_sparse=np.array(out["us"], dtype=np.int64),
        user_history=np.array(out["hist"], dtype=np.int64),
        ad_dense=np.array(out["ad"], dtype=np.float32),
        ad_sparse=np.array(out["as"], dtype=np.int64),
        labels=np.concatenate(out["label"]).astype(np.float32),
        offsets=offsets,
        informative=np.zeros(len(out["n"]), dtype=bool),
    )
    return requests, np.array(out["time"], dtype=np.int64)


def split_in_time(requests: RequestSet, options: MovieLensOptions) -> dict[str, RequestSet]:
    """Train, calibration and holdout: consecutive blocks of the time-ordered requests."""
    r = requests.num_requests
    a = int(r * options.train_share)
    b = a + int(r * options.calibration_share)
    parts = {"train": np.arange(0, a), "calibration": np.arange(a, b), "holdout": np.arange(b, r)}
    return {name: requests.subset(rows) for name, rows in parts.items() if len(rows)}


FEATURES = {
    "user_dense": len(USER_DENSE),
    "ad_dense": len(AD_DENSE),
    "user_sparse": [
        {"name": "user_id", "vocab": 1024},
        {"name": "gender", "vocab": 4},
        {"name": "occupation", "vocab": 32},
        {"name": "age_bucket", "vocab": 16},
    ],
    "ad_sparse": [
        {"name": "movie_id", "vocab": 2048},
        {"name": "genre", "vocab": 32},
        {"name": "decade", "vocab": 16},
    ],
    "history": {"length": 50, "table": "movie_id"},
}
"""The request schema of the logs (``features`` of ``examples/movielens/spec.yaml``)."""

COLUMNS = {
    "request_id": "request_id",
    "label": "label",
    "user_dense": list(USER_DENSE),
    "user_sparse": list(USER_SPARSE),
    "history": "history",
    "ad_dense": list(AD_DENSE),
    "ad_sparse": list(AD_SPARSE),
}
"""The log columns (``data.files.columns`` of ``examples/movielens/spec.yaml``)."""


def logs_spec(folder: Path, history_length: int = 50) -> Spec:
    """A spec that reads the logs in ``folder`` (the features and columns above)."""
    from toolkit.spec.load import spec_from_dict

    features = {**FEATURES, "history": {**FEATURES["history"], "length": history_length}}
    return spec_from_dict(
        {
            "name": "movielens",
            "features": features,
            "data": {
                "files": {
                    "format": "parquet",
                    "train": str(folder / "train.parquet"),
                    "calibration": str(folder / "calibration.parquet"),
                    "holdout": str(folder / "holdout.parquet"),
                    "columns": COLUMNS,
                }
            },
            "tiers": [{"name": "lite", "architecture": "lite"}],
        },
        source="<movielens logs>",
    )


def write_movielens(
    out: Path,
    options: MovieLensOptions | None = None,
    history_length: int = 50,
    folder: Path | None = None,
) -> dict[str, object]:
    """Build the MovieLens-100k request logs as Parquet files under ``out`` and describe them.

    Args:
        out: Folder for ``train.parquet``, ``calibration.parquet``, ``holdout.parquet`` and
            ``PROVENANCE.json`` (files there are replaced).
        options: How ratings become requests.
        history_length: Newest history ids kept per request.
        folder: Where ``ml-100k.*`` lie (default: the recbole wheel).

    Returns:
        What ``PROVENANCE.json`` holds: source, licence, options and the size of each split.

    Raises:
        DataError: The dataset is not installed or does not parse.
    """
    from toolkit.data.logs import write_requests

    options = options or MovieLensOptions()
    requests, times = build_requests(read_ratings(folder), options, history_length)
    spec = logs_spec(out, history_length)
    splits = split_in_time(requests, options)
    out.mkdir(parents=True, exist_ok=True)
    sizes = {}
    bounds = np.cumsum([0] + [part.num_requests for part in splits.values()])
    for name in ("train", "calibration", "holdout"):
        if name not in splits:
            (out / f"{name}.parquet").unlink(missing_ok=True)
    for (name, part), start in zip(splits.items(), bounds[:-1], strict=True):
        write_requests(part, spec, out / f"{name}.parquet", "parquet")
        sizes[name] = {
            "requests": part.num_requests,
            "candidates": part.num_candidates,
            "ctr": float(part.labels.mean()),
            "from": _day(int(times[start])),
            "to": _day(int(times[start + part.num_requests - 1])),
        }
    info = {
        "source": PROVENANCE,
        "options": {**asdict(options), "negatives": list(options.negatives)},
        "history_length": history_length,
        "splits": sizes,
    }
    (out / "PROVENANCE.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def _day(timestamp: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(timestamp, dt.UTC).date().isoformat()
