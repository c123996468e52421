"""The bounded decode: header parsing against OpenCV's decoders, limits, and fuzzing."""

from __future__ import annotations

import logging
import struct
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.bombs import jpeg_bomb, png_bomb

from edge_classifier.preprocess.decode import ImageLimits, ImageRejected, RejectLog, decode_image
from edge_classifier.preprocess.header import image_header

EXTENSIONS = {".jpg": "jpeg", ".png": "png", ".webp": "webp", ".bmp": "bmp", ".tiff": "tiff", ".ppm": "pnm"}
SMALL = ImageLimits(max_pixels=10_000, max_bytes=1 << 20)


def encoded(ext: str, width: int, height: int, seed: int = 0, params: tuple[int, ...] = ()) -> bytes:
    picture = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    ok, data = cv2.imencode(ext, picture, list(params))
    assert ok
    return data.tobytes()


@settings(max_examples=60, deadline=None)
@given(ext=st.sampled_from(sorted(EXTENSIONS)), width=st.integers(1, 300), height=st.integers(1, 300))
def test_header_matches_what_opencv_decodes(ext, width, height):
    data = encoded(ext, width, height)
    header = image_header(data)
    assert header is not None and (header.format, header.width, header.height) == (EXTENSIONS[ext], width, height)
    assert decode_image(data, ImageLimits()).shape == (height, width, 3)


@pytest.mark.parametrize(("ext", "params"), [
    (".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)), (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101)),
    (".png", (cv2.IMWRITE_PNG_COMPRESSION, 0)), (".tiff", (cv2.IMWRITE_TIFF_COMPRESSION, 1))])
def test_header_of_other_variants(ext, params):
    header = image_header(encoded(ext, 77, 31, params=params))
    assert header is not None and (header.width, header.height) == (77, 31)


@pytest.mark.parametrize(("data", "reason", "words"), [
    (b"", "empty", "not a readable image (empty, 0 bytes)"),
    (png_bomb(30000, 30000), "too many pixels", "png header declares 30000x30000 = 900000000 pixels"),
    (jpeg_bomb(30000, 30000), "too many pixels", "jpeg header declares 30000x30000"),
    (b"GIF89a" + bytes(100), "unknown format", "not a JPEG, PNG, WebP, BMP, TIFF or PNM"),
    (b"\xff\xd8\xff\xd9", "unknown format", "readable header"),
    (b"\x00garbage", "unknown format", "readable header"),
    (encoded(".png", 20, 20)[:60], "undecodable", "not a readable image (png that cannot be decoded"),
])
def test_refusals_name_the_reason(data, reason, words):
    with pytest.raises(ImageRejected) as caught:
        decode_image(data, ImageLimits(), what="payload")
    assert caught.value.reason == reason
    assert str(caught.value).startswith("payload: ") and words in str(caught.value)


def test_byte_cap_is_checked_before_anything_else():
    with pytest.raises(ImageRejected, match=r"2000000 bytes, over the limit of 1048576") as caught:
        decode_image(b"\xff\xd8" + bytes(1_999_998), SMALL)
    assert caught.value.reason == "too many bytes"


def test_limit_is_exact():
    data = encoded(".png", 100, 100)
    assert decode_image(data, SMALL).shape == (100, 100, 3)
    with pytest.raises(ImageRejected, match="100x101 = 10100 pixels, over the limit of 10000"):
        decode_image(encoded(".png", 100, 101), SMALL)


def _set_dims(data: bytearray, ext: str, width: int, height: int) -> None:
    """Write width x height into the header of an encoded image, where its format keeps them."""
    if ext == ".png":
        struct.pack_into(">II", data, 16, width, height)
        struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))  # a valid IHDR: libpng checks
    elif ext == ".jpg":
        struct.pack_into(">HH", data, data.index(b"\xff\xc0") + 5, height, width)
    elif ext == ".bmp":
        struct.pack_into("<ii", data, 18, width, height)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ext=st.sampled_from([".png", ".jpg", ".bmp"]), width=st.integers(0, 70000), height=st.integers(0, 70000))
def test_crafted_dimensions_never_get_past_the_limit(ext, width, height):
    """Headers claiming any size: refused when over the limit, and whatever decodes is what
    the header said (the parser and the decoder agree, so the check cannot be sidestepped)."""
    data = bytearray(encoded(ext, 40, 30))
    if ext == ".jpg":
        width, height = width & 0xFFFF, height & 0xFFFF  # 16-bit fields
    _set_dims(data, ext, width, height)
    try:
        image = decode_image(bytes(data), SMALL)
    except ImageRejected as exc:
        if 0 < width * height <= SMALL.max_pixels:
            assert exc.reason in ("undecodable", "unknown format"), exc
        return
    assert image.shape[1] * image.shape[0] <= SMALL.max_pixels
    assert image.shape[:2] == (height, width)


@settings(max_examples=300, deadline=None)
@given(ext=st.sampled_from(sorted(EXTENSIONS)), edits=st.lists(st.tuples(st.integers(0, 199), st.integers(0, 255)),
                                                             max_size=6), cut=st.integers(0, 400))
def test_mutated_headers_never_raise_anything_else(ext, edits, cut):
    data = bytearray(encoded(ext, 48, 40, seed=3))
    for at, value in edits:
        if at < len(data):
            data[at] = value
    data = data[: len(data) - cut] if cut < len(data) else data
    header = image_header(bytes(data))
    try:
        image = decode_image(bytes(data), SMALL)
    except ImageRejected:
        return
    assert header is not None
    assert image.shape[0] * image.shape[1] <= SMALL.max_pixels


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.sampled_from([b"", b"\xff\xd8", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00",
                                                 b"MM\x00*", b"P6", b"RIFF\x00\x00\x00\x00WEBPVP8X"]))
def test_random_bytes_behind_a_signature(tail, signature):
    data = signature + tail
    image_header(data)  # never raises
    try:
        image = decode_image(data, SMALL)
    except ImageRejected:
        return
    assert image.shape[0] * image.shape[1] <= SMALL.max_pixels


def test_reject_log_says_once_per_reason_per_interval(caplog):
    logger = logging.getLogger("test.rejects")
    rejects = RejectLog(logger, "source", interval=60)
    with caplog.at_level(logging.WARNING, logger="test.rejects"):
        for _ in range(200):
            rejects.rejected(ImageRejected("payload: junk", "unknown format"))
        rejects.rejected(ImageRejected("payload: not a readable image (empty, 0 bytes)", "empty"))
    assert rejects.total == 201 and rejects.counts == {"unknown format": 200, "empty": 1}
    assert [r.getMessage() for r in caplog.records] == [
        "source: payload: junk, ignored", "source: payload: not a readable image (empty, 0 bytes), ignored"]
