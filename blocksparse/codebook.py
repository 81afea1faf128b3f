"""Amortized streams: code tables fitted once on training features, then per-image streams that
carry only what varies per image, coded with canonical Huffman (bitarray) or ANS (constriction).

Stream of one image, ``coder="huffman"``::

    byte 0      CRC-8 (``entropy.crc8``) of bytes 1.., register seeded with ``Codebook.seed``
    bytes 1-2   scale, bfloat16 pattern, little endian; its sign bit (always 0 for a scale)
                flags "an offset follows"
    bytes 3-4   offset, bfloat16 pattern, only when flagged (features with negative values)
    bits        delta positions: kept-count deficit class, its mantissa, gap classes, gap
                mantissas (raw) | bitmap positions: nibbles; then level codes; zero padding

Stream of one image, ``coder="ans"``: byte 0 the same CRC-8, then the constriction ``AnsCoder``
words (little endian) without the zero high bytes of the last word, holding the same symbols
(raw mantissas as uniform symbols) on top of the initial state ``scale | offset << 16``.

constriction emits 32-bit words. Two measures cut that granularity: dropping the zero high bytes
of the top word (restored as zeros when decoding; the top word is never zero) leaves byte
granularity, and starting the coder from the scale instead of an empty state stores the scale
in its own ~14 bits and removes the ~16-bit jump of the first symbol out of state 0.

Only delta positions carry the kept count, as the deficit ``kmax - kept`` (``kmax``: the most
blocks the config keeps per image); a bitmap implies it. Delta or bitmap is chosen once, at fit
time, whichever costs less on the fitting features. Counts are add-one smoothed, so symbols
never seen while fitting still encode.

Codebook file: ``b"BSCB"``, version, flags (mode | zero_border << 2 | coder << 3 | position coding
<< 4), bits, ratio (float64 LE); LEB128 varints: block_size, C, H, W, images fitted, then for the
tables values, positions, kept: alphabet size and one number per symbol (Huffman: code length;
ANS: frequency, summing to about 2**16); CRC-32 (LE) of everything before it.
"""
from __future__ import annotations

import binascii
import hashlib
import struct
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import constriction
import numpy as np
import torch
from bitarray import bitarray
from torch import Tensor

from . import bitstream
from .codec import MODES, CodecConfig, _analyze, _from_bf16_numpy, _reconstruct, _valid_numpy, kept_per_group
from .entropy import (POSITION_CODINGS, Reader, canonical_code, crc8, entropy_bits, huffman_lengths, pack_bits,
                      unpack_bits)

CODERS = ("huffman", "ans")
TABLES = ("values", "positions", "kept")
MAGIC, VERSION = b"BSCB", 1
_ANS_TOTAL = 1 << 16  # stored ANS frequencies sum to about this (each >= 1)
_ANS = constriction.stream.stack.AnsCoder
_UNIFORM = constriction.stream.model.Uniform()


def _geometry(cfg: CodecConfig, shape: tuple[int, int, int]) -> tuple[int, int]:
    """(position cells coded per image, most blocks the config keeps per image)."""
    c, h, w = shape
    grid = -(-h // cfg.block_size) * -(-w // cfg.block_size)
    if cfg.mode == "channel-wise":
        return c * grid, c * kept_per_group(cfg.ratio, grid)
    cells = grid if cfg.mode == "region-wise" else c * grid
    return cells, kept_per_group(cfg.ratio, cells)


def _alphabets(cfg: CodecConfig, shape: tuple[int, int, int], coding: str) -> dict:
    cells, kmax = _geometry(cfg, shape)
    delta = coding == "delta"
    return dict(values=2 ** cfg.bits, positions=cells.bit_length() + 1 if delta else 16,
                kept=kmax.bit_length() + 1 if delta else 0)


@dataclass(frozen=True, eq=False)
class Codebook:
    """Code tables for one CodecConfig and feature shape, validated when constructed.

    Parameters
    ----------
    cfg : CodecConfig
    shape : (int, int, int)
        Feature shape (C, H, W) of one image.
    coder : {"huffman", "ans"}
    position_coding : {"delta", "bitmap"}
    tables : dict of str to array of int
        For each of ``TABLES``, one number per symbol: Huffman code lengths (a complete
        prefix code) or ANS frequencies (>= 1). "kept" is empty with bitmap positions.
    n_fit : int
        Images the tables were fitted on (informative).
    """

    cfg: CodecConfig
    shape: tuple[int, int, int]
    coder: str
    position_coding: str
    tables: dict
    n_fit: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.cfg, CodecConfig):
            raise ValueError(f"cfg must be a CodecConfig, got {type(self.cfg).__name__}")
        shape = tuple(self.shape) if isinstance(self.shape, (tuple, list)) else ()
        if len(shape) != 3 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in shape):
            raise ValueError(f"shape must be three positive integers (C, H, W), got {self.shape!r}")
        c, h, w = shape = tuple(int(v) for v in shape)
        if self.cfg.block_size > min(h, w) or c * h * w > bitstream.MAX_ELEMENTS \
                or _geometry(self.cfg, shape)[0] >= 1 << 23:  # keeps ANS mantissas under 2**24
            raise ValueError(f"shape {shape} is too large or does not fit block_size {self.cfg.block_size}")
        for name, allowed in (("coder", CODERS), ("position_coding", POSITION_CODINGS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if isinstance(self.n_fit, bool) or not isinstance(self.n_fit, (int, np.integer)) or self.n_fit < 0:
            raise ValueError(f"n_fit must be a non-negative integer, got {self.n_fit!r}")
        if not isinstance(self.tables, dict) or set(self.tables) != set(TABLES):
            raise ValueError(f"tables must be a dict with keys {TABLES}")
        tables = {}
        for name, size in _alphabets(self.cfg, shape, self.position_coding).items():
            t = np.array(self.tables[name], dtype=np.int64)
            if t.shape != (size,):
                raise ValueError(f"tables[{name!r}] must hold {size} numbers, got shape {t.shape}")
            if size and self.coder == "huffman" and (t.min() < 1 or t.max() > 31 or
                                                    sum(1 << (31 - int(v)) for v in t) != 1 << 31):
                raise ValueError(f"tables[{name!r}] are not the code lengths of a complete prefix code")
            if size and self.coder == "ans" and (t.min() < 1 or t.max() > 1 << 24 or t.sum() > 1 << 24):
                raise ValueError(f"tables[{name!r}] must be frequencies >= 1 summing to at most 2**24")
            t.setflags(write=False)
            tables[name] = t
        for k, v in dict(shape=shape, tables=tables, n_fit=int(self.n_fit)).items():
            object.__setattr__(self, k, v)

    def to_bytes(self) -> bytes:
        """The codebook file (layout in the module docstring)."""
        cfg = self.cfg
        flags = (MODES.index(cfg.mode) | cfg.zero_border << 2 | CODERS.index(self.coder) << 3
                 | POSITION_CODINGS.index(self.position_coding) << 4)
        numbers = [cfg.block_size, *self.shape, self.n_fit]
        for name in TABLES:
            numbers += [len(self.tables[name]), *self.tables[name]]
        out = MAGIC + bytes([VERSION, flags, cfg.bits]) + struct.pack("<d", float(cfg.ratio))
        out += b"".join(bitstream._varint(int(v)) for v in numbers)
        return out + struct.pack("<I", binascii.crc32(out))

    @cached_property
    def seed(self) -> int:
        """CRC-8 seed of this codebook's streams: one byte of a hash of its file."""
        return hashlib.blake2b(self.to_bytes(), digest_size=1).digest()[0]

    @cached_property
    def _codes(self) -> dict:
        return {k: canonical_code(t)[0] for k, t in self.tables.items() if len(t) and self.coder == "huffman"}

    @cached_property
    def _models(self) -> dict:
        # Encoder and decoder build the model from the same stored integers, so they quantize alike.
        return {k: constriction.stream.model.Categorical(t / t.sum(), perfect=False)
                for k, t in self.tables.items() if len(t) and self.coder == "ans"}


def codebook_bytes(cb: Codebook) -> int:
    """Size in bytes of ``cb``'s file, the cost paid once for all its streams."""
    return len(cb.to_bytes())


def save_codebook(cb: Codebook, path: str | Path) -> int:
    """Write ``cb`` to ``path``; returns its size in bytes."""
    return Path(path).write_bytes(cb.to_bytes())


def codebook_from_bytes(data: bytes) -> Codebook:
    """Parse a codebook file; every failure is a ValueError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < 19 or data[:4] != MAGIC:
        raise ValueError("not a blocksparse codebook: bad magic or too short")
    if struct.unpack("<I", data[-4:])[0] != binascii.crc32(data[:-4]):
        raise ValueError("corrupted codebook: checksum mismatch")
    if data[4] != VERSION:
        raise ValueError(f"unsupported codebook version {data[4]} (this reader reads {VERSION})")
    flags, bits, ratio = data[5], data[6], struct.unpack("<d", data[7:15])[0]
    if flags & 3 == 3 or flags >> 5:
        raise ValueError(f"corrupted codebook: invalid flags {flags:#x}")
    numbers, v, shift = [], 0, 0
    for byte in data[15:-4]:
        v, shift = v | (byte & 0x7F) << shift, shift + 7
        if shift > 63 or (byte == 0 and shift > 7):  # too long, or not the shortest encoding
            raise ValueError("corrupted codebook: invalid number")
        if not byte & 0x80:
            numbers.append(v)
            v = shift = 0
    if shift or len(numbers) < 8:
        raise ValueError("corrupted codebook: truncated numbers")
    cfg = CodecConfig(numbers[0], ratio, MODES[flags & 3], bits, bool(flags >> 2 & 1))
    tables, pos = {}, 5
    for name in TABLES:
        size = numbers[pos] if pos < len(numbers) else -1
        if size < 0 or pos + 1 + size > len(numbers):
            raise ValueError(f"corrupted codebook: table {name} is truncated")
        tables[name], pos = numbers[pos + 1:pos + 1 + size], pos + 1 + size
    if pos != len(numbers):
        raise ValueError("corrupted codebook: unexpected numbers after the tables")
    return Codebook(cfg, tuple(numbers[1:4]), CODERS[flags >> 3 & 1], POSITION_CODINGS[flags >> 4 & 1],
                    tables, numbers[4])


def load_codebook(path: str | Path) -> Codebook:
    """Read a codebook written by ``save_codebook``; ValueError if it is not a valid one."""
    return codebook_from_bytes(Path(path).read_bytes())


# ---------------------------------------------------------------------------
# symbols of an analyzed batch, shared by fitting and encoding
# ---------------------------------------------------------------------------
def _classes(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-negative ints -> (bit length, mantissa, mantissa bits), the classes of ``gap_symbols``."""
    v = np.asarray(v, np.int64)
    cls = np.frexp(v.astype(np.float64))[1].astype(np.int64)  # exact bit length below 2**53
    mbits = np.maximum(cls - 1, 0)
    return cls, np.where(cls > 0, v - (1 << mbits), 0), mbits


def _fields(a: dict, cfg: CodecConfig, coding: str) -> list:
    """The fields of every image's stream, in stream order: (table, or None for raw bits;
    image of each entry, ascending; symbols or raw values; raw widths or None)."""
    n, c, h, w = a["shape"]
    cells, kmax = _geometry(cfg, (c, h, w))
    flat = (a["mask"][:, :1] if cfg.mode == "region-wise" else a["mask"]).reshape(n, -1).numpy()
    valid = a["valid"].numpy()
    values = ("values", np.repeat(a["where"][0].numpy(), valid.sum((1, 2))),
              a["levels"].numpy()[valid].astype(np.int64), None)
    if coding == "bitmap":
        nib = np.pad(flat, ((0, 0), (0, -cells % 4))).reshape(n, -1, 4) @ np.array([8, 4, 2, 1])
        return [("positions", np.repeat(np.arange(n), nib.shape[1]), nib.ravel(), None), values]
    img, cell = np.nonzero(flat)
    first = np.ones(len(img), bool)
    first[1:] = img[1:] != img[:-1]
    prev = np.empty_like(cell)
    prev[1:] = cell[:-1]
    cls, mant, mbits = _classes(cell - np.where(first, -1, prev) - 1)
    dcls, dmant, dmbits = _classes(kmax - flat.sum(1))
    return [("kept", np.arange(n), dcls, None), (None, np.arange(n), dmant, dmbits),
            ("positions", img, cls, None), (None, img, mant, mbits), values]


def fit_codebook(features: Tensor, cfg: CodecConfig, coder: str = "huffman",
                 position_coding: str | None = None, batch_size: int = 256) -> Codebook:
    """Fit the value and position code tables on training features.

    Parameters
    ----------
    features : Tensor
        Float features [N, C, H, W] of the fitting images; streams are then for (C, H, W).
    cfg : CodecConfig
    coder : {"huffman", "ans"}
    position_coding : {"delta", "bitmap"}, optional
        Default: whichever costs fewer bits on ``features`` with its fitted table.
    batch_size : int
        Images analyzed at a time (memory only; the result does not depend on it).
    """
    if not isinstance(cfg, CodecConfig):
        raise ValueError(f"cfg must be a CodecConfig, got {type(cfg).__name__}")
    if coder not in CODERS:
        raise ValueError(f"coder must be one of {CODERS}, got {coder!r}")
    if position_coding not in (None, *POSITION_CODINGS):
        raise ValueError(f"position_coding must be None or one of {POSITION_CODINGS}, got {position_coding!r}")
    if not isinstance(features, Tensor) or features.ndim != 4 or len(features) < 1:
        raise ValueError("features must be a 4-D tensor [N, C, H, W] with N >= 1")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    shape = tuple(features.shape[1:])
    counts = {cd: {k: np.zeros(s, np.int64) for k, s in _alphabets(cfg, shape, cd).items()}
              for cd in POSITION_CODINGS}
    raw = dict.fromkeys(POSITION_CODINGS, 0)
    for chunk in features.split(batch_size):
        a = _analyze(chunk, cfg)
        for cd in POSITION_CODINGS:
            for table, _, sym, widths in _fields(a, cfg, cd):
                if table is None:
                    raw[cd] += int(widths.sum())
                else:
                    counts[cd][table] += np.bincount(sym, minlength=len(counts[cd][table]))
    tables = {cd: {k: _weights(v + 1, coder) for k, v in counts[cd].items()} for cd in POSITION_CODINGS}
    cost = {cd: raw[cd] + sum(_cost(counts[cd][k], tables[cd][k], coder) for k in ("positions", "kept"))
            for cd in POSITION_CODINGS}
    cd = position_coding or min(POSITION_CODINGS, key=cost.get)
    return Codebook(cfg, shape, coder, cd, tables[cd], len(features))


def _weights(counts: np.ndarray, coder: str) -> np.ndarray:
    if coder == "huffman":
        return huffman_lengths(counts)
    total = max(1, int(counts.sum()))
    return np.maximum(1, (counts * _ANS_TOTAL + total // 2) // total)


def _cost(counts: np.ndarray, weights: np.ndarray, coder: str) -> float:
    if not len(weights):
        return 0.0
    bits = weights if coder == "huffman" else -np.log2(weights / weights.sum())
    return float((counts * bits).sum())


# ---------------------------------------------------------------------------
# encoding
# ---------------------------------------------------------------------------
def encode_batch(x: Tensor, cb: Codebook) -> list[bytes]:
    """One amortized stream per image of ``x`` [N, C, H, W], analyzed as one batch.

    Stream i decodes (``decode(blob, cb)``) to exactly ``compress(x[i:i+1], cb.cfg)``.
    """
    if not isinstance(cb, Codebook):
        raise ValueError(f"cb must be a Codebook, got {type(cb).__name__}")
    if not isinstance(x, Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != cb.shape:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor [N, {', '.join(map(str, cb.shape))}] for this codebook, got {got}")
    a = _analyze(x, cb.cfg)
    n = a["shape"][0]
    fields = _fields(a, cb.cfg, cb.position_coding)
    top = np.zeros(n, np.int64)
    np.maximum.at(top, fields[-1][1], fields[-1][2])
    scale, offset = (a[k].numpy() for k in ("scale", "offset"))
    if not _in_range(scale, offset, top).all():
        raise ValueError("x holds values too large to dequantize in float32")
    scale, offset = scale.astype(np.int64), offset.astype(np.int64)
    bodies = (_huffman_bodies if cb.coder == "huffman" else _ans_bodies)(fields, n, cb, scale, offset)
    return [bytes([crc8(body, cb.seed)]) + body for body in bodies]


def _in_range(scale: np.ndarray, offset: np.ndarray, top: np.ndarray) -> np.ndarray:
    """Whether each image's largest level dequantizes to a finite float32 (bf16 patterns, levels)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.isfinite(_from_bf16_numpy(offset) + top.astype(np.float32) * _from_bf16_numpy(scale))


def _huffman_bodies(fields: list, n: int, cb: Codebook, scale: np.ndarray, offset: np.ndarray) -> list[bytes]:
    imgs, codes, lengths = [], [], []
    for table, img, sym, widths in fields:
        imgs.append(img)
        codes.append(sym.astype(np.uint64) if table is None else cb._codes[table][sym])
        lengths.append(widths if table is None else cb.tables[table][sym])
    nbits = np.bincount(np.concatenate(imgs), np.concatenate(lengths), minlength=n).astype(np.int64)
    imgs.append(np.arange(n))  # zero padding to a whole byte, last in each image
    codes.append(np.zeros(n, np.uint64))
    lengths.append(-nbits % 8)
    order = np.argsort(np.concatenate(imgs), kind="stable")  # stable: fields stay in stream order
    packed = pack_bits(np.concatenate(codes).astype(np.uint64)[order],
                       np.concatenate(lengths).astype(np.uint64)[order]).tobytes()
    bounds = np.concatenate([[0], np.cumsum(-(-nbits // 8))])
    out = []
    for i in range(n):
        head = int(scale[i] | (offset[i] != 0) << 15).to_bytes(2, "little")  # scale > 0: sign bit is free
        head += int(offset[i]).to_bytes(2, "little") if offset[i] else b""
        out.append(head + packed[bounds[i]:bounds[i + 1]])
    return out


def _ans_bodies(fields: list, n: int, cb: Codebook, scale: np.ndarray, offset: np.ndarray) -> list[bytes]:
    bounds = [np.searchsorted(img, np.arange(n + 1)) for _, img, _, _ in fields]
    out = []
    for i in range(n):
        coder = _ANS(np.array([scale[i] | offset[i] << 16], np.uint32))
        for (table, _, sym, widths), b in zip(fields[::-1], bounds[::-1]):  # a stack: last field first
            s = slice(b[i], b[i + 1])
            if table is not None:
                coder.encode_reverse(sym[s].astype(np.int32), cb._models[table])
            else:
                keep = widths[s] > 0
                coder.encode_reverse(sym[s][keep].astype(np.int32), _UNIFORM, (1 << widths[s][keep]).astype(np.int32))
        out.append(coder.get_compressed().astype("<u4").tobytes().rstrip(b"\0"))  # the top word is nonzero
    return out


# ---------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------
class _HuffmanSource:
    """Symbols and raw fields of a Huffman body, in stream order; ``used`` counts bits read."""

    def __init__(self, body: bytes, cb: Codebook):
        bits = bitarray()
        bits.frombytes(body)
        self.r, self.tables = Reader(bits), cb.tables

    def symbols(self, table: str, n: int) -> np.ndarray:
        return self.r.huffman(self.tables[table], n)

    def raw(self, widths: np.ndarray) -> np.ndarray:
        v = unpack_bits(self.r.a[self.r.pos:], widths)
        self.r.pos += int(widths.sum())
        return v.astype(np.int64)

    def used(self) -> int:
        return self.r.pos


class _AnsSource:
    """Symbols and raw fields of an ANS body, popped in stream order; ``used`` counts bits read."""

    def __init__(self, body: bytes, cb: Codebook):
        if not body or body[-1] == 0:  # the encoder never writes a zero top byte
            raise ValueError("corrupted stream: ANS data is empty or ends in a zero byte")
        self.coder = _ANS(np.frombuffer(body + bytes(-len(body) % 4), "<u4").astype(np.uint32))
        self.models, self.total = cb._models, self.coder.num_valid_bits()

    def symbols(self, table: str, n: int) -> np.ndarray:
        return self.coder.decode(self.models[table], n).astype(np.int64)

    def raw(self, widths: np.ndarray) -> np.ndarray:
        out, keep = np.zeros(len(widths), np.int64), widths > 0
        if keep.any():
            out[keep] = self.coder.decode(_UNIFORM, (1 << widths[keep]).astype(np.int32))
        return out

    def used(self) -> int:
        return self.total - self.coder.num_valid_bits()


def _unclass(src: _HuffmanSource | _AnsSource, cls: np.ndarray) -> np.ndarray:
    mbits = np.maximum(cls - 1, 0)
    return np.where(cls > 0, (1 << mbits) + src.raw(mbits), 0)


def _read(src: _HuffmanSource | _AnsSource, cb: Codebook) -> dict:
    """Positions and levels of one image; no count exceeds what the codebook's shape allows."""
    (c, h, w), b = cb.shape, cb.cfg.block_size
    cells, kmax = _geometry(cb.cfg, cb.shape)
    if cb.position_coding == "delta":
        deficit = int(_unclass(src, src.symbols("kept", 1))[0])
        if deficit > kmax:
            raise ValueError(f"corrupted stream: kept-count deficit {deficit} exceeds {kmax}")
        pos_symbols = src.symbols("positions", kmax - deficit)
        idx = np.cumsum(_unclass(src, pos_symbols) + 1) - 1  # classes < 25: no overflow
        if len(idx) and idx[-1] >= cells:
            raise ValueError("corrupted stream: block position outside the map")
        flat = np.zeros(cells, bool)
        flat[idx] = True
        mantissa_bits = int(np.maximum(pos_symbols - 1, 0).sum())
    else:
        pos_symbols = src.symbols("positions", -(-cells // 4))
        flat = ((pos_symbols[:, None] >> np.array([3, 2, 1, 0])) & 1).astype(bool).reshape(-1)
        if flat[cells:].any():
            raise ValueError("corrupted stream: position bitmap sets cells past the map")
        flat, mantissa_bits = flat[:cells], 0
    positions_bits = src.used()
    hb, wb = -(-h // b), -(-w // b)
    mask = np.broadcast_to(flat.reshape(1, -1, hb, wb), (1, c, hb, wb))
    where = np.nonzero(mask)
    valid = _valid_numpy(h, w, b, cb.cfg.zero_border)[where[2], where[3]]
    levels = src.symbols("values", int(valid.sum()))
    grid = np.zeros(valid.shape, np.float32)
    grid[valid] = levels
    return dict(shape=(1, c, h, w), block_size=b, mask=torch.from_numpy(mask.copy()),
                where=tuple(map(torch.from_numpy, where)), valid=torch.from_numpy(valid),
                levels=torch.from_numpy(grid),
                symbols=levels, position_symbols=pos_symbols, mantissa_bits=mantissa_bits,
                positions_bits=positions_bits, values_bits=src.used() - positions_bits)


def _parse(blob: bytes, cb: Codebook) -> dict:
    """Read and check one amortized stream; every failure is an explicit ValueError."""
    if not isinstance(cb, Codebook):
        raise ValueError(f"codebook must be a Codebook, got {type(cb).__name__}")
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise ValueError(f"blob must be bytes, got {type(blob).__name__}")
    blob = bytes(blob)
    if len(blob) < 2:
        raise ValueError(f"not an amortized stream: {len(blob)} bytes is too short")
    if crc8(blob[1:], cb.seed) != blob[0]:
        raise ValueError("checksum mismatch: corrupted stream, or a stream of another codebook")
    if cb.coder == "huffman":
        word = int.from_bytes(blob[1:3], "little")
        start = 3 + 2 * (word >> 15)
        if len(blob) < start:
            raise ValueError("corrupted stream: truncated scale or offset")
        scale, offset = word & 0x7FFF, int.from_bytes(blob[3:start], "little")
        if word >> 15 and not offset:
            raise ValueError("corrupted stream: offset flag set but offset is zero")
        src = _HuffmanSource(blob[start:], cb)
        p = _read(src, cb)
        header, extra, padding = 24, 8 * (start - 3), len(src.r.a) - src.r.pos
        if padding >= 8 or src.r.a[src.r.pos:].any():
            raise ValueError("corrupted stream: unexpected data after the values")
    else:
        src = _AnsSource(blob[1:], cb)
        p = _read(src, cb)
        rest, left = src.coder.num_valid_bits(), src.coder.get_compressed()
        if len(left) != 1:  # all that is left must be the initial state, scale | offset << 16
            raise ValueError("corrupted stream: unexpected data after the values")
        scale, offset = int(left[0]) & 0xFFFF, int(left[0]) >> 16
        header, extra, padding = 8 + min(rest, 16), max(rest - 16, 0), 8 * (len(blob) - 1) - src.total
    sc, off = np.array([scale], np.uint16), np.array([offset], np.uint16)
    s, o = float(_from_bf16_numpy(sc)[0]), float(_from_bf16_numpy(off)[0])
    if not (np.isfinite(s) and s > 0 and np.isfinite(o) and o <= 0):
        raise ValueError("corrupted stream: invalid scale or offset")
    if not _in_range(sc, off, np.array([p["symbols"].max(initial=0)])).all():
        raise ValueError("corrupted stream: scale too large for the levels")
    p["scale"], p["offset"] = torch.from_numpy(sc), torch.from_numpy(off)
    p["breakdown"] = dict(header=header, tables=0, positions=p["positions_bits"],
                          values=p["values_bits"] + extra, padding=padding)
    return p


# ---------------------------------------------------------------------------
# front: self-contained streams for a CodecConfig, amortized ones for a Codebook
# ---------------------------------------------------------------------------
def encode(x: Tensor, cfg_or_cb: CodecConfig | Codebook) -> bytes:
    """Compress ``x`` [N, C, H, W] into one stream.

    With a CodecConfig, the self-contained stream of ``bitstream.encode`` (any N); with a
    Codebook, the amortized stream of one image (N must be 1: ``encode_batch`` gives one
    stream per image of a batch).
    """
    if isinstance(cfg_or_cb, CodecConfig):
        return bitstream.encode(x, cfg_or_cb)
    if not isinstance(cfg_or_cb, Codebook):
        raise ValueError(f"cfg_or_cb must be a CodecConfig or a Codebook, got {type(cfg_or_cb).__name__}")
    if isinstance(x, Tensor) and x.ndim == 4 and len(x) != 1:
        raise ValueError(f"x must hold one image (N == 1) for an amortized stream, got N={len(x)}; "
                         "encode_batch gives one stream per image")
    return encode_batch(x, cfg_or_cb)[0]


def decode(blob: bytes, codebook: Codebook | None = None) -> Tensor:
    """Decode a stream to float32 [N, C, H, W], exactly ``compress(x, cfg)`` of the encoder.

    Without ``codebook``, a self-contained stream; with one, an amortized stream of one
    image. Empty, truncated, corrupted or foreign bytes raise ValueError, and so does a
    stream of another codebook whenever the two seeds differ (255 times in 256).
    """
    if codebook is None:
        return bitstream.decode(blob)
    return _reconstruct(_parse(blob, codebook))


def rate(blob: bytes, input_hw: tuple[int, int], codebook: Codebook | None = None) -> dict:
    """Real rate of a stream, per input pixel, with the keys of ``bitstream.rate``.

    Parameters
    ----------
    blob : bytes
    input_hw : (int, int)
        Height and width of the network's input image.
    codebook : Codebook, optional
        For amortized streams; ``breakdown`` then has ``tables`` = 0 (the codebook is paid
        once), ``header`` = CRC and scale, an offset in ``values``, the kept count in ``positions``.

    Returns
    -------
    dict
        ``bytes``, ``bpp``, ``breakdown`` (bits, summing to 8 * bytes), ``position_coding``,
        ``kept_values``, ``estimates`` (empirical entropies, labelled so, never a rate).
    """
    if codebook is None:
        return bitstream.rate(blob, input_hw)
    if (not isinstance(input_hw, (tuple, list)) or len(input_hw) != 2
            or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in input_hw)):
        raise ValueError(f"input_hw must be two positive integers, got {input_hw!r}")
    p = _parse(blob, codebook)
    return dict(bytes=len(blob), bpp=8 * len(blob) / (input_hw[0] * input_hw[1]), breakdown=p["breakdown"],
                position_coding=codebook.position_coding, kept_values=len(p["symbols"]),
                estimates=dict(values_entropy_bits=entropy_bits(p["symbols"]),
                               positions_entropy_bits=entropy_bits(p["position_symbols"]) + p["mantissa_bits"]))
