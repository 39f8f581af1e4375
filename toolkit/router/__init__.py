"""Routing policies (numpy only); copied into the router model of every deployed repository."""

from .budget import LatencyTracker, cap
from .engine import (
    CANDIDATE_INPUTS,
    REQUEST_INPUTS,
    NoTierError,
    Routed,
    RoutingEngine,
    TierBackend,
    TierError,
    complete,
)
from .learned import calibrate_lambda, calibrate_lambda_to_cost, choose_tier, choose_tiers
from .load import POLL_S, QueueWait, stats_reader
from .local import LocalModel, NotServedError, newest_version, versions
from .policy import (
    KNOWN_PARAMETERS,
    POLICIES,
    REQUEST_FEATURES,
    Decision,
    Parameters,
    RequestContext,
    RouterConfig,
    RoutingError,
    RuleConfig,
    cascade_scores,
    decide,
    parse_parameters,
    request_features,
    top_candidates,
)
from .remote import DEADLINE_EXCEEDED, RETRYABLE, AddressBook, RemoteTier, grpc_status
from .validate import InputSchema, validate_request

__all__ = [
    "CANDIDATE_INPUTS",
    "REQUEST_INPUTS",
    "NoTierError",
    "Routed",
    "RoutingEngine",
    "TierBackend",
    "TierError",
    "complete",
    "POLL_S",
    "QueueWait",
    "stats_reader",
    "LocalModel",
    "NotServedError",
    "newest_version",
    "versions",
    "DEADLINE_EXCEEDED",
    "RETRYABLE",
    "AddressBook",
    "RemoteTier",
    "grpc_status",
    "LatencyTracker",
    "calibrate_lambda",
    "calibrate_lambda_to_cost",
    "cap",
    "choose_tier",
    "choose_tiers",
    "KNOWN_PARAMETERS",
    "POLICIES",
    "REQUEST_FEATURES",
    "Decision",
    "Parameters",
    "RequestContext",
    "RouterConfig",
    "RoutingError",
    "RuleConfig",
    "cascade_scores",
    "decide",
    "parse_parameters",
    "request_features",
    "top_candidates",
    "InputSchema",
    "validate_request",
]
