"""The original study's rate and accuracy accounting, reproduced to measure the gap to real streams.

The original study (joeyuping/video-processing-final-project, ``feature_compression-blocksparse.py``,
commit 3751869) never wrote a stream. It *estimated* a rate from one batch and measured accuracy
on features that no decoder could return. This module re-implements that accounting from its
description, so its numbers can be set beside the real per-image streams of ``bitstream``:

* **Selection.** Border zeroed, maps padded with zeros to multiples of B, block energy = sum of
  squares of the B*B values; in each group exactly ``k = max(1, int(ratio * group size))`` blocks
  are kept by ``torch.topk`` (zero-energy blocks too, when fewer are non-zero), in top-K order
  (strongest first). Region-wise sums the energies over channels and keeps the chosen positions
  in every channel.
* **Values.** All B*B values of every kept block are counted, border and padding zeros included;
  one scale per batch, ``round((v - min) * (2**bits - 1) / (max - min))``, and the levels are
  Huffman-coded with a table fitted to the batch (table not counted). The original hard-coded
  ``bits = 2``.
* **Positions.** Each coordinate (image, channel, row, column) of the kept blocks, in emission
  order, becomes a stream of differences to the previous entry (the first entry as is), Huffman-
  coded with its own fitted table (not counted). Which streams, and where differences restart,
  depends on the mode (see ``original_bit_breakdown``). A stream of one distinct symbol costs 0
  bits (the ``huffman`` package gives it the empty code).
* **Rate.** Bits of the *first* batch only, divided by the input pixels of that batch
  (images x H x W of the input, not of the features). At ``ratio >= 1`` nothing is compressed
  and the bpp is the constant 24.0 (an 8-bit RGB image), whatever the data.
* **Accuracy.** The tail sees the float kept values (border zeroed, nothing quantized).

Everything here is the original's *estimate*, not a rate: ``rate_is_estimate`` is True on every
result. Fine-tuning with early stopping on the test set, the original's other optimism, is not
reproduced here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from . import bitstream
from .codec import CodecConfig, partition, pixel_mask
from .entropy import huffman_lengths
from .results import to_frame
from .runtime import module_device

if TYPE_CHECKING:  # only for the type hint; keeps this module importable on its own
    from .model import SplitResNet18

METHOD = "original-accounting"
ORIGINAL_BITS = 2  # the quantizer depth the original hard-coded for every run
BASELINE_BPP = 24.0  # the original's bpp at ratio >= 1: an 8-bit RGB image, not a measurement
METADATA_BITS = 32  # region-wise and global: 16 bits each for two counts
TABLE_ENTRY_BITS = 21  # an estimated Huffman table entry: a 16-bit symbol and a 5-bit code length


def _check_cfg(cfg: CodecConfig) -> None:
    if not isinstance(cfg, CodecConfig):
        raise ValueError(f"cfg must be a CodecConfig, got {type(cfg).__name__}")


def _group_k(ratio: float, group_size: int) -> int:
    # Python's int() on the float product, as the original did (no epsilon, unlike
    # codec.kept_per_group), so a product like 2.9999999 would floor to 2 there too.
    return min(group_size, max(1, int(group_size * ratio)))


def original_selection(features: Tensor, cfg: CodecConfig) -> tuple[Tensor, Tensor, Tensor]:
    """The blocks the original kept, in the order it emitted them.

    Parameters
    ----------
    features : Tensor
        Split-point features [N, C, H, W] of one batch.
    cfg : CodecConfig
        ``block_size``, ``ratio``, ``mode`` and ``zero_border`` are used (the original always
        zeroed the border).

    Returns
    -------
    index : Tensor
        int64 [4, M]: image, channel, row and column of each kept block, row and column in
        pixels of the padded map (block row * B), in emission order: image-major, then channel
        (channel-wise, region-wise) and top-K order (strongest first) within a group.
    values : Tensor
        float32 [M, B*B]: all values of each kept block, border and padding zeros included.
    mask : Tensor
        bool [N, C, Hb, Wb]: the kept blocks.
    """
    _check_cfg(cfg)
    b = cfg.block_size
    blocks = partition(features, b, cfg.zero_border)  # [N, C, Hb, Wb, B, B], border zeroed, padded
    n, c, hb, wb = blocks.shape[:4]
    if cfg.mode == "region-wise":
        g = blocks.pow(2).sum(dim=(1, 4, 5)).reshape(n, hb * wb)  # a position's energy over all channels
    elif cfg.mode == "global":
        g = blocks.pow(2).sum(dim=(-1, -2)).reshape(n, c * hb * wb)
    else:
        g = blocks.pow(2).sum(dim=(-1, -2)).reshape(n * c, hb * wb)
    # torch.topk, as the original: exactly k per group, strongest first; how it orders ties
    # (e.g. zero-energy blocks) is up to torch and may differ between CPU and GPU.
    top = torch.topk(g, _group_k(cfg.ratio, g.shape[1]), dim=1).indices
    k = top.shape[1]
    if cfg.mode == "channel-wise":
        img = torch.arange(n).repeat_interleave(c)[:, None].expand(-1, k)
        ch = torch.arange(c).repeat(n)[:, None].expand(-1, k)
        pos = top
    elif cfg.mode == "global":
        img = torch.arange(n)[:, None].expand(-1, k)
        ch, pos = top // (hb * wb), top % (hb * wb)
    else:  # region-wise: the same k positions, repeated for every channel of the image
        img = torch.arange(n)[:, None, None].expand(n, c, k)
        ch = torch.arange(c)[None, :, None].expand(n, c, k)
        pos = top[:, None, :].expand(n, c, k)
    img, ch, pos = (t.reshape(-1) for t in (img, ch, pos))
    row, col = pos // wb, pos % wb
    index = torch.stack([img, ch, row * b, col * b])
    values = blocks[img, ch, row, col].reshape(-1, b * b)
    mask = torch.zeros(n, c, hb, wb, dtype=torch.bool)
    mask[img, ch, row, col] = True
    return index, values, mask


def _huffman_total(symbols: Tensor | np.ndarray) -> int:
    """Bits of ``symbols`` under a Huffman code fitted to them; one distinct symbol costs 0."""
    _, counts = np.unique(np.asarray(symbols).reshape(-1), return_counts=True)
    if len(counts) < 2:  # the huffman package's lone symbol gets the empty code
        return 0
    return int((huffman_lengths(counts) * counts).sum())


def _deltas(v: Tensor) -> Tensor:
    """Difference to the previous entry along the last axis; the first entry as is."""
    d = v.clone()
    d[..., 1:] = v[..., 1:] - v[..., :-1]
    return d


def original_value_bits(values: Tensor, bits: int = ORIGINAL_BITS) -> int:
    """The original's bit count for the kept values of one batch.

    One scale for the batch: levels ``round((v - min) * s)``, ``s = (2**bits - 1) / (max - min)``,
    clamped to ``0..2**bits-1``; bits = ``int(mean code length * count)`` of a Huffman code
    fitted to the levels (its table is not counted). Values all equal cost 0.
    """
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise ValueError(f"bits must be an integer in 1..8, got {bits!r}")
    v = values.detach().float().cpu().reshape(-1)
    if len(v) == 0:
        return 0
    if v.max() == v.min():  # the original divided by zero here; every value is one symbol either way
        return 0
    _, counts = np.unique(_levels(v, bits).numpy(), return_counts=True)
    total = int(counts.sum())
    lengths = huffman_lengths(counts) if len(counts) > 1 else np.zeros(1, np.int64)
    # The original went through the mean and back, truncating with int(); kept for fidelity.
    return int(float((lengths * counts).sum()) / total * total)


def _levels(values: Tensor, bits: int) -> Tensor:
    """The original's quantizer: one scale for all ``values``, levels 0..2**bits-1 (uint8)."""
    v = values.detach().float().cpu().reshape(-1)
    if len(v) == 0 or v.max() == v.min():
        return torch.zeros_like(v, dtype=torch.uint8)
    lo, span = v.min(), v.max() - v.min()
    return ((v - lo) * ((2 ** bits - 1) / span)).round().clamp(0, 2 ** bits - 1).to(torch.uint8)


def original_bit_breakdown(features: Tensor, cfg: CodecConfig, *, inside_only: bool = False,
                           raster_order: bool = False, count_tables: bool = False) -> dict[str, int]:
    """The original's bit count for one batch of features, by part.

    Position streams, each Huffman-coded with its own fitted table:

    * channel-wise: four difference streams (image, channel, row, column) over the whole batch
      in emission order, never restarted; nothing else.
    * global: the channel of each kept block coded as is (no difference), row and column as
      differences restarted at every image; plus 32 bits.
    * region-wise: row and column only (all channels of a position are kept), as differences
      restarted at every image over its C*k entries (the k positions repeat per channel);
      plus 32 bits.

    The keyword flags turn one of the original's choices the other way, to measure what each
    choice does to its number (``original_choices``); all False is the original.

    Parameters
    ----------
    features : Tensor
        Split-point features [N, C, H, W] (one batch).
    cfg : CodecConfig
        The codec; ``cfg.bits`` is the quantizer depth (the original used 2).
    inside_only : bool
        Count only the values a decoder needs: not the zeroed border, not the padding.
    raster_order : bool
        Emit the kept blocks in raster order (image, channel, row, column) instead of top-K order
        before taking differences.
    count_tables : bool
        Add the Huffman tables the original fitted per batch and never counted, at
        ``TABLE_ENTRY_BITS`` per distinct symbol of each stream (an estimate of a table's size).

    Returns
    -------
    dict
        ``values_bits``, ``positions_bits`` and ``total_bits`` (ints, for the whole batch).
    """
    index, values, _ = original_selection(features, cfg)
    n = features.shape[0]
    if raster_order:
        order = np.lexsort(index.numpy()[::-1])  # last key (image) is the primary one
        index, values = index[:, order], values[order]
    if inside_only:
        h, w = features.shape[-2:]
        b = cfg.block_size
        valid = partition(torch.ones(1, 1, h, w), b, cfg.zero_border)[0, 0] != 0  # [Hb, Wb, B, B]
        valid = valid[index[2] // b, index[3] // b].reshape(len(values), -1)
        values = values[valid]
    streams = []  # (symbols, coded with a fitted table)
    if cfg.mode == "channel-wise":
        streams += [_deltas(index[i]) for i in range(4)]
        extra = 0
    else:
        streams += [_deltas(index[i].reshape(n, -1)) for i in (2, 3)]
        if cfg.mode == "global":
            streams.append(index[1])
        extra = METADATA_BITS
    pos = sum(_huffman_total(s) for s in streams) + extra
    vals = original_value_bits(values, cfg.bits)
    if count_tables:
        pos += sum(_table_bits(s) for s in streams)
        vals += _table_bits(_levels(values, cfg.bits))
    return dict(values_bits=vals, positions_bits=pos, total_bits=vals + pos)


def _table_bits(symbols: Tensor) -> int:
    """Estimated size of a Huffman table for ``symbols``: TABLE_ENTRY_BITS per distinct symbol
    (none for a lone symbol, which costs 0 bits in the original)."""
    d = len(np.unique(np.asarray(symbols).reshape(-1)))
    return TABLE_ENTRY_BITS * d if d > 1 else 0


CHOICES = {
    "as computed": {},
    "border and padding not counted": dict(inside_only=True),
    "positions in raster order": dict(raster_order=True),
    "code tables counted": dict(count_tables=True),
    "all batches, not the first": dict(all_batches=True),
    "ratio >= 1 measured, not 24 bpp": dict(measure_ratio_one=True),
}
"""The original's choices that move its bpp, each named by what it becomes when turned the other way."""

CHOICE_NAMES = {
    "border and padding not counted": "counting the border and padding values of kept blocks",
    "positions in raster order": "taking position differences in top-K order",
    "code tables counted": "leaving out the per-batch code tables",
    "all batches, not the first": "measuring the first batch only",
    "ratio >= 1 measured, not 24 bpp": "the hard-coded 24 bpp at ratio 1",
}
"""What the original did, per entry of ``CHOICES`` turned the other way (for the README)."""


def original_choices(features: Tensor, cfg: CodecConfig, input_hw: tuple[int, int],
                     batch_size: int = 128) -> list[dict]:
    """The original's bpp estimate with each of its choices turned the other way, one at a time.

    ``"as computed"`` is ``original_bpp`` of the first batch. Each other entry of ``CHOICES``
    changes exactly one thing: values counted only where a decoder needs them; positions
    emitted in raster order instead of top-K order; the per-batch Huffman tables counted
    (estimated); every batch of ``features`` averaged instead of the first; the formula's own
    count at ratio >= 1 instead of the hard-coded 24 bpp. The difference to ``"as computed"``
    is what that choice does to the original's number.

    Parameters
    ----------
    features : Tensor
        Split-point features [N, C, H, W] of the evaluation images, in the loader's order.
    cfg : CodecConfig
        The codec (the original: B=4, 2 bits).
    input_hw : tuple
        Height and width of the input images.
    batch_size : int
        The original's batch size (128).

    Returns
    -------
    list of dict
        One per choice: ``choice``, ``bpp``, ``n_rate`` (images the bpp is measured on),
        ``rate_is_estimate`` (True).
    """
    _check_cfg(cfg)
    if len(input_hw) != 2 or min(input_hw) < 1:
        raise ValueError(f"input_hw must be (height, width) of the input images, got {input_hw!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if features.ndim != 4 or len(features) == 0:
        raise ValueError(f"features must be a non-empty [N, C, H, W] tensor, got shape {tuple(features.shape)}")
    z = features.detach().float().cpu()
    rows = []
    for choice, flags in CHOICES.items():
        flags = dict(flags)
        all_batches, measure = flags.pop("all_batches", False), flags.pop("measure_ratio_one", False)
        batches = [z[s:s + batch_size] for s in range(0, len(z), batch_size)] if all_batches else [z[:batch_size]]
        n = sum(len(b) for b in batches)
        if cfg.ratio >= 1 and not measure:
            bpp = BASELINE_BPP
        else:
            bpp = bitstream.bpp(sum(original_bit_breakdown(b, cfg, **flags)["total_bits"] for b in batches) / 8,
                                input_hw, n)
        rows.append(dict(choice=choice, bpp=bpp, n_rate=n, rate_is_estimate=True))
    return rows


def original_bits(features: Tensor, cfg: CodecConfig) -> int:
    """Total bits the original counted for one batch of features (see ``original_bit_breakdown``)."""
    return original_bit_breakdown(features, cfg)["total_bits"]


def original_bpp(features: Tensor, cfg: CodecConfig, input_hw: tuple[int, int]) -> float:
    """The original's bpp for one batch: ``original_bits / (N * H_in * W_in)``; 24.0 at ratio >= 1.

    ``input_hw`` is the input image's height and width (the original divided by the input
    pixels, not the feature map's).
    """
    _check_cfg(cfg)
    if len(input_hw) != 2 or min(input_hw) < 1:
        raise ValueError(f"input_hw must be (height, width) of the input images, got {input_hw!r}")
    if cfg.ratio >= 1:
        return BASELINE_BPP
    return bitstream.bpp(original_bits(features, cfg) / 8, input_hw, features.shape[0])


def original_reconstruct(features: Tensor, cfg: CodecConfig) -> Tensor:
    """What the original's tail saw: the float values of the kept blocks, border zeroed, rest zero.

    Padding is cropped (the original's maps were never padded; it would have failed there).
    """
    _, _, mask = original_selection(features, cfg)
    h, w = features.shape[-2:]
    pm = pixel_mask(mask, h, w, cfg.block_size, cfg.zero_border)
    return features * pm.to(features.device)


@torch.no_grad()
def original_accounting(model: "SplitResNet18", cfg: CodecConfig, data: TensorDataset,
                        batch_size: int = 128) -> dict:
    """Accuracy and bpp as the original study computed them (an estimate, not a rate).

    Parameters
    ----------
    model : SplitResNet18
        Anything with ``head(x)`` and ``tail(z)``.
    cfg : CodecConfig
        The codec; use ``bits=ORIGINAL_BITS`` (2) to reproduce the original's runs.
    data : TensorDataset
        Normalized images and labels, in the order the original's unshuffled loader gave them.
    batch_size : int
        The original's batch size (128): the rate is measured on the first batch only.

    Returns
    -------
    dict
        ``accuracy`` (fraction; the tail fed the float kept values, or the plain model at
        ratio >= 1), ``bpp`` (first batch's bits per input pixel, or 24.0 at ratio >= 1),
        ``n_images``, ``n_rate`` (images the bpp comes from, 0 at ratio >= 1), ``values_bits``
        and ``positions_bits`` (mean per image of the first batch; None at ratio >= 1),
        ``rate_is_estimate`` (True) and ``method``.
    """
    _check_cfg(cfg)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not isinstance(data, TensorDataset) or len(data.tensors) < 2 or len(data) == 0:
        raise ValueError("data must be a non-empty TensorDataset of (images, labels)")
    model.eval()
    device = module_device(model)
    x, y = data.tensors[:2]
    baseline = cfg.ratio >= 1  # the original skipped compression (and border zeroing) here
    correct, first = 0, None
    for s in range(0, len(x), batch_size):
        z = model.head(x[s:s + batch_size].to(device).contiguous(memory_format=torch.channels_last))
        if not baseline:
            zf = z.float().cpu()
            if first is None:
                first = original_bit_breakdown(zf, cfg) | dict(n=len(zf))
            z = original_reconstruct(zf, cfg).to(device, z.dtype)
        correct += int((model.tail(z).argmax(1).cpu() == y[s:s + batch_size]).sum())
    out = dict(method=METHOD, accuracy=correct / len(x), n_images=len(x), rate_is_estimate=True)
    if baseline:
        return out | dict(bpp=BASELINE_BPP, n_rate=0, values_bits=None, positions_bits=None)
    return out | dict(bpp=bitstream.bpp(first["total_bits"] / 8, tuple(x.shape[-2:]), first["n"]), n_rate=first["n"],
                      values_bits=first["values_bits"] / first["n"],
                      positions_bits=first["positions_bits"] / first["n"])


def original_vs_real(results: pd.DataFrame) -> pd.DataFrame:
    """The original's accounting beside the real streams at the same mode, block size, ratio and
    bits: one row per ``original-accounting`` row with ``original_bpp`` (an estimate),
    ``original_accuracy``, ``real_bpp``, ``real_accuracy`` (the first non-fine-tuned block-sparse
    row of that configuration; ``<NA>`` where there is none). Accuracies as fractions."""
    results = to_frame(results)
    orig = results[(results["method"] == METHOD).fillna(False).to_numpy(bool)]
    raw = results[(results["method"] == "blocksparse").fillna(False).to_numpy(bool)
                  & ~results["finetuned"].fillna(False).astype(bool).to_numpy()]
    rows = []
    for _, o in orig.iterrows():
        same = raw[((raw["mode"] == o["mode"]) & (raw["block_size"] == o["block_size"])
                    & (raw["bits"] == o["bits"])).fillna(False).to_numpy(bool)
                   & np.isclose(raw["ratio"].to_numpy(float, na_value=np.nan), float(o["ratio"]))]
        real = same.iloc[0] if len(same) else None
        rows.append(dict(mode=o["mode"], block_size=o["block_size"], ratio=o["ratio"], bits=o["bits"],
                         original_bpp=o["bpp"], original_accuracy=o["accuracy"],
                         real_bpp=real["bpp"] if real is not None else pd.NA,
                         real_accuracy=real["accuracy"] if real is not None else pd.NA))
    cols = ["mode", "block_size", "ratio", "bits", "original_bpp", "original_accuracy", "real_bpp", "real_accuracy"]
    return pd.DataFrame(rows, columns=cols).astype(
        dict(mode="string", block_size="Int64", ratio="Float64", bits="Int64", original_bpp="Float64",
             original_accuracy="Float64", real_bpp="Float64", real_accuracy="Float64"))


def original_choices_table(choices: pd.DataFrame | None) -> pd.DataFrame:
    """The original's bpp as computed and with each of its choices turned the other way (rows of
    ``original.original_choices``), and the % its own choice adds over the changed accounting
    (``<choice> (+%)``; positive: the original's choice raises its number)."""
    if choices is None or len(choices) == 0:
        return pd.DataFrame()
    need = {"mode", "block_size", "ratio", "bits", "choice", "bpp"}
    if missing := need - set(choices.columns):
        raise ValueError(f"choices lacks columns {sorted(missing)}")
    keys = ["mode", "block_size", "ratio", "bits"]
    wide = choices.pivot_table(index=keys, columns="choice", values="bpp", sort=False)
    if "as computed" not in wide.columns:
        raise ValueError("choices must have an 'as computed' row per configuration")
    out = wide.reset_index()[keys].copy()
    out["as computed"] = wide["as computed"].round(3).to_numpy()
    for c in (c for c in wide.columns if c != "as computed"):
        out[c] = wide[c].round(3).to_numpy()
        out[f"{c} (+%)"] = (100 * (wide["as computed"] / wide[c] - 1)).round(1).to_numpy()
    return out
