"""The self-contained stream: exact round trips, the breakdown checked independently, and a parser
that only ever raises ValueError (fuzzed directly: no catch-all hides other errors)."""
import binascii
import struct

import numpy as np
import pytest
import torch
from bitarray import bitarray
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import blocksparse_utils as bsu
from blocksparse.bitstream import MAGIC, VERSION, varint
from blocksparse.codec import analyze
from blocksparse.entropy import POSITION_CODINGS
from strategies import cases


@given(cases())
def test_round_trip_equals_compress(case):
    x, cfg = case
    assert torch.equal(bsu.decode(bsu.encode(x, cfg)), bsu.compress(x, cfg))


@given(cases())
@example(case=(torch.tensor([[[[0.0015, -0.0003]]]]), bsu.CodecConfig(1, 1.0, "channel-wise", 1)))  # all border
def test_rate_breakdown_sums_to_stream_length(case):
    x, cfg = case
    blob = bsu.encode(x, cfg)
    r = bsu.rate(blob, (28, 28))
    assert r["bytes"] == len(blob)
    # the header's size, recomputed from the layout: magic+version+CRC, flags, six LEB128
    # varints, a bf16 scale per image (and an offset per image when values are negative)
    n, c, h, w = x.shape
    mask = bsu.select_blocks(bsu.block_energy(x, cfg.block_size, cfg.zero_border), cfg.ratio, cfg.mode)
    kept = int(mask[:, :1 if cfg.mode == "region-wise" else None].sum())
    varints = sum(max(1, -(-v.bit_length() // 7)) for v in (cfg.block_size, n, c, h, w, kept))
    # an offset per image is stored when any coded value (kept block, not border or padding) is negative
    signed = bool((x[bsu.pixel_mask(mask, h, w, cfg.block_size, cfg.zero_border)] < 0).any())
    assert r["breakdown"]["header"] == 8 * (5 + 1 + varints + 2 * n * (1 + signed))
    assert 0 <= r["breakdown"]["padding"] < 8
    assert sum(r["breakdown"].values()) == 8 * len(blob)
    assert r["bpp"] == pytest.approx(8 * len(blob) / (len(x) * 28 * 28))
    assert r["position_coding"] in POSITION_CODINGS
    assert set(r["estimates"]) == {"values_entropy_bits", "positions_entropy_bits"}


def _independent_canonical(lengths):
    """Canonical code from lengths, written out independently of the module."""
    syms = sorted((int(l), s) for s, l in enumerate(lengths) if l)
    table, code, prev = {}, 0, 0
    for length, s in syms:
        code <<= length - prev
        prev = length
        table[s] = bitarray(format(code, f"0{length}b"))
        code += 1
    return table


@given(cases())
def test_values_decode_with_bitarrays_own_decoder(case):
    x, cfg = case
    blob = bsu.encode(x, cfg)
    r = bsu.rate(blob, (1, 1))
    body = bitarray()
    body.frombytes(blob[r["breakdown"]["header"] // 8:])
    nsym = int(body[:9].to01(), 2)
    lengths = []
    if nsym:
        maxlen = int(body[9:14].to01(), 2)
        width = maxlen.bit_length()
        lengths = [int(body[14 + i * width:14 + (i + 1) * width].to01(), 2) for i in range(nsym)]
    start = r["breakdown"]["tables"] + r["breakdown"]["positions"]
    section = body[start:start + r["breakdown"]["values"]]
    got = list(section.decode(_independent_canonical(lengths))) if len(section) else []
    a = analyze(x, cfg)
    assert got == a["levels"][a["valid"]].long().tolist()
    # the values section is exactly the sum of the code lengths of those symbols
    assert r["breakdown"]["values"] == sum(lengths[s] for s in got)


def test_position_coding_picks_the_cheaper():
    x = torch.rand(1, 16, 32, 32)
    dense = bsu.rate(bsu.encode(x, bsu.CodecConfig(1, 0.7, "global", 2)), (32, 32))
    sparse = bsu.rate(bsu.encode(x, bsu.CodecConfig(1, 0.01, "global", 2)), (32, 32))
    assert dense["position_coding"] == "bitmap" and sparse["position_coding"] == "delta"


def _stream():
    x = torch.rand(2, 6, 12, 12) * (torch.rand(2, 6, 12, 12) < 0.4)
    return [bsu.encode(x, bsu.CodecConfig(3, r, m, b)) for r, m, b in
            [(0.2, "channel-wise", 3), (0.9, "global", 8), (0.05, "region-wise", 1)]]


@pytest.mark.parametrize("blob", [b"", b"B", b"BS", b"BS\x01", b"\x89PNG\r\n\x1a\n" + bytes(50),
                                  bytes(100), b"BS\x07" + bytes(20), "BS"])
def test_decode_foreign_or_empty(blob):
    with pytest.raises(ValueError):
        bsu.decode(blob)


def test_decode_every_truncation_and_byte_flip():
    for blob in _stream():
        for cut in range(len(blob)):
            with pytest.raises(ValueError):
                bsu.decode(blob[:cut])
        with pytest.raises(ValueError):
            bsu.decode(blob + b"\x00")
        rng = np.random.default_rng(0)
        for i in range(len(blob)):
            bad = bytearray(blob)
            bad[i] ^= 1 << int(rng.integers(8)) if i % 2 else int(rng.integers(1, 256))
            with pytest.raises(ValueError):
                bsu.decode(bytes(bad))


def _reseal(rest: bytes) -> bytes:
    return MAGIC + bytes([VERSION]) + struct.pack("<H", binascii.crc_hqx(rest, 0)) + rest


def test_a_scale_whose_top_level_overflows_float32_is_refused():
    """bf16's largest finite scale times the top level is infinite in float32: the fuzzer's example
    (a mutated scale, checksum resealed) decoded to infinities before the check."""
    x = torch.arange(1.0, 17.0).reshape(1, 1, 4, 4)
    blob = bsu.encode(x, bsu.CodecConfig(2, 1.0, "global", 8))
    rest = bytearray(blob[5:])
    at = 1 + 6  # the flags byte, then six one-byte varints (block size 2, N 1, C 1, H 4, W 4, kept 4)
    assert struct.unpack("<H", bytes(rest[at:at + 2]))[0] == bsu.inspect_stream(blob)["scale"][0]
    assert torch.equal(bsu.decode(_reseal(bytes(rest))), bsu.compress(x, bsu.CodecConfig(2, 1.0, "global", 8)))
    rest[at:at + 2] = struct.pack("<H", 0x7F7F)  # 3.39e38, finite on its own
    with pytest.raises(ValueError, match="invalid scale"):
        bsu.decode(_reseal(bytes(rest)))


def test_decode_rejects_absurd_header_before_allocating():
    absurd = bytes([0b0110_0100]) + b"".join(varint(v) for v in (4, 1 << 20, 1 << 20, 1 << 16, 1 << 16, 1))
    with pytest.raises(ValueError, match="too large"):
        bsu.decode(_reseal(absurd + bytes(64)))


def test_decode_corruptions_behind_a_valid_checksum():
    """Garbage with a correct CRC (a buggy or hostile writer) still only raises ValueError."""
    rng = np.random.default_rng(1)
    for blob in _stream():
        for _ in range(300):
            rest = bytearray(blob[5:])
            for _ in range(int(rng.integers(1, 4))):
                rest[int(rng.integers(len(rest)))] = int(rng.integers(256))
            if rng.random() < 0.3:
                rest = rest[:int(rng.integers(len(rest)))]
            try:
                y = bsu.decode(_reseal(bytes(rest)))
            except ValueError:
                continue
            assert y.ndim == 4 and torch.isfinite(y).all()


# --- the parser, fuzzed directly ----------------------------------------------
_REAL = None


def _real_streams():
    global _REAL
    if _REAL is None:
        g = torch.Generator().manual_seed(5)
        x = torch.randn(2, 6, 12, 12, generator=g).relu() * (torch.rand(2, 6, 12, 12, generator=g) < 0.5)
        xs = torch.randn(1, 3, 9, 7, generator=g)  # signed: offsets in the header
        _REAL = [bsu.encode(x, bsu.CodecConfig(3, r, m, q)) for r, m, q in
                 [(0.2, "channel-wise", 3), (0.9, "global", 8), (0.05, "region-wise", 1), (0.5, "global", 2)]]
        _REAL.append(bsu.encode(xs, bsu.CodecConfig(2, 0.4, "channel-wise", 4)))
    return _REAL


def _parse_or_value_error(blob):
    """The parser's contract: a ValueError, or a stream whose decoded tensor is finite and of its shape."""
    try:
        p = bsu.inspect_stream(blob)
    except ValueError:
        return
    y = bsu.decode(blob)
    assert tuple(y.shape) == tuple(p["shape"]) and torch.isfinite(y).all()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=80))
def test_parser_on_random_bytes(blob):
    _parse_or_value_error(blob)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.data())
def test_parser_on_mutated_real_streams_with_valid_checksums(data):
    """Mutations behind a recomputed CRC reach every check of the parser (a flipped byte alone
    only exercises the checksum)."""
    blob = data.draw(st.sampled_from(_real_streams()))
    rest = bytearray(blob[5:])
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["set", "flip", "cut", "insert"]))
        if kind == "cut" and len(rest) > 1:
            rest = rest[:data.draw(st.integers(1, len(rest) - 1))]
        elif kind == "insert":
            i = data.draw(st.integers(0, len(rest)))
            rest[i:i] = data.draw(st.binary(min_size=1, max_size=4))
        elif rest:
            i = data.draw(st.integers(0, len(rest) - 1))
            rest[i] = data.draw(st.integers(0, 255)) if kind == "set" else rest[i] ^ (1 << data.draw(st.integers(0, 7)))
    _parse_or_value_error(_reseal(bytes(rest)))


def test_bpp_is_eight_bits_per_byte_over_the_input_pixels_and_the_only_place_it_is_computed():
    import re
    from blocksparse.bitstream import bpp
    from blocksparse.runtime import ROOT
    assert bpp(98, (28, 28)) == 1.0  # 784 bits over 784 pixels
    assert bpp(98, (28, 28), n_images=2) == 0.5 and bpp(12.25, [14, 7]) == 1.0
    for bad in (((0, 28), 1), ((28, 28), 0)):
        with pytest.raises(ValueError, match="positive"):
            bpp(1, *bad)
    x = torch.rand(2, 3, 14, 14)
    blob = bsu.encode(x, bsu.CodecConfig(2, 0.5, "global", 2))
    assert bsu.rate(blob, (28, 28))["bpp"] == 8 * len(blob) / (2 * 28 * 28)  # by hand: two images of 28x28
    # every other module calls bpp(): no second formula of 8 x bytes over pixels
    # 8 x bytes over anything, or anything over the input's height times width (an estimate in bits too);
    # a differentiable rate term of a loss (bits over "pixels", a tensor) is not a measured rate and stays
    formulas = [re.compile(r"\b8(\.0)? \*[^#\n]*/ \("),
                re.compile(r"/ \(.*(shape\[-2\] \* [\w.\[\]]*shape\[-1\]|hw\[0\] \* \w*hw\[1\])")]
    offenders = [f"{p.name}:{i + 1}" for p in sorted((ROOT / "blocksparse").glob("*.py")) if p.name != "bitstream.py"
                 for i, line in enumerate(p.read_text().split("\n")) if any(f.search(line) for f in formulas)]
    assert offenders == [], f"{offenders}: compute bits per input pixel with blocksparse.bitstream.bpp"
