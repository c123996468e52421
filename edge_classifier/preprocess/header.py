"""Image dimensions read from the header bytes alone, before any decoder allocates a pixel.

A decoder sizes its output from the header: a 3 KB JPEG that claims 30000x30000 makes
OpenCV allocate 2.7 GB before it finds the data missing. ``image_header`` reads the width
and height the way the decoders OpenCV uses (libjpeg, libpng, libwebp, libtiff and its own
BMP/PNM readers) will, so a caller can refuse the image first. Pure functions on bytes; a
format it does not know, or a header it cannot read, is None (the caller refuses it: an
image the parser cannot size is an image nobody can bound).
"""

from __future__ import annotations

import dataclasses
import re
import struct

__all__ = ["FORMATS", "ImageHeader", "image_header"]

FORMATS = ("jpeg", "png", "webp", "bmp", "tiff", "pnm")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers: C0..CF except DHT (C4), JPG (C8) and DAC (CC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})  # TEM, RST0-7, SOI: no length follows
_PNM = re.compile(rb"\AP[1-6](?:\s+|#[^\n]*\n)*(\d{1,10})(?:\s+|#[^\n]*\n)+(\d{1,10})\s")


@dataclasses.dataclass(frozen=True, slots=True)
class ImageHeader:
    format: str  # one of FORMATS
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def image_header(data: bytes | memoryview) -> ImageHeader | None:
    """The format and dimensions the header of ``data`` declares, or None when it is not one
    of FORMATS or its header cannot be read (truncated, malformed, zero-sized)."""
    head = bytes(data[:2])
    if head == b"\xff\xd8":
        found = _jpeg(data)
    elif data[:8] == _PNG_SIGNATURE:
        found = _png(data)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        found = _webp(data)
    elif head == b"BM":
        found = _bmp(data)
    elif data[:4] in (b"II*\x00", b"MM\x00*"):
        found = _tiff(data)
    elif head[:1] == b"P" and head[1:2] in b"123456" and len(head) == 2:
        found = _pnm(data)
    else:
        return None
    if found is None or found.width <= 0 or found.height <= 0:
        return None
    return found


def _jpeg(data: bytes | memoryview) -> ImageHeader | None:
    """The first SOF segment's size, walking the markers as libjpeg does (bytes between
    segments are skipped up to the next 0xFF; fill bytes 0xFF and stuffed FF00 too)."""
    at = 2
    end = len(data)
    while at < end:
        if data[at] != 0xFF:
            at += 1  # libjpeg: "extraneous bytes before marker", skipped
            continue
        while at < end and data[at] == 0xFF:
            at += 1
        if at >= end:
            return None
        marker = data[at]
        at += 1
        if marker == 0x00 or marker in _STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # EOI, or scan data before any frame header
            return None
        if at + 2 > end:
            return None
        (length,) = struct.unpack_from(">H", data, at)
        if length < 2:
            return None
        if marker in _SOF:
            if length < 8 or at + 7 > end:
                return None
            height, width = struct.unpack_from(">HH", data, at + 3)
            return ImageHeader("jpeg", width, height)
        at += length
    return None


def _png(data: bytes | memoryview) -> ImageHeader | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None  # libpng requires IHDR first
    width, height = struct.unpack_from(">II", data, 16)
    return ImageHeader("png", width, height)


def _webp(data: bytes | memoryview) -> ImageHeader | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return ImageHeader("webp", width, height)
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return ImageHeader("webp", 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF))
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", data, 26)
        return ImageHeader("webp", width & 0x3FFF, height & 0x3FFF)
    return None


def _bmp(data: bytes | memoryview) -> ImageHeader | None:
    if len(data) < 26:
        return None
    (size,) = struct.unpack_from("<I", data, 14)
    if size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        width, height = struct.unpack_from("<HH", data, 18)
        return ImageHeader("bmp", width, height)
    if size < 40 or len(data) < 26:
        return None
    width, height = struct.unpack_from("<ii", data, 18)
    return ImageHeader("bmp", width, abs(height))  # a negative height is a top-down bitmap


def _tiff(data: bytes | memoryview) -> ImageHeader | None:
    """ImageWidth (256) and ImageLength (257) of the first IFD, the page OpenCV reads."""
    order = "<" if data[:2] == b"II" else ">"
    if len(data) < 8:
        return None
    (offset,) = struct.unpack_from(order + "I", data, 4)
    if offset < 8 or offset + 2 > len(data):
        return None
    (count,) = struct.unpack_from(order + "H", data, offset)
    sizes: dict[int, int] = {}
    for index in range(count):
        entry = offset + 2 + 12 * index
        if entry + 12 > len(data):
            return None
        tag, kind, _ = struct.unpack_from(order + "HHI", data, entry)
        if tag in (256, 257):
            if kind == 3:  # SHORT
                (sizes[tag],) = struct.unpack_from(order + "H", data, entry + 8)
            elif kind == 4:  # LONG
                (sizes[tag],) = struct.unpack_from(order + "I", data, entry + 8)
            else:
                return None
    if 256 not in sizes or 257 not in sizes:
        return None
    return ImageHeader("tiff", sizes[256], sizes[257])


def _pnm(data: bytes | memoryview) -> ImageHeader | None:
    found = _PNM.match(bytes(data[:4096]))
    if found is None:
        return None
    return ImageHeader("pnm", int(found.group(1)), int(found.group(2)))
