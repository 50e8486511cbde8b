"""Image checks, conversions and files shared by sources, vision and training: everything downstream sees BGR uint8."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .errors import FrameError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


def as_bgr(frame: np.ndarray) -> np.ndarray:
    """Return ``frame`` as a contiguous H×W×3 uint8 BGR array (grayscale and BGRA accepted)."""
    if not isinstance(frame, np.ndarray):
        raise FrameError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise FrameError(f"frame must be uint8, got {frame.dtype}")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] not in (3, 4)):
        raise FrameError(f"frame must be H×W, H×W×3 or H×W×4, got shape {frame.shape}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise FrameError(f"frame is empty (shape {frame.shape})")
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(frame)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as BGR uint8, or raise FrameError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FrameError(f"{path}: no such file")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise FrameError(f"{path}: not a readable image")
    return image


def list_images(paths: list[str | Path]) -> list[Path]:
    """Expand directories into the image files they hold (sorted); keep files as given."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            found.append(path)
    return found


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (not DHT, JPG, DAC)


class ImageTooLarge(FrameError):
    """An image whose header claims more pixels than allowed; refused before it is decoded."""


def image_header(data: bytes) -> tuple[str, int, int]:
    """(``"png"`` or ``"jpeg"``, width, height) from the header alone, or FrameError saying what is wrong."""
    if not data:
        raise FrameError("empty: no image data")
    if data.startswith(PNG_SIGNATURE):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise FrameError("truncated or corrupt PNG: no IHDR header")
        return "png", int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data.startswith(b"\xff\xd8\xff"):
        width, height, _ = _jpeg_frame(data)
        return "jpeg", width, height
    raise FrameError("not a JPEG or PNG image")


def _jpeg_frame(data: bytes) -> tuple[int, int, int]:
    """Width, height and the offset of the first scan, walking the JPEG's marker segments."""
    pos, size = 2, None
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise FrameError("corrupt JPEG: bad marker segment")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker in JPEG_SOF and pos + 9 <= len(data):
            size = int.from_bytes(data[pos + 7:pos + 9], "big"), int.from_bytes(data[pos + 5:pos + 7], "big")
        if marker == 0xDA:  # start of scan: the frame header must have come before
            if size is None:
                break
            return size[0], size[1], pos
        pos += 2 + length
    raise FrameError("truncated or corrupt JPEG: no frame header and scan")


def decode_image(data: bytes, *, max_pixels: int | None = None) -> np.ndarray:
    """Decode JPEG or PNG bytes as BGR uint8 (as ``read_image`` does); FrameError for an empty, foreign,
    zero-size or truncated image, ImageTooLarge (checked from the header, before decoding) past ``max_pixels``."""
    kind, width, height = image_header(data)
    if width == 0 or height == 0:
        raise FrameError(f"zero-size image ({width}×{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLarge(f"image too large: {width}×{height} is {width * height / 1e6:.1f} MP, "
                            f"the limit is {max_pixels / 1e6:.1f} MP")
    if kind == "jpeg" and b"\xff\xd9" not in data[_jpeg_frame(data)[2]:]:
        raise FrameError("truncated JPEG: no end-of-image marker")
    if kind == "png" and b"IEND" not in data[-12:]:
        raise FrameError("truncated PNG: no IEND chunk")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise FrameError(f"corrupt {kind.upper()}: cannot be decoded")
    if kind == "jpeg" and not _jpeg_complete(data, image):
        raise FrameError("truncated JPEG: the image data ends before the picture does")
    return image


ENTROPY_FILLER = bytes(range(1, 255))  # no 0xFF: read as image data, never as a marker


def _jpeg_complete(data: bytes, image: np.ndarray) -> bool:
    """Whether the scan held every block: libjpeg fills the blocks of a cut scan with flat grey and stops at
    whatever end-of-image marker comes next, so a cut file with one appended decodes. When the last block is
    flat, the file is decoded again with filler before its end marker: a complete scan never reads it (the
    picture is the same), a cut one does."""
    corner = image[-8:, -8:]
    if not (corner == corner[0, 0]).all():
        return True
    end = data.index(b"\xff\xd9", _jpeg_frame(data)[2])
    filled = cv2.imdecode(np.frombuffer(data[:end] + ENTROPY_FILLER + data[end:], np.uint8), cv2.IMREAD_COLOR)
    return filled is not None and np.array_equal(image, filled)
