"""What the device computes (blocksparse.costs): counted MACs and parameters, measured latencies."""
import json

import pytest

from blocksparse import costs
from blocksparse.codebook import fit_codebook, save_codebook
from blocksparse.codec import CodecConfig
from blocksparse.model import build_model
import torch


def test_costs_count_the_heads_convolutions_and_parameters():
    c = costs.costs()
    # conv1 (1->64, 3x3, 28x28) and layer1's four 64->64 3x3 convolutions at 28x28, by hand
    conv1, conv64 = 28 * 28 * 64 * 9, 28 * 28 * 64 * 64 * 9
    assert c["layer1", "block-sparse"]["head_macs"] == conv1 + 4 * conv64
    assert c["layer3", "block-sparse"]["head_macs"] > c["layer2", "block-sparse"]["head_macs"] > conv1 + 4 * conv64
    # parameters by hand: the convolutions (no bias) and every batch norm's weight and bias
    assert c["layer1", "block-sparse"]["head_params"] == 64 * 9 + 4 * 64 * 64 * 9 + 5 * 2 * 64
    assert c["layer1", "webp"]["head_macs"] == 0 and c["layer2", "bottleneck"]["encoder_params"] > 0


def test_median_ms_is_the_median_and_refuses_no_calls():
    ticks = iter([0.0, 0.001, 0.001, 0.004, 0.004, 0.006])  # calls of 1, 3 and 2 ms
    import time
    orig = time.perf_counter
    try:
        costs.time.perf_counter = lambda: next(ticks)
        assert costs.median_ms(lambda: None, n=3, warmup=0) == pytest.approx(2.0)
    finally:
        costs.time.perf_counter = orig
    with pytest.raises(ValueError, match="n must be"):
        costs.median_ms(lambda: None, n=0)


def test_latencies_time_the_operating_points_encoders_and_leave_the_rest_empty(tmp_path):
    cfg = CodecConfig(2, 0.01, "global", 2)
    model = build_model("fashion-mnist", "layer3").eval()
    with torch.no_grad():
        z = model.head(torch.randn(8, 1, 28, 28))
    save_codebook(fit_codebook(z, cfg, "ans"), tmp_path / "cb.codebook")
    card = dict(path=str(tmp_path / "x.json"), setting=dict(mode="global", block_size=2, ratio=0.01, bits=2),
                codebook="cb.codebook", val_select={})
    webp = dict(path=str(tmp_path / "w.json"), setting=dict(quality=5), val_select={})
    got = costs.latencies({("layer3", "block-sparse"): card, ("layer1", "webp"): webp, ("layer2", "webp"): webp}, n=3)
    assert got["layer1", "webp"]["encoder_ms"] == got["layer2", "webp"]["encoder_ms"]  # one codec, one timing
    assert got["layer3", "block-sparse"]["encoder_ms"] > 0 and got["layer3", "block-sparse"]["head_ms"] > 0
    assert got["layer1", "webp"]["encoder_ms"] > 0 and got["layer1", "webp"]["head_ms"] == 0
    assert got["layer2", "bottleneck"]["encoder_ms"] is None and got["layer2", "bottleneck"]["head_ms"] is None
    assert got["layer3", "bottleneck"]["head_ms"] == got["layer3", "block-sparse"]["head_ms"]
