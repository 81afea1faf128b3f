"""Datasets: Fashion-MNIST (default), CIFAR-10/100; train / val / test splits, normalized tensors."""
from __future__ import annotations

import functools
import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import Tensor
from torch.utils.data import TensorDataset

from .runtime import DATA_DIR


DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
VAL_SIZE = 5000  # images carved from the training set for early stopping and selection
# The protocol's two disjoint halves of those 5,000 held-out images (``protocol`` says which is for what):
# "val-stop" for early stopping and training curves, "val-select" for every choice.
_DATASETS = {
    "fashion-mnist": dict(classes=10, mean=(0.2860,), std=(0.3530,)),
    "cifar10": dict(classes=10, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)),
    # the original study's constants, which its hub checkpoint (model.HUB_CHECKPOINTS) was trained with
    "cifar100": dict(classes=100, mean=(0.5071, 0.4867, 0.4408), std=(0.2675, 0.2565, 0.2761)),
}
SPLITS = ("train", "val", "test", "val-stop", "val-select")


def dataset_info(name: str) -> dict:
    if name not in _DATASETS:
        raise ValueError(f"dataset must be one of {tuple(_DATASETS)}, got {name!r}")
    return _DATASETS[name]


def mean_std(name: str) -> tuple[Tensor, Tensor]:
    """Per-channel normalization constants of ``name``, shaped [1, C, 1, 1]."""
    info = dataset_info(name)
    return tuple(torch.tensor(info[k]).view(1, -1, 1, 1) for k in ("mean", "std"))


def _read_idx(path: Path) -> np.ndarray:
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _fashion_arrays(root: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    stem = "train" if train else "t10k"
    names = (f"{stem}-images-idx3-ubyte", f"{stem}-labels-idx1-ubyte")
    for d in (root / "fashion-mnist", DEBIAN_FASHION, root / "FashionMNIST" / "raw"):
        for ext in (".gz", ""):
            if all((d / (n + ext)).exists() for n in names):
                return tuple(_read_idx(d / (n + ext)) for n in names)
    try:
        torchvision.datasets.FashionMNIST(str(root), train=train, download=True)
    except Exception as e:  # offline machine, blocked host, ...
        raise ValueError(
            f"Fashion-MNIST not found in {root / 'fashion-mnist'} nor {DEBIAN_FASHION}, and "
            f"torchvision's download failed ({e}). Install it with "
            "`sudo apt-get install dataset-fashion-mnist` or copy the four idx files "
            f"into {root / 'fashion-mnist'}.") from None
    return _fashion_arrays(root, train)


def _cifar_arrays(root: Path, name: str, train: bool) -> tuple[np.ndarray, np.ndarray]:
    folder, files, key = {
        "cifar10": ("cifar-10-batches-py",
                    [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"], "labels"),
        "cifar100": ("cifar-100-python", ["train" if train else "test"], "fine_labels"),
    }[name]
    paths = [root / folder / f for f in files]
    if not all(p.exists() for p in paths):
        cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
        try:
            cls(str(root), train=train, download=True)
        except Exception as e:  # offline: say what to fetch and where to put it
            raise ValueError(f"{name}: no {folder}/ under {root} and torchvision's download failed "
                             f"({type(e).__name__}); download {cls.url} and unpack it into {root}") from None
    xs, ys = [], []
    for p in paths:
        with open(p, "rb") as f:
            d = pickle.load(f, encoding="latin1")  # the official python-pickle format
        xs.append(np.asarray(d["data"], np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(d[key]))
    return np.concatenate(xs), np.concatenate(ys)


@functools.lru_cache(maxsize=4)
def _arrays(name: str, train: bool, root: str) -> tuple[Tensor, Tensor]:
    mean, std = mean_std(name)
    x, y = (_fashion_arrays(Path(root), train) if name == "fashion-mnist"
            else _cifar_arrays(Path(root), name, train))
    x = torch.from_numpy(np.array(x, np.float32) / 255.0)
    if x.ndim == 3:
        x = x[:, None]
    return (x - mean) / std, torch.from_numpy(np.array(y, np.int64))


def split_indices(n_train: int, split: str, seed: int = 0) -> Tensor:
    """Indices of the training set that form ``split``; fixed by ``seed``.

    "val" is the first ``VAL_SIZE`` images of one seeded permutation, "train" the rest;
    "val-stop" and "val-select" are the first and the second half of "val" (disjoint, together
    "val")."""
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
    half = VAL_SIZE // 2
    return {"val": perm[:VAL_SIZE], "val-stop": perm[:half], "val-select": perm[half:VAL_SIZE]}.get(
        split, perm[VAL_SIZE:])


def evenly_spaced(n: int, k: int) -> Tensor:
    """``min(k, n)`` indices spread evenly over ``range(n)``: ``floor(i * n / k)``, i = 0..k-1."""
    k = min(k, n)
    return torch.arange(k) * n // k


def load_dataset(name: str = "fashion-mnist", split: str = "test", root: str | Path = DATA_DIR,
                 subset: int | None = None) -> TensorDataset:
    """Normalized images and integer labels of one split.

    Parameters
    ----------
    name : {"fashion-mnist", "cifar10", "cifar100"}
    split : {"train", "val", "test", "val-stop", "val-select"}
        "val" is a fixed, seeded slice of ``VAL_SIZE`` training images; "train" is the rest;
        "val-stop" and "val-select" are its two disjoint halves (``split_indices``).
    root : path
        Where datasets are looked up and downloaded to (Fashion-MNIST is also looked up in
        Debian's ``/usr/share/datasets/fashion-mnist``).
    subset : int, optional
        Keep ``subset`` images evenly spaced over the split (``evenly_spaced``), never a
        prefix: a prefix of a test set can be easier or harder than the whole.
    """
    dataset_info(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if subset is not None and subset < 1:
        raise ValueError(f"subset must be >= 1, got {subset}")
    x, y = _arrays(name, split != "test", str(root))
    if split != "test":
        idx = split_indices(len(x), split)
        x, y = x[idx], y[idx]
    if subset is not None:
        idx = evenly_spaced(len(x), subset)
        x, y = x[idx], y[idx]
    return TensorDataset(x, y)

