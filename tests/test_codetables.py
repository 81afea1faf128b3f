"""Code tables (blocksparse.codetables): geometry, fitted tables and the codebook file, each checked
against values derived by hand or a reader written here from the file layout in the module docstring."""
import binascii
import math
import struct

import numpy as np
import pytest
import torch
import zstandard

from blocksparse import codetables as ct
from blocksparse.codec import MODES, CodecConfig


def _blocks(values) -> torch.Tensor:
    """One 1x4x4 image of four constant 2x2 blocks, cells in row-major order: a block's energy is
    4 x its value squared, so the kept blocks are the largest values."""
    x = torch.zeros(1, 1, 4, 4)
    for cell, v in enumerate(values):
        r, c = divmod(cell, 2)
        x[0, 0, 2 * r:2 * r + 2, 2 * c:2 * c + 2] = v
    return x


# three fitting images, global selection of one block in four (ratio 0.25): cells 0, 0 and 3 kept
FIT = torch.cat([_blocks([4, 1, 2, 3]), _blocks([5, 2, 1, 1]), _blocks([1, 2, 3, 6])])
CFG = CodecConfig(2, 0.25, "global", 2, zero_border=False)  # every pixel of a block coded


@pytest.mark.parametrize("mode, ratio, cells, kmax", [
    # (4, 7, 8) with B=3: ceil(7/3) x ceil(8/3) = 3 x 3 = 9 blocks per channel
    ("channel-wise", 0.25, 36, 8),   # 4 channels x 9 cells; k = floor(0.25 x 9) = 2 per channel
    ("region-wise", 0.25, 9, 2),     # one cell per block position, shared by the channels
    ("global", 0.25, 36, 9),         # floor(0.25 x 36) = 9
    ("global", 0.01, 36, 1),         # floor(0.36) = 0, at least one block is kept
])
def test_geometry_by_hand(mode, ratio, cells, kmax):
    assert ct.geometry(CodecConfig(3, ratio, mode, 2), (4, 7, 8)) == (cells, kmax)


def test_prior_and_per_channel_tables_are_the_counts_by_hand():
    cb = ct.fit_codebook(FIT, CFG, "ans", "prior", value_model="per-channel")
    assert cb.n_fit == 3
    assert cb.tables["positions"].tolist() == [2, 0, 0, 1]  # cell 0 kept twice, cell 3 once
    # the kept count: kmax = 1 and every image keeps 1, deficit 0 (class 0) three times; ANS
    # frequencies of the add-one counts [4, 1] scaled to 2**16 and rounded: 262144/5, 65536/5
    assert cb.tables["kept"].tolist() == [round(4 * 2**16 / 5), round(2**16 / 5)]
    # per-channel values: every kept block is its image's largest value, the top level (3) at 2 bits;
    # rows are channel x 4 contexts + context, columns the 4 levels. Slot 1 of a block has context 0
    # (no earlier pixel): 3 images; slots 2-4 have context 1 + bit length of 3 = 3: 9 pixels
    want = np.zeros(16, int)
    want[0 * 4 + 3], want[3 * 4 + 3] = 3, 9
    assert cb.tables["values"].tolist() == want.tolist()


def test_huffman_and_ans_delta_tables_by_hand():
    h = ct.fit_codebook(FIT, CFG, "huffman", "delta")
    a = ct.fit_codebook(FIT, CFG, "ans", "delta", value_model="global")
    # gaps before the kept cell: 0, 0 and 3, classes (bit lengths) 0, 0, 2 of the 4 classes a 4-cell
    # map has (bit length of 4, plus one); add-one counts [3, 1, 2, 1]
    assert h.tables["positions"].tolist() == [1, 3, 2, 3]  # Huffman of 3, 1, 2, 1
    assert a.tables["positions"].tolist() == [round(c * 2**16 / 7) for c in (3, 1, 2, 1)]
    # values: 12 pixels at level 3, add-one counts [1, 1, 1, 13]: level 3 gets the 1-bit code
    assert h.tables["values"][3] == 1 and sorted(h.tables["values"].tolist()) == [1, 2, 3, 3]
    assert a.tables["values"].tolist() == [round(c * 2**16 / 16) for c in (1, 1, 1, 13)]
    assert h.tables["kept"].tolist() == [1, 1]
    # table_bits: Huffman code lengths; ANS -log2 of the frequency's share
    sym = np.array([0, 1, 2, 3])
    assert ct.table_bits(h, "positions", sym).tolist() == [1, 3, 2, 3]
    f = a.tables["positions"]
    assert ct.table_bits(a, "positions", sym) == pytest.approx([-math.log2(v / f.sum()) for v in f])


def _varints(data: bytes) -> list[int]:
    """LEB128, read here (7 bits a byte, low first, high bit: more follows)."""
    out, v, shift = [], 0, 0
    for byte in data:
        v |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            out.append(v)
            v = shift = 0
    assert shift == 0, "truncated varint"
    return out


def _read_file(data: bytes) -> dict:
    """The codebook file as the module docstring lays it out, read without codetables."""
    assert data[:4] == b"BSCB" and data[4] == ct.VERSION
    assert struct.unpack("<I", data[-4:])[0] == binascii.crc32(data[:-4])
    flags, bits, ratio = data[5], data[6], struct.unpack("<d", data[7:15])[0]
    body = data[15:-4]
    if flags & 0x80:
        body = zstandard.ZstdDecompressor().decompress(body)
    numbers = _varints(body)
    b, c, h, w, n_fit = numbers[:5]
    tables, rest = {}, numbers[5:]
    for name in ("values", "positions", "kept"):
        size, rest = rest[0], rest[1:]
        tables[name], rest = rest[:size], rest[size:]
    assert rest == []
    return dict(mode=("channel-wise", "region-wise", "global")[flags & 3], zero_border=bool(flags >> 2 & 1),
                coder=("huffman", "ans")[flags >> 3 & 1], position_coding=("delta", "bitmap", "prior")[flags >> 4 & 3],
                value_model=("global", "per-channel")[flags >> 6 & 1], zstd=bool(flags & 0x80), bits=bits,
                ratio=ratio, block_size=b, shape=(c, h, w), n_fit=n_fit, tables=tables)


def test_the_file_holds_what_its_layout_says():
    g = torch.Generator().manual_seed(0)
    big = torch.randn(30, 8, 8, 8, generator=g).relu()
    cases = [(ct.fit_codebook(FIT, CFG, "huffman", "delta"), FIT),
             (ct.fit_codebook(big, CodecConfig(2, 0.3, "channel-wise", 4), "ans", "prior", value_model="per-channel"), big)]
    zstd = []
    for cb, fit in cases:
        f = _read_file(cb.to_bytes())
        assert f["mode"] == cb.cfg.mode and f["zero_border"] == cb.cfg.zero_border and f["bits"] == cb.cfg.bits
        assert f["ratio"] == cb.cfg.ratio and f["block_size"] == cb.cfg.block_size
        assert (f["coder"], f["position_coding"], f["value_model"]) == (cb.coder, cb.position_coding, cb.value_model)
        assert f["shape"] == tuple(fit.shape[1:]) and f["n_fit"] == len(fit)
        assert f["tables"] == {k: v.tolist() for k, v in cb.tables.items()}
        assert ct.codebook_bytes(cb) == len(cb.to_bytes())
        zstd.append(f["zstd"])
    assert zstd == [False, True]  # the tiny tables are stored plain, the large sparse ones compressed
    assert MODES == ("channel-wise", "region-wise", "global")  # the order the reader above assumes


def test_save_and_load_give_the_same_file(tmp_path):
    cb = ct.fit_codebook(FIT, CFG, "ans", "prior", value_model="per-channel")
    n = ct.save_codebook(cb, tmp_path / "x.codebook")
    assert n == len(cb.to_bytes()) == (tmp_path / "x.codebook").stat().st_size
    again = ct.load_codebook(tmp_path / "x.codebook")
    assert again.to_bytes() == cb.to_bytes() and again.n_fit == 3


@pytest.mark.parametrize("change, name", [
    (dict(shape=(1, 4)), "shape"),
    (dict(shape=(1, 1, 4)), "shape"),         # a 2x2 block does not fit one row
    (dict(coder="lzw"), "coder"),
    (dict(position_coding="rle"), "position_coding"),
    (dict(value_model="per-pixel"), "value_model"),
    (dict(n_fit=-1), "n_fit"),
    (dict(tables={"values": [1, 1]}), "tables"),
    (dict(tables={"values": [1, 2, 3, 3], "positions": [1, 3, 2, 3], "kept": [1]}), "tables\\['kept'\\]"),
    # 1/2 + 1/2 + 1/4 + 1/4 > 1: no prefix code has these lengths (Kraft)
    (dict(tables={"values": [1, 1, 2, 2], "positions": [1, 3, 2, 3], "kept": [1, 1]}), "tables\\['values'\\]"),
    (dict(coder="huffman", position_coding="prior"), "ANS only"),
])
def test_a_codebook_that_cannot_be_is_a_value_error_naming_it(change, name):
    ok = dict(cfg=CFG, shape=(1, 4, 4), coder="huffman", position_coding="delta",
              tables={"values": [3, 3, 2, 1], "positions": [1, 3, 2, 3], "kept": [1, 1]}, n_fit=3)
    ct.Codebook(**ok)  # the hand-made tables above are a valid codebook
    with pytest.raises(ValueError, match=name):
        ct.Codebook(**(ok | change))


def test_prior_counts_cannot_exceed_the_images_fitted():
    tables = {"values": [1, 1, 1, 1], "positions": [2, 0, 0, 4], "kept": [1, 1]}
    with pytest.raises(ValueError, match="n_fit"):
        ct.Codebook(CFG, (1, 4, 4), "ans", "prior", tables, n_fit=3)
