"""Protocol v2's runs: the rate of real streams, and a finalist promoted as a rung's run."""
import json

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from blocksparse import protocol_v2_runs as RN
from blocksparse.model import build_model
from blocksparse.student import StudentBottleneck


def test_measure_rate_is_eight_times_the_stream_bytes_per_input_pixel():
    torch.manual_seed(0)
    model = build_model("fashion-mnist", "layer3").eval()
    bn = StudentBottleneck(model.split_channels, 4, 8, 2).update().eval()
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(6, 1, 28, 28, generator=g), torch.randint(0, 10, (6,), generator=g))
    m = RN.measure(model, bn, data, batch_size=4)
    with torch.no_grad():
        nbytes = sum(len(s) for s in bn.encode_batch(model.head(data.tensors[0])))
    assert m["bpp"] == pytest.approx(8 * nbytes / (6 * 28 * 28))
    with torch.no_grad():
        logits = model.tail(bn(model.head(data.tensors[0]))[0])
    assert np.array_equal(m["correct"], (logits.argmax(1) == data.tensors[1]).numpy())


def test_a_promoted_finalist_is_scored_on_val_select_as_a_rungs_run_is(tmp_path):
    """A tiny joint run trained without val-select (a finalist), then promoted: its val-select card is the
    one train_run writes for the same run with select (same recipe, seed, images: the same numbers)."""
    from blocksparse.protocol import Budget
    setting = dict(recipe="hybrid", latent_channels=4, lmbda=1.0, stride=2)
    kw = dict(budget=Budget(steps=2, batch_size=4, eval_every=1), rung=1.0, train_subset=16, val_subset=8)
    final = RN.train_run("layer3", setting, 0, out_dir=tmp_path / "screens" / "final", select=False, **kw)
    assert "val_select" not in json.loads(final.read_text())
    assert "CPU threads" in json.loads(final.read_text())["machine"]  # what it was trained on
    card = json.loads(RN.promote(final, tmp_path, val_subset=8).read_text())
    direct = json.loads(RN.train_run("layer3", setting, 0, out_dir=tmp_path / "direct", **kw).read_text())
    assert card["val_select"] == direct["val_select"] and card["val_select"]["n_images"] == 8
    assert card["final_round"] == "screens/final/" + final.name
    assert (tmp_path / card["weights"]).exists() and (tmp_path / card["bottleneck"]).exists()
    with pytest.raises(ValueError, match="exists"):
        RN.promote(final, tmp_path, val_subset=8)


@pytest.mark.parametrize("card, present, there", [
    (dict(weights="a.pt", bottleneck="a.bottleneck.pt"), ["a.pt", "a.bottleneck.pt", "a.bottleneck.json"], True),
    (dict(weights="a.pt", bottleneck="a.bottleneck.pt"), ["a.pt", "a.bottleneck.pt"], False),  # its own card is read too
    (dict(weights="a.pt", bottleneck="a.bottleneck.pt"), ["a.bottleneck.pt", "a.bottleneck.json"], False),
    (dict(weights="a.pt", codebook="a.codebook"), ["a.pt", "a.codebook"], True),
    (dict(weights="a.pt", codebook="a.codebook"), ["a.pt"], False),
    (dict(weights=None), [], False),  # a card that ships nothing
    (dict(), ["a.pt"], False),
])
def test_files_there_asks_for_every_file_a_run_ships(card, present, there, tmp_path):
    for f in present:
        (tmp_path / f).write_bytes(b"w")
    assert RN.files_there(card | dict(path=str(tmp_path / "a.json"))) is there
