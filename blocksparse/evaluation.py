"""Evaluation: accuracy on decoded features, rate from real per-image streams."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from .bitstream import bpp
from .codebook import Codebook, codebook_bytes, decode, encode, encode_batch, rate
from .codec import CodecConfig, compress
from .data import evenly_spaced
from .codebook import POSITION_MODELS
from .model import SplitResNet18
from .stats import wilson_interval
from .runtime import module_device



@torch.no_grad()
def head_features(model: SplitResNet18, data: TensorDataset, batch_size: int = 256) -> Tensor:
    """Split-point features of all images of ``data`` (float32, CPU), to reuse across configs."""
    model.eval()
    device = module_device(model)
    x = data.tensors[0]
    return torch.cat([model.head(x[s:s + batch_size].to(device).contiguous(memory_format=torch.channels_last))
                      .float().cpu().contiguous() for s in range(0, len(x), batch_size)])


@torch.no_grad()
def evaluate(model: SplitResNet18, cfg: CodecConfig | None, data: TensorDataset,
             rate_sample: int | None = None, batch_size: int = 256, exact: bool = False,
             features: Tensor | None = None, codebook: Codebook | None = None) -> dict:
    """Accuracy, rate and feature memory of one configuration.

    Parameters
    ----------
    cfg : CodecConfig or None
        None evaluates the uncompressed model.
    data : TensorDataset
        Images and labels (e.g. ``load_dataset(..., "test")``).
    rate_sample : int, optional
        Encode ``rate_sample`` evenly spaced images one by one for the rate (default: all).
    exact : bool
        Also decode each sampled stream and check it equals what the tail consumed.
    features : Tensor, optional
        ``head_features(model, data)``, computed once for many configurations.
    codebook : Codebook, optional
        Fitted code tables for ``cfg`` (``fit_codebook`` on training features): then ``bpp``
        and the breakdown are those of the amortized per-image streams (the tables ship once
        with the model, like a learned codec's entropy model; their size is
        ``codebook_bytes``) and ``bpp_self_contained`` that of self-contained streams.

    Returns
    -------
    dict
        ``accuracy`` (the tail consumed exactly what the decoder returns); ``bpp`` and
        ``bytes`` (mean of real per-image streams); mean ``breakdown`` bits per section;
        entropy ``estimates``; ``raw_bytes`` (float32 features per image); ``n_images`` and
        ``n_rate``; ``accuracy_lo``/``accuracy_hi`` (95% Wilson interval); ``correct``, a bool
        tensor per image, for paired comparisons on the same images.
    """
    model.eval()
    device = module_device(model)
    x, y = data.tensors
    hw = tuple(x.shape[-2:])
    if rate_sample is not None and rate_sample < 1:
        raise ValueError(f"rate_sample must be >= 1 (or None for all images), got {rate_sample}")
    in_rate = torch.zeros(len(x), dtype=torch.bool)
    in_rate[evenly_spaced(len(x), len(x) if rate_sample is None else rate_sample)] = True
    correct, rates, raw = [], [], 0
    for s in range(0, len(x), batch_size):
        z = (model.head(x[s:s + batch_size].to(device).contiguous(memory_format=torch.channels_last))
             if features is None else features[s:s + batch_size].to(device))
        raw = 4 * z[0].numel()
        zc = z if cfg is None else compress(z, cfg).to(device)
        correct.append(model.tail(zc).argmax(1).cpu() == y[s:s + batch_size])
        if cfg is not None:
            sel = in_rate[s:s + len(z)].nonzero().view(-1).tolist()
            amortized = encode_batch(z[sel].cpu(), codebook) if codebook is not None and sel else []
            for j, i in enumerate(sel):
                blob = encode(z[i:i + 1].cpu(), cfg)
                if exact and not torch.equal(decode(blob), zc[i:i + 1].cpu()):
                    raise AssertionError("decoded features differ from the ones evaluated")
                rates.append(rate(blob, hw))
                if codebook is not None:
                    if exact and not torch.equal(decode(amortized[j], codebook), zc[i:i + 1].cpu()):
                        raise AssertionError("decoded features differ from the ones evaluated")
                    rates[-1] = rate(amortized[j], hw, codebook) | dict(self_contained_bpp=rates[-1]["bpp"])
    correct = torch.cat(correct)
    k = int(correct.sum())
    lo, hi = wilson_interval(k, len(x))
    out = dict(accuracy=k / len(x), accuracy_lo=lo, accuracy_hi=hi, n_images=len(x), n_rate=len(rates),
               raw_bytes=raw, correct=correct)
    if cfg is None:
        return out | dict(bpp=bpp(raw, hw), bytes=float(raw))
    out |= dict(bpp=float(np.mean([r["bpp"] for r in rates])), bytes=float(np.mean([r["bytes"] for r in rates])),
                bpp_self_contained=float(np.mean([r.get("self_contained_bpp", r["bpp"]) for r in rates])),
                coder=codebook.coder if codebook is not None else "huffman",
                codebook_bytes=codebook_bytes(codebook) if codebook is not None else 0)
    out["breakdown"] = {k: float(np.mean([r["breakdown"][k] for r in rates])) for k in rates[0]["breakdown"]}
    out["estimates"] = {k: float(np.mean([r["estimates"][k] for r in rates])) for k in rates[0]["estimates"]}
    out["position_coding"] = {c: sum(r["position_coding"] == c for r in rates) for c in POSITION_MODELS}
    return out



def result_row(ev: dict, cfg: CodecConfig | None = None, method: str | None = None, **extra) -> dict:
    """One results row (``results.SCHEMA`` columns) from an ``evaluate`` result.

    ``cfg`` fills the codec columns; ``extra`` adds or overrides columns (``finetuned``,
    ``seed``, ``split_at``, ...).
    """
    row = dict(method=method or ("uncompressed" if cfg is None else "blocksparse"),
               accuracy=ev["accuracy"], accuracy_lo=ev["accuracy_lo"], accuracy_hi=ev["accuracy_hi"],
               n_images=ev["n_images"], bpp=ev["bpp"], stream_bytes=ev["bytes"])
    if cfg is not None:
        row |= dict(mode=cfg.mode, block_size=cfg.block_size, ratio=cfg.ratio, bits=cfg.bits, n_rate=ev["n_rate"],
                    bpp_self_contained=ev["bpp_self_contained"], coder=ev["coder"])
    if "breakdown" in ev:
        row |= {f"{k}_bits": v for k, v in ev["breakdown"].items()}
        row["delta_share"] = ev["position_coding"]["delta"] / ev["n_rate"]
    return row | extra
