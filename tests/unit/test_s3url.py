"""One grammar for S3 repository URLs and endpoints, shared by deploy, serve and the Kubernetes manifests."""

from __future__ import annotations

import pytest

from toolkit.k8s import ManifestError
from toolkit.k8s.pool import s3_location
from toolkit.repository.object_store import parse_s3_url as repository_url
from toolkit.s3url import Endpoint, S3Location, parse_endpoint, parse_s3_url

FORMS = [
    # (url, separate endpoint, bucket, prefix, endpoint, what Triton is given)
    ("s3://models/ads", None, "models", "ads", None, "s3://models/ads"),
    ("s3://models/ads/", None, "models", "ads", None, "s3://models/ads"),
    (
        "s3://minio:9000/models/ads",
        None,
        "models",
        "ads",
        Endpoint("http", "minio", 9000),
        "s3://minio:9000/models/ads",
    ),
    (
        "s3://http://minio:9000/models",
        None,
        "models",
        "",
        Endpoint("http", "minio", 9000),
        "s3://minio:9000/models",
    ),
    (
        "s3://https://minio:9000/models/a/b",
        None,
        "models",
        "a/b",
        Endpoint("https", "minio", 9000),
        "s3://https://minio:9000/models/a/b",
    ),
    (
        "s3://models/ads",
        "minio:9000",
        "models",
        "ads",
        Endpoint("http", "minio", 9000),
        "s3://minio:9000/models/ads",
    ),
    (
        "s3://models",
        "https://s3.example",
        "models",
        "",
        Endpoint("https", "s3.example", 443),
        "s3://https://s3.example:443/models",
    ),
]


@pytest.mark.parametrize(("url", "endpoint", "bucket", "prefix", "found", "triton"), FORMS)
def test_every_form_parses_to_one_location(url, endpoint, bucket, prefix, found, triton) -> None:
    location = parse_s3_url(url, endpoint)
    assert location == S3Location(bucket, prefix, found)
    assert location.triton_url == triton
    assert parse_s3_url(triton) == location  # what Triton is given reads back the same


@pytest.mark.parametrize(("url", "endpoint", "bucket", "prefix", "found", "triton"), FORMS)
def test_deploy_and_the_manifests_accept_the_same_forms(url, endpoint, bucket, prefix, found, triton) -> None:
    assert repository_url(url, "--out", endpoint) == s3_location(url, endpoint, "pool cpu")


@pytest.mark.parametrize(
    ("url", "endpoint", "message"),
    [
        ("models/ads", None, "is not an S3 URL"),
        ("s3://Models/ads", None, "is not a valid bucket name"),
        ("s3://models//ads", None, "prefix part ''"),
        ("s3://minio:x/models", None, "the endpoint inside an S3 URL"),
        ("s3://minio:9000/models", "minio:9000", "already names an endpoint"),
        ("s3://ftp://minio:21/models", None, "the endpoint inside an S3 URL"),
        ("s3://https://minio/models", None, "the endpoint inside an S3 URL"),
        ("s3://minio:9000", None, "is not a valid bucket name"),
    ],
)
def test_both_callers_refuse_the_same_urls_in_one_line(url, endpoint, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse_s3_url(url, endpoint)
    with pytest.raises(Exception, match=f"^--out .*{message}") as deploy_error:
        repository_url(url, "--out", endpoint)
    with pytest.raises(ManifestError, match=f"^pool cpu: repository .*{message}"):
        s3_location(url, endpoint, "pool cpu")
    assert "\n" not in str(deploy_error.value)


def test_a_bad_separate_endpoint_is_named_as_such() -> None:
    with pytest.raises(Exception, match="^--s3-endpoint 'minio:x' is not an endpoint"):
        repository_url("s3://models", "--out", "minio:x")
    with pytest.raises(ManifestError, match="^pool cpu: s3_endpoint 'minio:x' is not an endpoint"):
        s3_location("s3://models", "minio:x", "pool cpu")


def test_an_endpoint_defaults_to_http_and_the_schemes_port() -> None:
    assert parse_endpoint("minio") == Endpoint("http", "minio", 80)
    assert parse_endpoint("https://minio") == Endpoint("https", "minio", 443)
    assert parse_endpoint("http://10.0.0.1:9000/").url == "http://10.0.0.1:9000"
