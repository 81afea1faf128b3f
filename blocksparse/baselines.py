"""Baselines: coding the input image with an image codec (the original method's accounting
lives in ``original``).

The image codecs run at their strongest settings in Pillow, so the comparison with the
feature codec is fair to them: PNG with ``optimize=True``; WebP lossless at the highest
effort (``method=6, quality=100``); JPEG with optimized Huffman tables, keeping per image the
smaller of the sequential and the progressive stream (both carry the same quantized DCT
coefficients, so they decode to the same pixels); lossy WebP with ``method=6``; AVIF (where
Pillow was built with it) at ``speed=0``, libavif's slowest and strongest. Rates are the full
byte lengths of the files Pillow writes, container and headers included, since a receiver
needs all of it to decode.
"""
from __future__ import annotations

import io
import operator

import numpy as np
import PIL
import torch
from PIL import Image, features
from torch.utils.data import TensorDataset

from .bitstream import bpp
from .stats import wilson_interval
from .data import mean_std
from .model import SplitResNet18
from .training import predict


LOSSLESS_FORMATS = ("png", "webp-lossless")
LOSSY_FORMATS = ("jpeg", "webp", "avif")
IMAGE_FORMATS = LOSSLESS_FORMATS + LOSSY_FORMATS
# Default quality grids. They start at the codec's lowest setting so that each curve reaches as
# low a rate as the codec can: on 28x28 Fashion-MNIST, WebP goes below 1 bpp at quality 0,
# while JPEG's headers alone (~160 bytes) keep it above ~1.6 bpp and AVIF's HEIF container
# (~300 bytes) above ~3 bpp at any quality. JPEG quality 0 is libjpeg's quality 1.
QUALITIES: dict[str, tuple[int, ...]] = {
    "jpeg": (1, 5, 10, 20, 30, 50, 70, 90, 95),
    "webp": (0, 5, 10, 20, 30, 50, 70, 90, 95),
    "avif": (0, 10, 20, 30, 50, 70, 90),
}
AVIF_SPEED = 0  # libavif's slowest, strongest encoder preset (0..10)
# The Pillow feature each format needs (PIL.features.check).
_FEATURE = {"png": "zlib", "webp-lossless": "webp", "jpeg": "jpg", "webp": "webp", "avif": "avif"}


def available_formats() -> tuple[str, ...]:
    """The formats of ``IMAGE_FORMATS`` that the installed Pillow can write, in that order."""
    return tuple(f for f in IMAGE_FORMATS if features.check(_FEATURE[f]))


def _check_format(fmt: str, quality: int | None) -> int | None:
    """Validate ``fmt`` and ``quality``; return ``quality`` as a plain int (or None)."""
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"fmt must be one of {IMAGE_FORMATS}, got {fmt!r}")
    if fmt in LOSSLESS_FORMATS:
        if quality is not None:
            raise ValueError(f"quality must be None for the lossless fmt {fmt!r} "
                             f"(it always runs at its strongest setting), got {quality!r}")
    else:
        if quality is None:
            raise ValueError(f"quality is required for the lossy fmt {fmt!r} "
                             f"(default grid: QUALITIES[{fmt!r}] = {QUALITIES[fmt]})")
        if isinstance(quality, bool):
            raise ValueError(f"quality must be an integer in [0, 100], got {quality!r}")
        try:
            quality = operator.index(quality)
        except TypeError:
            raise ValueError(f"quality must be an integer in [0, 100], got {quality!r}") from None
        if not 0 <= quality <= 100:
            raise ValueError(f"quality must be in [0, 100], got {quality}")
    if not features.check(_FEATURE[fmt]):
        raise ValueError(f"fmt {fmt!r} is not available: this Pillow ({PIL.__version__}) was built "
                         f"without {_FEATURE[fmt]!r} support; it writes {available_formats()}")
    return quality


def _save(pil: Image.Image, pil_format: str, **options) -> bytes:
    buf = io.BytesIO()
    pil.save(buf, format=pil_format, **options)
    return buf.getvalue()


def _encode(img: np.ndarray, fmt: str, quality: int | None) -> bytes:
    """One already validated image ([H, W] or [H, W, 3] uint8) as a ``fmt`` file."""
    # Grayscale stays 8-bit gray where the format has it (PNG, JPEG, AVIF 4:0:0); Pillow's WebP
    # writer converts it to RGB (lossy WebP then codes flat chroma, lossless WebP R=G=B), and the
    # bytes counted are those of that stream.
    pil = Image.fromarray(img)
    if fmt == "png":
        return _save(pil, "PNG", optimize=True)
    if fmt == "webp-lossless":
        return _save(pil, "WEBP", lossless=True, quality=100, method=6)  # quality = effort here
    if fmt == "webp":
        return _save(pil, "WEBP", quality=quality, method=6)
    if fmt == "avif":
        # One thread: the images are tiny, and libaom's output then cannot depend on the machine.
        return _save(pil, "AVIF", quality=quality, speed=AVIF_SPEED, max_threads=1)
    # JPEG: sequential and progressive streams hold the same quantized coefficients and decode
    # to the same pixels in any baseline decoder; only the entropy-coded layout differs, so the
    # smaller of the two is the codec's best stream at this quality. (On 28x28 images the
    # sequential one nearly always wins: each progressive scan brings its own headers.)
    return min((_save(pil, "JPEG", quality=quality, optimize=True, progressive=p)
                for p in (False, True)), key=len)


def encode_image(img: np.ndarray, fmt: str, quality: int | None = None) -> bytes:
    """Code one 8-bit image as a ``fmt`` file at the format's strongest settings.

    Parameters
    ----------
    img : numpy.ndarray
        uint8, ``[H, W]`` (grayscale), ``[H, W, 1]`` or ``[H, W, 3]`` (RGB).
    fmt : str
        One of ``IMAGE_FORMATS`` that the installed Pillow writes (``available_formats()``).
    quality : int, optional
        0..100 for the lossy formats (required); None for the lossless ones.

    Returns
    -------
    bytes
        The whole file, as a receiver needs it.
    """
    quality = _check_format(fmt, quality)
    img = np.asarray(img)
    if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[-1] in (1, 3))):
        raise ValueError(f"img must be uint8 [H, W], [H, W, 1] or [H, W, 3], got {img.dtype} {img.shape}")
    return _encode(img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img, fmt, quality)


def decode_image(blob: bytes, channels: int) -> np.ndarray:
    """Decode a file written by ``encode_image`` to uint8 ``[H, W, channels]``.

    Grayscale (``channels=1``) is converted back from whatever the decoder returns (RGB for
    WebP) with Pillow's ITU-R 601-2 luma, which maps R=G=B=v to v exactly.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    with Image.open(io.BytesIO(blob)) as im:
        out = np.asarray(im.convert("L" if channels == 1 else "RGB"))
    return out[..., None] if channels == 1 else out


def uint8_images(data: TensorDataset, dataset: str) -> np.ndarray:
    """The normalized images of ``data`` as uint8 ``[N, H, W, C]``."""
    mean, std = mean_std(dataset)
    x = data.tensors[0]
    if x.ndim != 4 or x.shape[1] != mean.shape[1]:
        raise ValueError(f"data must hold [N, {mean.shape[1]}, H, W] images of {dataset!r}, "
                         f"got {tuple(x.shape)}")
    if len(x) == 0:
        raise ValueError("data must hold at least one image")
    x = x.float() * std + mean
    return (x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def payload_bytes(blob: bytes, fmt: str) -> int:
    """The bytes of one image's file that a decoder knowing the format and the image's shape needs.

    WebP (simple format, one ``VP8 `` or ``VP8L`` chunk): the chunk's payload, without the RIFF
    container (12 bytes), the chunk header (8) and its pad byte, and without the fields that
    restate the shape: a lossy key frame's start code and dimensions (7 bytes; the 3-byte frame
    tag, which holds the first partition's size, is kept), a lossless bitstream's signature and
    dimensions (5 bytes). Any other format or layout: the whole file (nothing is taken off that
    was not checked here)."""
    if fmt == "webp" and len(blob) >= 30 and blob[:4] == b"RIFF" and blob[8:12] == b"WEBP":
        fourcc, size = blob[12:16], int.from_bytes(blob[16:20], "little")
        if fourcc == b"VP8 " and blob[23:26] == b"\x9d\x01\x2a":
            return size - 7
        if fourcc == b"VP8L" and blob[20] == 0x2F:
            return size - 5
    return len(blob)


def code_images(data: TensorDataset, dataset: str, fmt: str,
                quality: int | None = None) -> tuple[TensorDataset, np.ndarray]:
    """Code every input image with an image codec and decode it again.

    Use it on the test split for the baseline, or on the train and val splits to fine-tune a
    classifier on what the decoder returns.

    Parameters
    ----------
    data : TensorDataset
        Normalized images ``[N, C, H, W]`` (as ``data.load_dataset`` returns them) and labels.
        They are rounded to 8 bits first, which is what the codecs take.
    dataset : str
        The dataset's name, for its normalization constants and channel count.
    fmt : str
        One of ``IMAGE_FORMATS`` that the installed Pillow writes (``available_formats()``).
    quality : int, optional
        0..100 for the lossy formats (required; default grids in ``QUALITIES``); None for
        the lossless ones.

    Returns
    -------
    decoded : TensorDataset
        The decoded images, normalized as the input (a lossless format returns images from
        ``load_dataset`` bit for bit), and the same labels.
    stream_bytes : numpy.ndarray
        int64 ``[N]``, the size of each image's file in bytes (``code_images_payload`` adds
        each file's ``payload_bytes``).
    """
    decoded, sizes, _ = code_images_payload(data, dataset, fmt, quality)
    return decoded, sizes


def code_images_payload(data: TensorDataset, dataset: str, fmt: str,
                        quality: int | None = None) -> tuple[TensorDataset, np.ndarray, np.ndarray]:
    """``code_images`` with, third, each image's ``payload_bytes`` (int64 ``[N]``)."""
    quality = _check_format(fmt, quality)
    imgs = uint8_images(data, dataset)
    out = np.empty_like(imgs)
    sizes, payload = np.empty(len(imgs), np.int64), np.empty(len(imgs), np.int64)
    for i, img in enumerate(imgs):
        blob = _encode(img[..., 0] if img.shape[-1] == 1 else img, fmt, quality)
        sizes[i], payload[i] = len(blob), payload_bytes(blob, fmt)
        out[i] = decode_image(blob, img.shape[-1])
    mean, std = mean_std(dataset)
    # The arithmetic of data.load_dataset, so that lossless decoding is exact in float too.
    x = torch.from_numpy(np.ascontiguousarray(out.transpose(0, 3, 1, 2)).astype(np.float32) / 255.0)
    return TensorDataset((x - mean) / std, data.tensors[1]), sizes, payload


@torch.no_grad()
def image_codec_baseline(model: SplitResNet18, data: TensorDataset, dataset: str, fmt: str,
                         quality: int | None = None) -> dict:
    """Code the input images instead of the features; the decoded images go to ``model``.

    Parameters
    ----------
    model : SplitResNet18
        The classifier, run uncompressed on the decoded images.
    data, dataset, fmt, quality
        As in ``code_images``.

    Returns
    -------
    dict
        ``accuracy``, ``accuracy_lo`` and ``accuracy_hi`` (95% Wilson interval),
        ``n_images``, ``bpp`` (8 x mean file bytes per input pixel, i.e. per H*W position),
        ``bpp_payload`` (the same of ``payload_bytes``), ``stream_bytes`` (mean file bytes per image), and ``correct`` (bool tensor ``[N]``,
        per image, for paired comparisons; not a results column).
    """
    decoded, sizes, payload = code_images_payload(data, dataset, fmt, quality)
    x, y = decoded.tensors
    correct = predict(model, x, fast=True) == y
    n, k = len(y), int(correct.sum())
    lo, hi = wilson_interval(k, n)
    stream_bytes = float(sizes.mean())
    return dict(accuracy=k / n, accuracy_lo=lo, accuracy_hi=hi, n_images=n,
                bpp=bpp(stream_bytes, tuple(x.shape[-2:])), stream_bytes=stream_bytes,
                bpp_payload=bpp(payload.mean(), tuple(x.shape[-2:])), correct=correct)


def codec_row(ev: dict, fmt: str, quality: int | None, **extra) -> dict:
    """One results row (``results.SCHEMA`` columns) from an ``image_codec_baseline`` result;
    ``extra`` adds columns (``dataset``, ``finetuned``, ``seed``, ...)."""
    return dict(method=fmt, quality=quality, **{k: v for k, v in ev.items() if k != "correct"}, **extra)
