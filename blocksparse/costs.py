"""What the device computes per image, for each split and family of the answer: the head's and the
encoder's multiply-adds and parameters (counted), and their batch-1 latency (measured here, on this
machine's CPU: a figure of the machine, printed with it, never a target)."""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from . import bottleneck as bnk
from .baselines import encode_image, uint8_images
from .codebook import encode_batch, load_codebook
from .data import load_dataset
from .model import SPLIT_POINTS, build_model

# the learned bottleneck's latent stride per split (latents of 7x7, 7x7 and 4x4), and its width
BOTTLENECK_STRIDES = {"layer1": 4, "layer2": 2, "layer3": 2}
LATENT_CHANNELS = 8


def count_macs(module: torch.nn.Module, x: torch.Tensor, run=None) -> int:
    """Multiply-adds of the convolutions and linear layers of ``module`` on ``x`` (``run``: the call
    to make instead of ``module(x)``, e.g. a model's head)."""
    total = [0]

    def hook(m, _, out):
        if isinstance(m, torch.nn.Conv2d):
            total[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, torch.nn.Linear):
            total[0] += out.numel() * m.in_features
    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        (run or module)(x)
    for h in handles:
        h.remove()
    return total[0]


def costs(dataset: str = "fashion-mnist", input_hw: tuple[int, int] = (28, 28)) -> dict:
    """Per (split, family), for one image: ``head_macs`` and ``head_params`` (the network before the
    split; none for an image codec), ``encoder_macs`` and ``encoder_params`` (the learned
    bottleneck's encoder; block-sparse: one multiply-add per feature for the block energies, no
    parameters; WebP: not counted in MACs)."""
    out = {}
    x = torch.zeros(1, 1 if dataset == "fashion-mnist" else 3, *input_hw)
    for split_at in SPLIT_POINTS:
        model = build_model(dataset, split_at).eval()
        head = count_macs(model, x, model.head)
        params = sum(p.numel() for m in model.head_modules() for p in m.parameters())
        with torch.no_grad():
            z = model.head(x)
        bn = bnk.Bottleneck(in_channels=model.split_channels, latent_channels=LATENT_CHANNELS,
                            stride=BOTTLENECK_STRIDES[split_at]).eval()
        common = dict(head_macs=head, head_params=params)
        out[split_at, "block-sparse"] = common | dict(encoder_macs=z.numel(), encoder_params=0)
        out[split_at, "bottleneck"] = common | dict(encoder_macs=count_macs(bn.encoder, z),
                                                    encoder_params=sum(p.numel() for p in bn.encoder.parameters()))
        for family in ("webp-finetuned", "webp"):
            out[split_at, family] = dict(head_macs=0, head_params=0, encoder_macs=None, encoder_params=0)
    return out


def timings(f, n: int, warmup: int) -> list[float]:
    """Seconds of ``n`` calls of ``f`` after ``warmup`` untimed ones."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    for _ in range(warmup):
        f()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return times


def median_ms(f, n: int = 100, warmup: int = 5) -> float:
    """Median milliseconds of ``n`` calls of ``f`` after ``warmup`` untimed ones."""
    return 1000 * statistics.median(timings(f, n, warmup))


def latencies(operating_points: dict, dataset: str = "fashion-mnist", n: int = 100) -> dict:
    """Batch-1 latency in ms, per (split, family): ``head_ms`` (the head on one image, eval, no
    grad; only at splits with a block-sparse or bottleneck operating point) and ``encoder_ms``
    (what runs after it to make the stream: block-sparse selection, quantization and coding with
    the model's code tables; the bottleneck's encoder and its entropy coding; WebP's encoder on the
    8-bit image), for each ``operating_points[split, family]``, a
    card (its ``path``, ``setting`` and ``codebook`` or ``bottleneck`` files). Measured on one
    training image (speed does not depend on which); weights do not change the speed, so the head
    is the untrained network's."""
    one = load_dataset(dataset, "train", subset=1)
    image, pixels = one.tensors[0][:1], uint8_images(one, dataset)[0]
    out, codec_ms = {}, {}  # an image codec's encoder is the same at every split: timed once
    for split_at in SPLIT_POINTS:
        model = build_model(dataset, split_at).eval()
        head_ms = None  # measured where an encoder after the head is timed beside it
        if any((split_at, f) in operating_points for f in ("block-sparse", "bottleneck")):
            with torch.no_grad():
                head_ms = median_ms(lambda: model.head(image), n)
        with torch.no_grad():
            z = model.head(image)
        for family in ("block-sparse", "bottleneck", "webp-finetuned", "webp"):
            card = operating_points.get((split_at, family))
            row = dict(head_ms=head_ms if family in ("block-sparse", "bottleneck") else 0.0, encoder_ms=None)
            if card is not None and card.get("val_select") is not None:
                folder = Path(card["path"]).parent
                if family == "block-sparse":
                    cb = load_codebook(folder / card["codebook"])
                    row["encoder_ms"] = median_ms(lambda: encode_batch(z, cb), n)
                elif family == "bottleneck":
                    bn = bnk.load_bottleneck(folder / card["bottleneck"]).eval()
                    with torch.no_grad():
                        row["encoder_ms"] = median_ms(lambda: bnk.encode(bn, z), n)
                else:
                    q = int(card["setting"]["quality"])
                    if card["path"] not in codec_ms:
                        codec_ms[card["path"]] = median_ms(lambda: encode_image(pixels, "webp", q), n)
                    row["encoder_ms"] = codec_ms[card["path"]]
            out[split_at, family] = row
    return out
