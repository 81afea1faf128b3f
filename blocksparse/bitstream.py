"""The self-contained stream: header, code tables, positions, values; its parser and its rate."""
from __future__ import annotations

import binascii
import struct

import numpy as np
import torch
from bitarray import bitarray
from torch import Tensor

from .codec import (MODES, CodecConfig, analyze, from_bf16, levels_in_range, reconstruct, valid_pixels)
from .entropy import (POSITION_CODINGS, Reader, encode_positions, entropy_bits, huffman_encode,
                      huffman_lengths, table_bits, unpack_bits)


MAGIC, VERSION = b"BS", 1
MAX_ELEMENTS = 1 << 28  # a header claiming a larger tensor is rejected before allocating


def varint(v: int) -> bytes:
    """``v`` (>= 0) as an unsigned LEB128 varint, the shortest encoding."""
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
        v >>= 7
        if not v:
            return bytes(out)


def read_varints(data: bytes, what: str, count: int | None = None, pos: int = 0,
                 names: tuple[str, ...] | None = None) -> tuple[list[int], int]:
    """Read ``count`` LEB128 varints from ``data[pos:]`` (``None``: up to its end), the one reader of
    both file formats. Returns the numbers and the position after them. A truncated number, one
    over 63 bits or one not in its shortest encoding is a ValueError naming ``what`` (and the
    field, from ``names``)."""
    numbers, v, shift = [], 0, 0
    while count is None or len(numbers) < count:
        field = names[len(numbers)] if names else "number"
        if pos >= len(data):
            if shift or count is not None:
                raise ValueError(f"corrupted {what}: {field} is truncated")
            break
        byte = data[pos]
        pos += 1
        v, shift = v | (byte & 0x7F) << shift, shift + 7
        if shift > 63 or (byte == 0 and shift > 7):  # too long, or not the shortest encoding
            raise ValueError(f"corrupted {what}: {field} is invalid")
        if not byte & 0x80:
            numbers.append(v)
            v = shift = 0
    return numbers, pos


def encode(x: Tensor, cfg: CodecConfig) -> bytes:
    """Compress ``x`` [N, C, H, W] into a self-contained, versioned bitstream.

    Layout: ``b"BS"``, version, CRC-16 of the rest; flags (mode, bits, border, position
    coding, signed), block size, N, C, H, W, kept-position count (LEB128 varints);
    per-image bfloat16 scale (and offset, when values are negative); then a bit-packed
    body: code-length tables (values, positions), positions, values, zero padding.
    """
    a = analyze(x, cfg)
    n, c, h, w = a["shape"]
    posmask = a["mask"][:, :1] if cfg.mode == "region-wise" else a["mask"]
    flat = posmask.reshape(-1).numpy()
    coding, pos_table, pos_bits = encode_positions(flat)
    levels = a["levels"][a["valid"]].to(torch.uint8).numpy()
    lengths = huffman_lengths(np.bincount(levels, minlength=2 ** cfg.bits))
    val_table, val_bits = table_bits(lengths), huffman_encode(levels, lengths)
    signed = bool((a["offset"] != 0).any())
    flags = MODES.index(cfg.mode) | (cfg.bits - 1) << 2 | cfg.zero_border << 5 | coding << 6 | signed << 7
    head = bytes([flags]) + b"".join(varint(v) for v in (cfg.block_size, n, c, h, w, int(flat.sum())))
    head += a["scale"].numpy().astype("<u2").tobytes()
    if signed:
        head += a["offset"].numpy().astype("<u2").tobytes()
    body = (val_table + pos_table + pos_bits + val_bits).tobytes()
    rest = head + body
    return MAGIC + bytes([VERSION]) + struct.pack("<H", binascii.crc_hqx(rest, 0)) + rest


def _parse(blob: bytes) -> dict:
    """Read and check a whole stream; every failure is a ValueError."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise ValueError(f"blob must be bytes, got {type(blob).__name__}")
    blob = bytes(blob)
    if len(blob) < 6:
        raise ValueError(f"not a blocksparse stream: {len(blob)} bytes is too short")
    if blob[:2] != MAGIC:
        raise ValueError("not a blocksparse stream: bad magic")
    if blob[2] != VERSION:
        raise ValueError(f"unsupported stream version {blob[2]} (this decoder reads {VERSION})")
    if struct.unpack("<H", blob[3:5])[0] != binascii.crc_hqx(blob[5:], 0):
        raise ValueError("corrupted stream: checksum mismatch")
    pos = 5
    flags = blob[pos]
    pos += 1
    names = ("header field block_size", "header field N", "header field C", "header field H", "header field W",
             "header field kept")
    (bs, n, c, h, w, kept), pos = read_varints(blob, "stream", 6, pos, names)
    if flags & 3 == 3:
        raise ValueError("corrupted stream: header field mode is invalid")
    if min(bs, n, c, h, w) < 1 or bs > min(h, w):
        raise ValueError(f"corrupted stream: header shape {(n, c, h, w)} / block_size {bs} is invalid")
    if n * c * h * w > MAX_ELEMENTS or 2 * n > len(blob):
        raise ValueError(f"header claims shape {(n, c, h, w)}, too large for this stream")
    cfg = CodecConfig(bs, 1.0, MODES[flags & 3], (flags >> 2 & 7) + 1, bool(flags >> 5 & 1))
    coding, signed = flags >> 6 & 1, flags >> 7
    nbytes = 2 * n * (1 + signed)
    if pos + nbytes > len(blob):
        raise ValueError("corrupted stream: truncated scales")
    scale = torch.from_numpy(np.frombuffer(blob, "<u2", n, pos).astype(np.uint16))
    offset = (torch.from_numpy(np.frombuffer(blob, "<u2", n, pos + 2 * n).astype(np.uint16))
              if signed else torch.zeros(n, dtype=torch.uint16))
    pos += nbytes
    if not (torch.isfinite(from_bf16(scale)).all() and (from_bf16(scale) > 0).all()
            and torch.isfinite(from_bf16(offset)).all() and (from_bf16(offset) <= 0).all()
            and levels_in_range(scale.numpy(), offset.numpy(), 2 ** cfg.bits - 1).all()):
        raise ValueError("corrupted stream: invalid scale or offset")
    header_bits = 8 * pos
    body = bitarray()
    body.frombytes(blob[pos:])
    r = Reader(body)
    val_lengths = r.table(2 ** cfg.bits)
    pos_lengths = r.table(16 if coding else 64)
    tables_bits = r.pos
    hb, wb = -(-h // bs), -(-w // bs)
    cells = n * (1 if cfg.mode == "region-wise" else c) * hb * wb
    if kept > cells:
        raise ValueError(f"corrupted stream: {kept} kept blocks of {cells}")
    if coding == 0:
        cls = r.huffman(pos_lengths, kept)
        if len(cls) and cls.max() > cells.bit_length():  # a gap that large cannot fit (nor overflow)
            raise ValueError("corrupted stream: block position outside the map")
        mbits = np.maximum(cls - 1, 0)
        mant = unpack_bits(body[r.pos:], mbits)
        r.pos += int(mbits.sum())
        gaps = np.where(cls > 0, (1 << mbits) + mant.astype(np.int64), 0)
        idx = np.cumsum(gaps + 1) - 1
        if len(idx) and idx[-1] >= cells:
            raise ValueError("corrupted stream: block position outside the map")
        flat = np.zeros(cells, bool)
        flat[idx] = True
    else:
        nib = r.huffman(pos_lengths, -(-cells // 4))
        flat = ((nib[:, None] >> np.array([3, 2, 1, 0])) & 1).astype(bool).reshape(-1)
        if flat[cells:].any() or flat.sum() != kept:
            raise ValueError("corrupted stream: position bitmap is inconsistent")
        flat = flat[:cells]
    positions_bits = r.pos - tables_bits
    mask = torch.from_numpy(flat).view(n, -1, hb, wb).expand(n, c, hb, wb)
    where = mask.nonzero(as_tuple=True)
    valid = valid_pixels(h, w, bs, cfg.zero_border)[where[2], where[3]]
    levels = r.huffman(val_lengths, int(valid.sum()))
    values_bits = r.pos - tables_bits - positions_bits
    padding = len(body) - r.pos
    if padding >= 8 or body[r.pos:].any():
        raise ValueError("corrupted stream: unexpected data after the values")
    grid = torch.zeros(valid.shape).masked_scatter_(valid, torch.from_numpy(levels).float())
    return dict(cfg=cfg, shape=(n, c, h, w), block_size=bs, mask=mask, where=where, valid=valid,
                levels=grid, symbols=levels, scale=scale, offset=offset, coding=POSITION_CODINGS[coding],
                breakdown=dict(header=header_bits, tables=tables_bits, positions=positions_bits,
                               values=values_bits, padding=padding),
                position_symbols=cls if coding == 0 else nib,
                mantissa_bits=int(mbits.sum()) if coding == 0 else 0)


def inspect_stream(blob: bytes) -> dict:
    """Everything a stream holds, parsed and checked: ``cfg`` (ratio not stored), ``shape``,
    ``coding`` of positions, ``mask`` of kept blocks, value ``symbols``, ``position_symbols``,
    per-image ``scale``/``offset`` (bfloat16 patterns) and the ``breakdown`` in bits.

    Every check is explicit and raises ValueError naming what is wrong; no catch-all turns
    other errors into ValueError, so the fuzz tests see any failure the checks miss.
    """
    return _parse(blob)


def decode(blob: bytes) -> Tensor:
    """Decode a stream from ``encode`` to float32 [N, C, H, W].

    Raises ValueError for empty, truncated, corrupted or foreign bytes.
    """
    return reconstruct(_parse(blob))


# ---------------------------------------------------------------------------
# rate
# ---------------------------------------------------------------------------
def bpp(stream_bytes: float, input_hw: tuple[int, int], n_images: int = 1) -> float:
    """Bits per input pixel: ``8 * stream_bytes / (n_images * H * W)``, the one place the rate's unit is made.

    Parameters
    ----------
    stream_bytes : float
        Bytes of the streams of ``n_images`` images (a mean over images with ``n_images=1``;
        an estimate in bits is ``bits / 8``).
    input_hw : (int, int)
        Height and width of the network's input image (never the feature map's).
    n_images : int
        Images the bytes code.
    """
    hh, ww = input_hw
    if hh < 1 or ww < 1 or n_images < 1:
        raise ValueError(f"input_hw and n_images must be positive, got {input_hw} and {n_images}")
    return 8.0 * float(stream_bytes) / (n_images * hh * ww)


def rate(blob: bytes, input_hw: tuple[int, int]) -> dict:
    """Real rate of a stream, per input pixel.

    Parameters
    ----------
    blob : bytes
        A stream from ``encode``.
    input_hw : (int, int)
        Height and width of the network's input image.

    Returns
    -------
    dict
        ``bytes`` (= len(blob)); ``bpp`` = 8 * bytes / (N * H * W); ``breakdown``: bits of
        header, tables, positions, values and padding, summing to 8 * bytes;
        ``position_coding``; and ``estimates`` (labelled so, never a rate): the empirical
        entropy in bits of the value symbols and of the position symbols (plus raw mantissa
        bits for delta coding).
    """
    p = _parse(blob)
    hh, ww = input_hw
    if hh < 1 or ww < 1:
        raise ValueError(f"input_hw must be positive, got {input_hw}")
    n = p["shape"][0]
    return dict(bytes=len(blob), bpp=bpp(len(blob), input_hw, n), breakdown=p["breakdown"],
                position_coding=p["coding"], kept_values=len(p["symbols"]),
                estimates=dict(values_entropy_bits=entropy_bits(p["symbols"]),
                               positions_entropy_bits=entropy_bits(p["position_symbols"]) + p["mantissa_bits"]))

