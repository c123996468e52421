"""Decompression bombs: small files whose headers claim huge images (built, not stored)."""

from __future__ import annotations

import functools
import struct
import zlib

import cv2
import numpy as np


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@functools.cache
def png_bomb(width: int, height: int) -> bytes:
    """A real, valid 1-bit grey PNG of width x height black pixels: ~109 KB at 30000x30000,
    2.7 GB once decoded to BGR."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte 0, then 8 pixels a byte
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row) for _ in range(height)]
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def jpeg_bomb(width: int, height: int) -> bytes:
    """A ~3 KB JPEG whose frame header claims width x height (the scan data is a tiny image's)."""
    ok, encoded = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))
    assert ok
    data = bytearray(encoded.tobytes())
    at = data.index(b"\xff\xc0")  # baseline SOF0: length(2) precision(1) height(2) width(2)
    struct.pack_into(">HH", data, at + 5, height, width)
    return bytes(data)
