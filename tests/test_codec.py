"""The codec's decisions: selection, energy, quantization, the straight-through estimator, bad input."""
import numpy as np
import pytest
import torch
from hypothesis import given

import blocksparse_utils as bsu
from strategies import cases


@given(cases())
def test_each_image_is_compressed_on_its_own(case):
    x, cfg = case
    whole = bsu.compress(x, cfg)
    for i in range(len(x)):
        assert torch.equal(bsu.decode(bsu.encode(x[i:i + 1], cfg)), whole[i:i + 1])


@given(cases(max_n=2, max_c=6, max_hw=20))
def test_the_one_image_path_decides_exactly_as_the_batch_path(case):
    """codec._analyze_one (numpy, batch 1) against codec._analyze_batch (torch) on the same image."""
    from blocksparse.codec import _analyze_batch, _analyze_one, _check_features
    x, cfg = case
    for i in range(len(x)):
        xi = _check_features(x[i:i + 1], cfg.block_size)
        a, b = _analyze_one(xi, cfg), _analyze_batch(xi, cfg)
        assert a["shape"] == b["shape"] and a["block_size"] == b["block_size"]
        assert torch.equal(a["mask"], b["mask"])
        assert all(torch.equal(p, q) for p, q in zip(a["where"], b["where"]))
        for k in ("valid", "levels", "scale", "offset"):
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
        # and reconstructs the same tensor: one image (numpy) against a batch of two (torch)
        assert torch.equal(bsu.compress(xi, cfg), bsu.compress(torch.cat([xi, xi]), cfg)[:1])


def test_the_one_image_path_breaks_ties_like_the_batch_path():
    from blocksparse.codec import _analyze_batch, _analyze_one
    x = torch.zeros(1, 3, 8, 8)
    x[0, :, 1:3, 1:3] = 1.0       # the same energy in block (0, 0) of every channel
    x[0, 1, 5:7, 5:7] = 1.0       # and in block (1, 1) of channel 1
    for mode in bsu.MODES:
        for ratio in (0.1, 0.25, 0.5):
            cfg = bsu.CodecConfig(4, ratio, mode, 2)
            a, b = _analyze_one(x, cfg), _analyze_batch(x, cfg)
            assert torch.equal(a["mask"], b["mask"]) and torch.equal(a["levels"], b["levels"]), (mode, ratio)


@pytest.mark.parametrize("n", [1, 2])  # the one-image (numpy) path and the batch (torch) path
def test_values_too_large_to_quantize_are_a_value_error(n):
    x = torch.full((n, 2, 8, 8), 3.4e38)  # the 1-bit step, rounded up to a bfloat16, overflows
    with pytest.raises(ValueError, match="too large"):
        bsu.compress(x, bsu.CodecConfig(4, 0.5, "global", 1))
    assert torch.isfinite(bsu.compress(x / 4, bsu.CodecConfig(4, 0.5, "global", 1))).all()


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


def test_distinct_configs_merges_exactly_the_codecs_that_decode_alike():
    """Against the decoder: a merged configuration decodes every input as the one kept for it, and
    the configurations kept of one mode, block size and bits decode differently."""
    x = torch.rand(3, 5, 10, 10) + 0.1  # every block has energy; B=4: 3x3 blocks a channel
    grid = [bsu.CodecConfig(b, r, m, q) for m in bsu.MODES for b in (2, 4)
            for r in (1.0, 0.5, 0.1, 0.05, 0.01, 0.002) for q in (2, 4)]
    kept = bsu.distinct_configs(grid, (5, 10, 10))
    assert kept == [c for c in grid if c in kept]  # the grid's order, the first of each set
    out = {c: bsu.compress(x, c) for c in grid}
    for c in grid:
        family = [k for k in kept if (k.mode, k.block_size, k.bits) == (c.mode, c.block_size, c.bits)]
        alike = [k for k in family if torch.equal(out[k], out[c])]
        assert len(alike) == 1, (c, alike)
    assert bsu.CodecConfig(4, 0.002, "channel-wise", 2) not in kept  # k = 1 of 9, as at ratio 0.1
    assert bsu.CodecConfig(4, 0.05, "global", 2) in kept  # k = 2 of 45, ratio 0.1 keeps 4


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


def test_bad_select_arguments():
    e = torch.rand(1, 2, 3, 3)
    with pytest.raises(ValueError, match="ratio"):
        bsu.select_blocks(e, 0, "global")
    with pytest.raises(ValueError, match="mode"):
        bsu.select_blocks(e, 0.5, "diagonal")




# --- straight-through estimator --------------------------------------------
def test_ste_forward_is_compress_and_gradient_is_the_kept_mask():
    """Gradient of sum(w * compress_ste(x)) is w on coded pixels of kept blocks and 0 elsewhere,
    checked against a mask built independently from the dense block energies."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 10, 9, generator=g).relu().requires_grad_(True)
    cfg = bsu.CodecConfig(block_size=3, ratio=0.3, mode="global", bits=2)
    y = bsu.compress_ste(x, cfg)
    assert torch.equal(y.detach(), bsu.compress(x.detach(), cfg))
    w = torch.randn(x.shape, generator=g)
    (y * w).sum().backward()
    # independent mask: energies by avg_pool2d of the border-zeroed, padded map, top-k per image
    xz = x.detach().clone()
    xz[..., 0, :] = xz[..., -1, :] = 0
    xz[..., :, 0] = xz[..., :, -1] = 0
    e = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(xz, (0, 0, 0, 2)) ** 2, 3, divisor_override=1)
    keep = torch.zeros_like(e, dtype=torch.bool)
    for i in range(2):
        k = int(0.3 * e[i].numel() + 1e-9)
        top = sorted(range(e[i].numel()), key=lambda j: (-float(e[i].flatten()[j]), j))[:k]
        keep[i].view(-1)[top] = e[i].view(-1)[top] > 0
    pm = keep.repeat_interleave(3, 2).repeat_interleave(3, 3)[..., :10, :9].clone()
    pm[..., 0, :] = pm[..., -1, :] = False
    pm[..., :, 0] = pm[..., :, -1] = False
    torch.testing.assert_close(x.grad, w * pm)
