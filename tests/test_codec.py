"""The codec: selection, quantization, bitstream, rate, bad input."""
import binascii
import struct

import numpy as np
import pytest
import torch
from bitarray import bitarray
from hypothesis import given
from hypothesis import strategies as st

import blocksparse_utils as bsu


@st.composite
def cases(draw, max_n=3, max_c=5, max_hw=17):
    n, c = draw(st.integers(1, max_n)), draw(st.integers(1, max_c))
    h, w = draw(st.integers(1, max_hw)), draw(st.integers(1, max_hw))
    cfg = bsu.CodecConfig(
        block_size=draw(st.integers(1, min(h, w))),
        ratio=draw(st.sampled_from([1.0, 0.5, 0.3, 0.1, 0.05, 0.01]) | st.floats(0.001, 1.0)),
        mode=draw(st.sampled_from(bsu.MODES)),
        bits=draw(st.integers(1, 8)),
        zero_border=draw(st.booleans()))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    x = torch.randn(n, c, h, w, generator=g) * draw(st.sampled_from([1e-3, 1.0, 50.0]))
    kind = draw(st.sampled_from(["relu", "signed", "sparse", "ties"]))
    if kind == "relu":
        x = x.relu()
    elif kind == "sparse":
        x = x.relu() * (torch.rand(n, c, h, w, generator=g) < 0.1)
    elif kind == "ties":
        x = torch.ones(n, c, h, w)
    return x, cfg


@given(cases())
def test_round_trip_equals_compress(case):
    x, cfg = case
    assert torch.equal(bsu.decode(bsu.encode(x, cfg)), bsu.compress(x, cfg))


@given(cases())
def test_each_image_is_compressed_on_its_own(case):
    x, cfg = case
    whole = bsu.compress(x, cfg)
    for i in range(len(x)):
        assert torch.equal(bsu.decode(bsu.encode(x[i:i + 1], cfg)), whole[i:i + 1])


def _groups(t, mode):
    n, c, hb, wb = t.shape
    if mode == "channel-wise":
        return t.reshape(n * c, hb * wb)
    if mode == "global":
        return t.reshape(n, c * hb * wb)
    return t[:, 0].reshape(n, hb * wb)


@given(cases())
def test_kept_counts_and_strongest_blocks(case):
    x, cfg = case
    e = bsu.block_energy(x, cfg.block_size, cfg.zero_border)
    mask = bsu.select_blocks(e, cfg.ratio, cfg.mode)
    if cfg.mode == "region-wise":
        assert (mask == mask[:, :1]).all()
        e = e.sum(1, keepdim=True).expand_as(e)
    for eg, mg in zip(_groups(e, cfg.mode), _groups(mask, cfg.mode)):
        k = max(1, int(np.floor(cfg.ratio * len(eg) + 1e-9)))
        assert int(mg.sum()) == min(k, int((eg > 0).sum()))
        if mg.any() and (~mg).any():
            assert eg[mg].min() >= eg[~mg].max()


def _reference_selection(e, ratio, mode):
    """Dense reference: sort (-energy, index) in Python, keep the first k non-zero."""
    if mode == "region-wise":
        e = e.sum(1, keepdim=True)
    shape = e.shape
    out = np.zeros(e.numel(), bool)
    flat = e.reshape(-1).double().numpy()
    size = {"channel-wise": shape[2] * shape[3], "global": shape[1] * shape[2] * shape[3],
            "region-wise": shape[2] * shape[3]}[mode]
    for g0 in range(0, len(flat), size):
        k = max(1, int(np.floor(ratio * size + 1e-9)))
        order = sorted(range(size), key=lambda i: (-flat[g0 + i], i))[:k]
        for i in order:
            out[g0 + i] = flat[g0 + i] > 0
    return torch.from_numpy(out).view(shape)


@given(cases(max_n=2, max_c=3, max_hw=12))
def test_selection_matches_dense_reference(case):
    x, cfg = case
    e = bsu.block_energy(x, cfg.block_size, cfg.zero_border)
    mask = bsu.select_blocks(e, cfg.ratio, cfg.mode)
    ref = _reference_selection(e, cfg.ratio, cfg.mode)
    assert torch.equal(mask[:, :1] if cfg.mode == "region-wise" else mask, ref)


def test_block_energy_matches_unfold():
    x = torch.randn(2, 3, 11, 9)
    for b in (1, 2, 3, 4, 9):
        xz = x.clone()
        xz[..., 0, :] = xz[..., -1, :] = 0
        xz[..., :, 0] = xz[..., :, -1] = 0
        pad = torch.nn.functional.pad(xz, (0, -9 % b, 0, -11 % b))
        ref = torch.nn.functional.avg_pool2d(pad ** 2, b, divisor_override=1)
        torch.testing.assert_close(bsu.block_energy(x, b), ref)
        assert bsu.partition(x, b).shape == (2, 3, -(-11 // b), -(-9 // b), b, b)


@given(cases())
def test_quantization_error_within_half_step(case):
    x, cfg = case
    y = bsu.compress(x, cfg)
    n, c, h, w = x.shape
    mask = bsu.select_blocks(bsu.block_energy(x, cfg.block_size, cfg.zero_border), cfg.ratio, cfg.mode)
    pm = bsu.pixel_mask(mask, h, w, cfg.block_size, cfg.zero_border)
    assert (y[~pm] == 0).all()
    for i in range(n):
        kept = x[i][pm[i]]
        if len(kept) == 0:
            continue
        lo, hi = min(0.0, float(kept.min())), max(0.0, float(kept.max()))  # the range always holds 0
        step = (hi - lo) / (2 ** cfg.bits - 1)
        err = (y[i][pm[i]] - kept).abs().max()
        # bf16-stored scale rounds up by at most 2**-8 relative
        assert err <= step * (0.5 + 2 ** -7) + 1e-6 * (abs(lo) + float(kept.abs().max()))


def test_relu_zeros_stay_exact_and_scales_are_per_image():
    x = torch.zeros(2, 4, 8, 8)
    x[0, :, 2:4, 2:4] = 1.0
    x[1, :, 2:4, 2:4] = 100.0
    y = bsu.compress(x, bsu.CodecConfig(2, 1.0, "global", 2))
    assert (y[x == 0] == 0).all()
    # each image's maximum maps to the top level of its own scale (bf16, rounded up)
    torch.testing.assert_close(y, x, rtol=2 ** -7, atol=0)


@given(cases())
def test_rate_breakdown_sums_to_stream_length(case):
    x, cfg = case
    blob = bsu.encode(x, cfg)
    r = bsu.rate(blob, (28, 28))
    assert r["bytes"] == len(blob)
    assert sum(r["breakdown"].values()) == 8 * len(blob)
    assert r["bpp"] == pytest.approx(8 * len(blob) / (len(x) * 28 * 28))
    assert r["position_coding"] in bsu.POSITION_CODINGS
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
    a = bsu._analyze(x, cfg)
    assert got == a["levels"][a["valid"]].long().tolist()


def test_position_coding_picks_the_cheaper():
    x = torch.rand(1, 16, 32, 32)
    dense = bsu.rate(bsu.encode(x, bsu.CodecConfig(1, 0.7, "global", 2)), (32, 32))
    sparse = bsu.rate(bsu.encode(x, bsu.CodecConfig(1, 0.01, "global", 2)), (32, 32))
    assert dense["position_coding"] == "bitmap" and sparse["position_coding"] == "delta"


def test_huffman_lengths_stay_within_31_bits():
    fib = [1, 1]
    while len(fib) < 40:
        fib.append(fib[-1] + fib[-2])
    lengths = bsu.huffman_lengths(np.array(fib))
    assert lengths.max() <= 31
    assert sum(2.0 ** -l for l in lengths) <= 1.0


# --- bad input ------------------------------------------------------------
@pytest.mark.parametrize("kwargs, name", [
    (dict(block_size=0), "block_size"), (dict(block_size=2.5), "block_size"),
    (dict(ratio=0.0), "ratio"), (dict(ratio=1.5), "ratio"), (dict(ratio=float("nan")), "ratio"),
    (dict(bits=0), "bits"), (dict(bits=9), "bits"), (dict(mode="rows"), "mode"),
    (dict(zero_border="yes"), "zero_border")])
def test_bad_config(kwargs, name):
    with pytest.raises(ValueError, match=name):
        bsu.CodecConfig(**kwargs)


@pytest.mark.parametrize("x, name", [
    (torch.ones(3, 8, 8), "4-D"), (torch.ones(1, 1, 8, 8, dtype=torch.int64), "floating"),
    (torch.full((1, 1, 8, 8), float("nan")), "NaN"), (torch.full((1, 1, 8, 8), float("inf")), "Inf"),
    (torch.ones(1, 1, 3, 8), "block_size"), (np.ones((1, 1, 8, 8)), "Tensor"),
    (torch.ones(0, 1, 8, 8), "empty")])
def test_bad_features(x, name):
    for f in (bsu.compress, bsu.encode):
        with pytest.raises(ValueError, match=name):
            f(x, bsu.CodecConfig(block_size=4))


def test_bad_select_and_rate_arguments():
    e = torch.rand(1, 2, 3, 3)
    with pytest.raises(ValueError, match="ratio"):
        bsu.select_blocks(e, 0, "global")
    with pytest.raises(ValueError, match="mode"):
        bsu.select_blocks(e, 0.5, "diagonal")
    with pytest.raises(ValueError, match="input_hw"):
        bsu.rate(bsu.encode(torch.rand(1, 1, 4, 4), bsu.CodecConfig(2)), (0, 4))


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
    return bsu.MAGIC + bytes([bsu.VERSION]) + struct.pack("<H", binascii.crc_hqx(rest, 0)) + rest


def test_decode_rejects_absurd_header_before_allocating():
    absurd = bytes([0b0110_0100]) + b"".join(bsu._varint(v) for v in (4, 1 << 20, 1 << 20, 1 << 16, 1 << 16, 1))
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


@given(st.lists(st.tuples(st.integers(1, 64), st.integers(0, 2**64 - 1)), max_size=300))
def test_pack_bits_matches_bitarray_concatenation(fields):
    from bitarray.util import int2ba
    codes = [c % (1 << l) for l, c in fields]
    lengths = [l for l, _ in fields]
    expect = bitarray()
    for c, l in zip(codes, lengths):
        expect += int2ba(c, l)
    got = bsu.pack_bits(np.array(codes, np.uint64), np.array(lengths))
    assert got == expect
    assert bsu.unpack_bits(got, np.array(lengths)).tolist() == codes
