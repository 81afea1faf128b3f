"""The study's grid and the selection of what to fine-tune (on validation, after fine-tuning)."""
import json

import numpy as np
import pytest
import torch

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

    def fake_finetune(model, cfg, budget, **kw):
        calls.append((cfg.ratio, budget.steps))
        return model, [dict(step=0, val_accuracy=0.1), dict(step=budget.steps, val_accuracy=score[cfg.ratio])]
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

    def fake_finetune(model, cfg, budget, **kw):
        calls.append((cfg.ratio, budget.lr, budget.steps))
        return model, [dict(step=budget.steps, val_accuracy=score[cfg.ratio, budget.lr])]
    monkeypatch.setattr(blocksparse.study, "finetune", fake_finetune)
    cands = [bsu.CodecConfig(4, r, "global", 2) for r in (0.3, 0.1)]
    rows = blocksparse.study.select_after_finetuning(lambda: None, cands, screen_steps=5, rounds=2, lrs=[1e-3, 3e-3])
    assert calls[:4] == [(0.3, 1e-3, 5), (0.3, 3e-3, 5), (0.1, 1e-3, 5), (0.1, 3e-3, 5)]
    assert sorted(calls[4:]) == [(0.1, 1e-3, 10), (0.3, 3e-3, 10)]  # the better half, twice the steps
    best = rows[rows["round"] == 1].sort_values("val_accuracy").iloc[-1]
    assert (best["ratio"], best["lr"]) == (0.3, 3e-3)
    calls.clear()  # without lrs: one arm per candidate at the budget's lr
    blocksparse.study.select_after_finetuning(lambda: None, cands, screen_steps=5, budget=bsu.Budget(lr=3e-3), rounds=1)
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


def test_group_lasso_weights_are_arms_of_the_halving(monkeypatch):
    score = {(0.3, 0.0): 0.80, (0.3, 1e-5): 0.85, (0.1, 0.0): 0.82, (0.1, 1e-5): 0.70}
    calls = []

    def fake_finetune(model, cfg, budget, group_lasso_weight, **kw):
        calls.append((cfg.ratio, group_lasso_weight))
        return model, [dict(step=budget.steps, val_accuracy=score[cfg.ratio, group_lasso_weight])]
    monkeypatch.setattr(blocksparse.study, "finetune", fake_finetune)
    cands = [bsu.CodecConfig(4, r, "global", 2) for r in (0.3, 0.1)]
    rows = blocksparse.study.select_after_finetuning(lambda: None, cands, screen_steps=5, rounds=2,
                                                     group_lasso_weights=[0.0, 1e-5])
    assert calls[:4] == [(0.3, 0.0), (0.3, 1e-5), (0.1, 0.0), (0.1, 1e-5)]
    best = rows[rows["round"] == 1].sort_values("val_accuracy").iloc[-1]
    assert (best["ratio"], best["group_lasso_weight"]) == (0.3, 1e-5)


def test_the_halving_evaluates_each_arm_as_often_as_asked(monkeypatch):
    seen = []
    monkeypatch.setattr(blocksparse.study, "finetune", lambda model, cfg, budget, **kw:
                        seen.append((budget.steps, budget.eval_every)) or (model, [dict(val_accuracy=0.5)]))
    cands = [bsu.CodecConfig(4, 0.1, "global", 2)]
    blocksparse.study.select_after_finetuning(lambda: None, cands, screen_steps=60, rounds=1)
    blocksparse.study.select_after_finetuning(lambda: None, cands, screen_steps=60, rounds=1, evals=1)
    assert seen == [(60, 15), (60, 60)]
    with pytest.raises(ValueError, match="evals"):
        blocksparse.study.select_after_finetuning(lambda: None, cands, screen_steps=60, evals=0)
