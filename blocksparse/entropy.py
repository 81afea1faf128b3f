"""Entropy coding: canonical Huffman (bitarray), raw bit fields, code-length tables, and the
symbols that describe kept-block positions (delta gap classes, nibble bitmaps)."""
from __future__ import annotations

import itertools

import numpy as np
from bitarray import bitarray
from bitarray.util import ba2int, canonical_decode, canonical_huffman, int2ba


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


def table_bits(lengths: np.ndarray) -> bitarray:
    """Code-length table: symbols used (9 bits), longest code (5 bits), then each length."""
    nsym = int(np.flatnonzero(lengths).max(initial=-1)) + 1
    if not nsym:
        return int2ba(0, 9)
    maxlen = int(lengths.max())
    width = maxlen.bit_length()
    return pack_bits(np.array([nsym, maxlen, *lengths[:nsym]], np.uint64), np.array([9, 5] + [width] * nsym))


class Reader:
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


def entropy_bits(symbols: np.ndarray) -> float:
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


def bit_classes(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-negative ints -> (class = bit length, mantissa, mantissa bits): ``v = 2**(class-1) +
    mantissa`` for ``v > 0`` (the leading 1 implied), class 0 for 0. The one definition of the
    classes that gaps and kept-count deficits are coded with, in both stream formats."""
    v = np.asarray(v, np.int64)
    cls = np.frexp(v.astype(np.float64))[1].astype(np.int64)  # exact bit length below 2**53
    mbits = np.maximum(cls - 1, 0)
    return cls, np.where(cls > 0, v - (1 << mbits), 0), mbits


def gap_symbols(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaps between kept cells -> ``bit_classes`` of each gap (mantissas as uint64)."""
    cls, mant, mbits = bit_classes(np.diff(np.flatnonzero(flat), prepend=-1) - 1)
    return cls, mant.astype(np.uint64), mbits


def nibbles(flat: np.ndarray) -> np.ndarray:
    padded = np.concatenate([flat, np.zeros(-len(flat) % 4, bool)]).reshape(-1, 4)
    return padded @ np.array([8, 4, 2, 1])


def encode_positions(flat: np.ndarray) -> tuple[int, bitarray, bitarray]:
    """The cheaper of the two position codings: (coding index, table bits, payload bits)."""
    options = []
    cls, mant, mbits = gap_symbols(flat)
    lengths = huffman_lengths(np.bincount(cls, minlength=64))
    options.append((0, table_bits(lengths), huffman_encode(cls, lengths) + pack_bits(mant, mbits)))
    nib = nibbles(flat)
    lengths = huffman_lengths(np.bincount(nib, minlength=16))
    options.append((1, table_bits(lengths), huffman_encode(nib, lengths)))
    return min(options, key=lambda o: len(o[1]) + len(o[2]))



# ---------------------------------------------------------------------------
# integrity check of the amortized streams (codebook.py)
# ---------------------------------------------------------------------------
def _crc8_entry(c: int) -> int:
    for _ in range(8):
        c = ((c << 1) ^ 0x107) if c & 0x80 else c << 1
    return c


_CRC8 = bytes(_crc8_entry(i) for i in range(256))


def crc8(data: bytes, init: int = 0) -> int:
    """CRC-8/SMBUS (polynomial 0x07, not reflected, no final xor) of ``data``, register starting at ``init``.

    It detects every single-bit error and every error burst of up to 8 bits. The register
    update is linear and invertible, so for any data two different ``init`` values give
    different results: a stream checked against another codebook's seed always fails when
    the seeds differ.
    """
    c = init
    for b in data:
        c = _CRC8[c ^ b]
    return c
