"""The split model, checkpoints and their cards, bad input."""
import hashlib
import shutil

import pytest
import torch

import blocksparse_utils as bsu
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
