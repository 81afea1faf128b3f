"""Learned bottleneck: exact streams, their length, the entropy model, files."""
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import blocksparse.bottleneck as B


def _spread(seed: int = 0, **args) -> B.Bottleneck:
    """An untrained bottleneck whose latents spread over many symbols (an untrained encoder's
    round to zero) and whose channels have different densities."""
    torch.manual_seed(seed)
    bn = B.Bottleneck(**args).eval()
    m = bn.args["latent_channels"]
    with torch.no_grad():
        bn.encoder[-1].weight.mul_(40)
        bn.loc.copy_(torch.linspace(-2.3, 1.7, m))
        bn.raw_scale.copy_(torch.linspace(-1.0, 2.0, m))
    return bn


@pytest.fixture(scope="module")
def bn():
    return _spread()


def _features(seed: int, shape=(1, 64, 28, 28)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).relu() * 2


# --- streams decode to exactly what the tail sees ------------------------------------------
@settings(max_examples=15)
@given(seed=st.integers(0, 2**31), h=st.integers(1, 30), w=st.integers(1, 30), stride=st.sampled_from([2, 4, 8]))
def test_decode_of_encode_is_reconstruct(seed, h, w, stride):
    bn = _spread(seed % 7, latent_channels=3, hidden=16, stride=stride)
    z = _features(seed, (1, 64, h, w))
    blob = B.encode(bn, z)
    out = B.decode(bn, blob, z.shape)
    assert out.shape == z.shape and out.dtype == torch.float32
    assert torch.equal(out.view(torch.int32), bn.reconstruct(z).view(torch.int32))  # bit for bit, signed zeros too
    lh, lw = -(-h // stride), -(-w // stride)  # ceil: 3x3 convs of stride 2, padding 1
    assert B.decode_symbols(bn, blob, z.shape[1:]).shape == (1, 3, lh, lw)


def test_batch_streams_equal_single_streams_and_latents_are_rounded(bn):
    z = _features(1, (3, 64, 28, 28))
    blobs = B.encode_batch(bn, z)
    assert blobs == [B.encode(bn, z[i:i + 1]) for i in range(3)]
    rec = bn.reconstruct(z)  # image by image: the batch an image comes in does not matter
    for i, b in enumerate(blobs):
        assert torch.equal(rec[i:i + 1].view(torch.int32), B.decode(bn, b, z.shape[1:]).view(torch.int32))
    with torch.no_grad():
        y = bn.encoder(z)
    lo, hi = bn.symbol_range()
    ref = torch.round(y).clamp(torch.tensor(lo).view(1, -1, 1, 1).float(), torch.tensor(hi).view(1, -1, 1, 1).float())
    for i, b in enumerate(blobs):
        assert torch.equal(B.decode_symbols(bn, b, (64, 28, 28))[0], ref[i])


def test_eval_forward_is_the_coded_path_and_training_adds_bounded_noise(bn):
    z = _features(2)
    out, lik = bn.eval()(z)
    assert torch.equal(out, bn.reconstruct(z))
    bn.train()
    try:
        with torch.no_grad():
            y = bn.encoder(z)
        g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        noisy = bn(z, generator=g1)[0]
        u = torch.rand(y.shape, generator=g2) - 0.5
        assert torch.equal(noisy, bn.decode_latent(y + u, (28, 28)))
        assert 0 < float(u.abs().max()) <= 0.5
    finally:
        bn.eval()


def test_mixed_training_shows_the_tail_what_the_decoder_returns_and_rates_the_noisy_latents(bn):
    z = _features(3)
    bn.train()
    try:
        g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
        out, lik = bn(z, generator=g1, quantization="mixed")
        with torch.no_grad():
            y = bn.encoder(z)
        u = torch.rand(y.shape, generator=g2) - 0.5
        assert torch.equal(out.detach(), bn.reconstruct(z))  # the coded path, image by image
        assert torch.equal(lik.detach(), bn.likelihoods(y + u).detach())  # the rate still on the noisy latents
        bn.zero_grad()
        out.sum().backward()  # straight through the rounding, to the encoder
        assert float(bn.encoder[-1].weight.grad.abs().sum()) > 0
        with pytest.raises(ValueError, match="quantization"):
            bn(z, quantization="round")
    finally:
        bn.zero_grad()
        bn.eval()


# --- the stream's length is its information content -------------------------------------------------
def _logistic_cdf(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def test_stream_length_is_the_information_content_under_the_model(bn):
    """Bits of a real stream vs -sum log2 P(symbol), P from the logistic's definition by hand
    (end symbols carry the tails): within the ANS bound, 9 header bits in the initial state."""
    lo, hi = bn.symbol_range()
    loc = bn.loc.detach().double().tolist()
    scale = [0.11 + math.log1p(math.exp(r)) for r in bn.raw_scale.detach().double().tolist()]
    for seed in range(3):
        z = _features(10 + seed)
        blob = B.encode(bn, z)
        sym = B.decode_symbols(bn, blob, z.shape)[0]
        info = 0.0
        for c in range(sym.shape[0]):
            for k in sym[c].flatten().tolist():
                up = 1.0 if k == hi[c] else _logistic_cdf((k + 0.5 - loc[c]) / scale[c])
                down = 0.0 if k == lo[c] else _logistic_cdf((k - 0.5 - loc[c]) / scale[c])
                info -= math.log2(up - down)
        assert info > 500  # a stream long enough that a wrong model would show
        # ANS: <= 24 bits for the first symbol's jump out of the small initial state, < 8 bits of
        # byte rounding; the first symbol can also come out cheaper than its information
        assert info - 24 <= 8 * len(blob) - 9 <= info + 32, (8 * len(blob), info)


def test_likelihoods_against_the_logistic_by_hand(bn):
    loc = bn.loc.detach().double().tolist()
    scale = [0.11 + math.log1p(math.exp(r)) for r in bn.raw_scale.detach().double().tolist()]
    y = torch.tensor([-3.0, -0.4, 0.0, 0.7, 2.5, 40.0]).view(1, 1, 1, -1).repeat(1, 8, 1, 1)
    got = bn.likelihoods(y).detach().double()
    for c in range(8):
        for j, v in enumerate(y[0, c, 0].tolist()):
            p = _logistic_cdf((v + 0.5 - loc[c]) / scale[c]) - _logistic_cdf((v - 0.5 - loc[c]) / scale[c])
            assert float(got[0, c, 0, j]) == pytest.approx(max(p, 1e-9), rel=1e-4)
    k = torch.arange(-400, 401, dtype=torch.float32).view(1, 1, 1, -1).repeat(1, 8, 1, 1)
    total = bn.likelihoods(k).detach().double().sum(-1).view(-1)
    assert torch.allclose(total, torch.ones(8, dtype=torch.float64), atol=1e-5)


def test_symbol_range_is_the_narrowest_with_tails_below_tail_mass_and_tables_sum_to_one(bn):
    lo, hi = bn.symbol_range()
    loc = bn.loc.detach().double().tolist()
    scale = [0.11 + math.log1p(math.exp(r)) for r in bn.raw_scale.detach().double().tolist()]
    for c, p in enumerate(B.coding_tables(bn)):
        below = _logistic_cdf((lo[c] - 0.5 - loc[c]) / scale[c])  # mass of values rounding below lo
        above = _logistic_cdf(-(hi[c] + 0.5 - loc[c]) / scale[c])
        assert below <= 1e-6 and above <= 1e-6
        assert _logistic_cdf((lo[c] + 0.5 - loc[c]) / scale[c]) > 1e-6  # one symbol less would not do
        assert _logistic_cdf(-(hi[c] - 0.5 - loc[c]) / scale[c]) > 1e-6
        assert len(p) == hi[c] - lo[c] + 1 and (p >= 0).all()
        assert p.sum() == pytest.approx(1.0, abs=1e-12)
        assert p[0] == pytest.approx(_logistic_cdf((lo[c] + 0.5 - loc[c]) / scale[c]), rel=1e-9)  # tail included
    wide = B.Bottleneck(latent_channels=1)
    with torch.no_grad():
        wide.raw_scale.fill_(100.0)
    lo, hi = wide.symbol_range()
    assert (lo, hi) == (-255, 255)  # capped at MAX_HALF_RANGE


def test_rate_gradient_in_the_scale_has_the_right_sign():
    """-log2 P grows with the scale for latents at the location, shrinks for latents far out."""
    bn = B.Bottleneck(latent_channels=2)
    near = torch.zeros(1, 2, 3, 3)
    far = torch.full((1, 2, 3, 3), 12.0)
    for y, sign in ((near, 1), (far, -1)):
        bn.zero_grad()
        (-torch.log2(bn.likelihoods(y))).sum().backward()
        assert (torch.sign(bn.raw_scale.grad) == sign).all(), (y[0, 0, 0, 0], bn.raw_scale.grad)


def test_latents_outside_the_range_are_clamped_and_still_exact():
    bn = _spread(3)
    with torch.no_grad():
        bn.raw_scale.fill_(-6.0)  # scale ~ 0.11: a range of +-2 symbols
    z = _features(4)
    with torch.no_grad():
        y = torch.round(bn.encoder(z))
    lo, hi = bn.symbol_range()
    assert (y < torch.tensor(lo).view(1, -1, 1, 1)).any()  # the case is exercised
    blob = B.encode(bn, z)
    assert torch.equal(B.decode(bn, blob, z.shape), bn.reconstruct(z))
    sym = B.decode_symbols(bn, blob, z.shape)
    assert sym.min() >= lo.min() and sym.max() <= hi.max()


# --- bad input ----------------------------------------------------------------------------
@settings(max_examples=60)
@given(data=st.data())
def test_corrupted_streams_raise_or_decode_to_finite_features(bn, data):
    z = _features(data.draw(st.integers(0, 3)), (1, 64, 12, 12))
    blob = bytearray(B.encode(bn, z))
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend", "random"]))
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, 8 * len(blob) - 1))
            blob[i // 8] ^= 1 << (i % 8)
    elif kind == "truncate":
        blob = blob[:data.draw(st.integers(0, len(blob) - 1))]
    elif kind == "extend":
        blob += data.draw(st.binary(min_size=1, max_size=8))
    else:
        blob = bytearray(data.draw(st.binary(max_size=200)))
    try:
        out = B.decode(bn, bytes(blob), (1, 64, 12, 12))
    except ValueError:
        return
    assert out.shape == (1, 64, 12, 12) and torch.isfinite(out).all()


def test_every_single_bit_flip_and_another_model_are_detected(bn):
    z = _features(7, (1, 64, 12, 12))
    blob = B.encode(bn, z)
    for i in range(8 * len(blob)):
        b = bytearray(blob)
        b[i // 8] ^= 1 << (i % 8)
        with pytest.raises(ValueError):
            B.decode(bn, bytes(b), z.shape)
    other = _spread(0)
    with torch.no_grad():
        other.decoder[0].bias.add_(1e-3)  # same entropy model, another decoder
    assert B.stream_seed(other) != B.stream_seed(bn)
    with pytest.raises(ValueError, match="checksum"):
        B.decode(other, blob, z.shape)


def test_bad_shapes_and_arguments(bn):
    with pytest.raises(ValueError, match="N == 1"):
        B.encode(bn, _features(0, (2, 64, 8, 8)))
    with pytest.raises(ValueError, match="features"):
        B.encode(bn, torch.zeros(1, 32, 8, 8))
    with pytest.raises(ValueError, match="features"):
        B.encode_batch(bn, torch.zeros(64, 8, 8))
    with pytest.raises(ValueError, match="finite"):
        B.encode(bn, torch.full((1, 64, 8, 8), float("nan")))
    blob = B.encode(bn, _features(0))
    for shape in [(2, 64, 28, 28), (1, 32, 28, 28), (28, 28), (1, 64, 0, 28), (1, 64, 28.0, 28), "x",
                  (1, 64, 10**6, 10**6)]:
        with pytest.raises(ValueError, match="shape"):
            B.decode(bn, blob, shape)
    with pytest.raises(ValueError):  # a stream read as another shape's leaves data or fails its CRC
        B.decode(bn, blob, (1, 64, 14, 14))
    for bad in (b"", b"\x05\x00", "text"):
        with pytest.raises(ValueError):
            B.decode(bn, bad, (1, 64, 28, 28))
    for kw in (dict(stride=3), dict(stride=1), dict(latent_channels=0), dict(hidden=2.5)):
        with pytest.raises(ValueError):
            B.Bottleneck(**kw)


# --- files ---------------------------------------------------------------------------------
def test_save_load_round_trip_and_sha256(tmp_path, bn):
    p = tmp_path / "bn.pt"
    card = B.save_bottleneck(bn, p, lmbda=2.0, val_accuracy=0.9)
    loaded = B.load_bottleneck(p)
    assert loaded.args == bn.args and not loaded.training
    assert json.loads(p.with_suffix(".json").read_text())["lmbda"] == 2.0 == card["lmbda"]
    for k, v in bn.state_dict().items():  # float16 on disk
        assert torch.equal(loaded.state_dict()[k], v.half().float()), k
    z = _features(8)
    assert torch.equal(B.decode(loaded, B.encode(loaded, z), z.shape), loaded.reconstruct(z))
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 1
    p.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="sha256"):
        B.load_bottleneck(p)
    p.write_bytes(b"not a torch file")
    card = json.loads(p.with_suffix(".json").read_text())
    card["sha256"] = __import__("hashlib").sha256(b"not a torch file").hexdigest()
    p.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="readable"):
        B.load_bottleneck(p)
    with pytest.raises(ValueError, match="no bottleneck"):
        B.load_bottleneck(tmp_path / "missing.pt")
