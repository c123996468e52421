"""edge-classifier: look at camera frames, classify them with int8 TFLite models, report over MQTT."""

__version__ = "0.1.0"
__all__ = ["__version__"]
