"""Request logs: the Criteo TSV, Parquet and CSV readers and writer, and training streamed from them."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import toolkit.data.logs as logs
from toolkit.data.demo import demo_gate_set, demo_holdout_set, demo_quantization_set, demo_train_set
from toolkit.data.generator import generate_requests
from toolkit.data.logs import (
    concat_requests,
    default_columns,
    dense_statistics,
    iter_requests,
    read_requests,
    summarize,
    write_requests,
)
from toolkit.data.requests import RequestSet
from toolkit.errors import DataError
from toolkit.spec import Spec, spec_from_dict
from toolkit.spec.schema import LogColumns
from toolkit.train import train

ARRAYS = ("user_dense", "user_sparse", "user_history", "ad_dense", "ad_sparse", "labels", "offsets")
CRITEO_WIDTH = 40


@pytest.fixture(scope="module")
def generated(tiny_spec: Spec) -> RequestSet:
    return generate_requests(tiny_spec.features, 30, (2, 6), 0.5, seed=11, world_seed=3)


def files_spec(
    base: dict[str, Any],
    fmt: str,
    train_path: Path,
    holdout_path: Path | None = None,
    chunk_rows: int = 65536,
    columns: LogColumns | None = None,
    calibration: Path | None = None,
) -> Spec:
    data = copy.deepcopy(base)
    cols = columns or default_columns(spec_from_dict(copy.deepcopy(base)), fmt)
    data["data"]["files"] = {
        "format": fmt,
        "train": str(train_path),
        "holdout": str(holdout_path or train_path),
        "calibration": str(calibration or ""),
        "chunk_rows": chunk_rows,
        "columns": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cols).items()},
    }
    return spec_from_dict(data, source="logs.yaml")


def assert_same(got: RequestSet, want: RequestSet) -> None:
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    assert got.user_dense.dtype == np.float32 and got.ad_sparse.dtype == np.int64
    assert not got.informative.any()


def one_line_error(excinfo: pytest.ExceptionInfo[DataError], *parts: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)
    return message


def criteo_line(
    label: str = "0", dense: dict[int, str] | None = None, sparse: dict[int, str] | None = None
) -> str:
    fields = [label] + [""] * 13 + [""] * 26
    for i, value in (dense or {}).items():
        fields[i] = value
    for i, value in (sparse or {}).items():
        fields[13 + i] = value
    assert len(fields) == CRITEO_WIDTH
    return "\t".join(fields)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_written_log_reads_back_as_equal_arrays_when_written_as(
    tiny_spec: Spec, tiny_spec_dict: dict[str, Any], generated: RequestSet, tmp_path: Path, fmt: str
) -> None:
    path = tmp_path / f"log.{fmt}"
    write_requests(generated, tiny_spec, path, fmt)
    got = read_requests(files_spec(tiny_spec_dict, fmt, path), path, 1000)
    assert_same(got, generated)


def test_criteo_log_reads_back_ids_dense_values_and_labels_with_one_candidate_a_row(
    tiny_spec: Spec, tiny_spec_dict: dict[str, Any], generated: RequestSet, tmp_path: Path
) -> None:
    path = tmp_path / "log.tsv"
    write_requests(generated, tiny_spec, path, "criteo")
    first = path.read_text().splitlines()[0].split("\t")
    assert len(first) == CRITEO_WIDTH and first[0] in ("0", "1")
    assert all(c == c.lower() for c in first[14:])
    got = read_requests(files_spec(tiny_spec_dict, "criteo", path), path, 10_000)
    rows = generated.request_index()
    assert got.num_requests == generated.num_candidates
    np.testing.assert_array_equal(got.offsets, np.arange(generated.num_candidates + 1))
    np.testing.assert_array_equal(got.user_dense, generated.user_dense[rows])
    np.testing.assert_array_equal(got.user_sparse, generated.user_sparse[rows])
    np.testing.assert_array_equal(got.ad_dense, generated.ad_dense)
    np.testing.assert_array_equal(got.ad_sparse, generated.ad_sparse)
    np.testing.assert_array_equal(got.labels, generated.labels)
    assert got.user_history.shape == (got.num_requests, tiny_spec.features.history.length)
    assert not got.user_history.any()


def test_criteo_reader_reads_empty_values_as_zero_and_accepts_upper_case_hex(
    tiny_spec_dict: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "day_0"
    lines = [criteo_line("1", {1: "7", 4: "-2"}, {1: "A", 4: "00ff"}), criteo_line("0")]
    path.write_text("\n".join(lines) + "\n")
    got = read_requests(files_spec(tiny_spec_dict, "criteo", path), path, 5)
    np.testing.assert_array_equal(got.labels, [1.0, 0.0])
    np.testing.assert_array_equal(got.user_dense, [[7.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(got.ad_dense, [[-2.0, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(got.user_sparse, [[10, 0], [0, 0]])
    np.testing.assert_array_equal(got.ad_sparse, [[0, 255, 0], [0, 0, 0]])


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize("chunk_rows", [1, 3, 7])
def test_iter_requests_carries_requests_over_chunk_boundaries_when_chunks_are_small(
    tiny_spec: Spec,
    tiny_spec_dict: dict[str, Any],
    generated: RequestSet,
    tmp_path: Path,
    fmt: str,
    chunk_rows: int,
) -> None:
    path = tmp_path / f"log.{fmt}"
    write_requests(generated, tiny_spec, path, fmt)
    chunks = list(iter_requests(files_spec(tiny_spec_dict, fmt, path, chunk_rows=chunk_rows), path))
    assert len(chunks) > 5
    assert all(c.num_requests >= 1 for c in chunks)
    assert_same(concat_requests(chunks), generated)


def test_iter_requests_reads_a_folder_file_by_file_in_name_order(
    tiny_spec: Spec, tiny_spec_dict: dict[str, Any], generated: RequestSet, tmp_path: Path
) -> None:
    folder = tmp_path / "train"
    write_requests(generated.subset(np.arange(1, 30)), tiny_spec, folder / "part-1.parquet", "parquet")
    write_requests(generated.subset(np.arange(1)), tiny_spec, folder / "part-0.parquet", "parquet")
    (folder / "_SUCCESS").write_text("")
    (folder / ".part-0.parquet.crc").write_text("junk")
    spec = files_spec(tiny_spec_dict, "parquet", folder, chunk_rows=4)
    got = concat_requests(iter_requests(spec, folder))
    # Both files start their request ids at 0: a request must not run on from one file into the next.
    assert got.num_requests == 30
    assert_same(got, generated)


def test_dense_statistics_equal_numpy_over_the_whole_set_when_read_in_chunks(
    tiny_spec: Spec, tiny_spec_dict: dict[str, Any], generated: RequestSet, tmp_path: Path
) -> None:
    path = tmp_path / "log.parquet"
    write_requests(generated, tiny_spec, path, "parquet")
    spec = files_spec(tiny_spec_dict, "parquet", path, chunk_rows=5)
    user_mean, user_std, ad_mean, ad_std = dense_statistics(spec, path)
    user, ad = generated.user_dense.astype(np.float64), generated.ad_dense.astype(np.float64)
    np.testing.assert_allclose(user_mean, user.mean(axis=0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(user_std, user.std(axis=0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ad_mean, ad.mean(axis=0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ad_std, ad.std(axis=0), rtol=1e-10, atol=1e-10)
    summary = summarize(spec, path)
    assert (summary.requests, summary.candidates) == (30, generated.num_candidates)
    assert summary.clicks == float(generated.labels.sum())


def test_read_requests_stops_reading_before_a_corrupt_tail_when_enough_requests_are_read(
    tiny_spec: Spec, tiny_spec_dict: dict[str, Any], generated: RequestSet, tmp_path: Path
) -> None:
    path = tmp_path / "log.csv"
    write_requests(generated, tiny_spec, path, "csv")
    header, first = path.read_text().splitlines()[:2]
    column = header.split(",").index('"user_dense_0"')
    bad = first.split(",")
    bad[0], bad[column] = "999", "oops"
    with path.open("a") as out:
        out.write(",".join(bad) + "\n")
    spec = files_spec(tiny_spec_dict, "csv", path, chunk_rows=4)
    got = read_requests(spec, path, 3)
    assert_same(got, generated.subset(np.arange(3)))
    with pytest.raises(DataError) as excinfo:
        list(iter_requests(spec, path))
    one_line_error(excinfo, str(path), "'user_dense_0'", f"row {generated.num_candidates + 1}", "'oops'")


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_reader_raises_data_error_listing_the_columns_when_a_column_is_missing(
    tiny_spec: Spec, tiny_spec_dict: dict[str, Any], generated: RequestSet, tmp_path: Path, fmt: str
) -> None:
    path = tmp_path / f"log.{fmt}"
    write_requests(generated, tiny_spec, path, fmt)
    columns = dataclasses.replace(default_columns(tiny_spec, fmt), history="recent_ads")
    with pytest.raises(DataError) as excinfo:
        read_requests(files_spec(tiny_spec_dict, fmt, path, columns=columns), path, 5)
    one_line_error(excinfo, str(path), "'recent_ads'", "request_id", "ad_category")


def test_reader_raises_data_error_naming_the_request_when_a_user_column_disagrees_within_it(
    tiny_spec: Spec, tiny_spec_dict: dict[str, Any], generated: RequestSet, tmp_path: Path
) -> None:
    path = tmp_path / "log.parquet"
    write_requests(generated, tiny_spec, path, "parquet")
    table = pq.read_table(path)
    geo = table.column("user_geo").to_numpy().copy()
    row = int(generated.offsets[4]) + 1
    geo[row] += 1
    pq.write_table(
        table.set_column(table.schema.get_field_index("user_geo"), "user_geo", pa.array(geo)), path
    )
    with pytest.raises(DataError) as excinfo:
        read_requests(files_spec(tiny_spec_dict, "parquet", path, chunk_rows=3), path, 30)
    one_line_error(excinfo, str(path), "request 4", "'user_geo'", f"row {row + 1}")


def test_reader_raises_data_error_naming_the_history_when_it_disagrees_within_a_request(
    tiny_spec: Spec, tiny_spec_dict: dict[str, Any], generated: RequestSet, tmp_path: Path
) -> None:
    path = tmp_path / "log.csv"
    write_requests(generated, tiny_spec, path, "csv")
    lines = path.read_text().splitlines()
    column = lines[0].split(",").index('"history"')
    fields = lines[2].split(",")
    fields[column] = '"5 6"'
    lines[2] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as excinfo:
        read_requests(files_spec(tiny_spec_dict, "csv", path), path, 30)
    one_line_error(excinfo, str(path), "request 0", "'history'", "row 2")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("zz12", "is not a hex id"), ("ffffffffffffffff", "does not fit INT64"), ("1" * 17, "hex id")],
)
def test_criteo_reader_raises_data_error_naming_file_column_and_row_when_an_id_is_bad(
    tiny_spec_dict: dict[str, Any], tmp_path: Path, value: str, expected: str
) -> None:
    path = tmp_path / "day_0"
    path.write_text(criteo_line(sparse={1: "1f"}) + "\n" + criteo_line(sparse={2: value}) + "\n")
    with pytest.raises(DataError) as excinfo:
        read_requests(files_spec(tiny_spec_dict, "criteo", path), path, 5)
    one_line_error(excinfo, str(path), "'C2'", "row 2", expected)


def test_csv_reader_raises_data_error_naming_file_column_and_row_when_a_value_is_not_numeric(
    tiny_spec: Spec, tiny_spec_dict: dict[str, Any], generated: RequestSet, tmp_path: Path
) -> None:
    path = tmp_path / "log.csv"
    write_requests(generated, tiny_spec, path, "csv")
    lines = path.read_text().splitlines()
    column = lines[0].split(",").index('"ad_dense_1"')
    fields = lines[5].split(",")
    fields[column] = "n/a"
    lines[5] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as excinfo:
        read_requests(files_spec(tiny_spec_dict, "csv", path), path, 30)
    one_line_error(excinfo, str(path), "'ad_dense_1'", "row 5", "'n/a' is not a number")


def test_csv_reader_raises_data_error_when_an_id_is_not_an_integer(
    tiny_spec_dict: dict[str, Any], tiny_spec: Spec, tmp_path: Path
) -> None:
    columns = default_columns(tiny_spec, "csv")
    header = columns.names()
    row = {name: "1" for name in header} | {"label": "0", "history": "", "advertiser": "12x"}
    path = tmp_path / "log.csv"
    path.write_text(",".join(header) + "\n" + ",".join(row[c] for c in header) + "\n")
    with pytest.raises(DataError) as excinfo:
        read_requests(files_spec(tiny_spec_dict, "csv", path), path, 1)
    one_line_error(excinfo, str(path), "'advertiser'", "row 1", "'12x' is not an integer id")


def test_parquet_reader_raises_data_error_when_an_unsigned_id_does_not_fit_int64(
    tiny_spec: Spec, tiny_spec_dict: dict[str, Any], generated: RequestSet, tmp_path: Path
) -> None:
    path = tmp_path / "log.parquet"
    write_requests(generated, tiny_spec, path, "parquet")
    table = pq.read_table(path)
    ids = table.column("ad_id").to_numpy().astype(np.uint64)
    ids[3] = np.uint64(1 << 63)
    index = table.schema.get_field_index("ad_id")
    pq.write_table(table.set_column(index, "ad_id", pa.array(ids, pa.uint64())), path)
    with pytest.raises(DataError) as excinfo:
        read_requests(files_spec(tiny_spec_dict, "parquet", path), path, 30)
    one_line_error(excinfo, str(path), "'ad_id'", "row 4", "INT64")


def test_reader_keeps_the_newest_history_ids_and_left_pads_short_histories(
    tiny_spec: Spec, tiny_spec_dict: dict[str, Any], tmp_path: Path
) -> None:
    columns = default_columns(tiny_spec, "parquet")
    rows = 3
    data: dict[str, Any] = {name: pa.array(np.ones(rows, np.int64)) for name in columns.names()}
    data["request_id"] = pa.array(["a", "b", "c"])
    data["label"] = pa.array([0.0, 1.0, 0.0])
    data["history"] = pa.array([list(range(1, 11)), [], [5]], pa.list_(pa.int64()))
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table(data), path)
    got = read_requests(files_spec(tiny_spec_dict, "parquet", path), path, 3)
    np.testing.assert_array_equal(
        got.user_history, [[5, 6, 7, 8, 9, 10], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 5]]
    )
    csv_path = tmp_path / "log.csv"
    header = columns.names()
    values = {name: "1" for name in header} | {"request_id": "r", "label": "1", "history": "  7   8 "}
    csv_path.write_text(",".join(header) + "\n" + ",".join(values[c] for c in header) + "\n")
    got = read_requests(files_spec(tiny_spec_dict, "csv", csv_path), csv_path, 1)
    np.testing.assert_array_equal(got.user_history, [[0, 0, 0, 0, 7, 8]])


def test_write_requests_raises_data_error_when_the_features_do_not_fit_criteo(
    tiny_spec_dict: dict[str, Any], generated: RequestSet, tmp_path: Path
) -> None:
    tiny_spec_dict["features"]["user_dense"] = 12
    spec = spec_from_dict(tiny_spec_dict)
    with pytest.raises(DataError) as excinfo:
        write_requests(generated, spec, tmp_path / "day_0", "criteo")
    one_line_error(excinfo, "13 dense", "14 dense")


def test_demo_sets_read_the_logs_and_demo_train_set_refuses_when_the_spec_has_files(
    tiny_spec: Spec, tiny_spec_dict: dict[str, Any], generated: RequestSet, tmp_path: Path
) -> None:
    train_path, holdout_path, calibration_path = (tmp_path / f"{n}.parquet" for n in ("t", "h", "c"))
    write_requests(generated.subset(np.arange(10)), tiny_spec, train_path, "parquet")
    write_requests(generated.subset(np.arange(10, 20)), tiny_spec, holdout_path, "parquet")
    write_requests(generated.subset(np.arange(20, 30)), tiny_spec, calibration_path, "parquet")
    spec = files_spec(tiny_spec_dict, "parquet", train_path, holdout_path)
    assert_same(demo_holdout_set(spec, 4), generated.subset(np.arange(10, 14)))
    assert_same(demo_holdout_set(spec), generated.subset(np.arange(10, 20)))
    assert_same(demo_gate_set(spec, 3), generated.subset(np.arange(3)))
    assert_same(demo_quantization_set(spec), generated.subset(np.arange(10)))
    with_calibration = files_spec(
        tiny_spec_dict, "parquet", train_path, holdout_path, calibration=calibration_path
    )
    assert_same(demo_gate_set(with_calibration, 3), generated.subset(np.arange(20, 23)))
    with pytest.raises(DataError) as excinfo:
        demo_train_set(spec)
    one_line_error(excinfo, "logs.yaml", str(train_path), "train_chunks")


def count_train_chunks(monkeypatch: pytest.MonkeyPatch, train_path: Path) -> list[int]:
    """Record the requests of every chunk read from the training log.

    Training reads it once to count it and fit the preprocess step (``summarize``), then once per epoch
    and tier.
    """
    seen: list[int] = []
    real = logs.iter_requests

    def counting(spec: Spec, path: str | Path, chunk_rows: int | None = None):
        for chunk in real(spec, path, chunk_rows):
            if Path(path) == train_path:
                seen.append(chunk.num_requests)
            yield chunk

    monkeypatch.setattr(logs, "iter_requests", counting)
    return seen


def test_train_streams_a_criteo_log_in_chunks_when_the_spec_reads_files(
    tiny_spec: Spec, tiny_spec_dict: dict[str, Any], generated: RequestSet, tmp_path: Path, monkeypatch
) -> None:
    holdout = generate_requests(tiny_spec.features, 12, (2, 4), 0.5, seed=17, world_seed=3)
    assert holdout.labels[: tiny_spec.data.holdout_requests].any()
    train_path, holdout_path = tmp_path / "train.tsv", tmp_path / "holdout.tsv"
    write_requests(generated, tiny_spec, train_path, "criteo")
    write_requests(holdout, tiny_spec, holdout_path, "criteo")
    tiny_spec_dict["training"] = {"batch_requests": 16, "epochs": 2}
    spec = files_spec(tiny_spec_dict, "criteo", train_path, holdout_path, chunk_rows=25)
    seen = count_train_chunks(monkeypatch, train_path)
    steps: list[tuple[int, int]] = []
    report = train(
        spec, tmp_path / "ckpt", ("lite", "xl"), progress=lambda _n, s, t, _l: steps.append((s, t))
    )
    rows = generated.num_candidates
    assert report.train_requests == rows
    assert report.holdout_requests == tiny_spec.data.holdout_requests
    assert len(seen) >= (1 + 2 * 2) * 2 and max(seen) <= 25 and sum(seen) == (1 + 2 * 2) * rows
    total = 2 * -(-rows // 16)
    assert steps[-1] == (total, total) and len(steps) == 2 * total
    for name in ("lite", "xl"):
        assert (tmp_path / "ckpt" / f"{name}.pt").is_file()
        assert np.isfinite(report.tiers[name].ne) and 0.0 < report.tiers[name].ne < 5.0
        assert np.isnan(report.tiers[name].ne_informative)
    text = (tmp_path / "ckpt" / "training.json").read_text()
    assert "NaN" not in text
    saved = json.loads(text)
    assert saved["tiers"]["lite"]["ne_informative"] is None
    assert saved["tiers"]["lite"]["ne_other"] == pytest.approx(report.tiers["lite"].ne)


def test_train_streams_a_parquet_log_and_skips_user_model_tiers(
    tiny_spec: Spec, tiny_spec_dict: dict[str, Any], generated: RequestSet, tmp_path: Path, monkeypatch
) -> None:
    holdout = generate_requests(tiny_spec.features, 10, (2, 6), 0.5, seed=15, world_seed=3)
    assert holdout.labels.any()
    train_path, holdout_path = tmp_path / "train.parquet", tmp_path / "holdout.parquet"
    write_requests(generated, tiny_spec, train_path, "parquet")
    write_requests(holdout, tiny_spec, holdout_path, "parquet")
    tiny_spec_dict["training"] = {"batch_requests": 4}
    tiny_spec_dict["tiers"].append(
        {
            "name": "mine",
            "model": {"factory": "nowhere:make", "inputs": [{"name": "x", "tensors": ["ad_dense"]}]},
        }
    )
    spec = files_spec(tiny_spec_dict, "parquet", train_path, holdout_path, chunk_rows=16)
    seen = count_train_chunks(monkeypatch, train_path)
    report = train(spec, tmp_path / "ckpt", ("lite", "mine"))
    assert len(seen) >= 2 * 3 and sum(seen) == 2 * generated.num_requests
    assert report.train_requests == generated.num_requests
    assert report.holdout_requests == holdout.num_requests
    assert list(report.tiers) == ["lite"] and report.skipped == {"mine": "user model, not trained"}
    assert np.isfinite(report.tiers["lite"].ne)
    assert (tmp_path / "ckpt" / "lite.pt").is_file() and (tmp_path / "ckpt" / "preprocess.pt").is_file()
    assert not (tmp_path / "ckpt" / "mine.pt").exists()
    saved = json.loads((tmp_path / "ckpt" / "training.json").read_text())
    assert saved["skipped"] == {"mine": "user model, not trained"}


def value_columns(spec: Spec, fmt: str) -> LogColumns:
    return default_columns(spec, fmt, values=True)


def rewrite_value(path: Path, row: int, value: Any) -> None:
    """Set the ``value`` column of a Parquet log's 0-based ``row`` to ``value``."""
    table = pq.read_table(path)
    values = table.column("value").to_pylist()
    values[row] = value
    index = table.schema.get_field_index("value")
    pq.write_table(table.set_column(index, "value", pa.array(values, pa.float64())), path)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_written_log_reads_back_the_request_values_when_the_columns_name_a_value_column(
    tiny_spec: Spec, tiny_spec_dict: dict[str, Any], generated: RequestSet, tmp_path: Path, fmt: str
) -> None:
    path = tmp_path / f"log.{fmt}"
    write_requests(generated, tiny_spec, path, fmt)
    spec = files_spec(tiny_spec_dict, fmt, path, chunk_rows=7, columns=value_columns(tiny_spec, fmt))

    got = read_requests(spec, path, 1000)

    assert_same(got, generated)
    assert got.values is not None and got.values.dtype == np.float32
    np.testing.assert_array_equal(got.values, generated.values)
    plain = read_requests(files_spec(tiny_spec_dict, fmt, path), path, 1000)
    assert plain.values is None  # a spec that names no value column ignores it


def test_write_requests_writes_a_value_column_only_when_the_requests_carry_values(
    tiny_spec: Spec, tiny_spec_dict: dict[str, Any], generated: RequestSet, tmp_path: Path
) -> None:
    with_values, without = tmp_path / "with.parquet", tmp_path / "without.parquet"
    write_requests(generated, tiny_spec, with_values, "parquet")
    write_requests(dataclasses.replace(generated, values=None), tiny_spec, without, "parquet")

    assert "value" in pq.read_schema(with_values).names
    assert "value" not in pq.read_schema(without).names
    assert default_columns(tiny_spec, "parquet").value == ""
    assert default_columns(tiny_spec, "criteo", values=True).value == ""
    # A spec whose columns name a value column gets it written, as ones for requests without values.
    spec = files_spec(tiny_spec_dict, "parquet", without, columns=value_columns(tiny_spec, "parquet"))
    write_requests(dataclasses.replace(generated, values=None), spec, without, "parquet")
    got = read_requests(spec, without, 1000)
    np.testing.assert_array_equal(got.values, np.ones(generated.num_requests, np.float32))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.0, "value 0 is not positive"),
        (-2.5, "value -2.5 is not positive"),
        (float("nan"), "not a finite number"),
        (float("inf"), "not a finite number"),
        (None, "value is empty"),
    ],
)
def test_parquet_reader_raises_data_error_naming_file_column_and_row_when_a_value_is_bad(
    tiny_spec: Spec,
    tiny_spec_dict: dict[str, Any],
    generated: RequestSet,
    tmp_path: Path,
    value: float | None,
    expected: str,
) -> None:
    path = tmp_path / "log.parquet"
    write_requests(generated, tiny_spec, path, "parquet")
    row = int(generated.offsets[6])
    rewrite_value(path, row, value)
    spec = files_spec(
        tiny_spec_dict, "parquet", path, chunk_rows=5, columns=value_columns(tiny_spec, "parquet")
    )
    with pytest.raises(DataError) as excinfo:
        read_requests(spec, path, 30)
    one_line_error(excinfo, str(path), "column 'value'", f"row {row + 1}", expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0", "is not positive"), ("-1", "is not positive"), ("nan", "finite"), ("x", "'x'")],
)
def test_csv_reader_raises_data_error_naming_file_column_and_row_when_a_value_is_bad(
    tiny_spec: Spec,
    tiny_spec_dict: dict[str, Any],
    generated: RequestSet,
    tmp_path: Path,
    text: str,
    expected: str,
) -> None:
    path = tmp_path / "log.csv"
    write_requests(generated, tiny_spec, path, "csv")
    lines = path.read_text().splitlines()
    column = lines[0].split(",").index('"value"')
    fields = lines[4].split(",")
    fields[column] = text
    lines[4] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    spec = files_spec(tiny_spec_dict, "csv", path, columns=value_columns(tiny_spec, "csv"))
    with pytest.raises(DataError) as excinfo:
        read_requests(spec, path, 30)
    one_line_error(excinfo, str(path), "'value'", "row 4", expected)


def test_reader_raises_data_error_naming_the_request_when_the_value_disagrees_within_it(
    tiny_spec: Spec, tiny_spec_dict: dict[str, Any], generated: RequestSet, tmp_path: Path
) -> None:
    path = tmp_path / "log.parquet"
    write_requests(generated, tiny_spec, path, "parquet")
    assert generated.values is not None and generated.candidates_per_request[4] > 1
    row = int(generated.offsets[4]) + 1
    rewrite_value(path, row, float(generated.values[4]) * 2)
    spec = files_spec(
        tiny_spec_dict, "parquet", path, chunk_rows=3, columns=value_columns(tiny_spec, "parquet")
    )
    with pytest.raises(DataError) as excinfo:
        read_requests(spec, path, 30)
    one_line_error(excinfo, str(path), "request 4", "'value'", f"row {row + 1}")


def test_criteo_logs_have_no_value_column_when_written_or_read(
    tiny_spec: Spec, tiny_spec_dict: dict[str, Any], generated: RequestSet, tmp_path: Path
) -> None:
    path = tmp_path / "day_0"
    write_requests(generated, tiny_spec, path, "criteo")  # values are not written
    assert all(len(line.split("\t")) == CRITEO_WIDTH for line in path.read_text().splitlines())
    assert read_requests(files_spec(tiny_spec_dict, "criteo", path), path, 5).values is None
    columns = dataclasses.replace(default_columns(tiny_spec, "criteo"), value="I13")
    spec = files_spec(tiny_spec_dict, "criteo", path, columns=columns)
    with pytest.raises(DataError) as excinfo:
        read_requests(spec, path, 5)
    one_line_error(excinfo, str(path), "no value column", "data.files.columns.value")
    with pytest.raises(DataError) as excinfo:
        write_requests(generated, spec, tmp_path / "day_1", "criteo")
    one_line_error(excinfo, "day_1", "value")


def test_concat_requests_keeps_values_and_counts_sets_without_values_as_worth_one(
    generated: RequestSet,
) -> None:
    first, second = generated.subset(np.arange(10)), generated.subset(np.arange(10, 30))
    plain_second = dataclasses.replace(second, values=None)
    assert generated.values is not None

    both = concat_requests([first, second])
    mixed = concat_requests([first, plain_second])
    neither = concat_requests([dataclasses.replace(first, values=None), plain_second])

    for name in (*ARRAYS, "informative", "values"):
        np.testing.assert_array_equal(getattr(both, name), getattr(generated, name), err_msg=name)
    np.testing.assert_array_equal(
        mixed.values, np.concatenate([generated.values[:10], np.ones(20, np.float32)])
    )
    assert mixed.values is not None and mixed.values.dtype == np.float32
    assert neither.values is None
