"""Routing policies (numpy only); copied into the router model of every deployed repository."""

from .policy import (
    KNOWN_PARAMETERS,
    REQUEST_FEATURES,
    Decision,
    RequestContext,
    RouterConfig,
    RoutingError,
    RuleConfig,
    decide,
    parse_parameters,
    request_features,
)

__all__ = [
    "KNOWN_PARAMETERS",
    "REQUEST_FEATURES",
    "Decision",
    "RequestContext",
    "RouterConfig",
    "RoutingError",
    "RuleConfig",
    "decide",
    "parse_parameters",
    "request_features",
]
