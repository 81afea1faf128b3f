"""Model, data, checkpoint, fine-tuning and evaluation."""
import gzip
import hashlib
import pickle
import shutil
import struct

import numpy as np
import pytest
import torch

import blocksparse_utils as bsu


# --- data -------------------------------------------------------------------
def test_fashion_mnist_splits():
    tr, va, te = (bsu.load_dataset("fashion-mnist", s) for s in ("train", "val", "test"))
    assert (len(tr), len(va), len(te)) == (55000, bsu.VAL_SIZE, 10000)
    assert tr.tensors[0].shape[1:] == (1, 28, 28) and tr.tensors[1].dtype == torch.int64
    assert abs(float(tr.tensors[0].mean())) < 0.05 and abs(float(tr.tensors[0].std()) - 1) < 0.05
    idx_tr, idx_va = bsu.split_indices(60000, "train"), bsu.split_indices(60000, "val")
    assert len(set(idx_tr.tolist()) & set(idx_va.tolist())) == 0
    assert len(idx_tr) + len(idx_va) == 60000
    assert torch.equal(bsu.load_dataset(split="val", subset=7).tensors[0], va.tensors[0][:7])


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
    monkeypatch.setattr(bsu, "DEBIAN_FASHION", tmp_path / "nowhere")

    def offline(*a, **k):
        raise RuntimeError("no network")
    monkeypatch.setattr(bsu.torchvision.datasets, "FashionMNIST", offline)
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
    info = bsu._DATASETS[name]
    expect = (raw["data"][0].reshape(3, 32, 32) / 255.0 - np.array(info["mean"])[:, None, None]) \
        / np.array(info["std"])[:, None, None]
    np.testing.assert_allclose(te.tensors[0][0].numpy(), expect, rtol=1e-5, atol=1e-5)
    assert len(bsu.load_dataset(name, "train", root=tmp_path)) == 5000 - bsu.VAL_SIZE or name == "cifar10"


# --- model ------------------------------------------------------------------
@pytest.mark.parametrize("split_at, shape", [("layer1", (64, 28, 28)), ("layer2", (128, 14, 14)),
                                             ("layer3", (256, 7, 7))])
def test_split_points(split_at, shape):
    m = bsu.build_model("fashion-mnist", split_at).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        z = m.head(x)
        assert z.shape[1:] == shape
        torch.testing.assert_close(m.tail(z), m(x))
        cfg = bsu.CodecConfig(block_size=2, ratio=0.3)
        torch.testing.assert_close(m(x, cfg), m.tail(bsu.compress(z, cfg)))


def test_exact_decode_path_gives_the_same_logits():
    m = bsu.build_model().eval()
    x = torch.randn(3, 1, 28, 28)
    cfg = bsu.CodecConfig(block_size=4, ratio=0.1, bits=2)
    with torch.no_grad():
        assert torch.equal(m(x, cfg), m(x, cfg, exact=True))


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="split_at"):
        bsu.build_model(split_at="layer4")
    with pytest.raises(ValueError, match="dataset"):
        bsu.build_model("imagenet")


def test_load_state_maps_prefixes_and_names_bad_layers(tmp_path):
    src = bsu.build_model("cifar100")
    state = {"module." + k: v for k, v in src.net.state_dict().items()}
    torch.save(state, tmp_path / "mine.pt")
    m = bsu.load_pretrained("cifar100", path=tmp_path / "mine.pt")
    assert torch.equal(m.net.fc.weight, src.net.fc.weight)
    state["module.fc.weight"] = torch.zeros(10, 512)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="fc.weight"):
        bsu.load_pretrained("cifar100", path=tmp_path / "bad.pt")
    del state["module.layer4.1.bn2.bias"]
    with pytest.raises(ValueError, match="layer4.1.bn2.bias"):
        bsu.load_state(bsu.build_model("cifar100"), state)


# --- the shipped checkpoint -------------------------------------------------
@pytest.fixture(scope="module")
def shipped():
    return bsu.load_pretrained("fashion-mnist")


def test_shipped_checkpoint_matches_its_card(shipped):
    card = bsu.checkpoint_card("fashion-mnist")
    assert card["sha256"] == hashlib.sha256(bsu.checkpoint_path().read_bytes()).hexdigest()
    assert card["dataset"] == "fashion-mnist" and card["test_accuracy"] >= 0.90
    sample = bsu.load_dataset("fashion-mnist", "test", subset=2000)
    acc = bsu.accuracy(shipped, sample)
    # 2000 images: the sampling standard error is ~0.6 points
    assert abs(acc - card["test_accuracy"]) < 0.015, (acc, card["test_accuracy"])


def test_checkpoint_card_is_empty_where_there_is_none(tmp_path):
    assert bsu.checkpoint_card(path=tmp_path / "mine.pt") == {}


def test_checkpoint_with_wrong_hash_is_refused(tmp_path):
    p = tmp_path / "resnet18_fashion-mnist.pt"
    shutil.copy(bsu.checkpoint_path(), p)
    shutil.copy(bsu.checkpoint_path().with_suffix(".json"), p.with_suffix(".json"))
    raw = bytearray(p.read_bytes())
    raw[-100] ^= 0xFF
    p.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="sha256"):
        bsu.load_pretrained(path=p)


def test_channels_last_and_bf16_agree_with_fp32(shipped):
    x = bsu.load_dataset("fashion-mnist", "test", subset=256).tensors[0]
    ref = bsu.predict(shipped, x)
    assert torch.equal(bsu.predict(shipped, x, fast=True), ref)  # channels_last: same labels
    assert (bsu.predict(shipped, x, fast=True, bf16=True) == ref).float().mean() >= 0.98


def test_evaluate_rates_are_real_streams(shipped):
    data = bsu.load_dataset("fashion-mnist", "test", subset=40)
    cfg = bsu.CodecConfig(block_size=4, ratio=0.05, mode="region-wise", bits=2)
    ev = bsu.evaluate(shipped, cfg, data, rate_sample=10, exact=True)
    z = bsu.head_features(shipped, data)
    sizes = [len(bsu.encode(z[i:i + 1], cfg)) for i in range(10)]
    assert ev["bytes"] == pytest.approx(np.mean(sizes))
    assert ev["bpp"] == pytest.approx(8 * np.mean(sizes) / 784)
    assert sum(ev["breakdown"].values()) == pytest.approx(8 * ev["bytes"])
    with torch.no_grad():
        logits = shipped(data.tensors[0], cfg, exact=True)
    assert ev["accuracy"] == pytest.approx(float((logits.argmax(1) == data.tensors[1]).float().mean()))
    with pytest.raises(ValueError, match="rate_sample"):
        bsu.evaluate(shipped, cfg, data, rate_sample=0)


# --- fine-tuning ------------------------------------------------------------
def test_finetune_lowers_training_loss_and_never_sees_test(monkeypatch):
    seen = []
    real = bsu.load_dataset

    def spy(name="fashion-mnist", split="test", *a, **k):
        seen.append(split)
        return real(name, split, *a, **k)
    monkeypatch.setattr(bsu, "load_dataset", spy)
    model = bsu.build_model()
    cfg = bsu.CodecConfig(block_size=4, ratio=0.3, bits=4)
    _, hist = bsu.finetune(model, cfg, train_subset=256, val_subset=64, steps=30, batch_size=32,
                           lr=3e-3, train="all", eval_every=10, patience=10)
    assert "test" not in seen and set(seen) == {"train", "val"}
    assert hist[-1]["loss"] < hist[1]["loss"]
    assert [h["step"] for h in hist] == [0, 10, 20, 30]


def test_finetune_bad_arguments():
    m = bsu.build_model()
    with pytest.raises(ValueError, match="optimizer"):
        bsu.finetune(m, bsu.CodecConfig(), optimizer="lbfgs")
    with pytest.raises(ValueError, match="train"):
        bsu.finetune(m, bsu.CodecConfig(), train="head")
