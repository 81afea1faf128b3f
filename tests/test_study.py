"""The study's grid and the selection of what to fine-tune (on validation, after fine-tuning)."""
import json

import numpy as np
import pytest
import torch

import blocksparse.remeasure
import blocksparse.shipping
import blocksparse.study
import blocksparse_utils as bsu


@pytest.mark.parametrize("split_at", ["layer1", "layer3"])  # layer3: 7x7 features of 28x28 inputs
def test_candidates_under_measure_real_streams(split_at):
    """The rate is per *input* pixel (784 here), whatever the feature map's size."""
    model = bsu.load_pretrained(split_at=split_at)
    data = bsu.load_dataset(split="val", subset=3)
    cfgs = [bsu.CodecConfig(4 if split_at == "layer1" else 2, r, "global", 2) for r in (1.0, 0.05)]
    got = blocksparse.study.candidates_under(model, cfgs, data, target_bpp=20.0 if split_at == "layer1" else 5.0)
    z = bsu.head_features(model, data)
    sizes = [len(bsu.encode(z[i:i + 1], cfgs[1])) for i in range(3)]
    assert [c for c, _ in got] == [cfgs[1]]  # ratio 1 costs far more than 20 bpp
    assert got[0][1] == pytest.approx(8 * sum(sizes) / 3 / 784)


@pytest.mark.parametrize("split_at", ["layer1", "layer3"])
def test_candidates_under_amortized_rate_uses_codebooks_fitted_on_the_training_images(split_at):
    model = bsu.load_pretrained(split_at=split_at)
    val, fit = bsu.load_dataset(split="val", subset=3), bsu.load_dataset(split="train", subset=20)
    cfg = bsu.CodecConfig(4 if split_at == "layer1" else 2, 0.05, "global", 2)
    z, zfit = bsu.head_features(model, val), bsu.head_features(model, fit)
    cb = bsu.fit_codebook(zfit, cfg, "ans")
    amortized = 8 * sum(len(bsu.encode(z[i:i + 1], cb)) for i in range(3)) / 3 / 784
    self_contained = 8 * sum(len(bsu.encode(z[i:i + 1], cfg)) for i in range(3)) / 3 / 784
    assert amortized < self_contained  # the tables are paid once, not per stream
    budget = (amortized + self_contained) / 2  # only the amortized streams fit under it
    assert blocksparse.study.candidates_under(model, [cfg], val, budget) == []
    got = blocksparse.study.candidates_under(model, [cfg], val, budget, fit_data=fit)
    assert [c for c, _ in got] == [cfg] and got[0][1] == pytest.approx(amortized)


def test_successive_halving_picks_on_post_finetuning_validation(monkeypatch):
    """With a stand-in fine-tuning whose validation accuracy is known per configuration, the
    halving keeps the best half each round and doubles the budget."""
    score = {0.5: 0.2, 0.3: 0.9, 0.1: 0.5, 0.05: 0.7}
    calls = []

    def fake_finetune(model, cfg, steps, eval_every, patience, lr, **kw):
        calls.append((cfg.ratio, steps))
        return model, [dict(step=0, val_accuracy=0.1), dict(step=steps, val_accuracy=score[cfg.ratio])]
    monkeypatch.setattr(blocksparse.study, "finetune", fake_finetune)
    cands = [bsu.CodecConfig(4, r, "global", 2) for r in score]
    rows = blocksparse.study.select_after_finetuning(lambda: None, cands, screen_steps=10, rounds=3)
    assert calls == [(0.5, 10), (0.3, 10), (0.1, 10), (0.05, 10), (0.3, 20), (0.05, 20)]  # one left: stop
    last = rows[rows["round"] == rows["round"].max()]
    assert last.loc[last["val_accuracy"].idxmax(), "ratio"] == 0.3
    with pytest.raises(ValueError, match="candidates"):
        blocksparse.study.select_after_finetuning(lambda: None, [], screen_steps=10)


def test_learning_rates_are_arms_of_the_halving(monkeypatch):
    """Each candidate with each learning rate is an arm; the pick is a configuration and its lr."""
    score = {(0.3, 1e-3): 0.80, (0.3, 3e-3): 0.86, (0.1, 1e-3): 0.84, (0.1, 3e-3): 0.60}
    calls = []

    def fake_finetune(model, cfg, steps, eval_every, patience, lr, **kw):
        calls.append((cfg.ratio, lr, steps))
        return model, [dict(step=steps, val_accuracy=score[cfg.ratio, lr])]
    monkeypatch.setattr(blocksparse.study, "finetune", fake_finetune)
    cands = [bsu.CodecConfig(4, r, "global", 2) for r in (0.3, 0.1)]
    rows = blocksparse.study.select_after_finetuning(lambda: None, cands, screen_steps=5, rounds=2, lrs=[1e-3, 3e-3])
    assert calls[:4] == [(0.3, 1e-3, 5), (0.3, 3e-3, 5), (0.1, 1e-3, 5), (0.1, 3e-3, 5)]
    assert sorted(calls[4:]) == [(0.1, 1e-3, 10), (0.3, 3e-3, 10)]  # the better half, twice the steps
    best = rows[rows["round"] == 1].sort_values("val_accuracy").iloc[-1]
    assert (best["ratio"], best["lr"]) == (0.3, 3e-3)
    calls.clear()  # without lrs: one arm per candidate at the given (or finetune's default) lr
    blocksparse.study.select_after_finetuning(lambda: None, cands, screen_steps=5, rounds=1, lr=3e-3)
    assert calls == [(0.3, 3e-3, 5), (0.1, 3e-3, 5)]
    with pytest.raises(ValueError, match="lrs"):
        blocksparse.study.select_after_finetuning(lambda: None, cands, screen_steps=5, lrs=[0.0])


def _tiny_sweep_inputs():
    model = bsu.load_pretrained(device="cpu")
    test = bsu.load_dataset(split="test", subset=8)
    fit = bsu.head_features(model, bsu.load_dataset(split="train", subset=8))
    cfgs = [bsu.CodecConfig(4, 0.05, "global", 2), bsu.CodecConfig(2, 0.5, "channel-wise", 4)]
    return model, test, fit, cfgs


def _sweep(model, test, fit, cfgs, executor=None):
    return bsu.sweep(model, test, rate_sample=3, configs=cfgs, coder="ans", fit_features=fit, executor=executor,
                     split_at="layer1")


def test_sweep_submits_one_task_per_configuration_in_order():
    """A recording executor sees one ``_sweep_task`` per configuration; rows keep the configs' order
    even when the futures finish in reverse."""
    from concurrent.futures import Future
    model, test, fit, cfgs = _tiny_sweep_inputs()
    submitted, futures = [], []

    class Recording:
        def submit(self, fn, *args):
            submitted.append((fn, args[1]))
            futures.append((Future(), fn, args))
            return futures[-1][0]

    class Finishing(Recording):  # resolve every future, last first, once all are submitted
        def submit(self, fn, *args):
            fut = super().submit(fn, *args)
            if len(futures) == len(cfgs):
                for f, g, a in reversed(futures):
                    f.set_result(g(*a))
            return fut

    rows = _sweep(model, test, fit, cfgs, Finishing())
    assert [fn for fn, _ in submitted] == [blocksparse.study._sweep_task] * 2
    assert [c for _, c in submitted] == cfgs
    assert [(r["mode"], r["block_size"], r["ratio"], r["bits"]) for r in rows] == \
        [(c.mode, c.block_size, c.ratio, c.bits) for c in cfgs]
    assert rows == _sweep(model, test, fit, cfgs)
    with pytest.raises(ValueError, match="executor"):
        _sweep(model, test, fit, cfgs, executor=object())


def test_sweep_rows_are_the_same_in_threads():
    from concurrent.futures import ThreadPoolExecutor
    model, test, fit, cfgs = _tiny_sweep_inputs()
    with ThreadPoolExecutor(2) as pool:
        assert _sweep(model, test, fit, cfgs, pool) == _sweep(model, test, fit, cfgs)


@pytest.mark.slow
def test_sweep_rows_are_the_same_on_a_two_process_dask_cluster():
    """Tasks run in two worker processes (the model, data and features shipped to them) give
    exactly the in-process rows."""
    import os
    distributed = pytest.importorskip("distributed")
    model, test, fit, cfgs = _tiny_sweep_inputs()
    expected = _sweep(model, test, fit, cfgs)
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        rows = _sweep(model, test, fit, cfgs, client)
        pids = set(client.run(os.getpid).values())
    assert rows == expected
    assert len(pids) == 2 and os.getpid() not in pids


def test_a_shipped_model_is_remeasured_exactly_as_trained(tmp_path):
    """train_frontier_model's row (tested once) == remeasure_frontier_models' row from its files."""
    cfg = bsu.CodecConfig(4, 0.01, "global", 2)
    row = blocksparse.shipping.train_frontier_model(
        cfg, 0, tmp_path / "frontier", fit_images=16, n_test=24, rate_sample=3, steps=2, eval_every=1,
        batch_size=8, val_subset=16, progress=False)
    card = tmp_path / "frontier" / "layer1_global_B4_r0.01_2b_seed0.json"
    assert card.exists() and card.with_suffix(".codebook").exists()
    rows, paired = blocksparse.remeasure.remeasure_frontier_models([card], n_test=24, rate_sample=3)
    for k in ("accuracy", "bpp", "bpp_self_contained", "n_images", "weights", "codebook"):
        assert rows[0][k] == row[k], k
    assert paired[0]["n_images"] == 24 and paired[0]["difference"] == row["paired"]["difference"]
    # the model measured is the shipped file's (fp16) weights
    shipped = torch.load(card.with_suffix(".pt"), weights_only=True)
    tuned = bsu.load_pretrained(weights=card.with_suffix(".pt"))
    assert shipped["net.fc.weight"].dtype == torch.float16
    assert torch.equal(tuned.net.fc.weight, shipped["net.fc.weight"].float())


def test_weights_not_shipped_report_the_recorded_test(tmp_path):
    """--no-ship: the card records the one test evaluation; re-measuring returns it (it cannot rerun)."""
    cfg = bsu.CodecConfig(4, 0.01, "global", 2)
    row = blocksparse.shipping.train_frontier_model(
        cfg, 1, tmp_path / "frontier", fit_images=16, n_test=24, rate_sample=3, steps=2, eval_every=1,
        batch_size=8, val_subset=16, progress=False, ship_weights=False, tag="_x")
    card = tmp_path / "frontier" / "layer1_global_B4_r0.01_2b_x_seed1.json"
    assert not card.with_suffix(".pt").exists()
    assert row["weights"] is None and row["card"].endswith(card.name)
    rows, paired = blocksparse.remeasure.remeasure_frontier_models([card], n_test=24, rate_sample=3)
    for k in ("accuracy", "accuracy_lo", "bpp", "n_images", "seed", "codebook"):
        assert rows[0][k] == row[k], k
    assert rows[0]["weights"] is None
    assert paired[0]["weights"] == row["card"] and paired[0]["difference"] == row["paired"]["difference"]
    assert paired[0]["reference_accuracy"] == row["reference_accuracy"]
    assert blocksparse.remeasure.remeasure_frontier_models([card], n_test=30) == ([], [])  # not these images
    bare = json.loads(card.read_text())
    del bare["test_row"]
    card.write_text(json.dumps(bare))
    with pytest.raises(ValueError, match="test_row"):
        blocksparse.remeasure.remeasure_frontier_models([card], n_test=24)


def _seed_cards(folder, prefix):
    """Three minimal cards, seeds 0-2, each with its own sha256."""
    cards = [folder / f"{prefix}_seed{s}.json" for s in (0, 1, 2)]
    for s, c in enumerate(cards):
        c.write_text(json.dumps(dict(dataset="fashion-mnist", seed=s, sha256=f"{s:064x}")))
    return cards


def test_remeasure_cached_measures_only_new_cards(tmp_path, monkeypatch):
    monkeypatch.setenv("BSU_RESULTS_DIR", str(tmp_path / "results"))
    calls = []

    def fake(cards, n_test=None, rate_sample=1000):
        calls.append([c.name for c in cards])
        seed = json.loads(cards[0].read_text())["seed"]
        return ([dict(method="blocksparse", seed=seed, accuracy=0.9, n_images=n_test, weights=f"{cards[0].stem}.pt")],
                [dict(weights=f"{cards[0].stem}.pt", difference=-0.01)])
    monkeypatch.setattr(blocksparse.remeasure, "remeasure_frontier_models", fake)
    cards = _seed_cards(tmp_path, "m")
    first = blocksparse.remeasure.remeasure_cached(cards[:2], "frontier", n_test=24)
    again = blocksparse.remeasure.remeasure_cached(cards, "frontier", n_test=24)
    assert calls == [["m_seed0.json"], ["m_seed1.json"], ["m_seed2.json"]]  # the third card only, the second time
    assert list(first["seed"]) == [0, 1] and list(again["seed"]) == [0, 1, 2]
    assert [p["weights"] for p in again.attrs["paired"]] == ["m_seed0.pt", "m_seed1.pt", "m_seed2.pt"]
    blocksparse.remeasure.remeasure_cached(cards[:1], "frontier", n_test=32)  # other settings: measured again
    cards[0].write_text(json.dumps(dict(dataset="fashion-mnist", seed=0, sha256="f" * 64)))  # other weights: again
    blocksparse.remeasure.remeasure_cached(cards[:1], "frontier", n_test=24)
    assert calls[3:] == [["m_seed0.json"], ["m_seed0.json"]]
    with pytest.raises(ValueError, match="kind"):
        blocksparse.remeasure.remeasure_cached(cards, "ablation")


def test_the_reference_is_the_uncompressed_model_fine_tuned_and_records_its_test_per_image(tmp_path):
    from blocksparse.results import unpack_correct
    row = blocksparse.shipping.train_reference_model(
        0, tmp_path / "reference", n_test=24, state_dir=tmp_path / "runs", ship_weights=True, steps=2, eval_every=1,
        batch_size=8, val_subset=16, progress=False)
    card_path = tmp_path / "reference" / "uncompressed_finetuned_seed0.json"
    card = json.loads(card_path.read_text())
    assert row["method"] == "uncompressed" and row["finetuned"] and row["n_images"] == 24 and row["seed"] == 0
    assert (tmp_path / "runs" / "uncompressed_finetuned_seed0.state.pt").exists()
    # independently: the shipped fp16 weights' predictions on the same 24 evenly spaced test images
    test = bsu.load_dataset(split="test", subset=24)
    tuned = bsu.load_pretrained(weights=card_path.with_suffix(".pt"))
    with torch.no_grad():
        expected = (tuned(test.tensors[0]).argmax(1) == test.tensors[1]).numpy()
    assert np.array_equal(unpack_correct(card["test_correct"]), expected)
    assert card["test_accuracy"] == row["accuracy"] == expected.mean()
    assert card["schedule"]["steps"] == 2 and card["sha256"]
    with pytest.raises(ValueError, match="group_lasso_weight"):
        blocksparse.shipping.train_reference_model(0, tmp_path / "r2", group_lasso_weight=1e-5)


def _card(seed, correct, n=None, **extra):
    from blocksparse.results import pack_correct
    c = dict(dataset="fashion-mnist", seed=seed, test_images=len(correct) if n is None else n,
             schedule=dict(steps=1800, lr=1e-3, distill_weight=0.5)) | extra
    if correct is not None:
        c["test_correct"] = pack_correct(np.array(correct, bool))
    return c


def test_models_are_paired_with_the_reference_run_of_their_seed():
    from blocksparse.analysis import pair_with_reference
    refs = {"r0.json": _card(0, [1, 1, 1, 1, 0, 0, 1, 1], test_paired=dict(difference=0.01)),
            "r1.json": _card(1, [1, 1, 1, 1, 1, 1, 1, 1])}
    models = {"a_seed0.json": _card(0, [1, 1, 0, 1, 1, 0, 1, 1],
                                    schedule=dict(steps=1800, lr=1e-3, distill_weight=0.5, group_lasso_weight=1e-5)),
              "a_seed1.json": _card(1, [1, 0, 1, 1, 1, 1, 1, 1]),
              "a_seed2.json": _card(2, [1] * 8),               # no reference of seed 2
              "b_seed0.json": _card(0, None, n=8),             # predates test_correct
              "c_seed0.json": _card(0, [1] * 9),               # other images
              "d_seed0.json": _card(0, [1] * 8, base_checkpoint="other")}  # another base model
    pairs = pair_with_reference(models, refs)
    assert [(p["weights"], p["reference"]) for p in pairs] == [("a_seed0.json", "r0.json"), ("a_seed1.json", "r1.json")]
    assert pairs[0]["difference"] == 0 and pairs[0]["b_only"] == 1 and pairs[0]["a_only"] == 1
    assert pairs[1]["difference"] == -1 / 8 and pairs[1]["reference_accuracy"] == 1.0
    assert not pairs[1]["within"]  # one image in eight lost: far outside one point
    assert pairs[0]["budget_differs"] == [] and pairs[0]["reference_paired"] == dict(difference=0.01)
    assert pairs[0]["reference_budget"]["steps"] == 1800
    other = {"e.json": _card(0, [1] * 8, schedule=dict(steps=1800, lr=3e-4, distill_weight=0.5))}
    assert pair_with_reference(other, refs)[0]["budget_differs"] == ["lr"]
    short = {"f.json": _card(0, [1] * 8, history=[dict(step=0), dict(step=600)],
                             schedule=dict(steps=1800, lr=1e-3, distill_weight=0.5, patience=4))}  # stopped early
    assert pair_with_reference(short, refs)[0]["budget_differs"] == ["steps_run"]
    with pytest.raises(ValueError, match="references: r0.json and r0b.json"):
        pair_with_reference(models, refs | {"r0b.json": _card(0, [1] * 8)})


def test_a_card_is_given_its_per_image_test_again_only_by_its_own_weights(tmp_path):
    from blocksparse.results import unpack_correct
    cfg = bsu.CodecConfig(4, 0.01, "global", 2)
    blocksparse.shipping.train_frontier_model(
        cfg, 0, tmp_path / "frontier", fit_images=16, n_test=24, rate_sample=3, state_dir=tmp_path / "runs",
        steps=2, eval_every=1, batch_size=8, val_subset=16, progress=False)
    card_path = tmp_path / "frontier" / "layer1_global_B4_r0.01_2b_seed0.json"
    card = json.loads(card_path.read_text())
    recorded = unpack_correct(card.pop("test_correct"))
    assert len(recorded) == 24 and recorded.mean() == card["test_accuracy"]
    card_path.write_text(json.dumps(card))
    # the weights rebuilt from the run's state are the shipped ones, byte for byte
    rebuilt = blocksparse.shipping.weights_from_state(tmp_path / "runs" / "layer1_global_B4_r0.01_2b_seed0.state.pt",
                                                   card_path, tmp_path / "rebuilt")
    assert rebuilt.read_bytes() == card_path.with_suffix(".pt").read_bytes()
    got = blocksparse.shipping.record_test_correct(card_path, rebuilt)
    assert np.array_equal(got, recorded)
    assert np.array_equal(unpack_correct(json.loads(card_path.read_text())["test_correct"]), recorded)
    with pytest.raises(ValueError, match="sha256"):
        blocksparse.shipping.record_test_correct(card_path, bsu.checkpoint_path("fashion-mnist"))
    swapped = dict(card, test_paired=card["test_paired"] | dict(a_only=card["test_paired"]["a_only"] + 1))
    card_path.write_text(json.dumps(swapped))  # the same accuracy, another split of the disagreements
    with pytest.raises(ValueError, match="images right only"):
        blocksparse.shipping.record_test_correct(card_path, rebuilt)
    card["test_accuracy"] += 1 / 24
    card_path.write_text(json.dumps(card))
    with pytest.raises(ValueError, match="test accuracy"):
        blocksparse.shipping.record_test_correct(card_path)
    assert "test_correct" not in json.loads(card_path.read_text())  # left unchanged
    card["sha256"] = "0" * 64
    card_path.write_text(json.dumps(card))
    with pytest.raises(ValueError, match="state_path"):
        blocksparse.shipping.weights_from_state(tmp_path / "runs" / "layer1_global_B4_r0.01_2b_seed0.state.pt",
                                             card_path, tmp_path / "other")
    assert not (tmp_path / "other" / card_path.with_suffix(".pt").name).exists()


def test_a_bottleneck_after_layer3_codes_its_7x7_map_at_the_stride_asked(tmp_path):
    row = blocksparse.shipping.train_bottleneck_model(
        0.2, 0, tmp_path, split_at="layer3", stride=2, n_test=12, rate_sample=2, steps=2, eval_every=1,
        batch_size=4, val_subset=8, progress=False)
    card = tmp_path / "bottleneck_layer3_M8_S2_lmbda0.2_seed0.json"
    arch = json.loads(card.read_text())["architecture"]
    assert arch["stride"] == 2 and arch["in_channels"] == 256  # layer3's channels
    assert row["split_at"] == "layer3" and row["n_images"] == 12
    bn = bsu.load_bottleneck(card.with_suffix(".pt"))
    assert bn.latent_hw(7, 7) == (4, 4)
    rows, _ = blocksparse.remeasure.remeasure_bottleneck_models([card], n_test=12, rate_sample=2)
    assert rows[0]["accuracy"] == row["accuracy"] and rows[0]["bpp"] == row["bpp"]
    assert blocksparse.shipping.bottleneck_name(0.2, 8, 0) == "bottleneck_layer1_M8_lmbda0.2_seed0"  # default: as before


def test_the_uncompressed_reference_is_evaluated_once_per_model_and_images(monkeypatch):
    """Re-measuring many cards evaluates the shipped model once for the same images; other images,
    or another model's weights, are evaluated afresh (never a stale reference)."""
    from torch.utils.data import TensorDataset
    calls = []

    def fake_evaluate(model, cfg, data, *a, **kw):
        calls.append(len(data))
        return dict(accuracy=0.5, correct=torch.ones(len(data), dtype=torch.bool))
    monkeypatch.setattr(blocksparse.remeasure, "evaluate", fake_evaluate)
    monkeypatch.setattr(blocksparse.remeasure, "_REFERENCES", {})
    g = torch.Generator().manual_seed(0)
    a = TensorDataset(torch.rand(6, 1, 28, 28, generator=g), torch.arange(6) % 10)
    b = TensorDataset(a.tensors[0].clone(), torch.tensor([1, 1, 2, 3, 4, 5]))  # other labels, same images
    shipped = bsu.load_pretrained("fashion-mnist", "layer1")
    first = blocksparse.remeasure._reference_evaluation(shipped, a)
    again = blocksparse.remeasure._reference_evaluation(bsu.load_pretrained("fashion-mnist", "layer1"), a)  # loaded anew
    assert again is first and calls == [6]
    blocksparse.remeasure._reference_evaluation(shipped, b)
    assert calls == [6, 6]
    other = bsu.load_pretrained("fashion-mnist", "layer1")
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    blocksparse.remeasure._reference_evaluation(other, a)
    assert calls == [6, 6, 6]


def test_remeasure_cached_measures_the_new_bottlenecks_together(tmp_path, monkeypatch):
    monkeypatch.setenv("BSU_RESULTS_DIR", str(tmp_path / "results"))
    calls = []

    def fake(cards, n_test=None, rate_sample=1000):
        calls.append([c.name for c in cards])
        return ([dict(method="learned-bottleneck", seed=json.loads(c.read_text())["seed"], accuracy=0.9,
                      n_images=n_test, weights=f"{c.stem}.pt") for c in cards],
                [dict(weights=f"{c.stem}.pt", difference=-0.01) for c in cards])
    monkeypatch.setattr(blocksparse.remeasure, "remeasure_bottleneck_models", fake)
    cards = _seed_cards(tmp_path, "bn")
    first = blocksparse.remeasure.remeasure_cached(cards[:1], "bottleneck", n_test=24)
    again = blocksparse.remeasure.remeasure_cached(cards, "bottleneck", n_test=24)
    assert calls == [["bn_seed0.json"], ["bn_seed1.json", "bn_seed2.json"]]  # the new two in one call
    assert list(first["seed"]) == [0] and list(again["seed"]) == [0, 1, 2]
    assert [p["weights"] for p in again.attrs["paired"]] == ["bn_seed0.pt", "bn_seed1.pt", "bn_seed2.pt"]
    blocksparse.remeasure.remeasure_cached(cards, "bottleneck", recompute=True, n_test=24)
    assert calls[2:] == [["bn_seed0.json", "bn_seed1.json", "bn_seed2.json"]]


def test_group_lasso_weights_are_arms_of_the_halving(monkeypatch):
    score = {(0.3, 0.0): 0.80, (0.3, 1e-5): 0.85, (0.1, 0.0): 0.82, (0.1, 1e-5): 0.70}
    calls = []

    def fake_finetune(model, cfg, steps, eval_every, patience, lr, group_lasso_weight, **kw):
        calls.append((cfg.ratio, group_lasso_weight))
        return model, [dict(step=steps, val_accuracy=score[cfg.ratio, group_lasso_weight])]
    monkeypatch.setattr(blocksparse.study, "finetune", fake_finetune)
    cands = [bsu.CodecConfig(4, r, "global", 2) for r in (0.3, 0.1)]
    rows = blocksparse.study.select_after_finetuning(lambda: None, cands, screen_steps=5, rounds=2,
                                                     group_lasso_weights=[0.0, 1e-5])
    assert calls[:4] == [(0.3, 0.0), (0.3, 1e-5), (0.1, 0.0), (0.1, 1e-5)]
    best = rows[rows["round"] == 1].sort_values("val_accuracy").iloc[-1]
    assert (best["ratio"], best["group_lasso_weight"]) == (0.3, 1e-5)


def test_the_halving_evaluates_each_arm_as_often_as_asked(monkeypatch):
    seen = []
    monkeypatch.setattr(blocksparse.study, "finetune", lambda model, cfg, steps, eval_every, **kw:
                        seen.append((steps, eval_every)) or (model, [dict(val_accuracy=0.5)]))
    cands = [bsu.CodecConfig(4, 0.1, "global", 2)]
    blocksparse.study.select_after_finetuning(lambda: None, cands, screen_steps=60, rounds=1)
    blocksparse.study.select_after_finetuning(lambda: None, cands, screen_steps=60, rounds=1, evals=1)
    assert seen == [(60, 15), (60, 60)]
    with pytest.raises(ValueError, match="evals"):
        blocksparse.study.select_after_finetuning(lambda: None, cands, screen_steps=60, evals=0)
