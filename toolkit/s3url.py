"""S3 repository URLs and S3-compatible endpoints: one grammar for deploy, serve and the Kubernetes manifests.

A repository URL is ``s3://BUCKET[/PREFIX]``, or Triton's own form with the endpoint inside,
``s3://[http://|https://]HOST:PORT/BUCKET[/PREFIX]``. An endpoint given on its own is
``[http://|https://]HOST[:PORT]`` (plain HTTP and port 80 when left out, port 443 for HTTPS). An
endpoint may be given one way or the other, not both. Only what Triton can read is accepted: bucket
names as S3 defines them, and prefix parts of letters, digits, ``.``, ``_`` and ``-``.

Parsers raise :class:`ValueError` with a message that names the value; callers prefix the flag or
spec key it came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

S3_SCHEME = "s3://"

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
SEGMENT = re.compile(r"[0-9A-Za-z._-]+")
"""Characters Triton accepts in each part of an S3 path (beyond them it misreads the URL)."""
_HOST = re.compile(r"[0-9A-Za-z.-]+")
_INLINE_ENDPOINT = re.compile(r"^(?:(https?)://)?([^/:]+):(\d+)/")
URL_FORMS = "s3://BUCKET/PREFIX or s3://[https://]HOST:PORT/BUCKET/PREFIX"
ENDPOINT_FORMS = "[http://|https://]HOST[:PORT]"


class EndpointError(ValueError):
    """An endpoint given on its own is malformed (callers name the flag or key it came from)."""


@dataclass(frozen=True)
class Endpoint:
    """An S3-compatible endpoint.

    Attributes:
        scheme: ``http`` or ``https``.
        host: Host name or IPv4 address.
        port: Port (80 or 443 when the endpoint left it out).
    """

    scheme: str
    host: str
    port: int

    @property
    def url(self) -> str:
        """``http://host:port`` or ``https://host:port``, as boto3 takes it."""
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def host_port(self) -> str:
        """``host:port``."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class S3Location:
    """A repository's place in an object store.

    Attributes:
        bucket: The bucket.
        prefix: Key prefix of the repository, without leading or trailing ``/``; empty for the
            bucket's top.
        endpoint: The S3-compatible endpoint; None for AWS S3 (region from the environment).
    """

    bucket: str
    prefix: str = ""
    endpoint: Endpoint | None = None

    @property
    def url(self) -> str:
        """``s3://bucket/prefix``, without the endpoint."""
        return f"{S3_SCHEME}{self.bucket}/{self.prefix}" if self.prefix else f"{S3_SCHEME}{self.bucket}"

    @property
    def triton_url(self) -> str:
        """The ``--model-repository`` value for Triton: the endpoint inside the URL when there is one.

        Triton speaks plain HTTP to ``s3://HOST:PORT/...`` and HTTPS to ``s3://https://HOST:PORT/...``.
        """
        if self.endpoint is None:
            return self.url
        scheme = "https://" if self.endpoint.scheme == "https" else ""
        tail = f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket
        return f"{S3_SCHEME}{scheme}{self.endpoint.host_port}/{tail}"

    def key(self, relative: str) -> str:
        """The object key of ``relative`` (a path inside the repository)."""
        return f"{self.prefix}/{relative}" if self.prefix else relative

    @property
    def list_prefix(self) -> str:
        """The prefix every object of the repository starts with."""
        return f"{self.prefix}/" if self.prefix else ""


def is_s3_url(value: object) -> bool:
    """Whether ``value`` is a string spelled ``s3://...`` (a ``Path`` never is: it folds ``//``)."""
    return isinstance(value, str) and value.startswith(S3_SCHEME)


def parse_endpoint(text: str) -> Endpoint:
    """Parse an S3-compatible endpoint, ``[http://|https://]HOST[:PORT]``.

    Raises:
        EndpointError: Another scheme, a path, query or credentials, a bad port, or a host Triton
            cannot spell in a repository URL (IPv6 literals among them).
    """
    if not isinstance(text, str) or not text:
        raise EndpointError(f"{text!r} is not an endpoint: expected {ENDPOINT_FORMS}")
    given = text if "://" in text else f"http://{text}"
    try:
        parts = urlsplit(given)
        port = parts.port
    except ValueError as exc:
        raise EndpointError(f"{text!r} is not an endpoint ({exc}): expected {ENDPOINT_FORMS}") from None
    if parts.scheme not in ("http", "https"):
        raise EndpointError(f"{text!r}: an S3 endpoint is http or https: expected {ENDPOINT_FORMS}")
    host = parts.hostname or ""
    if not host or not _HOST.fullmatch(host) or parts.username or parts.password:
        raise EndpointError(
            f"{text!r}: expected {ENDPOINT_FORMS} with a host name or IPv4 address (Triton reads no "
            "IPv6 literals or credentials in a repository URL)"
        )
    if port == 0:
        raise EndpointError(f"{text!r}: port 0 is not a port: expected {ENDPOINT_FORMS}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise EndpointError(f"{text!r}: an S3 endpoint has no path or query: expected {ENDPOINT_FORMS}")
    return Endpoint(parts.scheme, host, port or (443 if parts.scheme == "https" else 80))


def parse_s3_url(url: str, endpoint: str | None = None) -> S3Location:
    """Parse a repository URL, with the endpoint inside it or given as ``endpoint``.

    A trailing ``/`` is dropped.

    Raises:
        EndpointError: ``endpoint`` is malformed.
        ValueError: Not an ``s3://`` URL, an invalid bucket name or prefix part, a bad endpoint
            inside the URL, or an endpoint both inside the URL and given separately.
    """
    if not is_s3_url(url):
        raise ValueError(f"{url!r} is not an S3 URL: expected {URL_FORMS}")
    rest = url[len(S3_SCHEME) :].rstrip("/")
    found: Endpoint | None = None
    if ":" in rest.split("/", 1)[0]:  # bucket names have no ':', so this is an endpoint
        inline = _INLINE_ENDPOINT.match(rest + "/")
        if inline is None:
            raise ValueError(
                f"{url!r}: the endpoint inside an S3 URL is [https://]HOST:PORT: expected {URL_FORMS}"
            )
        scheme, host, port = inline.groups()
        try:
            found = parse_endpoint(f"{scheme or 'http'}://{host}:{port}")
        except EndpointError as exc:
            raise ValueError(f"{url!r}: {exc}") from None
        rest = rest[inline.end() :].rstrip("/")
    if endpoint is not None:
        if found is not None:
            raise ValueError(f"{url!r} already names an endpoint; give the endpoint {endpoint!r} only once")
        found = parse_endpoint(endpoint)
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ValueError(
            f"{url!r}: {bucket!r} is not a valid bucket name (3 to 63 lowercase letters, digits, dots "
            f"and hyphens, starting and ending with a letter or digit); expected {URL_FORMS}"
        )
    parts = prefix.split("/") if prefix else []
    for part in parts:
        if not SEGMENT.fullmatch(part) or part in (".", ".."):
            raise ValueError(
                f"{url!r}: prefix part {part!r} is not allowed; use letters, digits, '.', '_' and '-' "
                "between single slashes (Triton reads nothing else in an S3 path)"
            )
    return S3Location(bucket, "/".join(parts), found)
