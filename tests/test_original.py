"""The original study's accounting (blocksparse.original), checked against hand-computed counts."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from blocksparse.codec import CodecConfig
from blocksparse.original import (BASELINE_BPP, CHOICES, TABLE_ENTRY_BITS, original_accounting,
                                  original_bit_breakdown, original_bits, original_bpp, original_choices,
                                  original_reconstruct, original_selection, original_value_bits)


def hand_features() -> torch.Tensor:
    """One image, two 7x7 channels; with B=4 the maps pad to 8x8, four blocks each.

    The border (rows/cols 0 and 6) is zeroed by the codec, row/col 7 is padding.
    Block (r, c) covers rows 4r..4r+3, cols 4c..4c+3.
      channel 0: block (1,1) interior rows 4-5, cols 4-5 = 3 -> energy 4*9 = 36
                 block (0,0) pixel (1,1) = 1                  -> energy 1
      channel 1: block (0,1) interior rows 1-3, cols 4-5 = 2 -> energy 6*4 = 24
                 block (1,0) interior rows 4-5, cols 1-3 = 1 -> energy 6
    The other blocks have energy 0. Values 0..3 with min 0 and max 3 make the 2-bit
    quantizer the identity (scale 3/3 = 1).
    """
    x = torch.zeros(1, 2, 7, 7)
    x[0, 0, 4:6, 4:6] = 3
    x[0, 0, 1, 1] = 1
    x[0, 1, 1:4, 4:6] = 2
    x[0, 1, 4:6, 1:4] = 1
    return x


def test_channel_wise_bits_by_hand():
    # k = max(1, int(4 blocks * 0.5)) = 2 per channel, strongest first:
    #   ch0: (1,1) energy 36, then (0,0) energy 1; ch1: (0,1) energy 24, then (1,0) energy 6.
    # Values: 4 blocks x 16 = 64 values (border and padding zeros included):
    #   level 3: 4 (ch0 (1,1)); level 2: 6 (ch1 (0,1)); level 1: 1 + 6 = 7; level 0: 64 - 17 = 47.
    #   Huffman {47, 7, 6, 4}: merge 4+6=10, 7+10=17, 17+47 -> lengths 1, 2, 3, 3
    #   -> 47*1 + 7*2 + 6*3 + 4*3 = 47 + 14 + 18 + 12 = 91 bits.
    # Positions in top-K order, (image, channel, row, col) in pixels:
    #   (0,0,4,4) (0,0,0,0) (0,1,0,4) (0,1,4,0)
    #   image   [0,0,0,0] -> deltas [0,0,0,0]   one symbol              -> 0 bits
    #   channel [0,0,1,1] -> deltas [0,0,1,0]   {0:3, 1:1}, 1 bit each  -> 4 bits
    #   row     [4,0,0,4] -> deltas [4,-4,0,4]  {4:2, -4:1, 0:1} 1,2,2  -> 2 + 2 + 2 = 6 bits
    #   col     [4,0,4,0] -> deltas [4,-4,4,-4] {4:2, -4:2}, 1 bit each -> 4 bits
    #   -> 14 bits. Total 91 + 14 = 105.
    # (In row-major order the col stream would be [0,4,4,0] -> 6 bits, total 107.)
    got = original_bit_breakdown(hand_features(), CodecConfig(4, 0.5, "channel-wise", 2))
    assert got == dict(values_bits=91, positions_bits=14, total_bits=105)
    assert original_bits(hand_features(), CodecConfig(4, 0.5, "channel-wise", 2)) == 105


def test_global_bits_by_hand():
    # k = int(8 blocks * 0.5) = 4 over both channels: flat index (channel*4 + block) 3 (36),
    # 5 (24), 6 (6), 0 (1) -> the same 4 blocks, so values are again 91 bits.
    #   channel as is  [0,1,1,0]                       {0:2, 1:2}          -> 4 bits
    #   row deltas     [4,0,4,0] -> [4,-4,4,-4]         {4:2, -4:2}         -> 4 bits
    #   col deltas     [4,4,0,0] -> [4,0,-4,0]          {0:2, 4:1, -4:1}    -> 2 + 2 + 2 = 6 bits
    #   + 32 metadata bits -> 46. Total 91 + 46 = 137.
    got = original_bit_breakdown(hand_features(), CodecConfig(4, 0.5, "global", 2))
    assert got == dict(values_bits=91, positions_bits=46, total_bits=137)


def test_region_wise_bits_by_hand():
    # Position energies summed over channels: (0,0) 1, (0,1) 24, (1,0) 6, (1,1) 36;
    # k = int(4 * 0.5) = 2 -> (1,1) then (0,1), kept in both channels: 4 blocks, 64 values:
    #   level 3: 4 (ch0 (1,1)), level 2: 6 (ch1 (0,1)), level 0: 54.
    #   Huffman {54, 6, 4}: merge 4+6, then +54 -> lengths 1, 2, 2 -> 54 + 12 + 8 = 74 bits.
    # Positions per image over C*k = 4 entries (ch0: (4,4),(0,4); ch1: (4,4),(0,4)):
    #   row [4,0,4,0] -> [4,-4,4,-4] -> 4 bits; col [4,4,4,4] -> [4,0,0,0] -> 4 bits; + 32 -> 40.
    # Total 74 + 40 = 114.
    got = original_bit_breakdown(hand_features(), CodecConfig(4, 0.5, "region-wise", 2))
    assert got == dict(values_bits=74, positions_bits=40, total_bits=114)


def test_raster_order_by_hand():
    # The same four blocks as test_channel_wise_bits_by_hand, emitted (image, channel, row, col):
    #   (0,0,0,0) (0,0,4,4) (0,1,0,4) (0,1,4,0)
    #   image [0,0,0,0] -> 0 bits; channel [0,0,1,1] -> [0,0,1,0] -> 4 bits
    #   row [0,4,0,4] -> [0,4,-4,4] {4:2, 0:1, -4:1} -> 6 bits
    #   col [0,4,4,0] -> [0,4,0,-4] {0:2, 4:1, -4:1} -> 6 bits  -> 16 (top-K order: 14)
    got = original_bit_breakdown(hand_features(), CodecConfig(4, 0.5, "channel-wise", 2), raster_order=True)
    assert got == dict(values_bits=91, positions_bits=16, total_bits=107)


def test_inside_only_by_hand():
    # Coded pixels of the kept blocks (border rows/cols 0 and 6 and padding row/col 7 left out):
    #   ch0 (1,1): rows 4-5 x cols 4-5 = 4 values of 3; ch0 (0,0): rows 1-3 x cols 1-3 = 9 values, one 1
    #   ch1 (0,1): rows 1-3 x cols 4-5 = 6 values of 2; ch1 (1,0): rows 4-5 x cols 1-3 = 6 values of 1
    #   25 values: level 3: 4, level 2: 6, level 1: 7, level 0: 8 -> Huffman {8,7,6,4}: 4+6, 7+8, then
    #   10+15 -> all lengths 2 -> 50 bits. Positions as before: 14.
    got = original_bit_breakdown(hand_features(), CodecConfig(4, 0.5, "channel-wise", 2), inside_only=True)
    assert got == dict(values_bits=50, positions_bits=14, total_bits=64)


def test_code_tables_by_hand():
    # Distinct symbols per stream: image 1 (a lone symbol has no table), channel 2, row 3, col 2 -> 7
    # entries; value levels 4 entries.
    got = original_bit_breakdown(hand_features(), CodecConfig(4, 0.5, "channel-wise", 2), count_tables=True)
    assert got == dict(values_bits=91 + 4 * TABLE_ENTRY_BITS, positions_bits=14 + 7 * TABLE_ENTRY_BITS,
                       total_bits=105 + 11 * TABLE_ENTRY_BITS)


def test_choices_turn_one_thing_each():
    torch.manual_seed(0)
    z = torch.randn(3, 4, 8, 8).relu()
    cfg = CodecConfig(4, 0.5, "channel-wise", 2)
    got = {r["choice"]: r for r in original_choices(z, cfg, (14, 14), batch_size=2)}
    assert list(got) == list(CHOICES)
    pixels = 14 * 14
    assert got["as computed"]["bpp"] == original_bits(z[:2], cfg) / (2 * pixels)
    assert got["as computed"]["n_rate"] == 2
    assert got["border and padding not counted"]["bpp"] == \
        original_bit_breakdown(z[:2], cfg, inside_only=True)["total_bits"] / (2 * pixels)
    assert got["positions in raster order"]["bpp"] == \
        original_bit_breakdown(z[:2], cfg, raster_order=True)["total_bits"] / (2 * pixels)
    assert got["code tables counted"]["bpp"] == \
        original_bit_breakdown(z[:2], cfg, count_tables=True)["total_bits"] / (2 * pixels)
    # every batch (of 2, 1), weighted by its images
    assert got["all batches, not the first"]["bpp"] == pytest.approx(
        (original_bits(z[:2], cfg) + original_bits(z[2:], cfg)) / (3 * pixels))
    assert got["all batches, not the first"]["n_rate"] == 3
    assert got["ratio >= 1 measured, not 24 bpp"]["bpp"] == got["as computed"]["bpp"]  # nothing hard-coded below 1
    assert all(r["rate_is_estimate"] for r in got.values())


def test_choices_at_ratio_one():
    torch.manual_seed(1)
    z = torch.randn(2, 4, 8, 8).relu()
    cfg = CodecConfig(4, 1.0, "global", 2)
    got = {r["choice"]: r["bpp"] for r in original_choices(z, cfg, (28, 28))}
    measured = got.pop("ratio >= 1 measured, not 24 bpp")
    assert set(got.values()) == {BASELINE_BPP}
    assert measured == original_bits(z, cfg) / (2 * 28 * 28)
    assert measured != BASELINE_BPP


def test_choices_bad_input():
    z = torch.rand(2, 4, 8, 8)
    with pytest.raises(ValueError, match="input_hw"):
        original_choices(z, CodecConfig(), (28,))
    with pytest.raises(ValueError, match="batch_size"):
        original_choices(z, CodecConfig(), (28, 28), batch_size=0)
    with pytest.raises(ValueError, match="features"):
        original_choices(z[0], CodecConfig(), (28, 28))
    with pytest.raises(ValueError, match="cfg"):
        original_choices(z, "global", (28, 28))


def test_all_values_of_kept_blocks_are_counted():
    x = hand_features()
    index, values, mask = original_selection(x, CodecConfig(4, 0.5, "channel-wise", 2))
    assert values.shape == (4, 16)  # 4 kept blocks x B*B, not just their 25 interior pixels
    assert index.tolist() == [[0, 0, 0, 0], [0, 0, 1, 1], [4, 0, 0, 4], [4, 0, 4, 0]]
    assert int(mask.sum()) == 4
    # Block (1,1) of channel 0 is rows 4-7, cols 4-7: row/col 6 border, row/col 7 padding.
    assert values[0].reshape(4, 4).tolist() == [[3, 3, 0, 0], [3, 3, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    # Counting only the 25 interior values would give {0: 8, 1: 7, 2: 6, 3: 4} -> far fewer bits.
    assert original_value_bits(values, 2) == 91
    # Border values never reach the count: they are zeroed before selection.
    y = x.clone()
    y[:, :, 0, :] = 5.0
    y[:, :, :, -1] = 5.0
    assert original_bits(y, CodecConfig(4, 0.5, "channel-wise", 2)) == 105


def test_value_bits_quantizer_and_lone_symbol():
    # min 1, max 4, 2 bits: scale 3/3 -> levels 0,1,2,3 of [1,2,3,4,4,4] -> {0:1,1:1,2:1,3:3}
    # Huffman: merge 1+1=2, 1+2=3, 3+3 -> lengths 3,3,2,1 -> 3 + 3 + 2 + 3 = 11 bits.
    assert original_value_bits(torch.tensor([1.0, 2.0, 3.0, 4.0, 4.0, 4.0]), 2) == 11
    # 1 bit: levels round((v - 1) / 3) = [0,0,1,1,1,1] -> two symbols, 1 bit each -> 6.
    assert original_value_bits(torch.tensor([1.0, 2.0, 3.0, 4.0, 4.0, 4.0]), 1) == 6
    assert original_value_bits(torch.full((10,), 2.5), 2) == 0  # one symbol: the empty code
    with pytest.raises(ValueError, match="bits"):
        original_value_bits(torch.ones(3), 0)


def test_ratio_one_is_hard_coded_24_bpp():
    x = hand_features()
    assert original_bpp(x, CodecConfig(4, 1.0, "channel-wise", 2), (7, 7)) == BASELINE_BPP == 24.0
    assert original_bpp(x * 100, CodecConfig(1, 1.0, "global", 8), (7, 7)) == 24.0
    # Below 1 it is the count over input pixels: 105 bits / (1 image * 7 * 7).
    assert original_bpp(x, CodecConfig(4, 0.5, "channel-wise", 2), (7, 7)) == pytest.approx(105 / 49)
    with pytest.raises(ValueError, match="input_hw"):
        original_bpp(x, CodecConfig(4, 0.5), (7,))


def dense_reference(z: torch.Tensor, b: int, ratio: float) -> torch.Tensor:
    """Channel-wise top-k by a full sort, with pooling for the energies (no ties in random data)."""
    n, c, h, w = z.shape
    zb = z.clone()
    zb[:, :, [0, -1], :] = 0
    zb[:, :, :, [0, -1]] = 0
    hp, wp = -(-h // b) * b, -(-w // b) * b
    e = F.avg_pool2d(F.pad(zb, (0, wp - w, 0, hp - h)) ** 2, b).reshape(n * c, -1)
    k = max(1, int(e.shape[1] * ratio))
    keep = torch.zeros_like(e, dtype=torch.bool)
    keep.scatter_(1, e.argsort(1, descending=True)[:, :k], True)
    m = keep.reshape(n, c, hp // b, wp // b).repeat_interleave(b, 2).repeat_interleave(b, 3)
    return zb * m[:, :, :h, :w]


@pytest.fixture(scope="module")
def model():
    from blocksparse.model import build_model
    torch.manual_seed(0)
    return build_model("fashion-mnist").eval()


def test_reconstruct_is_float_kept_values(model):
    z = model.head(torch.randn(2, 1, 28, 28)).detach()
    for b, r in [(4, 0.3), (8, 0.5), (1, 0.1)]:  # B=8 pads 28 to 32
        torch.testing.assert_close(original_reconstruct(z, CodecConfig(b, r, "channel-wise", 2)),
                                   dense_reference(z, b, r), rtol=0, atol=0)


def test_accounting_uses_first_batch_only(model):
    torch.manual_seed(1)
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        labels = model(x).argmax(1)
    cfg = CodecConfig(4, 0.3, "channel-wise", 2)
    ev = original_accounting(model, cfg, TensorDataset(x, labels), batch_size=4)
    with torch.no_grad():
        bits_first = original_bits(model.head(x[:4]), cfg)
        bits_second = original_bits(model.head(x[4:]), cfg)
        ref = model.tail(dense_reference(model.head(x), 4, 0.3)).argmax(1)
    assert bits_first != bits_second  # so the check below can tell the batches apart
    assert ev["bpp"] == pytest.approx(bits_first / (4 * 28 * 28))
    assert ev["n_images"] == 8 and ev["n_rate"] == 4 and ev["rate_is_estimate"]
    assert ev["accuracy"] == pytest.approx(float((ref == labels).float().mean()))
    # A different second batch leaves the bpp alone; a different first batch does not.
    y = x.clone()
    y[4:] = torch.randn(4, 1, 28, 28) * 3
    assert original_accounting(model, cfg, TensorDataset(y, labels), batch_size=4)["bpp"] == ev["bpp"]
    y = x.clone()
    y[:4] = torch.randn(4, 1, 28, 28) * 3
    assert original_accounting(model, cfg, TensorDataset(y, labels), batch_size=4)["bpp"] != ev["bpp"]


def test_accounting_at_ratio_one_is_the_plain_model(model):
    torch.manual_seed(2)
    x = torch.randn(6, 1, 28, 28)
    with torch.no_grad():
        labels = model(x).argmax(1)  # the uncompressed model, border included
    labels[0] = (labels[0] + 1) % 10
    ev = original_accounting(model, CodecConfig(4, 1.0, "channel-wise", 2), TensorDataset(x, labels))
    assert ev["bpp"] == 24.0 and ev["n_rate"] == 0
    assert ev["accuracy"] == pytest.approx(5 / 6)


def test_bad_input(model):
    data = TensorDataset(torch.randn(2, 1, 28, 28), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="cfg"):
        original_accounting(model, "channel-wise", data)
    with pytest.raises(ValueError, match="batch_size"):
        original_accounting(model, CodecConfig(), data, batch_size=0)
    with pytest.raises(ValueError, match="data"):
        original_accounting(model, CodecConfig(), torch.randn(2, 1, 28, 28))
