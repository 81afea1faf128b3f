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
(raw mantissas as uniform symbols) on top of the initial state ``scale | offset << 16``. Two
fitted models exist for ANS only (``priors``): "prior" positions (kept-count deficit as for delta,
then Bernoulli bits of the cells in decreasing keep probability, 64 at a time, up to the chunk of
the last kept cell) and "per-channel" values (a table per channel and context, coded pixel slot
by pixel slot).

constriction emits 32-bit words. Two measures cut that granularity: dropping the zero high bytes
of the top word (restored as zeros when decoding; the top word is never zero) leaves byte
granularity, and starting the coder from the scale instead of an empty state stores the scale
in its own ~14 bits and removes the ~16-bit jump of the first symbol out of state 0.

Delta and prior positions carry the kept count, as the deficit ``kmax - kept`` (``kmax``: the most
blocks the config keeps per image); a bitmap implies it. The position and value models are
chosen once, at fit time, whichever costs least on held-out fitting images (every fifth). Counts
are smoothed, so symbols never seen while fitting still encode.

The code tables, their file and their fitting live in ``codetables``.
"""

from __future__ import annotations

import constriction
import numpy as np
import torch
from bitarray import bitarray
from torch import Tensor

from . import bitstream, priors
from .codec import CodecConfig, analyze, from_bf16_numpy, levels_in_range, reconstruct, valid_numpy
# the tables' names are re-exported: ``codebook`` is the amortized streams' one front
from .codetables import (CODERS, MAX_VALUE_TABLE, POSITION_MODELS, TABLES, VALUE_MODELS, VERSION, Codebook,  # noqa: F401
                         codebook_bytes, codebook_from_bytes, fit_codebook, geometry, load_codebook,  # noqa: F401
                         save_codebook, stream_fields, table_bits)  # noqa: F401
from .entropy import Reader, crc8, entropy_bits, pack_bits, unpack_bits  # noqa: F401 (crc8: the streams' check)

_ANS = constriction.stream.stack.AnsCoder
_UNIFORM = constriction.stream.model.Uniform()


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
    a = analyze(x, cb.cfg)
    n = a["shape"][0]
    fields = stream_fields(a, cb)
    top = np.zeros(n, np.int64)
    for table, img, sym, _, _ in fields:
        if table == "values":
            np.maximum.at(top, img, sym)
    scale, offset = (a[k].numpy() for k in ("scale", "offset"))
    if not levels_in_range(scale, offset, top).all():
        raise ValueError("x holds values too large to dequantize in float32")
    scale, offset = scale.astype(np.int64), offset.astype(np.int64)
    bodies = (_huffman_bodies if cb.coder == "huffman" else _ans_bodies)(fields, n, cb, scale, offset)
    return [bytes([crc8(body, cb.seed)]) + body for body in bodies]


def _huffman_bodies(fields: list, n: int, cb: Codebook, scale: np.ndarray, offset: np.ndarray) -> list[bytes]:
    imgs, codes, lengths = [], [], []
    for table, img, sym, widths, _ in fields:  # Huffman codebooks have no per-symbol models
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
    bounds = [np.searchsorted(img, np.arange(n + 1)) for _, img, _, _, _ in fields]
    out = []
    for i in range(n):
        coder = _ANS(np.array([scale[i] | offset[i] << 16], np.uint32))
        for (table, _, sym, widths, probs), b in zip(fields[::-1], bounds[::-1]):  # a stack: last field first
            s = slice(b[i], b[i + 1])
            if probs is not None:
                if b[i + 1] > b[i]:
                    coder.encode_reverse(sym[s].astype(np.int32), *_family(probs[s]))
            elif table is not None:
                coder.encode_reverse(sym[s].astype(np.int32), cb._models[table])
            else:
                keep = widths[s] > 0
                coder.encode_reverse(sym[s][keep].astype(np.int32), _UNIFORM, (1 << widths[s][keep]).astype(np.int32))
        out.append(coder.get_compressed().astype("<u4").tobytes().rstrip(b"\0"))  # the top word is nonzero
    return out


# ---------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------
_BERNOULLI = constriction.stream.model.Bernoulli(perfect=False)
_CATEGORICAL = constriction.stream.model.Categorical(perfect=False)


def _family(probs: np.ndarray) -> tuple:
    """constriction's model family and parameters for per-symbol probabilities: Bernoulli keep
    probabilities [n], or Categorical rows [n, L]."""
    probs = np.ascontiguousarray(probs, np.float64)
    return (_BERNOULLI, probs) if probs.ndim == 1 else (_CATEGORICAL, probs)


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

    def modelled(self, probs: np.ndarray) -> np.ndarray:
        """Symbols coded with per-symbol probabilities (``_family``)."""
        if not len(probs):
            return np.zeros(0, np.int64)
        return self.coder.decode(*_family(probs)).astype(np.int64)

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
    cells, kmax = geometry(cb.cfg, cb.shape)
    info = dict(positions=0.0, values=0.0)  # information content under the codebook's models
    if cb.position_coding in ("delta", "prior"):
        kept_cls = src.symbols("kept", 1)
        info["positions"] += float(table_bits(cb, "kept", kept_cls).sum() + max(int(kept_cls[0]) - 1, 0))
        deficit = int(_unclass(src, kept_cls)[0])
        if deficit > kmax:
            raise ValueError(f"corrupted stream: kept-count deficit {deficit} exceeds {kmax}")
    if cb.position_coding == "prior":
        flat, pos_symbols = _read_prior(src, cb, kmax - deficit, info)
        mantissa_bits = 0
    elif cb.position_coding == "delta":
        pos_symbols = src.symbols("positions", kmax - deficit)
        idx = np.cumsum(_unclass(src, pos_symbols) + 1) - 1  # classes < 25: no overflow
        if len(idx) and idx[-1] >= cells:
            raise ValueError("corrupted stream: block position outside the map")
        flat = np.zeros(cells, bool)
        flat[idx] = True
        mantissa_bits = int(np.maximum(pos_symbols - 1, 0).sum())
        info["positions"] += float(table_bits(cb, "positions", pos_symbols).sum()) + mantissa_bits
    else:
        pos_symbols = src.symbols("positions", -(-cells // 4))
        flat = ((pos_symbols[:, None] >> np.array([3, 2, 1, 0])) & 1).astype(bool).reshape(-1)
        if flat[cells:].any():
            raise ValueError("corrupted stream: position bitmap sets cells past the map")
        flat, mantissa_bits = flat[:cells], 0
        info["positions"] += float(table_bits(cb, "positions", pos_symbols).sum())
    positions_bits = src.used()
    hb, wb = -(-h // b), -(-w // b)
    mask = np.broadcast_to(flat.reshape(1, -1, hb, wb), (1, c, hb, wb))
    where = np.nonzero(mask)
    valid = valid_numpy(h, w, b, cb.cfg.zero_border)[where[2], where[3]]
    if cb.value_model == "global":
        levels = src.symbols("values", int(valid.sum()))
        info["values"] += float(table_bits(cb, "values", levels).sum())
        grid = np.zeros(valid.shape, np.float32)
        grid[valid] = levels
    else:
        grid, levels = _read_per_channel(src, cb, where[1], valid, info)
    return dict(shape=(1, c, h, w), block_size=b, mask=torch.from_numpy(mask.copy()),
                where=tuple(map(torch.from_numpy, where)), valid=torch.from_numpy(valid),
                levels=torch.from_numpy(grid),
                symbols=levels, position_symbols=pos_symbols, mantissa_bits=mantissa_bits,
                positions_bits=positions_bits, values_bits=src.used() - positions_bits, model_bits=info)


def _read_prior(src: _AnsSource, cb: Codebook, k: int, info: dict) -> tuple[np.ndarray, np.ndarray]:
    """Prior positions: ``priors.CHUNK`` cells at a time in the coding order until ``k`` are kept."""
    p, order = cb._prior
    flat, bits, found, start = np.zeros(len(p), bool), [], 0, 0
    while found < k:
        if start >= len(p):
            raise ValueError(f"corrupted stream: fewer kept cells than the {k} the stream announces")
        q = p[order[start:start + priors.CHUNK]]
        got = src.modelled(q)
        info["positions"] += float(-np.log2(np.where(got == 1, q, 1 - q)).sum())
        bits.append(got)
        found += int(got.sum())
        start += len(q)
    if found > k:
        raise ValueError(f"corrupted stream: more kept cells than the {k} the stream announces")
    bits = np.concatenate(bits) if bits else np.zeros(0, np.int64)
    flat[order[:len(bits)][bits == 1]] = True
    return flat, bits


def _read_per_channel(src: _AnsSource, cb: Codebook, channel: np.ndarray, valid: np.ndarray,
                      info: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel values, pixel slot by pixel slot, each slot's context from the earlier ones."""
    k = len(valid)
    va = valid.reshape(k, cb.cfg.block_size ** 2)
    lv = np.zeros(va.shape, np.int64)
    prev = np.full(k, -1)
    contexts = priors.value_contexts(cb.cfg.bits)
    for j in range(va.shape[1]):
        keep = va[:, j]
        ctx = np.where(prev < 0, 0, 1 + np.frexp(np.maximum(prev, 0).astype(np.float64))[1])
        probs = priors.value_probabilities(cb._value_counts, (channel * contexts + ctx)[keep])
        sym = src.modelled(probs)
        info["values"] += float(-np.log2(probs[np.arange(len(sym)), sym]).sum())
        lv[keep, j] = sym
        prev[keep] = np.maximum(prev[keep], sym)
    return lv.reshape(valid.shape).astype(np.float32), lv[va]


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
    s, o = float(from_bf16_numpy(sc)[0]), float(from_bf16_numpy(off)[0])
    if not (np.isfinite(s) and s > 0 and np.isfinite(o) and o <= 0):
        raise ValueError("corrupted stream: invalid scale or offset")
    if not levels_in_range(sc, off, np.array([p["symbols"].max(initial=0)])).all():
        raise ValueError("corrupted stream: scale too large for the levels")
    p["scale"], p["offset"] = torch.from_numpy(sc), torch.from_numpy(off)
    p["breakdown"] = dict(header=header, tables=0, positions=p["positions_bits"],
                          values=p["values_bits"] + extra, padding=padding)
    p["model_bits"] = dict(header=float(header), **p["model_bits"])
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
    return reconstruct(_parse(blob, codebook))


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
        ``bytes``, ``bpp``, ``breakdown`` (bits, summing to 8 * bytes); ``model_bits``, beside
        each section the information content of its symbols under the codebook's fitted models
        (what an ideal coder with these models spends: how far the real bits are from that
        limit; the header's is its real length); ``position_coding``, ``value_model``,
        ``kept_values``, ``estimates`` (empirical entropies, labelled so, never a rate).
    """
    if codebook is None:
        return bitstream.rate(blob, input_hw)
    if (not isinstance(input_hw, (tuple, list)) or len(input_hw) != 2
            or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in input_hw)):
        raise ValueError(f"input_hw must be two positive integers, got {input_hw!r}")
    p = _parse(blob, codebook)
    return dict(bytes=len(blob), bpp=bitstream.bpp(len(blob), input_hw), breakdown=p["breakdown"],
                model_bits=p["model_bits"], position_coding=codebook.position_coding,
                value_model=codebook.value_model, kept_values=len(p["symbols"]),
                estimates=dict(values_entropy_bits=entropy_bits(p["symbols"]),
                               positions_entropy_bits=entropy_bits(p["position_symbols"]) + p["mantissa_bits"]))
