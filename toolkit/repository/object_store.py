"""Model repositories on S3 and S3-compatible object stores: ``s3://`` URLs and publishing.

``toolkit deploy --out s3://BUCKET/PREFIX`` writes the repository to a local folder as usual, then
:func:`publish` uploads it with boto3; ``toolkit serve --repository s3://BUCKET/PREFIX`` hands Triton
the URL (:func:`triton_repository_url`), which reads S3 itself and copies each model it loads to a
local temporary folder (so the python backend's ``model.py`` and the ONNX files work as on disk).

An object store has no rename, so a repository cannot be swapped whole as deploy does on disk. What
:func:`publish` guarantees is that a Triton server polling the repository (``--model-control-mode
poll``) or loading from it (``explicit``) never loads a model version whose files are half there:

* every publish of a changed model uploads its files into a **new version folder** (one above the
  highest present) and uploads ``config.pbtxt`` **last**, rewritten to pin exactly that version
  (``version_policy { specific { versions: N } }``). Until the new config lands, Triton keeps
  serving the pinned old version (new version folders are ignored: they are not in the policy);
  once it lands, Triton loads the new version, complete, and then unloads the old one. Each object
  upload is atomic on S3, so the config switch is the commit point of the model.
* a model new to the repository has no config until its files are all up. ``toolkit serve`` starts
  Triton on an ``s3://`` repository with ``--disable-auto-complete-config``, so a model folder
  without ``config.pbtxt`` is skipped (with auto-complete on, Triton would try to load it with a
  guessed config).
* models are published callees first (tiers, preprocess, gate, then the router, then the ensemble),
  so a caller never goes live before the models it calls.
* the marker file (:data:`~toolkit.layout.MARKER`) is uploaded after every model; only
  then are the objects of versions and models no longer in the repository deleted (a removed
  model's version files first, its ``config.pbtxt`` last).
* an unchanged model (same files and config as the pinned version, by a digest stored with its
  ``config.pbtxt``) is left as it is, so it is not reloaded.

The repository as a whole is not switched atomically: between two models' config uploads, a
server sees the new version of some models and the old of others (as the router steps down to a
cheaper tier on a failed call, a request meanwhile still gets an answer). A server started in
``none`` mode while a publish is under way may see a model without its config and then refuses to
start; start it again. Two publishes to one prefix at once are not supported.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit import s3url
from toolkit.errors import RepositoryError, one_line
from toolkit.layout import MARKER
from toolkit.s3url import S3_SCHEME, Endpoint, S3Location, is_s3_url

CONFIG = "config.pbtxt"
PUBLISHING = ".toolkit-publishing.json"
"""Object at the top of the prefix while a publish runs; left behind when one was interrupted."""

DIGEST_METADATA = "toolkit-digest"
VERSIONS_METADATA = "toolkit-versions"

_DELETE_BATCH = 1000
_SKIPPED = ("__pycache__",)

__all__ = [
    "S3_SCHEME",
    "Endpoint",
    "S3Location",
    "check_repository",
    "is_s3_url",
    "make_client",
    "parse_endpoint",
    "parse_s3_url",
    "publish",
    "triton_repository_url",
]


def parse_s3_url(url: str, flag: str = "--out", endpoint: str | None = None) -> S3Location:
    """Parse a repository URL (:mod:`toolkit.s3url`'s grammar), with ``endpoint`` if given.

    Raises:
        RepositoryError: The URL or the endpoint is malformed (one line naming ``flag``).
    """
    try:
        return s3url.parse_s3_url(url, endpoint)
    except s3url.EndpointError as exc:
        raise RepositoryError(f"--s3-endpoint {exc}") from None
    except ValueError as exc:
        raise RepositoryError(f"{flag} {exc}") from None


def parse_endpoint(endpoint: str, flag: str = "--s3-endpoint") -> Endpoint:
    """Parse an S3-compatible endpoint, ``[http://|https://]HOST[:PORT]``.

    Raises:
        RepositoryError: The endpoint is malformed (one line naming ``flag``).
    """
    try:
        return s3url.parse_endpoint(endpoint)
    except ValueError as exc:
        raise RepositoryError(f"{flag} {exc}") from None


def triton_repository_url(url: str, endpoint: str | None = None, flag: str = "--repository") -> str:
    """The ``--model-repository`` value for Triton: the endpoint inside the URL when there is one.

    Raises:
        RepositoryError: The URL or the endpoint is malformed.
    """
    return parse_s3_url(url, flag, endpoint).triton_url


@dataclass(frozen=True)
class ModelUpload:
    """What :func:`publish` did with one model.

    Attributes:
        name: The model.
        versions: Version numbers the published ``config.pbtxt`` pins.
        files: Objects uploaded (the config included); 0 when unchanged.
        size: Bytes uploaded.
        unchanged: Whether the model was already there as it is now (nothing uploaded).
    """

    name: str
    versions: tuple[int, ...]
    files: int
    size: int
    unchanged: bool


@dataclass(frozen=True)
class PublishResult:
    """What :func:`publish` did.

    Attributes:
        url: The repository, ``s3://bucket/prefix``.
        triton_url: What to pass Triton as ``--model-repository``.
        models: Per model, in the order published.
        removed: Keys (relative to the prefix) deleted: old versions and models no longer there.
        replaced: Whether a repository was there before.
    """

    url: str
    triton_url: str
    models: tuple[ModelUpload, ...]
    removed: tuple[str, ...]
    replaced: bool


@dataclass
class _LocalModel:
    name: str
    config: Path
    versions: dict[int, list[str]] = field(default_factory=dict)
    """Per local version: paths relative to the version folder (``dir/`` for an empty folder)."""
    extras: list[str] = field(default_factory=list)
    """Other paths in the model folder, relative to it (uploaded in place)."""
    digest: str = ""


def publish(
    local_repository: Path,
    url: str,
    endpoint: str | None = None,
    *,
    order: Sequence[str] = (),
    progress: Callable[[str], None] | None = None,
    client: Any = None,
    flag: str = "--out",
) -> PublishResult:
    """Upload the model repository ``local_repository`` to ``url`` (see the module for the order).

    Args:
        local_repository: A repository folder as ``toolkit deploy`` writes it: one folder per model
            with its ``config.pbtxt`` and numbered version folders, and the marker file on top.
        url: ``s3://BUCKET/PREFIX``; the bucket must exist.
        endpoint: An S3-compatible endpoint (``http://HOST:PORT``); ``None`` for AWS S3.
        order: Model names, callees before callers, in the order to publish them; models not named
            go first in name order, ensembles last.
        progress: Called with a line per model and per clean-up step.
        client: A boto3 S3 client to use instead of one made for ``endpoint``.
        flag: The option ``url`` came from, named in errors.

    Returns:
        What was uploaded, kept and removed.

    Raises:
        RepositoryError: The URL or endpoint is malformed, the local folder is not a repository,
            the prefix holds objects the toolkit did not write, or the object store fails (no
            credentials, no such bucket, endpoint unreachable, access denied). One line, naming the
            URL and the endpoint.
    """
    location = parse_s3_url(url, flag, endpoint)
    ep = location.endpoint
    triton_url = location.triton_url
    models, top_files = _scan_local(Path(local_repository))
    say = progress or (lambda line: None)
    s3 = client if client is not None else make_client(ep)
    with translate_errors(location, ep, "publishing"):
        remote = _list_remote(s3, location)
        replaced = MARKER in remote
        if remote and not (replaced or PUBLISHING in remote):
            raise RepositoryError(
                f"{location.url}{_at(ep)}: holds objects but was not written by `toolkit deploy` (no "
                f"{MARKER}); refusing to publish over it: choose another prefix or empty it"
            )
        started = {"started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        s3.put_object(Bucket=location.bucket, Key=location.key(PUBLISHING), Body=json.dumps(started).encode())
        keep: set[str] = {PUBLISHING}
        uploads = []
        for name in _publish_order(models, order):
            upload = _publish_model(s3, location, models[name], remote, keep)
            uploads.append(upload)
            say(_describe(upload))
        for name in sorted(top_files, key=lambda n: (n == MARKER, n)):
            s3.upload_file(str(Path(local_repository) / name), location.bucket, location.key(name))
            keep.add(name)
        if MARKER in top_files:
            say(f"  {MARKER:<28} uploaded last: the repository is complete")
        stale = sorted(set(remote) - keep)
        _delete(s3, location, [k for k in stale if not k.endswith(f"/{CONFIG}")])
        _delete(s3, location, [k for k in stale if k.endswith(f"/{CONFIG}")])
        if stale:
            say(f"  removed {len(stale)} object(s) of old versions and dropped models")
        s3.delete_object(Bucket=location.bucket, Key=location.key(PUBLISHING))
    return PublishResult(location.url, triton_url, tuple(uploads), tuple(stale), replaced)


def check_repository(
    url: str, endpoint: str | None = None, client: Any = None, flag: str = "--repository"
) -> str:
    """Check that ``url`` holds something to serve before Triton is started on it.

    Returns:
        A note for the user ("" when there is none), such as a publish that was interrupted.

    Raises:
        RepositoryError: Malformed URL or endpoint, nothing under the prefix, or the object store
            fails (credentials, bucket, endpoint), in one line.
    """
    location = parse_s3_url(url, flag, endpoint)
    ep = location.endpoint
    s3 = client if client is not None else make_client(ep)
    with translate_errors(location, ep, "reading"):
        reply = s3.list_objects_v2(Bucket=location.bucket, Prefix=location.list_prefix, MaxKeys=1000)
        keys = {obj["Key"][len(location.list_prefix) :] for obj in reply.get("Contents", [])}
    if not keys:
        raise RepositoryError(
            f"{location.url}{_at(ep)}: no objects under this prefix; publish a repository there with "
            f"`toolkit deploy --out {location.url}`"
        )
    if PUBLISHING in keys:
        return f"note: a publish to {location.url} is under way or was interrupted ({PUBLISHING} is there)"
    return ""


def make_client(endpoint: Endpoint | str | None = None) -> Any:
    """A boto3 S3 client for AWS (``None``) or an S3-compatible endpoint (path-style addressing).

    Credentials and region come from boto3's usual places: ``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``, ``AWS_PROFILE`` and the
    AWS config files.
    """
    import boto3
    from botocore.config import Config

    ep = parse_endpoint(endpoint) if isinstance(endpoint, str) else endpoint
    session = boto3.session.Session()
    config = Config(
        connect_timeout=10,
        read_timeout=120,
        retries={"max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": "path"} if ep is not None else None,
    )
    region = session.region_name or ("us-east-1" if ep is not None else None)
    return session.client("s3", endpoint_url=ep.url if ep else None, region_name=region, config=config)


@contextlib.contextmanager
def translate_errors(location: S3Location, endpoint: Endpoint | None, doing: str) -> Iterator[None]:
    """Turn boto3 and botocore failures into one-line :class:`RepositoryError` naming URL and endpoint."""
    from boto3.exceptions import Boto3Error
    from botocore import exceptions as bx

    where = f"{location.url}{_at(endpoint)}"
    try:
        yield
    except (bx.NoCredentialsError, bx.PartialCredentialsError):
        raise RepositoryError(
            f"{where}: no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and "
            "AWS_DEFAULT_REGION), or AWS_PROFILE"
        ) from None
    except (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError) as exc:
        target = endpoint.url if endpoint is not None else "the AWS S3 endpoint"
        raise RepositoryError(f"{where}: cannot reach {target} ({one_line(exc)})") from None
    except bx.ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = one_line(error.get("Message") or exc)
        if code == "NoSuchBucket" or (code in ("404", "NotFound") and exc.operation_name == "HeadBucket"):
            raise RepositoryError(
                f"{where}: bucket {location.bucket!r} does not exist; create it first"
            ) from None
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden"):
            raise RepositoryError(
                f"{where}: access denied while {doing} ({code}: {message}); check the credentials "
                "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the bucket's permissions"
            ) from None
        raise RepositoryError(f"{where}: {doing} failed: {code or 'error'}: {message}") from None
    except (bx.BotoCoreError, Boto3Error) as exc:
        raise RepositoryError(f"{where}: {doing} failed: {one_line(exc)}") from None
    except OSError as exc:
        raise RepositoryError(f"{where}: {doing} failed: {one_line(exc)}") from None


def _at(endpoint: Endpoint | None) -> str:
    return f" (endpoint {endpoint.url})" if endpoint is not None else ""


def _scan_local(root: Path) -> tuple[dict[str, _LocalModel], list[str]]:
    """Models (folders with a config) and top-level files of the local repository."""
    if not root.is_dir():
        raise RepositoryError(f"{root}: is not a model repository folder")
    models: dict[str, _LocalModel] = {}
    top_files: list[str] = []
    for entry in sorted(root.iterdir()):
        if entry.name in _SKIPPED or entry.name == PUBLISHING:
            continue
        _check_name(entry, root)
        if entry.is_file():
            top_files.append(entry.name)
            continue
        if not (entry / CONFIG).is_file():
            raise RepositoryError(
                f"{entry}: model folder without {CONFIG}; publishing uploads it last, as the commit point "
                "of the model, so every model needs one"
            )
        models[entry.name] = _scan_model(entry, root)
    if not models:
        raise RepositoryError(f"{root}: holds no model folders (with {CONFIG}); nothing to publish")
    if MARKER not in top_files:
        raise RepositoryError(
            f"{root}: was not written by `toolkit deploy` (no {MARKER}); only its repositories are "
            "published (the marker tells a later publish that the prefix is the toolkit's to replace)"
        )
    return models, top_files


def _scan_model(folder: Path, root: Path) -> _LocalModel:
    model = _LocalModel(folder.name, folder / CONFIG)
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part in _SKIPPED for part in rel.parts) or path.suffix == ".pyc":
            continue
        _check_name(path, root)
        if path.is_dir() and any(path.iterdir()):
            continue
        entry = rel.as_posix() + ("/" if path.is_dir() else "")
        digest.update(entry.encode() + b"\0")
        if path.is_file():
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        head = rel.parts[0]
        if head.isdigit() and len(rel.parts) > 1:
            model.versions.setdefault(int(head), []).append(entry.split("/", 1)[1])
        elif head.isdigit() and path.is_dir():
            model.versions.setdefault(int(head), []).append("")
        elif entry != CONFIG:
            model.extras.append(entry)
    model.digest = digest.hexdigest()
    return model


def _check_name(path: Path, root: Path) -> None:
    for part in path.relative_to(root).parts:
        if not s3url.SEGMENT.fullmatch(part):
            raise RepositoryError(
                f"{path}: {part!r} cannot be published: Triton reads only letters, digits, '.', '_' and "
                "'-' in S3 paths; rename it"
            )


def _publish_order(models: dict[str, _LocalModel], order: Sequence[str]) -> list[str]:
    rank = {name: i for i, name in enumerate(order)}
    ensembles = {name for name, m in models.items() if _is_ensemble(m.config)}

    def key(name: str) -> tuple[int, int, str]:
        if name in rank:
            return (1, rank[name], name)
        return (2 if name in ensembles else 0, 0, name)

    return sorted(models, key=key)


def _is_ensemble(config: Path) -> bool:
    return bool(re.search(r'^platform:\s*"ensemble"', config.read_text(encoding="utf-8"), re.MULTILINE))


def _list_remote(s3: Any, location: S3Location) -> dict[str, int]:
    """Every object under the prefix: key relative to it -> size (checks the bucket first)."""
    s3.head_bucket(Bucket=location.bucket)
    found: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=location.bucket, Prefix=location.list_prefix
    ):
        for obj in page.get("Contents", []):
            found[obj["Key"][len(location.list_prefix) :]] = int(obj.get("Size", 0))
    found.pop("", None)
    return found


def _remote_versions(name: str, remote: dict[str, int]) -> set[int]:
    versions = set()
    for key in remote:
        parts = key.split("/")
        if len(parts) >= 3 and parts[0] == name and parts[1].isdigit():
            versions.add(int(parts[1]))
    return versions


def _version_keys(model: _LocalModel, mapping: dict[int, int]) -> list[str]:
    keys = []
    for local, files in sorted(model.versions.items()):
        for rel in files:
            keys.append(f"{model.name}/{mapping[local]}/{rel}")
    return keys


def _publish_model(
    s3: Any, location: S3Location, model: _LocalModel, remote: dict[str, int], keep: set[str]
) -> ModelUpload:
    config_key = f"{model.name}/{CONFIG}"
    extras = [f"{model.name}/{rel}" for rel in model.extras]
    if config_key in remote:
        head = s3.head_object(Bucket=location.bucket, Key=location.key(config_key))
        meta = {k.lower(): v for k, v in head.get("Metadata", {}).items()}
        pinned = _parse_versions(meta.get(VERSIONS_METADATA, ""))
        if meta.get(DIGEST_METADATA) == model.digest and len(pinned) == len(model.versions):
            mapping = dict(zip(sorted(model.versions), pinned, strict=True))
            keys = _version_keys(model, mapping) + extras
            if all(k in remote for k in keys):
                keep.update([*keys, config_key])
                return ModelUpload(model.name, tuple(pinned), 0, 0, True)
    base = max(_remote_versions(model.name, remote), default=0)
    mapping = {local: base + i + 1 for i, local in enumerate(sorted(model.versions))}
    folder = model.config.parent
    files = size = 0
    for local, rels in sorted(model.versions.items()):
        for rel in rels:
            key = f"{model.name}/{mapping[local]}/{rel}"
            if not rel or rel.endswith("/"):
                s3.put_object(Bucket=location.bucket, Key=location.key(key), Body=b"")
            else:
                path = folder / str(local) / rel
                s3.upload_file(str(path), location.bucket, location.key(key))
                size += path.stat().st_size
            files += 1
            keep.add(key)
    for rel, key in zip(model.extras, extras, strict=True):
        if rel.endswith("/"):
            s3.put_object(Bucket=location.bucket, Key=location.key(key), Body=b"")
        else:
            s3.upload_file(str(folder / rel), location.bucket, location.key(key))
            size += (folder / rel).stat().st_size
        files += 1
        keep.add(key)
    versions = tuple(mapping[v] for v in sorted(mapping))
    body = _pinned_config(model.config, versions).encode()
    s3.put_object(
        Bucket=location.bucket,
        Key=location.key(config_key),
        Body=body,
        ContentType="text/plain",
        Metadata={DIGEST_METADATA: model.digest, VERSIONS_METADATA: ",".join(map(str, versions))},
    )
    keep.add(config_key)
    return ModelUpload(model.name, versions, files + 1, size + len(body), False)


def _parse_versions(value: str) -> list[int]:
    parts = [p.strip() for p in value.split(",") if p.strip()]
    return [int(p) for p in parts] if all(p.isdigit() for p in parts) else []


def _pinned_config(path: Path, versions: tuple[int, ...]) -> str:
    """``config.pbtxt`` with a version policy that serves exactly ``versions``."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    config = mc.ModelConfig()
    try:
        text_format.Parse(path.read_text(encoding="utf-8"), config)
    except (OSError, text_format.ParseError) as exc:
        raise RepositoryError(f"{path}: cannot be read as a model configuration: {one_line(exc)}") from None
    if versions:
        config.ClearField("version_policy")
        config.version_policy.specific.versions.extend(versions)
    return text_format.MessageToString(config)


def _delete(s3: Any, location: S3Location, keys: list[str]) -> None:
    for start in range(0, len(keys), _DELETE_BATCH):
        batch = keys[start : start + _DELETE_BATCH]
        reply = s3.delete_objects(
            Bucket=location.bucket,
            Delete={"Objects": [{"Key": location.key(k)} for k in batch], "Quiet": True},
        )
        errors = reply.get("Errors", [])
        if errors:
            first = errors[0]
            raise RepositoryError(
                f"{location.url}: removing {len(errors)} stale object(s) failed, first {first.get('Key')}: "
                f"{first.get('Code')}: {one_line(first.get('Message', ''))}"
            )


def _describe(upload: ModelUpload) -> str:
    versions = ",".join(map(str, upload.versions)) or "-"
    if upload.unchanged:
        return f"  {upload.name:<28} unchanged, version {versions} kept"
    return (
        f"  {upload.name:<28} version {versions}: {upload.files} object(s), {_size(upload.size)}, "
        f"{CONFIG} last"
    )


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"
