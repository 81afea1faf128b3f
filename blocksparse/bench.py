"""Speed figures that are printed, never asserted: ``python blocksparse_utils.py bench`` (then the codec's
sections against their limits, ``limits.codec_limits``)."""
from __future__ import annotations

import statistics

import torch
import zstandard

from . import codebook as cbk
from .bitstream import decode, encode
from .codec import CodecConfig, compress
from .costs import timings
from .limits import codec_limits
from .model import load_pretrained
from .runtime import set_seed


def benchmark() -> None:
    """Encode/decode speed on a [128, 64, 32, 32] ReLU tensor (4x4, ratio 0.1, channel-wise,
    4 bits) in MB/s of float32 input, with zstd level 3 on the raw bytes for reference; then
    batch-1 latency at the operating point (a [1, 64, 28, 28] ReLU map, global, 4x4, ratio
    0.005, 2 bits; self-contained and with a fitted ANS codebook) against the shipped model's
    head on one image, and the batched per-image encoder cost. Prints, asserts nothing."""
    set_seed(0)
    x = torch.randn(128, 64, 32, 32).relu()
    cfg = CodecConfig(4, 0.1, "channel-wise", 4)
    mb = x.numel() * 4 / 1e6

    def best(f, k=5):
        return min(timings(f, k, warmup=1))

    blob = encode(x, cfg)
    raw = x.numpy().tobytes()
    z = zstandard.ZstdCompressor(level=3).compress(raw)
    rows = [("blocksparse encode", best(lambda: encode(x, cfg)), len(blob)),
            ("blocksparse decode", best(lambda: decode(blob)), len(blob)),
            ("blocksparse compress (no entropy coding)", best(lambda: compress(x, cfg)), len(blob)),
            ("zstd-3 compress (lossless)", best(lambda: zstandard.ZstdCompressor(level=3).compress(raw)), len(z)),
            ("zstd-3 decompress", best(lambda: zstandard.ZstdDecompressor().decompress(z)), len(z))]
    print(f"input: {tuple(x.shape)} float32 = {mb:.1f} MB; {cfg}; torch threads {torch.get_num_threads()}")
    for name, t, size in rows:
        print(f"{name:42s} {mb / t:8.1f} MB/s  ({1000 * t:6.1f} ms, stream {size / 1e6:.3f} MB)")

    # batch-1 latency at the operating point: what one request costs next to the head's compute
    def median_ms(f, n=200):  # (median, min) in ms; the min shows what a busy machine hides
        times = timings(f, n, warmup=5)
        return 1000 * statistics.median(times), 1000 * min(times)

    op = CodecConfig(4, 0.005, "global", 2)
    one = torch.randn(1, 64, 28, 28).relu()
    cb = cbk.fit_codebook(torch.randn(256, 64, 28, 28).relu(), op, "ans")  # synthetic ReLU maps, like `one`
    sc, amortized = encode(one, op), cbk.encode_batch(one, cb)[0]
    model = load_pretrained(device="cpu")
    image = torch.randn(1, 1, 28, 28)
    with torch.no_grad():
        head = median_ms(lambda: model.head(image))
    latency = [("self-contained", median_ms(lambda: encode(one, op)), median_ms(lambda: decode(sc)), len(sc)),
               ("ans codebook", median_ms(lambda: cbk.encode_batch(one, cb)),
                median_ms(lambda: cbk.decode(amortized, cb)), len(amortized))]
    print(f"\nbatch 1, median (min) of 200 calls: {tuple(one.shape)} ReLU map, {op}")
    print(f"{'head':16s} {head[0]:8.3f} ms ({head[1]:.3f})  shipped model, 1x1x28x28, cpu, no_grad, eval")
    for name, enc, dec, size in latency:
        print(f"{name:16s} encode {enc[0]:8.3f} ms ({enc[1]:.3f}) = {enc[0] / head[0]:6.3f}x head;  decode "
              f"{dec[0]:8.3f} ms ({dec[1]:.3f}) = {dec[0] / head[0]:6.3f}x head;  stream {size} bytes")
    batch = torch.randn(256, 64, 28, 28).relu()
    per_image = 1000 * best(lambda: cbk.encode_batch(batch, cb), k=3) / len(batch)
    print(f"encode_batch of 256 images (ans codebook, best of 3): {per_image:.3f} ms per image "
          f"({1000 / per_image:.0f} images/s, {per_image / head[0]:.3f}x the batch-1 head)")
    codec_limits()
