"""Amortized streams (blocksparse.codebook): round trips, independent size counts, fuzzed parsers."""
import binascii
import functools
import math
import struct

import numpy as np
import pytest
import torch
from bitarray.util import canonical_huffman
from hypothesis import given, settings
from hypothesis import strategies as st

from blocksparse import bitstream
from blocksparse import codebook as cbm
from blocksparse.codec import MODES, CodecConfig, analyze, compress, kept_per_group


def _features(g, n, c, h, w, kind):
    x = torch.randn(n, c, h, w, generator=g)
    if kind == "relu":
        return x.relu()
    if kind == "sparse":
        return x.relu() * (torch.rand(n, c, h, w, generator=g) < 0.1)
    if kind == "ties":
        return torch.ones(n, c, h, w)
    return x * 30.0  # signed, wide


@st.composite
def cases(draw, coders=cbm.CODERS):
    """(fitting features, features to encode, cfg, coder, position coding or None)."""
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    cfg = CodecConfig(block_size=draw(st.integers(1, min(h, w))),
                      ratio=draw(st.sampled_from([1.0, 0.5, 0.1, 0.01]) | st.floats(0.001, 1.0)),
                      mode=draw(st.sampled_from(MODES)), bits=draw(st.integers(1, 8)),
                      zero_border=draw(st.booleans()))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    kinds = ["relu", "signed", "sparse", "ties"]
    x = _features(g, n, c, h, w, draw(st.sampled_from(kinds)))
    fit = draw(st.sampled_from(["same kind", "other kind", "zeros", "one image"]))
    if fit == "zeros":
        z = torch.zeros(2, c, h, w)
    elif fit == "one image":
        z = _features(g, 1, c, h, w, "relu")
    else:
        z = _features(g, 4, c, h, w, draw(st.sampled_from(kinds)))
    coder = draw(st.sampled_from(coders))
    codings = cbm.POSITION_MODELS if coder == "ans" else bitstream.POSITION_CODINGS
    return z, x, cfg, coder, draw(st.sampled_from([None, *codings]))


# ---------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------
@given(cases())
def test_round_trip_equals_compress(case):
    z, x, cfg, coder, coding = case
    cb = cbm.fit_codebook(z, cfg, coder, coding)
    blobs = cbm.encode_batch(x, cb)
    assert len(blobs) == len(x)
    for i, blob in enumerate(blobs):
        assert cbm.encode(x[i:i + 1], cb) == blob  # a stream does not depend on its batch
        assert torch.equal(cbm.decode(blob, cb), compress(x[i:i + 1], cfg))


@pytest.mark.parametrize("coder, coding, value_model", [("huffman", "delta", "global"), ("ans", "delta", "global"),
                                                       ("ans", "prior", "per-channel")])
@pytest.mark.parametrize("mode", MODES)
def test_unseen_symbols_round_trip(coder, coding, value_model, mode):
    """Tables fitted on zeros (no kept block at all) still code any input of the shape."""
    cfg = CodecConfig(2, 0.3, mode, 8)
    cb = cbm.fit_codebook(torch.zeros(3, 3, 9, 7), cfg, coder, coding, value_model=value_model)
    x = torch.randn(4, 3, 9, 7, generator=torch.Generator().manual_seed(1)) * 1e3
    for i, blob in enumerate(cbm.encode_batch(x, cb)):
        assert torch.equal(cbm.decode(blob, cb), compress(x[i:i + 1], cfg))


def test_version_1_codebooks_are_refused_with_a_clear_error():
    cb = cbm.fit_codebook(torch.rand(3, 2, 8, 8), CodecConfig(2, 0.1, "global", 2), "ans")
    raw = bytearray(cb.to_bytes()[:-4])
    raw[4] = 1
    with pytest.raises(ValueError, match="version 1 .*refit"):
        cbm.codebook_from_bytes(bytes(raw) + struct.pack("<I", binascii.crc32(bytes(raw))))


def test_the_fitted_models_are_chosen_on_held_out_images():
    """With ten or more images, the choice is scored on every fifth image with models fitted on the
    rest: each position model fitted on the other images, its information content on the held-out
    ones computed here (the prior's probabilities with plain Python)."""
    g = torch.Generator().manual_seed(7)
    # kept cells concentrate where the features are large: a prior pays off
    z = torch.randn(20, 4, 8, 8, generator=g).relu() * torch.linspace(0.1, 3, 8).view(1, 1, 1, 8)
    cfg = CodecConfig(2, 0.1, "global", 2)
    held, fit = z[4::5], torch.cat([z[j:j + 1] for j in range(20) if j % 5 != 4])
    bits = {}
    for coding in cbm.POSITION_MODELS:
        cb = cbm.fit_codebook(fit, cfg, "ans", coding, value_model="global")
        total = 0.0
        for j in range(len(held)):
            syms, raw, _, _ = _image_symbols(held[j:j + 1], cfg, coding, "global", fit)
            total += raw + sum(-math.log2(q if q is not None else cb.tables[t][s] / cb.tables[t].sum())
                               for t, s, q in syms if t != "values")
        bits[coding] = total
    chosen = cbm.fit_codebook(z, cfg, "ans", value_model="global").position_coding
    assert chosen in bits and bits[chosen] == min(bits.values()), (chosen, bits)


@pytest.mark.parametrize("coder", cbm.CODERS)
def test_save_load_gives_identical_streams(coder, tmp_path):
    g = torch.Generator().manual_seed(2)
    cfg = CodecConfig(3, 0.2, "channel-wise", 3)
    cb = cbm.fit_codebook(torch.randn(6, 5, 10, 11, generator=g).relu(), cfg, coder)
    path = tmp_path / "cb.bin"
    assert cbm.save_codebook(cb, path) == path.stat().st_size == cbm.codebook_bytes(cb)
    loaded = cbm.load_codebook(path)
    assert (loaded.cfg, loaded.shape, loaded.coder, loaded.position_coding, loaded.n_fit) == \
           (cfg, (5, 10, 11), coder, cb.position_coding, 6)
    assert all(np.array_equal(loaded.tables[k], cb.tables[k]) for k in cbm.TABLES)
    x = torch.randn(3, 5, 10, 11, generator=g).relu()
    assert cbm.encode_batch(x, loaded) == cbm.encode_batch(x, cb)


def test_front_dispatches_to_the_self_contained_stream():
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3)).relu()
    cfg = CodecConfig(2, 0.1, "global", 2)
    blob = cbm.encode(x, cfg)
    assert blob == bitstream.encode(x, cfg)
    assert torch.equal(cbm.decode(blob), compress(x, cfg))
    assert cbm.rate(blob, (28, 28)) == bitstream.rate(blob, (28, 28))


# ---------------------------------------------------------------------------
# sizes, checked against independent counts
# ---------------------------------------------------------------------------
def _crc8_reference(data: bytes, init: int) -> int:
    """Bit by bit polynomial division (x^8 + x^2 + x + 1), MSB first."""
    reg = init
    for byte in data:
        for i in range(7, -1, -1):
            top = (reg >> 7) ^ (byte >> i & 1)
            reg = ((reg << 1) & 0xFF) ^ (0x07 if top else 0)
    return reg


@given(st.binary(max_size=64), st.integers(0, 255))
def test_crc8_matches_a_bitwise_reference(data, init):
    assert cbm.crc8(b"123456789") == 0xF4  # the catalogued check value of CRC-8/SMBUS
    assert cbm.crc8(data, init) == _crc8_reference(data, init)


def _blocks(a):
    """Kept blocks as plain lists: (channel, [(level, valid) per pixel, row-major in the block])."""
    where, levels, valid = a["where"], a["levels"].tolist(), a["valid"].tolist()
    out = []
    for k, ch in enumerate(where[1].tolist()):
        out.append((ch, [(int(v), ok) for row_v, row_ok in zip(levels[k], valid[k]) for v, ok in zip(row_v, row_ok)]))
    return out


def _context(pixels, j):
    """0 when no earlier pixel of the block is valid, else 1 + the bit length of the largest earlier one."""
    earlier = [v for v, ok in pixels[:j] if ok]
    return 0 if not earlier else 1 + max(earlier).bit_length()


def _prior_model(z, cfg):
    """Keep probability of every cell from the fitting images, with plain Python (add-half counts)."""
    counts = None
    for j in range(len(z)):
        a = analyze(z[j:j + 1], cfg)
        flat = (a["mask"][0, :1] if cfg.mode == "region-wise" else a["mask"][0]).reshape(-1).tolist()
        counts = [0] * len(flat) if counts is None else counts
        counts = [c + int(f) for c, f in zip(counts, flat)]
    return [(c + 0.5) / (len(z) + 1) for c in counts]


def _value_model(z, cfg):
    """(channel, context) -> level counts over the fitting images, with plain Python."""
    counts = {}
    for j in range(len(z)):
        for ch, pixels in _blocks(analyze(z[j:j + 1], cfg)):
            for i, (v, ok) in enumerate(pixels):
                if ok:
                    row = counts.setdefault((ch, _context(pixels, i)), [0] * 2 ** cfg.bits)
                    row[v] += 1
    return counts


def _image_symbols(x1, cfg, coding, value_model="global", z=None):
    """One image's stream content, with plain Python from the codec's decisions:
    ([(table, symbol, probability or None for the codebook's table)], raw bits, signed, scale/offset
    state). Prior positions and per-channel values get their probabilities from the fitting images ``z``."""
    a = analyze(x1, cfg)
    mask = a["mask"][0, :1] if cfg.mode == "region-wise" else a["mask"][0]
    flat = mask.reshape(-1).tolist()
    _, c, hb, wb = a["mask"].shape
    if cfg.mode == "channel-wise":
        kmax = c * kept_per_group(cfg.ratio, hb * wb)
    else:
        kmax = kept_per_group(cfg.ratio, len(flat))
    syms, raw = [], 0
    if coding in ("delta", "prior"):
        kept = [i for i, f in enumerate(flat) if f]
        deficit = kmax - len(kept)
        syms.append(("kept", deficit.bit_length(), None))
        raw += max(deficit.bit_length() - 1, 0)
    if coding == "delta":
        for prev, i in zip([-1] + kept, kept):
            syms.append(("positions", (i - prev - 1).bit_length(), None))
            raw += max((i - prev - 1).bit_length() - 1, 0)
    elif coding == "prior":
        p = _prior_model(z, cfg)
        order = sorted(range(len(p)), key=lambda i: (-p[i], i))
        last = max([r for r, i in enumerate(order) if flat[i]], default=-1)
        end = 0 if last < 0 else min(len(p), (last // 64 + 1) * 64)
        syms += [("positions", int(flat[i]), p[i] if flat[i] else 1 - p[i]) for i in order[:end]]
    else:
        padded = flat + [False] * (-len(flat) % 4)
        syms += [("positions", 8 * q[0] + 4 * q[1] + 2 * q[2] + q[3], None)
                 for q in zip(*[iter(map(int, padded))] * 4)]
    if value_model == "global":
        syms += [("values", int(v), None) for v in a["levels"][a["valid"]].tolist()]
    else:
        counts, blocks = _value_model(z, cfg), _blocks(a)
        for i in range(cfg.block_size ** 2):  # pixel slot by pixel slot
            for ch, pixels in blocks:
                if pixels[i][1]:
                    row = counts.get((ch, _context(pixels, i)), [0] * 2 ** cfg.bits)
                    syms.append(("values", pixels[i][0], (row[pixels[i][0]] + 0.5) / (sum(row) + 0.5 * len(row))))
    scale, offset = int(a["scale"][0]), int(a["offset"][0])
    return syms, raw, offset != 0, scale | offset << 16


@settings(max_examples=25)
@given(cases(coders=["huffman"]))
def test_huffman_stream_is_a_3_byte_header_plus_the_counted_codes(case):
    z, x, cfg, coder, coding = case
    cb = cbm.fit_codebook(z, cfg, coder, coding)
    for i, blob in enumerate(cbm.encode_batch(x, cb)):
        syms, raw, signed, _ = _image_symbols(x[i:i + 1], cfg, cb.position_coding)
        positions = raw + sum(int(cb.tables[t][s]) for t, s, _ in syms if t != "values")
        values = sum(int(cb.tables[t][s]) for t, s, _ in syms if t == "values")
        assert len(blob) == 3 + 2 * signed + math.ceil((positions + values) / 8)
        bd = cbm.rate(blob, (28, 28), codebook=cb)["breakdown"]
        assert bd == dict(header=24, tables=0, positions=positions, values=values + 16 * signed,
                          padding=-(positions + values) % 8)


@settings(max_examples=25)
@given(cases(coders=["ans"]))
def test_ans_stream_is_a_1_byte_header_plus_the_information_content(case):
    """ANS costs at most the information content under the fitted model (-sum log2 p, raw bits,
    the initial state), plus the byte rounding, small precision losses, and the growth of a
    small initial state up to the 24-bit model precision (symbols coded below it can also be
    cheaper than their information content, so there is no matching lower bound)."""
    z, x, cfg, coder, coding = case
    cb = cbm.fit_codebook(z, cfg, coder, coding)
    for i, blob in enumerate(cbm.encode_batch(x, cb)):
        syms, raw, _, state = _image_symbols(x[i:i + 1], cfg, cb.position_coding, cb.value_model, z)
        info = raw + math.log2(state) + sum(-math.log2(q if q is not None else cb.tables[t][s] / cb.tables[t].sum())
                                            for t, s, q in syms)
        assert 8 * (len(blob) - 1) <= info + max(0.0, 25 - math.log2(state)) + 12 + 0.01 * len(syms)
        bd = cbm.rate(blob, (28, 28), codebook=cb)["breakdown"]
        assert sum(bd.values()) == 8 * len(blob) and bd["tables"] == 0 and bd["header"] <= 24


def _counts(z, cfg, coding):
    """Add-one smoothed symbol counts over the fitting images, with plain Python."""
    counts = {}
    for j in range(len(z)):
        for t, s, _ in _image_symbols(z[j:j + 1], cfg, coding)[0]:
            counts.setdefault(t, {})
            counts[t][s] = counts[t].get(s, 0) + 1
    return counts


@settings(max_examples=20)
@given(cases(coders=["huffman"]))
def test_huffman_tables_are_optimal_for_the_smoothed_counts(case):
    z, _, cfg, coder, coding = case
    cb = cbm.fit_codebook(z, cfg, coder, coding)
    counts = _counts(z, cfg, cb.position_coding)
    for t in cbm.TABLES:
        lengths = cb.tables[t]
        if not len(lengths):
            continue
        freq = {s: counts.get(t, {}).get(s, 0) + 1 for s in range(len(lengths))}
        code = canonical_huffman(freq)[0]
        assert sum(f * int(lengths[s]) for s, f in freq.items()) == sum(f * len(code[s]) for s, f in freq.items())


def test_the_default_coder_is_the_study_s_ans():
    """The study codes with ANS (the protocol's runs, the CLI's --coder): a codebook fitted without
    naming a coder is the ANS one, the same file byte for byte."""
    g = torch.Generator().manual_seed(3)
    z = torch.randn(12, 4, 10, 10, generator=g).relu()
    cfg = CodecConfig(2, 0.1, "global", 2)
    default = cbm.fit_codebook(z, cfg)
    assert default.coder == "ans"
    assert default.to_bytes() == cbm.fit_codebook(z, cfg, "ans").to_bytes() != cbm.fit_codebook(z, cfg, "huffman").to_bytes()


def test_position_coding_chosen_at_fit_is_the_cheaper_one():
    """Huffman streams: across the delta/bitmap crossover (fewer than ten images: judged on the fitting images
    themselves), the chosen coding's real position bits are never more than the other's."""
    g = torch.Generator().manual_seed(4)
    z = torch.randn(6, 4, 16, 16, generator=g).relu()
    chosen_codings = set()
    for ratio in (1.0, 0.02, *np.linspace(0.05, 0.6, 23).round(3)):
        cfg = CodecConfig(2, ratio, "global", 2)
        chosen = cbm.fit_codebook(z, cfg, "huffman").position_coding
        bits = {}
        for cd in bitstream.POSITION_CODINGS:
            cb = cbm.fit_codebook(z, cfg, "huffman", position_coding=cd)
            bits[cd] = sum(cbm.rate(b, (28, 28), cb)["breakdown"]["positions"] for b in cbm.encode_batch(z, cb))
        assert bits[chosen] <= min(bits.values()), (ratio, chosen, bits)
        chosen_codings.add(chosen)
    assert chosen_codings == set(bitstream.POSITION_CODINGS)  # the sweep crosses over
    assert cbm.fit_codebook(z, CodecConfig(2, 1.0, "global", 2), "huffman").position_coding == "bitmap"
    assert cbm.fit_codebook(z, CodecConfig(2, 0.02, "global", 2), "huffman").position_coding == "delta"


# ---------------------------------------------------------------------------
# parser: wrong codebooks, corrupted and random bytes
# ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _fixture(coder, coding, value_model, signed):
    """A codebook and real streams of it (fitted on other images than those encoded)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(8, 3, 9, 10, generator=g)
    x = x if signed else x.relu()
    cb = cbm.fit_codebook(x[:5], CodecConfig(2, 0.2, "channel-wise", 3), coder, coding, value_model=value_model)
    return cb, cbm.encode_batch(x[5:], cb)


FIXTURES = ([("huffman", p, "global", s) for p in bitstream.POSITION_CODINGS for s in (False, True)]
            + [("ans", p, v, s) for p in cbm.POSITION_MODELS for v in cbm.VALUE_MODELS for s in (False, True)])


def _decodes_safely(blob, cb):
    """Only a ValueError or a finite tensor of the codebook's shape may come out."""
    try:
        y = cbm.decode(blob, cb)
    except ValueError:
        return False
    assert y.shape == (1, *cb.shape) and y.dtype == torch.float32 and torch.isfinite(y).all()
    return True


def _with_crc(body, cb):
    return bytes([cbm.crc8(body, cb.seed)]) + body


@pytest.mark.parametrize("key", FIXTURES)
def test_every_single_bit_flip_is_detected(key):
    cb, blobs = _fixture(*key)
    for blob in blobs:
        for bit in range(8 * len(blob)):
            bad = bytearray(blob)
            bad[bit // 8] ^= 1 << (bit % 8)
            with pytest.raises(ValueError):
                cbm.decode(bytes(bad), cb)


@given(st.sampled_from(FIXTURES), st.data())
def test_parser_fuzz_flips_and_truncations(key, data):
    cb, blobs = _fixture(*key)
    blob = bytearray(data.draw(st.sampled_from(blobs)))
    for _ in range(data.draw(st.integers(0, 4))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    blob = bytes(blob[:data.draw(st.integers(0, len(blob)))])
    _decodes_safely(blob, cb)
    if blob:  # again with a valid check byte, so that the parser itself is exercised
        _decodes_safely(_with_crc(blob[1:], cb), cb)


@given(st.sampled_from(FIXTURES), st.binary(max_size=200))
def test_parser_fuzz_random_bytes(key, body):
    cb, _ = _fixture(*key)
    _decodes_safely(body, cb)
    _decodes_safely(_with_crc(body, cb), cb)
    with pytest.raises(ValueError):
        cbm.rate(bytes([cbm.crc8(body, cb.seed) ^ 1]) + body, (28, 28), cb)


@pytest.mark.parametrize("key", FIXTURES)
def test_wrong_codebook_is_refused_or_harmless(key):
    cb, blobs = _fixture(*key)
    others = [_fixture(*k)[0] for k in FIXTURES if k != key]
    others.append(cbm.fit_codebook(torch.zeros(1, 4, 9, 9), CodecConfig(3, 0.5, "global", 1), cb.coder))
    for other in others:
        for blob in blobs:
            if other.seed != cb.seed:  # CRC linearity: another seed always fails the check
                with pytest.raises(ValueError, match="checksum"):
                    cbm.decode(blob, other)
            else:
                _decodes_safely(blob, other)
    assert len({o.seed for o in others}) > len(others) // 2


@given(st.sampled_from(FIXTURES[::2]), st.data())
def test_codebook_file_fuzz(key, data):
    good = _fixture(*key)[0].to_bytes()
    raw = bytearray(good[:-4])
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    raw = bytes(raw[:data.draw(st.integers(0, len(raw)))]) + data.draw(st.binary(max_size=8))
    for blob in (raw + good[-4:], raw + struct.pack("<I", binascii.crc32(raw))):
        try:
            cb = cbm.codebook_from_bytes(blob)
        except ValueError:
            continue
        assert isinstance(cb, cbm.Codebook) and cb.to_bytes() == blob


# ---------------------------------------------------------------------------
# bad arguments
# ---------------------------------------------------------------------------
def test_bad_arguments_raise_value_errors_naming_them():
    cfg = CodecConfig(2, 0.1, "global", 2)
    z = torch.rand(2, 3, 8, 8)
    cb = cbm.fit_codebook(z, cfg, "huffman")
    for call, name in [
        (lambda: cbm.fit_codebook(z, cfg, coder="lzw"), "coder"),
        (lambda: cbm.fit_codebook(z, cfg, position_coding="rle"), "position_coding"),
        (lambda: cbm.fit_codebook(z, cfg, "huffman", position_coding="prior"), "position_coding"),
        (lambda: cbm.fit_codebook(z, cfg, "huffman", value_model="per-channel"), "value_model"),
        (lambda: cbm.fit_codebook(z, cfg, "ans", value_model="per-pixel"), "value_model"),
        (lambda: cbm.fit_codebook(z[:0], cfg), "features"),
        (lambda: cbm.fit_codebook(z, "cfg"), "cfg"),
        (lambda: cbm.fit_codebook(z, cfg, batch_size=0), "batch_size"),
        (lambda: cbm.encode(z, cb), "x"),
        (lambda: cbm.encode(z[:1], "cb"), "cfg_or_cb"),
        (lambda: cbm.encode_batch(torch.rand(1, 3, 8, 9), cb), "x"),
        (lambda: cbm.decode(b"\0\0\0", codebook="cb"), "codebook"),
        (lambda: cbm.decode("text", cb), "blob"),
        (lambda: cbm.rate(cbm.encode(z[:1], cb), (0, 28), cb), "input_hw"),
        (lambda: cbm.load_codebook(__file__), "codebook"),
        (lambda: cbm.Codebook(cfg, (3, 8, 8), "huffman", "delta", {**cb.tables, "values": [1, 1, 1, 1]}), "tables"),
        (lambda: cbm.Codebook(cfg, (3, 1, 8), "huffman", "delta", cb.tables), "shape"),
    ]:
        with pytest.raises(ValueError, match=name):
            call()


def test_section_limits_rows_add_up_and_the_positions_references_are_computed_here():
    from blocksparse.limits import section_limits
    g = torch.Generator().manual_seed(9)
    fit = torch.randn(15, 3, 8, 8, generator=g).relu() * torch.linspace(0.2, 2, 8)
    x = torch.randn(5, 3, 8, 8, generator=g).relu() * torch.linspace(0.2, 2, 8)
    cfg = CodecConfig(2, 0.1, "global", 2)
    t = section_limits(fit, x, cfg, (28, 28))
    assert len(t) == len(cbm.POSITION_MODELS) * len(cbm.VALUE_MODELS) and t["chosen"].sum() == 1
    for _, r in t.iterrows():
        cb = cbm.fit_codebook(fit, cfg, "ans", r["position_coding"], value_model=r["value_model"])
        lengths = [len(b) for b in cbm.encode_batch(x, cb)]
        assert r["bpp"] == pytest.approx(8 * np.mean(lengths) / 784)
        assert r[["header_bits", "positions_bits", "values_bits", "padding_bits"]].sum() == pytest.approx(8 * np.mean(lengths))
    k = kept_per_group(0.1, 48)  # every image keeps k of the 48 cells
    assert t["uniform_set_bits"].iloc[0] == pytest.approx(math.log2(math.comb(48, k)))


def test_a_forged_zstd_frame_size_is_refused_before_allocating():
    """Found by the file fuzz: a compressed codebook whose frame claims a huge content size (the
    zstd decoder would try to allocate it) is a ValueError, not a MemoryError."""
    data = (b"BSCB\x02\xcc\x00\x9a\x99\x99\x99\x99\x99\xc9?(\xb5/\xfd\xc6\x9bM\x03\x00\xb2I\x19\x1a\xb0\xa9\x03y"
            b"\x8fY ")
    with pytest.raises(ValueError, match="corrupted codebook"):
        cbm.codebook_from_bytes(data + struct.pack("<I", binascii.crc32(data)))
