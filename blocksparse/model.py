"""The split ResNet-18 and its checkpoints."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from .bitstream import decode, encode
from .codec import CodecConfig, compress, compress_ste
from .data import dataset_info
from .runtime import DATA_DIR, ROOT, default_device, read_torch_file


SPLIT_POINTS = ("layer1", "layer2", "layer3")
_STAGES = ("layer1", "layer2", "layer3", "layer4")


class SplitResNet18(nn.Module):
    """torchvision ResNet-18 with the CIFAR stem, cut after ``split_at``.

    Parameters
    ----------
    num_classes, in_channels : int
        Output classes and input channels (1 for Fashion-MNIST, 3 for CIFAR).
    split_at : {"layer1", "layer2", "layer3"}
        Stage after which the codec sits.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, split_at: str = "layer1"):
        super().__init__()
        if split_at not in SPLIT_POINTS:
            raise ValueError(f"split_at must be one of {SPLIT_POINTS}, got {split_at!r}")
        net = torchvision.models.resnet18(num_classes=num_classes)
        net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
        self.net, self.split_at = net, split_at
        cut = _STAGES.index(split_at) + 1
        self._head_stages, self._tail_stages = _STAGES[:cut], _STAGES[cut:]

    @property
    def split_channels(self) -> int:
        """Channels of the features at the split (64 after layer1, 128 after layer2, 256 after layer3)."""
        return getattr(self.net, self._head_stages[-1])[-1].conv2.out_channels

    def head_modules(self) -> list[nn.Module]:
        """The layers before the split (stem and head stages)."""
        return [self.net.conv1, self.net.bn1, *(getattr(self.net, s) for s in self._head_stages)]

    def head(self, x: Tensor) -> Tensor:
        """Features at the split point."""
        n = self.net
        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != n.conv1.in_channels:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be images [N, {n.conv1.in_channels}, H, W] for this model, got {shape}")
        x = n.relu(n.bn1(n.conv1(x)))
        for s in self._head_stages:
            x = getattr(n, s)(x)
        return x

    def tail(self, z: Tensor) -> Tensor:
        """Logits from (decoded) split-point features."""
        n = self.net
        for s in self._tail_stages:
            z = getattr(n, s)(z)
        return n.fc(torch.flatten(n.avgpool(z), 1))

    def forward(self, x: Tensor, cfg: CodecConfig | None = None, exact: bool = False,
                ste: bool = False) -> Tensor:
        """Whole pass; with ``cfg`` the tail sees the decoder's output.

        ``exact`` runs the real ``decode(encode(.))`` per image (slow, for checks);
        ``ste`` uses the straight-through estimator so the pass can be trained.
        """
        z = self.head(x)
        if cfg is not None:
            if exact:
                z = torch.cat([decode(encode(zi[None], cfg)) for zi in z.float()]).to(z.device, z.dtype)
            elif ste:
                z = compress_ste(z, cfg)
            else:
                z = compress(z, cfg).to(z.device, z.dtype)
        return self.tail(z)


def load_state(model: SplitResNet18, state: dict) -> SplitResNet18:
    """Load a ResNet-18 state_dict into ``model``, mapping common key prefixes.

    Keys may carry ``module.`` (DataParallel), ``resnet.``, ``model.`` or ``net.``
    prefixes. Missing keys or shapes that differ raise a ValueError naming the layer.
    """
    own = model.net.state_dict()
    mapped = {}
    for k, v in state.items():
        for p in ("module.", "resnet.", "model.", "net."):
            if k.startswith(p):
                k = k[len(p):]
        mapped[k] = v
    missing = sorted(set(own) - set(mapped))
    if missing:
        raise ValueError(f"checkpoint lacks layer(s) {missing[:5]} (of {len(missing)} missing)")
    for k, v in own.items():
        if tuple(mapped[k].shape) != tuple(v.shape):
            raise ValueError(f"checkpoint layer {k!r} has shape {tuple(mapped[k].shape)}, "
                             f"model expects {tuple(v.shape)}")
    model.net.load_state_dict({k: mapped[k].to(own[k].dtype) for k in own})
    return model


def build_model(dataset: str = "fashion-mnist", split_at: str = "layer1") -> SplitResNet18:
    """An untrained SplitResNet18 sized for ``dataset``."""
    info = dataset_info(dataset)
    return SplitResNet18(info["classes"], len(info["mean"]), split_at)


# Pretrained checkpoints fetched from a model hub where the project ships none: the original
# study's CIFAR-100 ResNet-18 (CIFAR stem: 3x3 conv1, no max-pool; keys as torchvision's,
# possibly behind a "resnet." or "module." prefix).
HUB_CHECKPOINTS = {"cifar100": "hub:cascade-ai/cifar100-resnet18/cifar100_resnet18.pth"}


def hub_file(spec: str) -> Path:
    """The local path of ``"hub:<owner>/<repo>/<file>"``, downloaded with ``huggingface_hub``
    (or found in its cache). Without a network or the package, a ValueError says what to
    download and where to pass it."""
    if not isinstance(spec, str) or not spec.startswith("hub:") or spec.count("/") < 2:
        raise ValueError(f"a hub checkpoint is 'hub:<owner>/<repo>/<file>', got {spec!r}")
    owner, repo, filename = spec[4:].split("/", 2)
    how = (f"download {filename} from https://huggingface.co/{owner}/{repo} and pass its path "
           f"(load_pretrained(..., path=...) or --checkpoint)")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ValueError(f"{spec}: huggingface_hub is not installed; {how}") from None
    try:
        return Path(hf_hub_download(repo_id=f"{owner}/{repo}", filename=filename))
    except Exception as e:  # offline, unknown repo or file: every failure of the download itself
        raise ValueError(f"{spec}: could not fetch it ({type(e).__name__}); {how}") from None


def checkpoint_path(dataset: str = "fashion-mnist") -> Path:
    """Where the shipped checkpoint (``.pt``) and its model card (``.json``) live."""
    return DATA_DIR / f"resnet18_{dataset}.pt"


def checkpoint_card(dataset: str = "fashion-mnist", path: str | Path | None = None) -> dict:
    """The model card (``.json``) beside a checkpoint: the shipped one for ``dataset``, or
    the one at ``path``; ``{}`` where there is none. Notebooks record its sha256 in results."""
    p = (Path(path) if path is not None else checkpoint_path(dataset)).with_suffix(".json")
    return json.loads(p.read_text()) if p.exists() else {}


INT8_FORMAT = "int8-per-channel"


def save_weights(model: nn.Module, path: str | Path) -> str:
    """Write ``model``'s weights in the smallest form the study ships, and return the file's sha256.

    Every weight of two or more dimensions (convolutions, the classifier) is stored as int8 with
    one float32 scale per output channel (symmetric, ``round(w / scale)``, ``scale = max|w| / 127``);
    the rest (batch-norm, biases) as float16. About half the size of float16. The dequantized
    weights (``read_weights``) are the model that is evaluated: load the file before measuring.
    """
    q, scale, rest = {}, {}, {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if v.is_floating_point() and v.ndim >= 2:
            s = v.float().flatten(1).abs().amax(1).clamp_min(1e-12) / 127
            q[k] = torch.round(v.float() / s.view(-1, *[1] * (v.ndim - 1))).clamp(-127, 127).to(torch.int8)
            scale[k] = s
        else:
            rest[k] = v.half() if v.is_floating_point() else v
    p = Path(path)
    torch.save(dict(format=INT8_FORMAT, q=q, scale=scale, rest=rest), p)
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _dequantize(state: dict) -> dict:
    q, scale = state["q"], state["scale"]
    if set(q) != set(scale):
        raise KeyError(f"scales for {sorted(set(q) ^ set(scale))[:5]} missing")
    out = {k: v.float() * scale[k].float().view(-1, *[1] * (v.ndim - 1)) for k, v in q.items()}
    return out | {k: v.float() if v.is_floating_point() else v for k, v in state["rest"].items()}


def _read_state(p: Path) -> dict:
    """A state_dict from ``p`` (``save_weights``' int8 form is dequantized); a file torch cannot
    read is a ValueError naming it."""
    state = read_torch_file(p)
    if isinstance(state, dict) and state.get("format") == INT8_FORMAT:
        try:
            return _dequantize(state)
        except (KeyError, AttributeError, RuntimeError) as e:
            raise ValueError(f"{p} is not a well-formed {INT8_FORMAT} file ({type(e).__name__}: {e})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise ValueError(f"{p} holds a {type(state).__name__}, not a state_dict")
    return state


def _check_card(p: Path) -> dict:
    card = checkpoint_card(path=p)
    if card:
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        if digest != card["sha256"]:
            raise ValueError(f"checkpoint {p} has sha256 {digest}, model card says {card['sha256']}")
    return card


def load_pretrained(dataset: str = "fashion-mnist", split_at: str = "layer1",
                    path: str | Path | None = None, weights: str | Path | None = None,
                    device: str | None = None) -> SplitResNet18:
    """The pretrained ResNet-18 in eval mode, on ``device`` (default: ``default_device()``).

    Parameters
    ----------
    dataset, split_at : str
        Which shipped checkpoint, and where the model is split.
    path : path, optional
        Any ResNet-18 state_dict of matching shapes instead of the shipped checkpoint.
    weights : path, optional
        Fine-tuned weights (a full or partial state_dict, e.g. only the trained layers) applied
        on top of the checkpoint, such as the shipped frontier models in ``data/``; a relative
        path not found from the working directory is read from the repository (``answer.csv``'s
        ``weights`` load from a notebook's folder too).

    ``path`` or ``weights`` may name a model-hub file, ``"hub:<owner>/<repo>/<file>"``
    (``hub_file``): a whole ResNet-18 used as the checkpoint. Where the project ships no
    checkpoint for ``dataset`` and one is listed in ``HUB_CHECKPOINTS`` (CIFAR-100: the
    original study's), it is fetched from the hub. Where a model card (same name, ``.json``)
    lies beside a file, its sha256 must match.
    """
    model = build_model(dataset, split_at)
    if isinstance(weights, str) and weights.startswith("hub:"):
        if path is not None:
            raise ValueError("give the hub checkpoint as path or as weights, not both")
        path, weights = weights, None
    if path is None and not checkpoint_path(dataset).exists() and dataset in HUB_CHECKPOINTS:
        path = HUB_CHECKPOINTS[dataset]
    p = hub_file(path) if isinstance(path, str) and path.startswith("hub:") else (
        Path(path) if path is not None else checkpoint_path(dataset))
    if not p.exists():
        raise ValueError(f"no checkpoint at {p}; train one with "
                         f"`python blocksparse_utils.py pretrain --dataset {dataset}`")
    _check_card(p)
    load_state(model, _read_state(p))
    if weights is not None:
        w = Path(weights)
        if not w.is_absolute() and not w.exists() and (ROOT / w).exists():
            w = ROOT / w  # a path the results files give relative to the repository (e.g. answer.csv's)
        if not w.exists():
            raise ValueError(f"weights: no file at {w}")
        _check_card(w)
        part = _read_state(w)
        own = model.state_dict()
        bad = sorted(k for k in part if k not in own or tuple(part[k].shape) != tuple(own[k].shape))
        if bad:
            raise ValueError(f"weights {w}: layer(s) {bad[:5]} missing from the model or of another shape")
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in part.items()}, strict=False)
    return model.to(device or default_device()).eval()
