"""MovieLens-100k request logs: sessions, features known at request time, time splits and Parquet logs."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import ROOT

from toolkit.data import movielens
from toolkit.data.logs import read_requests
from toolkit.data.movielens import (
    MovieLensOptions,
    Ratings,
    build_requests,
    dataset_folder,
    logs_spec,
    read_ratings,
    split_in_time,
    write_movielens,
)
from toolkit.data.requests import RequestSet
from toolkit.errors import DataError
from toolkit.spec.load import load_spec
from toolkit.spec.schema import Features, HistoryFeature, LogColumns, SparseFeature

SPEC_FILE = ROOT / "examples" / "movielens" / "spec.yaml"
ARRAYS = ("user_dense", "user_sparse", "user_history", "ad_dense", "ad_sparse", "labels", "offsets")
T0, H = 880_000_000, 3600
HISTORY = 4
OPTIONS = MovieLensOptions(session_size=3, negatives=(1, 3), train_share=0.5, calibration_share=0.25)
# user, age, gender, occupation, zip code
USERS = [(1, 24, "M", "technician", "85711"), (2, 53, "F", "other", "94043"), (3, 33, "M", "writer", "32067")]
USERS += [(4, 17, "F", "student", "15213")]
OCCUPATION = {1: 3, 2: 1, 3: 4, 4: 2}  # sorted names: other, student, technician, writer
# movie, title, release year, genres; expected year, first-genre id (order of first sight) and decade
ITEMS = [
    (1, "Toy Story", "1995", "Animation Children's Comedy"),
    (2, "GoldenEye", "1995", "Action Adventure Thriller"),
    (3, "Four Rooms", "1995", "Thriller"),
    (4, "Get Shorty", "1995", "Action Comedy Drama"),
    (5, "Copycat", "1995", "Crime Drama Thriller"),
    (6, "Shanghai Triad", "1995", "Drama"),
    (7, "Twelve Monkeys", "1995", "Drama Sci-Fi"),
    (8, "Babe", "1995", "Children's Comedy Drama"),
    (9, "Casablanca", "1942", "Drama Romance War"),
    (10, "unkonwn", "unkonwn", "unknown"),
]
YEAR = {m: 1995 for m in range(1, 9)} | {9: 1942, 10: 0}
GENRE = {1: 1, 2: 2, 3: 3, 4: 2, 5: 4, 6: 5, 7: 5, 8: 6, 9: 5, 10: 7}
DECADE = {m: 10 for m in range(1, 9)} | {9: 5, 10: 0}
# user, movie, rating, hours after T0; users 1 and 4 both rate at hour 30 (movies 4 and 7)
RATINGS = [
    (1, 1, 5, 0), (1, 2, 3, 1), (1, 3, 4, 2), (1, 4, 2, 30), (1, 5, 5, 31), (1, 6, 1, 32), (1, 7, 4, 80),
    (1, 8, 5, 81), (2, 2, 4, 5), (2, 9, 5, 6), (2, 1, 2, 7), (2, 5, 4, 40), (2, 3, 3, 41), (2, 10, 1, 42),
    (2, 7, 5, 90), (2, 4, 4, 91), (3, 6, 3, 10), (3, 9, 4, 11), (3, 2, 5, 12), (3, 1, 1, 50), (3, 8, 4, 51),
    (3, 10, 2, 52), (3, 3, 5, 100), (4, 7, 5, 30), (4, 8, 2, 33), (4, 9, 4, 34), (4, 1, 4, 60), (4, 6, 5, 61),
    (4, 10, 3, 62), (4, 5, 2, 120),
]  # fmt: skip


def write_folder(folder: Path, inter_rows: list[str] | None = None) -> Path:
    """A fake ml-100k folder in the exact layout of RecBole's atomic files (rows written shuffled)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = inter_rows or [f"{u}\t{m}\t{r}\t{T0 + h * H}" for u, m, r, h in RATINGS[::-1]]
    files = {
        "inter": ["user_id:token\titem_id:token\trating:float\ttimestamp:float", *rows],
        "user": ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"]
        + ["\t".join(map(str, u)) for u in USERS],
        "item": ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
        + ["\t".join(map(str, i)) for i in ITEMS],
    }
    for ext, lines in files.items():
        (folder / f"ml-100k.{ext}").write_text("\n".join(lines) + "\n", encoding="latin-1")
    return folder


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "ml-100k")


@pytest.fixture
def built(folder: Path) -> tuple[RequestSet, np.ndarray]:
    return build_requests(read_ratings(folder), OPTIONS, HISTORY)


def walk(requests: RequestSet, size: int = 3):
    """Each request with its user, its expected session and every rating strictly before its time."""
    ordered = sorted(RATINGS, key=lambda x: x[3])
    sessions: dict[int, list[list[tuple]]] = {}
    for u in sorted({x[0] for x in RATINGS}):
        mine = [x for x in ordered if x[0] == u]
        sessions[u] = [mine[i : i + size] for i in range(0, len(mine), size)]
    for r in range(requests.num_requests):
        u = int(requests.user_sparse[r, 0])
        session = sessions[u].pop(0)
        earlier = [x for x in ordered if x[3] < session[0][3]]
        yield r, u, session, earlier
    assert all(not left for left in sessions.values()), "some sessions became no request"


def test_read_ratings_parses_every_table_when_files_are_in_recbole_format(folder: Path) -> None:
    ratings = read_ratings(folder)
    assert sorted(zip(ratings.user, ratings.item, ratings.rating, ratings.time, strict=True)) == sorted(
        (u, m, float(r), T0 + h * H) for u, m, r, h in RATINGS
    )
    assert ratings.age == {u[0]: u[1] for u in USERS}
    assert ratings.gender == {1: 1, 2: 2, 3: 1, 4: 2}
    assert ratings.occupation == OCCUPATION
    assert ratings.year == YEAR
    assert ratings.genre == GENRE


def test_build_requests_orders_sessions_in_time_when_rows_are_shuffled(built) -> None:
    requests, times = built
    assert requests.num_requests == len(times) == 12  # users with 8, 8, 7, 7 ratings, 3 per session
    assert np.all(np.diff(times) >= 0)
    for r, _, session, _ in walk(requests):
        assert times[r] == T0 + session[0][3] * H
    assert not requests.informative.any()


def test_build_requests_labels_session_and_unrated_movies_when_negatives_are_sampled(built) -> None:
    requests, _ = built
    lo, hi = OPTIONS.negatives
    for r, u, session, earlier in walk(requests):
        ids = requests.ad_sparse[requests.offsets[r] : requests.offsets[r + 1], 0].tolist()
        labels = dict(zip(ids, requests.request_labels(r).tolist(), strict=True))
        rated_ever = {x[1] for x in RATINGS if x[0] == u}
        assert len(ids) == len(labels), "a movie appears twice in one request"
        assert {m for m in ids if m in rated_ever} == {x[1] for x in session}
        for _, m, rating, _ in session:
            assert labels[m] == (1.0 if rating >= 4 else 0.0)
        negatives = [m for m in ids if m not in rated_ever]
        pool = {x[1] for x in earlier} - rated_ever
        assert set(negatives) <= pool
        assert min(lo, len(pool)) <= len(negatives) <= min(hi, len(pool))
        assert all(labels[m] == 0.0 for m in negatives)
    assert requests.candidates_per_request[0] == 3, "the very first request has nothing to sample from"


def test_build_requests_keeps_prior_movies_oldest_first_when_history_is_padded_or_cut(built) -> None:
    requests, _ = built
    for r, u, _, earlier in walk(requests):
        mine = [x[1] for x in earlier if x[0] == u][-HISTORY:]
        assert requests.user_history[r].tolist() == [0] * (HISTORY - len(mine)) + mine
    first_of_user = {}
    for r, u, _, _ in walk(requests):
        first_of_user.setdefault(u, r)
    assert all(not requests.user_history[r].any() for r in first_of_user.values())
    assert requests.user_history[np.flatnonzero(requests.user_sparse[:, 0] == 1)[2]].tolist() == [3, 4, 5, 6]


def test_build_requests_uses_only_earlier_user_ratings_when_computing_user_features(built) -> None:
    requests, times = built
    ages = {u[0]: u[1] for u in USERS}
    for r, u, _, earlier in walk(requests):
        prior = [x for x in earlier if x[0] == u]
        scores = np.array([x[2] for x in prior], dtype=np.float64)
        now = times[r]
        expected = [
            ages[u],
            np.log1p(len(prior)),
            scores.mean() if prior else 0.0,
            (scores >= 4).mean() if prior else 0.0,
            np.log1p((now - T0 - prior[0][3] * H) / 86400) if prior else 0.0,
            np.log1p((now - T0 - prior[-1][3] * H) / 3600) if prior else 0.0,
        ]
        np.testing.assert_allclose(requests.user_dense[r], expected, rtol=1e-6)
        gender = 1 if u in (1, 3) else 2
        assert requests.user_sparse[r].tolist() == [u, gender, OCCUPATION[u], 1 + ages[u] // 10]


def test_build_requests_uses_only_earlier_movie_ratings_when_computing_movie_features(built) -> None:
    requests, _ = built
    for r, _, _, earlier in walk(requests):
        for row in range(requests.offsets[r], requests.offsets[r + 1]):
            m = int(requests.ad_sparse[row, 0])
            scores = [x[2] for x in earlier if x[1] == m]
            expected = [YEAR[m], np.log1p(len(scores)), np.mean(scores) if scores else 0.0]
            np.testing.assert_allclose(requests.ad_dense[row], expected, rtol=1e-6)
            assert requests.ad_sparse[row].tolist() == [m, GENRE[m], DECADE[m]]


def tie_ratings(first_movie: int) -> Ratings:
    """User 3 rates movie 3 at t=50; users 1 and 2 rate ``first_movie`` and movie 2 at the same t=100."""
    return Ratings(
        user=np.array([1, 2, 3]),
        item=np.array([first_movie, 2, 3]),
        rating=np.array([5.0, 5.0, 5.0]),
        time=np.array([100, 100, 50]),
        age={1: 20, 2: 30, 3: 40},
        gender={1: 1, 2: 2, 3: 1},
        occupation={1: 1, 2: 1, 3: 1},
        year={},
        genre={},
    )


@pytest.mark.parametrize("first_movie", [1, 4])
def test_build_requests_never_counts_a_rating_of_the_requests_own_second_whatever_the_movie_id(first_movie):
    # A request at time t knows only ratings strictly before t: another user's rating at the same second
    # is neither a negative nor counted in a movie's features, whichever movie id it has.
    for seed in range(4):
        options = MovieLensOptions(session_size=1, negatives=(5, 5), seed=seed)
        requests, times = build_requests(tie_ratings(first_movie), options, 2)
        r = int(np.flatnonzero(requests.user_sparse[:, 0] == 2)[0])
        assert times[r] == 100
        rows = slice(requests.offsets[r], requests.offsets[r + 1])
        ids = requests.ad_sparse[rows, 0].tolist()
        assert sorted(ids) == [2, 3]
        assert requests.ad_dense[rows][ids.index(2), 1] == 0.0


@pytest.mark.parametrize(("train", "calibration", "sizes"), [(0.5, 0.25, (6, 3, 3)), (0.7, 0.15, (8, 1, 3))])
def test_split_in_time_cuts_consecutive_blocks_when_shares_are_given(built, train, calibration, sizes):
    requests, _ = built
    options = MovieLensOptions(session_size=3, train_share=train, calibration_share=calibration)
    parts = split_in_time(requests, options)
    assert list(parts) == ["train", "calibration", "holdout"]
    bounds = np.cumsum([0, *sizes])
    for (name, part), start, stop in zip(parts.items(), bounds[:-1], bounds[1:], strict=True):
        assert part.num_requests == stop - start, name
        whole = requests.subset(np.arange(start, stop))
        for key in ARRAYS:
            np.testing.assert_array_equal(getattr(part, key), getattr(whole, key), err_msg=f"{name} {key}")


def test_split_in_time_drops_calibration_when_its_share_is_zero(built) -> None:
    parts = split_in_time(built[0], MovieLensOptions(train_share=0.75, calibration_share=0.0))
    assert {name: p.num_requests for name, p in parts.items()} == {"train": 9, "holdout": 3}


def test_write_movielens_writes_logs_equal_to_built_requests_when_read_back(folder, built, tmp_path) -> None:
    out = tmp_path / "logs"
    info = write_movielens(out, OPTIONS, HISTORY, folder=folder)
    written = json.loads((out / "PROVENANCE.json").read_text(encoding="utf-8"))
    assert written == json.loads(json.dumps(info))  # what it returns, as JSON (tuples become lists)
    info = written
    assert "GroupLens" in info["source"] and "Research use only" in info["source"]
    assert "MIT licence" in info["source"]
    assert info["options"] == {
        "session_size": 3,
        "negatives": [1, 3],
        "train_share": 0.5,
        "calibration_share": 0.25,
        "seed": 0,
    }
    assert info["history_length"] == HISTORY
    # requests at hours 0 5 10 30 30 40 | 50 60 80 | 90 100 120 after T0 (1997-11-20 04:26:40 UTC)
    days = {"train": ("1997-11-20", "1997-11-21"), "calibration": ("1997-11-22", "1997-11-23")}
    days["holdout"] = ("1997-11-23", "1997-11-25")
    parts = split_in_time(built[0], OPTIONS)
    assert list(info["splits"]) == list(parts) == ["train", "calibration", "holdout"]
    for name, part in parts.items():
        size = info["splits"][name]
        assert (size["requests"], size["candidates"]) == (part.num_requests, part.num_candidates)
        assert size["ctr"] == pytest.approx(float(part.labels.mean()))
        assert (size["from"], size["to"]) == days[name]
        back = read_requests(logs_spec(out, HISTORY), out / f"{name}.parquet", 1000)
        for key in ARRAYS:
            np.testing.assert_array_equal(getattr(back, key), getattr(part, key), err_msg=f"{name} {key}")


def test_write_movielens_repeats_files_when_seed_is_the_same_and_not_when_it_differs(folder, tmp_path):
    names = ("train.parquet", "calibration.parquet", "holdout.parquet", "PROVENANCE.json")
    write_movielens(tmp_path / "a", OPTIONS, HISTORY, folder=folder)
    write_movielens(tmp_path / "b", OPTIONS, HISTORY, folder=folder)
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    ratings = read_ratings(folder)
    one = build_requests(ratings, OPTIONS, HISTORY)[0]
    other = build_requests(ratings, MovieLensOptions(**{**OPTIONS.__dict__, "seed": 1}), HISTORY)[0]

    def negatives(requests: RequestSet) -> list[list[int]]:
        rated = {(x[0], x[1]) for x in RATINGS}
        users = np.repeat(requests.user_sparse[:, 0], requests.candidates_per_request)
        flags = [(int(u), int(m)) not in rated for u, m in zip(users, requests.ad_sparse[:, 0], strict=True)]
        ids, ends = requests.ad_sparse[:, 0], requests.offsets
        return [sorted(ids[lo:hi][flags[lo:hi]].tolist()) for lo, hi in zip(ends[:-1], ends[1:], strict=True)]

    assert negatives(one) != negatives(other)


def finder(found: object) -> SimpleNamespace:
    """A stand-in for the ``importlib`` the module sees, whose ``util.find_spec`` returns ``found``."""
    return SimpleNamespace(util=SimpleNamespace(find_spec=lambda _: found))


def test_dataset_folder_names_the_pip_command_when_recbole_is_not_installed(monkeypatch) -> None:
    monkeypatch.setattr(movielens, "importlib", finder(None))
    with pytest.raises(DataError, match=r"pip install --no-deps recbole==1\.2\.1"):
        dataset_folder()


def test_dataset_folder_names_missing_files_when_the_wheel_lacks_them(monkeypatch, tmp_path) -> None:
    found = SimpleNamespace(submodule_search_locations=[str(tmp_path)])
    monkeypatch.setattr(movielens, "importlib", finder(found))
    with pytest.raises(DataError, match=r"ml-100k\.inter, ml-100k\.user, ml-100k\.item missing"):
        dataset_folder()


def test_read_ratings_names_the_file_when_a_rating_is_not_numeric(tmp_path) -> None:
    folder = write_folder(tmp_path / "bad", ["1\t1\t5\t880000000", "1\t2\tfive\t880000100"])
    with pytest.raises(DataError, match="ml-100k.inter") as caught:
        read_ratings(folder)
    assert str(folder / "ml-100k.inter") in str(caught.value)


@pytest.mark.parametrize(
    "bad",
    [
        {"session_size": 0},
        {"negatives": (-1, 3)},
        {"negatives": (4, 3)},
        {"train_share": 0.0},
        {"calibration_share": -0.1},
        {"train_share": 0.8, "calibration_share": 0.2},
    ],
)
def test_movielens_options_raise_when_a_value_is_out_of_range(bad) -> None:
    with pytest.raises(ValueError, match="must be|required"):
        MovieLensOptions(**bad)


def test_example_spec_matches_module_schema_when_loaded() -> None:
    spec = load_spec(SPEC_FILE)
    f = movielens.FEATURES
    expected = Features(
        user_dense=f["user_dense"],
        ad_dense=f["ad_dense"],
        user_sparse=tuple(SparseFeature(**s) for s in f["user_sparse"]),
        ad_sparse=tuple(SparseFeature(**s) for s in f["ad_sparse"]),
        history=HistoryFeature(**f["history"]),
    )
    assert spec.features == expected
    cols = {k: tuple(v) if isinstance(v, list) else v for k, v in movielens.COLUMNS.items()}
    assert spec.data.files is not None and spec.data.files.columns == LogColumns(**cols)
    assert len(spec.data.files.columns.user_dense) == len(movielens.USER_DENSE) == spec.features.user_dense


def test_module_vocabularies_hold_every_id_when_reading_the_real_dataset() -> None:
    try:
        ratings = read_ratings(dataset_folder())
    except DataError as exc:
        pytest.skip(f"recbole's ml-100k is not installed: {exc}")
    tables = movielens.FEATURES["user_sparse"] + movielens.FEATURES["ad_sparse"]
    vocab = {s["name"]: s["vocab"] for s in tables}
    assert int(ratings.user.max()) == 943 < vocab["user_id"]
    assert int(ratings.item.max()) == 1682 < vocab["movie_id"]
    assert max(ratings.genre.values()) < vocab["genre"]
    assert max(ratings.occupation.values()) < vocab["occupation"]
    assert max(1 + a // 10 for a in ratings.age.values()) < vocab["age_bucket"]
    assert max(1 + max(y - 1900, 0) // 10 for y in ratings.year.values()) < vocab["decade"]


@pytest.mark.parametrize(
    ("change", "culprit", "fragment"),
    [
        (lambda f: (f / "ml-100k.user").unlink(), "ml-100k.user", "No such file"),
        (lambda f: (f / "ml-100k.inter").write_text("user_id:token\n1\t1\t5\n"), "ml-100k.inter", "line 2"),
        (lambda f: (f / "ml-100k.inter").write_text("user_id:token\n"), "ml-100k.inter", "no rows"),
        (lambda f: (f / "ml-100k.user").write_text("h\n1\told\tM\twriter\n"), "ml-100k.user", "old"),
    ],
)
def test_read_ratings_raises_data_error_naming_the_file_when_a_table_is_missing_or_malformed(
    folder: Path, change, culprit: str, fragment: str
) -> None:
    change(folder)
    with pytest.raises(DataError, match=culprit) as refused:
        read_ratings(folder)
    assert fragment in str(refused.value)
