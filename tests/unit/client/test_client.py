"""Unit tests of toolkit.client that need no server: input checks and error translation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from toolkit.client import (
    ClientError,
    InvalidRequestError,
    ServerOverloadedError,
    ServerUnavailableError,
    prepare_inputs,
)
from toolkit.client.client import translate_error

DTYPES = {
    "user_dense": np.float32,
    "user_sparse": np.int64,
    "user_history": np.int64,
    "ad_dense": np.float32,
    "ad_sparse": np.int64,
}


def arrays(n: int = 3) -> dict[str, Any]:
    """A valid request in dtypes other than the schema's, so conversion is visible."""
    rng = np.random.default_rng(0)
    return {
        "user_dense": rng.normal(size=(1, 8)),  # float64
        "user_sparse": np.array([[7, 2**40, 3]], dtype=np.uint64),
        "user_history": [[0, 0, 5, 9]],  # a plain list
        "ad_dense": rng.normal(size=(n, 4)).astype(np.float16),
        "ad_sparse": rng.integers(1, 1000, size=(n, 3)).astype(np.int32),
    }


def test_prepare_inputs_converts_to_the_schema_dtypes_when_dtypes_differ() -> None:
    given = arrays()

    out = prepare_inputs(given)

    assert list(out) == list(DTYPES)
    for name, dtype in DTYPES.items():
        assert out[name].dtype == dtype, name
        assert out[name].flags["C_CONTIGUOUS"], name
        np.testing.assert_allclose(out[name], np.asarray(given[name]).astype(np.float64), rtol=1e-6)


def test_prepare_inputs_takes_a_1d_user_vector_as_one_row_when_given() -> None:
    given = arrays()
    given["user_dense"] = np.arange(8.0)
    given["user_history"] = np.array([4, 5, 6])

    out = prepare_inputs(given)

    assert out["user_dense"].shape == (1, 8)
    assert out["user_history"].shape == (1, 3)
    assert out["user_history"].tolist() == [[4, 5, 6]]


def test_prepare_inputs_keeps_non_contiguous_candidates_when_given_a_view() -> None:
    given = arrays(n=6)
    given["ad_dense"] = np.asarray(given["ad_dense"], np.float32)[::2]
    given["ad_sparse"] = np.asarray(given["ad_sparse"])[::2]

    out = prepare_inputs(given)

    assert out["ad_dense"].flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out["ad_sparse"], given["ad_sparse"])


@pytest.mark.parametrize("name", list(DTYPES))
def test_prepare_inputs_raises_naming_the_tensor_when_it_is_missing(name: str) -> None:
    given = arrays()
    del given[name]

    with pytest.raises(InvalidRequestError, match=f"'{name}'"):
        prepare_inputs(given)


def test_prepare_inputs_raises_naming_the_tensor_when_it_is_none() -> None:
    with pytest.raises(InvalidRequestError, match="'ad_sparse'"):
        prepare_inputs({**arrays(), "ad_sparse": None})


@pytest.mark.parametrize("name", ["user_dense", "ad_sparse"])
def test_prepare_inputs_raises_naming_the_tensor_when_its_dtype_is_a_string(name: str) -> None:
    given = arrays()
    given[name] = np.asarray(given[name]).astype(str)

    with pytest.raises(InvalidRequestError, match=f"'{name}'"):
        prepare_inputs(given)


@pytest.mark.parametrize("name", ["user_sparse", "user_history", "ad_sparse"])
def test_prepare_inputs_raises_naming_the_tensor_when_ids_are_floats(name: str) -> None:
    given = arrays()
    given[name] = np.asarray(given[name]).astype(np.float64)

    with pytest.raises(InvalidRequestError, match=f"'{name}'.*integers"):
        prepare_inputs(given)


@pytest.mark.parametrize("name", list(DTYPES))
def test_prepare_inputs_raises_naming_the_tensor_when_it_is_3d(name: str) -> None:
    given = arrays()
    given[name] = np.asarray(given[name])[None]

    with pytest.raises(InvalidRequestError, match=f"'{name}'.*2-D"):
        prepare_inputs(given)


def test_prepare_inputs_raises_naming_the_tensor_when_a_candidate_tensor_is_1d() -> None:
    given = arrays()
    given["ad_dense"] = np.zeros(4, np.float32)

    with pytest.raises(InvalidRequestError, match="'ad_dense'"):
        prepare_inputs(given)


@pytest.mark.parametrize("name", ["user_dense", "user_sparse", "user_history"])
def test_prepare_inputs_raises_naming_the_tensor_when_a_user_tensor_has_two_rows(name: str) -> None:
    given = arrays()
    given[name] = np.concatenate([np.asarray(given[name])] * 2)

    with pytest.raises(InvalidRequestError, match=f"'{name}'.*one row"):
        prepare_inputs(given)


def test_prepare_inputs_raises_naming_both_tensors_when_n_differs() -> None:
    given = arrays(n=3)
    given["ad_sparse"] = np.ones((4, 3), np.int64)

    with pytest.raises(InvalidRequestError) as info:
        prepare_inputs(given)

    assert "'ad_dense'" in str(info.value) and "'ad_sparse'" in str(info.value)
    assert "3" in str(info.value) and "4" in str(info.value)


def test_prepare_inputs_raises_naming_ad_dense_when_there_are_no_candidates() -> None:
    with pytest.raises(InvalidRequestError, match="'ad_dense'"):
        prepare_inputs(arrays(n=0))


def test_invalid_request_error_is_a_client_error_when_raised() -> None:
    with pytest.raises(ClientError):
        prepare_inputs({})


class FakeServerError(Exception):
    """Shaped like tritonclient's InferenceServerException: status() and message()."""

    def __init__(self, message: str, status: str | None) -> None:
        super().__init__(message)
        self._message = message
        self._status = status

    def status(self) -> str | None:
        return self._status

    def message(self) -> str:
        return self._message


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        ("StatusCode.INVALID_ARGUMENT", InvalidRequestError),
        ("StatusCode.UNAVAILABLE", ServerUnavailableError),
        ("StatusCode.NOT_FOUND", ServerUnavailableError),
        (None, ServerUnavailableError),
    ],
)
def test_translate_error_gives_the_matching_client_error_when_the_status_is_known(
    status: str | None, kind: type[ClientError]
) -> None:
    error = translate_error(FakeServerError("request refused: 'tier'", status), "ads_ranking")

    assert type(error) is kind
    assert error.status == status
    assert str(error) == "ads_ranking: request refused: 'tier'"


@pytest.mark.parametrize(
    "message", ["in ensemble 'x', Request timeout expired", "Exceeds maximum queue size"]
)
def test_translate_error_says_overloaded_when_the_queue_policy_shed_the_request(message: str) -> None:
    error = translate_error(FakeServerError(message, "StatusCode.UNAVAILABLE"), "ads_ranking")

    assert type(error) is ServerOverloadedError
    assert isinstance(error, ServerUnavailableError)
    assert message in str(error) and "overloaded" in str(error)


def test_translate_error_gives_a_plain_client_error_when_the_status_is_internal() -> None:
    error = translate_error(FakeServerError("boom", "StatusCode.INTERNAL"), "m")

    assert type(error) is ClientError
    assert error.status == "StatusCode.INTERNAL"


def test_translate_error_uses_the_exception_text_when_it_has_no_status_method() -> None:
    error = translate_error(ConnectionRefusedError("connection refused"), "m")

    assert isinstance(error, ServerUnavailableError)
    assert str(error) == "m: connection refused"
