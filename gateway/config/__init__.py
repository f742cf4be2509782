"""Configuration: TOML files loaded once into frozen, validated objects."""

from gateway.config.load import load_config, parse_config
from gateway.config.schema import GatewayConfig

__all__ = ["GatewayConfig", "load_config", "parse_config"]
