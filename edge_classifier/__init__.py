"""edge-classifier: look at camera frames, classify them with int8 TFLite models, report over MQTT."""

import os as _os

# OpenCV reads its decode ceiling once, when cv2 loads: set it before anything imports cv2
# (preprocess.decode.HARD_MAX_PIXELS; the configured source.max_pixels is checked first).
_os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", "250000000")

__version__ = "0.1.0"
__all__ = ["__version__"]
