"""The protocol's runs (blocksparse.protocol_runs), end to end on a few images with a tiny budget."""
import json

import pytest
import torch

from blocksparse import answer, data, protocol, protocol_runs as pr
from blocksparse.results import unpack_correct

TINY = protocol.Budget(steps=2, batch_size=4, eval_every=1)


def test_a_run_is_scored_on_val_select_never_on_test_and_tested_once(tmp_path, monkeypatch):
    # the spy sits where every split is read (data._arrays, behind load_dataset), so a read from any
    # module counts: protocol.selection_data, protocol_runs, or one they call
    seen = []
    real = data._arrays

    def spy(name, train, root):
        seen.append("train" if train else "test")
        return real(name, train, root)
    monkeypatch.setattr(data, "_arrays", spy)
    setting = dict(mode="global", block_size=2, ratio=0.01, bits=2, group_lasso_weight=1e-5)
    card_path = pr.train_run("block-sparse", setting, 0, "layer3", out_dir=tmp_path, budget=TINY, train_subset=16,
                             fit_images=8, rung=0.25, val_subset=12)
    assert "test" not in seen and "train" in seen
    card = json.loads(card_path.read_text())
    assert card["budget"] == TINY.asdict() and card["rung"] == 0.25 and card["protocol"]["stop_images"] == 12
    assert len(card["history"]) == 3 and card["val_select"]["n_images"] == 12 and "test" not in card
    assert "CPU threads" in card["machine"] and card["torch"] in card["machine"]  # what it was trained on
    model, _, codebook = pr.load_run(card_path)
    assert codebook is not None and (codebook.position_coding, codebook.value_model) != (None, None)
    with pytest.raises(ValueError, match="neither a reference nor an operating point"):
        pr.test_run(card_path, n_test=10)  # no reference beside it: the rule has chosen nothing
    with pytest.raises(ValueError, match="exists"):
        pr.train_run("block-sparse", setting, 0, "layer3", out_dir=tmp_path, budget=TINY, train_subset=16,
                     fit_images=8, rung=0.25, val_subset=12)
    ref = dict(family="reference", seed=0, split_at=None, setting={}, rung=None, budget=card["budget"],
               val_select=card["val_select"])
    (tmp_path / "reference_seed0.json").write_text(json.dumps(ref))  # the same val-select results: within
    tested = pr.test_run(card_path, n_test=10)
    assert tested["test"]["n_images"] == 10 and len(unpack_correct(tested["test"]["correct"])) == 10
    with pytest.raises(ValueError, match="tested already"):
        pr.test_run(card_path, n_test=10)
    (tmp_path / card["weights"]).write_bytes(b"changed")
    with pytest.raises(ValueError, match="sha256"):
        pr.load_run(card_path)


def test_webp_as_is_is_scored_without_training_and_the_plan_moves_on(tmp_path, monkeypatch):
    monkeypatch.setattr(pr, "selection_data", lambda dataset, split="val-select", subset=None:
                        protocol.load_dataset(dataset, split, subset=12))
    path = pr.score_codec(5, out_dir=tmp_path)
    card = json.loads(path.read_text())
    assert card["family"] == "webp" and card["weights"] is None and 0 < card["val_select"]["bpp_payload"] < card["val_select"]["bpp"]
    assert pr.next_steps(tmp_path)[0] == dict(action="train", family="reference", split_at=None, seed=0)


def test_a_bottleneck_run_trains_the_whole_network_and_ships_both_parts(tmp_path, monkeypatch):
    setting = dict(lmbda=0.2, latent_channels=4, stride=2, prior_lr=0.05, quantization="mixed")
    seen, real = [], pr.train_bottleneck
    monkeypatch.setattr(pr, "train_bottleneck",
                        lambda *a, **k: seen.append((k["prior_lr"], k["quantization"])) or real(*a, **k))
    card_path = pr.train_run("bottleneck", setting, 0, "layer3", out_dir=tmp_path, budget=TINY, train_subset=16,
                             rung=0.2, val_subset=12)
    card = json.loads(card_path.read_text())
    assert seen == [(0.05, "mixed")] and card["setting"] == setting
    assert card_path.name.endswith("_plr0.05_mixed_seed0.json")
    assert card["bottleneck"].endswith(".bottleneck.pt") and card["val_select"]["bpp"] > 0
    model, _, bn = pr.load_run(card_path)
    shipped = pr.load_pretrained(split_at="layer3")
    assert any(not torch.equal(v, shipped.state_dict()[k]) for k, v in model.state_dict().items() if v.is_floating_point())
    again = pr.evaluate_bottleneck(model, bn, protocol.selection_data(subset=12))
    assert again["accuracy"] == card["val_select"]["accuracy"] and again["bpp"] == card["val_select"]["bpp"]


def test_protocol_next_stops_when_a_step_leaves_the_plan_unmoved(monkeypatch, tmp_path):
    from blocksparse import cli_protocol
    made = []
    step = dict(action="train", family="reference", split_at=None, seed=0)
    monkeypatch.setattr(cli_protocol, "next_steps", lambda out: [step])
    monkeypatch.setattr(cli_protocol, "run_step", lambda s, *a: made.append(s) or tmp_path)
    with pytest.raises(SystemExit, match="left the plan where it was"):
        cli_protocol.protocol_command(["next", "--max-steps", "5", "--out", str(tmp_path)])
    assert made == [step]  # made once, not five times


def _card(folder, name, family, seed, correct, rung=None, tested=False, split_at=None):
    """A finished run's card with weights on disk; ``correct``: val-select per-image results."""
    from blocksparse.results import pack_correct
    import numpy as np
    setting = {"webp-finetuned": dict(quality=rung), "bottleneck": dict(lmbda=rung)}.get(family, {})
    card = dict(family=family, split_at=split_at, setting=setting, seed=seed, rung=rung, weights=f"{name}.pt",
                val_select=dict(accuracy=float(np.mean(correct)), correct=pack_correct(np.array(correct, bool))))
    if tested:
        card["test"] = card["val_select"]
    (folder / f"{name}.pt").write_bytes(b"w")
    (folder / f"{name}.json").write_text(json.dumps(card))
    return folder / f"{name}.pt"


def test_prune_keeps_the_reference_and_operating_points_and_drops_passed_rungs_and_tested_seeds(tmp_path):
    n = 400
    good, bad = [True] * n, [True] * (n // 2) + [False] * (n // 2)  # bad: 50 points below the reference
    ref = _card(tmp_path, "reference_seed0", "reference", 0, good)
    ref1 = _card(tmp_path, "reference_seed1", "reference", 1, good, tested=True)
    low = _card(tmp_path, "webp-finetuned_q0_seed0", "webp-finetuned", 0, bad, rung=0)
    op = _card(tmp_path, "webp-finetuned_q5_seed0", "webp-finetuned", 0, good, rung=5)
    seed1 = _card(tmp_path, "webp-finetuned_q5_seed1", "webp-finetuned", 1, good, rung=5, tested=True)
    seed2 = _card(tmp_path, "webp-finetuned_q5_seed2", "webp-finetuned", 2, good, rung=5)  # not tested yet
    bn = _card(tmp_path, "bottleneck_layer1_seed0", "bottleneck", 0, bad, rung=3.2, split_at="layer1")
    card = json.loads(bn.with_suffix(".json").read_text()) | dict(bottleneck="bottleneck_layer1_seed0.bottleneck.pt")
    bn.with_suffix(".json").write_text(json.dumps(card))
    parts = [tmp_path / "bottleneck_layer1_seed0.bottleneck.pt", tmp_path / "bottleneck_layer1_seed0.bottleneck.json"]
    for f in parts:
        f.write_text("{}")
    gone = pr.prune(tmp_path)
    assert sorted(gone) == sorted([ref1, low, seed1, bn, *parts])
    assert ref.exists() and op.exists() and seed2.exists() and not low.exists()
    assert json.loads(low.with_suffix(".json").read_text())["weights_kept"] is False
    with pytest.raises(ValueError, match="not kept"):
        pr.load_run(low.with_suffix(".json"))
    assert pr.prune(tmp_path) == []


def test_chosen_runs_are_tested_in_the_step_that_trains_them_and_rungs_are_not(tmp_path, monkeypatch):
    tested = []
    monkeypatch.setattr(pr, "train_run", lambda family, *a, **k: tmp_path / f"{family}.json")
    monkeypatch.setattr(pr, "test_run", lambda card: tested.append(card.name))
    pr.run_step(dict(action="train", family="reference", split_at=None, seed=1))
    pr.run_step(dict(action="train", family="webp-finetuned", split_at=None, rung=5, seed=0))  # a rung
    pr.run_step(dict(action="train", family="bottleneck", split_at="layer2", rung=0.8, seed=2,
                     setting=dict(lmbda=0.8, latent_channels=8, stride=2)))  # an operating point's seed
    assert tested == ["reference.json", "bottleneck.json"]


def test_a_bottleneck_rung_is_trained_with_the_protocols_prior_learning_rate_and_quantization(tmp_path, monkeypatch):
    settings = []
    monkeypatch.setattr(pr, "train_run", lambda family, setting, *a, **k: settings.append(setting) or tmp_path / "b.json")
    pr.run_step(dict(action="train", family="bottleneck", split_at="layer1", rung=0.8, seed=0))
    assert settings == [dict(lmbda=0.8, latent_channels=8, stride=4, prior_lr=protocol.BOTTLENECK_PRIOR_LR,
                             quantization=protocol.BOTTLENECK_QUANTIZATION)]
    assert pr.run_name("bottleneck", settings[0], 0, "layer1") == "bottleneck_layer1_M8_S4_lmbda0.8_plr0.01_mixed_seed0"
    # a setting without the key (the cards trained before it) keeps its name
    assert pr.run_name("bottleneck", dict(lmbda=0.8, latent_channels=8, stride=4, prior_lr=0.01), 0, "layer1") \
        == "bottleneck_layer1_M8_S4_lmbda0.8_plr0.01_seed0"


def test_a_screen_halves_over_the_frontier_under_its_rung_and_records_its_pick(tmp_path, monkeypatch):
    C = pr.CodecConfig
    rated = [(C(2, 0.01, "global", 2), 0.20), (C(2, 0.005, "global", 2), 0.12), (C(4, 0.005, "global", 2), 0.22),
             (C(2, 0.002, "global", 4), 0.10), (C(2, 0.005, "region-wise", 2), 0.24), (C(2, 0.002, "global", 2), 0.07)]
    # by hand: per (mode, B, bits) the largest ratio: global B2 2b -> 0.01, global B4 2b -> 0.005,
    # global B2 4b -> 0.002, region-wise B2 2b -> 0.005
    want = [rated[0][0], rated[2][0], rated[3][0], rated[4][0]]
    assert pr.frontier_of(rated) == want
    seen = {}
    monkeypatch.setattr(pr, "load_pretrained", lambda *a, **k: None)
    monkeypatch.setattr(pr, "candidates_under", lambda *a, **k: rated)
    monkeypatch.setattr(pr, "load_dataset", lambda *a, **k: None)
    monkeypatch.setattr(pr, "selection_data", lambda *a, **k: None)

    def fake_select(load, arms, steps, budget, rounds, evals, group_lasso_weights, **kw):
        seen.update(arms=arms, evals=evals, gl=group_lasso_weights, budget=budget)
        import pandas as pd
        return pd.DataFrame([dict(mode=c.mode, block_size=c.block_size, ratio=c.ratio, bits=c.bits, round=0,
                                  group_lasso_weight=1e-5, val_accuracy=0.5 + 0.1 * (c.block_size == 4)) for c in arms])
    monkeypatch.setattr(pr, "select_after_finetuning", fake_select)
    sc = json.loads(pr.screen("layer2", 0.25, out_dir=tmp_path).read_text())
    assert seen == dict(arms=want, evals=1, gl=[0.0, 1e-5], budget=protocol.BUDGET) and len(sc["candidates"]) == 6 and len(sc["arms"]) == 4
    assert sc["pick"] == dict(mode="global", block_size=4, ratio=0.005, bits=2, group_lasso_weight=1e-5)
    assert pr.screened(tmp_path) == {("layer2", 0.25): sc["pick"]}


def test_protocol_next_for_one_family_skips_the_others_steps(monkeypatch, tmp_path):
    from blocksparse import cli_protocol
    card = tmp_path / "bn.json"
    card.write_text(json.dumps(dict(family="bottleneck")))
    plan = [dict(action="screen", family="block-sparse", split_at="layer1", rung=0.25),
            dict(action="test", card=str(card)),
            dict(action="score", family="webp", split_at=None, rung=0, seed=0)]
    made = []
    monkeypatch.setattr(cli_protocol, "next_steps", lambda out: [s for s in plan if s not in made])
    monkeypatch.setattr(cli_protocol, "run_step", lambda s, *a: made.append(s) or tmp_path)
    monkeypatch.setattr(cli_protocol, "prune", lambda out: [])
    cli_protocol.protocol_command(["next", "--max-steps", "5", "--family", "webp", "--out", str(tmp_path)])
    cli_protocol.protocol_command(["next", "--max-steps", "5", "--family", "bottleneck", "--out", str(tmp_path)])
    assert made == [plan[2], plan[1]]


def test_protocol_next_at_one_split_skips_the_other_splits_steps(monkeypatch, tmp_path):
    from blocksparse import cli_protocol
    card = tmp_path / "bn.json"
    card.write_text(json.dumps(dict(family="bottleneck", split_at="layer3")))
    plan = [dict(action="screen", family="block-sparse", split_at="layer1", rung=0.25),
            dict(action="screen", family="block-sparse", split_at="layer3", rung=0.25),
            dict(action="test", card=str(card)),
            dict(action="train", family="reference", split_at=None, rung=None, seed=1)]
    made = []
    monkeypatch.setattr(cli_protocol, "next_steps", lambda out: [s for s in plan if s not in made])
    monkeypatch.setattr(cli_protocol, "run_step", lambda s, *a: made.append(s) or tmp_path)
    monkeypatch.setattr(cli_protocol, "prune", lambda out: [])
    cli_protocol.protocol_command(["next", "--max-steps", "5", "--family", "block-sparse", "--split-at", "layer3",
                                   "--out", str(tmp_path)])
    assert made == [plan[1]]
    cli_protocol.protocol_command(["next", "--max-steps", "5", "--split-at", "layer3", "--out", str(tmp_path)])
    assert made == [plan[1], plan[2], plan[3]]  # a split-free family's steps belong to every split


@pytest.mark.parametrize("card", sorted(answer.shipped(answer.read_cards(pr.ANSWER_DIR))))
def test_every_shipped_answer_model_reproduces_its_cards_test_image_for_image(card):
    """The done-when of the answer's models: the shipped weights give the card's per-image test
    results (here on 200 evenly spaced images; ``protocol remeasure`` checks all 10,000)."""
    if "test" not in json.loads(open(card).read()):
        pytest.skip("an operating point whose seed 0 is not tested yet")
    r = pr.remeasure_run(card, n_test=200)
    assert (r["n_images"], r["differing"]) == (200, 0) and r["accuracy"] == r["card_accuracy"]


def test_remeasure_counts_images_whose_correctness_differs_from_the_card(tmp_path):
    src = pr.ANSWER_DIR / "reference_seed0.json"
    card = json.loads(src.read_text())
    bits = unpack_correct(card["test"]["correct"])
    idx = pr.evenly_spaced(len(bits), 200).numpy()
    bits[idx[[3, 150]]] ^= True  # two of the re-measured images recorded the other way
    bits[idx[3] + 1] ^= True  # and one that is not re-measured
    from blocksparse.results import pack_correct
    card["test"]["correct"] = pack_correct(bits)
    (tmp_path / src.name).write_text(json.dumps(card))
    (tmp_path / card["weights"]).symlink_to(src.with_name(card["weights"]))
    r = pr.remeasure_run(tmp_path / src.name, n_test=200)
    assert r["differing"] == 2 and r["mcnemar_p"] >= 0.5  # two images either way: within sampling error
    right = [i for i in idx if bits[i] and i not in idx[[3, 150]]][:10]
    bits[right] = False  # ten more recorded wrong that the model gets right: one-sided, 2 * 2**-10
    card["test"]["correct"] = pack_correct(bits)
    (tmp_path / src.name).write_text(json.dumps(card))
    r = pr.remeasure_run(tmp_path / src.name, n_test=200)
    assert r["differing"] == 12 and r["mcnemar_p"] < 0.05
    del card["test"]
    (tmp_path / src.name).write_text(json.dumps(card))
    with pytest.raises(ValueError, match="no test result"):
        pr.remeasure_run(tmp_path / src.name, n_test=200)


def test_the_shipped_model_is_tested_once_on_test_images_and_its_card_kept(tmp_path, monkeypatch):
    real, calls = pr.load_dataset, []
    monkeypatch.setattr(pr, "load_dataset", lambda name, split, subset=None: calls.append(split) or real(name, split, subset=40))
    path = pr.test_shipped_model(out_dir=tmp_path)
    card = json.loads(path.read_text())
    assert calls == ["test"] and card["family"] == answer.SHIPPED_MODEL and card["weights"] is None
    want = pr.evaluate(pr.load_pretrained("fashion-mnist"), None, real("fashion-mnist", "test", subset=40))
    assert card["test"]["n_images"] == 40 and card["test"]["accuracy"] == pytest.approx(want["accuracy"])
    assert (unpack_correct(card["test"]["correct"]) == want["correct"].numpy()).all()
    assert pr.test_shipped_model(out_dir=tmp_path) == path and calls == ["test"]  # never evaluated again
    assert answer.tested_models([tmp_path]) == 1 and pr.prune(tmp_path) == []
