"""The original study's accounting (blocksparse.original), checked against hand-computed counts."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from blocksparse.codec import CodecConfig
from blocksparse.original import (BASELINE_BPP, original_accounting, original_bit_breakdown, original_bits,
                                  original_bpp, original_reconstruct, original_selection, original_value_bits)


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
