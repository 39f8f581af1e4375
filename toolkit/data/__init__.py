"""Request-centric ads data: the generator of the demo traffic and the flat request-set layout."""

from toolkit.data.demo import demo_holdout_set, demo_train_set
from toolkit.data.generator import fold_ids, generate_requests
from toolkit.data.requests import REQUEST_TENSORS, RequestSet, candidate_rows

__all__ = [
    "demo_holdout_set",
    "demo_train_set",
    "REQUEST_TENSORS",
    "RequestSet",
    "candidate_rows",
    "fold_ids",
    "generate_requests",
]
