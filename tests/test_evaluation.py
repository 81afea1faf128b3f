"""Evaluation: rates are real per-image streams, accuracy is on what the decoder returns."""
import numpy as np
import pytest
import torch

import blocksparse_utils as bsu


@pytest.fixture(scope="module")
def shipped():
    return bsu.load_pretrained("fashion-mnist")



def test_evaluate_rates_are_real_streams(shipped):
    data = bsu.load_dataset("fashion-mnist", "test", subset=40)
    cfg = bsu.CodecConfig(block_size=4, ratio=0.05, mode="region-wise", bits=2)
    ev = bsu.evaluate(shipped, cfg, data, rate_sample=10, exact=True)
    z = bsu.head_features(shipped, data)
    sizes = [len(bsu.encode(z[i:i + 1], cfg)) for i in range(0, 40, 4)]  # 10 evenly spaced of 40
    assert ev["bytes"] == pytest.approx(np.mean(sizes))
    assert ev["bpp"] == pytest.approx(8 * np.mean(sizes) / 784)
    assert sum(ev["breakdown"].values()) == pytest.approx(8 * ev["bytes"])
    with torch.no_grad():
        logits = shipped(data.tensors[0], cfg, exact=True)
    assert ev["accuracy"] == pytest.approx(float((logits.argmax(1) == data.tensors[1]).float().mean()))
    with pytest.raises(ValueError, match="rate_sample"):
        bsu.evaluate(shipped, cfg, data, rate_sample=0)



@pytest.mark.parametrize("split_at", ["layer2", "layer3"])
def test_bpp_counts_input_pixels_where_the_map_is_smaller_than_the_input(split_at):
    """bpp = 8 x stream bytes / input pixels (28 x 28), not / feature-map pixels: after layer2 the
    map is 14x14 and after layer3 7x7, so dividing by the map's pixels would read 4x or 16x higher
    (at layer1 the map is 28x28 like the input, so only these splits can tell the two apart)."""
    model = bsu.load_pretrained("fashion-mnist", split_at=split_at)
    data = bsu.load_dataset("fashion-mnist", "test", subset=12)
    z = bsu.head_features(model, data)
    input_pixels = 28 * 28
    assert tuple(data.tensors[0].shape[-2:]) == (28, 28) and z.shape[-1] * z.shape[-2] < input_pixels
    cfg = bsu.CodecConfig(block_size=2, ratio=0.1, mode="global", bits=2)
    cb = bsu.fit_codebook(bsu.head_features(model, bsu.load_dataset("fashion-mnist", "train", subset=20)), cfg, "ans")
    ev = bsu.evaluate(model, cfg, data, rate_sample=4, codebook=cb)
    idx = range(0, 12, 3)  # 4 evenly spaced of 12: floor(i * 12 / 4)
    # the streams encoded here, one image at a time, and their bytes counted
    amortized = [len(bsu.encode(z[i:i + 1], cb)) for i in idx]
    self_contained = [len(bsu.encode(z[i:i + 1], cfg)) for i in idx]
    assert ev["bytes"] == pytest.approx(np.mean(amortized))
    assert ev["bpp"] == pytest.approx(8 * np.mean(amortized) / input_pixels)
    assert ev["bpp_self_contained"] == pytest.approx(8 * np.mean(self_contained) / input_pixels)
    ev = bsu.evaluate(model, cfg, data, rate_sample=4)
    assert ev["bpp"] == pytest.approx(8 * np.mean(self_contained) / input_pixels)
    # uncompressed: float32 features, 32 bits per value over the input's pixels; by hand,
    # layer2: 128 channels x 14 x 14 x 32 / 784 = 1024, layer3: 256 x 7 x 7 x 32 / 784 = 512
    ev = bsu.evaluate(model, None, data)
    assert ev["bpp"] == {"layer2": 1024, "layer3": 512}[split_at]


def test_interval_and_result_row_follow_the_schema(shipped):
    data = bsu.load_dataset("fashion-mnist", "test", subset=30)
    cfg = bsu.CodecConfig(block_size=4, ratio=0.1, mode="global", bits=2)
    ev = bsu.evaluate(shipped, cfg, data, rate_sample=3)
    k = int(ev["correct"].sum())
    assert ev["accuracy"] == k / 30 and ev["n_rate"] == 3
    assert (ev["accuracy_lo"], ev["accuracy_hi"]) == bsu.wilson_interval(k, 30)
    row = bsu.to_frame([bsu.result_row(ev, cfg, finetuned=False, split_at="layer1")]).iloc[0]
    assert row["block_size"] == 4 and row["bits"] == 2 and row["n_images"] == 30
    assert row["stream_bytes"] * 8 == pytest.approx(sum(row[f"{k}_bits"] for k in
                                                        ("header", "tables", "positions", "values", "padding")))


def test_amortized_rate_with_a_codebook(shipped):
    data = bsu.load_dataset("fashion-mnist", "test", subset=20)
    cfg = bsu.CodecConfig(block_size=4, ratio=0.01, mode="global", bits=2)
    fit = bsu.head_features(shipped, bsu.load_dataset("fashion-mnist", "train", subset=50))
    cb = bsu.fit_codebook(fit, cfg, "ans")
    ev = bsu.evaluate(shipped, cfg, data, rate_sample=5, codebook=cb, exact=True)
    z = bsu.head_features(shipped, data)
    idx = range(0, 20, 4)
    assert ev["bpp"] == pytest.approx(np.mean([8 * len(bsu.encode(z[i:i + 1], cb)) / 784 for i in idx]))
    assert ev["bpp_self_contained"] == pytest.approx(np.mean([8 * len(bsu.encode(z[i:i + 1], cfg)) / 784 for i in idx]))
    assert ev["bpp"] < ev["bpp_self_contained"] and ev["coder"] == "ans"


def test_pack_correct_round_trips_against_a_hand_packed_vector():
    from blocksparse.results import pack_correct, unpack_correct
    # bits 1 0 1 then five zero pads: 0b10100000 = 0xA0, base64 "oA=="
    assert pack_correct(np.array([True, False, True])) == "3:oA=="
    assert unpack_correct("3:oA==").tolist() == [True, False, True]
    rng = np.random.default_rng(0)
    for n in (1, 8, 9, 10000):
        v = rng.random(n) < 0.9
        assert np.array_equal(unpack_correct(pack_correct(v)), v)
    with pytest.raises(ValueError, match="bool"):
        pack_correct(np.array([1, 0, 1]))
    with pytest.raises(ValueError, match="test_correct"):
        unpack_correct("oA==")
    with pytest.raises(ValueError, match="not the 12 images"):
        unpack_correct("12:oA==")
