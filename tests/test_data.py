"""Datasets: splits, the three places Fashion-MNIST is found, CIFAR's on-disk format, bad arguments."""
import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

import blocksparse.data
import blocksparse_utils as bsu


# --- data -------------------------------------------------------------------
def test_fashion_mnist_splits():
    tr, va, te = (bsu.load_dataset("fashion-mnist", s) for s in ("train", "val", "test"))
    assert (len(tr), len(va), len(te)) == (55000, bsu.VAL_SIZE, 10000)
    assert tr.tensors[0].shape[1:] == (1, 28, 28) and tr.tensors[1].dtype == torch.int64
    assert abs(float(tr.tensors[0].mean())) < 0.05 and abs(float(tr.tensors[0].std()) - 1) < 0.05
    idx_tr, idx_va = blocksparse.data.split_indices(60000, "train"), blocksparse.data.split_indices(60000, "val")
    assert len(set(idx_tr.tolist()) & set(idx_va.tolist())) == 0
    assert len(idx_tr) + len(idx_va) == 60000
    # subsets are evenly spaced, never a prefix: 7 of 5000 are images 0, 714, 1428, ..., 4285
    expect = [i * 5000 // 7 for i in range(7)]
    assert expect[1] == 714 and expect[-1] == 4285
    assert torch.equal(bsu.load_dataset(split="val", subset=7).tensors[0], va.tensors[0][expect])
    assert len(bsu.load_dataset(split="test", subset=20000)) == 10000


@pytest.mark.parametrize("kwargs, name", [(dict(name="mnist"), "dataset"), (dict(split="valid"), "split"),
                                          (dict(subset=0), "subset")])
def test_bad_dataset_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        bsu.load_dataset(**kwargs)


def _write_idx(path, arr):
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_from_project_data_folder(tmp_path):
    d = tmp_path / "fashion-mnist"
    d.mkdir()
    rng = np.random.default_rng(0)
    for stem, n in (("train", 6000), ("t10k", 30)):
        _write_idx(d / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(d / f"{stem}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    te = bsu.load_dataset("fashion-mnist", "test", root=tmp_path)
    assert te.tensors[0].shape == (30, 1, 28, 28)
    assert len(bsu.load_dataset("fashion-mnist", "train", root=tmp_path)) == 6000 - bsu.VAL_SIZE


def test_fashion_mnist_missing_everywhere_names_all_sources(tmp_path, monkeypatch):
    monkeypatch.setattr(blocksparse.data, "DEBIAN_FASHION", tmp_path / "nowhere")

    def offline(*a, **k):
        raise RuntimeError("no network")
    monkeypatch.setattr(blocksparse.data.torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(ValueError, match="apt-get install dataset-fashion-mnist") as e:
        bsu.load_dataset("fashion-mnist", "test", root=tmp_path / "empty")
    assert "nowhere" in str(e.value) and "torchvision" in str(e.value)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_reads_the_real_on_disk_format(tmp_path, name):
    rng = np.random.default_rng(0)
    folder = tmp_path / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    folder.mkdir()
    key = "labels" if name == "cifar10" else "fine_labels"
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"] if name == "cifar10" else ["train", "test"]
    n_each = 5000 if name == "cifar100" else 1000
    for f in files:
        n = 40 if "test" in f else n_each
        d = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), key: rng.integers(0, 10, n).tolist()}
        with open(folder / f, "wb") as fh:
            pickle.dump(d, fh)
    te = bsu.load_dataset(name, "test", root=tmp_path)
    assert te.tensors[0].shape == (40, 3, 32, 32)
    with open(folder / ("test_batch" if name == "cifar10" else "test"), "rb") as fh:
        raw = pickle.load(fh)
    info = blocksparse.data._DATASETS[name]
    expect = (raw["data"][0].reshape(3, 32, 32) / 255.0 - np.array(info["mean"])[:, None, None]) \
        / np.array(info["std"])[:, None, None]
    np.testing.assert_allclose(te.tensors[0][0].numpy(), expect, rtol=1e-5, atol=1e-5)
    assert len(bsu.load_dataset(name, "train", root=tmp_path)) == 5000 - bsu.VAL_SIZE or name == "cifar10"



def test_cifar_offline_says_what_to_download(tmp_path, monkeypatch):
    import torchvision

    class Offline(torchvision.datasets.CIFAR100):
        def __init__(self, *a, **k):
            raise RuntimeError("no network")
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", Offline)
    with pytest.raises(ValueError, match=r"cifar-100-python.tar.gz"):
        bsu.load_dataset("cifar100", "test", root=tmp_path / "empty")
