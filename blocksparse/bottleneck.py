"""A learned bottleneck with a factorized entropy model at the same split: the field's anchor.

Where block-sparse coding keeps the highest-energy blocks of the split-point features, a learned
bottleneck (Entropic Student, Matsubara et al. 2022; Singh et al. 2020) maps them to a few latent
channels at a lower resolution, rounds them to integers and entropy-codes them with a learned
density; a decoder maps the integers back to features of the split's shape, and the frozen tail
classifies those. Training trades rate (bits under the density) against the tail's agreement with
the uncompressed network (distillation), with additive uniform noise standing in for rounding.

Entropy model: per latent channel c, a logistic density with learned location ``loc[c]`` and
scale ``SCALE_MIN + softplus(raw_scale[c])``; an integer symbol k has probability
``CDF(k + 0.5) - CDF(k - 0.5)`` (``Bottleneck.likelihoods``, clamped at 1e-9 for the rate term).

Symbol range and clamping: channel c codes the integers ``lo[c]..hi[c]``, the narrowest range
such that the model gives the values rounding outside it at most ``TAIL_MASS`` (1e-6) per side,
within ``round(loc[c]) +- MAX_HALF_RANGE`` (255) and at least one symbol either side of it. A rounded latent
outside the range is CLAMPED to its end (no escape code), and ``Bottleneck.quantize`` clamps the
same way, so the decoder's output is always exactly what ``reconstruct`` returns; the share of
clamped latents is reported by ``evaluate_bottleneck`` (``clamped_share``). The end symbols of
the coding tables carry the whole tail mass beyond them, so each table sums to one.

Stream of one image::

    ANS words     constriction ``AnsCoder`` (32-bit words, little endian) without the zero high
                  bytes of the top word; the symbols of channel 0, then 1, ... in row-major
                  order, each channel with its own categorical table
    initial state ``0x100 | crc``: the coder starts from this 9-bit state instead of an empty one.
                  The header is free: the first symbol pushed onto a small state lifts it to
                  ~24 bits whatever the state held, and these 9 bits ride in that jump. A stream
                  is the symbols' information content plus ~23 bits on average (9 of them the
                  header, the rest the jump and byte rounding; under 30 bits in all when measured).
                  ``crc`` is the CRC-8 (``entropy.crc8``) of the
                  latent symbols (uint16 little endian, in stream order), its register seeded
                  with one byte of a hash of the bottleneck's weights, so a stream decoded with
                  another bottleneck (another entropy model or decoder) fails 255 times in 256.

The decoder knows the feature shape (``decode(bn, blob, shape)``); it pops the symbols and then
requires the state left over to be exactly ``0x100 | crc`` of what it decoded.
Encoder and decoder build the tables from float64 probabilities computed in numpy from the same
weights (``constriction.stream.model.Categorical(p, perfect=False)``), so they agree bit for bit.
"""
from __future__ import annotations

import hashlib
import json
import math
import pickle
import zipfile
from pathlib import Path

import constriction
import numpy as np
import torch
import torchvision
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from .analysis import wilson_interval
from .data import evenly_spaced, load_dataset
from .entropy import crc8
from .model import SplitResNet18
from .runtime import DATA_DIR, autocast, module_device, set_seed
from .training import copy_state, distillation_loss, load_run, save_run, track_best

SCALE_MIN = 0.11  # lowest scale of the logistic: a channel never costs less than ~0.03 bits per latent
TAIL_MASS = 1e-6  # model mass left outside each end of a channel's symbol range
MAX_HALF_RANGE = 255
MAX_LATENTS = 1 << 22  # latent values per image a stream may hold (bounds what a decoder allocates)
_ANS = constriction.stream.stack.AnsCoder
_MARKER = 0x100  # the initial state's top bit: the state is never zero, the top byte never either


def _check_int(name: str, v, low: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
    return int(v)


class Bottleneck(nn.Module):
    """Encoder, integer latents with a factorized logistic entropy model, decoder.

    Parameters
    ----------
    in_channels : int
        Channels of the split-point features (64 after ``layer1``).
    latent_channels : int
        Channels of the coded latent.
    hidden : int
        Channels of the intermediate layers of encoder and decoder.
    stride : int
        Downsampling factor, a power of two >= 2: ``log2(stride)`` 3x3 convolutions of stride 2
        (28x28 features -> 7x7 latents at stride 4).

    Notes
    -----
    Encoder: ``[conv3x3/2 -> GELU] * log2(stride) -> conv3x3 -> latent_channels``. Decoder:
    ``conv3x3 -> GELU -> [convT3x3*2 -> GELU] * (log2(stride) - 1) -> convT3x3*2 -> in_channels``,
    cropped to the features' height and width, then ReLU (the features at the split are outputs
    of a ReLU). No batch normalization, so train and eval mode differ only in the quantizer.
    """

    def __init__(self, in_channels: int = 64, latent_channels: int = 8, hidden: int = 64, stride: int = 4):
        super().__init__()
        in_channels, latent_channels, hidden, stride = (
            _check_int(n, v) for n, v in (("in_channels", in_channels), ("latent_channels", latent_channels),
                                          ("hidden", hidden), ("stride", stride)))
        if stride < 2 or stride & (stride - 1):
            raise ValueError(f"stride must be a power of two >= 2, got {stride}")
        self.args = dict(in_channels=in_channels, latent_channels=latent_channels, hidden=hidden, stride=stride)
        k = stride.bit_length() - 1
        enc, c = [], in_channels
        for _ in range(k):
            enc += [nn.Conv2d(c, hidden, 3, 2, 1), nn.GELU()]
            c = hidden
        self.encoder = nn.Sequential(*enc, nn.Conv2d(hidden, latent_channels, 3, 1, 1))
        dec = [nn.Conv2d(latent_channels, hidden, 3, 1, 1), nn.GELU()]
        for i in range(k):
            last = i == k - 1
            dec.append(nn.ConvTranspose2d(hidden, in_channels if last else hidden, 3, 2, 1, output_padding=1))
            if not last:
                dec.append(nn.GELU())
        self.decoder = nn.Sequential(*dec)
        self.loc = nn.Parameter(torch.zeros(latent_channels))
        # softplus(0.5413) = 1: the untrained density has scale 1.11
        self.raw_scale = nn.Parameter(torch.full((latent_channels,), 0.5413))

    # --- shapes -------------------------------------------------------------
    def latent_hw(self, h: int, w: int) -> tuple[int, int]:
        """Latent height and width for features of height ``h`` and width ``w``."""
        s = self.args["stride"]
        return -(-h // s), -(-w // s)

    def _check_features(self, z: Tensor, name: str = "z") -> None:
        if not isinstance(z, Tensor) or z.ndim != 4 or z.shape[1] != self.args["in_channels"] or z.numel() == 0:
            got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"{name} must be features [N, {self.args['in_channels']}, H, W] "
                             f"for this bottleneck, got {got}")

    # --- entropy model ----------------------------------------------------------
    def scales(self) -> Tensor:
        """Per-channel scale of the logistic density (>= ``SCALE_MIN``)."""
        return SCALE_MIN + F.softplus(self.raw_scale)

    def likelihoods(self, y: Tensor) -> Tensor:
        """Probability of each value of ``y`` [N, M, h, w] as an integer bin: CDF(y+0.5) - CDF(y-0.5).

        Differentiable in ``y`` (noisy latents in training) and in the density's parameters;
        clamped at 1e-9 so the rate stays finite. Both CDF values are taken on the side of the
        location ``y`` lies on, where they are small and their difference loses no precision.
        """
        v = (y - self.loc.view(1, -1, 1, 1)) / self.scales().view(1, -1, 1, 1)
        half = 0.5 / self.scales().view(1, -1, 1, 1)
        sign = torch.where(v > 0, -1.0, 1.0).to(v)  # upper half: survival function, 1 - CDF
        p = (torch.sigmoid(sign * (v + half)) - torch.sigmoid(sign * (v - half))).abs()
        return p.clamp_min(1e-9)

    def symbol_range(self) -> tuple[np.ndarray, np.ndarray]:
        """Per channel, the lowest and highest coded integer (int64 arrays; see the module docstring)."""
        loc, scale = self._entropy_params()
        reach = scale * math.log((1 - TAIL_MASS) / TAIL_MASS)  # CDF(loc - reach) = TAIL_MASS
        centre = np.rint(loc)
        lo = np.clip(np.floor(loc - reach + 0.5), centre - MAX_HALF_RANGE, centre - 1)
        hi = np.clip(np.ceil(loc + reach - 0.5), centre + 1, centre + MAX_HALF_RANGE)
        return lo.astype(np.int64), hi.astype(np.int64)

    def _entropy_params(self) -> tuple[np.ndarray, np.ndarray]:
        loc = self.loc.detach().cpu().double().numpy()
        raw = self.raw_scale.detach().cpu().double().numpy()
        if not (np.isfinite(loc).all() and np.isfinite(raw).all()) or np.abs(loc).max() > 1 << 30:
            raise ValueError("the bottleneck's entropy parameters are not finite (or absurdly large)")
        return loc, SCALE_MIN + np.logaddexp(0.0, raw)

    # --- the coding path ------------------------------------------------------
    def quantize(self, y: Tensor) -> Tensor:
        """Latents as coded: rounded (half to even) and clamped to each channel's symbol range."""
        lo, hi = (torch.from_numpy(v).to(y.device, y.dtype).view(1, -1, 1, 1) for v in self.symbol_range())
        return torch.maximum(torch.minimum(torch.round(y), hi), lo) + 0.0  # + 0.0: no -0.0, as decoded

    def decode_latent(self, y_hat: Tensor, size: tuple[int, int]) -> Tensor:
        """Features [N, in_channels, *size] from (integer-valued) latents ``y_hat``."""
        out = self.decoder(y_hat)
        h, w = size
        if out.shape[-2] < h or out.shape[-1] < w:
            raise ValueError(f"latents {tuple(y_hat.shape)} decode to {tuple(out.shape[-2:])}, smaller than {size}")
        return F.relu(out[..., :h, :w])

    def forward(self, z: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(features the tail sees, likelihoods of the latents).

        Training mode adds uniform noise U(-0.5, 0.5) to the latents (drawn from the CPU
        ``generator`` where given); eval mode quantizes them as the coder does, in one batch
        (``reconstruct`` is the exact, image-by-image path).
        """
        self._check_features(z)
        y = self.encoder(z)
        if self.training:
            u = (torch.rand(y.shape, generator=generator, dtype=y.dtype).to(y.device)
                 if generator is not None else torch.rand_like(y))
            y = y + (u - 0.5)
        else:
            y = self.quantize(y)
        return self.decode_latent(y, z.shape[-2:]), self.likelihoods(y)

    @torch.no_grad()
    def reconstruct(self, z: Tensor) -> Tensor:
        """What the decoder returns for each image of ``z``, without the bytes.

        Image by image, as streams are encoded and decoded: row i is bit for bit
        ``decode(bn, encode(bn, z[i:i+1]), z.shape[1:])`` (a batched convolution may round
        differently from a single image's in the last bits).
        """
        return _coded(self, z)[1]


# ---------------------------------------------------------------------------
# real streams
# ---------------------------------------------------------------------------
def stream_seed(bn: Bottleneck) -> int:
    """CRC-8 seed of ``bn``'s streams: one byte of a hash of its architecture and weights."""
    h = hashlib.blake2b(json.dumps(bn.args, sort_keys=True).encode(), digest_size=1)
    for k, v in bn.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().float().contiguous().numpy().tobytes())
    return h.digest()[0]


def coding_tables(bn: Bottleneck) -> list[np.ndarray]:
    """Per channel, float64 probabilities of the symbols ``lo..hi`` of ``bn.symbol_range()``.

    The end symbols carry the tail mass beyond them (clamped latents land there), so every
    table sums to one.
    """
    loc, scale = bn._entropy_params()
    lo, hi = bn.symbol_range()
    tables = []
    for c in range(len(loc)):
        edges = (np.arange(lo[c], hi[c] + 2) - 0.5 - loc[c]) / scale[c]  # bin edges, standardized
        cdf = 1.0 / (1.0 + np.exp(-edges))
        sf = 1.0 / (1.0 + np.exp(edges))
        # interior bins: difference of the CDF below the location, of the survival function above
        p = np.where(edges[1:] <= 0, cdf[1:] - cdf[:-1], sf[:-1] - sf[1:])
        p[0], p[-1] = cdf[1], sf[-2]  # the ends absorb the tails
        tables.append(p)
    return tables


def _models(bn: Bottleneck) -> list:
    return [constriction.stream.model.Categorical(p, perfect=False) for p in coding_tables(bn)]


@torch.no_grad()
def _coded(bn: Bottleneck, z: Tensor, decode: bool = True) -> tuple[Tensor, Tensor | None, int]:
    """(coded latents, decoder output, latents clamped) of features ``z``, float32 on ``bn``'s
    device, one image at a time so that neither depends on the batch an image came in."""
    bn._check_features(z)
    z = z.to(module_device(bn), torch.float32)
    if not torch.isfinite(z).all():
        raise ValueError("z must be finite")
    y_hat, clamped = [], 0
    for zi in z.split(1):
        y = bn.encoder(zi)
        if not torch.isfinite(y).all():
            raise ValueError("z is too large: the encoder's output is not finite")
        y_hat.append(bn.quantize(y))
        clamped += int((y_hat[-1] != torch.round(y)).sum())
    y_hat = torch.cat(y_hat)
    return y_hat, _decode_each(bn, y_hat, z.shape[-2:]) if decode else None, clamped


def _decode_each(bn: Bottleneck, y_hat: Tensor, size: tuple[int, int]) -> Tensor:
    return torch.cat([bn.decode_latent(y, size) for y in y_hat.split(1)])


def latent_symbols(bn: Bottleneck, z: Tensor) -> Tensor:
    """The coded latents of features ``z`` [N, C, H, W] (rounded, clamped; float32 on the CPU)."""
    with torch.no_grad():
        return _coded(bn, z, decode=False)[0].cpu()


def encode_batch(bn: Bottleneck, z: Tensor) -> list[bytes]:
    """One stream per image of features ``z`` [N, C, H, W] (layout in the module docstring);
    stream i is ``encode(bn, z[i:i+1])``."""
    return _streams(bn, latent_symbols(bn, z))


def _streams(bn: Bottleneck, y_hat: Tensor) -> list[bytes]:
    """The streams of coded latents ``y_hat`` [N, M, h, w]."""
    y_hat = y_hat.cpu()
    n, m, h, w = y_hat.shape
    if m * h * w > MAX_LATENTS:
        raise ValueError(f"z is too large: {m * h * w} latents per image, at most {MAX_LATENTS}")
    lo, _ = bn.symbol_range()
    sym = (y_hat.numpy().astype(np.int64) - lo.reshape(1, -1, 1, 1)).reshape(n, m, -1)
    models, seed = _models(bn), stream_seed(bn)
    out = []
    for s in sym:
        crc = crc8(s.astype("<u2").tobytes(), seed)
        coder = _ANS(np.array([_MARKER | crc], np.uint32))
        for c in range(m - 1, -1, -1):  # a stack: the last channel first, so channel 0 pops first
            coder.encode_reverse(s[c].astype(np.int32), models[c])
        out.append(coder.get_compressed().astype("<u4").tobytes().rstrip(b"\0"))  # the top word is nonzero
    return out


def encode(bn: Bottleneck, z: Tensor) -> bytes:
    """The stream of one image's features ``z`` [1, C, H, W]; ``encode_batch`` for N > 1."""
    bn._check_features(z)
    if len(z) != 1:
        raise ValueError(f"z must hold one image (N == 1), got N={len(z)}; encode_batch gives one stream per image")
    return encode_batch(bn, z)[0]


def _feature_shape(bn: Bottleneck, shape) -> tuple[int, int, int]:
    s = tuple(shape) if isinstance(shape, (tuple, list, torch.Size)) else None
    ok = s is not None and len(s) in (3, 4) and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in s)
    if not ok or (len(s) == 4 and s[0] != 1) or s[-3] != bn.args["in_channels"]:
        raise ValueError(f"shape must be the features' shape (1, {bn.args['in_channels']}, H, W) or "
                         f"({bn.args['in_channels']}, H, W) for this bottleneck, got {shape!r}")
    c, h, w = (int(v) for v in s[-3:])
    lh, lw = bn.latent_hw(h, w)
    if bn.args["latent_channels"] * lh * lw > MAX_LATENTS:
        raise ValueError(f"shape {shape!r} is too large: more than {MAX_LATENTS} latents per image")
    return c, h, w


def decode_symbols(bn: Bottleneck, blob: bytes, shape) -> Tensor:
    """The integer latents [1, M, h, w] (float32, CPU) held by a stream of features of ``shape``.

    Empty, truncated, corrupted streams and streams of another bottleneck raise ValueError
    (the last two 255 times in 256 or more: the CRC-8 and the state left over must match).
    """
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise ValueError(f"blob must be bytes, got {type(blob).__name__}")
    _, h, w = _feature_shape(bn, shape)
    blob = bytes(blob)
    if not blob or blob[-1] == 0:  # the encoder never writes a zero top byte
        raise ValueError("corrupted stream: empty, or ends in a zero byte")
    m, (lh, lw) = bn.args["latent_channels"], bn.latent_hw(h, w)
    coder = _ANS(np.frombuffer(blob + bytes(-len(blob) % 4), "<u4").astype(np.uint32))
    models = _models(bn)
    sym = np.stack([coder.decode(models[c], lh * lw).astype(np.int64) for c in range(m)])
    left = coder.get_compressed()
    if len(left) != 1 or int(left[0]) >> 8 != _MARKER >> 8:
        raise ValueError("corrupted stream: unexpected data after the latents (or a stream of another shape)")
    if int(left[0]) & 0xFF != crc8(sym.astype("<u2").tobytes(), stream_seed(bn)):
        raise ValueError("checksum mismatch: corrupted stream, or a stream of another bottleneck")
    lo, _ = bn.symbol_range()
    return torch.from_numpy((sym + lo[:, None]).reshape(1, m, lh, lw).astype(np.float32))


@torch.no_grad()
def decode(bn: Bottleneck, blob: bytes, shape) -> Tensor:
    """Features [1, C, H, W] from a stream: exactly ``bn.reconstruct(z)`` of the encoded ``z``.

    ``shape`` is the features' shape, (1, C, H, W) or (C, H, W); the result lies on ``bn``'s device.
    """
    y_hat = decode_symbols(bn, blob, shape)
    return bn.decode_latent(y_hat.to(module_device(bn)), tuple(shape)[-2:])


# ---------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------
@torch.no_grad()
def _val_accuracy(model: SplitResNet18, bn: Bottleneck, data: TensorDataset,
                  batch_size: int = 256) -> tuple[float, float, float]:
    """(accuracy, model-estimated bpp, mean cross-entropy) on ``data`` through the real coded
    path (``_coded``), float32."""
    bn.eval()
    device = module_device(model)
    x, y = data.tensors
    correct, bits, ce = 0, 0.0, 0.0
    for s in range(0, len(x), batch_size):
        y_hat, z_hat, _ = _coded(bn, model.head(x[s:s + batch_size].to(device)).float())
        bits += float(-torch.log2(bn.likelihoods(y_hat)).sum())
        logits = model.tail(z_hat).float()
        ce += float(F.cross_entropy(logits, y[s:s + batch_size].to(device), reduction="sum"))
        correct += int((logits.argmax(1).cpu() == y[s:s + batch_size]).sum())
    return correct / len(x), bits / (len(x) * x.shape[-2] * x.shape[-1]), ce / len(x)


SELECT_ON = ("objective", "accuracy")


def _score(h: dict, select_on: str) -> float:
    """How good one validation is (higher is better): accuracy, or minus the rate-accuracy objective."""
    return h["val_accuracy"] if select_on == "accuracy" else -h["val_objective"]


def best_evaluation(history: list[dict], select_on: str = "objective") -> dict:
    """The validation whose weights ``train_bottleneck`` kept (the first best by ``select_on``)."""
    return max(history, key=lambda h: _score(h, select_on))


def train_bottleneck(model: SplitResNet18, bn: Bottleneck, lmbda: float, dataset: str = "fashion-mnist",
                     steps: int = 2000, batch_size: int = 64, lr: float = 1e-3, distill_weight: float = 1.0,
                     temperature: float = 2.0, feature_weight: float = 0.0, eval_every: int = 100,
                     patience: int = 5, train_subset: int | None = None, val_subset: int | None = 1000,
                     seed: int = 0, state_path: str | Path | None = None,
                     train_data: TensorDataset | None = None, val_data: TensorDataset | None = None,
                     progress: bool = True, root: str | Path = DATA_DIR,
                     bf16: bool | None = None, select_on: str = "objective",
                     prior_lr: float | None = None) -> tuple[Bottleneck, list[dict]]:
    """Train the bottleneck at the split of a FROZEN ResNet; early stopping on validation accuracy.

    The ResNet (head and tail, batch-norm statistics included) is not changed: only ``bn``
    learns. The reference Entropic Student trains its encoder as the student's head; here the
    shipped head is kept so that the split, and the features coded, are those block-sparse
    coding sees. The loss per batch is::

        distill_weight * KD(tail(dec(y + u)), tail(z)) + (1 - distill_weight) * CE
        + feature_weight * MSE(dec(y + u), z) + lmbda * rate

    with ``z = head(x)``, ``y`` the encoder's latents, ``u ~ U(-0.5, 0.5)``, KD Hinton's
    distillation loss at ``temperature`` from the uncompressed network's logits, and ``rate``
    the latents' bits under the entropy model per input pixel (sum of -log2 likelihoods over
    N * H_in * W_in).

    Parameters
    ----------
    model : SplitResNet18
        The frozen network; ``bn`` must sit on its device.
    bn : Bottleneck
    lmbda : float
        Weight of the rate (bits per input pixel) against the task loss.
    train_subset, val_subset : int, optional
        Evenly spaced images of the "train" and "val" splits (never the test split);
        ``train_data`` / ``val_data`` replace the splits altogether.
    steps, batch_size, lr : int, int, float
        At most ``steps`` Adam steps, cosine-annealed learning rate.
    prior_lr : float, optional
        Learning rate of the entropy model's parameters (``loc``, ``raw_scale``; default
        ``lr``): with Adam each moves about ``prior_lr`` per step, so a prior that must narrow
        a lot within a short schedule needs a larger one.
    eval_every, patience : int
        Validation on the real rounded path (eval mode, float32) every ``eval_every`` steps;
        training stops after ``patience`` evaluations without improvement and the best weights
        are restored.
    select_on : {"objective", "accuracy"}
        What "best" means on validation: ``"objective"`` (default) the rate-accuracy trade-off
        the weights were trained for, validation cross-entropy + ``lmbda`` * estimated bpp
        (lower is better), so a large ``lmbda`` keeps a low-rate model; ``"accuracy"`` the
        most accurate weights whatever their rate.
    state_path : path, optional
        Resumable state (bottleneck, optimizer, schedule, RNG, history, best), written at every
        evaluation; if it exists, training continues from it.
    bf16 : bool, optional
        bf16 autocast of the ResNet's head and tail (None: where it is faster); the bottleneck
        and its rate always run in float32.

    Returns
    -------
    (bn, history)
        The bottleneck (best validation weights, eval mode) and one dict per evaluation:
        ``step``, ``loss`` and ``rate_bpp`` (means over training batches since the last
        evaluation; the rate with noise), ``val_accuracy``, ``val_bpp_estimate`` (bits under
        the model of the rounded latents, not a stream length), ``val_cross_entropy``,
        ``val_objective`` (cross-entropy + ``lmbda`` * estimated bpp).
    """
    if select_on not in SELECT_ON:
        raise ValueError(f"select_on must be one of {SELECT_ON}, got {select_on!r}")
    if not isinstance(bn, Bottleneck):
        raise ValueError(f"bn must be a Bottleneck, got {type(bn).__name__}")
    if not isinstance(lmbda, (int, float)) or isinstance(lmbda, bool) or not lmbda >= 0:
        raise ValueError(f"lmbda must be a number >= 0, got {lmbda!r}")
    if not 0 <= distill_weight <= 1:
        raise ValueError(f"distill_weight must be in [0, 1], got {distill_weight!r}")
    if prior_lr is not None and not (isinstance(prior_lr, (int, float)) and prior_lr > 0):
        raise ValueError(f"prior_lr must be > 0 (or None for lr), got {prior_lr!r}")
    if not temperature > 0 or not feature_weight >= 0 or not lr > 0:
        raise ValueError(f"temperature and lr must be > 0 and feature_weight >= 0, got "
                         f"{temperature!r}, {lr!r}, {feature_weight!r}")
    for name, v in (("steps", steps), ("batch_size", batch_size), ("eval_every", eval_every),
                    ("patience", patience)):
        _check_int(name, v)
    device = module_device(model)
    if module_device(bn) != device:
        raise ValueError(f"bn is on {module_device(bn)}, the model on {device}: move bn with bn.to(...)")
    set_seed(seed)
    tr = train_data or load_dataset(dataset, "train", root, train_subset)
    va = val_data or load_dataset(dataset, "val", root, val_subset)
    was_training, flags = model.training, [p.requires_grad for p in model.parameters()]
    model.eval().requires_grad_(False)
    prior = [bn.loc, bn.raw_scale]
    rest = [p for n, p in bn.named_parameters() if n not in ("loc", "raw_scale")]
    opt = torch.optim.Adam([dict(params=rest), dict(params=prior, lr=prior_lr or lr)], lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    x, labels = tr.tensors
    pixels = x.shape[-2] * x.shape[-1]
    g = torch.Generator().manual_seed(seed)
    state = Path(state_path) if state_path is not None else None

    def validation(step: int, loss: float, rate: float) -> dict:
        acc, bpp, ce = _val_accuracy(model, bn, va)
        return dict(step=step, loss=loss, rate_bpp=rate, val_accuracy=acc, val_bpp_estimate=bpp,
                    val_cross_entropy=ce, val_objective=ce + lmbda * bpp)

    if state is not None and state.exists():
        history, best, bad, start = load_run(state, bn, opt, sched, g, device)
    else:
        history, bad, start = [validation(0, float("nan"), float("nan"))], 0, 0
        best = (_score(history[0], select_on), copy_state(bn))
    losses, rates = [], []
    bar = tqdm(range(start + 1, steps + 1), initial=start, total=steps, disable=not progress or bad >= patience,
               desc=f"bottleneck M={bn.args['latent_channels']} lmbda={lmbda}")
    try:
        for step in bar if bad < patience else ():
            bn.train()
            idx = torch.randint(len(x), (batch_size,), generator=g)
            xb, yb = x[idx].to(device), labels[idx].to(device)
            with torch.no_grad(), autocast(device, bf16):
                z = model.head(xb)
                teacher = model.tail(z) if distill_weight > 0 else None
            z = z.float()
            z_tilde, lik = bn(z, generator=g)
            with autocast(device, bf16):
                logits = model.tail(z_tilde).float()
            rate = -torch.log2(lik).sum() / (len(xb) * pixels)
            loss = lmbda * rate
            if distill_weight > 0:
                loss = loss + distill_weight * distillation_loss(logits, teacher, temperature)
            if distill_weight < 1:
                loss = loss + (1 - distill_weight) * F.cross_entropy(logits, yb)
            if feature_weight:
                loss = loss + feature_weight * F.mse_loss(z_tilde, z)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            rates.append(rate.item())
            if step % eval_every == 0 or step == steps:
                history.append(validation(step, float(np.mean(losses)), float(np.mean(rates))))
                h = history[-1]
                bar.set_postfix(val=f"{h['val_accuracy']:.4f}", bpp=f"{h['val_bpp_estimate']:.3f}",
                                obj=f"{h['val_objective']:.3f}")
                losses, rates = [], []
                best, bad = track_best(_score(h, select_on), best, bad, bn)
                if state is not None:
                    save_run(state, bn, opt, sched, g, history, best, bad, step)
                if bad >= patience:
                    break
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was_training)
    bn.load_state_dict(best[1])
    return bn.eval(), history


# ---------------------------------------------------------------------------
# evaluation and results
# ---------------------------------------------------------------------------
@torch.no_grad()
def evaluate_bottleneck(model: SplitResNet18, bn: Bottleneck, data: TensorDataset,
                        rate_sample: int | None = None, batch_size: int = 256, exact: bool = False) -> dict:
    """Accuracy on what the decoder returns and rate from real per-image streams.

    Parameters
    ----------
    data : TensorDataset
        Images and labels.
    rate_sample : int, optional
        Encode ``rate_sample`` evenly spaced images one by one for the rate (default: all).
    exact : bool
        Also decode each sampled stream and check that ``decode`` returns exactly the
        features the tail consumed for that image.

    Returns
    -------
    dict
        ``accuracy`` (the tail consumed ``bn.reconstruct(head(x))``, float32: what decoding
        each image's stream returns), ``accuracy_lo``
        / ``accuracy_hi`` (95% Wilson interval), ``n_images``, ``correct`` (bool per image);
        ``bpp`` and ``bytes`` (means over the ``n_rate`` real streams), ``bpp_estimate``
        (bits under the entropy model of all images' latents, an estimate, not a stream),
        ``clamped_share`` (share of rounded latents clamped to the symbol range), ``raw_bytes``
        (float32 features per image), ``latent_shape`` (M, h, w).
    """
    if not isinstance(bn, Bottleneck):
        raise ValueError(f"bn must be a Bottleneck, got {type(bn).__name__}")
    if rate_sample is not None and (isinstance(rate_sample, bool) or not isinstance(rate_sample, int)
                                    or rate_sample < 1):
        raise ValueError(f"rate_sample must be an integer >= 1 (or None for all images), got {rate_sample!r}")
    model.eval(), bn.eval()
    device = module_device(model)
    if module_device(bn) != device:
        raise ValueError(f"bn is on {module_device(bn)}, the model on {device}: move bn with bn.to(...)")
    x, y = data.tensors
    if len(x) == 0:
        raise ValueError("data holds no images")
    hw = tuple(x.shape[-2:])
    in_rate = torch.zeros(len(x), dtype=torch.bool)
    in_rate[evenly_spaced(len(x), len(x) if rate_sample is None else rate_sample)] = True
    correct, sizes, bits, clamped, latents = [], [], 0.0, 0, 0
    for s in range(0, len(x), batch_size):
        z = model.head(x[s:s + batch_size].to(device)).float()
        y_hat, z_hat, n_clamped = _coded(bn, z)  # the tail consumes exactly what decoding each stream returns
        clamped += n_clamped
        latents += y_hat.numel()
        bits += float(-torch.log2(bn.likelihoods(y_hat)).sum())
        correct.append(model.tail(z_hat).argmax(1).cpu() == y[s:s + batch_size])
        sel = in_rate[s:s + len(z)].nonzero().view(-1).tolist()
        blobs = _streams(bn, y_hat[sel]) if sel else []
        sizes += [len(b) for b in blobs]
        for b, i in zip(blobs, sel) if exact else ():
            if not torch.equal(decode(bn, b, z.shape[1:]), z_hat[i:i + 1]):
                raise AssertionError("decoded features differ from the ones the tail consumed")
    correct = torch.cat(correct)
    k = int(correct.sum())
    lo, hi = wilson_interval(k, len(x))
    return dict(accuracy=k / len(x), accuracy_lo=lo, accuracy_hi=hi, n_images=len(x), n_rate=len(sizes),
                bpp=8.0 * float(np.mean(sizes)) / (hw[0] * hw[1]), bytes=float(np.mean(sizes)),
                bpp_estimate=bits / (len(x) * hw[0] * hw[1]), clamped_share=clamped / latents,
                raw_bytes=4 * bn.args["in_channels"] * hw[0] * hw[1],
                latent_shape=(bn.args["latent_channels"], *bn.latent_hw(*hw)), correct=correct)


def bottleneck_row(ev: dict, lmbda: float, **extra) -> dict:
    """One results row from an ``evaluate_bottleneck`` result, method "learned-bottleneck".

    ``lmbda`` goes under ``rate_weight`` (a column ``results.SCHEMA`` does not have yet);
    ``extra`` adds or overrides columns (``dataset``, ``split_at``, ``seed``, ``val_accuracy``, ...).
    """
    row = dict(method="learned-bottleneck", coder="ans", accuracy=ev["accuracy"], accuracy_lo=ev["accuracy_lo"],
               accuracy_hi=ev["accuracy_hi"], n_images=ev["n_images"], bpp=ev["bpp"], n_rate=ev["n_rate"],
               stream_bytes=ev["bytes"], rate_is_estimate=False, rate_weight=float(lmbda))
    return row | extra


# ---------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------
def save_bottleneck(bn: Bottleneck, path: str | Path, lmbda: float | None = None, **card) -> dict:
    """Write ``bn``'s weights (float16 state_dict) to ``path`` and a card (``.json``) beside it.

    The card holds the architecture (``Bottleneck`` arguments), ``lmbda``, ``card`` extras
    (e.g. ``history``, ``val_accuracy``) and the file's sha256. Weights are stored as float16:
    evaluate the loaded bottleneck, whose entropy model and streams are those of the file.
    """
    if not isinstance(bn, Bottleneck):
        raise ValueError(f"bn must be a Bottleneck, got {type(bn).__name__}")
    p = Path(path)
    torch.save({k: v.detach().half().cpu() for k, v in bn.state_dict().items()}, p)
    out = dict(architecture=bn.args, lmbda=lmbda, dtype="float16", torch=torch.__version__,
               torchvision=torchvision.__version__, **card, sha256=hashlib.sha256(p.read_bytes()).hexdigest())
    p.with_suffix(".json").write_text(json.dumps(out, indent=2, default=float))
    return out


def load_bottleneck(path: str | Path, device: str | torch.device = "cpu") -> Bottleneck:
    """A bottleneck written by ``save_bottleneck``, in eval mode (float32 from the stored float16).

    The card beside the file must exist and its sha256 match; a missing, unreadable or
    mismatched file is a ValueError naming it.
    """
    p = Path(path)
    card_path = p.with_suffix(".json")
    if not p.exists() or not card_path.exists():
        raise ValueError(f"no bottleneck at {p} (weights and a .json card beside them are both needed)")
    try:
        card = json.loads(card_path.read_text())
        arch, sha = card["architecture"], card["sha256"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{card_path} is not a bottleneck card ({type(e).__name__}: {e})") from None
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    if digest != sha:
        raise ValueError(f"bottleneck {p} has sha256 {digest}, its card says {sha}")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"{p} is not a readable torch file ({type(e).__name__}: {e})") from None
    if not isinstance(arch, dict) or set(arch) != {"in_channels", "latent_channels", "hidden", "stride"}:
        raise ValueError(f"{card_path}: architecture must give in_channels, latent_channels, hidden, stride")
    bn = Bottleneck(**arch)
    own = bn.state_dict()
    if not isinstance(state, dict) or set(state) != set(own) or any(
            tuple(state[k].shape) != tuple(v.shape) for k, v in own.items()):
        raise ValueError(f"{p} does not hold the weights of a Bottleneck({arch})")
    bn.load_state_dict({k: v.float() for k, v in state.items()})
    return bn.to(device).eval()
