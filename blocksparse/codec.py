"""The codec's decisions: configuration, partition, block energy, selection, quantization.

``compress(x, cfg)`` returns exactly what the decoder of any stream format returns; the
entropy coders and stream formats live in ``entropy``, ``bitstream`` and ``codebook``.
Pipeline order: config -> partition -> energy -> select -> quantize -> reconstruct.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

MODES = ("channel-wise", "region-wise", "global")
RATIOS = [1.0, 0.5, 0.3, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002]  # the study's default grid
# the grid ``select`` and ``split-sweep`` search by default (the README names only what differs from it)
SELECTION_GRID = dict(modes=MODES, block_sizes=(2, 4), ratios=tuple(RATIOS), bits=(2, 4))


@dataclass(frozen=True)
class CodecConfig:
    """Codec parameters, validated when constructed.

    Parameters
    ----------
    block_size : int
        Side B of the square BxB blocks (>= 1; 1 is plain element sparsity).
    ratio : float
        Fraction of blocks kept per group, 0 < ratio <= 1.
    mode : {"channel-wise", "region-wise", "global"}
        Selection group: each channel of an image; block positions of an image, kept in
        all channels at once; or all blocks of an image.
    bits : int
        Uniform quantization depth of kept values, 1..8.
    zero_border : bool
        Zero the one-pixel border of each map before anything else (the original method).
    """

    block_size: int = 4
    ratio: float = 0.1
    mode: str = "channel-wise"
    bits: int = 4
    zero_border: bool = True

    def __post_init__(self) -> None:
        _check_block_size(self.block_size)
        _check_ratio(self.ratio)
        _check_mode(self.mode)
        if isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer)) or not 1 <= self.bits <= 8:
            raise ValueError(f"bits must be an integer in 1..8, got {self.bits!r}")
        if not isinstance(self.zero_border, (bool, np.bool_)):
            raise ValueError(f"zero_border must be a bool, got {self.zero_border!r}")


def _check_block_size(block_size: int) -> None:
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ValueError(f"block_size must be an integer >= 1, got {block_size!r}")


def _check_ratio(ratio: float) -> None:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.floating, np.integer)) \
            or not 0 < ratio <= 1:  # also False for NaN
        raise ValueError(f"ratio must be a number in (0, 1], got {ratio!r}")


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _check_features(x: Tensor, block_size: int) -> Tensor:
    if not isinstance(x, Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"x must be 4-D [N, C, H, W], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"x must be floating point, got dtype {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"x is empty, shape {tuple(x.shape)}")
    lo, hi = torch.aminmax(x.detach())  # NaN and Inf show up in the extremes
    if not (math.isfinite(lo.item()) and math.isfinite(hi.item())):
        raise ValueError("x holds NaN or Inf")
    _check_block_size(block_size)
    if block_size > min(x.shape[-2:]):
        raise ValueError(f"block_size {block_size} is larger than the {x.shape[-2]}x{x.shape[-1]} map")
    return x.detach().float().cpu().contiguous()


# ---------------------------------------------------------------------------
# partition and energy
# ---------------------------------------------------------------------------
def _interior(h: int, w: int, zero_border: bool) -> Tensor:
    m = torch.ones(h, w, dtype=torch.bool)
    if zero_border:
        m[0], m[-1], m[:, 0], m[:, -1] = False, False, False, False
    return m


def partition(x: Tensor, block_size: int, zero_border: bool = True) -> Tensor:
    """Cut ``x`` [N, C, H, W] into blocks [N, C, Hb, Wb, B, B].

    The one-pixel border is zeroed first (if ``zero_border``), then H and W are padded
    with zeros at the bottom and right up to multiples of ``block_size``.
    """
    x = _check_features(x, block_size)
    n, c, h, w = x.shape
    b = block_size
    hb, wb = -(-h // b), -(-w // b)
    xp = F.pad(x * _interior(h, w, zero_border), (0, wb * b - w, 0, hb * b - h))
    return xp.view(n, c, hb, b, wb, b).permute(0, 1, 2, 4, 3, 5)


def block_energy(x: Tensor, block_size: int, zero_border: bool = True) -> Tensor:
    """Sum of squares of each block, [N, C, Hb, Wb] (float32).

    Summed in a fixed order (columns within a row, then rows), so an image's energies
    do not depend on the batch it is in.
    """
    return _energy(_check_features(x, block_size), block_size, zero_border)


def _energy(x: Tensor, b: int, zero_border: bool) -> Tensor:
    n, c, h, w = x.shape
    per = max(1, (1 << 22) // (c * h * w))
    if n > per:  # chunks under glibc's mmap threshold reuse memory instead of page-faulting
        return torch.cat([_energy(xc, b, zero_border) for xc in x.split(per)])
    hb, wb = -(-h // b), -(-w // b)
    if (hb * b, wb * b) != (h, w):
        x = F.pad(x, (0, wb * b - w, 0, hb * b - h))
    rows = x.view(n, c, hb, b, wb * b)
    acc = None
    for i in range(b):  # rows of each block first: contiguous, vectorizes
        sq = rows[:, :, :, i] * rows[:, :, :, i]
        if zero_border:
            sq[..., 0], sq[..., w - 1] = 0, 0
            if i == 0:
                sq[:, :, 0] = 0
            if i == (h - 1) % b:
                sq[:, :, (h - 1) // b] = 0
        acc = sq if acc is None else acc.add_(sq)
    return functools.reduce(torch.add, acc.view(n, c, hb, wb, b).unbind(-1))


# ---------------------------------------------------------------------------
# selection
# ---------------------------------------------------------------------------
def kept_per_group(ratio: float, group_size: int) -> int:
    """k = max(1, floor(ratio * group_size)); the 1e-9 keeps 0.3 * 10 from flooring to 2."""
    return max(1, math.floor(ratio * group_size + 1e-9))


def distinct_configs(configs: list[CodecConfig], shape: tuple[int, int, int]) -> list[CodecConfig]:
    """The configurations that are different codecs on maps of ``shape`` (C, H, W), in order.

    Selection depends on ``ratio`` only through k = ``kept_per_group(ratio, group size)``, so two
    configurations of the same mode, block size, bits and border with the same k keep the same
    blocks of every input (e.g. channel-wise at any ratio under one block per channel): of each
    such set only the first is returned.
    """
    c, h, w = shape
    seen, out = set(), []
    for cfg in configs:
        hb, wb = -(-h // cfg.block_size), -(-w // cfg.block_size)
        group = hb * wb * (c if cfg.mode == "global" else 1)
        key = (cfg.mode, cfg.block_size, cfg.bits, cfg.zero_border, kept_per_group(cfg.ratio, group))
        if key not in seen:
            seen.add(key)
            out.append(cfg)
    return out


def select_blocks(energy: Tensor, ratio: float, mode: str) -> Tensor:
    """Mask of kept blocks, bool [N, C, Hb, Wb].

    In each group (see ``CodecConfig.mode``) the k strongest blocks are kept,
    k = ``kept_per_group(ratio, group size)``; ties go to the lower index (row-major
    channel, row, column), and blocks of exactly zero energy are dropped.
    """
    _check_ratio(ratio)
    _check_mode(mode)
    if not isinstance(energy, Tensor) or energy.ndim != 4:
        raise ValueError("energy must be a 4-D tensor [N, C, Hb, Wb]")
    n, c, hb, wb = energy.shape
    if mode == "channel-wise":
        g = energy.reshape(n * c, hb * wb)
    elif mode == "global":
        g = energy.reshape(n, c * hb * wb)
    else:  # region-wise: a position's energy summed over channels, in a fixed order
        g = functools.reduce(torch.add, energy.unbind(1)).reshape(n, hb * wb)
    k = kept_per_group(ratio, g.shape[1])
    thr = torch.topk(g, k, dim=1).values[:, -1:]
    keep = g >= thr
    over = (keep.sum(1) > k).nonzero().view(-1)
    if len(over):  # ties at the threshold: the lowest indices win
        go, to = g[over], thr[over]
        above, tie = go > to, go == to
        keep[over] = above | (tie & (tie.cumsum(1) <= k - above.sum(1, keepdim=True)))
    keep &= g > 0
    if mode == "region-wise":
        return keep.view(n, 1, hb, wb).expand(n, c, hb, wb)
    return keep.view(n, c, hb, wb)


def pixel_mask(mask: Tensor, h: int, w: int, block_size: int, zero_border: bool = True) -> Tensor:
    """Block mask [N, C, Hb, Wb] -> mask of coded values [N, C, H, W].

    Padding and (if ``zero_border``) border pixels are never coded: the decoder knows
    they are zero.
    """
    n, c, hb, wb = mask.shape
    b = block_size
    full = mask[:, :, :, None, :, None].expand(n, c, hb, b, wb, b).reshape(n, c, hb * b, wb * b)
    return full[:, :, :h, :w] & _interior(h, w, zero_border)


def valid_pixels(h: int, w: int, b: int, zero_border: bool) -> Tensor:
    """Which pixels of each block are coded, bool [Hb, Wb, B, B] (not padding, not border)."""
    hb, wb = -(-h // b), -(-w // b)
    v = F.pad(_interior(h, w, zero_border), (0, wb * b - w, 0, hb * b - h))
    return v.view(hb, b, wb, b).permute(0, 2, 1, 3)


def _block_view(x: Tensor, b: int) -> Tensor:
    """[N, C, Hb*B, Wb*B] -> [N, C, Hb, Wb, B, B], a view sharing ``x``'s memory."""
    n, c, hp, wp = x.shape
    return x.view(n, c, hp // b, b, wp // b, b).permute(0, 1, 2, 4, 3, 5)


# ---------------------------------------------------------------------------
# quantization
# ---------------------------------------------------------------------------
def _bf16_away(v: Tensor) -> Tensor:
    """Round float32 away from zero to a bfloat16 value, returned as its 16-bit pattern.

    Rounding away from zero only widens the quantizer's range, so every kept value
    stays inside it and the error stays within half a step.
    """
    return torch.from_numpy(_bf16_away_numpy(v.float().contiguous().numpy()))


def _bf16_away_numpy(v: np.ndarray) -> np.ndarray:
    u = np.ascontiguousarray(v, np.float32).view(np.uint32).astype(np.int64)
    return ((u >> 16) + ((u & 0xFFFF) != 0)).astype(np.uint16)


def from_bf16(pattern: Tensor) -> Tensor:
    return torch.from_numpy(from_bf16_numpy(pattern.numpy()))


def from_bf16_numpy(pattern: np.ndarray) -> np.ndarray:
    return (pattern.astype(np.uint32) << 16).view(np.float32)


def levels_in_range(scale: np.ndarray, offset: np.ndarray, top) -> np.ndarray:
    """Whether each image's largest level ``top`` dequantizes to a finite float32 (``scale`` and
    ``offset`` as bf16 patterns): every decoder checks this before it dequantizes, so a corrupted
    scale near bf16's maximum cannot turn into infinities."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.isfinite(from_bf16_numpy(offset) + np.asarray(top).astype(np.float32) * from_bf16_numpy(scale))


def quantization_params(blocks: Tensor, valid: Tensor, image: Tensor, n: int,
                        bits: int) -> tuple[Tensor, Tensor]:
    """Per-image ``(scale, offset)`` as bfloat16 bit patterns (2 bytes each in the stream).

    ``blocks`` [K, B, B] are the kept blocks, ``valid`` their coded pixels, ``image`` the
    image each belongs to. offset = min(0, smallest kept value): 0 for ReLU features,
    so zero stays exact.
    """
    inf = torch.tensor(float("inf"))
    hi = torch.where(valid, blocks, -inf).amax((1, 2)) if len(blocks) else torch.zeros(0)
    lo = torch.where(valid, blocks, inf).amin((1, 2)) if len(blocks) else torch.zeros(0)
    hi = torch.zeros(n).scatter_reduce(0, image, hi, "amax", include_self=True)
    lo = torch.zeros(n).scatter_reduce(0, image, lo, "amin", include_self=True)
    offset = _bf16_away(lo)
    span = hi - from_bf16(offset)
    scale = _bf16_away(torch.where(span > 0, span / (2 ** bits - 1), torch.ones(n)))
    if not torch.isfinite(from_bf16(scale)).all():
        raise ValueError("x holds values too large to quantize (above ~3e38)")
    return scale, offset


def quantize(values: Tensor, bits: int, scale: Tensor, offset: Tensor) -> Tensor:
    """Levels 0..2**bits-1 of ``values`` (``scale``/``offset`` broadcast, float32)."""
    return torch.clamp(torch.round((values - offset) / scale), 0, 2 ** bits - 1)


def dequantize(levels: Tensor, scale: Tensor, offset: Tensor) -> Tensor:
    """Values that the decoder returns for ``levels``."""
    return offset + levels * scale


def reconstruct(a: dict) -> Tensor:
    """Shared by ``compress`` and ``decode`` so both return bit-identical tensors."""
    n, c, h, w = a["shape"]
    if n == 1:  # the batch-1 path, in numpy: the same float32 operations
        b = a["block_size"]
        hb, wb = a["mask"].shape[-2:]
        s, o = from_bf16_numpy(a["scale"].numpy()), from_bf16_numpy(a["offset"].numpy())
        valid = a["valid"].numpy()
        kept = np.where(valid, o + a["levels"].numpy() * s, np.float32(0))
        out = np.zeros((1, c, hb * b, wb * b), np.float32)
        blocks = out.reshape(c, hb, b, wb, b).transpose(0, 1, 3, 2, 4)  # a view of out
        blocks[a["where"][1].numpy(), a["where"][2].numpy(), a["where"][3].numpy()] = kept
        out = out if (hb * b, wb * b) == (h, w) else np.ascontiguousarray(out[:, :, :h, :w])
        return torch.from_numpy(out)
    b = a["block_size"]
    hb, wb = a["mask"].shape[-2:]
    img = a["where"][0]
    s, o = (from_bf16(a[k])[img].view(-1, 1, 1) for k in ("scale", "offset"))
    kept = torch.where(a["valid"], dequantize(a["levels"], s, o), 0.0)
    out = torch.zeros(n, c, hb * b, wb * b)
    _block_view(out, b)[a["where"]] = kept
    return out if (hb * b, wb * b) == (h, w) else out[:, :, :h, :w].contiguous()


def analyze(x: Tensor, cfg: CodecConfig) -> dict:
    """Everything the encoder decides, without entropy coding (one image: ``_analyze_one``)."""
    if not isinstance(cfg, CodecConfig):
        raise ValueError(f"cfg must be a CodecConfig, got {type(cfg).__name__}")
    x = _check_features(x, cfg.block_size)
    return _analyze_one(x, cfg) if len(x) == 1 else _analyze_batch(x, cfg)


def _analyze_batch(x: Tensor, cfg: CodecConfig) -> dict:
    """``analyze`` in torch, for any number of images (checked, float32, CPU)."""
    n, c, h, w = x.shape
    b = cfg.block_size
    mask = select_blocks(_energy(x, b, cfg.zero_border), cfg.ratio, cfg.mode)
    where = mask.nonzero(as_tuple=True)  # kept blocks in row-major order
    hb, wb = mask.shape[-2:]
    xp = x if (hb * b, wb * b) == (h, w) else F.pad(x, (0, wb * b - w, 0, hb * b - h))
    blocks = _block_view(xp, b)[where]
    valid = valid_pixels(h, w, b, cfg.zero_border)[where[2], where[3]]
    scale, offset = quantization_params(blocks, valid, where[0], n, cfg.bits)
    s, o = (from_bf16(t)[where[0]].view(-1, 1, 1) for t in (scale, offset))
    return dict(shape=(n, c, h, w), block_size=b, mask=mask, where=where, valid=valid,
                levels=quantize(blocks, cfg.bits, s, o), scale=scale, offset=offset)


@functools.lru_cache(maxsize=64)
def valid_numpy(h: int, w: int, b: int, zero_border: bool) -> np.ndarray:
    v = valid_pixels(h, w, b, zero_border).numpy()
    v.flags.writeable = False  # shared between calls
    return v


def _analyze_one(x: Tensor, cfg: CodecConfig) -> dict:
    """``analyze`` of one image [1, C, H, W] (checked, float32, CPU) in numpy: the same decisions,
    bit for bit (same float32 operations in the same order), at a fraction of the per-call cost of
    torch's small ops. This is the split-computing case: one image at a time on the device."""
    _, c, h, w = x.shape
    b, bits = cfg.block_size, cfg.bits
    hb, wb = -(-h // b), -(-w // b)
    xp = x[0].numpy()  # read only
    if (hb * b, wb * b) != (h, w):
        xp = np.pad(xp, ((0, 0), (0, hb * b - h), (0, wb * b - w)))
    with np.errstate(over="ignore"):  # energies above float32's range are inf, as in torch
        sq = xp * xp
        if cfg.zero_border:
            sq[:, 0], sq[:, h - 1], sq[:, :, 0], sq[:, :, w - 1] = 0, 0, 0, 0
        rows = sq.reshape(c, hb, b, wb, b)
        acc = rows[:, :, 0].copy()
        for i in range(1, b):  # as _energy: the rows of each block first, then its columns, left to right
            acc += rows[:, :, i]
        energy = acc[..., 0].copy()
        for j in range(1, b):
            energy += acc[..., j]
    if cfg.mode == "channel-wise":
        g = energy.reshape(c, hb * wb)
    elif cfg.mode == "global":
        g = energy.reshape(1, c * hb * wb)
    else:  # summed over channels in channel order, as select_blocks
        g = np.cumsum(energy.reshape(c, hb * wb), axis=0)[-1:]
    m = g.shape[1]
    k = kept_per_group(cfg.ratio, m)
    thr = np.partition(g, m - k, axis=1)[:, m - k:m - k + 1]  # the k-th largest, as topk's last value
    keep = g >= thr
    for r in np.nonzero(keep.sum(1) > k)[0]:  # ties at the threshold: the lowest indices win
        above, tie = g[r] > thr[r], g[r] == thr[r]
        keep[r] = above | (tie & (np.cumsum(tie) <= k - above.sum()))
    keep &= g > 0
    mask = keep.reshape(1, 1, hb, wb).repeat(c, 1) if cfg.mode == "region-wise" else keep.reshape(1, c, hb, wb)
    where = np.nonzero(mask)
    blocks = xp.reshape(c, hb, b, wb, b).transpose(0, 1, 3, 2, 4)[where[1], where[2], where[3]]
    valid = valid_numpy(h, w, b, cfg.zero_border)[where[2], where[3]]
    coded = blocks[valid]
    hi = max(coded.max(initial=0.0), np.float32(0))  # as quantization_params: 0 is always in the range
    lo = min(coded.min(initial=0.0), np.float32(0))  # float32 scalars: float32 arithmetic below
    offset = _bf16_away_numpy(np.array([lo], np.float32))
    span = hi - from_bf16_numpy(offset)[0]
    scale = _bf16_away_numpy(np.array([span / np.float32(2 ** bits - 1) if span > 0 else 1], np.float32))
    s, o = from_bf16_numpy(scale)[0], from_bf16_numpy(offset)[0]
    if not math.isfinite(s):
        raise ValueError("x holds values too large to quantize (above ~3e38)")
    levels = np.clip(np.round((blocks - o) / s), 0, 2 ** bits - 1)
    return dict(shape=(1, c, h, w), block_size=b, mask=torch.from_numpy(mask),
                where=tuple(torch.from_numpy(i) for i in where), valid=torch.from_numpy(valid),
                levels=torch.from_numpy(levels), scale=torch.from_numpy(scale), offset=torch.from_numpy(offset))


def compress(x: Tensor, cfg: CodecConfig) -> Tensor:
    """The tensor ``decode(encode(x, cfg))`` returns, computed without entropy coding.

    Float32 [N, C, H, W]; each image is compressed on its own (own selection, own
    scale), so the result for an image does not depend on the rest of the batch.
    """
    return reconstruct(analyze(x, cfg))


def compress_ste(x: Tensor, cfg: CodecConfig) -> Tensor:
    """``compress`` in the forward pass, trainable through a straight-through estimator.

    The gradient passes unchanged through the quantizer and is zero on dropped blocks
    (the mask is treated as a constant), so training sees exactly the decoder's output.
    """
    with torch.no_grad():
        a = analyze(x, cfg)
        y = reconstruct(a)
        n, c, h, w = a["shape"]
        pm = pixel_mask(a["mask"], h, w, cfg.block_size, cfg.zero_border)
    kept = x * pm.to(x.device, x.dtype)
    return kept + (y.to(x.device, x.dtype) - kept).detach()

