"""Cross-fitting: no request is ever scored by a tier copy that trained on it."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np
import pytest

from toolkit.data.demo import demo_train_set
from toolkit.data.logs import default_columns, write_requests
from toolkit.errors import DataError
from toolkit.models.preprocess import Preprocess
from toolkit.spec import Spec, spec_from_dict
from toolkit.train import crossfit, trainer
from toolkit.train.crossfit import cross_fit, fold_of


def test_fold_of_cuts_consecutive_blocks_of_near_equal_size_when_requests_do_not_divide() -> None:
    folds = fold_of(np.arange(10), 10, 3)
    assert folds.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="2 folds"):
        fold_of(np.arange(3), 3, 1)


def row_keys(user_dense: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in np.ascontiguousarray(user_dense, dtype=np.float32)}


class Spy:
    """Records, per trained model, the requests it trained on and the requests it scored."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.trained: dict[int, set[bytes]] = {}
        self.scored: dict[int, set[bytes]] = {}
        self.models: list[Any] = []
        real_fit, real_predict = trainer.fit, trainer.predict

        def fit(model: Any, data: Any, spec: Spec, name: str, progress: Any = None) -> None:
            seen: set[bytes] = set()
            rng = np.random.default_rng(0)
            for batch, requests in trainer._epoch(data, rng, spec.training.batch_requests):
                seen |= row_keys(batch.user_dense.numpy()[requests])
            self.trained[id(model)] = seen
            self.models.append(model)
            real_fit(model, data, spec, name, progress)

        def predict(model: Any, data: Any, batch_requests: int = 512) -> np.ndarray:
            self.scored.setdefault(id(model), set()).update(row_keys(data.user_dense.numpy()))
            return real_predict(model, data, batch_requests)

        monkeypatch.setattr(crossfit.trainer, "fit", fit)
        monkeypatch.setattr(crossfit.trainer, "predict", predict)


def small_spec(tiny_spec_dict: dict[str, Any], logs: str | None = None) -> Spec:
    data = copy.deepcopy(tiny_spec_dict)
    data["data"]["train_requests"] = 90
    data["training"] = {"epochs": 1, "batch_requests": 8}
    spec = spec_from_dict(data, source="tiny.yaml")
    if logs is None:
        return spec
    columns = dataclasses.asdict(default_columns(spec, "parquet"))
    data["data"]["files"] = {
        "format": "parquet",
        "train": logs,
        "holdout": logs,
        "chunk_rows": 37,
        "columns": {k: list(v) if isinstance(v, tuple) else v for k, v in columns.items() if v},
    }
    return spec_from_dict(data, source="tiny.yaml")


def check_out_of_sample(spec: Spec, spy: Spy, result: crossfit.CrossFit, preprocess: Preprocess) -> None:
    assert spy.trained and set(spy.scored) <= set(spy.trained)
    assert len(spy.trained) == 3 * len(spec.tier_names)
    for model, scored in spy.scored.items():
        assert scored, "a copy scored nothing"
        assert not scored & spy.trained[model], "a copy scored a request it trained on"
    prepared = trainer.prepare(preprocess, result.requests)
    keys = [row.tobytes() for row in prepared.user_dense.numpy()]
    for fold in range(3):
        mine = {keys[r] for r in np.flatnonzero(result.folds == fold)}
        copies = [m for m, scored in spy.scored.items() if scored & mine]
        assert len(copies) == len(spec.tier_names)
        assert all(scored == mine for m, scored in spy.scored.items() if m in copies)
    assert result.scores.shape == (len(spec.tier_names), result.requests.num_candidates)
    assert np.all((result.scores > 0) & (result.scores < 1))


def test_cross_fit_never_scores_a_request_with_a_copy_that_trained_on_it_when_data_is_generated(
    tiny_spec_dict: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = small_spec(tiny_spec_dict)
    train = demo_train_set(spec)
    preprocess = Preprocess.fit(spec.features, train.user_dense, train.ad_dense)
    spy = Spy(monkeypatch)

    result = cross_fit(spec, preprocess, folds=3, max_requests=60)

    assert result.requests.num_requests == 60
    assert np.array_equal(result.folds, fold_of(result.positions, train.num_requests, 3))
    check_out_of_sample(spec, spy, result, preprocess)


def test_cross_fit_never_scores_a_request_with_a_copy_that_trained_on_it_when_logs_are_streamed(
    tiny_spec_dict: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    generated = small_spec(tiny_spec_dict)
    log = tmp_path / "train.parquet"
    spec = small_spec(tiny_spec_dict, str(log))
    write_requests(demo_train_set(generated), spec, log, "parquet")
    train = demo_train_set(generated)
    preprocess = Preprocess.fit(spec.features, train.user_dense, train.ad_dense)
    spy = Spy(monkeypatch)

    result = cross_fit(spec, preprocess, folds=3, max_requests=90)

    assert result.requests.num_requests == 90
    check_out_of_sample(spec, spy, result, preprocess)
    trained = set().union(*spy.trained.values())
    assert len(trained) == 90


def test_cross_fit_refuses_a_tier_the_user_brings_naming_it(tiny_spec: Spec) -> None:
    from toolkit.spec.schema import ModelInput, UserModelSpec

    user = UserModelSpec(inputs=(ModelInput("x", ("ad_dense",)),), onnx="mine.onnx")
    tiers = (
        *tiny_spec.tiers[:2],
        dataclasses.replace(tiny_spec.tiers[2], architecture="", params={}, model=user),
    )
    spec = dataclasses.replace(tiny_spec, tiers=tiers)
    with pytest.raises(DataError, match="'xl'.*fit_on: calibration"):
        cross_fit(spec, None, folds=3, max_requests=10)
