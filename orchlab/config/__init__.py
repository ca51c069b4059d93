"""Configuration: the YAML schema and its loader."""

from orchlab.config.loader import default_config_path, load_config, parse_config
from orchlab.config.schema import OrchestratorConfig, ProviderConfig, RoleConfig, RoleParams

__all__ = [
    "OrchestratorConfig",
    "ProviderConfig",
    "RoleConfig",
    "RoleParams",
    "default_config_path",
    "load_config",
    "parse_config",
]
