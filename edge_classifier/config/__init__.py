"""Configuration: a frozen, validated tree of dataclasses loaded from TOML."""

from edge_classifier.config.loader import find_config, load_config, parse_config
from edge_classifier.config.schema import (
    ClassifyConfig,
    CommandsConfig,
    Config,
    DeviceConfig,
    HomeAssistantConfig,
    ModelConfig,
    MqttConfig,
    PublishConfig,
    SourceConfig,
    TlsConfig,
)

__all__ = [
    "ClassifyConfig",
    "CommandsConfig",
    "Config",
    "DeviceConfig",
    "HomeAssistantConfig",
    "ModelConfig",
    "MqttConfig",
    "PublishConfig",
    "SourceConfig",
    "TlsConfig",
    "find_config",
    "load_config",
    "parse_config",
]
