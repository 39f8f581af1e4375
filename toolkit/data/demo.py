"""The data sets of a spec: generated from one seeded world, or read from ``data.files`` logs.

Generated (no ``data.files``): training, held-out, quantization and gate requests are separate
traffic of the same world. Logs: held-out requests are the first ones of ``files.holdout``; the
quantization and gate requests the first ones of ``files.calibration`` (or ``files.train``); and the
training requests are only ever streamed (:func:`train_chunks`), never loaded whole.
"""

from __future__ import annotations

from collections.abc import Iterator

from toolkit.data.generator import generate_requests
from toolkit.data.requests import RequestSet
from toolkit.errors import DataError
from toolkit.spec.schema import Spec


def demo_train_set(spec: Spec) -> RequestSet:
    """The generated training requests of ``spec`` (same every time for the same spec).

    Raises:
        DataError: The spec reads logs (``data.files``): stream them with :func:`train_chunks`.
    """
    files = spec.data.files
    if files is not None:
        raise DataError(
            f"{spec.source or spec.name}: data.files.train ({files.train}) is streamed, not loaded whole; "
            "iterate train_chunks(spec) instead of calling demo_train_set"
        )
    return _generate(spec, spec.data.train_requests, SPLITS["train"])


def train_chunks(spec: Spec) -> Iterator[RequestSet]:
    """The training requests in chunks: the chunks of ``data.files.train``, or the one generated set.

    Each call starts a new pass over the data.
    """
    files = spec.data.files
    if files is None:
        yield demo_train_set(spec)
        return
    from toolkit.data.logs import iter_requests

    yield from iter_requests(spec, files.train)


def demo_holdout_set(spec: Spec, num_requests: int | None = None) -> RequestSet:
    """Held-out requests: ``num_requests`` (default ``data.holdout_requests``) of them.

    Generated: same world as training, different traffic. Logs: the first ones of ``files.holdout``.
    """
    count = num_requests or spec.data.holdout_requests
    files = spec.data.files
    if files is not None:
        from toolkit.data.logs import read_requests

        return read_requests(spec, files.holdout, count)
    return _generate(spec, count, SPLITS["holdout"])


def demo_quantization_set(spec: Spec) -> RequestSet:
    """``export.calibration_requests`` requests that calibrate static quantization.

    Generated: fresh training-distribution traffic. Logs: the first ones of ``files.calibration``
    (or ``files.train``).
    """
    files = spec.data.files
    if files is not None:
        from toolkit.data.logs import read_requests

        return read_requests(spec, files.calibration or files.train, spec.export.quantization_requests)
    return _generate(spec, spec.export.quantization_requests, SPLITS["quantization"])


def demo_gate_set(spec: Spec, num_requests: int) -> RequestSet:
    """Requests the learned routing gate is fitted on (never the held-out ones).

    Generated: their own traffic. Logs: the first ``num_requests`` of ``files.calibration`` (or
    ``files.train``).
    """
    files = spec.data.files
    if files is not None:
        from toolkit.data.logs import read_requests

        return read_requests(spec, files.calibration or files.train, num_requests)
    return _generate(spec, num_requests, SPLITS["gate"])


SPLITS = {"train": 1, "holdout": 2, "quantization": 3, "gate": 4}
"""Each generated split's salt: the splits share the spec's world and differ in traffic."""


def generated_split(spec: Spec, split: str, num_requests: int) -> RequestSet:
    """Generated requests of one split, whatever ``data.files`` says.

    ``split`` is ``train``, ``holdout``, ``quantization`` or ``gate``; the same spec always gives
    the same requests.
    """
    return _generate(spec, num_requests, SPLITS[split])


def _generate(spec: Spec, num_requests: int, salt: int) -> RequestSet:
    return generate_requests(
        spec.features,
        num_requests,
        (spec.data.candidates.min, spec.data.candidates.max),
        spec.data.informative_share,
        seed=spec.seed * 1000 + salt,
        world_seed=spec.seed,
    )
