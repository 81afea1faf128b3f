"""The Entropic Student's bottleneck: GDN layers and a non-parametric factorized density.

The field's recipe for a learned bottleneck at a split (Matsubara et al., 2022, after Ballé et al.,
2018): an encoder of strided convolutions with GDN, integer latents coded under a non-parametric
factorized density per channel, a decoder with inverse GDN back to the split's features. The
layers and the density are CompressAI's (``GDN``, ``EntropyBottleneck``), and so are the streams:
``EntropyBottleneck.compress`` writes one rANS stream per image, whose length is the rate.

Protocol v2 screens it (recipes "two-stage" and "hybrid", ``recipes``) beside v1's anchor
(``bottleneck.Bottleneck``: GELU layers, a logistic prior per channel). Both return, for features
``z``, what the tail sees and the latents' likelihoods, so one training loop serves both.

Stream of one image: CompressAI's rANS bytes of the latents, channel by channel, each rounded
around its channel's median; the decoder knows the features' shape. Encoder and decoder build
their tables with ``EntropyBottleneck.update`` from the same float32 weights (``save_student``
stores them; the tables are rebuilt on load, never stored).
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .bottleneck import architecture, conv_layers, read_weights_file
from .runtime import module_device

_TABLES = ("_quantized_cdf", "_offset", "_cdf_length")  # rebuilt by update(), not stored


def _compressai():
    """CompressAI's ``(EntropyBottleneck, GDN)``, imported when a student is first built, not with this
    module: importing it (and its torch-geometric) in a Jupyter kernel left notebook 07's widget cell
    waiting forever, so the modules a notebook imports must not pull it in."""
    with warnings.catch_warnings():  # compressai scripts a module at import (a FutureWarning in this torch)
        warnings.simplefilter("ignore")
        from compressai.entropy_models import EntropyBottleneck
        from compressai.layers import GDN
    return EntropyBottleneck, GDN


class StudentBottleneck(nn.Module):
    """Encoder with GDN, a factorized non-parametric density, decoder with inverse GDN.

    Parameters
    ----------
    in_channels : int
        Channels of the split-point features.
    latent_channels : int
        Channels of the coded latent.
    hidden : int
        Channels of the intermediate layers.
    stride : int
        Downsampling factor, a power of two >= 2: ``log2(stride)`` stride-2 convolutions.

    Notes
    -----
    Encoder: ``[conv3x3/2 -> GDN] * log2(stride) -> conv3x3 -> latent_channels``. Decoder:
    ``conv3x3 -> IGDN -> [convT3x3*2 -> IGDN] * (log2(stride) - 1) -> convT3x3*2 -> in_channels``,
    cropped to the features' size, then ReLU (the split's features are outputs of a ReLU).
    """

    def __init__(self, in_channels: int = 256, latent_channels: int = 24, hidden: int = 64, stride: int = 2):
        super().__init__()
        self.args = architecture(in_channels, latent_channels, hidden, stride)
        EntropyBottleneck, GDN = _compressai()
        self.encoder, self.decoder = conv_layers(**self.args, activation=GDN,
                                                 inverse_activation=lambda c: GDN(c, inverse=True))
        self.entropy = EntropyBottleneck(self.args["latent_channels"])

    def _check_features(self, z: Tensor) -> None:
        if not isinstance(z, Tensor) or z.ndim != 4 or z.shape[1] != self.args["in_channels"] or z.numel() == 0:
            got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"z must be features [N, {self.args['in_channels']}, H, W] for this bottleneck, got {got}")

    def decode_latent(self, y_hat: Tensor, size: tuple[int, int]) -> Tensor:
        h, w = size
        return F.relu(self.decoder(y_hat)[..., :h, :w])

    def forward(self, z: Tensor, generator: torch.Generator | None = None,
                quantization: str = "mixed") -> tuple[Tensor, Tensor]:
        """(features the tail sees, likelihoods of the latents).

        Training: the likelihoods of the latents with uniform noise (CompressAI's), and the tail
        sees the latents as coded (rounded around the medians) with a straight-through gradient
        (``"mixed"``) or the noisy ones (``"noise"``). Eval: rounded, as the coder does.
        """
        if quantization not in ("noise", "mixed"):
            raise ValueError(f"quantization must be 'noise' or 'mixed', got {quantization!r}")
        self._check_features(z)
        y = self.encoder(z)
        noisy, lik = self.entropy(y)
        if self.training and quantization == "mixed":
            seen = y + (self.entropy.quantize(y, "dequantize", self.entropy._get_medians()) - y).detach()
        else:
            seen = noisy
        return self.decode_latent(seen, z.shape[-2:]), lik.clamp_min(1e-9)

    def aux_loss(self) -> Tensor:
        """CompressAI's loss of the density's quantiles (the coder's symbol range), trained apart."""
        return self.entropy.loss()

    def update(self) -> "StudentBottleneck":
        """Build the coding tables from the current weights (after training, after loading)."""
        self.entropy.update(force=True)
        return self

    @torch.no_grad()
    def encode_batch(self, z: Tensor) -> list[bytes]:
        """One rANS stream per image of features ``z`` [N, C, H, W]."""
        self._check_features(z)
        return self.entropy.compress(self.encoder(z.to(module_device(self), torch.float32)))

    @torch.no_grad()
    def decode_batch(self, streams: list[bytes], shape) -> Tensor:
        """The features [N, C, H, W] the decoder returns for ``streams`` of features of ``shape`` (C, H, W)."""
        if not isinstance(streams, (list, tuple)) or not all(isinstance(s, (bytes, bytearray)) for s in streams):
            raise ValueError("streams must be a list of bytes")
        c, h, w = (int(v) for v in tuple(shape)[-3:])
        s = self.args["stride"]
        y_hat = self.entropy.decompress(list(streams), (-(-h // s), -(-w // s)))
        return self.decode_latent(y_hat.to(module_device(self)), (h, w))


def save_student(bn: StudentBottleneck, path: str | Path, **card) -> dict:
    """Write ``bn``'s weights (float32, without the coding tables) and a card (``.json``) beside them."""
    if not isinstance(bn, StudentBottleneck):
        raise ValueError(f"bn must be a StudentBottleneck, got {type(bn).__name__}")
    p = Path(path)
    torch.save({k: v.detach().float().cpu() for k, v in bn.state_dict().items() if k.split(".")[-1] not in _TABLES}, p)
    out = dict(architecture=bn.args, kind="student", dtype="float32", torch=torch.__version__, **card,
               sha256=hashlib.sha256(p.read_bytes()).hexdigest())
    p.with_suffix(".json").write_text(json.dumps(out, indent=2, default=float))
    return out


def load_student(path: str | Path, device: str | torch.device = "cpu") -> StudentBottleneck:
    """A bottleneck written by ``save_student``, its coding tables rebuilt, in eval mode."""
    p = Path(path)
    arch, state = read_weights_file(p, "student bottleneck")
    bn = StudentBottleneck(**arch)
    own = {k for k in bn.state_dict() if k.split(".")[-1] not in _TABLES}
    if not isinstance(state, dict) or set(state) != own:
        raise ValueError(f"{p} does not hold the weights of a StudentBottleneck({arch})")
    bn.load_state_dict(state, strict=False)
    return bn.to(device).update().eval()
