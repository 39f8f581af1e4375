"""A seeded generator of request-centric ads traffic in which routing is worth doing.

The world: ads belong to categories and advertisers and have a latent quality; users have a segment,
a geo, a device, numeric context and two interest categories, one of them their current intent.
Clicks depend on user and ad effects every tier can learn, plus a large bonus when the ad's category
is one of the user's interests (and a further one for the current intent). Interests are visible only
through the user's history: *informative* users carry long histories drawn mostly from their
interests (newest items from the current intent), the rest carry at most a few random items. The
history holds, per engaged ad, its id in the ad table the spec's ``history.table`` names (the demo
spec uses the ad's category). So a tier that
attends over the history gains on informative requests and cannot gain on the others, and a rule on
the history length identifies where the large tier pays.

Raw ids are 62-bit values, as clients send them; each entity's raw id folds (by the spec's rule) into
its own table row, so folding is exact for generated data.

Each request also gets a value (what it is worth, like an auction's expected revenue): lognormal with
mean 1, independent of everything else and drawn from a generator of its own, so adding values left
every other generated array unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toolkit.data.requests import RequestSet
from toolkit.spec.schema import Features, SparseFeature

_CATEGORIES = 32
_BASE_LOGIT = -4.6
_INTEREST_BONUS = 1.9
_INTENT_BONUS = 1.0
_INTEREST_SHARE = 0.3
_HISTORY_FROM_INTERESTS = 0.85
_VALUE_STREAM = 17
_VALUE_SIGMA = 1.0


def fold_ids(raw: np.ndarray, vocab: int) -> np.ndarray:
    """The spec's folding rule: 0 stays 0 (missing), other ids go to rows ``1 .. vocab-1``."""
    raw = np.asarray(raw, dtype=np.int64)
    return np.where(raw > 0, 1 + np.mod(raw - 1, vocab - 1), 0)


def _raw_ids(rng: np.random.Generator, count: int, vocab: int) -> np.ndarray:
    """``count`` raw 62-bit ids that fold to distinct rows of a ``vocab``-row table."""
    rows = rng.choice(np.arange(1, vocab), size=count, replace=False)
    wraps = rng.integers(1, (1 << 62) // vocab, size=count)
    return (rows - 1 + wraps * (vocab - 1) + 1).astype(np.int64)


def _entities(feature: SparseFeature, wanted: int) -> int:
    return max(1, min(wanted, (feature.vocab - 1) * 3 // 4))


@dataclass(frozen=True)
class _World:
    """Fixed entities and effects, drawn once per seed.

    ``ad_columns[j]`` holds each item's raw id in ad sparse column ``j``: column 0 is the item id,
    column 1 its advertiser, column 2 its category, further columns random item attributes.
    """

    item_category: np.ndarray
    item_quality: np.ndarray
    ad_columns: tuple[np.ndarray, ...]
    items_by_category: tuple[np.ndarray, ...]
    user_sparse_raw: tuple[np.ndarray, ...]
    user_sparse_effect: tuple[np.ndarray, ...]
    segment_category: np.ndarray


def _make_world(features: Features, rng: np.random.Generator) -> _World:
    ad = features.ad_sparse
    n_items = _entities(ad[0], 2000)
    n_categories = min(_CATEGORIES, n_items)
    category = rng.permutation(np.arange(n_items) % n_categories)
    columns = [_raw_ids(rng, n_items, ad[0].vocab)]
    for j, feature in enumerate(ad[1:], start=1):
        if j == 2:
            ids = _raw_ids(rng, _entities(feature, n_categories), feature.vocab)
            columns.append(ids[category % len(ids)])
        else:
            ids = _raw_ids(rng, _entities(feature, 800 if j == 1 else 16), feature.vocab)
            columns.append(ids[rng.integers(0, len(ids), size=n_items)])
    user_raw, user_effect = [], []
    for i, f in enumerate(features.user_sparse):
        n = _entities(f, [100, 50, 8][i] if i < 3 else 64)
        user_raw.append(_raw_ids(rng, n, f.vocab))
        user_effect.append(rng.normal(0.0, 0.35, size=n))
    return _World(
        item_category=category,
        item_quality=rng.normal(0.0, 0.45, size=n_items),
        ad_columns=tuple(columns),
        items_by_category=tuple(np.flatnonzero(category == c) for c in range(n_categories)),
        user_sparse_raw=tuple(user_raw),
        user_sparse_effect=tuple(user_effect),
        segment_category=rng.normal(0.0, 0.4, size=(len(user_raw[0]), n_categories)),
    )


def _pick_items(rng: np.random.Generator, world: _World, categories: np.ndarray) -> np.ndarray:
    out = np.empty(len(categories), dtype=np.int64)
    for c in np.unique(categories):
        pool = world.items_by_category[c]
        where = categories == c
        out[where] = pool[rng.integers(0, len(pool), size=int(where.sum()))]
    return out


def generate_requests(
    features: Features,
    num_requests: int,
    candidates: tuple[int, int],
    informative_share: float,
    seed: int,
    world_seed: int | None = None,
) -> RequestSet:
    """Generate ``num_requests`` requests with labels.

    Args:
        features: The request schema (sizes and vocabularies).
        num_requests: Requests to generate.
        candidates: Inclusive range of N per request.
        informative_share: Share of users with long, informative histories.
        seed: Seed of the traffic (users, candidates, clicks).
        world_seed: Seed of the fixed world (ads, effects); defaults to ``seed``. Train and
            held-out sets share the world and differ in ``seed``.

    Returns:
        The requests, with raw ids, clicks as labels, the ``informative`` flag and ``values``
        (lognormal, mean 1, independent of the rest; drawn from their own generator seeded by
        ``seed``).
    """
    world = _make_world(features, np.random.default_rng(world_seed if world_seed is not None else seed))
    rng = np.random.default_rng([seed, 1])
    n_categories = len(world.items_by_category)
    n_lo, n_hi = candidates
    counts = rng.integers(n_lo, n_hi + 1, size=num_requests)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    total = int(offsets[-1])
    req_of = np.repeat(np.arange(num_requests), counts)

    user_idx = [rng.integers(0, len(raw), size=num_requests) for raw in world.user_sparse_raw]
    user_sparse = np.stack([raw[i] for raw, i in zip(world.user_sparse_raw, user_idx, strict=True)], 1)
    du = features.user_dense
    user_dense = rng.normal(0.0, 1.0, size=(num_requests, du))
    user_dense[:, 0] = rng.gamma(2.0, 40.0, size=num_requests)
    if du > 1:
        user_dense[:, 1] = rng.uniform(0.0, 2000.0, size=num_requests)
    user_bias = 0.006 * (user_dense[:, 0] - 80.0) - 0.0002 * (user_dense[:, 1] - 1000.0 if du > 1 else 0)
    user_bias += sum(eff[i] for eff, i in zip(world.user_sparse_effect, user_idx, strict=True))

    interests = np.stack(
        [rng.integers(0, n_categories, size=num_requests), rng.integers(0, n_categories, size=num_requests)],
        1,
    )
    intent = interests[:, 0]
    informative = rng.random(num_requests) < informative_share
    length = features.history.length
    hist_len = np.where(
        informative,
        rng.integers(max(1, length * 3 // 8), length + 1, size=num_requests),
        rng.integers(0, min(4, length) + 1, size=num_requests),
    )
    slots = np.arange(length)[None, :]
    filled = slots >= (length - hist_len[:, None])
    recent = slots >= (length - np.minimum(hist_len[:, None], 4))
    pick = rng.integers(0, 2, size=(num_requests, length))
    cat_hist = np.where(pick == 0, interests[:, :1], interests[:, 1:2])
    cat_hist = np.where(recent, intent[:, None], cat_hist)
    noise = rng.random((num_requests, length)) > _HISTORY_FROM_INTERESTS
    noise |= ~informative[:, None]
    noise &= ~(recent & informative[:, None])
    cat_hist = np.where(noise, rng.integers(0, n_categories, size=(num_requests, length)), cat_hist)
    hist_items = _pick_items(rng, world, cat_hist.ravel()).reshape(num_requests, length)
    user_history = np.where(filled, world.ad_columns[features.history_table_index][hist_items], 0)

    from_interest = rng.random(total) < _INTEREST_SHARE
    cand_cat = np.where(
        from_interest,
        interests[req_of, rng.integers(0, 2, size=total)],
        rng.integers(0, n_categories, size=total),
    )
    items = _pick_items(rng, world, cand_cat)
    da = features.ad_dense
    ad_dense = rng.normal(0.0, 1.0, size=(total, da))
    ad_dense[:, 0] = world.item_quality[items] + rng.normal(0.0, 0.6, size=total)
    if da > 1:
        ad_dense[:, 1] = rng.lognormal(0.0, 0.8, size=total)
    ad_sparse = np.stack([column[items] for column in world.ad_columns], axis=1)

    category = world.item_category[items]
    in_interest = (category == interests[req_of, 0]) | (category == interests[req_of, 1])
    logit = (
        _BASE_LOGIT
        + user_bias[req_of]
        + world.item_quality[items]
        + 0.25 * (da > 1) * np.log(ad_dense[:, 1 % da] + 1e-3)
        + world.segment_category[user_idx[0][req_of], category]
        + _INTEREST_BONUS * in_interest
        + _INTENT_BONUS * (category == intent[req_of])
    )
    labels = (rng.random(total) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    value_rng = np.random.default_rng([seed, _VALUE_STREAM])
    values = value_rng.lognormal(-0.5 * _VALUE_SIGMA**2, _VALUE_SIGMA, size=num_requests)
    return RequestSet(
        user_dense=user_dense.astype(np.float32),
        user_sparse=user_sparse.astype(np.int64),
        user_history=user_history.astype(np.int64),
        ad_dense=ad_dense.astype(np.float32),
        ad_sparse=ad_sparse,
        labels=labels,
        offsets=offsets,
        informative=informative,
        values=values.astype(np.float32),
    )
