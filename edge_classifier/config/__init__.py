"""Configuration: a frozen, validated tree of dataclasses loaded from TOML."""

from edge_classifier.config.loader import find_config, load_config, parse_config
from edge_classifier.config.schema import (
    ClassifyConfig,
    Config,
    DeviceConfig,
    ModelConfig,
    MqttConfig,
    PublishConfig,
    SourceConfig,
)

__all__ = [
    "ClassifyConfig",
    "Config",
    "DeviceConfig",
    "ModelConfig",
    "MqttConfig",
    "PublishConfig",
    "SourceConfig",
    "find_config",
    "load_config",
    "parse_config",
]
