"""The split model, checkpoints and their cards, bad input."""
import hashlib
import shutil

import pytest
import torch

import blocksparse_utils as bsu
from blocksparse.data import mean_std
from blocksparse.model import load_state


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
        load_state(bsu.build_model("cifar100"), state)


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


# --- bad input that used to escape -------------------------------------------
def test_corrupt_checkpoint_file_is_a_value_error_naming_it(tmp_path):
    p = tmp_path / "broken.pt"
    p.write_bytes(b"not a torch file at all" * 10)
    with pytest.raises(ValueError, match="broken.pt"):
        bsu.load_pretrained(path=p)


def test_wrong_channel_count_is_a_value_error():
    m = bsu.build_model("fashion-mnist").eval()
    for x in (torch.randn(2, 3, 28, 28), torch.randn(1, 28, 28)):
        with pytest.raises(ValueError, match=r"\[N, 1, H, W\]"):
            m(x)


def test_weights_apply_on_top_of_the_checkpoint(tmp_path):
    """A partial state (only the tail's fc) with its card; the rest stays the shipped checkpoint."""
    base = bsu.load_pretrained()
    part = {"net.fc.weight": torch.full_like(base.net.fc.weight, 0.5)}
    p = tmp_path / "ft.pt"
    torch.save(part, p)
    m = bsu.load_pretrained(weights=p)
    assert (m.net.fc.weight == 0.5).all()
    assert torch.equal(m.net.conv1.weight, base.net.conv1.weight)
    torch.save({"net.fc.weight": torch.zeros(3, 3)}, p)
    with pytest.raises(ValueError, match="net.fc.weight"):
        bsu.load_pretrained(weights=p)
    with pytest.raises(ValueError, match="weights"):
        bsu.load_pretrained(weights=tmp_path / "missing.pt")


def _hub_format_checkpoint(path):
    """A CIFAR-100 ResNet-18 saved as the original study's hub file is: torchvision's resnet18 with
    the CIFAR stem (3x3 conv1, stride 1, no max-pool), keys behind the original's 'resnet.' prefix."""
    import torchvision
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=100)
    net.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool = torch.nn.Identity()
    for m in net.modules():  # non-trivial batch-norm statistics, so a mix-up of them would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.save({f"resnet.{k}": v for k, v in net.state_dict().items()}, path)
    return net.eval()


def test_cifar100_hub_checkpoint_loads_into_the_split_model(tmp_path, monkeypatch):
    import huggingface_hub
    net = _hub_format_checkpoint(tmp_path / "cifar100_resnet18.pth")
    calls = []

    def fake_download(repo_id, filename, **kw):  # the hub's cache, offline
        calls.append((repo_id, filename))
        return str(tmp_path / filename)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    x = torch.randn(4, 3, 32, 32)
    for kwargs in (dict(weights="hub:cascade-ai/cifar100-resnet18/cifar100_resnet18.pth"), {}):
        model = bsu.load_pretrained("cifar100", split_at="layer2", device="cpu", **kwargs)
        with torch.no_grad():
            assert torch.allclose(model(x), net(x), atol=1e-5)
            assert model.head(x).shape == (4, 128, 16, 16)
    assert calls == [("cascade-ai/cifar100-resnet18", "cifar100_resnet18.pth")] * 2
    mean, std = mean_std("cifar100")  # the original's normalization constants
    assert torch.allclose(mean.view(-1), torch.tensor([0.5071, 0.4867, 0.4408]))
    assert torch.allclose(std.view(-1), torch.tensor([0.2675, 0.2565, 0.2761]))


def test_hub_checkpoint_offline_says_what_to_download(monkeypatch):
    import huggingface_hub

    def offline(**kw):
        raise ConnectionError("no network")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo_id, filename, **kw: offline())
    with pytest.raises(ValueError, match=r"https://huggingface.co/cascade-ai/cifar100-resnet18"):
        bsu.load_pretrained("cifar100")
    with pytest.raises(ValueError, match="hub:<owner>/<repo>/<file>"):
        bsu.load_pretrained("cifar100", weights="hub:just-a-name")


def test_int8_weights_are_within_half_a_step_and_load_as_what_was_measured(tmp_path):
    """``save_weights``: every weight of 2+ dimensions within half a quantization step of the original
    (step = the output channel's largest magnitude / 127, computed here), the rest float16; loading
    the file gives exactly the dequantized weights; about half the size of float16."""
    from blocksparse.model import save_weights
    model = bsu.load_pretrained()
    with torch.no_grad():  # move the weights off the float16 grid, as training does
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 1e-3)
    path = tmp_path / "w.pt"
    save_weights(model, path)
    loaded = bsu.load_pretrained(weights=path)
    own, back = model.state_dict(), loaded.state_dict()
    for k, v in own.items():
        if v.is_floating_point() and v.ndim >= 2:
            step = v.flatten(1).abs().amax(1) / 127
            err = (back[k] - v).flatten(1).abs().amax(1)
            assert (err <= step * (0.5 + 1e-4)).all(), k  # float32 rounding: ~127 * 2**-24 of a step
        elif v.is_floating_point():
            assert torch.equal(back[k], v.half().float()), k
        else:
            assert torch.equal(back[k], v), k
    again = bsu.load_pretrained(weights=path)
    assert all(torch.equal(again.state_dict()[k], back[k]) for k in back)
    half = tmp_path / "half.pt"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in own.items()}, half)
    assert path.stat().st_size < 0.6 * half.stat().st_size


def test_a_malformed_int8_file_is_a_value_error_naming_it(tmp_path):
    from blocksparse.model import INT8_FORMAT
    p = tmp_path / "bad.pt"
    torch.save(dict(format=INT8_FORMAT, q={"net.fc.weight": torch.zeros(10, 512, dtype=torch.int8)}, scale={},
                    rest={}), p)
    with pytest.raises(ValueError, match="bad.pt"):
        bsu.load_pretrained(weights=p)
