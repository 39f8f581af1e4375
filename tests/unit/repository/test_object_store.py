"""Repositories on object storage: s3:// URLs, publishing to an in-process moto S3, server options."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from google.protobuf import text_format
from moto import mock_aws
from tritonclient.grpc import model_config_pb2 as mc

from toolkit.errors import RepositoryError, ServerError
from toolkit.repository.object_store import (
    PUBLISHING,
    S3Location,
    check_repository,
    parse_endpoint,
    parse_s3_url,
    publish,
    triton_repository_url,
)
from toolkit.repository.writer import MARKER
from toolkit.serve import ServerOptions, TritonInstall, build_argv, build_env

BUCKET = "models"
URL = f"s3://{BUCKET}/ranking/prod"
ORDER = ["tier_a", "tier_b", "router", "ens"]


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials, and no AWS files or instance metadata from this machine."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


class Recorder:
    """Records, in order, every object the client writes or deletes."""

    def __init__(self, client: Any) -> None:
        self.calls: list[tuple[str, str]] = []
        client.meta.events.register("before-parameter-build.s3.PutObject", self._put)
        client.meta.events.register("before-parameter-build.s3.CreateMultipartUpload", self._put)
        client.meta.events.register("before-parameter-build.s3.DeleteObjects", self._delete)
        client.meta.events.register("before-parameter-build.s3.DeleteObject", self._delete_one)

    def _put(self, params: dict, **_: Any) -> None:
        self.calls.append(("put", params["Key"]))

    def _delete(self, params: dict, **_: Any) -> None:
        self.calls.extend(("delete", obj["Key"]) for obj in params["Delete"]["Objects"])

    def _delete_one(self, params: dict, **_: Any) -> None:
        self.calls.append(("delete", params["Key"]))

    def index(self, op: str, key: str) -> int:
        return self.calls.index((op, f"ranking/prod/{key}"))

    def puts(self) -> list[str]:
        return [key.removeprefix("ranking/prod/") for op, key in self.calls if op == "put"]

    def deletes(self) -> list[str]:
        return [key.removeprefix("ranking/prod/") for op, key in self.calls if op == "delete"]


@pytest.fixture
def s3(aws_env: None) -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def keys(client: Any, prefix: str = "ranking/prod/") -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {obj["Key"][len(prefix) :] for page in pages for obj in page.get("Contents", [])}


def config_text(name: str, extra: str = "") -> str:
    return f'name: "{name}"\nbackend: "python"\nmax_batch_size: 0\n{extra}'


def make_repository(root: Path) -> Path:
    """A small repository shaped like deploy's: two tiers, a router with a package, an ensemble."""
    for tier in ("tier_a", "tier_b"):
        (root / tier / "1").mkdir(parents=True)
        (root / tier / "config.pbtxt").write_text(config_text(tier))
        (root / tier / "1" / "model.onnx").write_bytes(tier.encode() * 100)
        (root / tier / "1" / "model.py").write_text("# runner\n")
    (root / "router" / "1" / "pkg").mkdir(parents=True)
    (root / "router" / "config.pbtxt").write_text(config_text("router"))
    (root / "router" / "1" / "model.py").write_text("# router\n")
    (root / "router" / "1" / "pkg" / "policy.py").write_text("RULES = 1\n")
    (root / "router" / "1" / "pkg" / "__pycache__").mkdir()
    (root / "router" / "1" / "pkg" / "__pycache__" / "policy.cpython-311.pyc").write_bytes(b"x")
    (root / "ens" / "1").mkdir(parents=True)
    (root / "ens" / "config.pbtxt").write_text('name: "ens"\nplatform: "ensemble"\nmax_batch_size: 0\n')
    (root / MARKER).write_text('{"format": 1}\n')
    return root


def pinned_versions(client: Any, model: str) -> list[int]:
    body = client.get_object(Bucket=BUCKET, Key=f"ranking/prod/{model}/config.pbtxt")["Body"].read()
    config = mc.ModelConfig()
    text_format.Parse(body.decode(), config)
    return list(config.version_policy.specific.versions)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- URLs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://models/ranking/prod", "models", "ranking/prod"),
        ("s3://models/ranking/prod/", "models", "ranking/prod"),
        ("s3://my.bucket-1", "my.bucket-1", ""),
        ("s3://models/v_1.2-rc", "models", "v_1.2-rc"),
    ],
)
def test_parse_s3_url_returns_bucket_and_prefix_when_well_formed(url: str, bucket: str, prefix: str) -> None:
    assert parse_s3_url(url) == S3Location(bucket, prefix)


@pytest.mark.parametrize(
    "url",
    [
        "models/ranking",
        "s3:/models/ranking",
        "s3://",
        "s3://Models/ranking",
        "s3://ab/ranking",
        "s3://my_bucket/ranking",
        "s3://models//ranking",
        "s3://models/ranking prod",
        "s3://models/../ranking",
        "s3://models/ranking?x=1",
    ],
)
def test_parse_s3_url_raises_naming_the_flag_when_malformed(url: str) -> None:
    with pytest.raises(RepositoryError, match="^--out ") as info:
        parse_s3_url(url, "--out")
    assert "\n" not in str(info.value)


def test_location_url_and_keys_round_trip_when_prefix_empty_or_not() -> None:
    assert S3Location("models", "a/b").url == "s3://models/a/b"
    assert S3Location("models", "a/b").key("m/config.pbtxt") == "a/b/m/config.pbtxt"
    assert S3Location("models").url == "s3://models"
    assert S3Location("models").key("m/config.pbtxt") == "m/config.pbtxt"


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
        ("http://minio.local:9000/", "http://minio.local:9000"),
        ("https://storage.example", "https://storage.example:443"),
        ("http://storage.example", "http://storage.example:80"),
        ("127.0.0.1:9000", "http://127.0.0.1:9000"),
    ],
)
def test_parse_endpoint_fills_the_port_when_absent(endpoint: str, url: str) -> None:
    assert parse_endpoint(endpoint).url == url


@pytest.mark.parametrize(
    "endpoint",
    [
        "ftp://host:21",
        "http://host:0",
        "http://host:9000/path",
        "http://[::1]:9000",
        "http://u:p@host:1",
        "http://host:x",
    ],
)
def test_parse_endpoint_raises_naming_the_flag_when_malformed(endpoint: str) -> None:
    with pytest.raises(RepositoryError, match="^--s3-endpoint "):
        parse_endpoint(endpoint)


def test_triton_repository_url_puts_the_endpoint_inside_when_one_is_given() -> None:
    assert triton_repository_url(URL) == URL
    assert triton_repository_url(URL, "http://127.0.0.1:9000") == "s3://127.0.0.1:9000/models/ranking/prod"
    assert triton_repository_url("s3://models", "https://s3.example") == "s3://https://s3.example:443/models"


# --- publish ----------------------------------------------------------------------------------------


def test_publish_uploads_every_file_with_config_pinning_version_one_when_prefix_empty(
    s3: Any, tmp_path: Path
) -> None:
    repo = make_repository(tmp_path / "repo")
    lines: list[str] = []
    result = publish(repo, URL, client=s3, order=ORDER, progress=lines.append)
    assert keys(s3) == {
        MARKER,
        "tier_a/config.pbtxt",
        "tier_a/1/model.onnx",
        "tier_a/1/model.py",
        "tier_b/config.pbtxt",
        "tier_b/1/model.onnx",
        "tier_b/1/model.py",
        "router/config.pbtxt",
        "router/1/model.py",
        "router/1/pkg/policy.py",
        "ens/config.pbtxt",
        "ens/1/",
    }
    body = s3.get_object(Bucket=BUCKET, Key="ranking/prod/tier_a/1/model.onnx")["Body"].read()
    assert body == (repo / "tier_a" / "1" / "model.onnx").read_bytes()
    assert all(pinned_versions(s3, m) == [1] for m in ORDER)
    assert [m.name for m in result.models] == ORDER
    assert not result.replaced and result.removed == ()
    assert result.url == URL and result.triton_url == URL
    assert len(lines) == len(ORDER) + 1 and "config.pbtxt last" in lines[0]


def test_publish_uploads_each_config_after_its_files_and_the_marker_last_when_publishing(
    s3: Any, tmp_path: Path
) -> None:
    repo = make_repository(tmp_path / "repo")
    recorder = Recorder(s3)
    publish(repo, URL, client=s3, order=ORDER)
    puts = recorder.puts()
    assert puts[0] == PUBLISHING
    for model in ORDER:
        files = [k for k in puts if k.startswith(f"{model}/") and not k.endswith("config.pbtxt")]
        assert files and all(puts.index(f) < puts.index(f"{model}/config.pbtxt") for f in files)
    configs = [puts.index(f"{m}/config.pbtxt") for m in ORDER]
    assert configs == sorted(configs)
    assert puts[-1] == MARKER
    assert recorder.deletes() == [PUBLISHING]
    assert PUBLISHING not in keys(s3)


def test_publish_orders_ensembles_last_when_no_order_given(s3: Any, tmp_path: Path) -> None:
    repo = make_repository(tmp_path / "repo")
    (repo / "aaa_ens").mkdir()
    (repo / "aaa_ens" / "1").mkdir()
    (repo / "aaa_ens" / "config.pbtxt").write_text('name: "aaa_ens"\nplatform: "ensemble"\n')
    result = publish(repo, URL, client=s3)
    assert [m.name for m in result.models] == ["router", "tier_a", "tier_b", "aaa_ens", "ens"]


def test_publish_leaves_models_alone_when_nothing_changed(s3: Any, tmp_path: Path) -> None:
    repo = make_repository(tmp_path / "repo")
    publish(repo, URL, client=s3, order=ORDER)
    before = keys(s3)
    recorder = Recorder(s3)
    result = publish(repo, URL, client=s3, order=ORDER)
    assert all(m.unchanged and m.versions == (1,) and m.files == 0 for m in result.models)
    assert recorder.puts() == [PUBLISHING, MARKER]
    assert result.replaced and result.removed == ()
    assert keys(s3) == before


def test_publish_writes_a_new_version_and_removes_the_old_after_the_marker_when_a_model_changed(
    s3: Any, tmp_path: Path
) -> None:
    repo = make_repository(tmp_path / "repo")
    publish(repo, URL, client=s3, order=ORDER)
    (repo / "tier_a" / "1" / "model.onnx").write_bytes(b"retrained")
    recorder = Recorder(s3)
    result = publish(repo, URL, client=s3, order=ORDER)
    changed = {m.name: m for m in result.models}
    assert changed["tier_a"].versions == (2,) and not changed["tier_a"].unchanged
    assert all(changed[m].unchanged for m in ("tier_b", "router", "ens"))
    assert pinned_versions(s3, "tier_a") == [2]
    assert {k for k in keys(s3) if k.startswith("tier_a/")} == {
        "tier_a/config.pbtxt",
        "tier_a/2/model.onnx",
        "tier_a/2/model.py",
    }
    body = s3.get_object(Bucket=BUCKET, Key="ranking/prod/tier_a/2/model.onnx")["Body"].read()
    assert body == b"retrained"
    assert recorder.puts() == [
        PUBLISHING,
        "tier_a/2/model.onnx",
        "tier_a/2/model.py",
        "tier_a/config.pbtxt",
        MARKER,
    ]
    assert sorted(result.removed) == ["tier_a/1/model.onnx", "tier_a/1/model.py"]
    marker = recorder.index("put", MARKER)
    assert all(recorder.index("delete", k) > marker for k in result.removed)


def test_publish_numbers_the_new_version_above_every_version_present_when_republishing(
    s3: Any, tmp_path: Path
) -> None:
    repo = make_repository(tmp_path / "repo")
    publish(repo, URL, client=s3, order=ORDER)
    s3.put_object(Bucket=BUCKET, Key="ranking/prod/tier_a/7/model.onnx", Body=b"left over")
    (repo / "tier_a" / "config.pbtxt").write_text(
        config_text("tier_a", "parameters { key: 'x' value { string_value: 'y' } }\n")
    )
    result = publish(repo, URL, client=s3, order=ORDER)
    assert {m.name: m.versions for m in result.models}["tier_a"] == (8,)
    assert pinned_versions(s3, "tier_a") == [8]
    assert "tier_a/7/model.onnx" in result.removed


def test_publish_removes_a_dropped_model_config_last_after_the_marker_when_gone_locally(
    s3: Any, tmp_path: Path
) -> None:
    repo = make_repository(tmp_path / "repo")
    publish(repo, URL, client=s3, order=ORDER)
    for path in sorted((repo / "tier_b").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (repo / "tier_b").rmdir()
    recorder = Recorder(s3)
    result = publish(repo, URL, client=s3, order=ORDER)
    assert not any(k.startswith("tier_b/") for k in keys(s3))
    assert set(result.removed) == {"tier_b/config.pbtxt", "tier_b/1/model.onnx", "tier_b/1/model.py"}
    deletes = recorder.deletes()
    assert deletes.index("tier_b/config.pbtxt") > max(
        deletes.index(f"tier_b/1/model.{e}") for e in ("onnx", "py")
    )
    assert recorder.index("delete", "tier_b/1/model.onnx") > recorder.index("put", MARKER)


def test_publish_refuses_a_prefix_it_did_not_write_when_objects_are_there(s3: Any, tmp_path: Path) -> None:
    s3.put_object(Bucket=BUCKET, Key="ranking/prod/notes.txt", Body=b"someone else's")
    with pytest.raises(RepositoryError, match="not written by `toolkit deploy`") as info:
        publish(make_repository(tmp_path / "repo"), URL, client=s3)
    assert URL in str(info.value)
    assert keys(s3) == {"notes.txt"}


def test_publish_completes_an_interrupted_publish_when_only_its_marker_is_there(
    s3: Any, tmp_path: Path
) -> None:
    s3.put_object(Bucket=BUCKET, Key=f"ranking/prod/{PUBLISHING}", Body=b"{}")
    s3.put_object(Bucket=BUCKET, Key="ranking/prod/tier_a/1/model.onnx", Body=b"half")
    result = publish(make_repository(tmp_path / "repo"), URL, client=s3, order=ORDER)
    assert {m.name: m.versions for m in result.models}["tier_a"] == (2,)
    assert "tier_a/1/model.onnx" in result.removed
    assert PUBLISHING not in keys(s3) and MARKER in keys(s3)


def test_publish_keeps_other_prefixes_when_removing_stale_objects(s3: Any, tmp_path: Path) -> None:
    s3.put_object(Bucket=BUCKET, Key="ranking/prod-old/x", Body=b"other")
    s3.put_object(Bucket=BUCKET, Key="ranking/other/x", Body=b"other")
    publish(make_repository(tmp_path / "repo"), URL, client=s3)
    assert keys(s3, "ranking/") >= {"prod-old/x", "other/x"}


def test_publish_raises_one_line_naming_url_when_bucket_missing(s3: Any, tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="bucket 'absent' does not exist") as info:
        publish(make_repository(tmp_path / "repo"), "s3://absent/p", client=s3)
    assert str(info.value).startswith("s3://absent/p: ") and "\n" not in str(info.value)


def test_publish_raises_one_line_naming_endpoint_when_no_credentials(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    endpoint = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(RepositoryError, match="no S3 credentials: set AWS_ACCESS_KEY_ID") as info:
        publish(make_repository(tmp_path / "repo"), URL, endpoint)
    assert str(info.value).startswith(f"{URL} (endpoint {endpoint}): ") and "\n" not in str(info.value)


def test_publish_raises_one_line_naming_endpoint_when_unreachable(aws_env: None, tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(RepositoryError, match=f"cannot reach {endpoint}") as info:
        publish(make_repository(tmp_path / "repo"), URL, endpoint)
    assert str(info.value).startswith(f"{URL} (endpoint {endpoint}): ") and "\n" not in str(info.value)


def test_publish_raises_before_uploading_when_a_model_has_no_config(s3: Any, tmp_path: Path) -> None:
    repo = make_repository(tmp_path / "repo")
    (repo / "tier_a" / "config.pbtxt").unlink()
    with pytest.raises(RepositoryError, match="tier_a: model folder without config.pbtxt"):
        publish(repo, URL, client=s3)
    assert keys(s3) == set()


def test_publish_raises_when_a_file_name_is_one_triton_cannot_read_from_s3(s3: Any, tmp_path: Path) -> None:
    repo = make_repository(tmp_path / "repo")
    (repo / "router" / "1" / "my notes.txt").write_text("x")
    with pytest.raises(RepositoryError, match="'my notes.txt' cannot be published"):
        publish(repo, URL, client=s3)


def test_publish_raises_when_local_folder_missing(s3: Any, tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="is not a model repository folder"):
        publish(tmp_path / "absent", URL, client=s3)


def test_check_repository_raises_when_prefix_empty_and_notes_an_interrupted_publish(s3: Any) -> None:
    with pytest.raises(RepositoryError, match="no objects under this prefix"):
        check_repository(URL, client=s3)
    s3.put_object(Bucket=BUCKET, Key=f"ranking/prod/{PUBLISHING}", Body=b"{}")
    assert "interrupted" in check_repository(URL, client=s3)
    s3.put_object(Bucket=BUCKET, Key=f"ranking/prod/{MARKER}", Body=b"{}")
    s3.delete_object(Bucket=BUCKET, Key=f"ranking/prod/{PUBLISHING}")
    assert check_repository(URL, client=s3) == ""


# --- serving from s3 ----------------------------------------------------------------------------------


def test_server_options_pass_the_triton_url_and_strict_configs_when_repository_is_s3() -> None:
    options = ServerOptions(
        repository=URL, s3_endpoint="http://127.0.0.1:9000", grpc_port=9001, http_port=9000, metrics_port=9002
    )
    argv = build_argv(options, TritonInstall(binary=Path("/bin/tritonserver"), kind="explicit"), None)
    assert "--model-repository=s3://127.0.0.1:9000/models/ranking/prod" in argv
    assert "--disable-auto-complete-config" in argv
    assert options.repository == URL and options.is_s3


def test_server_options_keep_local_folders_as_before_when_not_s3(tmp_path: Path) -> None:
    options = ServerOptions(repository=str(tmp_path))
    argv = build_argv(options, TritonInstall(binary=Path("/bin/tritonserver"), kind="explicit"), None)
    assert options.repository == tmp_path and not options.is_s3
    assert f"--model-repository={tmp_path.resolve()}" in argv
    assert "--disable-auto-complete-config" not in argv


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"repository": "s3://Bad/x"}, "--repository 's3://Bad/x'"),
        ({"repository": URL, "s3_endpoint": "ftp://localhost:9000"}, "--s3-endpoint"),
    ],
)
def test_server_options_raise_server_error_when_s3_settings_malformed(kwargs: dict, match: str) -> None:
    with pytest.raises(ServerError, match=match):
        ServerOptions(**kwargs)


def test_server_options_raise_when_endpoint_given_for_a_local_folder(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="needs an s3://"):
        ServerOptions(repository=tmp_path, s3_endpoint="http://127.0.0.1:9000")


def test_build_env_sets_the_default_region_from_aws_region_when_only_that_is_set() -> None:
    install = TritonInstall(binary=Path("/bin/tritonserver"), kind="explicit")
    env = build_env(install, Path("/venv/bin"), base={"AWS_REGION": "eu-west-1", "PATH": "/usr/bin"})
    assert env["AWS_DEFAULT_REGION"] == "eu-west-1"
    env = build_env(install, Path("/venv/bin"), base={"AWS_REGION": "a", "AWS_DEFAULT_REGION": "b"})
    assert env["AWS_DEFAULT_REGION"] == "b"


def test_publish_raises_when_local_folder_lacks_the_marker(s3: Any, tmp_path: Path) -> None:
    repo = make_repository(tmp_path / "repo")
    (repo / MARKER).unlink()
    with pytest.raises(RepositoryError, match=f"no {MARKER}"):
        publish(repo, URL, client=s3)
    assert keys(s3) == set()


def test_publish_raises_one_line_when_an_upload_is_denied(s3: Any, tmp_path: Path) -> None:
    def deny(params: dict, **_: Any) -> None:
        if params["Key"].endswith("model.onnx"):
            raise boto3.exceptions.S3UploadFailedError(
                "Failed to upload: An error occurred (AccessDenied)\nx"
            )

    s3.meta.events.register("before-parameter-build.s3.PutObject", deny)
    with pytest.raises(RepositoryError, match="publishing failed: Failed to upload") as info:
        publish(make_repository(tmp_path / "repo"), URL, client=s3, order=ORDER)
    assert "\n" not in str(info.value)
    assert not any(k.endswith("config.pbtxt") for k in keys(s3))
