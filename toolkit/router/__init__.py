"""Routing policies (numpy only); copied into the router model of every deployed repository."""

from .budget import LatencyTracker, cap
from .learned import calibrate_lambda, calibrate_lambda_to_cost, choose_tier, choose_tiers
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
