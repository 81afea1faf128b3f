"""A learned bottleneck with a factorized entropy model at the same split: the field's anchor.

This module is the model, its streams and its files; training and evaluation are in
``bottleneck_training``.

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
from pathlib import Path

import constriction
import numpy as np
import torch
import torchvision
from torch import Tensor, nn
from torch.nn import functional as F

from .entropy import crc8
from .runtime import module_device, read_torch_file

SCALE_MIN = 0.11  # lowest scale of the logistic: a channel never costs less than ~0.03 bits per latent
TAIL_MASS = 1e-6  # model mass left outside each end of a channel's symbol range
MAX_HALF_RANGE = 255
MAX_LATENTS = 1 << 22  # latent values per image a stream may hold (bounds what a decoder allocates)
_ANS = constriction.stream.stack.AnsCoder
_MARKER = 0x100  # the initial state's top bit: the state is never zero, the top byte never either


def check_int(name: str, v, low: int = 1) -> int:
    """``v`` as an int, or a ValueError naming ``name`` when it is not an integer >= ``low``."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
    return int(v)


QUANTIZATIONS = ("noise", "mixed")  # what the tail sees in training: Bottleneck.forward
DEFAULT_QUANTIZATION = "noise"  # the default, and what a card without a "quantization" field was trained with


def architecture(in_channels, latent_channels, hidden, stride) -> dict:
    """A bottleneck's arguments, checked: integers >= 1, ``stride`` a power of two >= 2."""
    args = {n: check_int(n, v) for n, v in (("in_channels", in_channels), ("latent_channels", latent_channels),
                                            ("hidden", hidden), ("stride", stride))}
    if args["stride"] < 2 or args["stride"] & (args["stride"] - 1):
        raise ValueError(f"stride must be a power of two >= 2, got {stride}")
    return args


def conv_layers(in_channels: int, latent_channels: int, hidden: int, stride: int, activation,
                inverse_activation=None) -> tuple[nn.Sequential, nn.Sequential]:
    """(encoder, decoder) of a bottleneck: ``[conv3x3/2 -> activation] * log2(stride) -> conv3x3 ->
    latent_channels``, and ``conv3x3 -> inverse -> [convT3x3*2 -> inverse] * (log2(stride) - 1) ->
    convT3x3*2 -> in_channels``. ``activation(channels)`` makes one activation layer (GELU here, GDN in
    ``student``); ``inverse_activation`` the decoder's (default: the same)."""
    inverse_activation = inverse_activation or activation
    k = stride.bit_length() - 1
    enc, c = [], in_channels
    for _ in range(k):
        enc += [nn.Conv2d(c, hidden, 3, 2, 1), activation(hidden)]
        c = hidden
    dec = [nn.Conv2d(latent_channels, hidden, 3, 1, 1), inverse_activation(hidden)]
    for i in range(k):
        last = i == k - 1
        dec.append(nn.ConvTranspose2d(hidden, in_channels if last else hidden, 3, 2, 1, output_padding=1))
        if not last:
            dec.append(inverse_activation(hidden))
    return nn.Sequential(*enc, nn.Conv2d(hidden, latent_channels, 3, 1, 1)), nn.Sequential(*dec)


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
        self.args = architecture(in_channels, latent_channels, hidden, stride)
        self.encoder, self.decoder = conv_layers(**self.args, activation=lambda c: nn.GELU())
        self.loc = nn.Parameter(torch.zeros(self.args["latent_channels"]))
        # softplus(0.5413) = 1: the untrained density has scale 1.11
        self.raw_scale = nn.Parameter(torch.full((self.args["latent_channels"],), 0.5413))

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

    def forward(self, z: Tensor, generator: torch.Generator | None = None,
                quantization: str = DEFAULT_QUANTIZATION) -> tuple[Tensor, Tensor]:
        """(features the tail sees, likelihoods of the latents).

        Training mode adds uniform noise U(-0.5, 0.5) to the latents (drawn from the CPU
        ``generator`` where given) for the likelihoods; the tail sees the same noisy latents
        (``quantization="noise"``) or the latents as coded, with a straight-through gradient
        (``"mixed"``: what the decoder will return, so a tail cannot learn to read signal
        that rounding erases). Eval mode quantizes them as the coder does, in one batch
        (``reconstruct`` is the exact, image-by-image path).
        """
        if quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
        self._check_features(z)
        y = self.encoder(z)
        if not self.training:
            y = self.quantize(y)
            return self.decode_latent(y, z.shape[-2:]), self.likelihoods(y)
        u = (torch.rand(y.shape, generator=generator, dtype=y.dtype).to(y.device)
             if generator is not None else torch.rand_like(y))
        noisy = y + (u - 0.5)
        seen = noisy if quantization == "noise" else y + (self.quantize(y) - y).detach()
        return self.decode_latent(seen, z.shape[-2:]), self.likelihoods(noisy)

    @torch.no_grad()
    def reconstruct(self, z: Tensor) -> Tensor:
        """What the decoder returns for each image of ``z``, without the bytes.

        Image by image, as streams are encoded and decoded: row i is bit for bit
        ``decode(bn, encode(bn, z[i:i+1]), z.shape[1:])`` (a batched convolution may round
        differently from a single image's in the last bits).
        """
        return coded_latents(self, z)[1]


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
def coded_latents(bn: Bottleneck, z: Tensor, decode: bool = True) -> tuple[Tensor, Tensor | None, int]:
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
        return coded_latents(bn, z, decode=False)[0].cpu()


def encode_batch(bn: Bottleneck, z: Tensor) -> list[bytes]:
    """One stream per image of features ``z`` [N, C, H, W] (layout in the module docstring);
    stream i is ``encode(bn, z[i:i+1])``."""
    return latent_streams(bn, latent_symbols(bn, z))


def latent_streams(bn: Bottleneck, y_hat: Tensor) -> list[bytes]:
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


def read_weights_file(path: str | Path, kind: str = "bottleneck") -> tuple[dict, object]:
    """(architecture, state) of a weights file with its card (``.json``) beside it, the file's sha256
    checked against the card's; a missing, unreadable or mismatched file is a ValueError naming it."""
    p = Path(path)
    card_path = p.with_suffix(".json")
    if not p.exists() or not card_path.exists():
        raise ValueError(f"no {kind} at {p} (weights and a .json card beside them are both needed)")
    try:
        card = json.loads(card_path.read_text())
        arch, sha = card["architecture"], card["sha256"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{card_path} is not a bottleneck card ({type(e).__name__}: {e})") from None
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    if digest != sha:
        raise ValueError(f"{kind} {p} has sha256 {digest}, its card says {sha}")
    return arch, read_torch_file(p)


def load_bottleneck(path: str | Path, device: str | torch.device = "cpu") -> Bottleneck:
    """A bottleneck written by ``save_bottleneck``, in eval mode (float32 from the stored float16).

    The card beside the file must exist and its sha256 match; a missing, unreadable or
    mismatched file is a ValueError naming it.
    """
    p = Path(path)
    arch, state = read_weights_file(p)
    card_path = p.with_suffix(".json")
    if not isinstance(arch, dict) or set(arch) != {"in_channels", "latent_channels", "hidden", "stride"}:
        raise ValueError(f"{card_path}: architecture must give in_channels, latent_channels, hidden, stride")
    bn = Bottleneck(**arch)
    own = bn.state_dict()
    if not isinstance(state, dict) or set(state) != set(own) or any(
            tuple(state[k].shape) != tuple(v.shape) for k, v in own.items()):
        raise ValueError(f"{p} does not hold the weights of a Bottleneck({arch})")
    bn.load_state_dict({k: v.float() for k, v in state.items()})
    return bn.to(device).eval()
