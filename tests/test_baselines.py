"""Image-codec baselines: lossless round trips, JPEG settings, quality ordering, bad input.

References are independent of the code under test: the images ``load_dataset`` returns,
Pillow's own plain JPEG encoder, the container signatures of the formats, and the model run
directly on the original images.
"""
import io

import numpy as np
import pytest
import torch
from PIL import Image, features
from torch.utils.data import TensorDataset

import blocksparse_utils as bsu
from blocksparse import baselines as bl
from blocksparse.data import load_dataset, mean_std
from blocksparse.model import build_model

LOSSY = [f for f in bl.LOSSY_FORMATS if f in bl.available_formats()]


def _normalize(u8: np.ndarray, dataset: str) -> torch.Tensor:
    """uint8 [N, H, W, C] -> normalized [N, C, H, W], the arithmetic of data.load_dataset."""
    mean, std = mean_std(dataset)
    x = torch.from_numpy(np.ascontiguousarray(u8.transpose(0, 3, 1, 2)).astype(np.float32) / 255.0)
    return (x - mean) / std


def _smooth_rgb(n: int, side: int = 32, seed: int = 0) -> np.ndarray:
    """Natural-ish RGB test images: integrated noise (smooth, with edges), uint8 [N, H, W, 3]."""
    g = np.random.default_rng(seed).normal(size=(n, side, side, 3)).cumsum(1).cumsum(2)
    lo, hi = g.min(axis=(1, 2, 3), keepdims=True), g.max(axis=(1, 2, 3), keepdims=True)
    return np.round(255 * (g - lo) / (hi - lo)).astype(np.uint8)


@pytest.fixture(scope="module")
def fashion() -> TensorDataset:
    return load_dataset("fashion-mnist", "test", subset=16)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return build_model("fashion-mnist").eval()  # untrained: any classifier will do


@pytest.fixture(scope="module")
def rgb() -> tuple[TensorDataset, np.ndarray]:
    u8 = _smooth_rgb(6)
    return TensorDataset(_normalize(u8, "cifar10"), torch.arange(6)), u8


def _fashion_u8(data: TensorDataset) -> np.ndarray:
    mean, std = mean_std("fashion-mnist")
    u8 = ((data.tensors[0] * std + mean) * 255).round().to(torch.uint8)
    return u8.permute(0, 2, 3, 1).numpy()


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


# --- lossless -------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", bl.LOSSLESS_FORMATS)
def test_lossless_returns_the_input_images_exactly(fmt, fashion, rgb):
    dec, sizes = bl.code_images(fashion, "fashion-mnist", fmt)
    assert torch.equal(dec.tensors[0], fashion.tensors[0])  # bit for bit, as load_dataset made them
    assert torch.equal(dec.tensors[1], fashion.tensors[1])
    assert sizes.dtype == np.int64 and sizes.shape == (16,) and (sizes > 0).all()
    data, u8 = rgb
    dec, _ = bl.code_images(data, "cifar10", fmt)
    assert torch.equal(dec.tensors[0], data.tensors[0])
    for img in u8[:2]:  # and on raw uint8 arrays, without any normalization in between
        assert np.array_equal(bl.decode_image(bl.encode_image(img, fmt), 3), img)


def test_stream_is_the_requested_format(fashion):
    img = _fashion_u8(fashion)[0]
    assert bl.encode_image(img, "png").startswith(b"\x89PNG\r\n\x1a\n")
    assert bl.encode_image(img, "jpeg", 50).startswith(b"\xff\xd8\xff")
    ll, lossy = bl.encode_image(img, "webp-lossless"), bl.encode_image(img, "webp", 50)
    assert ll[:4] == lossy[:4] == b"RIFF" and ll[8:12] == lossy[8:12] == b"WEBP"
    assert ll[12:16] == b"VP8L" and lossy[12:16] == b"VP8 "  # lossless vs lossy bitstream
    if "avif" in bl.available_formats():
        blob = bl.encode_image(img, "avif", 50)
        assert blob[4:12] == b"ftypavif"
        assert Image.open(io.BytesIO(blob)).mode == "L"  # coded as monochrome AV1 (4:0:0)


@pytest.mark.parametrize("fmt", bl.LOSSLESS_FORMATS)
def test_lossless_baseline_matches_the_uncompressed_model(fmt, fashion, model):
    x, y = fashion.tensors
    with torch.no_grad():
        ref = model(x).argmax(1)  # the model straight on the original images
        dec, sizes = bl.code_images(fashion, "fashion-mnist", fmt)
        assert torch.equal(model(dec.tensors[0]).argmax(1), ref)
    r = bl.image_codec_baseline(model, fashion, "fashion-mnist", fmt)
    assert torch.equal(r["correct"], ref == y)
    assert r["accuracy"] == int((ref == y).sum()) / 16 and r["n_images"] == 16
    assert 0 <= r["accuracy_lo"] <= r["accuracy"] <= r["accuracy_hi"] <= 1
    assert r["accuracy_lo"] < r["accuracy_hi"]
    assert r["stream_bytes"] == pytest.approx(sizes.mean())
    assert r["bpp"] == pytest.approx(8 * sizes.mean() / (28 * 28))


# --- JPEG settings --------------------------------------------------------------------------

@pytest.mark.parametrize("quality", [1, 10, 50, 90])
def test_jpeg_is_never_larger_than_plain_pillow_and_decodes_the_same(quality, fashion, rgb):
    for imgs, channels in ((_fashion_u8(fashion), 1), (rgb[1], 3)):
        ours_total, plain_total = 0, 0
        for img in imgs[:8]:
            src = img[..., 0] if channels == 1 else img
            buf = io.BytesIO()
            Image.fromarray(src).save(buf, format="JPEG", quality=quality)  # no optimize, sequential
            ours = bl.encode_image(img, "jpeg", quality)
            assert len(ours) <= len(buf.getvalue())
            ours_total, plain_total = ours_total + len(ours), plain_total + len(buf.getvalue())
            # same quantized coefficients: the pixels equal those of the plain stream
            ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
            assert np.array_equal(bl.decode_image(ours, channels).reshape(ref.shape), ref)
        assert ours_total < plain_total  # optimized Huffman tables do save bytes


# --- lossy: quality ordering ----------------------------------------------------------------

@pytest.mark.parametrize("fmt", LOSSY)
def test_lower_quality_is_smaller_and_worse_on_average(fmt, fashion, rgb):
    for data, dataset in ((fashion, "fashion-mnist"), (rgb[0], "cifar10")):
        means, psnrs = [], []
        for q in (5, 30, 60, 90):
            dec, sizes = bl.code_images(data, dataset, fmt, q)
            assert dec.tensors[0].shape == data.tensors[0].shape
            assert torch.equal(dec.tensors[1], data.tensors[1])
            means.append(sizes.mean())
            psnrs.append(_psnr(dec.tensors[0], data.tensors[0]))
        assert all(a <= b for a, b in zip(means, means[1:])), (dataset, means)
        assert psnrs[0] < psnrs[-1], (dataset, psnrs)  # quality reaches the encoder


def test_default_grids_reach_low_rates(fashion):
    for fmt, grid in bl.QUALITIES.items():
        assert fmt in bl.LOSSY_FORMATS and all(0 <= q <= 100 for q in grid)
        assert list(grid) == sorted(set(grid)) and {10, 50, 90} <= set(grid)
    assert min(bl.QUALITIES["webp"]) == 0 and min(bl.QUALITIES["jpeg"]) == 1
    _, sizes = bl.code_images(fashion, "fashion-mnist", "webp", 0)
    assert 8 * sizes.mean() / (28 * 28) < 1.5  # WebP's floor is near 1 bpp on these images


# --- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,quality,name", [
    ("gif", None, "fmt"), ("PNG", None, "fmt"), ("jpg", 50, "fmt"),
    ("jpeg", -1, "quality"), ("jpeg", 101, "quality"), ("webp", 50.5, "quality"),
    ("webp", None, "quality"), ("jpeg", True, "quality"), ("png", 90, "quality"),
    ("webp-lossless", 100, "quality"),
])
def test_bad_format_or_quality_is_a_value_error(fmt, quality, name, fashion, model):
    with pytest.raises(ValueError, match=name):
        bl.code_images(fashion, "fashion-mnist", fmt, quality)
    with pytest.raises(ValueError, match=name):
        bl.image_codec_baseline(model, fashion, "fashion-mnist", fmt, quality)
    with pytest.raises(ValueError, match=name):
        bl.encode_image(_fashion_u8(fashion)[0], fmt, quality)


def test_quality_bounds_are_accepted(fashion):
    for q in (0, 100):
        _, sizes = bl.code_images(fashion, "fashion-mnist", "webp", q)
        assert (sizes > 0).all()


def test_bad_data_is_a_value_error(fashion, rgb):
    with pytest.raises(ValueError, match="data"):
        bl.code_images(rgb[0], "fashion-mnist", "png")  # 3 channels for a 1-channel dataset
    with pytest.raises(ValueError, match="data"):
        bl.code_images(TensorDataset(fashion.tensors[0][:0], fashion.tensors[1][:0]), "fashion-mnist", "png")
    with pytest.raises(ValueError, match="img"):
        bl.encode_image(np.zeros((8, 8), np.float32), "png")
    with pytest.raises(ValueError, match="channels"):
        bl.decode_image(bl.encode_image(np.zeros((8, 8), np.uint8), "png"), 2)


def test_available_formats_follow_pillow():
    assert ("avif" in bl.available_formats()) == features.check("avif")
    assert {"png", "jpeg"} <= set(bl.available_formats()) <= set(bl.IMAGE_FORMATS)


def test_avif_unavailable_is_a_value_error_that_says_so(monkeypatch, fashion):
    real = features.check
    monkeypatch.setattr(features, "check", lambda feature: feature != "avif" and real(feature))
    assert "avif" not in bl.available_formats()
    with pytest.raises(ValueError, match="'avif' is not available.*without 'avif'"):
        bl.code_images(fashion, "fashion-mnist", "avif", 50)


def test_webp_payload_drops_exactly_the_container_and_the_shape_fields():
    """Read here from the RIFF layout: 'RIFF' size 'WEBP' (12 bytes), 'VP8 ' chunk size (8), then a
    key frame: 3-byte frame tag, start code 9d 01 2a, 2+2 bytes of dimensions."""
    import io
    from PIL import Image
    img = (np.arange(28 * 28).reshape(28, 28) * 7 % 256).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "WEBP", quality=50)
    blob = buf.getvalue()
    assert blob[12:16] == b"VP8 " and blob[23:26] == bytes([0x9D, 0x01, 0x2A])
    assert int.from_bytes(blob[26:28], "little") & 0x3FFF == 28
    chunk = int.from_bytes(blob[16:20], "little")
    assert len(blob) == 20 + chunk + chunk % 2
    assert bl.payload_bytes(blob, "webp") == chunk - 7
    assert bl.payload_bytes(blob, "png") == len(blob)  # only what was checked is taken off
    assert bl.payload_bytes(b"RIFF" + blob[4:12] + b"VP8X" + blob[16:], "webp") == len(blob)
    fashion = bsu.load_dataset(split="test", subset=8)
    ev = bl.image_codec_baseline(bsu.load_pretrained(), fashion, "fashion-mnist", "webp", 50)
    _, sizes, payload = bl.code_images_payload(fashion, "fashion-mnist", "webp", 50)
    assert (payload < sizes).all() and ev["bpp_payload"] == pytest.approx(8 * payload.mean() / 784)
