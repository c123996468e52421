"""The control plane: MQTT commands and their replies."""
