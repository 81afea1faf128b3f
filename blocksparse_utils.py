"""Block-sparse compression of CNN feature maps: codec, model, data, training, study.

Sections follow the data: partition -> energy -> select -> quantize -> entropy-code ->
bitstream -> rate -> model -> data -> training -> evaluation -> study -> plots -> widgets -> CLI.
"""
from __future__ import annotations

import argparse
import binascii
import functools
import gzip
import hashlib
import io
import itertools
import json
import math
import os
import pickle
import random
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from bitarray import bitarray
from bitarray.util import ba2int, canonical_decode, canonical_huffman, int2ba
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parent
DATA_DIR = ROOT / "data"
# tests point these elsewhere so that executing notebooks never overwrites real results
RESULTS_DIR = Path(os.environ.get("BSU_RESULTS_DIR", DATA_DIR / "results"))
FIGURES_DIR = Path(os.environ.get("BSU_FIGURES_DIR", ROOT / "figures"))


def set_seed(seed: int = 0) -> None:
    """Seed ``random``, numpy and torch (CPU and CUDA).

    What stays nondeterministic: multi-threaded CPU reductions and CUDA kernels may sum
    in a different order from run to run, so trained weights can differ in the last bits;
    the codec itself is deterministic.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
# ---------------------------------------------------------------------------
# configuration and input checks
# ---------------------------------------------------------------------------
MODES = ("channel-wise", "region-wise", "global")
RATIOS = [1.0, 0.5, 0.3, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002]  # the study's default grid


@dataclass(frozen=True)
class CodecConfig:
    """Codec parameters, validated when constructed.

    Parameters
    ----------
    block_size : int
        Side B of the square BxB blocks (>= 1; 1 is plain element sparsity).
    ratio : float
        Fraction of blocks kept per group, 0 < ratio <= 1.
    mode : {"channel-wise", "region-wise", "global"}
        Selection group: each channel of an image; block positions of an image, kept in
        all channels at once; or all blocks of an image.
    bits : int
        Uniform quantization depth of kept values, 1..8.
    zero_border : bool
        Zero the one-pixel border of each map before anything else (the original method).
    """

    block_size: int = 4
    ratio: float = 0.1
    mode: str = "channel-wise"
    bits: int = 4
    zero_border: bool = True

    def __post_init__(self) -> None:
        _check_block_size(self.block_size)
        _check_ratio(self.ratio)
        _check_mode(self.mode)
        if isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer)) or not 1 <= self.bits <= 8:
            raise ValueError(f"bits must be an integer in 1..8, got {self.bits!r}")
        if not isinstance(self.zero_border, (bool, np.bool_)):
            raise ValueError(f"zero_border must be a bool, got {self.zero_border!r}")


def _check_block_size(block_size: int) -> None:
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ValueError(f"block_size must be an integer >= 1, got {block_size!r}")


def _check_ratio(ratio: float) -> None:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.floating, np.integer)) \
            or not 0 < ratio <= 1:  # also False for NaN
        raise ValueError(f"ratio must be a number in (0, 1], got {ratio!r}")


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _check_features(x: Tensor, block_size: int) -> Tensor:
    if not isinstance(x, Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"x must be 4-D [N, C, H, W], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"x must be floating point, got dtype {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"x is empty, shape {tuple(x.shape)}")
    lo, hi = torch.aminmax(x.detach())  # NaN and Inf show up in the extremes
    if not (torch.isfinite(lo) and torch.isfinite(hi)):
        raise ValueError("x holds NaN or Inf")
    _check_block_size(block_size)
    if block_size > min(x.shape[-2:]):
        raise ValueError(f"block_size {block_size} is larger than the {x.shape[-2]}x{x.shape[-1]} map")
    return x.detach().float().cpu().contiguous()


# ---------------------------------------------------------------------------
# partition and energy
# ---------------------------------------------------------------------------
def _interior(h: int, w: int, zero_border: bool) -> Tensor:
    m = torch.ones(h, w, dtype=torch.bool)
    if zero_border:
        m[0], m[-1], m[:, 0], m[:, -1] = False, False, False, False
    return m


def partition(x: Tensor, block_size: int, zero_border: bool = True) -> Tensor:
    """Cut ``x`` [N, C, H, W] into blocks [N, C, Hb, Wb, B, B].

    The one-pixel border is zeroed first (if ``zero_border``), then H and W are padded
    with zeros at the bottom and right up to multiples of ``block_size``.
    """
    x = _check_features(x, block_size)
    n, c, h, w = x.shape
    b = block_size
    hb, wb = -(-h // b), -(-w // b)
    xp = F.pad(x * _interior(h, w, zero_border), (0, wb * b - w, 0, hb * b - h))
    return xp.view(n, c, hb, b, wb, b).permute(0, 1, 2, 4, 3, 5)


def block_energy(x: Tensor, block_size: int, zero_border: bool = True) -> Tensor:
    """Sum of squares of each block, [N, C, Hb, Wb] (float32).

    Summed in a fixed order (columns within a row, then rows), so an image's energies
    do not depend on the batch it is in.
    """
    return _energy(_check_features(x, block_size), block_size, zero_border)


def _energy(x: Tensor, b: int, zero_border: bool) -> Tensor:
    n, c, h, w = x.shape
    per = max(1, (1 << 22) // (c * h * w))
    if n > per:  # chunks under glibc's mmap threshold reuse memory instead of page-faulting
        return torch.cat([_energy(xc, b, zero_border) for xc in x.split(per)])
    hb, wb = -(-h // b), -(-w // b)
    if (hb * b, wb * b) != (h, w):
        x = F.pad(x, (0, wb * b - w, 0, hb * b - h))
    rows = x.view(n, c, hb, b, wb * b)
    acc = None
    for i in range(b):  # rows of each block first: contiguous, vectorizes
        sq = rows[:, :, :, i] * rows[:, :, :, i]
        if zero_border:
            sq[..., 0], sq[..., w - 1] = 0, 0
            if i == 0:
                sq[:, :, 0] = 0
            if i == (h - 1) % b:
                sq[:, :, (h - 1) // b] = 0
        acc = sq if acc is None else acc.add_(sq)
    return functools.reduce(torch.add, acc.view(n, c, hb, wb, b).unbind(-1))


# ---------------------------------------------------------------------------
# selection
# ---------------------------------------------------------------------------
def kept_per_group(ratio: float, group_size: int) -> int:
    """k = max(1, floor(ratio * group_size)); the 1e-9 keeps 0.3 * 10 from flooring to 2."""
    return max(1, math.floor(ratio * group_size + 1e-9))


def select_blocks(energy: Tensor, ratio: float, mode: str) -> Tensor:
    """Mask of kept blocks, bool [N, C, Hb, Wb].

    In each group (see ``CodecConfig.mode``) the k strongest blocks are kept,
    k = ``kept_per_group(ratio, group size)``; ties go to the lower index (row-major
    channel, row, column), and blocks of exactly zero energy are dropped.
    """
    _check_ratio(ratio)
    _check_mode(mode)
    if not isinstance(energy, Tensor) or energy.ndim != 4:
        raise ValueError("energy must be a 4-D tensor [N, C, Hb, Wb]")
    n, c, hb, wb = energy.shape
    if mode == "channel-wise":
        g = energy.reshape(n * c, hb * wb)
    elif mode == "global":
        g = energy.reshape(n, c * hb * wb)
    else:  # region-wise: a position's energy summed over channels, in a fixed order
        g = functools.reduce(torch.add, energy.unbind(1)).reshape(n, hb * wb)
    k = kept_per_group(ratio, g.shape[1])
    thr = torch.topk(g, k, dim=1).values[:, -1:]
    keep = g >= thr
    over = (keep.sum(1) > k).nonzero().view(-1)
    if len(over):  # ties at the threshold: the lowest indices win
        go, to = g[over], thr[over]
        above, tie = go > to, go == to
        keep[over] = above | (tie & (tie.cumsum(1) <= k - above.sum(1, keepdim=True)))
    keep &= g > 0
    if mode == "region-wise":
        return keep.view(n, 1, hb, wb).expand(n, c, hb, wb)
    return keep.view(n, c, hb, wb)


def pixel_mask(mask: Tensor, h: int, w: int, block_size: int, zero_border: bool = True) -> Tensor:
    """Block mask [N, C, Hb, Wb] -> mask of coded values [N, C, H, W].

    Padding and (if ``zero_border``) border pixels are never coded: the decoder knows
    they are zero.
    """
    n, c, hb, wb = mask.shape
    b = block_size
    full = mask[:, :, :, None, :, None].expand(n, c, hb, b, wb, b).reshape(n, c, hb * b, wb * b)
    return full[:, :, :h, :w] & _interior(h, w, zero_border)


def _valid_pixels(h: int, w: int, b: int, zero_border: bool) -> Tensor:
    """Which pixels of each block are coded, bool [Hb, Wb, B, B] (not padding, not border)."""
    hb, wb = -(-h // b), -(-w // b)
    v = F.pad(_interior(h, w, zero_border), (0, wb * b - w, 0, hb * b - h))
    return v.view(hb, b, wb, b).permute(0, 2, 1, 3)


def _block_view(x: Tensor, b: int) -> Tensor:
    """[N, C, Hb*B, Wb*B] -> [N, C, Hb, Wb, B, B], a view sharing ``x``'s memory."""
    n, c, hp, wp = x.shape
    return x.view(n, c, hp // b, b, wp // b, b).permute(0, 1, 2, 4, 3, 5)


# ---------------------------------------------------------------------------
# quantization
# ---------------------------------------------------------------------------
def _bf16_away(v: Tensor) -> Tensor:
    """Round float32 away from zero to a bfloat16 value, returned as its 16-bit pattern.

    Rounding away from zero only widens the quantizer's range, so every kept value
    stays inside it and the error stays within half a step.
    """
    u = v.float().contiguous().numpy().view(np.uint32).astype(np.int64)
    return torch.from_numpy(((u >> 16) + ((u & 0xFFFF) != 0)).astype(np.uint16))


def _from_bf16(pattern: Tensor) -> Tensor:
    return torch.from_numpy((pattern.numpy().astype(np.uint32) << 16).view(np.float32))


def quantization_params(blocks: Tensor, valid: Tensor, image: Tensor, n: int,
                        bits: int) -> tuple[Tensor, Tensor]:
    """Per-image ``(scale, offset)`` as bfloat16 bit patterns (2 bytes each in the stream).

    ``blocks`` [K, B, B] are the kept blocks, ``valid`` their coded pixels, ``image`` the
    image each belongs to. offset = min(0, smallest kept value): 0 for ReLU features,
    so zero stays exact.
    """
    inf = torch.tensor(float("inf"))
    hi = torch.where(valid, blocks, -inf).amax((1, 2)) if len(blocks) else torch.zeros(0)
    lo = torch.where(valid, blocks, inf).amin((1, 2)) if len(blocks) else torch.zeros(0)
    hi = torch.zeros(n).scatter_reduce(0, image, hi, "amax", include_self=True)
    lo = torch.zeros(n).scatter_reduce(0, image, lo, "amin", include_self=True)
    offset = _bf16_away(lo)
    span = hi - _from_bf16(offset)
    scale = _bf16_away(torch.where(span > 0, span / (2 ** bits - 1), torch.ones(n)))
    if not torch.isfinite(_from_bf16(scale)).all():
        raise ValueError("x holds values too large to quantize (above ~3e38)")
    return scale, offset


def quantize(values: Tensor, bits: int, scale: Tensor, offset: Tensor) -> Tensor:
    """Levels 0..2**bits-1 of ``values`` (``scale``/``offset`` broadcast, float32)."""
    return torch.clamp(torch.round((values - offset) / scale), 0, 2 ** bits - 1)


def dequantize(levels: Tensor, scale: Tensor, offset: Tensor) -> Tensor:
    """Values that the decoder returns for ``levels``."""
    return offset + levels * scale


def _reconstruct(a: dict) -> Tensor:
    """Shared by ``compress`` and ``decode`` so both return bit-identical tensors."""
    n, c, h, w = a["shape"]
    b = a["block_size"]
    hb, wb = a["mask"].shape[-2:]
    img = a["where"][0]
    s, o = (_from_bf16(a[k])[img].view(-1, 1, 1) for k in ("scale", "offset"))
    kept = torch.where(a["valid"], dequantize(a["levels"], s, o), 0.0)
    out = torch.zeros(n, c, hb * b, wb * b)
    _block_view(out, b)[a["where"]] = kept
    return out if (hb * b, wb * b) == (h, w) else out[:, :, :h, :w].contiguous()


def _analyze(x: Tensor, cfg: CodecConfig) -> dict:
    """Everything the encoder decides, without entropy coding."""
    if not isinstance(cfg, CodecConfig):
        raise ValueError(f"cfg must be a CodecConfig, got {type(cfg).__name__}")
    x = _check_features(x, cfg.block_size)
    n, c, h, w = x.shape
    b = cfg.block_size
    mask = select_blocks(_energy(x, b, cfg.zero_border), cfg.ratio, cfg.mode)
    where = mask.nonzero(as_tuple=True)  # kept blocks in row-major order
    hb, wb = mask.shape[-2:]
    xp = x if (hb * b, wb * b) == (h, w) else F.pad(x, (0, wb * b - w, 0, hb * b - h))
    blocks = _block_view(xp, b)[where]
    valid = _valid_pixels(h, w, b, cfg.zero_border)[where[2], where[3]]
    scale, offset = quantization_params(blocks, valid, where[0], n, cfg.bits)
    s, o = (_from_bf16(t)[where[0]].view(-1, 1, 1) for t in (scale, offset))
    return dict(shape=(n, c, h, w), block_size=b, mask=mask, where=where, valid=valid,
                levels=quantize(blocks, cfg.bits, s, o), scale=scale, offset=offset)


def compress(x: Tensor, cfg: CodecConfig) -> Tensor:
    """The tensor ``decode(encode(x, cfg))`` returns, computed without entropy coding.

    Float32 [N, C, H, W]; each image is compressed on its own (own selection, own
    scale), so the result for an image does not depend on the rest of the batch.
    """
    return _reconstruct(_analyze(x, cfg))


def compress_ste(x: Tensor, cfg: CodecConfig) -> Tensor:
    """``compress`` in the forward pass, trainable through a straight-through estimator.

    The gradient passes unchanged through the quantizer and is zero on dropped blocks
    (the mask is treated as a constant), so training sees exactly the decoder's output.
    """
    with torch.no_grad():
        a = _analyze(x, cfg)
        y = _reconstruct(a)
        n, c, h, w = a["shape"]
        pm = pixel_mask(a["mask"], h, w, cfg.block_size, cfg.zero_border)
    kept = x * pm.to(x.device, x.dtype)
    return kept + (y.to(x.device, x.dtype) - kept).detach()


# ---------------------------------------------------------------------------
# entropy coding: canonical Huffman and raw bits, vectorized
# ---------------------------------------------------------------------------
_MAXLEN = 31  # longest Huffman code; the table stores lengths in 5 bits


def huffman_lengths(freq: np.ndarray) -> np.ndarray:
    """Huffman code length per symbol (0 for absent symbols), limited to 31 bits.

    Built by bitarray's ``canonical_huffman``; a lone symbol gets a 1-bit code. If a
    code would exceed 31 bits, counts are halved (floored at 1) until it does not.
    """
    freq = np.asarray(freq, np.int64)
    lengths = np.zeros(len(freq), np.int64)
    present = np.flatnonzero(freq)
    if len(present) == 1:
        lengths[present] = 1
    elif len(present) > 1:
        f = freq[present]
        while True:
            code = canonical_huffman(dict(zip(present.tolist(), f.tolist())))[0]
            got = np.array([len(code[s]) for s in present.tolist()])
            if got.max() <= _MAXLEN:
                break
            f = np.maximum(f >> 1, 1)
        lengths[present] = got
    return lengths


def canonical_code(lengths: np.ndarray) -> tuple[np.ndarray, list[int], list[int]]:
    """Canonical codes for ``lengths``: (code per symbol, count per length, symbols in order).

    Symbols are ordered by (length, symbol); codes of one length are consecutive
    integers (the DEFLATE convention, which bitarray's ``canonical_decode`` reads).
    """
    lengths = np.asarray(lengths, np.int64)
    order = [s for s in np.lexsort((np.arange(len(lengths)), lengths)).tolist() if lengths[s] > 0]
    count = np.bincount(lengths[order], minlength=int(lengths.max(initial=0)) + 1).tolist()
    codes = np.zeros(len(lengths), np.uint64)
    code, prev = 0, 0
    for s in order:
        code <<= int(lengths[s]) - prev
        prev = int(lengths[s])
        codes[s] = code
        code += 1
    return codes, count, order


def huffman_encode(symbols: np.ndarray, lengths: np.ndarray) -> bitarray:
    """Huffman-code ``symbols`` with the canonical code of ``lengths``.

    For speed, runs of g symbols are looked up as one joint code (table of (A+1)**g
    entries, the extra symbol being an empty code that pads the tail), so ``pack_bits``
    handles g times fewer entries; the bits are the same as coding symbol by symbol.
    """
    lengths = np.asarray(lengths, np.uint64)
    c, l = np.append(canonical_code(lengths)[0], np.uint64(0)), np.append(lengths, np.uint64(0))
    a, maxlen, g = len(l), max(int(lengths.max(initial=0)), 1), 1
    while (g + 1) * maxlen <= 64 and a ** (g + 1) <= min(1 << 17, len(symbols) // 4):
        g += 1
    gc, gl = c, l
    for _ in range(g - 1):
        gc, gl = ((gc[:, None] << l) | c).ravel(), (gl[:, None] + l).ravel()
    sym = np.asarray(symbols, np.int64)
    sym = np.concatenate([sym, np.full(-len(sym) % g, a - 1)]).reshape(-1, g)
    idx = sym @ (a ** np.arange(g - 1, -1, -1))
    return pack_bits(gc[idx], gl[idx])


def pack_bits(codes: np.ndarray, lengths: np.ndarray) -> bitarray:
    """Concatenate variable-length codes (each <= 64 bits), most significant bit first.

    Vectorized: each code is shifted to its place in a 64-bit word (codes that cross a word
    boundary spill into the next), and a word's codes are summed, which equals OR-ing them
    since they do not overlap.
    """
    codes, lengths = np.asarray(codes, np.uint64), np.asarray(lengths, np.uint64)
    if len(lengths) and lengths.min() == 0:
        codes, lengths = codes[lengths > 0], lengths[lengths > 0]
    out = bitarray()
    if len(lengths) == 0:
        return out
    ends = np.cumsum(lengths)
    starts = ends - lengths
    word = (starts >> np.uint64(6)).astype(np.int64)
    room = np.uint64(64) - (starts & np.uint64(63))
    fits = lengths <= room
    main = np.where(fits, codes << np.where(fits, room - lengths, np.uint64(0)),
                    codes >> np.where(fits, np.uint64(0), lengths - room))
    words = np.zeros(int(word[-1]) + 2, np.uint64)
    first = np.flatnonzero(np.diff(word, prepend=-1))
    words[word[first]] = np.add.reduceat(main, first)
    spill = ~fits
    words[word[spill] + 1] += codes[spill] << (np.uint64(64) - (lengths[spill] - room[spill]))
    total = int(ends[-1])
    out.frombytes(words.astype(">u8").tobytes()[:-(-total // 8)])
    del out[total:]
    return out


def unpack_bits(a: bitarray, lengths: np.ndarray) -> np.ndarray:
    """Inverse of ``pack_bits`` for known ``lengths`` (raw fields, not Huffman codes)."""
    lengths = np.asarray(lengths, np.int64)
    total = int(lengths.sum())
    if total > len(a):
        raise ValueError("corrupted stream: raw bit field runs past the end")
    bits = np.frombuffer(a[:total].unpack(), np.uint8).astype(np.uint64)
    starts = np.cumsum(lengths) - lengths
    out = np.zeros(len(lengths), np.uint64)
    for j in range(int(lengths.max(initial=0))):
        live = lengths > j
        out[live] = (out[live] << np.uint64(1)) | bits[starts[live] + j]
    return out


def _table(lengths: np.ndarray) -> bitarray:
    """Code-length table: symbols used (9 bits), longest code (5 bits), then each length."""
    nsym = int(np.flatnonzero(lengths).max(initial=-1)) + 1
    if not nsym:
        return int2ba(0, 9)
    maxlen = int(lengths.max())
    width = maxlen.bit_length()
    return pack_bits(np.array([nsym, maxlen, *lengths[:nsym]], np.uint64), np.array([9, 5] + [width] * nsym))


class _Reader:
    """Reads fixed-width fields from a bitarray, failing with a ValueError past the end."""

    def __init__(self, a: bitarray):
        self.a, self.pos = a, 0

    def read(self, nbits: int) -> int:
        if self.pos + nbits > len(self.a):
            raise ValueError("corrupted stream: truncated")
        v = ba2int(self.a[self.pos:self.pos + nbits]) if nbits else 0
        self.pos += nbits
        return v

    def table(self, alphabet: int) -> np.ndarray:
        nsym = self.read(9)
        if nsym > alphabet:
            raise ValueError(f"corrupted stream: code table has {nsym} symbols, alphabet is {alphabet}")
        lengths = np.zeros(alphabet, np.int64)
        if nsym:
            maxlen = self.read(5)
            lengths[:nsym] = [self.read(maxlen.bit_length()) for _ in range(nsym)]
            if lengths.max() != maxlen or maxlen == 0:
                raise ValueError("corrupted stream: code table is inconsistent")
            kraft = sum(1 << (maxlen - int(v)) for v in lengths if v)
            if kraft > 1 << maxlen or (kraft < 1 << maxlen and np.count_nonzero(lengths) > 1):
                raise ValueError("corrupted stream: code table is not a complete prefix code")
        return lengths

    def huffman(self, lengths: np.ndarray, n: int) -> np.ndarray:
        """Decode ``n`` symbols starting here with bitarray's C canonical decoder."""
        if n == 0:
            return np.zeros(0, np.int64)
        if n > len(self.a) - self.pos:  # every symbol costs at least one bit
            raise ValueError("corrupted stream: fewer bits than symbols")
        _, count, symbol = canonical_code(lengths)
        try:
            out = list(itertools.islice(canonical_decode(self.a[self.pos:], count, symbol), n))
        except ValueError:
            raise ValueError("corrupted stream: Huffman data ends early or is invalid") from None
        if len(out) < n:
            raise ValueError("corrupted stream: Huffman data ends early")
        out = np.frombuffer(bytes(out), np.uint8).astype(np.int64)  # every alphabet here is < 256
        self.pos += int(lengths[out].sum())
        return out


def _entropy_bits(symbols: np.ndarray) -> float:
    """Empirical zeroth-order entropy of ``symbols`` times their count (an estimate, in bits)."""
    if len(symbols) == 0:
        return 0.0
    p = np.bincount(symbols) / len(symbols)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum() * len(symbols))


# ---------------------------------------------------------------------------
# positions: delta (gap classes + raw mantissas) or a nibble bitmap, both Huffman-coded
# ---------------------------------------------------------------------------
POSITION_CODINGS = ("delta", "bitmap")


def _gap_symbols(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaps between kept cells -> (class = bit length of gap, mantissa, mantissa bits)."""
    idx = np.flatnonzero(flat)
    gaps = np.diff(idx, prepend=-1) - 1
    cls = np.zeros(len(gaps), np.int64)
    nz = gaps > 0
    cls[nz] = np.floor(np.log2(gaps[nz])).astype(np.int64) + 1
    cls[nz] += gaps[nz] >= (1 << cls[nz])  # guard float log2 at powers of two
    cls[nz] -= gaps[nz] < (1 << (cls[nz] - 1))
    mbits = np.maximum(cls - 1, 0)
    mant = np.where(nz, gaps - (1 << mbits), 0)
    return cls, mant.astype(np.uint64), mbits


def _nibbles(flat: np.ndarray) -> np.ndarray:
    padded = np.concatenate([flat, np.zeros(-len(flat) % 4, bool)]).reshape(-1, 4)
    return padded @ np.array([8, 4, 2, 1])


def _encode_positions(flat: np.ndarray) -> tuple[int, bitarray, bitarray]:
    """The cheaper of the two position codings: (coding index, table bits, payload bits)."""
    options = []
    cls, mant, mbits = _gap_symbols(flat)
    lengths = huffman_lengths(np.bincount(cls, minlength=64))
    options.append((0, _table(lengths), huffman_encode(cls, lengths) + pack_bits(mant, mbits)))
    nib = _nibbles(flat)
    lengths = huffman_lengths(np.bincount(nib, minlength=16))
    options.append((1, _table(lengths), huffman_encode(nib, lengths)))
    return min(options, key=lambda o: len(o[1]) + len(o[2]))


# ---------------------------------------------------------------------------
# bitstream
# ---------------------------------------------------------------------------
MAGIC, VERSION = b"BS", 1
MAX_ELEMENTS = 1 << 28  # a header claiming a larger tensor is rejected before allocating


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
        v >>= 7
        if not v:
            return bytes(out)


def encode(x: Tensor, cfg: CodecConfig) -> bytes:
    """Compress ``x`` [N, C, H, W] into a self-contained, versioned bitstream.

    Layout: ``b"BS"``, version, CRC-16 of the rest; flags (mode, bits, border, position
    coding, signed), block size, N, C, H, W, kept-position count (LEB128 varints);
    per-image bfloat16 scale (and offset, when values are negative); then a bit-packed
    body: code-length tables (values, positions), positions, values, zero padding.
    """
    a = _analyze(x, cfg)
    n, c, h, w = a["shape"]
    posmask = a["mask"][:, :1] if cfg.mode == "region-wise" else a["mask"]
    flat = posmask.reshape(-1).numpy()
    coding, pos_table, pos_bits = _encode_positions(flat)
    levels = a["levels"][a["valid"]].to(torch.uint8).numpy()
    lengths = huffman_lengths(np.bincount(levels, minlength=2 ** cfg.bits))
    val_table, val_bits = _table(lengths), huffman_encode(levels, lengths)
    signed = bool((a["offset"] != 0).any())
    flags = MODES.index(cfg.mode) | (cfg.bits - 1) << 2 | cfg.zero_border << 5 | coding << 6 | signed << 7
    head = bytes([flags]) + b"".join(_varint(v) for v in (cfg.block_size, n, c, h, w, int(flat.sum())))
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
    fields = []
    for name in ("block_size", "N", "C", "H", "W", "kept"):
        v = shift = 0
        while True:
            if pos >= len(blob) or shift > 56:
                raise ValueError(f"corrupted stream: header field {name} is truncated")
            v |= (blob[pos] & 0x7F) << shift
            shift += 7
            pos += 1
            if not blob[pos - 1] & 0x80:
                break
        fields.append(v)
    bs, n, c, h, w, kept = fields
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
    if not (torch.isfinite(_from_bf16(scale)).all() and (_from_bf16(scale) > 0).all()
            and torch.isfinite(_from_bf16(offset)).all() and (_from_bf16(offset) <= 0).all()):
        raise ValueError("corrupted stream: invalid scale or offset")
    header_bits = 8 * pos
    body = bitarray()
    body.frombytes(blob[pos:])
    r = _Reader(body)
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
    valid = _valid_pixels(h, w, bs, cfg.zero_border)[where[2], where[3]]
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
    Raises ValueError for anything that is not an intact stream."""
    try:
        return _parse(blob)
    except ValueError:
        raise
    except Exception as e:  # a corruption the explicit checks did not name
        raise ValueError(f"corrupted stream: {type(e).__name__}: {e}") from None


def decode(blob: bytes) -> Tensor:
    """Decode a stream from ``encode`` to float32 [N, C, H, W].

    Raises ValueError for empty, truncated, corrupted or foreign bytes.
    """
    return _reconstruct(inspect_stream(blob))


# ---------------------------------------------------------------------------
# rate
# ---------------------------------------------------------------------------
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
    p = inspect_stream(blob)
    hh, ww = input_hw
    if hh < 1 or ww < 1:
        raise ValueError(f"input_hw must be positive, got {input_hw}")
    n = p["shape"][0]
    return dict(bytes=len(blob), bpp=8 * len(blob) / (n * hh * ww), breakdown=p["breakdown"],
                position_coding=p["coding"], kept_values=len(p["symbols"]),
                estimates=dict(values_entropy_bits=_entropy_bits(p["symbols"]),
                               positions_entropy_bits=_entropy_bits(p["position_symbols"]) + p["mantissa_bits"]))


# ---------------------------------------------------------------------------
# model: ResNet-18 (CIFAR stem) split at a stage
# ---------------------------------------------------------------------------
SPLIT_POINTS = ("layer1", "layer2", "layer3")
_STAGES = ("layer1", "layer2", "layer3", "layer4")


class SplitResNet18(nn.Module):
    """torchvision ResNet-18 with the CIFAR stem, cut after ``split_at``.

    Parameters
    ----------
    num_classes, in_channels : int
        Output classes and input channels (1 for Fashion-MNIST, 3 for CIFAR).
    split_at : {"layer1", "layer2", "layer3"}
        Stage after which the codec sits.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, split_at: str = "layer1"):
        super().__init__()
        if split_at not in SPLIT_POINTS:
            raise ValueError(f"split_at must be one of {SPLIT_POINTS}, got {split_at!r}")
        net = torchvision.models.resnet18(num_classes=num_classes)
        net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
        self.net, self.split_at = net, split_at
        cut = _STAGES.index(split_at) + 1
        self._head_stages, self._tail_stages = _STAGES[:cut], _STAGES[cut:]

    def head_modules(self) -> list[nn.Module]:
        """The layers before the split (stem and head stages)."""
        return [self.net.conv1, self.net.bn1, *(getattr(self.net, s) for s in self._head_stages)]

    def head(self, x: Tensor) -> Tensor:
        """Features at the split point."""
        n = self.net
        x = n.relu(n.bn1(n.conv1(x)))
        for s in self._head_stages:
            x = getattr(n, s)(x)
        return x

    def tail(self, z: Tensor) -> Tensor:
        """Logits from (decoded) split-point features."""
        n = self.net
        for s in self._tail_stages:
            z = getattr(n, s)(z)
        return n.fc(torch.flatten(n.avgpool(z), 1))

    def forward(self, x: Tensor, cfg: CodecConfig | None = None, exact: bool = False,
                ste: bool = False) -> Tensor:
        """Whole pass; with ``cfg`` the tail sees the decoder's output.

        ``exact`` runs the real ``decode(encode(.))`` per image (slow, for checks);
        ``ste`` uses the straight-through estimator so the pass can be trained.
        """
        z = self.head(x)
        if cfg is not None:
            if exact:
                z = torch.cat([decode(encode(zi[None], cfg)) for zi in z.float()]).to(z.device, z.dtype)
            elif ste:
                z = compress_ste(z, cfg)
            else:
                z = compress(z, cfg).to(z.device, z.dtype)
        return self.tail(z)


def load_state(model: SplitResNet18, state: dict) -> SplitResNet18:
    """Load a ResNet-18 state_dict into ``model``, mapping common key prefixes.

    Keys may carry ``module.`` (DataParallel), ``resnet.``, ``model.`` or ``net.``
    prefixes. Missing keys or shapes that differ raise a ValueError naming the layer.
    """
    own = model.net.state_dict()
    mapped = {}
    for k, v in state.items():
        for p in ("module.", "resnet.", "model.", "net."):
            if k.startswith(p):
                k = k[len(p):]
        mapped[k] = v
    missing = sorted(set(own) - set(mapped))
    if missing:
        raise ValueError(f"checkpoint lacks layer(s) {missing[:5]} (of {len(missing)} missing)")
    for k, v in own.items():
        if tuple(mapped[k].shape) != tuple(v.shape):
            raise ValueError(f"checkpoint layer {k!r} has shape {tuple(mapped[k].shape)}, "
                             f"model expects {tuple(v.shape)}")
    model.net.load_state_dict({k: mapped[k].to(own[k].dtype) for k in own})
    return model


def build_model(dataset: str = "fashion-mnist", split_at: str = "layer1") -> SplitResNet18:
    """An untrained SplitResNet18 sized for ``dataset``."""
    info = _dataset_info(dataset)
    return SplitResNet18(info["classes"], len(info["mean"]), split_at)


def checkpoint_path(dataset: str = "fashion-mnist") -> Path:
    """Where the shipped checkpoint (``.pt``) and its model card (``.json``) live."""
    return DATA_DIR / f"resnet18_{dataset}.pt"


def checkpoint_card(dataset: str = "fashion-mnist", path: str | Path | None = None) -> dict:
    """The model card (``.json``) beside a checkpoint: the shipped one for ``dataset``, or
    the one at ``path``; ``{}`` where there is none. Notebooks record its sha256 in results."""
    p = (Path(path) if path is not None else checkpoint_path(dataset)).with_suffix(".json")
    return json.loads(p.read_text()) if p.exists() else {}


def load_pretrained(dataset: str = "fashion-mnist", split_at: str = "layer1",
                    path: str | Path | None = None) -> SplitResNet18:
    """The pretrained ResNet-18 in eval mode.

    Without ``path`` the shipped checkpoint is loaded; with ``path`` any ResNet-18
    state_dict of matching shapes. Where a model card (same name, ``.json``) lies beside
    the file, its sha256 must match.
    """
    model = build_model(dataset, split_at)
    p = Path(path) if path is not None else checkpoint_path(dataset)
    if not p.exists():
        raise ValueError(f"no checkpoint at {p}; train one with "
                         f"`python blocksparse_utils.py pretrain --dataset {dataset}`")
    card = checkpoint_card(path=p)
    if card:
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        if digest != card["sha256"]:
            raise ValueError(f"checkpoint {p} has sha256 {digest}, model card says {card['sha256']}")
    state = torch.load(p, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    return load_state(model, state).eval()


# ---------------------------------------------------------------------------
# data: Fashion-MNIST (default), CIFAR-10/100; train / val / test splits
# ---------------------------------------------------------------------------
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
VAL_SIZE = 5000  # images carved from the training set for early stopping and selection
_DATASETS = {
    "fashion-mnist": dict(classes=10, mean=(0.2860,), std=(0.3530,)),
    "cifar10": dict(classes=10, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)),
    "cifar100": dict(classes=100, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762)),
}
SPLITS = ("train", "val", "test")


def _dataset_info(name: str) -> dict:
    if name not in _DATASETS:
        raise ValueError(f"dataset must be one of {tuple(_DATASETS)}, got {name!r}")
    return _DATASETS[name]


def _mean_std(name: str) -> tuple[Tensor, Tensor]:
    """Per-channel normalization constants of ``name``, shaped [1, C, 1, 1]."""
    info = _dataset_info(name)
    return tuple(torch.tensor(info[k]).view(1, -1, 1, 1) for k in ("mean", "std"))


def _read_idx(path: Path) -> np.ndarray:
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _fashion_arrays(root: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    stem = "train" if train else "t10k"
    names = (f"{stem}-images-idx3-ubyte", f"{stem}-labels-idx1-ubyte")
    for d in (root / "fashion-mnist", DEBIAN_FASHION, root / "FashionMNIST" / "raw"):
        for ext in (".gz", ""):
            if all((d / (n + ext)).exists() for n in names):
                return tuple(_read_idx(d / (n + ext)) for n in names)
    try:
        torchvision.datasets.FashionMNIST(str(root), train=train, download=True)
    except Exception as e:  # offline machine, blocked host, ...
        raise ValueError(
            f"Fashion-MNIST not found in {root / 'fashion-mnist'} nor {DEBIAN_FASHION}, and "
            f"torchvision's download failed ({e}). Install it with "
            "`sudo apt-get install dataset-fashion-mnist` or copy the four idx files "
            f"into {root / 'fashion-mnist'}.") from None
    return _fashion_arrays(root, train)


def _cifar_arrays(root: Path, name: str, train: bool) -> tuple[np.ndarray, np.ndarray]:
    folder, files, key = {
        "cifar10": ("cifar-10-batches-py",
                    [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"], "labels"),
        "cifar100": ("cifar-100-python", ["train" if train else "test"], "fine_labels"),
    }[name]
    paths = [root / folder / f for f in files]
    if not all(p.exists() for p in paths):
        cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
        cls(str(root), train=train, download=True)
    xs, ys = [], []
    for p in paths:
        with open(p, "rb") as f:
            d = pickle.load(f, encoding="latin1")  # the official python-pickle format
        xs.append(np.asarray(d["data"], np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(d[key]))
    return np.concatenate(xs), np.concatenate(ys)


@functools.lru_cache(maxsize=4)
def _arrays(name: str, train: bool, root: str) -> tuple[Tensor, Tensor]:
    mean, std = _mean_std(name)
    x, y = (_fashion_arrays(Path(root), train) if name == "fashion-mnist"
            else _cifar_arrays(Path(root), name, train))
    x = torch.from_numpy(np.array(x, np.float32) / 255.0)
    if x.ndim == 3:
        x = x[:, None]
    return (x - mean) / std, torch.from_numpy(np.array(y, np.int64))


def split_indices(n_train: int, split: str, seed: int = 0) -> Tensor:
    """Indices of the training set that form ``split`` ("train" or "val"); fixed by ``seed``."""
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
    return perm[:VAL_SIZE] if split == "val" else perm[VAL_SIZE:]


def load_dataset(name: str = "fashion-mnist", split: str = "test", root: str | Path = DATA_DIR,
                 subset: int | None = None) -> TensorDataset:
    """Normalized images and integer labels of one split.

    Parameters
    ----------
    name : {"fashion-mnist", "cifar10", "cifar100"}
    split : {"train", "val", "test"}
        "val" is a fixed, seeded slice of ``VAL_SIZE`` training images; "train" is the rest.
    root : path
        Where datasets are looked up and downloaded to (Fashion-MNIST is also looked up in
        Debian's ``/usr/share/datasets/fashion-mnist``).
    subset : int, optional
        Keep only the first ``subset`` images of the split (quick runs).
    """
    _dataset_info(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if subset is not None and subset < 1:
        raise ValueError(f"subset must be >= 1, got {subset}")
    x, y = _arrays(name, split != "test", str(root))
    if split != "test":
        idx = split_indices(len(x), split)
        x, y = x[idx], y[idx]
    if subset is not None:
        x, y = x[:subset], y[:subset]
    return TensorDataset(x, y)


# ---------------------------------------------------------------------------
# training: pretraining and fine-tuning with the codec in the loop
# ---------------------------------------------------------------------------
def _augment(x: Tensor, pad: int) -> Tensor:
    """Random crop (zero padding ``pad``) and horizontal flip, per image."""
    n, _, h, w = x.shape
    xp = F.pad(x, (pad,) * 4)
    i, j = torch.randint(0, 2 * pad + 1, (2, n)).tolist()
    out = torch.stack([xp[k, :, i[k]:i[k] + h, j[k]:j[k] + w] for k in range(n)])
    flip = torch.rand(n) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def _autocast(device: str, enabled: bool):
    # bf16 autocast: a 2x speed-up on CPUs with AMX/avx512_bf16, a 3x slow-down on others.
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=enabled)


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, cfg: CodecConfig | None = None, batch_size: int = 256,
            fast: bool = False, exact: bool = False, bf16: bool = False) -> Tensor:
    """Predicted labels for ``x``; ``fast`` uses channels_last, ``bf16`` bf16 autocast."""
    model.eval()
    device = next(model.parameters()).device.type
    out = []
    for s in range(0, len(x), batch_size):
        xb = x[s:s + batch_size].to(device)
        if fast:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with _autocast(device, bf16):
            out.append(model(xb, cfg, exact).argmax(1).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def accuracy(model: nn.Module, data: TensorDataset, cfg: CodecConfig | None = None,
             fast: bool = True, batch_size: int = 256) -> float:
    """Top-1 accuracy on ``data`` through the codec ``cfg`` (None: uncompressed)."""
    x, y = data.tensors
    return int((predict(model, x, cfg, batch_size, fast) == y).sum()) / len(y)  # exact: no float32 mean


def pretrain(dataset: str = "fashion-mnist", epochs: int = 5, batch_size: int = 128,
             lr: float = 0.1, seed: int = 0, resume: bool = False, subset: int | None = None,
             root: str | Path = DATA_DIR, bf16: bool = False, anneal_at: int | None = None) -> dict:
    """Train the uncompressed baseline and write the shipped checkpoint and model card.

    One-cycle SGD over ``epochs`` (Nesterov, weight decay 5e-4), label smoothing 0.1,
    crop+flip, channels_last (and bf16 autocast if ``bf16``). With ``anneal_at=K`` the
    one-cycle schedule is followed for K-1 epochs and epoch K decays the learning rate
    linearly to zero, ending training there (a shorter run on slow machines). A resumable
    state is saved after every epoch to ``data/pretrain_state_<dataset>.pt``;
    ``resume=True`` continues from it. Validation accuracy is logged per epoch; the test
    set is evaluated once, at the end.
    """
    if anneal_at is not None and not 1 <= anneal_at <= epochs:
        raise ValueError(f"anneal_at must be in 1..epochs, got {anneal_at}")
    set_seed(seed)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    train, val = (load_dataset(dataset, s, root, subset) for s in ("train", "val"))
    model = build_model(dataset).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = epochs * math.ceil(len(train) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    state_path = Path(root) / f"pretrain_state_{dataset}.pt"
    history, start = [], 0
    if resume and state_path.exists():
        st = torch.load(state_path, weights_only=False)
        model.load_state_dict(st["model"]), opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"]), torch.set_rng_state(st["rng"])
        history, start = st["history"], st["epoch"]
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    x, y = train.tensors
    pad = 2 if x.shape[-1] <= 28 else 4
    t0 = time.time()
    last = anneal_at or epochs
    for epoch in range(start, last):
        model.train()
        perm = torch.randperm(len(x))
        bar = tqdm(range(0, len(x), batch_size), desc=f"epoch {epoch + 1}/{last}")
        annealing, lr_cut = epoch + 1 == anneal_at, sched.get_last_lr()[0]
        for k, s in enumerate(bar):
            if annealing:
                for g in opt.param_groups:
                    g["lr"] = lr_cut * (1 - k / len(bar))
            idx = perm[s:s + batch_size]
            xb = _augment(x[idx], pad).contiguous(memory_format=torch.channels_last)
            with _autocast("cpu", bf16):
                loss = loss_fn(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if not annealing:
                sched.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        history.append(dict(epoch=epoch + 1, val_accuracy=accuracy(model, val),
                            minutes=(time.time() - t0) / 60))
        print(history[-1], flush=True)
        torch.save(dict(model=model.state_dict(), opt=opt.state_dict(), sched=sched.state_dict(),
                        rng=torch.get_rng_state(), history=history, epoch=epoch + 1), state_path)
    out = checkpoint_path(dataset) if Path(root) == DATA_DIR else Path(root) / f"resnet18_{dataset}.pt"
    half = {k: v.half() if v.is_floating_point() else v for k, v in model.net.state_dict().items()}
    torch.save(half, out)
    model.net.load_state_dict(half)  # the card reports the weights as shipped (fp16)
    test_acc = accuracy(model, load_dataset(dataset, "test", root))
    card = dict(dataset=dataset, epochs=epochs, anneal_at=anneal_at, batch_size=batch_size, lr=lr, seed=seed,
                subset=subset, val_size=VAL_SIZE, history=history, test_accuracy=test_acc,
                dtype="float16", torch=torch.__version__, torchvision=torchvision.__version__,
                sha256=hashlib.sha256(out.read_bytes()).hexdigest())
    out.with_suffix(".json").write_text(json.dumps(card, indent=2))
    return card


def finetune(model: SplitResNet18, cfg: CodecConfig, dataset: str = "fashion-mnist",
             train_subset: int | None = 5000, val_subset: int | None = 1000, steps: int = 300,
             batch_size: int = 64, lr: float = 1e-3, optimizer: str = "adam", train: str = "tail",
             eval_every: int = 50, patience: int = 3, sparsity_weight: float = 0.0, seed: int = 0,
             root: str | Path = DATA_DIR) -> tuple[SplitResNet18, list[dict]]:
    """Fine-tune ``model`` with the codec in the loop; early stopping on the validation split.

    Parameters
    ----------
    cfg : CodecConfig
        The codec the tail must learn to read (straight-through estimator, see ``compress_ste``).
    train_subset, val_subset : int, optional
        Images of the "train" and "val" splits used (the test split is never touched here).
    steps, batch_size, lr : int, int, float
        The budget: at most ``steps`` optimizer steps, cosine-annealed learning rate.
    optimizer : {"adam", "sgd"}
    train : {"tail", "all"}
        Train only the layers after the split, or the whole network.
    eval_every, patience : int
        Validation accuracy is measured every ``eval_every`` steps; training stops after
        ``patience`` evaluations without improvement, and the best weights are restored.
    sparsity_weight : float
        Weight of an L1 penalty on the split features (pushes energy into fewer blocks);
        only useful with ``train="all"``.

    Returns
    -------
    (model, history)
        The model (best validation weights, eval mode) and one dict per evaluation:
        ``step``, ``loss`` (mean training loss since the last evaluation), ``val_accuracy``.
    """
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    if train not in ("tail", "all"):
        raise ValueError(f"train must be 'tail' or 'all', got {train!r}")
    set_seed(seed)
    device = next(model.parameters()).device
    tr, va = load_dataset(dataset, "train", root, train_subset), load_dataset(dataset, "val", root, val_subset)
    head_ids = {id(p) for m in model.head_modules() for p in m.parameters()}
    for p in model.parameters():
        p.requires_grad_(train == "all" or id(p) not in head_ids)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.Adam(params, lr) if optimizer == "adam"
           else torch.optim.SGD(params, lr, momentum=0.9, nesterov=True, weight_decay=5e-4))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    loss_fn = nn.CrossEntropyLoss()
    x, y = tr.tensors
    best = (accuracy(model, va, cfg), {k: v.clone() for k, v in model.state_dict().items()})
    history, losses, bad = [dict(step=0, loss=float("nan"), val_accuracy=best[0])], [], 0
    g = torch.Generator().manual_seed(seed)
    for step in tqdm(range(1, steps + 1), desc=f"fine-tune {cfg.mode} B={cfg.block_size} r={cfg.ratio}"):
        model.train()
        if train == "tail":  # frozen head: keep its batch-norm statistics too
            for m in model.head_modules():
                m.eval()
        idx = torch.randint(len(x), (batch_size,), generator=g)
        z = model.head(x[idx].to(device))
        loss = loss_fn(model.tail(compress_ste(z, cfg)), y[idx].to(device))
        if sparsity_weight:
            loss = loss + sparsity_weight * z.abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % eval_every == 0 or step == steps:
            acc = accuracy(model, va, cfg)
            history.append(dict(step=step, loss=float(np.mean(losses)), val_accuracy=acc))
            losses = []
            if acc > best[0]:
                best, bad = (acc, {k: v.clone() for k, v in model.state_dict().items()}), 0
            else:
                bad += 1
                if bad >= patience:
                    break
    model.load_state_dict(best[1])
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval(), history


# ---------------------------------------------------------------------------
# evaluation: accuracy on decoded features, rate from real per-image streams
# ---------------------------------------------------------------------------
def default_device() -> str:
    """"cuda" when a GPU is visible, else "cpu"."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@torch.no_grad()
def head_features(model: SplitResNet18, data: TensorDataset, batch_size: int = 256) -> Tensor:
    """Split-point features of all images of ``data`` (float32, CPU), to reuse across configs."""
    model.eval()
    device = next(model.parameters()).device
    x = data.tensors[0]
    return torch.cat([model.head(x[s:s + batch_size].to(device).contiguous(memory_format=torch.channels_last))
                      .float().cpu().contiguous() for s in range(0, len(x), batch_size)])


@torch.no_grad()
def evaluate(model: SplitResNet18, cfg: CodecConfig | None, data: TensorDataset,
             rate_sample: int | None = None, batch_size: int = 256, exact: bool = False,
             features: Tensor | None = None) -> dict:
    """Accuracy, rate and feature memory of one configuration.

    Parameters
    ----------
    cfg : CodecConfig or None
        None evaluates the uncompressed model.
    data : TensorDataset
        Images and labels (e.g. ``load_dataset(..., "test")``).
    rate_sample : int, optional
        Encode the first ``rate_sample`` images one by one for the rate (default: all).
    exact : bool
        Also decode each sampled stream and check it equals what the tail consumed.
    features : Tensor, optional
        ``head_features(model, data)``, computed once for many configurations.

    Returns
    -------
    dict
        ``accuracy`` (the tail consumed exactly what the decoder returns); ``bpp`` and
        ``bytes`` (mean of real per-image streams); mean ``breakdown`` bits per section;
        entropy ``estimates``; ``raw_bytes`` (float32 features per image); ``n_images`` and
        ``n_rate``.
    """
    model.eval()
    device = next(model.parameters()).device
    x, y = data.tensors
    hw = tuple(x.shape[-2:])
    if rate_sample is not None and rate_sample < 1:
        raise ValueError(f"rate_sample must be >= 1 (or None for all images), got {rate_sample}")
    n_rate = len(x) if rate_sample is None else min(rate_sample, len(x))
    correct, rates, raw = 0, [], 0
    for s in range(0, len(x), batch_size):
        z = (model.head(x[s:s + batch_size].to(device).contiguous(memory_format=torch.channels_last))
             if features is None else features[s:s + batch_size].to(device))
        raw = 4 * z[0].numel()
        zc = z if cfg is None else compress(z, cfg).to(device)
        correct += int((model.tail(zc).argmax(1).cpu() == y[s:s + batch_size]).sum())
        if cfg is not None:
            for i in range(min(len(z), n_rate - s)):
                blob = encode(z[i:i + 1].cpu(), cfg)
                if exact and not torch.equal(decode(blob), zc[i:i + 1].cpu()):
                    raise AssertionError("decoded features differ from the ones evaluated")
                rates.append(rate(blob, hw))
    out = dict(accuracy=correct / len(x), n_images=len(x), n_rate=len(rates), raw_bytes=raw)
    if cfg is None:
        return out | dict(bpp=8.0 * raw / (hw[0] * hw[1]), bytes=float(raw))
    out |= dict(bpp=float(np.mean([r["bpp"] for r in rates])), bytes=float(np.mean([r["bytes"] for r in rates])))
    out["breakdown"] = {k: float(np.mean([r["breakdown"][k] for r in rates])) for k in rates[0]["breakdown"]}
    out["estimates"] = {k: float(np.mean([r["estimates"][k] for r in rates])) for k in rates[0]["estimates"]}
    out["position_coding"] = {c: sum(r["position_coding"] == c for r in rates) for c in POSITION_CODINGS}
    return out


# ---------------------------------------------------------------------------
# baselines: coding the input image; the original method's accounting
# ---------------------------------------------------------------------------
IMAGE_FORMATS = ("png", "jpeg", "webp")


def _uint8_images(data: TensorDataset, dataset: str) -> np.ndarray:
    mean, std = _mean_std(dataset)
    x = data.tensors[0] * std + mean
    return (x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


@torch.no_grad()
def image_codec_baseline(model: SplitResNet18, data: TensorDataset, dataset: str, fmt: str,
                         quality: int | None = None) -> dict:
    """Code the input images with Pillow instead of the features; the decoded images go to
    the uncompressed model. Returns ``accuracy``, ``bpp`` and ``bytes`` (mean per image)."""
    from PIL import Image
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"fmt must be one of {IMAGE_FORMATS}, got {fmt!r}")
    imgs, sizes, out = _uint8_images(data, dataset), [], []
    for im in imgs:
        buf = io.BytesIO()
        pil = Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im)
        opts = dict(optimize=True) if fmt == "png" else dict(quality=quality)
        pil.save(buf, format=fmt.upper(), **opts)
        sizes.append(buf.tell())
        dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert(pil.mode), np.float32) / 255
        out.append(dec[None] if dec.ndim == 2 else dec.transpose(2, 0, 1))
    mean, std = _mean_std(dataset)
    x = (torch.from_numpy(np.stack(out)) - mean) / std
    acc = accuracy(model, TensorDataset(x, data.tensors[1]))
    hw = imgs.shape[1] * imgs.shape[2]
    return dict(accuracy=acc, bpp=8 * float(np.mean(sizes)) / hw, bytes=float(np.mean(sizes)))


@torch.no_grad()
def seed_accounting(model: SplitResNet18, cfg: CodecConfig, data: TensorDataset, batch_size: int = 128,
                    count_bits: int = 2) -> dict:
    """The original method's accounting, reproduced to show the gap: the tail is fed float
    (unquantized) sparse features while the rate is *estimated* as if values were
    ``count_bits``-bit, from each batch's own Huffman code lengths for values and position
    deltas, with no header and no code tables. Not a real rate."""
    model.eval()
    device = next(model.parameters()).device
    x, y = data.tensors
    correct, bits = 0, 0.0
    for s in range(0, len(x), batch_size):
        zd = model.head(x[s:s + batch_size].to(device).contiguous(memory_format=torch.channels_last))
        z = zd.float().cpu().contiguous()
        n, c, h, w = z.shape
        mask = select_blocks(block_energy(z, cfg.block_size, cfg.zero_border), cfg.ratio, cfg.mode)
        pm = pixel_mask(mask, h, w, cfg.block_size, cfg.zero_border)
        correct += int((model.tail(zd * pm.to(device)).argmax(1).cpu() == y[s:s + batch_size]).sum())
        v = z[pm]
        q = torch.round(v / max(float(v.max()), 1e-12) * (2 ** count_bits - 1)).long().numpy() if len(v) else v.long().numpy()
        lv = huffman_lengths(np.bincount(q, minlength=2 ** count_bits))
        idx = np.flatnonzero(mask.reshape(n * c, -1).numpy())
        deltas = np.diff(idx % mask[0, 0].numel(), prepend=0)
        _, inv = np.unique(deltas, return_inverse=True)
        lp = huffman_lengths(np.bincount(inv))
        bits += float(lv[q].sum() + lp[inv].sum())
    return dict(accuracy=correct / len(x), bpp=bits / (len(x) * x.shape[-2] * x.shape[-1]))


# ---------------------------------------------------------------------------
# study: the sweep, its results table, the frontier
# ---------------------------------------------------------------------------
RESULT_COLUMNS = ["method", "mode", "block_size", "ratio", "bits", "quality", "finetuned", "accuracy",
                  "bpp", "bytes", "header", "tables", "positions", "values", "padding"]


def sweep(model: SplitResNet18, data: TensorDataset, modes=MODES, block_sizes=(1, 2, 4, 8),
          ratios=tuple(RATIOS), bits=(2, 4, 8), rate_sample: int | None = 200,
          zero_border: bool = True, finetuned: bool = False, batch_size: int = 256,
          configs: list[CodecConfig] | None = None) -> list[dict]:
    """Evaluate every configuration of the grid (or the list ``configs``) on ``data``; one
    tidy row each (see ``RESULT_COLUMNS``). Split-point features are computed once."""
    rows = []
    if configs is None:
        configs = [CodecConfig(bs, r, mode, b, zero_border)
                   for mode, bs, r, b in itertools.product(modes, block_sizes, ratios, bits)]
    z = head_features(model, data, batch_size)
    for cfg in tqdm(configs, desc="sweep"):
        mode, bs, r, b = cfg.mode, cfg.block_size, cfg.ratio, cfg.bits
        ev = evaluate(model, cfg, data, rate_sample, batch_size, features=z)
        rows.append(dict(method="blocksparse", mode=mode, block_size=bs, ratio=r, bits=b, quality=None,
                         finetuned=finetuned, accuracy=ev["accuracy"], bpp=ev["bpp"], bytes=ev["bytes"],
                         **ev["breakdown"], n_images=ev["n_images"], n_rate=ev["n_rate"],
                         delta_share=ev["position_coding"]["delta"] / ev["n_rate"]))
    return rows


def pareto(df: "pd.DataFrame", x: str = "bpp", y: str = "accuracy") -> "pd.DataFrame":
    """Rows not beaten by another row with lower ``x`` and higher-or-equal ``y``."""
    d = df.sort_values([x, y], ascending=[True, False])
    return d[d[y] > d[y].cummax().shift(fill_value=-np.inf)]


def save_results(rows: list[dict], config: dict, name: str = "results") -> Path:
    """Write ``data/results/<name>.csv`` and ``.json`` (rows plus the config that made them)."""
    import pandas as pd
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows, columns=None if rows else RESULT_COLUMNS)
    df.to_csv(RESULTS_DIR / f"{name}.csv", index=False)
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(dict(config=config, rows=df.to_dict("records")),
                                                         indent=1, default=str))
    return RESULTS_DIR / f"{name}.csv"


def load_results(name: str = "results") -> "pd.DataFrame":
    """Read a results table written by ``save_results``."""
    import pandas as pd
    p = RESULTS_DIR / f"{name}.csv"
    if not p.exists():
        raise ValueError(f"no results at {p}: run notebooks 03-05 or `python blocksparse_utils.py` first")
    return pd.read_csv(p)


def write_compression_results(df: "pd.DataFrame", path: Path | None = None) -> Path:
    """``compression_results.json`` in the original script's layout: per mode and block size,
    lists of ratios with their accuracy and bpp (block-sparse rows, no fine-tuning)."""
    d = df[(df["method"] == "blocksparse") & (~df["finetuned"].astype(bool))]
    out = {}
    for (mode, bs, bits), g in d.groupby(["mode", "block_size", "bits"]):
        g = g.sort_values("ratio", ascending=False)
        out.setdefault(mode, {})[f"block_size={bs},bits={bits}"] = dict(
            ratios=g["ratio"].tolist(), accuracy=g["accuracy"].tolist(), bpp=g["bpp"].tolist())
    path = path or RESULTS_DIR / "compression_results.json"
    path.write_text(json.dumps(out, indent=1))
    return path


# ---------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------
def save_figure(fig, name: str, formats: tuple[str, ...] = ("png", "pdf"), dpi: int = 200) -> list[Path]:
    """Save ``fig`` as ``figures/<name>.<fmt>`` for each format; returns the paths."""
    FIGURES_DIR.mkdir(exist_ok=True)
    paths = [FIGURES_DIR / f"{name}.{f}" for f in formats]
    for p in paths:
        fig.savefig(p, dpi=dpi, bbox_inches="tight")
    return paths


def _axes(ax):
    import matplotlib.pyplot as plt
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4))
        return fig, ax
    return ax.figure, ax


def plot_accuracy_vs_bpp(df: "pd.DataFrame", reference: float | None = None, ax=None, logx: bool = True):
    """Accuracy against bpp: one line per mode (best of block sizes and bits, its Pareto
    front) and the baselines as markers. Returns the figure."""
    fig, ax = _axes(ax)
    for (method, mode), g in df.groupby(["method", df["mode"].fillna("")], dropna=False):
        if method == "blocksparse":
            for ft, gg in g.groupby("finetuned"):
                f = pareto(gg)
                ax.plot(f["bpp"], 100 * f["accuracy"], "-o" if not ft else "--s", ms=3,
                        label=f"{mode}{' (fine-tuned)' if ft else ''}")
        else:
            g = g.sort_values("bpp")
            ax.plot(g["bpp"], 100 * g["accuracy"], "x:" if len(g) > 1 else "x", ms=5, label=method)
    if reference is not None:
        ax.axhline(100 * reference, color="k", lw=0.8, label="uncompressed")
        ax.axhline(100 * reference - 1, color="k", lw=0.8, ls=":", label="-1 point")
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel="bpp (bits per input pixel, real streams)", ylabel="top-1 accuracy (%)")
    ax.legend(fontsize=7)
    return fig


def plot_accuracy_vs_ratio(df: "pd.DataFrame", ax=None):
    """Accuracy against kept ratio, one line per mode and block size (best bits). Returns the figure."""
    fig, ax = _axes(ax)
    d = df[(df["method"] == "blocksparse") & (~df["finetuned"].astype(bool))]
    for (mode, bs), g in d.groupby(["mode", "block_size"]):
        g = g.groupby("ratio")["accuracy"].max()
        ax.plot(g.index, 100 * g.values, "-o", ms=3, label=f"{mode}, B={bs}")
    ax.set(xscale="log", xlabel="ratio (fraction of blocks kept)", ylabel="top-1 accuracy (%)")
    ax.legend(fontsize=6, ncol=2)
    return fig


def plot_feature_maps(image: Tensor, maps: dict, channels=(0, 1, 2, 3)):
    """Input image plus a few channels of each map in ``maps`` ({label: [C, H, W]}). Returns the figure."""
    import matplotlib.pyplot as plt
    fig, axs = plt.subplots(len(maps), len(channels) + 1, figsize=(1.6 * (len(channels) + 1), 1.6 * len(maps)),
                            squeeze=False)
    for r, (label, m) in enumerate(maps.items()):
        axs[r, 0].imshow(image[0] if image.shape[0] == 1 else image.permute(1, 2, 0), cmap="gray")
        axs[r, 0].set_ylabel(label, fontsize=7)
        for j, ch in enumerate(channels):
            axs[r, j + 1].imshow(m[ch], cmap="viridis")
            axs[r, 0].set_title("input" if r == 0 else "", fontsize=7)
            axs[r, j + 1].set_title(f"channel {ch}" if r == 0 else "", fontsize=7)
    for a in axs.flat:
        a.set_xticks([]), a.set_yticks([])
    return fig


# ---------------------------------------------------------------------------
# widgets: sliders over precomputed data, and a figure-export button
# ---------------------------------------------------------------------------
def controls(ratios=tuple(RATIOS), block_sizes=(1, 2, 4, 8), modes=None) -> dict:
    """The study's sliders (and a mode selector): ``ratio``, ``block_size``[, ``mode``].

    ``continuous_update=False``: a callback runs when a slider is released, not per pixel.
    """
    import ipywidgets as w
    c = dict(ratio=w.SelectionSlider(options=list(ratios), value=ratios[len(ratios) // 2], description="ratio",
                                     continuous_update=False),
             block_size=w.SelectionSlider(options=list(block_sizes), value=block_sizes[len(block_sizes) // 2],
                                          description="block_size", continuous_update=False))
    if modes:
        c["mode"] = w.ToggleButtons(options=list(modes), description="mode")
    return c


def interactive_figure(draw, name: str, **widgets):
    """Lay out ``widgets``, redraw ``draw(**values) -> figure`` when they change, and add an
    "export" button that saves the current figure to ``figures/<name>.png/.pdf``.

    Returns the container widget (display it as the cell's last expression).
    """
    import ipywidgets as w
    import matplotlib.pyplot as plt
    from IPython.display import display
    out, status, state = w.Output(), w.Label(), {}

    def redraw(**values):
        with out:
            out.clear_output(wait=True)
            state["fig"] = draw(**values)
            display(state["fig"])
            plt.close(state["fig"])  # shown once, in the output widget; still exportable

    w.interactive_output(redraw, widgets)
    button = w.Button(description="export figure", icon="download")

    def export(_):
        paths = save_figure(state["fig"], name)
        status.value = f"saved {', '.join(p.name for p in paths)} in {paths[0].parent}"

    button.on_click(export)
    return w.VBox([w.HBox(list(widgets.values())), out, w.HBox([button, status])])


# ---------------------------------------------------------------------------
# notebooks: presets and headless execution
# ---------------------------------------------------------------------------
NOTEBOOK_DIR = ROOT / "notebooks"
PRESETS = {
    # CI: every code path, tiny sizes
    "ci": dict(n_images=4, n_test=32, rate_sample=4, block_sizes=[2, 4], ratios=[0.5, 0.05], bits=[2],
               finetune_steps=4, eval_every=2, train_subset=64, val_subset=32, qualities=[10, 75],
               candidate_ratios=[0.5, 0.05], target_bpp=[8.0], val_rate_sample=4),
    # make study: about 20 minutes on 2 CPU cores
    "default": dict(n_images=64, n_test=1000, rate_sample=100, block_sizes=[2, 4], ratios=RATIOS,
                    bits=[2, 4], finetune_steps=150, eval_every=50, train_subset=10000, val_subset=500,
                    qualities=[5, 10, 20, 30, 50, 75, 90], candidate_ratios=RATIOS, target_bpp=[1.0],
                    val_rate_sample=50),
    # PRESET=full: the whole grid, for a GPU machine
    "full": dict(n_images=256, n_test=10000, rate_sample=2000, block_sizes=[1, 2, 4, 8],
                 ratios=RATIOS + [0.001], bits=[2, 4, 8], finetune_steps=1500, eval_every=100,
                 train_subset=None, val_subset=5000, qualities=[5, 10, 20, 30, 50, 75, 90],
                 candidate_ratios=RATIOS + [0.001], target_bpp=[0.5, 1.0, 2.0, 4.0], val_rate_sample=500),
}


def run_notebooks(preset: str = "default", out_dir: str | Path = ROOT / "build" / "notebooks",
                  only: list[str] | None = None) -> list[Path]:
    """Execute notebooks 01-06 in order with papermill, injecting the preset's parameters
    (each notebook gets the ones its ``parameters`` cell declares). Returns the executed copies."""
    import papermill as pm
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {preset!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for nb in sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")):
        if only and not any(nb.name.startswith(o) for o in only):
            continue
        declared = pm.inspect_notebook(str(nb))
        params = {k: v for k, v in PRESETS[preset].items() if k in declared}
        print(f"[{preset}] {nb.name} {params}", flush=True)
        pm.execute_notebook(str(nb), str(out_dir / nb.name), parameters=params, cwd=str(NOTEBOOK_DIR),
                            kernel_name="python3", progress_bar=False)
        done.append(out_dir / nb.name)
    return done


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["pretrain"]:
        ap = argparse.ArgumentParser(prog="blocksparse_utils.py pretrain")
        ap.add_argument("--dataset", default="fashion-mnist")
        ap.add_argument("--epochs", type=int, default=5)
        ap.add_argument("--batch-size", type=int, default=128)
        ap.add_argument("--lr", type=float, default=0.1)
        ap.add_argument("--seed", type=int, default=0)
        ap.add_argument("--subset", type=int, default=None)
        ap.add_argument("--bf16", action="store_true", help="bf16 autocast (fast only on CPUs with AMX/avx512_bf16)")
        ap.add_argument("--resume", action="store_true")
        ap.add_argument("--anneal-at", type=int, default=None,
                        help="follow the one-cycle schedule for K-1 epochs, then anneal to zero in epoch K and stop")
        a = ap.parse_args(argv[1:])
        card = pretrain(a.dataset, a.epochs, a.batch_size, a.lr, a.seed, a.resume, a.subset,
                        bf16=a.bf16, anneal_at=a.anneal_at)
        print(json.dumps(card, indent=2))
        return
    if argv[:1] == ["bench"]:
        return benchmark()
    if argv[:1] == ["notebooks"]:
        ap = argparse.ArgumentParser(prog="blocksparse_utils.py notebooks")
        ap.add_argument("--preset", default="default", choices=tuple(PRESETS))
        ap.add_argument("--out", default=str(ROOT / "build" / "notebooks"))
        ap.add_argument("--only", nargs="*", default=None, help="notebook prefixes, e.g. 01 03")
        a = ap.parse_args(argv[1:])
        paths = run_notebooks(a.preset, a.out, a.only)
        print("executed notebooks:", *paths, f"figures: {FIGURES_DIR}", f"results: {RESULTS_DIR}", sep="\n  ")
        return
    ap = argparse.ArgumentParser(description="Sweep the ratios of one mode and block size "
                                 "(the original script's interface) and write results and a figure.")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--split-at", default="layer1", choices=SPLIT_POINTS)
    ap.add_argument("--mode", default="channel-wise", choices=MODES)
    ap.add_argument("--block-size", type=int, default=4)
    ap.add_argument("--bits", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--ratios", type=float, nargs="+", default=RATIOS)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--subset", nargs="?", const=1000, type=int, default=None,
                    help="evaluate only the first N test images (default N=1000)")
    ap.add_argument("--rate-sample", type=int, default=200)
    ap.add_argument("--checkpoint", default=None, help="a ResNet-18 state_dict (default: the shipped one)")
    a = ap.parse_args(argv)
    set_seed(0)
    model = load_pretrained(a.dataset, a.split_at, a.checkpoint).to(default_device())
    data = load_dataset(a.dataset, "test", subset=a.subset)
    rows = sweep(model, data, [a.mode], [a.block_size], a.ratios, a.bits, a.rate_sample, batch_size=a.batch_size)
    name = f"sweep_{a.mode}_B{a.block_size}"
    path = save_results(rows, vars(a), name)
    import pandas as pd
    df = pd.DataFrame(rows)
    write_compression_results(df, RESULTS_DIR / f"compression_results_{a.mode}_B{a.block_size}.json")
    ref = accuracy(model, data)
    figs = save_figure(plot_accuracy_vs_bpp(df, ref), f"accuracy_vs_compression_{a.mode}_B{a.block_size}")
    print(df[["mode", "block_size", "ratio", "bits", "accuracy", "bpp"]].to_string(index=False))
    print(f"uncompressed accuracy {ref:.4f}\nresults: {path}\nfigures: {', '.join(map(str, figs))}")


def benchmark() -> None:
    """Encode/decode speed on a [128, 64, 32, 32] ReLU tensor (4x4, ratio 0.1, channel-wise,
    4 bits) in MB/s of float32 input, with zstd level 3 on the raw bytes for reference."""
    import zstandard
    set_seed(0)
    x = torch.randn(128, 64, 32, 32).relu()
    cfg = CodecConfig(4, 0.1, "channel-wise", 4)
    mb = x.numel() * 4 / 1e6

    def best(f, k=5):
        f()
        times = []
        for _ in range(k):
            t = time.perf_counter()
            f()
            times.append(time.perf_counter() - t)
        return min(times)

    blob = encode(x, cfg)
    raw = x.numpy().tobytes()
    z = zstandard.ZstdCompressor(level=3).compress(raw)
    rows = [("blocksparse encode", best(lambda: encode(x, cfg)), len(blob)),
            ("blocksparse decode", best(lambda: decode(blob)), len(blob)),
            ("blocksparse compress (no entropy coding)", best(lambda: compress(x, cfg)), len(blob)),
            ("zstd-3 compress (lossless)", best(lambda: zstandard.ZstdCompressor(level=3).compress(raw)), len(z)),
            ("zstd-3 decompress", best(lambda: zstandard.ZstdDecompressor().decompress(z)), len(z))]
    print(f"input: {tuple(x.shape)} float32 = {mb:.1f} MB; {cfg}; torch threads {torch.get_num_threads()}")
    for name, t, size in rows:
        print(f"{name:42s} {mb / t:8.1f} MB/s  ({1000 * t:6.1f} ms, stream {size / 1e6:.3f} MB)")


if __name__ == "__main__":
    main()
