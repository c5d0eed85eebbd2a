"""The project configuration: YAML → typed models, with ``${ENV}`` values and file:line errors."""

from crossdock.config.loader import LoadedConfig, load_config
from crossdock.config.models import (
    CircuitConfig,
    ConnectionSpec,
    ConnectorSpec,
    IncomingConfig,
    MaintenanceWindow,
    OutgoingConfig,
    ProjectConfig,
    RetryConfig,
    RouteConfig,
    parse_duration,
)

__all__ = [
    "CircuitConfig",
    "ConnectionSpec",
    "ConnectorSpec",
    "IncomingConfig",
    "LoadedConfig",
    "MaintenanceWindow",
    "OutgoingConfig",
    "ProjectConfig",
    "RetryConfig",
    "RouteConfig",
    "load_config",
    "parse_duration",
]
