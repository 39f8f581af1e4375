"""Unit tests of toolkit.data: the demo request generator, id folding and the RequestSet layout."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
from helpers import ROOT

from toolkit.data import (
    REQUEST_TENSORS,
    RequestSet,
    candidate_rows,
    demo_holdout_set,
    demo_train_set,
    fold_ids,
    generate_requests,
)
from toolkit.errors import DataError
from toolkit.spec import Spec, load_spec

REPO = ROOT
ARRAYS = ("user_dense", "user_sparse", "user_history", "ad_dense", "ad_sparse", "labels", "offsets")


@pytest.fixture(scope="module")
def default_spec() -> Spec:
    return load_spec(REPO / "ensembles" / "ads_ranking.yaml")


@pytest.fixture(scope="module")
def traffic(default_spec: Spec) -> RequestSet:
    """A few thousand requests of the default spec's world."""
    return generate_requests(default_spec.features, 2000, (8, 48), 0.35, seed=11, world_seed=7)


@pytest.fixture(scope="module")
def small_set(tiny_spec: Spec) -> RequestSet:
    return generate_requests(tiny_spec.features, 30, (2, 6), 0.5, seed=5, world_seed=3)


def fold_one(raw: int, vocab: int) -> int:
    """The folding rule for one id, in plain Python integers."""
    return 0 if raw <= 0 else 1 + (raw - 1) % (vocab - 1)


def item_attributes(requests: RequestSet) -> dict[int, tuple[int, ...]]:
    """Raw ad id -> the raw ids of its other ad columns; fails if one ad shows two attribute sets."""
    seen: dict[int, tuple[int, ...]] = {}
    for row in requests.ad_sparse:
        attrs = tuple(int(v) for v in row[1:])
        assert seen.setdefault(int(row[0]), attrs) == attrs
    return seen


def test_generate_requests_gives_identical_arrays_when_seeds_are_equal(tiny_spec: Spec) -> None:
    a = generate_requests(tiny_spec.features, 25, (2, 6), 0.5, seed=9, world_seed=4)
    b = generate_requests(tiny_spec.features, 25, (2, 6), 0.5, seed=9, world_seed=4)

    for name in (*ARRAYS, "informative"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_generate_requests_gives_different_arrays_when_the_traffic_seed_differs(tiny_spec: Spec) -> None:
    a = generate_requests(tiny_spec.features, 25, (2, 6), 0.5, seed=9, world_seed=4)
    b = generate_requests(tiny_spec.features, 25, (2, 6), 0.5, seed=10, world_seed=4)

    assert not np.array_equal(a.user_dense, b.user_dense)
    assert not np.array_equal(a.offsets, b.offsets) or not np.array_equal(a.ad_sparse, b.ad_sparse)


def test_generate_requests_shares_the_id_universe_when_the_world_seed_is_equal(default_spec: Spec) -> None:
    a = generate_requests(default_spec.features, 300, (8, 48), 0.35, seed=1, world_seed=7)
    b = generate_requests(default_spec.features, 300, (8, 48), 0.35, seed=2, world_seed=7)
    other = generate_requests(default_spec.features, 300, (8, 48), 0.35, seed=2, world_seed=8)

    attrs_a, attrs_b = item_attributes(a), item_attributes(b)
    shared = set(attrs_a) & set(attrs_b)
    assert len(shared) > 0.3 * len(attrs_b)
    assert all(attrs_a[ad] == attrs_b[ad] for ad in shared)  # same ad, same advertiser and category
    assert set(np.unique(a.user_sparse[:, 2])) == set(np.unique(b.user_sparse[:, 2]))  # 8 devices
    assert not set(attrs_a) & set(item_attributes(other))


def test_generate_requests_matches_the_spec_when_shapes_and_dtypes_are_checked(tiny_spec: Spec) -> None:
    features = tiny_spec.features
    requests = generate_requests(features, 30, (2, 6), 0.5, seed=5)
    r, t = 30, int(requests.offsets[-1])

    expected = {
        "user_dense": ((r, features.user_dense), np.float32),
        "user_sparse": ((r, len(features.user_sparse)), np.int64),
        "user_history": ((r, features.history.length), np.int64),
        "ad_dense": ((t, features.ad_dense), np.float32),
        "ad_sparse": ((t, len(features.ad_sparse)), np.int64),
        "labels": ((t,), np.float32),
        "offsets": ((r + 1,), np.int64),
        "informative": ((r,), np.bool_),
        "values": ((r,), np.float32),
    }
    for name, (shape, dtype) in expected.items():
        value = getattr(requests, name)
        assert value.shape == shape, name
        assert value.dtype == dtype, name
    assert set(np.unique(requests.labels)) <= {0.0, 1.0}
    assert requests.num_requests == r
    assert requests.num_candidates == t


def test_generate_requests_keeps_n_in_range_when_candidates_are_drawn(traffic: RequestSet) -> None:
    counts = np.diff(traffic.offsets)

    assert counts.min() >= 8
    assert counts.max() <= 48
    assert len(np.unique(counts)) > 30  # the whole range is used, not a constant
    np.testing.assert_array_equal(traffic.candidates_per_request, counts)


def test_generate_requests_gives_a_ctr_between_1_and_10_percent_when_thousands_of_requests(
    traffic: RequestSet,
) -> None:
    ctr = float(traffic.labels.mean())

    assert traffic.num_candidates > 20000
    assert 0.01 <= ctr <= 0.10


def test_generate_requests_gives_long_histories_when_the_request_is_informative(
    traffic: RequestSet, default_spec: Spec
) -> None:
    length = default_spec.features.history.length
    filled = np.count_nonzero(traffic.user_history, axis=1)

    assert traffic.informative.any() and (~traffic.informative).any()
    assert filled[traffic.informative].min() >= length * 3 / 8
    assert filled[~traffic.informative].max() <= 4
    share = traffic.informative.mean()
    assert abs(share - 0.35) < 0.05


def test_generate_requests_pads_histories_on_the_left_when_they_are_short(traffic: RequestSet) -> None:
    for row in traffic.user_history:
        nonzero = np.flatnonzero(row)
        if nonzero.size:
            assert nonzero[0] == row.size - nonzero.size  # zeros first, then the items, newest last


def test_generate_requests_gives_positive_62_bit_ids_when_raw_ids_are_drawn(traffic: RequestSet) -> None:
    history = traffic.user_history[traffic.user_history != 0]
    for ids in (traffic.user_sparse, traffic.ad_sparse, history):
        assert ids.min() > 0
        assert ids.max() < 1 << 62
    assert traffic.ad_sparse.max() > 1 << 40  # raw ids, not table rows


def test_fold_ids_gives_rows_inside_the_vocabulary_when_folding_generated_ids(
    traffic: RequestSet, default_spec: Spec
) -> None:
    features = default_spec.features
    columns = [(traffic.user_sparse[:, i], f.vocab) for i, f in enumerate(features.user_sparse)]
    columns += [(traffic.ad_sparse[:, j], f.vocab) for j, f in enumerate(features.ad_sparse)]
    columns.append((traffic.user_history[traffic.user_history != 0], features.history_vocab))
    for raw, vocab in columns:
        rows = fold_ids(raw, vocab)
        assert rows.min() >= 1
        assert rows.max() <= vocab - 1
        sample = raw[:50]
        assert [int(v) for v in fold_ids(sample, vocab)] == [fold_one(int(v), vocab) for v in sample]


def test_fold_ids_gives_distinct_rows_when_generated_entities_differ(
    traffic: RequestSet, default_spec: Spec
) -> None:
    vocab = default_spec.features.ad_sparse[0].vocab
    raw = np.unique(traffic.ad_sparse[:, 0])

    assert len(np.unique(fold_ids(raw, vocab))) == len(raw)  # folding is exact for generated data


def test_fold_ids_maps_to_zero_when_ids_are_zero_or_negative() -> None:
    raw = np.array([0, -1, -7, -(1 << 62), np.iinfo(np.int64).min], dtype=np.int64)

    np.testing.assert_array_equal(fold_ids(raw, 17), np.zeros(5, dtype=np.int64))


def test_fold_ids_follows_the_rule_when_ids_are_positive() -> None:
    vocab = 9
    raw = [1, 2, 8, 9, 10, 16, 17, 1 << 62, np.iinfo(np.int64).max]

    got = fold_ids(np.array(raw, dtype=np.int64), vocab)

    assert [int(v) for v in got] == [fold_one(v, vocab) for v in raw]


def test_request_set_request_gives_the_rows_of_one_request_when_sliced(small_set: RequestSet) -> None:
    for r in range(small_set.num_requests):
        request = small_set.request(r)
        rows = [
            i for i in range(small_set.num_candidates) if small_set.offsets[r] <= i < small_set.offsets[r + 1]
        ]
        assert tuple(request) == REQUEST_TENSORS
        np.testing.assert_array_equal(request["user_dense"], small_set.user_dense[[r]])
        np.testing.assert_array_equal(request["user_sparse"], small_set.user_sparse[[r]])
        np.testing.assert_array_equal(request["user_history"], small_set.user_history[[r]])
        np.testing.assert_array_equal(request["ad_dense"], small_set.ad_dense[rows])
        np.testing.assert_array_equal(request["ad_sparse"], small_set.ad_sparse[rows])
        np.testing.assert_array_equal(small_set.request_labels(r), small_set.labels[rows])


def test_request_set_request_index_names_each_candidates_request_when_computed(small_set: RequestSet) -> None:
    expected = []
    for r in range(small_set.num_requests):
        expected += [r] * int(small_set.offsets[r + 1] - small_set.offsets[r])

    np.testing.assert_array_equal(small_set.request_index(), expected)


def test_candidate_rows_gives_the_rows_in_request_order_when_requests_are_shuffled(
    small_set: RequestSet,
) -> None:
    rng = np.random.default_rng(0)
    requests = rng.permutation(small_set.num_requests)[:12]

    expected = [row for r in requests for row in range(small_set.offsets[r], small_set.offsets[r + 1])]

    np.testing.assert_array_equal(candidate_rows(small_set.offsets, requests), expected)


def test_candidate_rows_gives_an_empty_array_when_no_requests_are_asked(small_set: RequestSet) -> None:
    rows = candidate_rows(small_set.offsets, np.zeros(0, dtype=np.int64))

    assert rows.shape == (0,)
    assert rows.dtype == np.int64


def test_request_set_subset_holds_the_chosen_requests_when_given_indices(small_set: RequestSet) -> None:
    chosen = np.array([7, 2, 2, 19, 0])

    sub = small_set.subset(chosen)

    assert sub.num_requests == len(chosen)
    for i, r in enumerate(chosen):
        mine, theirs = sub.request(i), small_set.request(int(r))
        for name in REQUEST_TENSORS:
            np.testing.assert_array_equal(mine[name], theirs[name], err_msg=name)
        np.testing.assert_array_equal(sub.request_labels(i), small_set.request_labels(int(r)))
        assert sub.informative[i] == small_set.informative[r]


@pytest.mark.parametrize(
    ("field", "value", "culprit"),
    [
        ("labels", np.zeros(3, np.float32), "labels"),
        ("user_sparse", np.zeros((1, 2), np.int64), "user_sparse"),
        ("offsets", np.array([0, 1], np.int64), "offsets"),
        ("ad_sparse", np.zeros((1, 3), np.int64), "ad_sparse"),
        ("informative", np.zeros(1, bool), "informative"),
    ],
)
def test_request_set_raises_data_error_naming_the_array_when_arrays_disagree(
    small_set: RequestSet, field: str, value: np.ndarray, culprit: str
) -> None:
    with pytest.raises(DataError, match=culprit):
        dataclasses.replace(small_set, **{field: value})


def test_demo_sets_differ_but_share_the_world_when_built_from_one_spec(tiny_spec: Spec) -> None:
    train = demo_train_set(tiny_spec)
    holdout = demo_holdout_set(tiny_spec)

    assert train.num_requests == tiny_spec.data.train_requests
    assert holdout.num_requests == tiny_spec.data.holdout_requests
    assert not np.array_equal(train.user_dense[: holdout.num_requests], holdout.user_dense)
    attrs_train, attrs_holdout = item_attributes(train), item_attributes(holdout)
    shared = set(attrs_train) & set(attrs_holdout)
    assert shared
    assert all(attrs_train[ad] == attrs_holdout[ad] for ad in shared)
    # user_geo has only a handful of users' geos in this world: the holdout draws from the same ones
    assert set(np.unique(holdout.user_sparse[:, 1])) <= set(np.unique(train.user_sparse[:, 1]))


def test_demo_sets_are_reproducible_when_built_twice(tiny_spec: Spec) -> None:
    first, second = demo_holdout_set(tiny_spec, 10), demo_holdout_set(tiny_spec, 10)

    assert first.num_requests == 10
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name), err_msg=name)


# sha256 over (name, dtype, shape, bytes) of every array but ``values``, computed with the generator
# as it was before requests carried values: adding values must not change any other generated array.
GENERATED_SHA256 = {
    "tiny": "ec4705109bd5eeaaada96dd5ee2cba7876e4b122be3c5c27c9896ab67384dec4",
    "default": "265ce8b3060a4638464ed900bf6f243bced1f90369434bf2fb42853f6ca67eb4",
}


def arrays_sha256(requests: RequestSet) -> str:
    digest = hashlib.sha256()
    for name in (*ARRAYS, "informative"):
        array = np.ascontiguousarray(getattr(requests, name))
        for part in (name, str(array.dtype), str(array.shape)):
            digest.update(part.encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def test_generate_requests_keeps_every_other_array_unchanged_when_values_are_added(
    tiny_spec: Spec, default_spec: Spec
) -> None:
    tiny = generate_requests(tiny_spec.features, 40, (2, 6), 0.5, seed=21, world_seed=4)
    default = generate_requests(default_spec.features, 200, (8, 48), 0.35, seed=21, world_seed=4)

    assert tiny.values is not None and default.values is not None
    assert arrays_sha256(tiny) == GENERATED_SHA256["tiny"]
    assert arrays_sha256(default) == GENERATED_SHA256["default"]


def test_generate_requests_gives_positive_values_with_mean_near_one_when_thousands_of_requests(
    traffic: RequestSet,
) -> None:
    values = traffic.values

    assert values is not None
    assert values.shape == (traffic.num_requests,) and values.dtype == np.float32
    assert np.isfinite(values).all() and values.min() > 0
    assert abs(float(values.mean()) - 1.0) < 0.15
    assert len(np.unique(values)) == traffic.num_requests  # drawn per request, not a constant
    assert abs(np.corrcoef(values, np.count_nonzero(traffic.user_history, axis=1))[0, 1]) < 0.1


def test_generate_requests_draws_values_from_the_traffic_seed_only_when_seeds_vary(tiny_spec: Spec) -> None:
    a = generate_requests(tiny_spec.features, 25, (2, 6), 0.5, seed=9, world_seed=4)
    same_seed = generate_requests(tiny_spec.features, 25, (2, 6), 0.5, seed=9, world_seed=5)
    other_seed = generate_requests(tiny_spec.features, 25, (2, 6), 0.5, seed=10, world_seed=4)

    np.testing.assert_array_equal(a.values, same_seed.values)
    assert not np.array_equal(a.values, other_seed.values)


def test_request_set_subset_keeps_the_chosen_requests_values_when_given_indices(
    small_set: RequestSet,
) -> None:
    chosen = np.array([7, 2, 2, 19, 0])

    sub = small_set.subset(chosen)

    assert small_set.values is not None
    np.testing.assert_array_equal(sub.values, small_set.values[chosen])
    np.testing.assert_array_equal(sub.value_weights(), small_set.values[chosen])


def test_request_set_value_weights_are_ones_when_the_set_has_no_values(small_set: RequestSet) -> None:
    plain = dataclasses.replace(small_set, values=None)

    weights = plain.value_weights()

    assert plain.subset(np.array([3, 1])).values is None
    assert weights.dtype == np.float32
    np.testing.assert_array_equal(weights, np.ones(small_set.num_requests, np.float32))


def test_request_set_casts_values_to_fp32_when_given_as_float64(small_set: RequestSet) -> None:
    values = np.linspace(0.5, 2.0, small_set.num_requests)

    got = dataclasses.replace(small_set, values=values)

    assert got.values is not None and got.values.dtype == np.float32
    np.testing.assert_array_equal(got.values, values.astype(np.float32))


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (0.0, "request 3 is worth 0"),
        (-1.5, "request 3 is worth -1.5"),
        (np.nan, "request 3 is worth nan"),
        (np.inf, "request 3 is worth inf"),
        (1e-60, "request 3 is worth 0"),  # positive in FP64, 0 in FP32
    ],
)
def test_request_set_raises_data_error_naming_the_request_when_a_value_is_not_finite_and_positive(
    small_set: RequestSet, bad: float, expected: str
) -> None:
    values = np.ones(small_set.num_requests)
    values[3] = bad

    with pytest.raises(DataError, match="finite and positive") as excinfo:
        dataclasses.replace(small_set, values=values)
    assert expected in str(excinfo.value)


def test_request_set_raises_data_error_naming_values_when_their_shape_is_wrong(small_set: RequestSet) -> None:
    with pytest.raises(DataError, match="inconsistent: values"):
        dataclasses.replace(small_set, values=np.ones(small_set.num_requests + 1, np.float32))
    with pytest.raises(DataError, match="inconsistent: values"):
        dataclasses.replace(small_set, values=np.ones((small_set.num_requests, 1), np.float32))
