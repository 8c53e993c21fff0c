"""The configuration: providers.yaml + environment -> frozen, validated objects."""

from .expand import parse_duration
from .load import ConfigError, default_path, load, parse
from .model import (
    FEATURES,
    TLS,
    Admin,
    Allowance,
    Breaker,
    Client,
    Config,
    Limits,
    ModelRoute,
    ParamRules,
    Price,
    Probe,
    Provider,
    ProviderKey,
    Routing,
    Server,
    State,
    Target,
    Timeouts,
)
from .providers import DIALECTS

__all__ = [
    "DIALECTS",
    "FEATURES",
    "TLS",
    "Admin",
    "Allowance",
    "Breaker",
    "Client",
    "Config",
    "ConfigError",
    "Limits",
    "ModelRoute",
    "ParamRules",
    "Price",
    "Probe",
    "Provider",
    "ProviderKey",
    "Routing",
    "Server",
    "State",
    "Target",
    "Timeouts",
    "default_path",
    "load",
    "parse",
    "parse_duration",
]
