"""Preprocessing: resize modes, colour order and the model's own input quantization."""

from __future__ import annotations

import numpy as np
import pytest

from edge_classifier.preprocess import InputSpec, fit, input_table, to_input
from edge_classifier.preprocess.resize import center_crop, letterbox


def frame(height: int, width: int) -> np.ndarray:
    """A BGR frame whose left half is blue and right half red."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = (255, 0, 0)
    image[:, width // 2 :] = (0, 0, 255)
    return image


@pytest.mark.parametrize(("height", "width"), [(480, 640), (720, 1280), (10, 7), (224, 224), (1, 1)])
@pytest.mark.parametrize("mode", ["stretch", "crop", "letterbox"])
def test_any_frame_size_fits_exactly(height, width, mode):
    out = fit(frame(height, width), 96, 128, mode)
    assert out.shape == (128, 96, 3)
    assert out.dtype == np.uint8


def test_bgr_is_converted_to_rgb_and_rgb_is_kept():
    bgr = frame(4, 4)
    assert tuple(fit(bgr, 4, 4)[0, 0]) == (0, 0, 255)  # blue in RGB
    assert tuple(fit(bgr, 4, 4, rgb=True)[0, 0]) == (255, 0, 0)  # already RGB: untouched


def test_stretch_is_bilinear_whole_frame():
    import cv2

    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    expected = cv2.cvtColor(cv2.resize(image, (224, 224), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(fit(image, 224, 224, "stretch"), expected)


def test_center_crop_cuts_the_long_side_evenly():
    image = np.zeros((100, 300, 3), np.uint8)
    image[:, 100:200] = 255  # the centre square is white, the sides black
    assert center_crop(image, 50, 50).min() == 255


def test_letterbox_pads_with_black_and_keeps_the_frame():
    image = np.full((100, 200, 3), 255, np.uint8)
    out = letterbox(image, 100, 100)
    assert out[:25].max() == 0 and out[75:].max() == 0  # padding above and below
    assert out[26:74].min() == 255


def test_grayscale_and_bgra_frames_are_accepted():
    assert fit(np.zeros((10, 10), np.uint8), 5, 5).shape == (5, 5, 3)
    assert fit(np.zeros((10, 10, 4), np.uint8), 5, 5).shape == (5, 5, 3)


@pytest.mark.parametrize(("image", "message"), [
    (np.zeros((10, 10, 3), np.float32), "uint8"),
    (np.zeros((10, 10, 2), np.uint8), "H x W x 3"),
])
def test_bad_frames_are_rejected_with_a_reason(image, message):
    with pytest.raises(ValueError, match=message):
        fit(image, 5, 5)


def test_unknown_resize_mode_is_named():
    with pytest.raises(ValueError, match="'zoom'"):
        fit(np.zeros((4, 4, 3), np.uint8), 2, 2, "zoom")


def test_coral_quantization_feeds_pixels_unchanged():
    """(1/128, 128) with mean = std = 128 is the identity: no table, no copy."""
    spec = InputSpec(224, 224, np.uint8, 0.0078125, 128)
    assert input_table(spec) is None
    rgb = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    tensor = to_input(rgb, None)
    assert tensor.shape == (1, 2, 2, 3)
    assert np.shares_memory(tensor, rgb)


def test_other_uint8_quantization_is_requantized():
    """A (1/127.5, 127) model: q = round(((p - 128) / 128) * 127.5) + 127."""
    table = input_table(InputSpec(8, 8, np.uint8, 1 / 127.5, 127))
    assert table is not None
    pixels = np.arange(256)
    expected = np.clip(np.round((pixels - 128) / 128 * 127.5) + 127, 0, 255)
    np.testing.assert_array_equal(table, expected)
    assert table[128] == 127


def test_int8_input_is_shifted():
    table = input_table(InputSpec(8, 8, np.int8, 1 / 128, 0))
    assert table is not None and table.dtype == np.int8
    assert (table[0], table[128], table[255]) == (-128, 0, 127)


def test_float_input_is_normalised():
    table = input_table(InputSpec(8, 8, np.float32, 0.0, 0, mean=127.5, std=127.5))
    assert table is not None and table.dtype == np.float32
    assert table[0] == pytest.approx(-1.0) and table[255] == pytest.approx(1.0)
    rgb = np.full((2, 2, 3), 255, np.uint8)
    assert to_input(rgb, table).dtype == np.float32


def test_unsupported_input_type_is_rejected():
    with pytest.raises(ValueError, match="int16"):
        InputSpec(8, 8, np.int16, 1.0, 0)
