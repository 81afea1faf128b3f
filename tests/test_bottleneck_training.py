"""Training and evaluating a learned bottleneck: rate goes down, the ResNet stays, the real path is reported."""
import numpy as np
import pytest
import torch

import blocksparse.bottleneck as B
import blocksparse.bottleneck_training as T
import blocksparse_utils as bsu
from blocksparse.results import SCHEMA
from test_bottleneck import _spread


def _frozen(**fields):
    """A small budget that trains only the bottleneck, distilling from the network alone (weight 1)."""
    return bsu.Budget(**(dict(train="frozen", distill_weight=1.0) | fields))


@pytest.fixture(scope="module")
def bn():
    return _spread()


# --- training -----------------------------------------------------------------------------
def _frozen_model():
    bsu.set_seed(0)
    return bsu.build_model().eval()


def test_training_lowers_the_rate_keeps_the_resnet_and_reports_the_real_path(monkeypatch, tmp_path):
    seen, real = [], T.load_dataset

    def spy(name="fashion-mnist", split="test", *a, **k):
        seen.append(split)
        return real(name, split, *a, **k)
    monkeypatch.setattr(T, "load_dataset", spy)
    model = _frozen_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bsu.set_seed(1)
    bn = B.Bottleneck(hidden=16)
    with torch.no_grad():
        bn.encoder[-1].weight.mul_(200)  # latents spread far wider than the density: a high rate to cut
    bn, hist = T.train_bottleneck(model, bn, 50.0, _frozen(steps=10, batch_size=4, lr=1e-3, eval_every=5),
                                  train_subset=64, val_subset=24, progress=False, bf16=False,
                                  state_path=tmp_path / "state.pt", select_on="accuracy")
    st = torch.load(tmp_path / "state.pt", weights_only=False)
    assert st["best_accuracy"] == max(h["val_accuracy"] for h in hist)
    assert all(torch.equal(v, st["best"][k]) for k, v in bn.state_dict().items())  # the best weights came back
    assert "test" not in seen and set(seen) == {"train", "val"}
    assert [h["step"] for h in hist] == [0, 5, 10]
    assert hist[2]["rate_bpp"] < 0.8 * hist[1]["rate_bpp"], hist
    assert hist[2]["val_bpp_estimate"] < 0.6 * hist[0]["val_bpp_estimate"], hist
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # BN statistics too
    assert all(p.requires_grad for p in model.parameters()) and not model.training
    val = bsu.load_dataset(split="val", subset=24)
    ev = T.evaluate_bottleneck(model, bn, val, exact=True)
    assert ev["accuracy"] == max(h["val_accuracy"] for h in hist)  # the best weights, on the real path


def test_resume_continues_where_it_stopped(tmp_path, monkeypatch):
    """A 6-step run == the same run interrupted after its step-3 evaluation, then resumed."""
    data = bsu.load_dataset(split="train", subset=32)
    common = dict(lmbda=1.0, budget=_frozen(steps=6, batch_size=4, eval_every=3, distill_weight=0.5), train_data=data,
                  val_data=data, progress=False, feature_weight=0.1, bf16=False)

    def fresh():
        bsu.set_seed(3)
        return B.Bottleneck(hidden=8, latent_channels=4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one summation order, so the comparison can be exact
    try:
        model = _frozen_model()
        one, h1 = T.train_bottleneck(model, fresh(), **common)
        state = tmp_path / "state.pt"
        real, calls = T._val_accuracy, []

        def interrupted(*a, **k):  # call 1 is step 0, call 2 step 3 (saved), call 3 is killed
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return real(*a, **k)
        monkeypatch.setattr(T, "_val_accuracy", interrupted)
        with pytest.raises(KeyboardInterrupt):
            T.train_bottleneck(model, fresh(), state_path=state, **common)
        monkeypatch.setattr(T, "_val_accuracy", real)
        assert torch.load(state, weights_only=False)["step"] == 3
        assert all(p.requires_grad for p in model.parameters())  # restored after the interruption
        two, h2 = T.train_bottleneck(model, fresh(), state_path=state, **common)
    finally:
        torch.set_num_threads(threads)
    assert [h["step"] for h in h2] == [0, 3, 6] and h1[1:] == h2[1:]  # h[0] holds NaN losses (no steps yet)
    assert h1[0]["val_accuracy"] == h2[0]["val_accuracy"]
    assert all(torch.equal(a, b) for a, b in zip(one.state_dict().values(), two.state_dict().values()))


def test_objective_selection_keeps_the_best_trade_off_not_the_most_accurate():
    """select_on="objective" restores the weights whose validation cross-entropy + lmbda * bpp is
    lowest; recomputed here from the returned weights with an independent loop."""
    model = _frozen_model()
    data = bsu.load_dataset(split="train", subset=32)
    bsu.set_seed(1)
    bn = B.Bottleneck(hidden=16)
    with torch.no_grad():
        bn.encoder[-1].weight.mul_(200)
    lmbda = 5.0
    bn, hist = T.train_bottleneck(model, bn, lmbda, _frozen(steps=8, batch_size=4, lr=1e-3, eval_every=2),
                                  train_data=data, val_data=data, progress=False, bf16=False)
    best = min(hist, key=lambda h: h["val_objective"])
    assert T.best_evaluation(hist) is best  # the validation whose weights came back
    x, y = data.tensors
    with torch.no_grad():
        z = model.head(x)
        z_hat = torch.cat([B.decode(bn, B.encode(bn, zi[None]), zi.shape) for zi in z])
        bits = sum(8 * len(B.encode(bn, zi[None])) for zi in z)  # real streams: an upper bound on the estimate
        ce = float(torch.nn.functional.cross_entropy(model.tail(z_hat), y))
    assert ce == pytest.approx(best["val_cross_entropy"], rel=1e-4)
    assert best["val_objective"] == pytest.approx(ce + lmbda * best["val_bpp_estimate"], rel=1e-6)
    assert best["val_bpp_estimate"] <= bits / (len(x) * 28 * 28) + 1e-9
    assert [h["step"] for h in hist] == [0, 2, 4, 6, 8]
    with pytest.raises(ValueError, match="select_on"):
        T.train_bottleneck(model, bn, lmbda=1.0, select_on="rate")


def test_prior_lr_moves_the_entropy_model_that_far_per_step():
    """Adam's first step moves each parameter by its learning rate (times the gradient's sign): the
    prior's by prior_lr, the rest by lr."""
    model, data = _frozen_model(), bsu.load_dataset(split="train", subset=8)
    bsu.set_seed(2)
    bn = B.Bottleneck(hidden=8, latent_channels=4)
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    common = dict(lmbda=1.0, budget=_frozen(steps=1, batch_size=4, eval_every=1, lr=1e-3), train_data=data,
                  val_data=data, progress=False, bf16=False, select_on="accuracy")
    # keep the trained step, not the step-0 weights: patch track_best to always take the new weights
    import blocksparse.bottleneck_training as mod
    real = mod.track_best
    mod.track_best = lambda acc, best, bad, m: ((acc, T.copy_state(m)), 0)
    try:
        bn, _ = T.train_bottleneck(model, bn, prior_lr=0.1, **common)
    finally:
        mod.track_best = real
    step = {k: (v - before[k]).abs() for k, v in bn.state_dict().items()}
    moved = step["raw_scale"][step["raw_scale"] > 0]
    assert len(moved) and torch.allclose(moved, torch.full_like(moved, 0.1), rtol=1e-3)
    w = step["encoder.0.weight"]  # at most lr (less where a gradient is tiny against Adam's eps)
    assert float(w.max()) == pytest.approx(1e-3, rel=1e-3)
    with pytest.raises(ValueError, match="prior_lr"):
        T.train_bottleneck(model, bn, prior_lr=-1.0, **common)


def test_train_bad_arguments():
    model, bn = _frozen_model(), B.Bottleneck()
    with pytest.raises(ValueError, match="lmbda"):
        T.train_bottleneck(model, bn, lmbda=-1.0)
    with pytest.raises(ValueError, match="budget.train"):  # fine-tuning's mode, not a bottleneck's
        T.train_bottleneck(model, bn, 1.0, _frozen(train="tail"))
    with pytest.raises(ValueError, match="budget.optimizer"):
        T.train_bottleneck(model, bn, 1.0, _frozen(optimizer="sgd"))
    with pytest.raises(ValueError, match="budget must be"):
        T.train_bottleneck(model, bn, 1.0, dict(steps=1))
    with pytest.raises(ValueError, match="feature_weight"):
        T.train_bottleneck(model, bn, 1.0, feature_weight=-0.1)
    with pytest.raises(ValueError, match="quantization"):
        T.train_bottleneck(model, bn, lmbda=1.0, quantization="ste")


# --- evaluation and results -------------------------------------------------------------------
def test_evaluate_against_an_independent_computation(bn):
    model = _frozen_model()
    data = bsu.load_dataset(split="val", subset=10)
    ev = T.evaluate_bottleneck(model, bn, data, rate_sample=4, batch_size=3, exact=True)
    x, y = data.tensors
    with torch.no_grad():
        pred = torch.stack([model.tail(B.decode(bn, B.encode(bn, model.head(x[i:i + 1])), (1, 64, 28, 28)))[0]
                            for i in range(10)]).argmax(1)
    assert torch.equal(ev["correct"], pred == y) and ev["accuracy"] == float((pred == y).float().mean())
    lengths = [len(B.encode(bn, model.head(x[i:i + 1]).detach())) for i in (0, 2, 5, 7)]  # floor(i * 10 / 4)
    assert ev["n_rate"] == 4 and ev["bytes"] == np.mean(lengths)
    assert ev["bpp"] == pytest.approx(8 * np.mean(lengths) / 784, rel=1e-12)
    assert ev["n_images"] == 10 and ev["accuracy_lo"] <= ev["accuracy"] <= ev["accuracy_hi"]
    assert ev["latent_shape"] == (8, 7, 7) and 0 <= ev["clamped_share"] < 1
    row = T.bottleneck_row(ev, 0.5, dataset="fashion-mnist", split_at="layer1")
    assert row["method"] == "learned-bottleneck" and row["rate_weight"] == 0.5 and row["dataset"] == "fashion-mnist"
    assert set(row) <= set(SCHEMA)  # every key is a results column (rate_weight included)


def test_evaluating_several_bottlenecks_runs_the_head_once_and_matches_each_alone(bn):
    model = _frozen_model()
    other = B.Bottleneck()  # untrained: other latents, other streams
    data = bsu.load_dataset(split="val", subset=10)
    alone = [T.evaluate_bottleneck(model, b, data, rate_sample=4, batch_size=3) for b in (bn, other)]
    heads, head = [], model.head

    def counting(x):
        heads.append(len(x))
        return head(x)
    model.head = counting
    both = T.evaluate_bottlenecks(model, [bn, other], data, rate_sample=4, batch_size=3)
    assert heads == [3, 3, 3, 1]  # one pass over the images for both bottlenecks
    for a, b in zip(alone, both):
        assert torch.equal(a["correct"], b["correct"])
        assert {k: v for k, v in a.items() if k != "correct"} == {k: v for k, v in b.items() if k != "correct"}
    assert alone[0]["bytes"] != alone[1]["bytes"]  # the two really differ: the comparison can fail
    with pytest.raises(ValueError, match="bns"):
        T.evaluate_bottlenecks(model, [], data)
    with pytest.raises(ValueError, match="Bottleneck"):
        T.evaluate_bottlenecks(model, [bn, "not a bottleneck"], data)


def test_an_empty_training_set_is_refused_not_replaced():
    """An empty dataset was once swapped silently for the whole training split (``data or load(...)``)."""
    model = _frozen_model()
    empty = torch.utils.data.TensorDataset(torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long))
    some = bsu.load_dataset(split="val", subset=4)
    with pytest.raises(ValueError, match="train_data"):
        T.train_bottleneck(model, B.Bottleneck(hidden=8), 1.0, _frozen(steps=1), train_data=empty, val_data=some,
                           progress=False)


def test_raw_bytes_are_the_float32_features_of_the_split_not_of_the_input():
    """After layer3 the features are 256x7x7 (the input is 1x28x28): raw bytes 4 * 256 * 49."""
    model = bsu.load_pretrained(split_at="layer3")
    bn = B.Bottleneck(in_channels=256, latent_channels=4, hidden=8, stride=2)
    ev = T.evaluate_bottleneck(model, bn, bsu.load_dataset(split="test", subset=4), rate_sample=1)
    assert ev["raw_bytes"] == 4 * 256 * 7 * 7 and ev["latent_shape"] == (4, 4, 4)


def test_whole_network_training_changes_the_network_and_keeps_its_best_with_the_bottleneck(tmp_path):
    """train="all": the network learns too (the frozen default leaves it unchanged), the teacher is the
    network as it was, and a resumed run ends where an uninterrupted one does."""
    budget = bsu.Budget(steps=4, batch_size=4, eval_every=2, train="all", distill_weight=0.5)
    common = dict(lmbda=1.0, train_subset=32, val_subset=8, progress=False, bf16=False)

    def run(state=None, steps=4):
        model = bsu.load_pretrained(split_at="layer3")
        torch.manual_seed(0)
        bn = B.Bottleneck(in_channels=256, latent_channels=4, hidden=8, stride=2)
        bn, hist = T.train_bottleneck(model, bn, budget=budget.replace(steps=steps), state_path=state, **common)
        return model, bn, hist
    before = bsu.load_pretrained(split_at="layer3").state_dict()
    model, bn, hist = run()
    changed = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert changed and len(hist) == 3
    state = tmp_path / "s.pt"
    run(state)  # leaves a finished state; a second call resumes from it and changes nothing
    model2, bn2, hist2 = run(state)
    assert [h["val_accuracy"] for h in hist2] == [h["val_accuracy"] for h in hist]
    with pytest.raises(ValueError, match="train"):
        T.train_bottleneck(model, bn, 1.0, budget.replace(train="tail"))
